"""The local driver: both ends of every frame run against each other in one process.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .._validate import check_bits
from ..estimation import binary_entropy
from ..ldpc.codes import (
    DEFAULT_N,
    LdpcCode,
    available_codes,
    get_code,
    load_code,
    validated_qber,
)
from ..ldpc.decoder import DEFAULT_MAX_ITERATIONS, decode_syndromes
from ..verification import DEFAULT_EPS_COR, hash_points
from . import plan as frame_plan
from .ends import AliceFrame, BobFrame
from .history import START_QUANTILE, START_WINDOW, ReconcileHistory, _check_quantile
from .messages import Message
from .plan import MIN_PLANNING_QBER, START_EFFICIENCY, plan_frame

__all__ = [
    "ABORT_QBER",
    "LENGTH_CHOICE_FRAMES",
    "MIN_TAIL_FRACTION",
    "PILOT_STEP_FACTOR",
    "START_QUANTILE",
    "START_WINDOW",
    "FrameOutcome",
    "FrameStatus",
    "ReconcileReport",
    "choose_code",
    "reconcile_local",
]

# Above ~11 % QBER one-way BB84 post-processing yields no key (Shor-Preskill); reconciling would
# only spend time and leak bits.
ABORT_QBER = 0.11


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

# With no frame length given, the longest frames are used when the input fills at least this many
# of their payloads (see choose_code).
LENGTH_CHOICE_FRAMES = 3

# With the frame length free, the bits fill full frames of the longest code and the rest goes to
# shorter frames when spreading them over equal frames would shorten each by more than this
# (see _packed_frames). QBER 1.95 %, 1 Mbit blocks (6 blocks, shared histories): 3 frames of
# n384000_r085 shortened by 8.5 % (n192000_r085: 6 frames, 11 %) -> 2 full n384000 frames and
# 5 of n64000_r085: f 1.1059-1.1180 -> 1.1028-1.1078 (0.006 lower on average), CPU 10-50 %
# lower. At 4 Mbit the 11 frames are shortened by 0.2 %: unchanged.
PACK_SHORTENING = 0.04
# ... and the longest code that fills at least this many full frames takes them (one would
# leave most of the bits to the rest's code).
PACK_MIN_FRAMES = 2

# Frames decoded together (one decoder call over all cores) before plans are revised.
FRAMES_PER_BATCH = 8

# Frames of a code with no success yet in this call go first as a pilot batch of this many (one
# per core of the 2-core target): the frames after it start near where the pilots decoded (see
# _start_efficiency) instead of all stepping up from START_EFFICIENCY together, each step a
# decoding round. Measured at QBER 2 %, 1 Mbit (n192000_r085, 6 frames): see the commit.
PILOT_FRAMES = 2

# Blind step of the frames of a code with no success yet (the pilots): they start from
# START_EFFICIENCY, far below where the long codes decode, and each step is a decoding round of the
# whole batch; twice the step of later frames (BLIND_STEP_EFFICIENCY) halves those rounds, and the
# overshoot (half a step) is paid by two frames only.
PILOT_STEP_FACTOR = 2

# Blind steps Bob asks for after a round that ended far from convergence (ends.py,
# FAR_UNSAT_FRACTION): such a round is at least two (ordinary) steps below the frame's
# threshold, so two steps at once skip a decoding round and rarely overshoot. QBER 1.96 %, 4 Mbit
# blocks of n384000_r085, steady state: rounds per frame 6.5 -> 4.6, iterations 90 -> 77, f
# +0.0008. Pilots, whose step is PILOT_STEP_FACTOR ordinary ones, ask for one.
FAR_STEPS = 2

# Iteration budget of a frame's warm rounds here (BobFrame's default, BLIND_ROUND_ITERATIONS = 30,
# stays the Qdist module's): with the progress-based give-up rule (ends.py) stopping the rounds
# that stall, a cap of 30 mostly cut rounds that were converging near the threshold, which then
# paid one more blind step. QBER 1.96 %, n384000_r085, 4 Mbit blocks, steady state (same data):
# 30 -> 60: f 1.0943 -> 1.0925, iterations per frame 74 -> 77; with START_QUANTILE 0.2 instead
# of 0.1: f 1.0919, 73.5 iterations (see START_QUANTILE). And first rounds and warm rounds share
# one decoder call per round.
WARM_ROUND_ITERATIONS = DEFAULT_MAX_ITERATIONS

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
        decoded_disclosed: Bits disclosed before the tag when decoding succeeded (syndrome and
            reveals; 0 if it never did).
    """

    frame: int
    code_name: str
    start: int
    payload_length: int
    status: FrameStatus
    rounds: int
    disclosed_bits: int
    errors: int
    decoded_disclosed: int = 0

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


def _rng(source: np.random.Generator | bytes | None) -> np.random.Generator | None:
    """The source of the verification seeds; ``None`` stands for the OS CSPRNG (``secrets``)."""
    if source is None:
        return None
    if isinstance(source, np.random.Generator):
        return source
    if isinstance(source, bytes | bytearray):
        if len(source) < 16:
            raise ValueError("rng: seed bytes must hold at least 16 bytes (128 bits)")
        # Reproducible by design (tests, audits): the caller chose the seed.
        return np.random.default_rng(int.from_bytes(bytes(source), "big"))
    raise TypeError(f"rng must be a numpy Generator, bytes or None, got {type(source).__name__}")


def _seed_source(
    source: np.random.Generator | None, n_bits: int, eps_cor: float
) -> np.random.Generator | bytes:
    """What one verification seed is drawn from: the caller's generator, or fresh bytes of the
    OS CSPRNG. A numpy generator's state can be recovered from its outputs, and the seeds are
    published: with the default, no seed says anything about another."""
    if source is not None:
        return source
    return secrets.token_bytes(8 * hash_points(n_bits, eps_cor))


def choose_code(qber: float, n: int | None, available: int | None = None) -> LdpcCode:
    """Chooses the shipped code for a QBER: its frame length, then its rate.

    Only codes whose validated QBER range (:data:`qkdnode.dsp.ldpc.codes.VALIDATED_QBER`)
    contains ``qber`` are considered. Among those of one length, the codes whose plan starts
    within ``CODE_CHOICE_SLACK`` of ``START_EFFICIENCY`` are preferred, the one with the largest
    payload (the least shortening: shortening costs efficiency and throughput); if none can, the
    one whose start efficiency is lowest.

    The length: ``n`` if given. Otherwise, with ``available`` (payload bits to reconcile) given,
    the longest length whose chosen code fills ``LENGTH_CHOICE_FRAMES`` full frames with them
    (long frames reconcile closer to capacity, but a long frame's tail is shortened away),
    else the shortest length with a validated code; without ``available``, ``DEFAULT_N`` (or,
    when no code of that length is validated at ``qber``, the other lengths in turn: the next
    longer first).

    Raises:
        ValueError: No shipped code has length ``n``, or none of the lengths considered has a
            code validated at ``qber`` (the message names the validated ranges).
    """
    lengths = sorted({info.n for info in available_codes()})
    if n is not None:
        if n not in lengths:
            return get_code(0.5, n)  # raises ValueError naming the lengths available
        order = [n]
    elif available is None:
        longer = [length for length in lengths if length > DEFAULT_N]
        shorter = [length for length in lengths if length < DEFAULT_N]
        order = [DEFAULT_N, *longer, *reversed(shorter)]
    else:
        order = sorted(lengths, reverse=True)
    chosen: LdpcCode | None = None
    for length in order:
        code = _best_of_length(qber, length)
        if code is None:
            continue
        chosen = code
        if n is not None or available is None:
            break
        if available >= LENGTH_CHOICE_FRAMES * plan_frame(code, code.n, qber).payload_length:
            break
    if chosen is None:
        ranges = {
            info.name: validated_qber(info.name)
            for info in available_codes() if n is None or info.n == n
        }
        raise ValueError(
            f"qber: no shipped code{'' if n is None else f' of length {n}'} is validated at "
            f"QBER {qber:.4f}; validated ranges: { {k: v for k, v in ranges.items() if v} }"
        )
    return chosen


def _best_of_length(qber: float, length: int) -> LdpcCode | None:
    """The code of one length chosen at ``qber`` (see :func:`choose_code`), or ``None``."""
    h = binary_entropy(max(qber, MIN_PLANNING_QBER))
    feasible: list[tuple[int, str]] = []
    fallback: list[tuple[float, str]] = []
    for info in available_codes():
        valid = validated_qber(info.name)
        if info.n != length or valid is None or not valid[0] <= qber <= valid[1]:
            continue
        code = load_code(info.name)
        plan = plan_frame(code, code.n, qber)
        efficiency = (code.m - plan.n_punctured) / (plan.payload_length * h)
        if efficiency <= START_EFFICIENCY + CODE_CHOICE_SLACK:
            feasible.append((plan.payload_length, info.name))
        fallback.append((efficiency, info.name))
    if not fallback:
        return None
    return load_code(max(feasible)[1] if feasible else min(fallback)[1])


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
    history: ReconcileHistory | None = None,
    start_quantile: float = START_QUANTILE,
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
        rng: Randomness of the verification seeds: a numpy ``Generator`` or seed bytes (at
            least 16; both reproducible, for tests), or ``None`` (default): every seed drawn
            from the OS CSPRNG (``secrets.token_bytes``).
        eps_cor: Collision bound of each frame's verification.
        code: A specific code for every frame (else the best shipped code per frame).
        n: Frame length of the shipped family to use (``None``: chosen per batch from the bits
            still to reconcile, see :func:`choose_code`).
        max_iterations: Decoder budget per round.
        keep_messages: Keep every message in the report (for audits and tests).
        history: What earlier blocks of the link learnt (:class:`ReconcileHistory`): read to
            plan the first syndromes, and every verified frame of this call is recorded in it.
            With successes of the chosen code in it, no pilot frames go first: every frame
            starts near the code's thresholds. ``None``: a fresh history for this call only.
            Without ``qber_estimate``, its :attr:`~ReconcileHistory.qber` is the prior.
        start_quantile: Speed/efficiency knob: the quantile of the frames' decoding thresholds
            the first syndrome aims at (:meth:`ReconcileHistory.start_efficiency`), in (0, 1).
            The default, ``START_QUANTILE`` = 0.2, puts efficiency first; a higher one starts
            more frames at or above their thresholds: fewer blind rounds (decoder runs), a
            higher f. Measured at QBER 1.96 % on n384000_r085, 4 Mbit blocks, mean of the 3
            blocks after a link's first (shared history; 33 frames, none lost; the same data
            for every row), decoder CPU per block on the shared 2-core machine:

            ========  ========  ======  ================  ==============
            quantile  f         rounds  iterations/frame  decoder CPU s
            ========  ========  ======  ================  ==============
            0.1       1.0925    4.0     77                7.6
            0.2       1.0919    3.3     74                7.6
            0.3       1.0928    2.9     66                6.7
            0.5       1.0950    2.2     56                6.0
            0.8       1.1049    1.2     35                3.6
            ========  ========  ======  ================  ==============

            (f of 33 frames is known to about +/-0.001.)

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
    if history is None:
        history = ReconcileHistory()
    elif not isinstance(history, ReconcileHistory):
        raise TypeError(
            f"history must be a ReconcileHistory or None, got {type(history).__name__}"
        )
    _check_quantile(start_quantile)
    source = _rng(rng)

    corrected = bob.copy()
    kept = np.zeros(bob.size, dtype=np.bool_)
    outcomes: list[FrameOutcome] = []
    transcript: list[Message] = []
    if qber_estimate is not None:
        qber = float(qber_estimate)
    else:
        qber = history.qber if history.qber is not None else INITIAL_QBER_GUESS
        qber = max(qber, MIN_PLANNING_QBER)
    measured_errors = measured_bits = 0
    offset = 0
    aborted_reason: str | None = None
    while offset < alice.size:
        # With an estimate, one code and one plan for the whole input (spread over equal
        # frames), or full frames of it and the rest on shorter frames (_packed_frames);
        # without, the first frame alone at the guess, then batches planned with the error
        # rate measured so far.
        frame_code = code if code is not None else choose_code(qber, n, alice.size - offset)
        full_payload = plan_frame(frame_code, frame_code.n, qber).payload_length
        packed = 0
        if qber_estimate is not None:
            batch_size = alice.size
            if code is None and n is None and offset == 0:
                pack = _packed_frames(alice.size, full_payload, qber)
                if pack is not None:
                    frame_code, packed = pack
                    full_payload = plan_frame(frame_code, frame_code.n, qber).payload_length
        elif not outcomes:
            batch_size = 1
        else:
            batch_size = FRAMES_PER_BATCH
        spans: list[tuple[int, int]] = []
        for _ in range(packed):
            spans.append((offset, offset + full_payload))
            offset += full_payload
        while not packed and len(spans) < batch_size and offset < alice.size:
            length = _frame_length(alice.size - offset, full_payload)
            if length == 0:
                offset = alice.size  # tail left unkept (see module docstring)
                break
            spans.append((offset, offset + length))
            offset += length
        if not spans:
            break
        batch = _run_frames(
            frame_code, alice, bob, spans, qber, history, start_quantile, len(outcomes),
            source, eps_cor, max_iterations, transcript if keep_messages else None,
        )
        for outcome, bob_corrected in batch:
            outcomes.append(outcome)
            if outcome.kept and bob_corrected is not None:
                span = slice(outcome.start, outcome.start + outcome.payload_length)
                corrected[span] = bob_corrected
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


def _packed_frames(remaining: int, full_payload: int, qber: float) -> tuple[LdpcCode, int] | None:
    """Full frames of the longest code to take first when the frame length is free, the rest
    going to the code :func:`choose_code` picks for it (spread equally); ``None``: spread all
    the bits over equal frames of the code chosen for them (``full_payload`` each at most).

    Full frames when spreading would shorten every frame by more than ``PACK_SHORTENING``:
    shortening costs efficiency on every frame (n192000_r085 at 2 %, 16 frames: f +0.005 at
    4 %, +0.012 at 8 %), the rest's shorter code only on the rest. The longest code that
    fills at least ``PACK_MIN_FRAMES`` full frames takes them.
    """
    whole, rest = divmod(remaining, full_payload)
    if whole == 0 or rest < MIN_TAIL_FRACTION * full_payload:
        return None
    if 1.0 - remaining / ((whole + 1) * full_payload) <= PACK_SHORTENING:
        return None
    for length in sorted({info.n for info in available_codes()}, reverse=True):
        code = _best_of_length(qber, length)
        if code is None:
            continue
        payload = plan_frame(code, code.n, qber).payload_length
        if remaining // payload >= PACK_MIN_FRAMES and remaining % payload:
            return code, remaining // payload
    return None


def _frame_length(remaining: int, full_payload: int) -> int:
    """Payload of the next frame when ``remaining`` bits are left: the frames the rest needs
    (full payloads, and one more for a tail of at least ``MIN_TAIL_FRACTION`` of one) share the
    bits equally, so no frame is a heavily shortened tail; 0 when only such a short tail is left.

    A frame shorter than a full payload is shortened, and the few modulated positions limit how
    low its first syndrome can start (a 60 % tail at QBER 2 % starts at f ~1.6), while frames of
    nearly full payload start where full ones do.
    """
    full, tail = divmod(remaining, full_payload)
    frames = full + (1 if tail >= MIN_TAIL_FRACTION * full_payload else 0)
    if frames == 0:
        return 0
    return min(full_payload, -(-remaining // frames))


def _run_frames(
    code: LdpcCode,
    alice: NDArray[np.uint8],
    bob: NDArray[np.uint8],
    spans: Sequence[tuple[int, int]],
    qber: float,
    history: ReconcileHistory,
    start_quantile: float,
    first_frame: int,
    source: np.random.Generator | None,
    eps_cor: float,
    max_iterations: int,
    transcript: list[Message] | None,
) -> list[tuple[FrameOutcome, NDArray[np.uint8] | None]]:
    """Runs the frames of ``spans`` to completion, every decoding round as one parallel call.

    A rolling pool: up to ``FRAMES_PER_BATCH`` frames are in flight (``PILOT_FRAMES`` while
    ``history`` holds no success of the code); as frames finish, the next ones start, each
    planned from the history as it stands (verified frames are recorded at once). So every
    round decodes a full pool while frames are left, not a batch's last straggler alone.

    The frames' decoder messages live in the rows of one ``FRAMES_PER_BATCH x E`` array;
    before each round the rows of the frames in flight are gathered at its top, in the order
    of the round's decoder calls (a row is copied only when it has to move).

    Returns:
        Per frame, in span order: its outcome and Bob's corrected payload (``None`` unless
        decoded).
    """
    store = np.empty((min(FRAMES_PER_BATCH, len(spans)), code.n_edges), dtype=np.float32)
    row: dict[int, int] = {}
    alices: dict[int, AliceFrame] = {}
    bobs: dict[int, BobFrame] = {}
    disclosed = [0] * len(spans)
    decoded_disclosed = [0] * len(spans)
    rounds = [0] * len(spans)
    status: list[FrameStatus | None] = [None] * len(spans)
    errors = [0] * len(spans)
    corrected: list[NDArray[np.uint8] | None] = [None] * len(spans)

    def send(k: int, message: Message) -> None:
        disclosed[k] += message.disclosed_bits
        if transcript is not None:
            transcript.append(message)

    pending = 0
    active: list[int] = []
    while active or pending < len(spans):
        learnt = bool(history.successes(code.name))
        width = FRAMES_PER_BATCH if learnt else PILOT_FRAMES
        if pending < len(spans) and len(active) < width:
            # Frames of a code with no success yet (pilots) take double steps.
            start = history.start_efficiency(code, qber, start_quantile)
            step = None if learnt else PILOT_STEP_FACTOR * frame_plan.BLIND_STEP_EFFICIENCY
            while pending < len(spans) and len(active) < width:
                k = pending
                pending += 1
                a0, a1 = spans[k]
                alices[k] = AliceFrame(code, first_frame + k, alice[a0:a1], qber, start, step)
                first = alices[k].start()
                send(k, first)
                # Bob's end is built from Bob's bits and Alice's message only; it takes a row
                # of the store as its messages buffer below.
                # A pilot's step is already FAR_STEPS ordinary ones (what a far round is known
                # to be below its threshold): it asks for one.
                far = FAR_STEPS if learnt else 1
                bobs[k] = BobFrame(code, first, bob[a0:a1], far_steps=far,
                                   warm_iterations=WARM_ROUND_ITERATIONS)
                active.append(k)
        # One parallel call per (budget, stall rule): a frame's last chance runs without it.
        groups: dict[tuple[int, int | None], list[int]] = {}
        for k in active:
            key = (bobs[k].round_budget(max_iterations), bobs[k].round_stall())
            groups.setdefault(key, []).append(k)
        order = [k for members in groups.values() for k in members]
        moved = [i for i, k in enumerate(order) if k in row and row[k] != i]
        if moved:
            # The right side is gathered first, so overlapping moves are safe; rows of finished
            # frames are free to be overwritten.
            store[moved] = store[[row[order[i]] for i in moved]]
        for i, k in enumerate(order):
            if k not in row:
                store[i] = 0.0  # a new frame starts cold
            row[k] = i
            bobs[k].messages = store[i]
        top = 0
        decoded: dict[int, tuple[NDArray[np.uint8], bool]] = {}
        for (budget, stall), members in groups.items():
            inputs = [bobs[k].decode_input() for k in members]
            result = decode_syndromes(
                code,
                np.stack([synd for synd, _, _ in inputs]),
                np.stack([llr for _, llr, _ in inputs]),
                budget,
                messages=store[top : top + len(members)],
                stall_iterations=stall,
                stall_drop=bobs[members[0]].round_stall_drop(),
                kernel_order=True,
            )
            top += len(members)
            for i, k in enumerate(members):
                decoded[k] = (result.bits[i], bool(result.converged[i]))
        still_active = []
        for k in active:
            rounds[k] += 1
            report = bobs[k].absorb(*decoded[k])
            send(k, report)
            if report.status == "need_more":
                reveal = alices[k].on_report(report)
                if reveal is not None:
                    send(k, reveal)
                    bobs[k].on_reveal(reveal)
                    still_active.append(k)
                    continue
                status[k] = "decoding_failed"  # cannot happen: Bob says "failed" when none left
            elif report.status == "failed":
                status[k] = "decoding_failed"
            else:
                decoded_disclosed[k] = disclosed[k]
                tag = alices[k].tag(
                    _seed_source(source, alices[k].payload.size, eps_cor), eps_cor
                )
                send(k, tag)
                verdict = bobs[k].on_tag(tag)
                send(k, verdict)
                status[k] = "verified" if verdict.accepted else "tag_mismatch"
                if verdict.accepted:
                    errors[k] = verdict.errors
                    corrected[k] = bobs[k].corrected
                    history.record(code.name, alices[k].payload.size, decoded_disclosed[k],
                                   alices[k].plan.step, verdict.errors)
            # Finished: its ends and its row are released.
            del alices[k], bobs[k], row[k]
        active = still_active
    outcomes = []
    for k, (start, stop) in enumerate(spans):
        final = status[k]
        assert final is not None
        outcomes.append(
            (
                FrameOutcome(
                    frame=first_frame + k,
                    code_name=code.name,
                    start=start,
                    payload_length=stop - start,
                    status=final,
                    rounds=rounds[k],
                    disclosed_bits=disclosed[k],
                    errors=errors[k],
                    decoded_disclosed=decoded_disclosed[k],
                ),
                corrected[k],
            )
        )
    return outcomes
