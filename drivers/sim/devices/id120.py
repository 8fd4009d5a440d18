"""Simulated ``idq.id120``: an ID120-class SCPI detector controller on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.idq.id120`), integer sub-units on
the wire. Physics:

* ``BIAS:VOLTAGE`` sets the efficiency and the dark count rate of the detectors it drives:
  both scale with the excess bias above breakdown, ``(V - V_br) / (V_nom - V_br)``, so the
  bench's configured values hold at :data:`NOMINAL_BIAS_UV` (the power-on bias); below
  breakdown the diode counts nothing;
* ``DEADTIME:TIME`` sets their dead time (until it is set, the configured one applies; the
  query then reports it in whole µs, at least 1);
* ``COUNTERS:DETECTION_FREQ?`` is the count of the last window over its length, the count
  drawn about the bench's expected rate (:meth:`~qkdnode.drivers.sim.bench.Bench.counts`);
* the temperature reads the set point while regulating and :data:`AMBIENT_MC` otherwise;
  threshold and temperature are kept but do not act on the counts (the threshold is taken to
  sit below every avalanche pulse).

Which detectors: see :func:`~qkdnode.drivers.sim.bench.detector_indices`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ...instruments.idq.id120 import (
    BIAS_RANGE_UV,
    DEAD_TIME_RANGE_US,
    INTEGRATION_RANGE_MS,
    TEMPERATURE_RANGE_MC,
    THRESHOLD_RANGE_UV,
)
from ..bench import detector_indices
from .base import ScpiDevice, in_range, integer, no_args, on_off

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["SimID120"]

# The bias at which the bench's configured efficiency and dark count rate hold (the power-on
# bias), and the breakdown voltage below which the APD counts nothing: a silicon APD module
# of the class breaks down some 10 V under its operating bias.
NOMINAL_BIAS_UV = 48_500_000
BREAKDOWN_UV = 38_500_000
# Room temperature, read when the regulation is off.
AMBIENT_MC = 25_000
# Power-on settings.
POWER_ON_THRESHOLD_UV = 100_000
POWER_ON_INTEGRATION_MS = 1_000
POWER_ON_SET_POINT_MC = -40_000


class SimID120(ScpiDevice):
    """An ID120-class controller driving one or all of the bench's detectors."""

    KIND: ClassVar[str] = "visa"
    IDN: ClassVar[str] = "ID Quantique,ID120 (simulated),SIM0001,1.0"
    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("BIAS:VOLTAGE", "_bias"), ("BIAS:VOLTAGE?", "_bias_q"),
        ("THRESHOLD:VOLTAGE", "_threshold"), ("THRESHOLD:VOLTAGE?", "_threshold_q"),
        ("DEADTIME:TIME", "_dead"), ("DEADTIME:TIME?", "_dead_q"),
        ("COUNTERS:INTEGRATION_TIME", "_window"), ("COUNTERS:INTEGRATION_TIME?", "_window_q"),
        ("COUNTERS:DETECTION_FREQ?", "_freq_q"),
        ("REG:TEMP_SET_POINT", "_set_point"), ("REG:TEMP_SET_POINT?", "_set_point_q"),
        ("REG:TEMP?", "_temp_q"), ("REG:RUN", "_run"), ("REG:RUN?", "_run_q"),
    )

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.indices = detector_indices(name)
        # The configured detectors, whatever another controller did to them since.
        self._nominal = {j: bench.configured.detectors[j] for j in self.indices}
        self.reset()

    def reset(self) -> None:
        self._bias_uv = NOMINAL_BIAS_UV
        self._threshold_uv = POWER_ON_THRESHOLD_UV
        self._dead_us: int | None = None
        self._window_ms = POWER_ON_INTEGRATION_MS
        self._set_point_mc = POWER_ON_SET_POINT_MC
        self._regulating = False
        self._apply()

    def _apply(self) -> None:
        excess = (self._bias_uv - BREAKDOWN_UV) / (NOMINAL_BIAS_UV - BREAKDOWN_UV)
        factor = max(0.0, excess)
        for j, nominal in self._nominal.items():
            dead_ps = (self._dead_us * 1_000_000 if self._dead_us is not None
                       else nominal.dead_time_ps)
            self.bench.set_detector(j, efficiency=nominal.efficiency * factor,
                                    dark_count_rate_hz=nominal.dark_count_rate_hz * factor,
                                    dead_time_ps=dead_ps)

    def _int_in(self, args: str, bounds: tuple[int, int]) -> int:
        return int(in_range(integer(args), *bounds))

    def _bias(self, groups: tuple[str, ...], args: str) -> None:
        self._bias_uv = self._int_in(args, BIAS_RANGE_UV)
        self._apply()

    def _bias_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._bias_uv)

    def _threshold(self, groups: tuple[str, ...], args: str) -> None:
        self._threshold_uv = self._int_in(args, THRESHOLD_RANGE_UV)

    def _threshold_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._threshold_uv)

    def _dead(self, groups: tuple[str, ...], args: str) -> None:
        self._dead_us = self._int_in(args, DEAD_TIME_RANGE_US)
        self._apply()

    def _dead_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        if self._dead_us is not None:
            return str(self._dead_us)
        configured = self._nominal[self.indices[0]].dead_time_ps
        return str(max(DEAD_TIME_RANGE_US[0], round(configured / 1e6)))

    def _window(self, groups: tuple[str, ...], args: str) -> None:
        self._window_ms = self._int_in(args, INTEGRATION_RANGE_MS)

    def _window_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._window_ms)

    def _freq_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        window_s = self._window_ms / 1e3
        return f"{self.bench.counts(self.indices, window_s) / window_s:.6g}"

    def _set_point(self, groups: tuple[str, ...], args: str) -> None:
        self._set_point_mc = self._int_in(args, TEMPERATURE_RANGE_MC)

    def _set_point_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._set_point_mc)

    def _temp_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._set_point_mc if self._regulating else AMBIENT_MC)

    def _run(self, groups: tuple[str, ...], args: str) -> None:
        self._regulating = on_off(args)

    def _run_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "1" if self._regulating else "0"
