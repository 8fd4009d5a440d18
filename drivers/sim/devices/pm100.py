"""Simulated ``thorlabs.pm100``: a PM100-class power meter at Alice's output on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.thorlabs.pm100`), SCPI long or
short forms, error queue. ``MEAS:POW?`` reads the bench's optical power after the
attenuators (:meth:`~qkdnode.drivers.sim.bench.Bench.optical_power_w`), as a photodiode
sensor corrected for the set wavelength: an ideal photodiode's responsivity grows with the
wavelength, so the reading is ``P * lambda_laser / lambda_set``; plus the sensor's noise,
:data:`NOISE_W` over the square root of the samples averaged.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from ...instruments.thorlabs.pm100 import AVERAGING_RANGE
from ..bench import LASER_WAVELENGTH_NM
from .base import ScpiDevice, in_range, integer, no_args, number

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["SimPM100"]

# The simulated sensor: an InGaAs photodiode head (800-1700 nm) of high sensitivity, with an
# rms noise of 10 fW per sample (readings at single-photon power levels, ~100 pW, stay
# meaningful).
SENSOR_RANGE_NM = (800.0, 1700.0)
NOISE_W = 1e-14
SENSOR_IDN = "S155C (simulated),SIM0005,01-Jan-2026,1,18,289"


class SimPM100(ScpiDevice):
    """A PM100-class power meter."""

    KIND: ClassVar[str] = "visa"
    IDN: ClassVar[str] = "Thorlabs,PM100USB (simulated),SIM0005,1.7.0"
    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("SYSTem:SENSor:IDN?", "_sensor_q"),
        ("SENSe:CORRection:WAVelength", "_wav"), ("SENSe:CORRection:WAVelength?", "_wav_q"),
        ("SENSe:AVERage[:COUNt]", "_aver"), ("SENSe:AVERage[:COUNt]?", "_aver_q"),
        ("MEASure[:SCALar]:POWer?", "_meas_q"),
    )

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.reset()

    def reset(self) -> None:
        self._wavelength_nm = LASER_WAVELENGTH_NM
        self._averaging = 1

    def _sensor_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return SENSOR_IDN

    def _wav(self, groups: tuple[str, ...], args: str) -> None:
        self._wavelength_nm = in_range(number(args), *SENSOR_RANGE_NM)

    def _wav_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return f"{self._wavelength_nm:g}"

    def _aver(self, groups: tuple[str, ...], args: str) -> None:
        self._averaging = int(in_range(integer(args), *AVERAGING_RANGE))

    def _aver_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return str(self._averaging)

    def _meas_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        power = self.bench.optical_power_w() * LASER_WAVELENGTH_NM / self._wavelength_nm
        noise = float(self.bench.rng.normal(0.0, NOISE_W / math.sqrt(self._averaging)))
        return f"{power + noise:.6E}"
