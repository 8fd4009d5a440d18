"""The transmitter's Qdist port (node/module/launch.py QdistListener), over real sockets: a
connection is taken (replacing the live one, if any) only after an authentic first frame;
strangers (silent, foreign bytes, forged or replayed frames) neither cut the live connection nor
spend pads; connections beyond the bound are closed at once; the partner's connection and
reconnection, with its first frame, are taken."""

from __future__ import annotations

import asyncio
import logging

import pytest

from qkdnode.node.io.qdist import QdistConnection
from qkdnode.node.module.launch import QdistListener
from qkdnode.node.protocol.qdist import QdistAlice, QdistParams
from qkdnode.node.protocol.qdist.messages import BlockAbandoned
from qkdnode.node.protocol.qdist.wire import PadStream, encode_frame

PARAMS = QdistParams((0.485, 0.13, 2e-4), (0.0577, 0.5285, 0.4138), kappa=1e-15,
                     code_length=16_000)
SECRET = bytes(range(256)) * 8


def bob_pads(secret: bytes = SECRET) -> PadStream:
    """A copy of Bob's outgoing pad stream (Bob -> Alice: second hash key, second half)."""
    half = 16 + (len(secret) - 16) // 2
    return PadStream(secret[8:16], secret[half:])


def bob_frame(seq: int, pads: PadStream | None = None) -> bytes:
    """An authentic Bob -> Alice frame with sequence number ``seq``."""
    body = BlockAbandoned("test").body()
    return encode_frame(BlockAbandoned.KIND, 0, seq, body, pads or bob_pads())


async def closed_by_peer(reader: asyncio.StreamReader, within_s: float = 5.0) -> bool:
    """Whether the other side closes the connection within ``within_s``."""
    try:
        return await asyncio.wait_for(reader.read(), within_s) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_strangers_do_not_replace_the_live_connection_and_the_partner_does(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "qkdnode.node.module.launch")

    async def scenario() -> None:
        alice = QdistAlice(PARAMS, SECRET)
        listener = QdistListener("ab", alice, auth_wait_s=1.0, max_candidates=2)
        server = await asyncio.start_server(listener.on_client, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        opened: list[asyncio.StreamWriter] = []

        async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            return reader, writer

        try:
            # With no live connection, a stranger's forged frame (at the next expected number,
            # which the end would charge a pad for) is refused and nothing is taken.
            pads = alice.pads_left
            forged = bytearray(bob_frame(0))
            forged[-1] ^= 1
            reader, writer = await dial()
            writer.write(bytes(forged) * 3)
            await writer.drain()
            assert await closed_by_peer(reader)
            assert listener.accepted.empty()
            assert alice.pads_left == pads
            # The partner's first connection, with its first frame, is taken.
            reader, writer = await dial()
            writer.write(bob_frame(0))
            await writer.drain()
            r, w, first = await asyncio.wait_for(listener.accepted.get(), 5)
            assert first == bob_frame(0)
            live = QdistConnection(alice, r, w, initial=first)
            listener.current = live
            running = asyncio.create_task(live.run())
            await asyncio.wait_for(live.events.get(), 5)  # the end took frame 0
            pads = alice.pads_left

            # Foreign bytes, a forged frame at the next expected number (1), an old frame (0):
            # each refused, the live connection untouched, no pad spent.
            forged = bytearray(bob_frame(1))
            forged[-1] ^= 1
            for payload in (b"GET / HTTP/1.1\r\nHost: qkd\r\n\r\n", bytes(forged), bob_frame(0)):
                reader, writer = await dial()
                writer.write(payload)
                await writer.drain()
                assert await closed_by_peer(reader)
            assert not running.done()
            assert listener.accepted.empty()
            assert alice.pads_left == pads

            # Silent strangers: two wait (until auth_wait_s), the third is closed at once.
            silent = [await dial() for _ in range(2)]
            await asyncio.sleep(0.1)
            reader, _ = await dial()
            assert await closed_by_peer(reader, 0.5)
            for reader, _ in silent:
                assert await closed_by_peer(reader, 5.0)
            assert not running.done()
            assert listener.refused == 7, listener.refused

            # The partner reconnects and sends its next frame: it replaces the live one, and
            # the frame's bytes go with it.
            frame = bob_frame(3)
            reader, writer = await dial()
            writer.write(frame)
            await writer.drain()
            r, w, first = await asyncio.wait_for(listener.accepted.get(), 5)
            assert first == frame
            await asyncio.wait_for(running, 5)  # the old connection was closed
            assert alice.pads_left == pads
            # The new connection runs; its end takes the frame (seq 3: 0..3 now received) ...
            live = QdistConnection(alice, r, w, initial=first)
            listener.current = live
            running = asyncio.create_task(live.run())
            await asyncio.wait_for(live.events.get(), 5)
            # ... and a replay of it on another connection is refused.
            reader, writer = await dial()
            writer.write(frame)
            await writer.drain()
            assert await closed_by_peer(reader)
            assert listener.accepted.empty()
            assert not running.done()
            await live.close()
            await asyncio.wait_for(running, 5)
        finally:
            for writer in opened:
                writer.close()
            listener.close_waiting()
            server.close()

    asyncio.run(scenario())
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("not authentic" in m for m in refused), refused
    assert any("no authentic frame within 1 s" in m for m in refused), refused
    assert any("already wait to authenticate" in m for m in refused), refused
    assert any("127.0.0.1" in m for m in refused), refused
