"""The [bench] section: every BenchParams key with its checks, errors at FILE:LINE: key."""

from __future__ import annotations

import dataclasses
import tomllib

import pytest

from qkdnode.drivers.sim.bench import get_bench, remove_bench
from qkdnode.drivers.sim.params import BenchParams, DetectorParams
from qkdnode.node.config import ConfigError, NodeConfig, parse_config
from qkdnode.node.config.bench import install_bench
from qkdnode.node.config.describe import schema_keys, to_plain

NODE = '[node]\nname = "alice"\n'


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(NODE + text, "lab.toml")
    return info.value


def test_absent_section_is_the_default_bench() -> None:
    config = parse_config(NODE, "lab.toml")
    assert config.bench.name == "bench"
    assert config.bench.seed == 0
    assert config.bench.service is None
    assert config.bench.params() == BenchParams()


def test_every_parameter_is_a_schema_key_with_its_doc_and_unit() -> None:
    keys = set(schema_keys())
    for section in ("source", "fibre", "receiver", "detector", "tagger"):
        params_cls = type(getattr(BenchParams(), "detectors" if section == "detector"
                                  else section))
        if section == "detector":
            params_cls = DetectorParams
        for f in dataclasses.fields(params_cls):
            assert f"bench.{section}.{f.name}" in keys
    assert "bench.detectors[].dead_time_ps" in keys


def test_a_full_section_round_trips() -> None:
    text = NODE + """
[bench]
name = "lab-bench"
seed = 42
service = "127.0.0.1:7781"

[bench.source]
slot_rate_hz = 1.25e9
mu1 = 0.6
bias_drift_v_per_s = 1e-3

[bench.fibre]
length_km = 25
misalignment = 0.01

[bench.receiver]
q_x = 0.8

[bench.tagger]
channels = [5, 6, 7, 8]
sync_every_slots = 1000
offset_ps = -123456
drift_ppm = 2.5
""" + "".join(f"\n[[bench.detectors]]\nefficiency = {e}\ndead_time_ps = {d}\n"
              for e, d in ((0.1, 50_000), (0.12, 60_000), (0.09, 50_000), (0.11, 40_000)))
    config = parse_config(text, "lab.toml")
    params = config.bench.params()
    assert params.source.slot_rate_hz == 1.25e9
    assert params.fibre.length_km == 25.0
    assert params.receiver.q_x == 0.8
    assert params.tagger.channels == (5, 6, 7, 8)
    assert [d.efficiency for d in params.detectors] == [0.1, 0.12, 0.09, 0.11]
    assert params.detectors[3].dead_time_ps == 40_000
    # show -> TOML -> load gives the same configuration.
    plain = to_plain(config)
    assert parse_config(_to_toml(plain), "again.toml") == config
    assert tomllib.loads(_to_toml(plain))["bench"]["seed"] == 42


def _to_toml(value: dict[str, object], prefix: str = "") -> str:
    """A small TOML writer for the round trip (tables, arrays of tables, scalars, arrays)."""
    lines, tables = [], []
    for key, item in value.items():
        if item is None:
            continue
        if isinstance(item, dict):
            tables.append((key, item, False))
        elif isinstance(item, list) and item and isinstance(item[0], dict):
            tables.append((key, item, True))
        else:
            lines.append(f"{key} = {_scalar(item)}")
    out = "\n".join(lines) + "\n"
    for key, item, is_array in tables:
        name = f"{prefix}{key}"
        if not item and not is_array:
            continue
        for entry in (item if is_array else [item]):
            out += f"\n[[{name}]]\n" if is_array else f"\n[{name}]\n"
            out += _to_toml(entry, name + ".")
    return out


def _scalar(item: object) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(item, list):
        return "[" + ", ".join(_scalar(i) for i in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f'"{k}" = {_scalar(v)}' for k, v in item.items()) + "}"
    return repr(item)


@pytest.mark.parametrize(("text", "key", "line", "reason"), [
    ("[bench.fibre]\nlength_km = -1\n", "bench.fibre.length_km", 4, "must be >= 0"),
    ("[bench.fibre]\nmisalignment = 0.5\n", "bench.fibre.misalignment", 4, "[0, 0.5)"),
    ("[bench.source]\nmu1 = 0.1\nmu2 = 0.2\n", "bench.source.mu2", 5, "mu1 > mu2 > mu3"),
    ("[bench.detector]\nefficiency = 2\n", "bench.detector.efficiency", 4, "(0, 1]"),
    ("[bench.detector]\ndead_time_ps = 1.5\n", "bench.detector.dead_time_ps", 4,
     "must be an integer"),
    ("[bench.tagger]\nchannels = [1, 2, 3]\n", "bench.tagger.channels", 4, "need 4 channels"),
    ("[bench.tagger]\nsync_every_slots = 10\nsync_channel = 1\n", "bench.tagger.sync_channel",
     5, "also a detector channel"),
    ("[[bench.detectors]]\nefficiency = 0.2\n", "bench.detectors", 3, "need 4 tables"),
    ("[bench]\nservice = \"nohost\"\n", "bench.service", 4, "HOST:PORT"),
    ("[bench]\nservice = \"unix:\"\n", "bench.service", 4, "socket path"),
    ("[bench]\nseed = -1\n", "bench.seed", 4, "must be in"),
    ("[bench.fibre]\nlength = 3\n", "bench.fibre.length", 4, "unknown key"),
    ("[bench]\nname = \"b\"\n[[instruments]]\nname = \"x\"\nrole = \"detector\"\n"
     "driver = \"idq.id120\"\nresource = \"sim://other/x\"\n", "instruments[0].resource", 9,
     "not the configured bench 'b'"),
])
def test_errors_name_file_line_and_key(text: str, key: str, line: int, reason: str) -> None:
    err = error_of(text)
    assert err.key == key
    assert err.line == line
    assert reason in err.reason
    assert str(err).startswith(f"lab.toml:{line}: {key}: ")


def test_one_detector_table_or_four_not_both() -> None:
    text = "[bench.detector]\nefficiency = 0.2\n" + "[[bench.detectors]]\n" * 4
    assert error_of(text).key == "bench.detector"


def test_install_bench_creates_it_and_declares_the_sim_instruments() -> None:
    text = NODE + """
[bench]
name = "cfg-bench"
seed = 9
[bench.fibre]
length_km = 7.5

[[instruments]]
name = "pm"
role = "power_meter"
driver = "thorlabs.pm100"
resource = "sim://cfg-bench/meter"

[[instruments]]
name = "rng"
role = "random_source"
driver = "sim.seeded_random"
resource = "sim://cfg-bench/rng"
"""
    config: NodeConfig = parse_config(text, "lab.toml")
    bench = install_bench(config)
    try:
        assert get_bench("cfg-bench") is bench
        assert bench.instruments() == {"meter": "thorlabs.pm100"}  # type: ignore[attr-defined]
        assert bench.link.params.fibre.length_km == 7.5  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="exists"):
            install_bench(config)
    finally:
        remove_bench("cfg-bench")


def test_install_bench_with_a_service_reaches_the_hosted_bench() -> None:
    from qkdnode.drivers.registry import open_instrument
    from qkdnode.drivers.sim.service import BenchClient
    from qkdnode.node.config.bench import serve_bench

    host_config = parse_config(NODE + '[bench]\nname = "served"\nseed = 3\n'
                               '[bench.fibre]\nlength_km = 12.0\n', "host.toml")
    with serve_bench(host_config, "127.0.0.1:0") as service:
        node_config = parse_config(NODE + f'[bench]\nname = "served"\nservice = '
                                   f'"{service.address}"\n[[instruments]]\nname = "voa"\n'
                                   'role = "attenuator"\ndriver = "scpi.voa"\n'
                                   'resource = "sim://served/voa"\n', "node.toml")
        client = install_bench(node_config)
        try:
            assert isinstance(client, BenchClient)
            assert service.bench.instruments() == {"voa": "scpi.voa"}
            with open_instrument("voa", "attenuator", "scpi.voa", "sim://served/voa",
                                 2.0) as voa:
                voa.set_attenuation_db(6.0)
            assert service.bench.attenuation_db() == 6.0
            assert service.bench.link.params.fibre.length_km == 12.0
        finally:
            remove_bench("served")
