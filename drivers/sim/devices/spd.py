"""Simulated ``s15.spd``: an S-Fifteen-style serial single-photon detector on the bench.

Command set: the driver's (:mod:`qkdnode.drivers.instruments.s15.spd`). Set commands answer
nothing; a value outside the instrument's range or an unknown command is ignored (the
instrument has no error queue: the driver finds out by reading back). Queries answer one line.

Physics as the simulated ID120 (:mod:`qkdnode.drivers.sim.devices.id120`): ``hvolt`` scales
efficiency and dark counts by the excess bias above breakdown (the configured values at
:data:`NOMINAL_BIAS_V`, the power-on bias); the dead time is the bench's (fixed by the
quenching circuit); ``counts?`` is the count of one window drawn about the bench's rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from ...instruments.s15.spd import BIAS_RANGE_V, THRESHOLD_RANGE_V, WINDOW_RANGE_MS
from ..bench import detector_indices
from .base import MessageDevice

if TYPE_CHECKING:
    from ..bench import Bench

__all__ = ["SimSPD"]

# The bias at which the configured efficiency and dark count rate hold (power-on), and the
# breakdown below which the APD counts nothing: a thick silicon APD of the open SPD's kind
# runs some 5 V above its breakdown.
NOMINAL_BIAS_V = 30.0
BREAKDOWN_V = 25.0
AMBIENT_C = 25.0
POWER_ON_THRESHOLD_V = 0.1
POWER_ON_WINDOW_MS = 1000
POWER_ON_SET_POINT_C = -20.0


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class SimSPD(MessageDevice):
    """An S-Fifteen-style SPD driving one or all of the bench's detectors."""

    KIND: ClassVar[str] = "serial"
    TERMINATORS: ClassVar[tuple[bytes, ...]] = (b"\n", b"\r")
    REPLY_TERMINATION: ClassVar[bytes] = b"\r\n"
    IDN: ClassVar[str] = "S-Fifteen Instruments,SPD (simulated),SIM0003,1.0"

    def __init__(self, bench: Bench, name: str) -> None:
        super().__init__(bench, name)
        self.indices = detector_indices(name)
        # The configured detectors, whatever another controller did to them since.
        self._nominal = {j: bench.configured.detectors[j] for j in self.indices}
        self._hvolt = NOMINAL_BIAS_V
        self._threshvolt = POWER_ON_THRESHOLD_V
        self._window_ms = POWER_ON_WINDOW_MS
        self._settemp = POWER_ON_SET_POINT_C
        self._loop = False

    def _apply(self) -> None:
        factor = max(0.0, (self._hvolt - BREAKDOWN_V) / (NOMINAL_BIAS_V - BREAKDOWN_V))
        for j, nominal in self._nominal.items():
            self.bench.set_detector(j, efficiency=nominal.efficiency * factor,
                                    dark_count_rate_hz=nominal.dark_count_rate_hz * factor)

    def handle(self, message: bytes) -> str | None:
        try:
            text = message.decode("ascii").strip()
        except UnicodeDecodeError:
            return None
        command, _, arg = text.partition(" ")
        command = command.lower()
        queries: dict[str, Callable[[], str]] = {
            "*idn?": lambda: self.IDN,
            "hvolt?": lambda: f"{self._hvolt:.3f}",
            "threshvolt?": lambda: f"{self._threshvolt:.3f}",
            "time?": lambda: str(self._window_ms),
            "counts?": lambda: str(self.bench.counts(self.indices, self._window_ms / 1e3)),
            "temp?": lambda: f"{self._settemp if self._loop else AMBIENT_C:.2f}",
            "settemp?": lambda: f"{self._settemp:.2f}",
            "loop?": lambda: "1" if self._loop else "0",
        }
        if command in queries:
            return None if arg else queries[command]()
        value = _number(arg)
        if value is None:
            return None
        if command == "hvolt" and BIAS_RANGE_V[0] <= value <= BIAS_RANGE_V[1]:
            # The DAC sets whole millivolts.
            self._hvolt = round(value, 3)
            self._apply()
        elif command == "threshvolt" and THRESHOLD_RANGE_V[0] <= value <= THRESHOLD_RANGE_V[1]:
            self._threshvolt = round(value, 3)
        elif command == "time" and value.is_integer() and (
                WINDOW_RANGE_MS[0] <= value <= WINDOW_RANGE_MS[1]):
            self._window_ms = int(value)
        elif command == "settemp":
            self._settemp = round(value, 2)
        elif command == "loop" and value in (0.0, 1.0):
            self._loop = value == 1.0
        return None
