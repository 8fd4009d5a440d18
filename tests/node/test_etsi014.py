"""The ETSI GS QKD 014 server over real HTTPS with mutual TLS, in front of real key managers.

Two nodes, A and B, each a :class:`KeyManager` on its own SQLite store, linked in memory (what
Kx carries); each serves ETSI 014 on 127.0.0.1 with a throw-away CA. Master SAEs live on A,
slaves on B; node C shares no key with A (its pool is empty). The servers run on an event loop in
a background thread; the tests are plain HTTPS clients (http.client), as an SAE would be.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkdnode.node.errors import PeerUnavailable, RemoteProtocolError
from qkdnode.node.km import KeyManager, LinkKey, SqliteKeyStore, SupplyLimits
from qkdnode.node.km.etsi014 import Etsi014Server
from qkdnode.node.km.etsi014_client import Etsi014Client, Etsi014Error
from qkdnode.node.km.etsi014_requests import (
    MSG_EXTENSION_UNSUPPORTED,
    MSG_KEYS_NOT_FOUND,
    MSG_SIZE_MULTIPLE_OF_8,
    ApiError,
    Limits,
    parse_json_body,
    parse_key_ids_body,
    parse_key_request_body,
)
from qkdnode.node.km.etsi014_schema import OPENAPI_PATH, openapi_document
from qkdnode.node.km.etsi014_tls import make_client_ssl_context, make_server_ssl_context

SAES = {"alice-app": "A", "alice-app2": "A", "bob-app": "B", "bob-app2": "B", "bob-app3": "B",
        "carol-app": "C"}
CLIENTS = ["alice-app", "alice-app2", "bob-app", "bob-app2", "bob-app3", "stranger"]
LINK_KEY_BYTES = 32
API = "/api/v1/keys"
NOW = 1_800_000_000.0


# --- certificates ---------------------------------------------------------------------------

def _name(cn: str | None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "qkdnode tests")]
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _issue(subject: x509.Name, issuer: x509.Name, issuer_key: Any, key: Any, *, ca: bool,
           server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address(
                "127.0.0.1"))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Pki:
    ca: Path
    server: tuple[Path, Path]
    clients: dict[str, tuple[Path, Path]]
    _contexts: dict[str | None, ssl.SSLContext] = field(default_factory=dict)

    def server_context(self) -> ssl.SSLContext:
        return make_server_ssl_context(self.ca, *self.server)

    def client_context(self, who: str | None) -> ssl.SSLContext:
        """An SAE's context (None: no client certificate)."""
        if who not in self._contexts:
            self._contexts[who] = (make_client_ssl_context(self.ca) if who is None else
                                   make_client_ssl_context(self.ca, *self.clients[who]))
        return self._contexts[who]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(_name("qkdnode test CA"), _name("qkdnode test CA"), ca_key, ca_key, ca=True)
    ca_path, _ = _write(d / "ca", ca_cert, ca_key)
    skey = ec.generate_private_key(ec.SECP256R1())
    server = _write(d / "kme", _issue(_name("kme"), ca_cert.subject, ca_key, skey, ca=False,
                                      server=True), skey)
    clients = {}
    for sae in [*CLIENTS, None]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(_name(sae), ca_cert.subject, ca_key, key, ca=False)
        clients[sae or "no-cn"] = _write(d / (sae or "no-cn"), cert, key)
    # A certificate with a known SAE's name from a CA the KMEs do not trust.
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    clients["rogue-alice"] = _write(d / "rogue", _issue(_name("alice-app"), _name("rogue CA"),
                                                        rogue_key, key, ca=False), key)
    return Pki(ca_path, server, clients)


# --- two nodes and their servers ------------------------------------------------------------

class DirectPeer:
    """The Kx link as a direct call to the peer manager; ``hang`` makes it never answer."""

    def __init__(self, me: str, peer: KeyManager) -> None:
        self.me, self.peer, self.hang = me, peer, False

    async def notify_supply(self, plans: Any) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        await self.peer.on_supply_notification(self.me, plans)


class Net:
    """Nodes A, B (and C's SAE), their servers, on an event loop in a background thread."""

    def __init__(self, pki: Pki, tmp: Path, link_keys: int,
                 link_key_bytes: int = LINK_KEY_BYTES) -> None:
        self.pki = pki
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.clock = {"A": NOW, "B": NOW}
        self.stores = [SqliteKeyStore(tmp / "a.sqlite"), SqliteKeyStore(tmp / "b.sqlite")]
        limits = SupplyLimits(key_size_bits=256, max_key_per_request=16,
                              max_key_size_bits=2048, max_sae_id_count=4)
        self.a = KeyManager(self.stores[0], "A", "kme-a", SAES, peer_kme_ids={"B": "kme-b"},
                            limits=limits, clock=lambda: self.clock["A"], peer_timeout_s=0.3)
        self.b = KeyManager(self.stores[1], "B", "kme-b", SAES, limits=limits,
                            clock=lambda: self.clock["B"])
        self.a.peers["B"] = DirectPeer("A", self.b)
        self.a.peers["C"] = DirectPeer("A", self.b)  # a link to C, with no key in its pool
        self.b.peers["A"] = DirectPeer("B", self.a)
        keys = [LinkKey(uuid.uuid4(), os.urandom(link_key_bytes), link="A-B", index=i)
                for i in range(link_keys)]
        self.run(self.a.add_link_keys("B", keys, active=True))
        self.run(self.b.add_link_keys("A", keys, active=True))
        self.servers = {"A": Etsi014Server(self.a, pki.server_context()),
                        "B": Etsi014Server(self.b, pki.server_context())}
        for server in self.servers.values():
            self.run(server.start())

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        for server in self.servers.values():
            self.run(server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        for s in self.stores:
            s.close()

    def request(self, node: str, who: str | None, method: str, path: str,
                body: bytes | str | dict[str, Any] | list[Any] | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One HTTPS request as SAE ``who`` to node ``node``'s KME: (status, decoded JSON)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.servers[node].port,
                                           context=self.pki.client_context(who), timeout=10)
        try:
            if isinstance(body, dict | list):
                body = json.dumps(body)
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            raw = resp.read()
            assert resp.getheader("Content-Type", "").startswith("application/json")
            return resp.status, json.loads(raw)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def net(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(pki, tmp_path_factory.mktemp("net"), link_keys=64)
    yield n
    n.close()


def _keys(body: dict[str, Any]) -> dict[str, bytes]:
    return {k["key_ID"]: base64.b64decode(k["key"], validate=True) for k in body["keys"]}


def _error(status: int, body: Any, expected_status: int, message: str | None = None) -> None:
    assert status == expected_status, body
    assert set(body) == {"message", "details"}
    assert isinstance(body["message"], str)
    assert isinstance(body["details"], list)
    assert all(isinstance(d, dict) for d in body["details"])
    if message is not None:
        assert message in body["message"], body


# --- the happy paths ------------------------------------------------------------------------

def test_status_reports_the_pair_and_the_pool(net: Net) -> None:
    status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/status")
    assert status == 200
    assert body == {
        "source_KME_ID": "kme-a", "target_KME_ID": "kme-b", "master_SAE_ID": "alice-app",
        "slave_SAE_ID": "bob-app", "key_size": 256,
        "stored_key_count": body["stored_key_count"], "max_key_count": 100_000,
        "max_key_per_request": 16, "max_key_size": 2048, "min_key_size": 8,
        "max_SAE_ID_count": 4}
    assert 0 < body["stored_key_count"] <= 64 * LINK_KEY_BYTES * 8 // 256


def test_enc_keys_get_then_dec_keys_gives_the_same_keys_exactly_once(net: Net) -> None:
    status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys?number=2")
    assert status == 200
    master = _keys(body)
    assert len(master) == 2
    assert all(len(m) == 32 for m in master.values())  # the default key_size, 256 bits
    first, second = master
    status, body = net.request("B", "bob-app", "GET", f"{API}/alice-app/dec_keys?key_ID={first}")
    assert status == 200
    assert _keys(body) == {first: master[first]}
    status, body = net.request("B", "bob-app", "POST", f"{API}/alice-app/dec_keys",
                               {"key_IDs": [{"key_ID": second}]})
    assert (status, _keys(body)) == (200, {second: master[second]})
    # Delivered to the slave: gone, by either form.
    for method, path, req in [
            ("GET", f"{API}/alice-app/dec_keys?key_ID={first}", None),
            ("POST", f"{API}/alice-app/dec_keys", {"key_IDs": [{"key_ID": second}]})]:
        status, body = net.request("B", "bob-app", method, path, req)
        _error(status, body, 400, MSG_KEYS_NOT_FOUND)


@pytest.mark.parametrize("size", [8, 24, 256, 264, 1024])
def test_key_sizes_other_than_the_stored_chunk_size(net: Net, size: int) -> None:
    status, body = net.request("A", "alice-app", "POST", f"{API}/bob-app/enc_keys",
                               {"number": 3, "size": size})
    assert status == 200, body
    master = _keys(body)
    assert [len(m) for m in master.values()] == [size // 8] * 3
    status, body = net.request("B", "bob-app", "POST", f"{API}/alice-app/dec_keys",
                               {"key_IDs": [{"key_ID": k} for k in master]})
    assert (status, _keys(body)) == (200, master)


def test_additional_slaves_each_collect_once_and_others_are_refused(net: Net) -> None:
    status, body = net.request("A", "alice-app", "POST", f"{API}/bob-app/enc_keys",
                               {"additional_slave_SAE_IDs": ["bob-app2"], "size": 128})
    assert status == 200, body
    ((key_id, material),) = _keys(body).items()
    path = f"{API}/alice-app/dec_keys?key_ID={key_id}"
    _error(*net.request("B", "bob-app3", "GET", path), 401)       # not a slave of this key
    _error(*net.request("B", "bob-app", "GET", f"{API}/alice-app2/dec_keys?key_ID={key_id}"),
           401)                                                    # not its master
    _error(*net.request("A", "alice-app2", "GET", path), 401)     # not attached to KME B
    for slave in ("bob-app2", "bob-app"):
        status, body = net.request("B", slave, "GET", path)
        assert (status, _keys(body)) == (200, {key_id: material})
        _error(*net.request("B", slave, "GET", path), 400, MSG_KEYS_NOT_FOUND)


def test_unknown_fields_are_ignored_and_optional_extensions_too(net: Net) -> None:
    status, body = net.request("A", "alice-app", "POST", f"{API}/bob-app/enc_keys", {
        "number": 1, "size": 256, "colour": "blue", "extension_optional": [{"abc_route": "x"}],
        "extension_mandatory": []})
    assert status == 200, body
    (key_id,) = _keys(body)
    status, body = net.request("B", "bob-app", "POST", f"{API}/alice-app/dec_keys?junk=1", {
        "key_IDs": [{"key_ID": key_id, "key_ID_extension": {"x": 1}, "extra": True}],
        "key_IDs_extension": {"y": 2}, "more": [1, 2]})
    assert status == 200
    assert list(_keys(body)) == [key_id]


def test_the_server_serves_its_openapi_document(net: Net) -> None:
    status, body = net.request("A", "bob-app", "GET", OPENAPI_PATH)
    assert status == 200
    assert body == openapi_document("kme-a")
    routes = {(r.method.lower(), r.resource.canonical) for r in
              net.servers["A"].make_app().router.routes() if r.resource is not None}
    documented = {(m, p) for p, ops in body["paths"].items() for m in ops}
    assert routes == documented
    for ops in body["paths"].values():
        for op in ops.values():
            assert set(op["responses"]) == {"200", "400", "401", "503"}


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body", "status", "message"), [
    ("GET", "/bob-app/enc_keys?size=100", None, 400, MSG_SIZE_MULTIPLE_OF_8),
    ("POST", "/bob-app/enc_keys", {"size": 12}, 400, MSG_SIZE_MULTIPLE_OF_8),
    ("GET", "/bob-app/enc_keys?number=17", None, 400, "max_key_per_request = 16"),
    ("POST", "/bob-app/enc_keys", {"number": 99}, 400, "max_key_per_request = 16"),
    ("POST", "/bob-app/enc_keys", {"size": 4096}, 400, "max_key_size = 2048"),
    ("POST", "/bob-app/enc_keys", {"number": 0}, 400, "number"),
    ("GET", "/bob-app/enc_keys?number=-1", None, 400, "number"),
    ("GET", "/bob-app/enc_keys?number=two", None, 400, "number"),
    ("GET", "/bob-app/enc_keys?number=1&number=2", None, 400, "more than once"),
    ("POST", "/bob-app/enc_keys", {"number": "3"}, 400, "number: must be an integer"),
    ("POST", "/bob-app/enc_keys", {"number": True}, 400, "number: must be an integer"),
    ("POST", "/bob-app/enc_keys", {"size": 25.5}, 400, "size: must be an integer"),
    ("POST", "/bob-app/enc_keys", {"additional_slave_SAE_IDs": "bob-app2"}, 400,
     "additional_slave_SAE_IDs"),
    ("POST", "/bob-app/enc_keys", {"additional_slave_SAE_IDs": [1]}, 400,
     "additional_slave_SAE_IDs"),
    ("POST", "/bob-app/enc_keys", {"additional_slave_SAE_IDs": ["b1", "b2", "b3", "b4", "b5"]},
     400, "max_SAE_ID_count = 4"),
    ("POST", "/bob-app/enc_keys", {"extension_mandatory": [{"abc_route_type": "direct"}]}, 400,
     MSG_EXTENSION_UNSUPPORTED),
    ("POST", "/bob-app/enc_keys", {"extension_mandatory": {"a": 1}}, 400,
     "extension_mandatory"),
    ("POST", "/bob-app/enc_keys", b'{"number": 1', 400, "not valid JSON"),
    ("POST", "/bob-app/enc_keys", b'{"number": NaN}', 400, "not valid JSON"),
    ("POST", "/bob-app/enc_keys", b"\xff\xfe{}", 400, "UTF-8"),
    ("POST", "/bob-app/enc_keys", b"[" * 100_00 + b"]" * 100_00, 400, None),
    ("POST", "/bob-app/enc_keys", [1, 2], 400, "JSON object"),
    ("POST", "/bob-app/enc_keys", b"7" * 5000, 400, "not valid JSON"),
    ("GET", "/mallory/enc_keys", None, 400, "unknown SAE"),
    ("GET", "/mallory/status", None, 400, "unknown SAE"),
    ("POST", "/bob-app/enc_keys", {"additional_slave_SAE_IDs": ["carol-app"]}, 400,
     "same KME"),
    ("GET", "/alice-app/enc_keys", None, 400, "shared between two KMEs"),
    ("GET", "/carol-app/enc_keys", None, 503, "key pool depleted"),
    ("GET", "/bob-app/dec_keys?key_ID=not-a-uuid", None, 400, "key_ID"),
    ("GET", "/bob-app/dec_keys", None, 400, "key_IDs"),
    ("POST", "/bob-app/dec_keys", {}, 400, "key_IDs: is required"),
    ("POST", "/bob-app/dec_keys", {"key_IDs": []}, 400, "key_IDs"),
    ("POST", "/bob-app/dec_keys", {"key_IDs": ["0" * 32]}, 400, "array of objects"),
    ("POST", "/bob-app/dec_keys", {"key_IDs": [{"key_ID": 5}]}, 400, "key_ID"),
    ("PUT", "/bob-app/enc_keys", b"{}", 400, "method PUT is not allowed"),
    ("DELETE", "/bob-app/status", None, 400, "not allowed"),
    ("GET", "/bob-app/nothing", None, 400, "no such endpoint"),
    ("GET", "/../../etc/passwd", None, 400, "no such endpoint"),
])
def test_bad_requests_get_the_specified_status_and_an_error_body(
        net: Net, method: str, path: str, body: Any, status: int, message: str | None) -> None:
    got_status, got = net.request("A", "alice-app", method, API + path, body)
    _error(got_status, got, status, message)


def test_unknown_and_expired_key_ids(net: Net) -> None:
    path = f"{API}/alice-app/dec_keys?key_ID={uuid.uuid4()}"
    _error(*net.request("B", "bob-app", "GET", path), 400, MSG_KEYS_NOT_FOUND)
    status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys")
    assert status == 200
    (key_id,) = _keys(body)
    net.clock["B"] += 2 * 3600  # past the slave's reservation lifetime
    try:
        status, body = net.request("B", "bob-app", "GET",
                                   f"{API}/alice-app/dec_keys?key_ID={key_id}")
        _error(status, body, 400, MSG_KEYS_NOT_FOUND)
        assert "expired" in body["details"][0]["reason"]
    finally:
        net.clock["B"] -= 2 * 3600


def test_oversized_body_is_a_400_naming_the_limit(net: Net) -> None:
    limit = net.servers["A"].client_max_size
    body = json.dumps({"number": 1, "pad": "x" * limit})
    _error(*net.request("A", "alice-app", "POST", f"{API}/bob-app/enc_keys", body), 400,
           f"larger than {limit} bytes")


def test_a_silent_peer_kme_is_a_temporary_fault(net: Net) -> None:
    peer = net.a.peers["B"]
    assert isinstance(peer, DirectPeer)
    peer.hang = True
    try:
        _error(*net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys"), 503,
               "temporary fault")
    finally:
        peer.hang = False
    assert net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys")[0] == 200


def test_an_unexpected_fault_is_a_503_not_a_500(net: Net, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(net.a, "status", broken)
    with caplog.at_level(logging.ERROR, logger="qkdnode.node.km.etsi014"):
        status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/status")
    _error(status, body, 503, "temporary fault")
    assert body["details"][0]["reference"] in caplog.text
    assert "disk on fire" not in json.dumps(body)  # internals stay in the log


def test_manager_errors_map_by_code(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    async def unavailable(*args: Any) -> Any:
        raise PeerUnavailable("node 'B' did not confirm")

    monkeypatch.setattr(net.a, "enc_keys", unavailable)
    status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys")
    _error(status, body, 503, "peer KME")
    assert body["details"] == [{"reason": "node 'B' did not confirm"}]


# --- who may call ---------------------------------------------------------------------------

@pytest.mark.parametrize("who", [None, "rogue-alice"])
def test_clients_without_a_certificate_from_the_ca_are_refused_in_the_handshake(
        net: Net, pki: Pki, who: str | None) -> None:
    ctx = make_client_ssl_context(pki.ca) if who is None else make_client_ssl_context(
        pki.ca, *pki.clients[who])
    conn = http.client.HTTPSConnection("127.0.0.1", net.servers["A"].port, context=ctx,
                                       timeout=10)
    # TLS 1.3 finishes the client's side of the handshake before the server's verdict arrives,
    # so the refusal (an alert) surfaces on the first read at the latest; no HTTP answer comes.
    def ask() -> None:
        conn.request("GET", f"{API}/bob-app/status")
        conn.getresponse()

    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        ask()
    conn.close()
    assert net.request("A", "alice-app", "GET", f"{API}/bob-app/status")[0] == 200


def test_a_certificate_without_a_common_name_is_a_401(net: Net) -> None:
    _error(*net.request("A", "no-cn", "GET", f"{API}/bob-app/status"), 401, "names no SAE")


@pytest.mark.parametrize(("who", "path"), [
    ("bob-app", "/alice-app/status"),          # bob-app is attached to KME B, not A
    ("bob-app", "/alice-app/enc_keys"),
    ("bob-app", f"/alice-app/dec_keys?key_ID={uuid.UUID(int=1)}"),
])
def test_saes_not_attached_to_this_kme_are_refused(net: Net, who: str, path: str) -> None:
    _error(*net.request("A", who, "GET", API + path), 401)


def test_a_context_without_client_verification_is_refused(pki: Pki) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ValueError, match="CERT_REQUIRED"):
        Etsi014Server(None, ctx)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="HTTPS only"):
        Etsi014Server(None, None)  # type: ignore[arg-type]
    ctx = pki.server_context()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with pytest.raises(ValueError, match=r"below 1\.2"):
        Etsi014Server(None, ctx)  # type: ignore[arg-type]


def test_serve_etsi014_runs_until_cancelled(net: Net, pki: Pki) -> None:
    from qkdnode.node.km.etsi014 import serve_etsi014

    started: list[Etsi014Server] = []

    async def start() -> asyncio.Task[None]:
        listening = asyncio.Event()

        def on_start(server: Etsi014Server) -> None:
            started.append(server)
            listening.set()

        task = asyncio.create_task(serve_etsi014(net.a, "127.0.0.1", 0, pki.server_context(),
                                                 started=on_start))
        await asyncio.wait_for(listening.wait(), 10)
        return task

    async def stop(task: asyncio.Task[None]) -> bool:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    task = net.run(start())
    net.servers["extra"] = started[0]
    try:
        assert net.request("extra", "alice-app", "GET", f"{API}/bob-app/status")[0] == 200
    finally:
        del net.servers["extra"]
        assert net.run(stop(task))
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", started[0].port), timeout=5)


def test_bytes_that_are_not_http_get_a_400_and_the_server_stays_up(net: Net, pki: Pki) -> None:
    raw = socket.create_connection(("127.0.0.1", net.servers["A"].port), timeout=10)
    with pki.client_context("alice-app").wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"\x00\x01 NOT HTTP AT ALL\r\n\r\n")
        answer = tls.recv(4096)
    # aiohttp's parser answers this itself (text, not the Error JSON: no handler ever ran).
    assert answer.split(b" ", 2)[:2] in ([b"HTTP/1.0", b"400"], [b"HTTP/1.1", b"400"])
    assert net.request("A", "alice-app", "GET", f"{API}/bob-app/status")[0] == 200


def test_the_access_log_names_saes_and_key_ids_but_never_key_material(
        net: Net, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        status, body = net.request("A", "alice-app", "GET", f"{API}/bob-app/enc_keys?number=2")
        assert status == 200
        master = _keys(body)
        status, _ = net.request("B", "bob-app", "POST", f"{API}/alice-app/dec_keys",
                                {"key_IDs": [{"key_ID": k} for k in master]})
        assert status == 200
    access = [r.getMessage() for r in caplog.records if r.name.endswith("etsi014.access")]
    assert any("sae=alice-app" in line and "keys=2" in line for line in access)
    assert any("sae=bob-app" in line and "status=200" in line for line in access)
    for key_id in master:
        assert key_id in caplog.text
    for material in master.values():
        for form in (base64.b64encode(material).decode(), material.hex(), repr(material)):
            assert form not in caplog.text


# --- the request parsers on their own, and fuzzing from the served document -----------------

LIMITS = Limits(key_size=256, max_key_per_request=16, max_key_size=2048, min_key_size=8,
                max_sae_id_count=4)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=4)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=6)
KEY_REQUEST_FIELDS = ["number", "size", "additional_slave_SAE_IDs", "extension_mandatory",
                      "extension_optional", "other"]


def _refusal(parse: Any, *args: Any) -> ApiError | None:
    """The ApiError a parser raises (any other exception fails the test), or None."""
    try:
        parse(*args)
    except ApiError as exc:
        return exc
    return None


@settings(max_examples=80, deadline=None)
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(KEY_REQUEST_FIELDS), JSON, max_size=4)))
def test_key_request_parser_refuses_anything_malformed_with_a_400_only(body: Any) -> None:
    exc = _refusal(parse_key_request_body, body, LIMITS)
    assert exc is None or (exc.status == 400 and exc.message)


@settings(max_examples=80, deadline=None)
@given(st.one_of(JSON, st.fixed_dictionaries({"key_IDs": st.lists(st.one_of(
    JSON, st.fixed_dictionaries({"key_ID": st.uuids().map(str) | JSON})), max_size=3)})))
def test_key_ids_parser_refuses_anything_malformed_with_a_400_only(body: Any) -> None:
    exc = _refusal(parse_key_ids_body, body, 16)
    assert exc is None or (exc.status == 400 and exc.message)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_json_or_a_400(raw: bytes) -> None:
    exc = _refusal(parse_json_body, raw)
    assert exc is None or exc.status == 400


@pytest.fixture(scope="module")
def fuzz_net(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(pki, tmp_path_factory.mktemp("fuzz"), link_keys=256)
    yield n
    n.close()


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` four times in five, any JSON value otherwise."""
    return st.integers(0, 4).flatmap(lambda i: JSON if i == 0 else valid)


def _value(schema: dict[str, Any], doc: dict[str, Any], seen: list[str]) -> st.SearchStrategy[Any]:
    """Values for a schema of the served document: mostly valid, sometimes any JSON at all.

    ``seen`` holds key IDs the fuzzed server handed out, so dec_keys gets real ones too.
    """
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind == "integer":
        low = schema.get("minimum", -10)
        valid: st.SearchStrategy[Any] = st.integers(low, 24) | st.integers(low, 5000)
        if schema.get("multipleOf"):
            step = schema["multipleOf"]
            valid = valid.map(lambda v: max(v - v % step, step)) | valid
    elif kind == "string" and schema.get("format") == "uuid":
        valid = st.uuids().map(str) | st.integers(0, 10**6).map(
            lambda i: seen[i % len(seen)] if seen else str(uuid.UUID(int=i)))
    elif kind == "string":
        valid = st.sampled_from(CLIENTS) | st.text(min_size=1, max_size=12)
    elif kind == "array":
        valid = st.lists(_value(schema.get("items", {}), doc, seen), max_size=4)
    elif kind == "object" and schema.get("properties"):
        # A document object: its known fields, valid or not, and sometimes an unknown one.
        return st.fixed_dictionaries({}, optional={
            **{name: _value(sub, doc, seen) for name, sub in schema["properties"].items()},
            "unknown_field": JSON})
    elif kind == "object":
        valid = st.dictionaries(st.text(max_size=6), JSON, max_size=3)
    else:
        valid = JSON
    return _mostly(valid)


def _requests(doc: dict[str, Any], seen: list[str]
              ) -> st.SearchStrategy[tuple[str, str, bytes | None]]:
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            path_params = {p["name"]: _mostly(
                st.sampled_from(["alice-app", "bob-app"]) | st.sampled_from(CLIENTS)).map(
                lambda v: v if isinstance(v, str) and v else json.dumps(v))
                for p in params if p["in"] == "path"}
            query = {p["name"]: _value(p["schema"], doc, seen).map(
                lambda v: v if isinstance(v, str) else json.dumps(v))
                for p in params if p["in"] == "query"}
            body_schema = op.get("requestBody", {}).get("content", {}).get(
                "application/json", {}).get("schema")
            body: st.SearchStrategy[bytes | None] = st.none()
            if body_schema is not None:
                body = st.integers(0, 9).flatmap(
                    lambda i, schema=body_schema: st.binary(max_size=40) if i == 0 else
                    _value(schema, doc, seen).map(lambda v: json.dumps(v).encode()))
            ops.append(st.tuples(
                st.just(method.upper()), st.just(path),
                st.fixed_dictionaries(path_params), st.fixed_dictionaries({}, optional=query),
                body))

    def build(t: tuple[str, str, dict[str, str], dict[str, str], bytes | None]
              ) -> tuple[str, str, bytes | None]:
        from urllib.parse import quote, urlencode
        method, path, path_params, query, body = t
        for name, value in path_params.items():
            path = path.replace("{" + name + "}", quote(value, safe=""))
        return method, path + ("?" + urlencode(query) if query else ""), body

    return st.one_of(ops).map(build)


def _conforms(value: Any, schema: dict[str, Any], doc: dict[str, Any]) -> bool:
    """Whether ``value`` has the types, required fields and formats ``schema`` documents."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    kind = schema.get("type")
    if kind == "object":
        return (isinstance(value, dict) and all(r in value for r in schema.get("required", ()))
                and all(_conforms(value[k], sub, doc)
                        for k, sub in schema.get("properties", {}).items() if k in value))
    if kind == "array":
        return isinstance(value, list) and all(_conforms(v, schema.get("items", {}), doc)
                                               for v in value)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "string":
        if not isinstance(value, str):
            return False
        if schema.get("format") == "uuid":
            return str(uuid.UUID(value)) == value
        if schema.get("contentEncoding") == "base64":
            return len(base64.b64decode(value, validate=True)) > 0
    return True


def test_fuzz_the_api_from_its_own_openapi_document(fuzz_net: Net) -> None:
    status, doc = fuzz_net.request("A", "alice-app", "GET", OPENAPI_PATH)
    assert status == 200
    seen: list[str] = []
    home = {"A": "alice-app", "B": "bob-app"}
    callers = st.sampled_from(["A", "B"]).flatmap(lambda node: st.tuples(st.just(node), (
        st.integers(0, 2).flatmap(lambda i: st.just(home[node]) if i else
                                  st.sampled_from([*CLIENTS, "no-cn"])))))

    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(_requests(doc, seen), callers)
    def one(req: tuple[str, str, bytes | None], caller: tuple[str, str]) -> None:
        method, path, body = req
        node, who = caller
        status, answer = fuzz_net.request(node, who, method, path, body)
        route = next(p for p in doc["paths"] if "/" + path.split("?")[0].rsplit("/", 1)[-1]
                     == "/" + p.rsplit("/", 1)[-1])
        documented = doc["paths"][route][method.lower()]["responses"]
        assert str(status) in documented, (status, answer)
        assert _conforms(answer, documented[str(status)]["content"]["application/json"][
            "schema"], doc), answer
        if status != 200:
            _error(status, answer, status)
        elif route.endswith("enc_keys"):
            seen.extend(k["key_ID"] for k in answer["keys"])

    one()
    # Still up, still right.
    assert fuzz_net.request("A", "alice-app", "GET", f"{API}/bob-app/status")[0] == 200


# --- the client -----------------------------------------------------------------------------

def _client(net: Net, node: str, who: str) -> Etsi014Client:
    return Etsi014Client(f"https://127.0.0.1:{net.servers[node].port}",
                         net.pki.client_context(who))


def test_client_round_trip_through_both_kmes(net: Net) -> None:
    async def run() -> None:
        async with _client(net, "A", "alice-app") as alice, \
                _client(net, "B", "bob-app") as bob, _client(net, "B", "bob-app2") as bob2:
            status = await alice.status("bob-app")
            assert (status.source_kme_id, status.target_kme_id, status.key_size) == (
                "kme-a", "kme-b", 256)
            keys = await alice.enc_keys("bob-app", 3, 512, additional_slaves=["bob-app2"])
            assert [len(k.material) for k in keys] == [64] * 3
            ids = [k.key_id for k in keys]
            got = await bob.dec_keys("alice-app", ids[::-1])
            assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
            got = await bob2.dec_keys("alice-app", ids)
            assert {k.key_id: k.material for k in got} == {k.key_id: k.material for k in keys}
            with pytest.raises(Etsi014Error):
                await bob.dec_keys("alice-app", ids[:1])
            default = await alice.enc_keys("bob-app")
            assert len(default[0].material) == 32

    net.run(run())


def test_client_raises_by_status_code(net: Net) -> None:
    async def run() -> list[Etsi014Error]:
        errors = []
        async with _client(net, "A", "alice-app") as alice, \
                _client(net, "B", "bob-app") as bob, _client(net, "A", "bob-app") as bob_at_a:
            calls = [lambda: alice.enc_keys("bob-app", 1, 12), lambda: alice.enc_keys("carol-app"),
                     lambda: alice.status("mallory"),
                     lambda: bob.dec_keys("alice-app", [uuid.uuid4()]),
                     lambda: bob_at_a.enc_keys("alice-app")]  # bob-app is not attached to A
            for call in calls:
                with pytest.raises(Etsi014Error) as info:
                    await call()
                errors.append(info.value)
        return errors

    errors = net.run(run())
    assert [e.status for e in errors] == [400, 503, 400, 400, 401]
    assert [e.temporary for e in errors] == [False, True, False, False, False]
    assert errors[0].message == MSG_SIZE_MULTIPLE_OF_8
    assert "KME answered 400" in str(errors[0])


@pytest.mark.parametrize("answer", [
    [],                                                          # not a Key container
    {"keys": [{"key_ID": "nope", "key": "AAAA"}]},               # bad key ID
    {"keys": [{"key_ID": str(uuid.UUID(int=1)), "key": "!!"}]},  # bad base64
    {"keys": [{"key_ID": str(uuid.UUID(int=1)), "key": "AAAA"}]},  # 24 bits, not 256
    {"keys": []},                                                # 0 keys, asked for 1
])
def test_client_refuses_answers_that_do_not_match_the_request(
        net: Net, pki: Pki, answer: Any) -> None:
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answer)

    async def run() -> None:
        app = web.Application()
        app.router.add_post(API + "/{sae}/enc_keys", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_context())
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with Etsi014Client(f"https://127.0.0.1:{port}{API}",
                                     pki.client_context("alice-app")) as kme:
                with pytest.raises(RemoteProtocolError, match="ETSI 014 KME answer"):
                    await kme.enc_keys("bob-app", 1, 256)
        finally:
            await runner.cleanup()

    net.run(run())


def test_client_wants_https(pki: Pki) -> None:
    with pytest.raises(ValueError, match="https"):
        Etsi014Client("http://127.0.0.1:1", pki.client_context("alice-app"))


# --- exactly once, as a state machine over HTTPS --------------------------------------------

@pytest.fixture(scope="module")
def model_net(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    n = Net(pki, tmp_path_factory.mktemp("model"), link_keys=128, link_key_bytes=1024)
    yield n
    n.close()


@pytest.mark.parametrize("examples", [6, pytest.param(60, marks=pytest.mark.slow)])
def test_exactly_once_delivery_under_random_request_sequences(model_net: Net,
                                                              examples: int) -> None:
    """Masters ask for keys, slaves (and SAEs that are not) ask for them by ID in any order:
    each named slave gets each key exactly once, with the master's bytes; everyone else gets
    401, and a second request 400."""
    from hypothesis.stateful import (
        Bundle,
        RuleBasedStateMachine,
        consumes,
        multiple,
        rule,
        run_state_machine_as_test,
    )

    net = model_net
    slaves_on_b = ["bob-app", "bob-app2", "bob-app3"]

    @dataclass
    class Issued:
        key_id: str
        material: bytes
        master: str
        slaves: tuple[str, ...]
        collected: set[str] = field(default_factory=set)

    class Delivery(RuleBasedStateMachine):
        keys = Bundle("keys")

        @rule(target=keys, master=st.sampled_from(["alice-app", "alice-app2"]),
              slaves=st.lists(st.sampled_from(slaves_on_b), min_size=1, max_size=2,
                              unique=True),
              number=st.integers(1, 3), size=st.sampled_from([8, 256, 520]))
        def enc_keys(self, master: str, slaves: list[str], number: int, size: int) -> Any:
            status, body = net.request("A", master, "POST", f"{API}/{slaves[0]}/enc_keys", {
                "number": number, "size": size, "additional_slave_SAE_IDs": slaves[1:]})
            assert status == 200, body
            got = _keys(body)
            assert [len(m) for m in got.values()] == [size // 8] * number
            return multiple(*(Issued(k, m, master, tuple(slaves)) for k, m in got.items()))

        @rule(key=keys, who=st.sampled_from(slaves_on_b),
              wrong_master=st.integers(0, 4).map(lambda i: i == 0))
        def dec_keys(self, key: Issued, who: str, wrong_master: bool) -> None:
            master = key.master
            if wrong_master:
                master = "alice-app2" if master == "alice-app" else "alice-app"
            status, body = net.request("B", who, "GET",
                                       f"{API}/{master}/dec_keys?key_ID={key.key_id}")
            if wrong_master or who not in key.slaves:
                _error(status, body, 401)
            elif who in key.collected:
                _error(status, body, 400, MSG_KEYS_NOT_FOUND)
            else:
                assert (status, _keys(body)) == (200, {key.key_id: key.material})
                key.collected.add(who)

        @rule(key=consumes(keys))
        def forget(self, key: Issued) -> None:
            """Drops a key from the bundle so the others get picked more often."""

    run_state_machine_as_test(Delivery, settings=settings(
        max_examples=examples, stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture]))
