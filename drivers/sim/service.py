"""The bench service: one process hosts a bench, others reach its instruments over a socket.

When Alice's and Bob's node processes share one simulated link, a :class:`BenchService`
hosts the :class:`~qkdnode.drivers.sim.bench.Bench` on a local socket (``HOST:PORT`` or
``unix:PATH``), and each process registers a :class:`BenchClient` under the bench's name, so
``sim://BENCH/INSTRUMENT`` transports open through it exactly as through a local bench.

Wire format: frames of a 4-byte big-endian length and a payload; a payload is one operation
byte and its body. Requests: ``O`` open an instrument (JSON ``{"instrument", "driver"}``;
answers its transport kind), ``F`` feed bytes to the connection's instrument (answers its
replies), ``C`` device clear, ``D`` declare an instrument (JSON), ``R`` run the link (JSON
``{"n_slots"}`` or ``{"duration_ps"}``; answers a tag batch). Answers: ``K`` and the result,
or ``E`` and the reason. One connection per instrument; the bench's lock orders them.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
from typing import Any

import numpy as np

from .bench import Bench, register_bench
from .link import TagBatch

__all__ = ["MAX_FRAME_BYTES", "BenchClient", "BenchService", "connect_bench", "parse_address"]

# A frame holds at most a waveform upload (2 MiB per channel at the AWG's 1 MSa memory) or a
# tag batch (10 bytes a tag); 256 MiB bounds what a peer can make us allocate.
MAX_FRAME_BYTES = 1 << 28
_LENGTH = struct.Struct(">I")
_BATCH_HEAD = struct.Struct(">qqQ")
# How long a client waits for the service to answer one request.
DEFAULT_CLIENT_TIMEOUT_S = 30.0


def parse_address(address: str) -> tuple[int, Any]:
    """``HOST:PORT`` -> (AF_INET, (host, port)); ``unix:PATH`` -> (AF_UNIX, path)."""
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if not path:
            raise ValueError(f"bench service address {address!r} names no socket path")
        return socket.AF_UNIX, path
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bench service address must be HOST:PORT or unix:PATH, got {address!r}")
    return socket.AF_INET, (host.strip("[]"), int(port))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    parts = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise ConnectionError("the bench service connection closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _recv_frame(sock: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_recv_exactly(sock, _LENGTH.size))
    if length == 0 or length > MAX_FRAME_BYTES:
        raise ConnectionError(f"bench service frame of {length} bytes (at most {MAX_FRAME_BYTES})")
    return _recv_exactly(sock, length)


def _send_frame(sock: socket.socket, payload: bytes) -> None:
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"bench service frame of {len(payload)} bytes (at most "
                         f"{MAX_FRAME_BYTES})")
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def _encode_batch(batch: TagBatch) -> bytes:
    head = _BATCH_HEAD.pack(batch.lost_events, batch.complete_until_ps, len(batch))
    return (head + batch.timestamps_ps.astype(">i8").tobytes()
            + batch.channels.astype(">i2").tobytes())


def _decode_batch(data: bytes) -> TagBatch:
    lost, complete, n = _BATCH_HEAD.unpack_from(data)
    start = _BATCH_HEAD.size
    times = np.frombuffer(data, ">i8", n, start).astype(np.int64)
    channels = np.frombuffer(data, ">i2", n, start + 8 * n).astype(np.int16)
    return TagBatch(times, channels, lost, complete)


class _Handler(socketserver.BaseRequestHandler):
    server: Any  # a BenchServer with its ``bench`` (BenchService)

    def handle(self) -> None:
        bench = self.server.bench
        device = None
        sock: socket.socket = self.request
        while True:
            try:
                payload = _recv_frame(sock)
            except (ConnectionError, OSError):
                return
            op, body = payload[:1], payload[1:]
            try:
                if op == b"F" and device is not None:
                    reply = device.feed(body)
                elif op == b"O":
                    request = json.loads(body)
                    device = bench.device(str(request["instrument"]), request.get("driver"))
                    reply = device.kind.encode("ascii")
                elif op == b"C" and device is not None:
                    device.clear()
                    reply = b""
                elif op == b"D":
                    request = json.loads(body)
                    bench.declare(str(request["instrument"]), str(request["driver"]))
                    reply = b""
                elif op == b"R":
                    request = json.loads(body)
                    reply = _encode_batch(bench.run(request.get("n_slots"),
                                                    duration_ps=request.get("duration_ps")))
                else:
                    raise ValueError(f"unknown or out-of-order operation {op!r}")
            except (ValueError, TypeError, KeyError, RuntimeError) as exc:
                answer = b"E" + str(exc).encode("utf-8", "replace")
            else:
                answer = b"K" + reply
            try:
                _send_frame(sock, answer)
            except OSError:
                return


class BenchService:
    """Hosts a bench on a local socket until :meth:`close`.

    Args:
        bench: the bench to host.
        address: ``HOST:PORT`` (port 0 picks a free one, see :attr:`address`) or
            ``unix:PATH``.
    """

    def __init__(self, bench: Bench, address: str) -> None:
        family, where = parse_address(address)
        base = (socketserver.ThreadingTCPServer if family == socket.AF_INET
                else socketserver.ThreadingUnixStreamServer)
        server_cls = type("BenchServer", (base,),
                          {"daemon_threads": True, "allow_reuse_address": True})
        self._server = server_cls(where, _Handler)
        self._server.bench = bench
        self.bench = bench
        bound = self._server.server_address
        self.address = (f"{bound[0]}:{bound[1]}" if family == socket.AF_INET
                        else f"unix:{bound}")
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"bench-service-{bench.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops serving (connections already open end with their clients)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> BenchService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Connection:
    """One client connection: request, answer, under a lock."""

    def __init__(self, address: str, timeout_s: float) -> None:
        family, where = parse_address(address)
        self.address = address
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        try:
            self._sock.connect(where)
        except OSError:
            self._sock.close()
            raise
        self._lock = threading.Lock()

    def request(self, op: bytes, body: bytes = b"") -> bytes:
        with self._lock:
            _send_frame(self._sock, op + body)
            answer = _recv_frame(self._sock)
        if answer[:1] == b"E":
            raise ValueError(answer[1:].decode("utf-8", "replace"))
        if answer[:1] != b"K":
            raise ConnectionError(f"bench service at {self.address} answered {answer[:1]!r}")
        return answer[1:]

    def close(self) -> None:
        self._sock.close()


class RemoteDevice:
    """A simulated instrument hosted by a bench service (a DeviceHandle)."""

    def __init__(self, connection: _Connection, kind: str) -> None:
        self._connection = connection
        self._kind = kind

    @property
    def kind(self) -> str:
        return self._kind

    def feed(self, data: bytes) -> bytes:
        return self._connection.request(b"F", data)

    def clear(self) -> None:
        self._connection.request(b"C")

    def close(self) -> None:
        """Closes this instrument's connection (the transport closed)."""
        self._connection.close()

    def __del__(self) -> None:
        self._connection.close()


class BenchClient:
    """A bench hosted by a :class:`BenchService`, as a :class:`~.bench.BenchHandle`.

    Args:
        name: the bench's name (sim://NAME/...).
        address: the service's address.
        timeout_s: how long one request may take.
    """

    def __init__(self, name: str, address: str,
                 timeout_s: float = DEFAULT_CLIENT_TIMEOUT_S) -> None:
        parse_address(address)
        self.name = name
        self.address = address
        self.timeout_s = timeout_s
        self._control: _Connection | None = None
        self._lock = threading.Lock()

    def _request(self, op: bytes, body: bytes = b"") -> bytes:
        with self._lock:
            if self._control is None:
                self._control = _Connection(self.address, self.timeout_s)
            return self._control.request(op, body)

    def device(self, instrument: str, driver: str | None = None) -> RemoteDevice:
        """Opens a connection to the instrument ``instrument`` of the hosted bench."""
        connection = _Connection(self.address, self.timeout_s)
        try:
            kind = connection.request(b"O", json.dumps(
                {"instrument": instrument, "driver": driver}).encode()).decode("ascii")
        except BaseException:
            connection.close()
            raise
        return RemoteDevice(connection, kind)

    def declare(self, instrument: str, driver: str) -> None:
        """Says which driver's instrument ``instrument`` is."""
        self._request(b"D", json.dumps({"instrument": instrument, "driver": driver}).encode())

    def run(self, n_slots: int | None = None, *, duration_ps: int | None = None) -> TagBatch:
        """The hosted link's next tags (what Bob's time tagger reads)."""
        return _decode_batch(self._request(b"R", json.dumps(
            {"n_slots": n_slots, "duration_ps": duration_ps}).encode()))

    def close(self) -> None:
        """Closes the control connection."""
        with self._lock:
            if self._control is not None:
                self._control.close()
                self._control = None


def connect_bench(name: str, address: str, *, replace: bool = False) -> BenchClient:
    """Registers a client of the bench hosted at ``address`` under ``name``."""
    client = BenchClient(name, address)
    register_bench(client, replace=replace)
    return client
