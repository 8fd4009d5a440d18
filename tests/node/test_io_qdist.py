"""Qdist over TCP (node/io/qdist.py): a stream the end finds broken ends the connection (so the
module reconnects); the receiver's reconnect waits with back-off until the peer listens."""

from __future__ import annotations

import asyncio
import time

import pytest

from qkdnode.node.io.qdist import QdistConnection, connect_with_backoff, parse_hostport
from qkdnode.node.protocol.qdist import QdistBob, QdistParams

PARAMS = QdistParams((0.485, 0.13, 2e-4), (0.0577, 0.5285, 0.4138), kappa=1e-15,
                     code_length=16_000)
SECRET = bytes(range(256)) * 8


def test_foreign_bytes_end_the_connection_and_reset_stream_takes_a_new_one() -> None:
    async def scenario() -> tuple[bool, float]:
        async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"GET / HTTP/1.1\r\nHost: qkd\r\n\r\n" * 4)
            await writer.drain()
            await reader.read()  # stays open: the Qdist end must give up on its own

        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        end = QdistBob(PARAMS, SECRET)
        reader, writer = await asyncio.open_connection(host, port)
        conn = QdistConnection(end, reader, writer)
        start = time.monotonic()
        await asyncio.wait_for(conn.run(), 30)
        took = time.monotonic() - start
        broken = end.broken
        await conn.close()
        server.close()
        end.reset_stream()
        assert not end.broken
        return broken, took

    broken, took = asyncio.run(scenario())
    assert broken
    assert took < 30


def test_reconnect_waits_with_back_off_until_the_peer_listens() -> None:
    async def scenario() -> float:
        probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        start = time.monotonic()
        connecting = asyncio.create_task(
            connect_with_backoff(f"127.0.0.1:{port}", first_s=0.05, max_s=0.2))
        await asyncio.sleep(0.5)
        assert not connecting.done()  # refused so far, still trying
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        _, writer = await asyncio.wait_for(connecting, 10)
        writer.close()
        server.close()
        return time.monotonic() - start

    assert 0.5 <= asyncio.run(scenario()) < 10


def test_bad_addresses_are_refused() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_hostport("localhost")
    with pytest.raises(ValueError, match="HOST:PORT"):
        asyncio.run(connect_with_backoff("127.0.0.1:99999"))
