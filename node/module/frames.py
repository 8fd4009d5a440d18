"""How Alice's per-slot choices meet Bob's slot numbers: blocks, frames and timing slots.

Slots and blocks
    Slot numbers count Alice's pulses from the first slot of her first frame (slot 0). Block
    ``b`` is the slots ``[b * N, (b + 1) * N)``, ``N = block_slots``: both ends derive a block's
    number from slot numbers alone, so no message is needed to agree where blocks begin (Bob's
    announcement of block ``b`` names it; Alice answers with the choices she played there).

Frames
    The transmitter plays one frame of ``N`` fresh random choices per block (reloaded at each
    block boundary), so no choice repeats within a block's key material: a frame repeating
    inside a block would make key bits equal by construction.

Timing slots
    Qsync needs a pattern that repeats and that Bob knows before he can number slots, while the
    decoy-state analysis needs intensities Eve cannot know in advance. The two are kept apart: a
    public pseudo-random set of positions modulo ``L = timing_slots`` (about one in
    :data:`TIMING_SHARE`, derived from the link name) always carries one fixed intensity (the
    signal ``mu1`` when it is more than twice the mean intensity, else ``mu3``, the one whose
    slots stand out more from the mean); every other slot is random. Bob's Qsync correlates
    against that public pattern; detections in timing slots are dropped by Bob before his
    announcement (their intensity is public, so they count for neither key nor estimation).
    ``N`` is a multiple of ``L``, and ``L`` spans more than twice the clock-offset window
    (:func:`qkdnode.dsp.qsync.acquire`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from qkdnode.dsp.sifting import X0, X1, Z0, Z1, AliceChoices, BobDetections, measure

__all__ = ["TIMING_SHARE", "FramePlan", "channel_patterns"]

# One slot in eight is a public timing slot: enough contrast for Qsync's correlation (a mu1
# slot clicks ~5x as often as the mean slot at Lim et al.'s decoy settings, a mu3 slot almost
# never) at a cost of 1/8 of the slots.
TIMING_SHARE = 8

_MASKS = {"X0": X0, "X1": X1, "Z0": Z0, "Z1": Z1}


def channel_patterns(channel_map: dict[int, str]) -> NDArray[np.uint8]:
    """A lookup table tagger channel -> detector mask (0 for channels that are no detector).

    Raises:
        ValueError: a detector name other than X0, X1, Z0, Z1, or a negative channel.
    """
    if not channel_map:
        raise ValueError("channel_map must name at least one detector channel")
    table = np.zeros(max(channel_map) + 1, np.uint8)
    for channel, name in channel_map.items():
        if channel < 0 or name not in _MASKS:
            raise ValueError(f"channel_map: channel {channel} -> {name!r}; channels are >= 0 "
                             f"and detectors one of {sorted(_MASKS)}")
        table[channel] = _MASKS[name]
    return table


@dataclass(frozen=True)
class FramePlan:
    """What both ends of a link agree on: block length, timing slots and the source settings.

    Attributes:
        link: the link name (seeds the public timing positions).
        block_slots: slots per block ``N`` (a multiple of ``timing_slots``).
        timing_slots: length ``L`` of the timing pattern.
        mu: intensities (mu1, mu2, mu3); p: their probabilities; q_x: Alice's X probability.
    """

    link: str
    block_slots: int
    timing_slots: int
    mu: tuple[float, float, float]
    p: tuple[float, float, float]
    q_x: float = 0.5
    timing: NDArray[np.bool_] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timing_slots < TIMING_SHARE or self.block_slots < self.timing_slots or \
                self.block_slots % self.timing_slots:
            raise ValueError(f"block_slots ({self.block_slots}) must be a positive multiple of "
                             f"timing_slots ({self.timing_slots}, at least {TIMING_SHARE})")
        if not 0.0 < self.q_x < 1.0:
            raise ValueError(f"q_x must lie in (0, 1), got {self.q_x}")
        if abs(sum(self.p) - 1.0) > 1e-9 or min(self.p) <= 0.0:
            raise ValueError(f"p must be three positive probabilities summing to 1, got {self.p}")
        seed = int.from_bytes(hashlib.sha256(f"qkdnode timing/{self.link}".encode()).digest()[:8])
        timing = np.random.default_rng(seed).integers(0, TIMING_SHARE, self.timing_slots) == 0
        timing.flags.writeable = False
        object.__setattr__(self, "timing", timing)

    @property
    def timing_class(self) -> int:
        """The intensity class of the timing slots: 0 (mu1) or 2 (mu3)."""
        mean = float(np.dot(self.mu, self.p))
        return 0 if self.mu[0] > 2.0 * mean else 2

    def pattern(self) -> NDArray[np.float64]:
        """Qsync's announced pattern: the expected mean photon number per position mod L."""
        mean = float(np.dot(self.mu, self.p))
        return np.where(self.timing, self.mu[self.timing_class], mean)

    def first_slot(self, block: int) -> int:
        return block * self.block_slots

    def alice_block(self, block: int, rng: np.random.Generator) -> AliceChoices:
        """Alice's fresh random choices for block ``block`` (timing slots: timing_class)."""
        n = self.block_slots
        basis = (rng.random(n, dtype=np.float32) >= self.q_x).astype(np.uint8)
        bit = rng.integers(0, 2, n, dtype=np.uint8)
        intensity = rng.choice(3, size=n, p=self.p).astype(np.uint8)
        intensity[np.tile(self.timing, n // self.timing_slots)] = self.timing_class
        return AliceChoices(self.first_slot(block), basis, bit, intensity)

    def bob_block(self, block: int, slots: NDArray[np.int64], masks: NDArray[np.uint8],
                  random_bits: NDArray[np.uint8]) -> BobDetections:
        """Bob's detections of block ``block``: clicks of one slot merged into one pattern,
        timing slots dropped, then decoded with ``random_bits`` (one per merged detection,
        as :func:`qkdnode.dsp.sifting.measure`; at least as many as detections given).

        Args:
            slots: slot of each click (any order; only this block's are used).
            masks: detector mask of each click.
        """
        lo = self.first_slot(block)
        keep = (slots >= lo) & (slots < lo + self.block_slots) & (masks > 0)
        s, m = slots[keep], masks[keep]
        s_rel = s - lo
        keep = ~self.timing[s_rel % self.timing_slots]
        s, m = s[keep], m[keep]
        order = np.argsort(s, kind="stable")
        s, m = s[order], m[order]
        if s.size:
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            s = s[starts]
            m = np.bitwise_or.reduceat(m, starts).astype(np.uint8)
        if random_bits.size < s.size:
            raise ValueError(f"random_bits holds {random_bits.size} values for {s.size} "
                             "detections")
        return measure(s.astype(np.int64), m, random_bits=random_bits[:s.size])
