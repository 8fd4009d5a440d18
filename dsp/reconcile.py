"""Information reconciliation: one-way LDPC syndrome coding, rate-adaptive and blind.

Protocol, per frame of ``n`` bits (one LDPC codeword):

1. The frame holds ``P`` payload bits (key), ``d`` *modulated* positions and ``n - d - P`` extra
   shortened positions (known zeros; used to lower the rate and to fill the input's tail). The
   ``d`` modulated positions are chosen once per code by untainted puncturing (Elkouss, Martinez-
   Mateo, Martin, 2012): each has a *dedicated* check that touches no other modulated position.
   Initially the first ``d - p`` are shortened (known zeros) and the last ``p`` punctured.
2. Alice gives each punctured position the value that makes its dedicated check's syndrome zero.
   Those ``p`` syndrome bits are then known to be zero and are not sent: Alice sends ``m - p``
   syndrome bits (:class:`SyndromeComputed`), exactly what punctured rate adaptation leaks.
3. Bob decodes (:func:`decode_syndrome`): channel LLRs on the payload, ``+/-LLR_LIMIT`` on known
   bits, 0 on punctured ones. If decoding fails he asks for more (:class:`DecodingReported`), and
   Alice reveals the values of the next punctured positions (:class:`BitsRevealed`): blind
   reconciliation (Martinez-Mateo, Elkouss, Martin, 2012), so the rate falls only as far as the
   frame needs and a rough prior QBER suffices. Once every punctured value is revealed (the
   full ``m``-bit syndrome is then known), rounds reveal payload bits, spread over the frame, up
   to ``PAYLOAD_REVEAL_EFFICIENCY``; if decoding still fails, the frame is discarded. Rounds
   continue from the decoder messages of the previous round (warm start).
4. After a converged decode, Alice sends a verification tag of her payload under a fresh seed
   (:class:`TagComputed`, :mod:`qkdnode.dsp.verification`); Bob keeps the frame only if his tag
   matches (:class:`FrameVerified`).

Leakage: every message has ``disclosed_bits``, the number of bits it reveals about the key
(syndrome bits, revealed values, tag bits). Frame parameters, seeds, the decoder's verdicts and
Bob's error count depend only on the channel, never on the key, and count zero.

Alice's side (:class:`AliceFrame`) holds only Alice's payload; Bob's side (:class:`BobFrame`)
holds only Bob's payload and the messages. :func:`reconcile_local` drives both in one process.

The input's tail (fewer bits than a frame's payload) is reconciled in a final frame whose missing
payload is filled by shortening, unless it is shorter than ``MIN_TAIL_FRACTION`` of a full
payload: such a short tail is left unkept (not attempted), because its frame would leak far more
than it yields.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ._validate import check_bits
from .estimation import binary_entropy
from .ldpc.codes import DEFAULT_N, LdpcCode, available_codes, get_code, load_code, syndrome
from .ldpc.decoder import (
    DEFAULT_MAX_ITERATIONS,
    LLR_LIMIT,
    DecodeResult,
    decode_syndrome,
    decode_syndromes,
)
from .verification import DEFAULT_EPS_COR, draw_seed, tags_match, verification_tag

__all__ = [
    "ABORT_QBER",
    "AliceFrame",
    "BitsRevealed",
    "BobFrame",
    "DecodeResult",
    "DecodingReported",
    "FrameOutcome",
    "FramePlan",
    "FrameVerified",
    "ReconcileReport",
    "SyndromeComputed",
    "TagComputed",
    "binary_entropy",
    "choose_code",
    "decode_syndrome",
    "decode_syndromes",
    "get_code",
    "modulated_positions",
    "plan_frame",
    "reconcile_local",
]

# Above ~11 % QBER one-way BB84 post-processing yields no key (Shor-Preskill); reconciling would
# only spend time and leak bits.
ABORT_QBER = 0.11

# Floor of the QBER used for planning: h(q) vanishes at 0, so a perfect estimate would plan a
# syndrome of zero bits. 0.1 % keeps a small syndrome that still catches the rare error.
MIN_PLANNING_QBER = 1e-3

# Efficiency f of the first syndrome of a frame. Finite-length codes decoded by min-sum rarely
# succeed below f ~ 1.03; starting lower wastes decoding rounds, higher wastes disclosed bits.
START_EFFICIENCY = 1.05

# Each blind round reveals about this much efficiency (in units of P * h(q)); smaller steps leak
# less on average (the overshoot is about half a step) but cost more decoding rounds.
BLIND_STEP_EFFICIENCY = 0.01

# The payload is cut so that the full syndrome (every punctured bit revealed) reaches at least
# this efficiency: the room blind reconciliation has to absorb a QBER above the estimate (the
# error count of a 64 000-bit frame at 2 % fluctuates by ~3 %, so 1.14 leaves a margin). More
# room means more shortening, which on the shipped codes costs ~0.01 of efficiency per 0.06.
MIN_FULL_EFFICIENCY = 1.14

# After every punctured value, blind rounds may reveal payload bits, up to this much efficiency
# (in units of P * h(q)) beyond the full syndrome. Each is one disclosed bit and then known to
# Bob; it rescues frames whose errors exceed the plan, instead of discarding them.
PAYLOAD_REVEAL_EFFICIENCY = 0.25

# At most this fraction of a frame is modulated (punctured/shortened by the blind protocol). The
# untainted positions are low-degree variables; fixing too many of them distorts the code's
# degree distribution and costs more efficiency than their rate range is worth. 2 % covers the
# f range START_EFFICIENCY .. MIN_FULL_EFFICIENCY at every QBER of interest.
MAX_MODULATED_FRACTION = 0.02

# Iteration budget of each blind round after the first. Rounds continue from the messages the
# previous round left (warm start), so a short budget suffices once the revealed bits tip the
# balance, and a frame that still fails costs little.
BLIND_ROUND_ITERATIONS = 30

# QBER assumed for the first frame when the caller has no estimate: mid-range of typical links;
# later frames use the error rate measured on the frames already reconciled.
INITIAL_QBER_GUESS = 0.04

# When a frame is discarded without an estimate, the next frames assume this factor more noise.
QBER_GUESS_GROWTH = 1.5

# A tail shorter than this fraction of a full payload is not reconciled (see module docstring).
MIN_TAIL_FRACTION = 0.25

# A code whose first syndrome cannot be as short as START_EFFICIENCY by at most this much is
# still preferred to a more shortened one (see choose_code).
CODE_CHOICE_SLACK = 0.05

# Frames decoded together (one decoder call over all cores) before plans are revised.
FRAMES_PER_BATCH = 8

ReportStatus = Literal["decoded", "need_more", "failed"]


# --------------------------------------------------------------------------- frame layout


@functools.lru_cache(maxsize=32)
def modulated_positions(code: LdpcCode) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Untainted puncturing: positions that can be punctured or shortened, with dedicated checks.

    Greedy, deterministic: variables by increasing degree, then in a fixed scrambled order (so that
    the positions spread over the frame instead of filling the first columns of a quasi-cyclic
    code), at most ``MAX_MODULATED_FRACTION`` of the frame; a variable is taken if none
    of its checks is already dedicated and one of them touches no modulated position yet; that
    check becomes its dedicated check. So each dedicated check has exactly one modulated
    variable, and a punctured value can be set to zero its check.

    Returns:
        ``(positions, checks)``, ``int64[d]`` each, in selection order.
    """
    touched = np.zeros(code.m, dtype=np.bool_)
    dedicated = np.zeros(code.m, dtype=np.bool_)
    positions: list[int] = []
    checks: list[int] = []
    # Multiplicative hashing (Knuth's constant) scrambles the index order reproducibly.
    scrambled = (np.arange(code.n, dtype=np.uint64) * np.uint64(2654435761)) % np.uint64(2**32)
    order = np.lexsort((scrambled, code.var_degree))
    var_ptr, var_chk, chk_degree = code.var_ptr, code.var_chk, code.chk_degree
    limit = max(1, int(MAX_MODULATED_FRACTION * code.n))
    for v in order.tolist():
        if len(positions) >= limit:
            break
        neighbours = var_chk[var_ptr[v] : var_ptr[v + 1]]
        if neighbours.size == 0 or dedicated[neighbours].any():
            continue
        free = neighbours[~touched[neighbours]]
        if free.size == 0:
            continue
        # Prefer the check of lowest degree: it recovers the punctured value most reliably.
        c = int(free[np.argmin(chk_degree[free])])
        dedicated[c] = True
        touched[neighbours] = True
        positions.append(v)
        checks.append(c)
    return np.array(positions, dtype=np.int64), np.array(checks, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class FramePlan:
    """Public parameters of one frame, chosen by Alice and sent with the syndrome.

    Attributes:
        code_name: Name of the LDPC code.
        payload_length: ``P``, number of key bits in the frame.
        n_punctured: ``p``, modulated positions punctured at the start (the rest are shortened).
        payload_reveals: Payload bits that may be revealed after every punctured value has been
            (the last resort of blind reconciliation before the frame is discarded).
        step: Number of punctured values revealed per blind round.
        qber: QBER the plan assumes (sets Bob's channel LLRs).
    """

    code_name: str
    payload_length: int
    n_punctured: int
    payload_reveals: int
    step: int
    qber: float


def plan_frame(
    code: LdpcCode, available: int, qber: float, start_efficiency: float = START_EFFICIENCY
) -> FramePlan:
    """Chooses the payload length and initial puncturing of one frame.

    Args:
        code: The code.
        available: Payload bits still to reconcile (the frame takes at most a full payload).
        qber: Assumed QBER (floored at ``MIN_PLANNING_QBER``).
        start_efficiency: Efficiency aimed at by the first syndrome.

    Returns:
        The plan.
    """
    positions, _ = modulated_positions(code)
    d = positions.size
    h = binary_entropy(max(qber, MIN_PLANNING_QBER))
    full_payload = code.n - d
    payload = min(full_payload, available, int(code.m / (MIN_FULL_EFFICIENCY * h)))
    payload = max(payload, 1)
    punctured = min(d, max(0, code.m - math.ceil(start_efficiency * payload * h)))
    step = max(1, math.ceil(BLIND_STEP_EFFICIENCY * payload * h))
    payload_reveals = min(payload, math.ceil(PAYLOAD_REVEAL_EFFICIENCY * payload * h))
    return FramePlan(
        code.name, payload, punctured, payload_reveals, step, float(max(qber, MIN_PLANNING_QBER))
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    payload: NDArray[np.int64]
    shortened: NDArray[np.int64]
    punctured: NDArray[np.int64]
    punctured_checks: NDArray[np.int64]
    sent_rows: NDArray[np.int64]
    reveal_order: NDArray[np.int64]


def _layout(code: LdpcCode, plan: FramePlan) -> _Layout:
    positions, checks = modulated_positions(code)
    d = positions.size
    if (
        not 1 <= plan.payload_length <= code.n - d
        or not 0 <= plan.n_punctured <= d
        or not 0 <= plan.payload_reveals <= plan.payload_length
        or plan.step < 1
    ):
        raise ValueError("plan: a field is out of range for the code")
    modulated = np.zeros(code.n, dtype=np.bool_)
    modulated[positions] = True
    free = np.flatnonzero(~modulated)
    extra = free.size - plan.payload_length
    # Extra shortened positions spread evenly over the frame.
    chosen = (np.arange(extra, dtype=np.int64) * free.size) // max(extra, 1)
    is_extra = np.zeros(free.size, dtype=np.bool_)
    is_extra[chosen] = True
    first_punctured = d - plan.n_punctured
    row_sent = np.ones(code.m, dtype=np.bool_)
    row_sent[checks[first_punctured:]] = False
    payload = free[~is_extra]
    # Payload bits are revealed spread over the frame: every k-th payload position.
    spread = (np.arange(plan.payload_reveals, dtype=np.int64) * payload.size) // max(
        plan.payload_reveals, 1
    )
    return _Layout(
        payload=payload,
        shortened=np.concatenate([positions[:first_punctured], free[is_extra]]),
        punctured=positions[first_punctured:],
        punctured_checks=checks[first_punctured:],
        sent_rows=np.flatnonzero(row_sent),
        reveal_order=np.concatenate([positions[first_punctured:], payload[spread]]),
    )


# --------------------------------------------------------------------------- messages


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
    """Bob -> Alice: outcome of a decoding round (``need_more`` asks for a blind reveal)."""

    frame: int
    status: ReportStatus

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


# --------------------------------------------------------------------------- the two ends


class AliceFrame:
    """Alice's end of one frame: sees only her payload bits and Bob's messages."""

    def __init__(self, code: LdpcCode, frame: int, payload_bits: NDArray[np.uint8], qber: float):
        """Plans the frame.

        Args:
            code: The code (public).
            frame: Frame number (public).
            payload_bits: Alice's payload, ``uint8`` 0/1, at most one full payload long.
            qber: Assumed QBER.
        """
        self.code = code
        self.frame = frame
        self.plan = plan_frame(code, payload_bits.size, qber)
        if self.plan.payload_length != payload_bits.size:
            raise ValueError("payload_bits: longer than the frame's payload")
        self.payload = payload_bits
        self._layout = _layout(code, self.plan)
        self._word = np.zeros(code.n, dtype=np.uint8)
        self._word[self._layout.payload] = payload_bits
        # Punctured values zero their dedicated checks (no other modulated bit is in them).
        self._word[self._layout.punctured] = syndrome(code, self._word)[
            self._layout.punctured_checks
        ]
        self._revealed = 0

    def start(self) -> SyndromeComputed:
        """The first message: plan and syndrome."""
        full = syndrome(self.code, self._word)
        return SyndromeComputed(self.frame, self.plan, full[self._layout.sent_rows])

    def on_report(self, report: DecodingReported) -> BitsRevealed | None:
        """Reveals more punctured values if Bob needs them; ``None`` when none are left."""
        if report.frame != self.frame or report.status != "need_more":
            raise ValueError("report: not a request for more bits of this frame")
        stop = min(self._revealed + self.plan.step, self._layout.reveal_order.size)
        if stop == self._revealed:
            return None
        values = self._word[self._layout.reveal_order[self._revealed : stop]].copy()
        self._revealed = stop
        return BitsRevealed(self.frame, values)

    def tag(self, source: np.random.Generator | bytes, eps_cor: float) -> TagComputed:
        """Alice's verification tag under a fresh seed drawn from ``source``."""
        seed = draw_seed(source, self.payload.size, eps_cor)
        return TagComputed(self.frame, seed, verification_tag(self.payload, seed))


class BobFrame:
    """Bob's end of one frame: sees only his payload bits and Alice's messages."""

    def __init__(self, code: LdpcCode, message: SyndromeComputed, bob_payload: NDArray[np.uint8]):
        """Prepares decoding from Alice's first message.

        Args:
            code: The code (public; must be the one the message names).
            message: Alice's syndrome message.
            bob_payload: Bob's payload bits for this frame, ``uint8`` 0/1.
        """
        if message.plan.code_name != code.name:
            raise ValueError("message: names a different code")
        check_bits("message.syndrome", message.syndrome)
        check_bits("bob_payload", bob_payload)
        if bob_payload.size != message.plan.payload_length:
            raise ValueError("bob_payload: length differs from the frame's payload")
        self.code = code
        self.frame = message.frame
        self.plan = message.plan
        self.bob_payload = bob_payload
        self._layout = _layout(code, self.plan)
        if message.syndrome.shape != (self._layout.sent_rows.size,):
            raise ValueError("message: syndrome length does not match the plan")
        self._syndrome = np.zeros(code.m, dtype=np.uint8)
        self._syndrome[self._layout.sent_rows] = message.syndrome
        q = self.plan.qber
        magnitude = math.log((1.0 - q) / q)
        self._llr = np.zeros(code.n, dtype=np.float32)
        self._llr[self._layout.payload] = np.where(bob_payload == 0, magnitude, -magnitude)
        self._llr[self._layout.shortened] = LLR_LIMIT
        self._revealed = 0
        self.rounds = 0
        self.messages = np.zeros(code.n_edges, dtype=np.float32)
        self.corrected: NDArray[np.uint8] | None = None

    def decode_input(self) -> tuple[NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]]:
        """The decoder's inputs for the current round: (full syndrome, LLRs, messages).

        The messages are those the previous round left (zeros at first): rounds warm-start.
        """
        return self._syndrome, self._llr, self.messages

    def absorb(self, bits: NDArray[np.uint8], converged: bool) -> DecodingReported:
        """Takes a decoding result (from :meth:`decode_input`) and reports it to Alice."""
        self.rounds += 1
        if converged:
            self.corrected = bits[self._layout.payload].copy()
            return DecodingReported(self.frame, "decoded")
        if self._revealed >= self._layout.reveal_order.size:
            return DecodingReported(self.frame, "failed")
        return DecodingReported(self.frame, "need_more")

    def round_budget(self, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> int:
        """Iteration budget of the next round: full for the first, short for warm rounds."""
        return max_iterations if self.rounds == 0 else min(max_iterations, BLIND_ROUND_ITERATIONS)

    def decode(self, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> DecodingReported:
        """Decodes this round on its own and reports (the path of a single frame)."""
        synd, llr, messages = self.decode_input()
        result = decode_syndrome(
            self.code, synd, llr, self.round_budget(max_iterations), messages=messages
        )
        return self.absorb(result.bits, result.converged)

    def on_reveal(self, message: BitsRevealed) -> None:
        """Fixes the revealed punctured values as known bits."""
        check_bits("message.values", message.values)
        stop = self._revealed + message.values.size
        if message.frame != self.frame or stop > self._layout.reveal_order.size:
            raise ValueError("message: reveal does not fit this frame")
        where = self._layout.reveal_order[self._revealed : stop]
        self._llr[where] = np.where(message.values == 0, LLR_LIMIT, -LLR_LIMIT)
        self._revealed = stop

    def on_tag(self, message: TagComputed) -> FrameVerified:
        """Compares Alice's tag with Bob's and accepts or discards the frame."""
        if message.frame != self.frame or self.corrected is None:
            raise ValueError("message: tag for a frame Bob has not decoded")
        accepted = tags_match(verification_tag(self.corrected, message.seed), message.tag)
        errors = int(np.count_nonzero(self.corrected != self.bob_payload))
        return FrameVerified(self.frame, accepted, errors)


# --------------------------------------------------------------------------- local driver


FrameStatus = Literal["verified", "tag_mismatch", "decoding_failed"]


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What happened to one frame.

    Attributes:
        frame: Frame number.
        code_name: Code used.
        start: Index of the frame's first payload bit in the input.
        payload_length: Payload bits of the frame.
        status: ``verified`` (kept), ``tag_mismatch`` or ``decoding_failed`` (discarded).
        rounds: Decoding rounds run (1 + blind reveals).
        disclosed_bits: Bits the frame's messages revealed (syndrome, reveals, tag).
        errors: Errors Bob corrected (0 unless decoded).
    """

    frame: int
    code_name: str
    start: int
    payload_length: int
    status: FrameStatus
    rounds: int
    disclosed_bits: int
    errors: int

    @property
    def kept(self) -> bool:
        """Whether the frame was reconciled and verified."""
        return self.status == "verified"


@dataclass(frozen=True, slots=True, eq=False)
class ReconcileReport:
    """Result of :func:`reconcile_local`.

    Attributes:
        corrected: Bob's bits after correction, same length as the input; bits of frames not
            kept are Bob's bits unchanged.
        kept: ``bool`` mask of the bits in frames that were reconciled and verified.
        disclosed_bits: Sum of ``disclosed_bits`` over every message exchanged, kept frames or
            not (syndromes, blind reveals, verification tags).
        frames_attempted: Frames started.
        frames_discarded: Frames that failed decoding or verification.
        aborted: Whether reconciliation was refused (QBER above ``ABORT_QBER``).
        reason: Why it was aborted, else ``None``.
        frames: One :class:`FrameOutcome` per attempted frame.
        messages: Every message, in order, when asked for (``keep_messages=True``), else empty.
    """

    corrected: NDArray[np.uint8]
    kept: NDArray[np.bool_]
    disclosed_bits: int
    frames_attempted: int
    frames_discarded: int
    aborted: bool = False
    reason: str | None = None
    frames: tuple[FrameOutcome, ...] = ()
    messages: tuple[Message, ...] = ()

    @property
    def kept_disclosed_bits(self) -> int:
        """Bits disclosed by the kept frames (what the key length of the kept bits must pay)."""
        return sum(f.disclosed_bits for f in self.frames if f.kept)

    @property
    def errors_corrected(self) -> int:
        """Errors corrected in the kept frames."""
        return sum(f.errors for f in self.frames if f.kept)


def _rng(source: np.random.Generator | bytes | None) -> np.random.Generator:
    if source is None:
        # Fresh operating-system entropy: the secure default when the caller passes none.
        return np.random.default_rng()
    if isinstance(source, np.random.Generator):
        return source
    if isinstance(source, bytes | bytearray):
        if len(source) < 16:
            raise ValueError("rng: seed bytes must hold at least 16 bytes (128 bits)")
        return np.random.default_rng(int.from_bytes(bytes(source), "big"))
    raise TypeError(f"rng must be a numpy Generator, bytes or None, got {type(source).__name__}")


def choose_code(qber: float, n: int | None) -> LdpcCode:
    """Chooses the shipped code of length ``n`` (default length if ``None``) for a QBER.

    Among the codes whose plan starts within ``CODE_CHOICE_SLACK`` of ``START_EFFICIENCY``, the
    one with the largest payload (the least shortening: shortening costs efficiency and
    throughput); if none can, the one whose start efficiency is lowest.

    Raises:
        ValueError: No shipped code has length ``n``.
    """
    length = DEFAULT_N if n is None else n
    names = [info.name for info in available_codes() if info.n == length]
    if not names:
        return get_code(0.5, length)  # raises ValueError naming the lengths available
    h = binary_entropy(max(qber, MIN_PLANNING_QBER))
    feasible: list[tuple[int, str]] = []
    fallback: list[tuple[float, str]] = []
    for name in names:
        code = load_code(name)
        plan = plan_frame(code, code.n, qber)
        efficiency = (code.m - plan.n_punctured) / (plan.payload_length * h)
        if efficiency <= START_EFFICIENCY + CODE_CHOICE_SLACK:
            feasible.append((plan.payload_length, name))
        fallback.append((efficiency, name))
    best = max(feasible)[1] if feasible else min(fallback)[1]
    return load_code(best)


def _aborted(bob: NDArray[np.uint8], reason: str) -> ReconcileReport:
    return ReconcileReport(
        corrected=bob.copy(),
        kept=np.zeros(bob.size, dtype=np.bool_),
        disclosed_bits=0,
        frames_attempted=0,
        frames_discarded=0,
        aborted=True,
        reason=reason,
    )


def reconcile_local(
    alice_bits: NDArray[np.uint8],
    bob_bits: NDArray[np.uint8],
    qber_estimate: float | None = None,
    *,
    rng: np.random.Generator | bytes | None = None,
    eps_cor: float = DEFAULT_EPS_COR,
    code: LdpcCode | None = None,
    n: int | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    keep_messages: bool = False,
) -> ReconcileReport:
    """Reconciles Bob's bits with Alice's, running both ends against each other in one process.

    Frames are processed in batches of ``FRAMES_PER_BATCH``, each decoding round of a batch in
    one parallel decoder call. Without ``qber_estimate`` the first frame assumes
    ``INITIAL_QBER_GUESS`` and later batches the error rate measured so far.

    Args:
        alice_bits: Alice's sifted key, ``uint8`` 0/1.
        bob_bits: Bob's sifted key, same length.
        qber_estimate: Prior QBER estimate, or ``None``. Above ``ABORT_QBER`` the result is an
            abort, not an exception.
        rng: Randomness of the verification seeds: a numpy ``Generator``, seed bytes (at least
            16), or ``None`` for fresh operating-system entropy.
        eps_cor: Collision bound of each frame's verification.
        code: A specific code for every frame (else the best shipped code per frame).
        n: Frame length of the shipped family to use (``None``: the default length).
        max_iterations: Decoder budget per round.
        keep_messages: Keep every message in the report (for audits and tests).

    Returns:
        The :class:`ReconcileReport`.

    Raises:
        TypeError: An argument has the wrong type or dtype.
        ValueError: Lengths differ, bits are not 0/1, or a parameter is out of range.
    """
    alice = check_bits("alice_bits", alice_bits)
    bob = check_bits("bob_bits", bob_bits)
    if alice.size != bob.size:
        raise ValueError(f"bob_bits must have the length of alice_bits ({alice.size})")
    if qber_estimate is not None:
        if isinstance(qber_estimate, bool) or not isinstance(
            qber_estimate, int | float | np.floating
        ):
            raise TypeError(f"qber_estimate must be a real number or None, got {qber_estimate!r}")
        if not 0.0 <= float(qber_estimate) <= 0.5:
            raise ValueError(f"qber_estimate must be in [0, 0.5], got {qber_estimate}")
        if qber_estimate > ABORT_QBER:
            return _aborted(bob, f"QBER estimate {float(qber_estimate):.4f} above {ABORT_QBER}")
    if code is not None and not isinstance(code, LdpcCode):
        raise TypeError(f"code must be an LdpcCode or None, got {type(code).__name__}")
    source = _rng(rng)

    corrected = bob.copy()
    kept = np.zeros(bob.size, dtype=np.bool_)
    outcomes: list[FrameOutcome] = []
    transcript: list[Message] = []
    qber = INITIAL_QBER_GUESS if qber_estimate is None else float(qber_estimate)
    measured_errors = measured_bits = 0
    offset = 0
    aborted_reason: str | None = None
    while offset < alice.size:
        frame_code = code if code is not None else choose_code(qber, n)
        full_payload = plan_frame(frame_code, frame_code.n, qber).payload_length
        batch_size = 1 if qber_estimate is None and not outcomes else FRAMES_PER_BATCH
        starts: list[int] = []
        while len(starts) < batch_size and offset < alice.size:
            length = min(full_payload, alice.size - offset)
            if length < MIN_TAIL_FRACTION * full_payload:
                offset = alice.size  # tail left unkept (see module docstring)
                break
            starts.append(offset)
            offset += length
        if not starts:
            break
        batch = _run_batch(
            frame_code, alice, bob, starts, full_payload, qber, len(outcomes), source, eps_cor,
            max_iterations, transcript if keep_messages else None,
        )
        for outcome, bob_frame in batch:
            outcomes.append(outcome)
            if outcome.kept and bob_frame.corrected is not None:
                span = slice(outcome.start, outcome.start + outcome.payload_length)
                corrected[span] = bob_frame.corrected
                kept[span] = True
                measured_errors += outcome.errors
                measured_bits += outcome.payload_length
        if qber_estimate is None:
            if measured_bits:
                qber = max(measured_errors / measured_bits, MIN_PLANNING_QBER)
            else:
                qber = min(qber * QBER_GUESS_GROWTH, 0.5)
            if qber > ABORT_QBER:
                aborted_reason = f"measured QBER {qber:.4f} above {ABORT_QBER}"
                break
    return ReconcileReport(
        corrected=corrected,
        kept=kept,
        disclosed_bits=sum(o.disclosed_bits for o in outcomes),
        frames_attempted=len(outcomes),
        frames_discarded=sum(1 for o in outcomes if not o.kept),
        aborted=aborted_reason is not None,
        reason=aborted_reason,
        frames=tuple(outcomes),
        messages=tuple(transcript),
    )


def _run_batch(
    code: LdpcCode,
    alice: NDArray[np.uint8],
    bob: NDArray[np.uint8],
    starts: Sequence[int],
    full_payload: int,
    qber: float,
    first_frame: int,
    source: np.random.Generator,
    eps_cor: float,
    max_iterations: int,
    transcript: list[Message] | None,
) -> list[tuple[FrameOutcome, BobFrame]]:
    """Runs a batch of frames to completion, every decoding round as one parallel call."""
    alices: list[AliceFrame] = []
    bobs: list[BobFrame] = []
    disclosed = [0] * len(starts)
    rounds = [0] * len(starts)

    def send(k: int, message: Message) -> None:
        disclosed[k] += message.disclosed_bits
        if transcript is not None:
            transcript.append(message)

    for k, start in enumerate(starts):
        stop = min(start + full_payload, alice.size)
        alice_frame = AliceFrame(code, first_frame + k, alice[start:stop], qber)
        first = alice_frame.start()
        send(k, first)
        # Bob's end is built from Bob's bits and Alice's message only.
        alices.append(alice_frame)
        bobs.append(BobFrame(code, first, bob[start:stop]))
    status: list[FrameStatus | None] = [None] * len(starts)
    errors = [0] * len(starts)
    active = list(range(len(starts)))
    while active:
        inputs = [bobs[k].decode_input() for k in active]
        messages = np.stack([m for _, _, m in inputs])
        result = decode_syndromes(
            code,
            np.stack([synd for synd, _, _ in inputs]),
            np.stack([llr for _, llr, _ in inputs]),
            bobs[active[0]].round_budget(max_iterations),
            messages=messages,
        )
        still_active = []
        for row, k in enumerate(active):
            bobs[k].messages[:] = messages[row]
            rounds[k] += 1
            report = bobs[k].absorb(result.bits[row], bool(result.converged[row]))
            send(k, report)
            if report.status == "decoded":
                tag = alices[k].tag(source, eps_cor)
                send(k, tag)
                verdict = bobs[k].on_tag(tag)
                send(k, verdict)
                status[k] = "verified" if verdict.accepted else "tag_mismatch"
                errors[k] = verdict.errors
            elif report.status == "failed":
                status[k] = "decoding_failed"
            else:
                reveal = alices[k].on_report(report)
                if reveal is None:  # cannot happen: Bob reports "failed" when none are left
                    status[k] = "decoding_failed"
                    continue
                send(k, reveal)
                bobs[k].on_reveal(reveal)
                still_active.append(k)
        active = still_active
    outcomes = []
    for k, start in enumerate(starts):
        final = status[k]
        assert final is not None
        outcomes.append(
            (
                FrameOutcome(
                    frame=first_frame + k,
                    code_name=code.name,
                    start=start,
                    payload_length=alices[k].payload.size,
                    status=final,
                    rounds=rounds[k],
                    disclosed_bits=disclosed[k],
                    errors=errors[k] if final == "verified" else 0,
                ),
                bobs[k],
            )
        )
    return outcomes
