"""Qdist Alice plans her first syndromes with reconcile_local's start rule (ReconcileHistory)."""

from __future__ import annotations

import numpy as np
import pytest

from qkdnode.dsp.estimation import LinkModel
from qkdnode.dsp.reconcile import AliceFrame, ReconcileHistory, SyndromeComputed, reconcile_local
from qkdnode.dsp.sifting import AliceChoices, measure, pattern_of
from qkdnode.node.protocol.qdist import (
    NEED_DATA,
    BlockAborted,
    BlockCompleted,
    DetectionsReceived,
    QdistAlice,
    QdistBob,
    QdistParams,
)
from qkdnode.node.protocol.qdist import alice as alice_module

LINK = LinkModel(5.0)
MU = (0.485, 0.130, LINK.mu3)
P = (0.0577, 0.5285, 1.0 - 0.0577 - 0.5285)
Q_X = 0.577
PARAMS = QdistParams(MU, P, kappa=1e-15, code_length=16_000)
SECRET = bytes(range(256)) * 8


def block(seed: int, pulses: int = 11_400_000) -> tuple[AliceChoices, object]:
    """A simulated block on the link model (as tests/node/test_protocol_qdist.py's)."""
    rng = np.random.default_rng(seed)
    basis = (rng.random(pulses, dtype=np.float32) >= Q_X).astype(np.uint8)
    bit = rng.integers(0, 2, pulses, dtype=np.uint8)
    intensity = rng.choice(3, size=pulses, p=P).astype(np.uint8)
    mu = np.asarray(MU)
    click = LINK.detection_probability(mu) / (1.0 + LINK.afterpulse_probability)
    error = np.minimum(LINK.error_probability(mu) / click, 0.5)
    slots = np.flatnonzero(rng.random(pulses, dtype=np.float32) < click[intensity])
    bob_basis = (rng.random(slots.size) >= Q_X).astype(np.uint8)
    flip = rng.random(slots.size) < error[intensity[slots]]
    bob_bit = np.where(bob_basis == basis[slots], bit[slots] ^ flip,
                       rng.integers(0, 2, slots.size)).astype(np.uint8)
    detections = measure(slots.astype(np.int64), pattern_of(bob_basis, bob_bit), seed=seed)
    return AliceChoices(0, basis, bit, intensity), detections


def run_block(alice: QdistAlice, bob: QdistBob, block_id: int, seed: int) -> BlockCompleted:
    choices, detections = block(seed)
    bob.start_block(block_id, detections, 0.0)  # type: ignore[arg-type]
    done: dict[str, object] = {}
    for _ in range(10_000):
        for name, end, peer in (("alice", alice, bob), ("bob", bob, alice)):
            while (event := end.next_event()) is not NEED_DATA:
                if isinstance(event, DetectionsReceived):
                    alice.start_block(event.block_id, choices, 0.0)
                elif isinstance(event, BlockCompleted | BlockAborted):
                    done[name] = event
            out = end.data_to_send()
            if out:
                peer.receive_data(out)
        if len(done) == 2:
            break
    result = done["alice"]
    assert isinstance(result, BlockCompleted), getattr(result, "reason", result)
    return result


def test_qdist_alice_starts_where_reconcile_local_would(monkeypatch: pytest.MonkeyPatch) -> None:
    alice = QdistAlice(PARAMS, SECRET, rng=np.random.default_rng(1))
    bob = QdistBob(PARAMS, SECRET)
    assert isinstance(alice.history, ReconcileHistory)
    run_block(alice, bob, 0, 1)
    learnt = alice.history.copy()
    (code_name,) = learnt.codes
    # Every verified frame of the block was recorded (the history's error rate is the block's).
    assert len(learnt.successes(code_name)) >= 1
    assert learnt.qber is not None
    assert 0.0 < learnt.qber < 0.05

    starts: list[tuple[str, float, float]] = []

    class Recording(AliceFrame):
        def __init__(self, code, frame, payload_bits, qber, start_efficiency=1.05,  # type: ignore[no-untyped-def]
                     step_efficiency=None):
            starts.append((code.name, qber, start_efficiency))
            super().__init__(code, frame, payload_bits, qber, start_efficiency, step_efficiency)

    monkeypatch.setattr(alice_module, "AliceFrame", Recording)
    run_block(alice, bob, 1, 2)
    assert starts
    name, qber, start = starts[0]
    assert name == code_name
    assert {s for _, _, s in starts} == {start}
    # reconcile_local, given the same history (a copy) and the same plan QBER and code, starts
    # its first frame at the same efficiency.
    from qkdnode.dsp.ldpc.codes import load_code

    code = load_code(code_name)
    assert start == learnt.start_efficiency(code, qber)
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, 40_000, dtype=np.uint8)
    report = reconcile_local(bits, bits ^ (rng.random(bits.size) < qber).astype(np.uint8), qber,
                             code=code, history=learnt.copy(), keep_messages=True,
                             rng=np.random.default_rng(4))
    first = next(m for m in report.messages if isinstance(m, SyndromeComputed))
    planned = AliceFrame(code, 0, bits[: first.plan.payload_length], qber, start).plan
    assert first.plan.n_punctured == planned.n_punctured


def test_a_higher_start_quantile_starts_higher(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from qkdnode.dsp.ldpc.codes import load_code

    eager = dataclasses.replace(PARAMS, start_quantile=0.8)
    assert eager.digest() == PARAMS.digest()  # Alice's own policy: Bob need not agree
    alice = QdistAlice(eager, SECRET, rng=np.random.default_rng(1))
    bob = QdistBob(PARAMS, SECRET)
    run_block(alice, bob, 0, 1)
    learnt = alice.history.copy()
    starts: list[tuple[float, float]] = []

    class Recording(AliceFrame):
        def __init__(self, code, frame, payload_bits, qber, start_efficiency=1.05,  # type: ignore[no-untyped-def]
                     step_efficiency=None):
            starts.append((qber, start_efficiency))
            super().__init__(code, frame, payload_bits, qber, start_efficiency, step_efficiency)

    monkeypatch.setattr(alice_module, "AliceFrame", Recording)
    run_block(alice, bob, 1, 2)
    (code_name,) = learnt.codes
    code = load_code(code_name)
    qber, start = starts[0]
    assert start == learnt.start_efficiency(code, qber, 0.8)
    assert start > learnt.start_efficiency(code, qber, 0.2)


def test_start_quantile_out_of_range_is_refused() -> None:
    import dataclasses

    with pytest.raises(ValueError, match="start_quantile must lie in"):
        dataclasses.replace(PARAMS, start_quantile=1.0)


def test_an_authentic_verdict_with_impossible_errors_aborts_the_block(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A broken (or hostile but authenticated) Bob: the block aborts at both ends; Alice's
    # module does not die on the history's ValueError.
    import dataclasses

    from qkdnode.dsp.reconcile import ends

    honest = ends.BobFrame.on_tag

    def broken(self, t):  # type: ignore[no-untyped-def]
        return dataclasses.replace(honest(self, t), errors=10**9)

    monkeypatch.setattr(ends.BobFrame, "on_tag", broken)
    alice = QdistAlice(PARAMS, SECRET, rng=np.random.default_rng(1))
    bob = QdistBob(PARAMS, SECRET)
    with pytest.raises(AssertionError, match="counts 1000000000 errors"):
        run_block(alice, bob, 0, 1)  # its assertion: Alice's outcome is an abort
