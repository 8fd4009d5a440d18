"""The whole distillation chain of one block, both ends in one process.

Sifted X-basis bits of Alice and Bob plus the decoy-state counts of the block go in; identical
secret keys (or an abort with its reason) come out:

1. reconciliation (:func:`qkdnode.dsp.reconcile.reconcile_local`): one-way LDPC syndrome
   decoding with blind rounds, each frame verified with a universal hash;
2. parameter estimation (:func:`qkdnode.dsp.estimation.finite_key_length`): the Lim et al.
   (2014) finite-key length, charged with the leakage reconciliation actually caused;
3. privacy amplification of the kept bits with a fresh random Toeplitz seed
   (:func:`qkdnode.dsp.privacy_pair.toeplitz_hash_pair`: both ends in one FFT product where
   the rounding bound allows; else, at four-step lengths up to 2^24 points, one seed transform
   and both ends' products on two threads; else two hashes; each output exactly
   :func:`qkdnode.dsp.privacy.toeplitz_hash` of that end's bits).

Frames that fail decoding or verification are dropped. Their bits are charged as if Alice had
announced them: the leakage is everything the messages disclosed plus one bit per dropped key
bit. That is what one would pay for keeping the whole block (announce the failed frames' bits,
Bob copies them), and hashing only the kept bits loses nothing against it, because a Toeplitz
family restricted to a subset of its input positions is still universal. So the key length is
computed for the whole block's counts, and never exceeds the number of kept bits.

The two-party versions of these steps (the Qdist dialogue) live in the module runtime; this
function runs the same dsp functions, so tests and benchmarks measure what the node runs.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .estimation import DEFAULT_QBER_ABORT, DecoyCounts, KeyLengthResult, finite_key_length
from .privacy_pair import toeplitz_hash_pair
from .reconcile import (
    ABORT_QBER,
    START_QUANTILE,
    ReconcileHistory,
    ReconcileReport,
    choose_code,
    plan_frame,
    reconcile_local,
)

__all__ = ["DistillResult", "distill_local"]

# Frames actually used can outnumber the plan made from the prior QBER (a worse measured QBER
# means shorter payloads); the per-frame correctness budget assumes up to this many times the
# planned count, and the result reports the eps_cor actually achieved.
FRAME_COUNT_MARGIN = 2


@dataclass(frozen=True, slots=True, eq=False)
class DistillResult:
    """The outcome of one block.

    Attributes:
        key_alice: Alice's final key, uint8 0/1 (empty when there is no key).
        key_bob: Bob's final key; equal to ``key_alice`` whenever ``length > 0``.
        length: Final key length in bits.
        reason: Why there is no key (an abort starts with "abort"), else ``None``.
        sifted_bits: Sifted X bits that went in.
        kept_bits: Bits in reconciled and verified frames.
        qber: Error rate Bob's kept bits had before correction (None if nothing was kept).
        leakage_bits: Leakage charged in the key length: disclosed bits plus dropped key bits.
        eps_cor: Correctness actually achieved (frames attempted x per-frame collision bound).
        estimate: The finite-key bounds and length (None if reconciliation aborted).
        reconciliation: The reconciliation report.
    """

    key_alice: NDArray[np.uint8]
    key_bob: NDArray[np.uint8]
    length: int
    reason: str | None
    sifted_bits: int
    kept_bits: int
    qber: float | None
    leakage_bits: int
    eps_cor: float
    estimate: KeyLengthResult | None
    reconciliation: ReconcileReport

    @property
    def secret_fraction(self) -> float:
        """Final key bits per sifted bit."""
        return self.length / self.sifted_bits if self.sifted_bits else 0.0


def _frame_budget(n_bits: int, qber: float) -> int:
    """Frames the block will take at ``qber``, with the safety margin."""
    plan = plan_frame(choose_code(qber, None), n_bits, qber)
    return FRAME_COUNT_MARGIN * max(1, math.ceil(n_bits / plan.payload_length))


def distill_local(
    alice_bits: NDArray[np.uint8],
    bob_bits: NDArray[np.uint8],
    counts: DecoyCounts,
    mu: Sequence[float],
    p: Sequence[float],
    *,
    eps_cor: float = 1e-15,
    eps_sec: float | None = None,
    kappa: float | None = None,
    qber_estimate: float | None = None,
    qber_abort: float = DEFAULT_QBER_ABORT,
    rng: np.random.Generator | None = None,
    history: ReconcileHistory | None = None,
    start_quantile: float = START_QUANTILE,
) -> DistillResult:
    """Distils one block: reconciliation, finite-key length, privacy amplification.

    Args:
        alice_bits: Alice's sifted X-basis bits, uint8 0/1.
        bob_bits: Bob's sifted X-basis bits, same length.
        counts: The block's decoy-state counts (X detections, Z detections and Z errors per
            intensity), as sifting reports them.
        mu: Intensities (mu1, mu2, mu3).
        p: Probabilities of sending them.
        eps_cor: Correctness parameter for the whole block.
        eps_sec: Secrecy parameter; or else
        kappa: secrecy per key bit (eps_sec = kappa * length). Neither: eps_sec = 1e-10.
        qber_estimate: Prior QBER for reconciliation (default: the Z-basis error rate).
        qber_abort: Abort above this QBER.
        rng: Randomness for verification and privacy-amplification seeds: ``None`` (default)
            draws every seed from the OS CSPRNG (``secrets.token_bytes``); a numpy generator
            (reproducible, for tests) is used as given. The seeds are published, and a numpy
            generator's state can be recovered from its outputs: production passes ``None``.
        history: The link's :class:`~qkdnode.dsp.reconcile.ReconcileHistory`, shared by its
            blocks: reconciliation starts its frames where earlier blocks' frames decoded and
            records this block's (see :func:`~qkdnode.dsp.reconcile.reconcile_local`).
        start_quantile: Reconciliation's speed/efficiency knob (see
            :func:`~qkdnode.dsp.reconcile.reconcile_local`).

    Returns:
        The :class:`DistillResult`; an abort is a result with ``length == 0`` and a reason.

    Raises:
        TypeError, ValueError: Bad arguments (named in the message).
    """
    if eps_sec is None and kappa is None:
        eps_sec = 1e-10
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator or None, got {type(rng).__name__}")
    source = rng
    if qber_estimate is None:
        qber_estimate = counts.qber_z
    n_bits = int(np.asarray(alice_bits).size)
    abort_at = min(qber_abort, ABORT_QBER)
    empty = np.zeros(0, dtype=np.uint8)
    if qber_estimate is not None and qber_estimate > abort_at:
        report = reconcile_local(alice_bits, bob_bits, qber_estimate, rng=source)
        return DistillResult(empty, empty, 0,
                             f"abort: QBER estimate {qber_estimate:.4f} above {abort_at}",
                             n_bits, 0, None, 0, 0.0, None, report)

    prior = qber_estimate if qber_estimate is not None else 0.05
    eps_frame = eps_cor / _frame_budget(n_bits, max(prior, 1e-3))
    report = reconcile_local(alice_bits, bob_bits, qber_estimate, rng=source, eps_cor=eps_frame,
                             history=history, start_quantile=start_quantile)
    achieved_eps_cor = min(1.0, eps_frame * max(1, report.frames_attempted))
    kept = report.kept
    kept_bits = int(kept.sum())
    if report.aborted:
        return DistillResult(empty, empty, 0, f"abort: {report.reason}", n_bits, kept_bits,
                             None, report.disclosed_bits, achieved_eps_cor, None, report)

    alice_kept = np.ascontiguousarray(np.asarray(alice_bits)[kept])
    bob_kept = np.ascontiguousarray(report.corrected[kept])
    raw_bob = np.asarray(bob_bits)[kept]
    qber = float(np.count_nonzero(raw_bob != alice_kept) / kept_bits) if kept_bits else None
    leakage = report.disclosed_bits + (n_bits - kept_bits)
    estimate = finite_key_length(
        counts, mu, p, eps_cor=achieved_eps_cor, eps_sec=eps_sec, kappa=kappa,
        ec_leak=float(leakage), qber=qber, qber_abort=qber_abort,
    )
    length = min(estimate.ell, kept_bits)
    if length <= 0:
        reason = estimate.reason or "no frame was reconciled"
        return DistillResult(empty, empty, 0, reason, n_bits, kept_bits, qber, leakage,
                             achieved_eps_cor, estimate, report)
    seed = _toeplitz_seed(source, kept_bits + length - 1)
    # Both ends' hashes (privacy_pair): once when their bits are equal (the usual case after
    # verification), else in one FFT product where the rounding bound allows, else sharing
    # the seed's transform; each output is exactly toeplitz_hash of that end's bits.
    key_alice, key_bob = toeplitz_hash_pair(alice_kept, bob_kept, seed, length)
    return DistillResult(key_alice, key_bob, length, None, n_bits, kept_bits, qber, leakage,
                         achieved_eps_cor, estimate, report)


def _toeplitz_seed(source: np.random.Generator | None, bits: int) -> NDArray[np.uint8]:
    """``bits`` seed bits (``uint8`` 0/1): from ``source``, or from the OS CSPRNG if ``None``."""
    if source is not None:
        return source.integers(0, 2, size=bits, dtype=np.uint8)
    raw = np.frombuffer(secrets.token_bytes(-(-bits // 8)), dtype=np.uint8)
    return np.unpackbits(raw)[:bits]
