"""Frame planning of blind, rate-adaptive reconciliation: untainted puncturing and layouts.

A frame of ``n`` bits (one LDPC codeword) holds the payload, the *modulated* positions (chosen
once per code by untainted puncturing; shortened or punctured per frame) and extra shortened
positions (known zeros). :func:`plan_frame` chooses the payload length and the initial
puncturing from an assumed QBER; ``_layout`` turns a plan into the positions both ends use.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..estimation import binary_entropy
from ..ldpc.codes import LdpcCode, required_efficiency

__all__ = [
    "BLIND_STEP_EFFICIENCY",
    "MAX_MODULATED_FRACTION",
    "MIN_FULL_EFFICIENCY",
    "MIN_PLANNING_QBER",
    "PAYLOAD_REVEAL_EFFICIENCY",
    "START_EFFICIENCY",
    "FramePlan",
    "full_efficiency",
    "modulated_positions",
    "plan_frame",
]

# Floor of the QBER used for planning: h(q) vanishes at 0, so a perfect estimate would plan a
# syndrome of zero bits. 0.1 % keeps a small syndrome that still catches the rare error.
MIN_PLANNING_QBER = 1e-3

# Efficiency f of the first syndrome of a frame. Finite-length codes decoded by min-sum rarely
# succeed below f ~ 1.03; starting lower wastes decoding rounds, higher wastes disclosed bits.
START_EFFICIENCY = 1.05

# Each blind round reveals about this much efficiency (in units of P * h(q)); smaller steps leak
# less on average (the overshoot is about half a step) but cost more decoding rounds (cheap ones:
# a round continues from the previous round's messages). 0.01 -> 0.005, with a 3-iteration stall
# rule (ends.py) and pilots at twice the step (local.py), same run, 12 frames per seed: QBER 5 %
# (n64000_r070, 4 seeds) f 1.1029 -> 1.0999, 2 % (n192000_r085, 3 seeds) 1.1036 -> 1.0998,
# 2 % (n384000_r085, 2 seeds) 1.0982 -> 1.0947; rounds per frame 3.3-3.6 -> 3.5-4.6.
BLIND_STEP_EFFICIENCY = 0.005

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


def full_efficiency(code: LdpcCode) -> float:
    """Efficiency the whole syndrome of a frame must reach: ``MIN_FULL_EFFICIENCY``, or more for
    a shipped code that needs more (:data:`qkdnode.dsp.ldpc.codes.REQUIRED_EFFICIENCY`)."""
    own = required_efficiency(code.name)
    return MIN_FULL_EFFICIENCY if own is None else max(MIN_FULL_EFFICIENCY, own)


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
    code: LdpcCode,
    available: int,
    qber: float,
    start_efficiency: float = START_EFFICIENCY,
    step_efficiency: float | None = None,
) -> FramePlan:
    """Chooses the payload length and initial puncturing of one frame.

    Args:
        code: The code.
        available: Payload bits still to reconcile (the frame takes at most a full payload).
        qber: Assumed QBER (floored at ``MIN_PLANNING_QBER``).
        start_efficiency: Efficiency aimed at by the first syndrome.
        step_efficiency: Efficiency each blind round reveals (sets ``step``; ``None``:
            ``BLIND_STEP_EFFICIENCY``).

    Returns:
        The plan.
    """
    positions, _ = modulated_positions(code)
    d = positions.size
    h = binary_entropy(max(qber, MIN_PLANNING_QBER))
    full_payload = code.n - d
    payload = min(full_payload, available, int(code.m / (full_efficiency(code) * h)))
    payload = max(payload, 1)
    punctured = min(d, max(0, code.m - math.ceil(start_efficiency * payload * h)))
    if step_efficiency is None:
        step_efficiency = BLIND_STEP_EFFICIENCY
    step = max(1, math.ceil(step_efficiency * payload * h))
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


@functools.lru_cache(maxsize=4)
def _layout(code: LdpcCode, plan: FramePlan) -> _Layout:
    """The positions of a plan (read-only arrays). Cached: both ends of a frame in one process
    (reconcile_local) and frames with equal plans share it (~4 ms on a 384 000-bit frame)."""
    layout = _build_layout(code, plan)
    for field in dataclasses.fields(layout):
        getattr(layout, field.name).setflags(write=False)
    return layout


def _build_layout(code: LdpcCode, plan: FramePlan) -> _Layout:
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

