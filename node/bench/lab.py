"""The instruments a bench procedure drives: opened from a configuration or a simulated lab.

:class:`Lab` holds the opened instruments by role, their identities, and whether they are the
simulated bench's. :meth:`Lab.safe_state` is what every procedure's runner calls on the way
out (normal end, error or Ctrl-C): the light is blocked, the transmitter and the tagger stop,
and the detector bias goes to 0 V; each step runs even when an earlier one failed.

:func:`simulated_lab_config` builds a complete simulated lab (every role on
``sim://bench/...``, like ``hil_tests/sim_lab.toml``) with ``--sim-param`` overrides of the
bench's physics; the procedures themselves never see those values.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qkdnode.drivers.sim.params import DetectorParams, FibreParams, SourceParams, TaggerParams
from qkdnode.node.config import NodeConfig, parse_config

__all__ = ["SIM_PARAMS", "Lab", "open_lab", "parse_sim_params", "simulated_lab_config"]

log = logging.getLogger(__name__)

# --sim-param NAME -> (TOML table under [bench], dataclass holding the field). Detector
# parameters apply to all four detectors alike.
SIM_PARAMS: dict[str, tuple[str, type]] = {
    "detector_efficiency": ("detector", DetectorParams),
    "dark_count_rate_hz": ("detector", DetectorParams),
    "afterpulse_probability": ("detector", DetectorParams),
    "afterpulse_tau_ps": ("detector", DetectorParams),
    "dead_time_ps": ("detector", DetectorParams),
    "jitter_fwhm_ps": ("detector", DetectorParams),
    "extinction_ratio_db": ("source", SourceParams),
    "mu1": ("source", SourceParams),
    "mu2": ("source", SourceParams),
    "mu3": ("source", SourceParams),
    "bias_null_v": ("source", SourceParams),
    "v_pi": ("source", SourceParams),
    "length_km": ("fibre", FibreParams),
    "misalignment": ("fibre", FibreParams),
    "loss_db_per_km": ("fibre", FibreParams),
    "jitter_rms_ps": ("tagger", TaggerParams),
    "seed": ("", int),
    # One detector's efficiency (the others keep detector_efficiency): a mismatched receiver.
    **{f"detector_efficiency_{d}": ("detectors", DetectorParams)
       for d in ("x0", "x1", "z0", "z1")},
    # One detector's latency (cables, electronics): what delay alignment measures.
    **{f"latency_ps_{d}": ("detectors", DetectorParams) for d in ("x0", "x1", "z0", "z1")},
}
_DETECTOR_ORDER = ("x0", "x1", "z0", "z1")
# The bench's field name where it differs from the --sim-param name.
_FIELD = {"detector_efficiency": "efficiency",
          **{f"detector_efficiency_{d}": "efficiency" for d in ("x0", "x1", "z0", "z1")},
          **{f"latency_ps_{d}": "latency_ps" for d in ("x0", "x1", "z0", "z1")}}

# Bench time the simulated tagger covers per read: 50 ms keeps the per-read overhead small at
# dark-count rates while a read at the default light levels stays far below its buffer.
SIM_SLICE_PS = 50 * 10**9
# A sync tag every 10^6 slots (1 kHz at the 1 GHz slot rate): the jitter procedure's
# reference, sparse enough to cost nothing next to the clicks.
SIM_SYNC_EVERY_SLOTS = 10**6

_SIM_LAB = """\
[node]
name = "bench-sim"
site = "simulated optical bench (qkdnode bench)"

[bench]
name = "bench"
seed = {seed}

[bench.fibre]
{fibre}
[bench.source]
{source}
{detector}
[bench.tagger]
sync_every_slots = {sync}
{tagger}
[[instruments]]
name = "tagger"
role = "time_tagger"
driver = "qutools.qutag"
resource = "sim://bench/tagger"
[instruments.settings]
sim_slice_ps = {slice_ps}
channels = [0, 1, 2, 3, 4]

[[instruments]]
name = "spd"
role = "detector"
driver = "idq.id120"
resource = "sim://bench/detector"
[instruments.settings]
max_bias_v = 60.0

[[instruments]]
name = "awg"
role = "transmitter"
driver = "keysight.33500"
resource = "sim://bench/awg"
[instruments.settings]
slot_rate_hz = 1e9
max_sample_rate_hz = 1e9

[[instruments]]
name = "mbc"
role = "bias_controller"
driver = "thorlabs.mbx"
resource = "sim://bench/bias"

[[instruments]]
name = "voa"
role = "attenuator"
driver = "scpi.voa"
resource = "sim://bench/voa"

[[instruments]]
name = "pm"
role = "power_meter"
driver = "thorlabs.pm100"
resource = "sim://bench/powermeter"
"""


def parse_sim_params(items: list[str]) -> dict[str, float | int]:
    """Parses ``NAME=VALUE`` overrides of the simulated bench.

    Raises:
        ValueError: an unknown name (listing the known ones), a missing ``=`` or a value that
            is not a number (an integer for integer parameters).
    """
    out: dict[str, float | int] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--sim-param {item!r}: expected NAME=VALUE")
        if name not in SIM_PARAMS:
            raise ValueError(f"--sim-param: unknown parameter {name!r} (known: "
                             f"{', '.join(sorted(SIM_PARAMS))})")
        table, cls = SIM_PARAMS[name]
        wants_int = cls is int or (
            table != "" and any(f.name == _FIELD.get(name, name) and f.type == "int"
                                for f in dataclasses.fields(cls)))
        try:
            out[name] = int(text) if wants_int else float(text)
        except ValueError:
            kind = "an integer" if wants_int else "a number"
            raise ValueError(f"--sim-param {name}: {text!r} is not {kind}") from None
    return out


def simulated_lab_config(overrides: Mapping[str, float | int] | None = None) -> NodeConfig:
    """A complete simulated lab (seed 2026 unless overridden) as a configuration.

    The detectors sit right after the source's attenuator (0 km of fibre), as on a
    characterization bench: set ``length_km`` to put a link between them.

    Raises:
        ConfigError: an override the bench refuses (out of range), naming the key.
    """
    tables: dict[str, list[str]] = {"detector": [], "source": [], "fibre": [], "tagger": []}
    seed = 2026
    single: dict[str, dict[str, float | int]] = {}
    for name, value in (overrides or {}).items():
        table, _ = SIM_PARAMS[name]
        if table == "":
            seed = int(value)
        elif table == "detectors":
            single.setdefault(name.rsplit("_", 1)[1], {})[_FIELD[name]] = value
        else:
            tables[table].append(f"{_FIELD.get(name, name)} = {value!r}")
    common = tables["detector"]
    if single:  # four [[bench.detectors]] tables, the common overrides in each
        blocks = []
        for d in _DETECTOR_ORDER:
            own = single.get(d, {})
            lines = [line for line in common if line.split(" ", 1)[0] not in own]
            lines += [f"{k} = {v!r}" for k, v in own.items()]
            blocks.append("[[bench.detectors]]\n" + "".join(f"{x}\n" for x in lines))
        tables["detector"] = ["\n".join(blocks)]
    else:
        tables["detector"] = ["[bench.detector]", *common]
    if not any(line.startswith("length_km ") for line in tables["fibre"]):
        tables["fibre"].insert(0, "length_km = 0.0")
    text = _SIM_LAB.format(seed=seed, sync=SIM_SYNC_EVERY_SLOTS, slice_ps=SIM_SLICE_PS,
                           **{k: "\n".join(v) + "\n" if v else "" for k, v in tables.items()})
    return parse_config(text, "<qkdnode bench simulated lab>")


@dataclass
class Lab:
    """Opened instruments by role (the first of each role the configuration names).

    Attributes:
        instruments: role -> the opened instrument.
        identities: role -> ``"name (driver) at resource: identification"``.
        simulated: True if any instrument is on the simulated bench.
    """

    instruments: dict[str, Any]
    identities: dict[str, str]
    simulated: bool
    _closed: bool = field(default=False, repr=False)

    def role(self, role: str) -> Any:
        """The instrument playing ``role``.

        Raises:
            ValueError: the lab has none (naming the roles it has).
        """
        try:
            return self.instruments[role]
        except KeyError:
            raise ValueError(f"this procedure needs an instrument with role {role!r}; the lab "
                             f"has {', '.join(sorted(self.instruments)) or 'none'}") from None

    def safe_state(self) -> list[str]:
        """Blocks the light, stops the transmitter and tagger, sets the detector bias to 0 V.

        Every step is tried; the failures are logged and returned (empty if all went well).
        """
        steps: list[tuple[str, str, tuple[Any, ...]]] = [
            ("attenuator", "set_enabled", (False,)),
            ("transmitter", "stop", ()),
            ("time_tagger", "stop", ()),
            ("detector", "set_bias_v", (0.0,)),
        ]
        failed = []
        for role, method, args in steps:
            instrument = self.instruments.get(role)
            if instrument is None:
                continue
            try:
                getattr(instrument, method)(*args)
            except Exception as exc:  # every step must run, whatever the one before did
                log.error("safe state: %s.%s failed: %s", role, method, exc)
                failed.append(f"{role}.{method}: {exc}")
        return failed

    def close(self) -> None:
        """Closes every instrument (once)."""
        if self._closed:
            return
        self._closed = True
        for role, instrument in self.instruments.items():
            try:
                instrument.close()
            except Exception as exc:  # close the others regardless
                log.warning("closing the %s failed: %s", role, exc)


def _identify(instrument: Any) -> str:
    identify = getattr(instrument, "identify", None)
    if identify is None:
        return type(instrument).__name__
    try:
        return str(identify())
    except Exception as exc:  # an identity is informative only
        return f"{type(instrument).__name__} (identify failed: {exc})"


def open_lab(config: NodeConfig, roles: tuple[str, ...]) -> Lab:
    """Opens the first configured instrument of each of ``roles`` (installing the simulated
    bench first when the configuration has ``sim://`` instruments).

    Raises:
        ValueError: a role the configuration has no instrument for.
    """
    from qkdnode.drivers.registry import open_instrument

    simulated = any((i.resource or "").startswith("sim://") for i in config.instruments)
    if simulated:
        from qkdnode.node.config.bench import install_bench

        install_bench(config, replace=True)
    lab = Lab({}, {}, simulated)
    try:
        for role in roles:
            found = config.instruments_with_role(role)
            if not found:
                raise ValueError(f"the configuration has no instrument with role {role!r} "
                                 "(this procedure needs it)")
            entry = found[0]
            instrument = open_instrument(entry.name, entry.role, entry.driver,
                                         entry.resource or "", entry.timeout_s, entry.settings)
            lab.instruments[role] = instrument
            lab.identities[role] = (f"{entry.name} ({entry.driver}) at {entry.resource}: "
                                    f"{_identify(instrument)}")
    except BaseException:
        lab.close()
        raise
    return lab
