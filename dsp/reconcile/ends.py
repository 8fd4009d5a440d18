"""The two ends of one frame: Alice's side sees only her payload, Bob's only his and the messages.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .._validate import check_bits
from ..ldpc.codes import LdpcCode, syndrome
from ..ldpc.decoder import DEFAULT_MAX_ITERATIONS, LLR_LIMIT, decode_syndrome
from ..verification import draw_seed, tags_match, verification_tag
from .messages import BitsRevealed, DecodingReported, FrameVerified, SyndromeComputed, TagComputed
from .plan import START_EFFICIENCY, _layout, plan_frame

__all__ = [
    "BLIND_ROUND_ITERATIONS", "BLIND_STALL_DROP", "BLIND_STALL_ITERATIONS", "FAR_UNSAT_FRACTION",
    "AliceFrame", "BobFrame",
]

# Iteration budget of each blind round after the first. Rounds continue from the messages the
# previous round left (warm start), so a short budget suffices once the revealed bits tip the
# balance, and a frame that still fails costs little.
BLIND_ROUND_ITERATIONS = 30

# Stall rule of a round that is not the frame's last chance: the decode stops, unconverged, after
# this many iterations without a new low of unsatisfied checks, and the frame asks for more bits
# (the next round continues from the same messages). Measured on n192000_r085 at QBER 2 %
# (reconcile_local, 2-4 Mbit): iterations per frame halved (169 -> 84), f +0.002, FER 0 either
# way. The last round (nothing left to reveal) runs its whole budget: there the rule would cost
# frames (single-shot FER at f 1.10: 0.31 -> 0.44). 2 rather than 3 (reconcile_local, QBER 2 %,
# 1 Mbit x 8 seeds, n192000_r085, with the pilot batch of local.py): iterations per frame 62.6 ->
# 55.6, f 1.1640 -> 1.1642, FER 0 either way. With blind steps of 0.005 (plan.py), 3 rather than 2
# (QBER 5 %, n64000_r070, 3 seeds of 12 frames): f 1.0990 -> 1.0969, CPU +15-20 %.
BLIND_STALL_ITERATIONS = 4

# Required progress of a blind round that is not the last chance (``stall_drop`` of
# decode_syndrome): the round also stops when ``BLIND_STALL_ITERATIONS`` iterations have not cut
# the unsatisfied checks by this fraction of their count at the last mark (failing rounds used
# to creep down by a check or two per iteration and run ~16 iterations). Against the plain rule
# of 3 iterations, same run (bench_reconcile, 12 frames per row, load ~2): 4 and 0.02 gave f
# +0.0009 on both 2 % rows (n192000_r085 1.1006 -> 1.1015, n384000_r085 1.0958 -> 1.0967),
# -0.0004 to -0.0022 or equal on the others, FER 0, reconcile CPU -10 % / -22 % on the 2 % rows;
# the chain (1 Mbit, QBER 2 %): same leakage and key, CPU ~3.05 -> ~2.85 s. Stricter settings
# save more CPU but cost f: 3 and 0.05: CPU -33 % / -38 %, f +0.0043 / +0.0034; 3 and 0.1: f
# +0.008 / +0.010; 3 and 0.01: f +0.0022 / +0.0013.
BLIND_STALL_DROP = 0.02

# A failed round that leaves more than this fraction of the checks unsatisfied ended far from
# convergence: no waterfall started, and such a round is at least two blind steps below the
# frame's threshold. Measured per round (single frames, warm rounds of 0.005 steps, QBER 1.96 %):
# rounds one step below the threshold left 0.2-9 % of the checks unsatisfied on n384000_r085
# (16 frames) and 0-9 % on n192000_r085 (16 frames, one exception at 30 %); rounds two or more
# steps below, 6-31 % and 3-33 %, most of them 26-33 % (the level of a decoder that has not
# started). So Bob may ask for FAR_STEPS steps at once after such a round: the frame skips a
# decoding round, and overshoots only in the rare exception.
FAR_UNSAT_FRACTION = 0.2


class AliceFrame:
    """Alice's end of one frame: sees only her payload bits and Bob's messages."""

    def __init__(
        self,
        code: LdpcCode,
        frame: int,
        payload_bits: NDArray[np.uint8],
        qber: float,
        start_efficiency: float = START_EFFICIENCY,
        step_efficiency: float | None = None,
    ):
        """Plans the frame.

        Args:
            code: The code (public).
            frame: Frame number (public).
            payload_bits: Alice's payload, ``uint8`` 0/1, at most one full payload long.
            qber: Assumed QBER.
            start_efficiency: Efficiency the first syndrome aims at (public; see
                :func:`plan_frame`).
            step_efficiency: Efficiency each blind round reveals (public; ``None``: the
                default of :func:`plan_frame`).
        """
        self.code = code
        self.frame = frame
        self.plan = plan_frame(code, payload_bits.size, qber, start_efficiency, step_efficiency)
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
        if isinstance(report.steps, bool) or not isinstance(report.steps, int) or report.steps < 1:
            raise ValueError(f"report: steps must be an integer >= 1, got {report.steps!r}")
        stop = min(
            self._revealed + report.steps * self.plan.step, self._layout.reveal_order.size
        )
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

    def __init__(
        self,
        code: LdpcCode,
        message: SyndromeComputed,
        bob_payload: NDArray[np.uint8],
        messages: NDArray[np.float32] | None = None,
        far_steps: int = 1,
        warm_iterations: int = BLIND_ROUND_ITERATIONS,
    ):
        """Prepares decoding from Alice's first message.

        Args:
            code: The code (public; must be the one the message names).
            message: Alice's syndrome message.
            bob_payload: Bob's payload bits for this frame, ``uint8`` 0/1.
            messages: Buffer of the decoder's messages between rounds, ``float32[E]``,
                C-contiguous, zeroed here (e.g. a row of a batch's array; ``None``: its own).
                They are in the decoding kernel's own edge order: pass them to the decoder
                with ``kernel_order=True`` (as :meth:`decode` does).
            far_steps: Blind steps to ask for after a round that ended far from convergence
                (``FAR_UNSAT_FRACTION``); 1 (default): always one, as a peer whose messages
                carry no step count (the module's Qdist wire) needs.
            warm_iterations: Iteration budget of every round after the first (capped by the
                ``max_iterations`` a round is given; see ``BLIND_ROUND_ITERATIONS``).
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
        magnitude = np.float32(math.log((1.0 - q) / q))
        self._llr = np.zeros(code.n, dtype=np.float32)
        # +magnitude for a 0, -magnitude for a 1, exactly (2 * magnitude is exact), in float32
        # arithmetic: 0.35 instead of 2.7 ms on a 351 000-bit payload (np.where in float64).
        self._llr[self._layout.payload] = magnitude - (2 * magnitude) * bob_payload.astype(
            np.float32)
        self._llr[self._layout.shortened] = LLR_LIMIT
        self._revealed = 0
        self.rounds = 0
        if messages is None:
            messages = np.zeros(code.n_edges, dtype=np.float32)
        elif (
            not isinstance(messages, np.ndarray) or messages.dtype != np.float32
            or messages.shape != (code.n_edges,) or not messages.flags.c_contiguous
        ):
            raise ValueError(f"messages: need a C-contiguous float32[{code.n_edges}] buffer")
        else:
            messages[:] = 0.0
        self.messages = messages
        self.corrected: NDArray[np.uint8] | None = None
        if isinstance(far_steps, bool) or not isinstance(far_steps, int) or far_steps < 1:
            raise ValueError(f"far_steps must be an integer >= 1, got {far_steps!r}")
        self.far_steps = far_steps
        if isinstance(warm_iterations, bool) or not isinstance(warm_iterations, int) or (
            warm_iterations < 1
        ):
            raise ValueError(f"warm_iterations must be an integer >= 1, got {warm_iterations!r}")
        self.warm_iterations = warm_iterations

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
        if self.far_steps > 1:
            unsatisfied = int(np.count_nonzero(syndrome(self.code, bits) != self._syndrome))
            if unsatisfied > FAR_UNSAT_FRACTION * self.code.m:
                return DecodingReported(self.frame, "need_more", self.far_steps)
        return DecodingReported(self.frame, "need_more")

    def round_budget(self, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> int:
        """Iteration budget of the next round: full for the first, short for warm rounds."""
        return max_iterations if self.rounds == 0 else min(max_iterations, self.warm_iterations)

    def round_stall(self) -> int | None:
        """Stall rule of the next round: ``BLIND_STALL_ITERATIONS`` unless it is the last chance."""
        if self._revealed >= self._layout.reveal_order.size:
            return None
        return BLIND_STALL_ITERATIONS

    def round_stall_drop(self) -> float:
        """Required drop of the stall rule of the next round (see ``BLIND_STALL_DROP``)."""
        return BLIND_STALL_DROP

    def decode(self, max_iterations: int = DEFAULT_MAX_ITERATIONS) -> DecodingReported:
        """Decodes this round on its own and reports (the path of a single frame)."""
        synd, llr, messages = self.decode_input()
        result = decode_syndrome(
            self.code, synd, llr, self.round_budget(max_iterations), messages=messages,
            stall_iterations=self.round_stall(), stall_drop=self.round_stall_drop(),
            kernel_order=True,
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

