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

Where Alice's choices come from
    From a :class:`~qkdnode.drivers.roles.RandomSource` (a hardware QRNG or the operating
    system's CSPRNG; a seeded source only on the simulated bench), mapped exactly, with no
    pseudo-random generator in between: each slot takes a 16-bit word for its basis (X when
    the word is below ``round(q_x * 2^16)``), a 16-bit word for its intensity class (by the
    16-bit thresholds of the cumulative probabilities) and one bit. The probabilities played
    are therefore multiples of ``2^-16`` (:func:`drawn_probabilities`); the node gives the
    parameter estimation exactly these (both ends derive them the same way from the
    configuration), so the quantisation costs no bias in the decoy-state bounds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from qkdnode.drivers.roles import RandomSource
from qkdnode.dsp.sifting import X0, X1, Z0, Z1, AliceChoices, BobDetections, measure

__all__ = ["CHOICE_BITS", "DRAW_SLOTS", "TIMING_SHARE", "FramePlan", "channel_patterns",
           "choices_from_bytes", "drawn_probabilities"]

# One slot in eight is a public timing slot: enough contrast for Qsync's correlation (a mu1
# slot clicks ~5x as often as the mean slot at Lim et al.'s decoy settings, a mu3 slot almost
# never) at a cost of 1/8 of the slots.
TIMING_SHARE = 8

_MASKS = {"X0": X0, "X1": X1, "Z0": Z0, "Z1": Z1}

# Resolution of the basis and intensity choices: one 16-bit word each per slot. With the
# probabilities the estimation uses quantised alike (drawn_probabilities) the mapping is exact;
# 16 bits keep a slot at 4.125 random bytes (2^24 slots: 69 MB, ~0.3 s of os.urandom here).
CHOICE_BITS = 16
_WORD = 1 << CHOICE_BITS
# Slots drawn per request to the random source: 2^20 slots are 4.1 MiB of random bytes, so a
# 2^26-slot frame never holds all its randomness at once and a QRNG's requests stay small.
DRAW_SLOTS = 1 << 20


def _thresholds(p: tuple[float, float, float], q_x: float) -> tuple[int, int, int]:
    """The 16-bit thresholds (X basis, intensity class 0, classes 0-1) of ``p`` and ``q_x``.

    Raises:
        ValueError: a probability that rounds to 0 or 1 at 16 bits.
    """
    t_x = round(q_x * _WORD)
    t1 = round(p[0] * _WORD)
    t2 = round((p[0] + p[1]) * _WORD)
    if not 0 < t_x < _WORD:
        raise ValueError(f"q_x {q_x} rounds to {t_x}/2^{CHOICE_BITS}: both bases need a "
                         f"probability of at least 2^-{CHOICE_BITS + 1}")
    if not 0 < t1 < t2 < _WORD:
        raise ValueError(f"p {p} rounds to thresholds {t1}, {t2} of 2^{CHOICE_BITS}: every "
                         f"intensity needs a probability of at least 2^-{CHOICE_BITS + 1}")
    return t_x, t1, t2


def drawn_probabilities(p: tuple[float, float, float], q_x: float
                        ) -> tuple[tuple[float, float, float], float]:
    """The probabilities Alice's choices are drawn with: ``p`` and ``q_x`` rounded to
    multiples of ``2^-16`` (exact in floating point; applying it twice changes nothing).
    The parameter estimation must use these (:class:`FramePlan` draws with them).

    Raises:
        ValueError: a probability that rounds to 0 or 1.
    """
    t_x, t1, t2 = _thresholds(p, q_x)
    return (t1 / _WORD, (t2 - t1) / _WORD, (_WORD - t2) / _WORD), t_x / _WORD


def choices_from_bytes(data: bytes, n: int, thresholds: tuple[int, int, int]
                       ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Maps ``4 n + ceil(n / 8)`` random bytes to ``n`` slots' (basis, bit, intensity).

    Layout: ``n`` little-endian 16-bit basis words (basis 0 = X when the word is below
    ``thresholds[0]``), ``n`` 16-bit intensity words (class 0 below ``thresholds[1]``, 1 below
    ``thresholds[2]``, else 2), then the bits, bit ``i`` being bit ``i % 8`` of byte ``i // 8``.

    Raises:
        ValueError: ``data`` is not of that length.
    """
    need = 4 * n + -(-n // 8)
    if len(data) != need:
        raise ValueError(f"{n} slots need {need} random bytes, got {len(data)}")
    t_x, t1, t2 = thresholds
    words = np.frombuffer(data, "<u2", 2 * n)
    basis = (words[:n] >= t_x).view(np.uint8)
    w = words[n:]
    intensity = (w >= t1).view(np.uint8)
    intensity += (w >= t2).view(np.uint8)
    bit = np.unpackbits(np.frombuffer(data, np.uint8, offset=4 * n), count=n, bitorder="little")
    return basis, bit, intensity


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
        mu: intensities (mu1, mu2, mu3); p: their probabilities; q_x: Alice's X probability
            (both drawn as their multiples of ``2^-16``: :func:`drawn_probabilities`).
    """

    link: str
    block_slots: int
    timing_slots: int
    mu: tuple[float, float, float]
    p: tuple[float, float, float]
    q_x: float = 0.5
    timing: NDArray[np.bool_] = field(init=False, repr=False, compare=False)
    _thresholds: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.timing_slots < TIMING_SHARE or self.block_slots < self.timing_slots or \
                self.block_slots % self.timing_slots:
            raise ValueError(f"block_slots ({self.block_slots}) must be a positive multiple of "
                             f"timing_slots ({self.timing_slots}, at least {TIMING_SHARE})")
        if not 0.0 < self.q_x < 1.0:
            raise ValueError(f"q_x must lie in (0, 1), got {self.q_x}")
        if abs(sum(self.p) - 1.0) > 1e-9 or min(self.p) <= 0.0:
            raise ValueError(f"p must be three positive probabilities summing to 1, got {self.p}")
        object.__setattr__(self, "_thresholds", _thresholds(self.p, self.q_x))
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

    @property
    def drawn(self) -> tuple[tuple[float, float, float], float]:
        """``(p, q_x)`` as the choices are drawn (:func:`drawn_probabilities`)."""
        return drawn_probabilities(self.p, self.q_x)

    def alice_block(self, block: int, source: RandomSource) -> AliceChoices:
        """Alice's fresh random choices for block ``block`` (timing slots: timing_class),
        from ``source``'s bytes in requests of :data:`DRAW_SLOTS` slots
        (:func:`choices_from_bytes`; a seeded source gives the same choices each time).

        Raises:
            ValueError: the source returned a wrong number of bytes.
        """
        n = self.block_slots
        basis = np.empty(n, np.uint8)
        bit = np.empty(n, np.uint8)
        intensity = np.empty(n, np.uint8)
        for lo in range(0, n, DRAW_SLOTS):
            m = min(DRAW_SLOTS, n - lo)
            need = 4 * m + -(-m // 8)
            data = source.random_bytes(need)
            if len(data) != need:
                raise ValueError(f"random source {source!r} returned {len(data)} bytes for a "
                                 f"request of {need}")
            basis[lo:lo + m], bit[lo:lo + m], intensity[lo:lo + m] = choices_from_bytes(
                data, m, self._thresholds)
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
