"""Kx over real TLS sockets: three nodes in a line, mutual TLS, relay end to end, peer restart."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import uuid

import pytest

pytest.importorskip("cryptography", reason="the test extra installs cryptography")
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qkdnode.node.errors import PeerUnavailable
from qkdnode.node.io.kx import KxService
from qkdnode.node.km import KeyManager, KeyState, LinkKey, SqliteKeyStore
from qkdnode.node.km.network import KxAgent

SAES = {"app-a": "A", "app-b": "B", "app-c": "C"}


def _cert(name, issuer_key, issuer_name, key, ca=False):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM

    def write(name, cert, key):
        (d / f"{name}.crt").write_bytes(cert.public_bytes(pem))
        (d / f"{name}.key").write_bytes(key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qkdnode test CA")])
    write("ca", _cert("qkdnode test CA", ca_key, ca_name, ca_key, ca=True), ca_key)
    for node in ("A", "B", "C"):
        key = ec.generate_private_key(ec.SECP256R1())
        write(node, _cert(node, ca_key, ca_name, key), key)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    rogue_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue CA")])
    key = ec.generate_private_key(ec.SECP256R1())
    write("B-rogue", _cert("B", rogue_key, rogue_name, key), key)
    return d


def contexts(pki, name):
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki / "ca.crt")
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki / "ca.crt")
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(pki / f"{name}.crt", pki / f"{name}.key")
    return server, client


async def line(tmp_path, pki, cert_of=None):
    """Nodes A - B - C with 8 shared 32-byte link keys per link, all on 127.0.0.1."""
    cert_of = cert_of or {}
    stores, managers, agents, services = {}, {}, {}, {}
    adjacency = {"A": ["B"], "B": ["A", "C"], "C": ["B"]}
    for node in adjacency:
        stores[node] = SqliteKeyStore(tmp_path / f"{node}.sqlite")
        managers[node] = KeyManager(stores[node], node, f"kme-{node}", SAES)
    for a, b in (("A", "B"), ("B", "C")):
        keys = [LinkKey(uuid.uuid4(), bytes([i + 1]) * 32) for i in range(8)]
        stores[a].add_link_keys(b, keys, 0.0)
        stores[b].add_link_keys(a, keys, 0.0)
    for node, adj in adjacency.items():
        server, client = contexts(pki, cert_of.get(node, node))
        services[node] = KxService(node, "127.0.0.1", 0, {}, server, client, retry_s=0.2)
        agents[node] = KxAgent(managers[node], services[node], adj)
        services[node].bind(agents[node])
        await services[node].start()
    for node, adj in adjacency.items():
        for p in adj:
            services[node].add_peer(p, "127.0.0.1", services[p].port)
    return stores, managers, agents, services


async def shutdown(stores, services):
    for svc in services.values():
        await svc.stop()
    for s in stores.values():
        s.close()


def test_sync_relay_and_supply_over_mutual_tls(tmp_path, pki):
    async def run():
        stores, managers, agents, services = await line(tmp_path, pki)
        try:
            assert await agents["A"].sync_pool("B") == 8
            assert await agents["B"].sync_pool("C") == 8
            for _ in range(100):       # link states flood every ADVERTISE_EVERY_S
                if "C" in agents["A"].links.links and agents["A"].links.links.get("C"):
                    break
                agents["B"].links.set_local("B", agents["B"].local_levels())
                services["B"].flood(agents["B"].advertisement(), exclude=None)
                services["C"].flood(agents["C"].advertisement(), exclude=None)
                await asyncio.sleep(0.05)
            relay_id = await agents["A"].relay_key("C", 64)
            assert stores["C"].link_key_state(relay_id) is KeyState.ACTIVE
            got = await managers["A"].enc_keys("app-a", ["app-c"], 2, 256)
            back = await managers["C"].dec_keys("app-c", "app-a", [k.key_id for k in got])
            assert [k.material for k in got] == [k.material for k in back]
        finally:
            await shutdown(stores, services)

    asyncio.run(run())


def test_a_peer_with_a_foreign_certificate_is_not_talked_to(tmp_path, pki):
    async def run():
        stores, _, agents, services = await line(tmp_path, pki, cert_of={"B": "B-rogue"})
        try:
            with pytest.raises(PeerUnavailable, match="no Kx connection"):
                await services["A"].connected("B", timeout_s=0.5)
            assert stores["A"].link_key_ids("B", KeyState.ACTIVE) == []
            del agents
        finally:
            await shutdown(stores, services)

    asyncio.run(run())


def test_a_peer_restart_mid_exchange_is_healed_by_resending(tmp_path, pki):
    async def run():
        stores, _, agents, services = await line(tmp_path, pki)
        try:
            await services["A"].connected("B")
            # B goes away and comes back on the same port
            port = services["B"].port
            await services["B"].stop()
            sync = asyncio.create_task(agents["A"].sync_pool("B"))
            await asyncio.sleep(0.3)
            services["B"].port = port
            await services["B"].start()
            assert await sync == 8
            assert len(stores["B"].link_key_ids("A", KeyState.ACTIVE)) == 8
        finally:
            await shutdown(stores, services)

    asyncio.run(run())
