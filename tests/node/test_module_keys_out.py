"""Key output of a QKD module: same IDs at both ends, nothing lost over a key-manager restart,
bounded memory."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from qkdnode.node.io.kq1 import Kq1Client, Kq1Server
from qkdnode.node.km import KeyManager, KeyState, SqliteKeyStore
from qkdnode.node.module.keys_out import KeyOutbox, cut_block, qkd_key_id


def test_both_ends_cut_and_name_a_block_the_same_way():
    bits = np.random.default_rng(1).integers(0, 2, 1000, dtype=np.uint8)
    a, dropped = cut_block("alice-bob", 7, bits, 32, qber=0.02, created_at=1.0)
    b, _ = cut_block("alice-bob", 7, bits.copy(), 32, qber=0.02, created_at=2.0)
    assert [k.key_id for k in a] == [k.key_id for k in b]
    assert [k.material for k in a] == [k.material for k in b]
    assert len(a) == 3
    assert dropped == 1000 - 3 * 256
    assert a[1].key_id == qkd_key_id("alice-bob", 7, 1)
    assert a[0].material == np.packbits(bits[:256]).tobytes()
    assert qkd_key_id("alice-bob", 8, 1) != a[1].key_id
    with pytest.raises(ValueError, match="0/1"):
        cut_block("l", 0, np.array([0, 2], dtype=np.uint8), 32)


class FlakyClient:
    """Refuses pushes while down; records what it accepted."""

    def __init__(self):
        self.down = False
        self.got = []

    async def push(self, keys, timeout_s=30.0):
        if self.down:
            raise ConnectionError("key manager down")
        self.got.extend(keys)
        return len(keys)


def test_pieces_stay_until_acknowledged_and_put_waits_when_full():
    async def run():
        client = FlakyClient()
        box = KeyOutbox(client, "L", chunk_bytes=4, max_pending=8)
        task = asyncio.create_task(box.run())
        client.down = True
        bits = np.ones(32 * 6, dtype=np.uint8)          # 6 pieces
        await box.put(0, bits)
        waiting = asyncio.create_task(box.put(1, bits))  # 6 more would exceed 8
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert box.pending == 6
        client.down = False
        await asyncio.wait_for(waiting, 5)
        await asyncio.wait_for(box.drain(), 5)
        task.cancel()
        assert [k.index for k in client.got] == list(range(6)) * 2
        assert box.stats.pieces_acknowledged == 12

    asyncio.run(run())


def test_a_key_manager_restart_loses_nothing(tmp_path):
    async def run():
        store = SqliteKeyStore(tmp_path / "k.sqlite")
        manager = KeyManager(store, "A", "kme-a", {})
        server = Kq1Server(manager, tmp_path / "kq1.sock")
        await server.start()
        client = Kq1Client(tmp_path / "kq1.sock", "mod", "L", "B")
        box = KeyOutbox(client, "L")
        pusher = asyncio.create_task(box.run())
        rng = np.random.default_rng(2)
        await box.put(0, rng.integers(0, 2, 256 * 10, dtype=np.uint8))
        await asyncio.wait_for(box.drain(), 10)
        await server.stop()
        await box.put(1, rng.integers(0, 2, 256 * 10, dtype=np.uint8))
        await asyncio.sleep(0.3)
        assert box.pending == 10
        server = Kq1Server(manager, tmp_path / "kq1.sock")
        await server.start()
        await asyncio.wait_for(box.drain(), 20)
        pusher.cancel()
        await client.close()
        await server.stop()
        ids = store.link_key_ids("B", KeyState.PRE_ACTIVATION)
        store.close()
        return ids

    ids = asyncio.run(run())
    assert len(ids) == 20
    assert set(ids) == {qkd_key_id("L", b, i) for b in (0, 1) for i in range(10)}
