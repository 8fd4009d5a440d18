"""A vendor QKD pair feeding our key managers through its ETSI 014 interface. The "vendor boxes"
are two of our own key managers behind our ETSI 014 server: the adapter only sees ETSI 014."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid

import pytest

from qkdnode.node.errors import PeerUnavailable
from qkdnode.node.km import KeyManager, KeyState, LinkKey, SqliteKeyStore
from qkdnode.node.km.etsi014 import Etsi014Server
from qkdnode.node.km.etsi014_tls import make_client_ssl_context, make_server_ssl_context
from qkdnode.node.km.network import KxAgent
from qkdnode.node.km.pki import make_pki
from qkdnode.node.km.vendor import VendorFeed, VendorLink
from qkdnode.node.protocol.kx import PoolOffered, SupplyNotified


class Direct:
    """PeerLink between the two vendor boxes."""

    def __init__(self, me, peer):
        self.me, self.peer = me, peer

    async def notify_supply(self, plans):
        await self.peer.on_supply_notification(self.me, plans)


class Net:
    def __init__(self):
        self.agents = {}
        self.ids = itertools.count(1)

    def view(self, node):
        net = self

        class View:
            async def request(self, peer, event):
                event = dataclasses.replace(event, req=next(net.ids))
                if isinstance(event, PoolOffered):
                    return await net.agents[peer].on_pool_offer(node, event)
                assert isinstance(event, SupplyNotified)
                return await net.agents[peer].on_supply(node, event)

        return View()


def test_vendor_keys_reach_both_pools_under_the_vendor_ids(tmp_path):
    pki = tmp_path / "pki"
    make_pki(pki, ["box-a", "box-b"], ["km-A", "km-B", "app-a", "app-b"])

    async def run():
        # the vendor's pair: two KMEs sharing 16 link keys, SAEs km-A at box-a, km-B at box-b
        vsaes = {"km-A": "VA", "km-B": "VB"}
        vstores = [SqliteKeyStore(tmp_path / "va.sqlite"), SqliteKeyStore(tmp_path / "vb.sqlite")]
        va = KeyManager(vstores[0], "VA", "box-a", vsaes)
        vb = KeyManager(vstores[1], "VB", "box-b", vsaes)
        va.peers["VB"], vb.peers["VA"] = Direct("VA", vb), Direct("VB", va)
        keys = [LinkKey(uuid.uuid4(), bytes([i]) * 32) for i in range(1, 17)]
        for store, pool in ((vstores[0], "VB"), (vstores[1], "VA")):
            store.add_link_keys(pool, keys, 0.0, active=True)
        boxes = [Etsi014Server(m, make_server_ssl_context(pki / "ca.pem", pki / f"{n}.pem",
                                                          pki / f"{n}.key"))
                 for m, n in ((va, "box-a"), (vb, "box-b"))]
        for box in boxes:
            await box.start()
        # our two key managers, A and B, peers over (in-memory) Kx
        saes = {"app-a": "A", "app-b": "B"}
        stores = {n: SqliteKeyStore(tmp_path / f"{n}.sqlite") for n in "AB"}
        managers = {n: KeyManager(stores[n], n, f"kme-{n}", saes) for n in "AB"}
        net = Net()
        for n, other in (("A", "B"), ("B", "A")):
            net.agents[n] = KxAgent(managers[n], net.view(n), [other])

        def link(peer, box, partner, role, me):
            ctx = make_client_ssl_context(pki / "ca.pem", pki / f"{me}.pem", pki / f"{me}.key")
            return VendorLink(peer, f"https://localhost:{box.port}", partner, role, ctx,
                              key_size_bits=256, target_keys=6)

        feed_a = VendorFeed(managers["A"], [link("B", boxes[0], "km-B", "master", "km-A")])
        feed_b = VendorFeed(managers["B"], [link("A", boxes[1], "km-A", "slave", "km-B")])
        net.agents["B"].importer = feed_b.collect
        try:
            assert await feed_a.top_up("B") == 6
            assert await feed_a.top_up("B") == 0          # at target
            assert await net.agents["A"].sync_pool("B") == 6
            ids_a = stores["A"].link_key_ids("B", KeyState.ACTIVE)
            assert stores["B"].link_key_ids("A", KeyState.ACTIVE) == ids_a
            got = await managers["A"].enc_keys("app-a", ["app-b"], 3, 512)
            back = await managers["B"].dec_keys("app-b", "app-a", [k.key_id for k in got])
            assert [k.material for k in got] == [k.material for k in back]
            # the vendor boxes delivered each key once: asking again fails
            with pytest.raises(PeerUnavailable, match="400"):
                await feed_b._ask(feed_b.links["A"], "dec_keys",
                                  feed_b._client(feed_b.links["A"]).dec_keys("km-A", ids_a[:1]))
            with pytest.raises(ValueError, match="slave end"):
                await feed_b.top_up("A")
        finally:
            await feed_a.close()
            await feed_b.close()
            for box in boxes:
                await box.stop()
            for s in [*vstores, *stores.values()]:
                s.close()

    asyncio.run(run())


def test_an_unreachable_vendor_box_is_a_clear_temporary_error(tmp_path):
    import ssl

    async def run():
        store = SqliteKeyStore(tmp_path / "a.sqlite")
        feed = VendorFeed(KeyManager(store, "A", "kme-A", {}), [VendorLink(
            "B", "https://127.0.0.1:9", "km-B", "master", ssl.create_default_context())])
        try:
            with pytest.raises(PeerUnavailable, match=r"vendor box https://127\.0\.0\.1:9"):
                await feed.top_up("B")
        finally:
            await feed.close()
            store.close()

    asyncio.run(run())
    with pytest.raises(ValueError, match="role"):
        VendorLink("B", "https://x", "p", "boss", None)  # type: ignore[arg-type]
