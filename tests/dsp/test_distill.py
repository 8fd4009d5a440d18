"""The whole chain on one block: identical keys, honest leakage, aborts as results."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.dsp.distill import distill_local
from qkdnode.dsp.estimation import DecoyCounts, LinkModel, optimize_decoy

N_BITS = 200_000


@pytest.fixture(scope="module")
def block():
    """Sifted bits and counts of a 25 km Fig. 1 link at its optimal decoy settings."""
    link = LinkModel(25.0)
    best = optimize_decoy(link, N_BITS)
    expected = link.expected_counts_per_pulse(best.params).scaled(
        link.pulses_for(best.params, N_BITS))
    counts = DecoyCounts(*(tuple(float(round(x)) for x in t)
                           for t in (expected.n_x, expected.n_z, expected.m_z)))
    rng = np.random.default_rng(7)
    alice = rng.integers(0, 2, N_BITS, dtype=np.uint8)
    errors = rng.random(N_BITS) < best.key.qber_x
    bob = alice ^ errors.astype(np.uint8)
    mu = (best.mu1, best.mu2, link.mu3)
    p = (best.p_mu1, best.p_mu2, 1.0 - best.p_mu1 - best.p_mu2)
    return alice, bob, counts, mu, p, best


def test_block_gives_identical_keys_close_to_the_model(block):
    alice, bob, counts, mu, p, best = block
    result = distill_local(alice, bob, counts, mu, p, kappa=1e-15,
                           rng=np.random.default_rng(1))
    assert result.reason is None
    assert result.length > 0
    np.testing.assert_array_equal(result.key_alice, result.key_bob)
    assert result.key_alice.size == result.length
    # The model charges f = 1.16; real reconciliation does better, so the key is at least
    # the model's, less what dropped frames cost.
    assert result.length >= 0.9 * best.key.ell
    assert result.length <= result.kept_bits
    report = result.reconciliation
    assert result.leakage_bits == report.disclosed_bits + (N_BITS - result.kept_bits)
    assert result.eps_cor <= 1e-15
    assert result.qber == pytest.approx(best.key.qber_x, rel=0.1)


def test_key_is_not_the_raw_bits(block):
    alice, bob, counts, mu, p, _ = block
    result = distill_local(alice, bob, counts, mu, p, kappa=1e-15,
                           rng=np.random.default_rng(2))
    assert result.length > 0
    prefix = alice[: result.length]
    # A hash output equal to a prefix of the input would be a broken extractor.
    assert not np.array_equal(result.key_alice, prefix)
    assert 0.45 < result.key_alice.mean() < 0.55


def test_high_qber_is_an_abort_result(block):
    alice, _, counts, mu, p, _ = block
    rng = np.random.default_rng(3)
    noisy = alice ^ (rng.random(alice.size) < 0.2).astype(np.uint8)
    bad_counts = DecoyCounts(counts.n_x, counts.n_z,
                             tuple(0.2 * n for n in counts.n_z))  # type: ignore[arg-type]
    result = distill_local(alice, noisy, bad_counts, mu, p, kappa=1e-15, rng=rng)
    assert result.length == 0
    assert result.reason is not None
    assert result.reason.startswith("abort")
    assert result.key_alice.size == 0


def test_bad_rng_type(block):
    alice, bob, counts, mu, p, _ = block
    with pytest.raises(TypeError, match="rng"):
        distill_local(alice, bob, counts, mu, p, rng=42)  # type: ignore[arg-type]


def test_default_seeds_come_from_the_os_csprng(block, monkeypatch):
    # rng=None: the verification and Toeplitz seeds are bytes of secrets.token_bytes; no numpy
    # generator (its state would follow from the published seeds) is created.
    import qkdnode.dsp.distill as distill

    alice, bob, counts, mu, p, _ = block
    drawn: list[int] = []
    real = distill.secrets.token_bytes

    def token_bytes(size):
        drawn.append(size)
        return real(size)

    def no_numpy(*args, **kwargs):
        raise AssertionError("a numpy generator was created for public seeds")

    monkeypatch.setattr(distill.secrets, "token_bytes", token_bytes)
    monkeypatch.setattr(np.random, "default_rng", no_numpy)
    result = distill_local(alice, bob, counts, mu, p, kappa=1e-15)
    monkeypatch.undo()
    assert result.length > 0
    np.testing.assert_array_equal(result.key_alice, result.key_bob)
    # One draw per verification tag, then the Toeplitz seed (kept + length - 1 bits).
    assert drawn[-1] == -(-(result.kept_bits + result.length - 1) // 8)
    assert len(drawn) == 1 + sum(1 for f in result.reconciliation.frames if f.decoded_disclosed)
