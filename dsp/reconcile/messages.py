"""Messages of the reconciliation dialogue, each with the number of key bits it discloses.

Frame parameters, seeds, the decoder's verdicts and Bob's error count depend only on the channel,
never on the key, and count zero; syndrome bits, revealed values and tag bits count one each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .plan import FramePlan

__all__ = [
    "BitsRevealed",
    "DecodingReported",
    "FrameVerified",
    "Message",
    "ReportStatus",
    "SyndromeComputed",
    "TagComputed",
]

ReportStatus = Literal["decoded", "need_more", "failed"]


@dataclass(frozen=True, slots=True, eq=False)
class SyndromeComputed:
    """Alice -> Bob: the frame plan and the syndrome rows that are not known to be zero."""

    frame: int
    plan: FramePlan
    syndrome: NDArray[np.uint8]

    @property
    def disclosed_bits(self) -> int:
        """Bits revealed about the key: the syndrome bits sent."""
        return int(self.syndrome.size)


@dataclass(frozen=True, slots=True)
class DecodingReported:
    """Bob -> Alice: outcome of a decoding round (``need_more`` asks for a blind reveal).

    ``steps`` is how many blind steps Bob asks for (``need_more`` only): more than one when his
    decoder ended the round far from convergence (:data:`.ends.FAR_UNSAT_FRACTION`). Like the
    verdict, it depends on the channel errors only (the decoder's trajectory on a syndrome and
    Bob's word is that of the error pattern), so it discloses nothing about the key.
    """

    frame: int
    status: ReportStatus
    steps: int = 1

    @property
    def disclosed_bits(self) -> int:
        """Bits revealed about the key: none (convergence depends on the errors only)."""
        return 0


@dataclass(frozen=True, slots=True, eq=False)
class BitsRevealed:
    """Alice -> Bob: values of the next positions of the agreed reveal order.

    The order is the punctured positions, then ``plan.payload_reveals`` payload positions.
    """

    frame: int
    values: NDArray[np.uint8]

    @property
    def disclosed_bits(self) -> int:
        """Bits revealed about the key: each value revealed."""
        return int(self.values.size)


@dataclass(frozen=True, slots=True, eq=False)
class TagComputed:
    """Alice -> Bob: the hash seed (public randomness) and Alice's tag of her payload."""

    frame: int
    seed: NDArray[np.uint64]
    tag: NDArray[np.uint8]

    @property
    def disclosed_bits(self) -> int:
        """Bits revealed about the key: the tag bits (the seed is independent of the key)."""
        return int(self.tag.size)


@dataclass(frozen=True, slots=True)
class FrameVerified:
    """Bob -> Alice: whether the tags matched, and the errors Bob corrected (channel data)."""

    frame: int
    accepted: bool
    errors: int

    @property
    def disclosed_bits(self) -> int:
        """Bits revealed about the key: none (the error count is independent of the key)."""
        return 0


Message = SyndromeComputed | DecodingReported | BitsRevealed | TagComputed | FrameVerified
