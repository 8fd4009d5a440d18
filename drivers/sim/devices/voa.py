"""Simulated ``scpi.voa``: a SCPI variable optical attenuator at Alice's output on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.scpi.voa`), SCPI long or short
forms, error queue. Its attenuation above the power-on value (0 dB, output open) lowers
every mean photon number of the source; a closed output blocks the light
(:data:`~qkdnode.drivers.sim.bench.SHUTTER_ATTENUATION_DB`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ...instruments.scpi.voa import ATTENUATION_RANGE_DB
from .base import ScpiDevice, in_range, no_args, number, on_off

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["SimVoa"]


class SimVoa(ScpiDevice):
    """A SCPI VOA with a shutter."""

    KIND: ClassVar[str] = "visa"
    IDN: ClassVar[str] = "Generic,VOA (simulated),SIM0006,1.0"
    COMMANDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("INPut:ATTenuation", "_att"), ("INPut:ATTenuation?", "_att_q"),
        ("OUTPut[:STATe]", "_out"), ("OUTPut[:STATe]?", "_out_q"),
    )

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.reset()

    def reset(self) -> None:
        self._db = 0.0
        self._open = True
        self._apply()

    def _apply(self) -> None:
        self.bench.set_attenuation(self.name, self._db if self._open else None)

    def _att(self, groups: tuple[str, ...], args: str) -> None:
        # The attenuator sets in steps of 1 mdB.
        self._db = round(in_range(number(args), *ATTENUATION_RANGE_DB), 3)
        self._apply()

    def _att_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return f"{self._db:.3f}"

    def _out(self, groups: tuple[str, ...], args: str) -> None:
        self._open = on_off(args)
        self._apply()

    def _out_q(self, groups: tuple[str, ...], args: str) -> str:
        no_args(args)
        return "1" if self._open else "0"
