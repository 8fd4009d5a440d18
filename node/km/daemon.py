"""One node's key management daemon: the key store and every interface around it.

:class:`NodeDaemon` assembles, from the node configuration:

* the key store (:class:`~.store.SqliteKeyStore`) and the :class:`~.manager.KeyManager`;
* Kq-1/Kq-2 for the node's QKD modules on a Unix socket (:class:`~qkdnode.node.io.kq1.Kq1Server`);
* Kx to the peers over mutual TLS (:class:`~qkdnode.node.io.kx.KxService` and its
  :class:`~.network.KxAgent`), with pool synchronisation every :data:`SYNC_EVERY_S`;
* ETSI GS QKD 014 for applications (:class:`~.etsi014.Etsi014Server`);
* the management port: ``/metrics`` (Prometheus text format) and ``/status`` (JSON), with
  each QKD module's Kq-2 status report (asked for every :data:`MODULE_STATUS_EVERY_S`), and
  ``POST /modules/NAME/stop`` and ``/start`` (Kq-2 control), which need the bearer token the
  daemon writes at each start (:mod:`.management`); :meth:`NodeDaemon.stop` stops the
  connected modules first;
* vendor QKD pairs feeding the store through their ETSI 014 interface (:mod:`.vendor`).

Keys never appear in the status, the metrics or the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..config.schema import NodeConfig
from ..errors import ConfigError, KeyManagerError
from ..io.kq1 import Kq1Server
from ..io.kx import KxService
from .etsi014 import Etsi014Server
from .etsi014_tls import make_client_ssl_context, make_server_ssl_context
from .management import auth_middleware, new_token, remove_token, token_path, write_token
from .manager import KeyManager, SupplyLimits
from .network import KxAgent
from .store import SqliteKeyStore
from .vendor import VendorFeed, VendorLink

__all__ = ["NodeDaemon", "split_host_port"]

log = logging.getLogger(__name__)

# Pool synchronisation with each peer (activates keys both ends hold) runs this often; a second
# keeps freshly distilled key usable within a second of its arrival.
SYNC_EVERY_S = 1.0
# Expired keys are destroyed this often.
EXPIRE_EVERY_S = 10.0
# Rates (keys received, supplied, delivered per second) are averaged over the last minute.
RATE_WINDOW_S = 60.0
# Alarms: a pool with fewer keys of the default size than this for a peer; a pool at this
# fraction of max_key_count; a module's QBER above its link's qber_abort (or this when the
# module's link is not in the file).
LOW_WATER_KEYS = 16
# Kq-2: each connected QKD module is asked for its status this often (its report is what
# /status and /metrics show); a module that does not answer within the timeout is skipped.
MODULE_STATUS_EVERY_S = 2.0
MODULE_STATUS_TIMEOUT_S = 5.0
FULL_FRACTION = 0.9
# At a stop, relay completion notifications not yet sent get this long to reach their origins
# (an origin that does not hear of a relay whose answer it lost destroys its copy).
COMPLETION_FLUSH_S = 2.0
DEFAULT_QBER_ALARM = 0.11


def split_host_port(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (the configuration checked the form) as a pair."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _Metrics(Collector):
    """Reads the daemon's state at scrape time (no counters to keep in step)."""

    def __init__(self, daemon: NodeDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Any:
        status = self.daemon.status()
        avail = GaugeMetricFamily("qkdnode_pool_available_bits",
                                  "Key available for supply, per peer pool", labels=["pool"])
        pre = GaugeMetricFamily("qkdnode_pool_pre_activation_keys",
                                "Link keys awaiting the peer's confirmation", labels=["pool"])
        reserved = GaugeMetricFamily("qkdnode_pool_reserved_keys",
                                     "Supply keys made, not yet delivered", labels=["pool"])
        for pool, level in status["pools"].items():
            avail.add_metric([pool], level["available_bits"])
            pre.add_metric([pool], level["pre_activation_keys"])
            reserved.add_metric([pool], level["reserved_keys"])
        peers = GaugeMetricFamily("qkdnode_peer_connected", "1 if the Kx link is up",
                                  labels=["peer"])
        for peer, up in status["peers"].items():
            peers.add_metric([peer], 1.0 if up else 0.0)
        modules = GaugeMetricFamily("qkdnode_module_qber", "Last QBER a QKD module reported "
                                    "(Kq-2 status, else its last key's metadata)",
                                    labels=["module"])
        for name, report in status["modules"].items():
            qber = report.get("qber", report.get("key_qber"))
            if isinstance(qber, int | float):
                modules.add_metric([name], float(qber))
        figures = {
            "running": GaugeMetricFamily("qkdnode_module_running",
                                         "1 if the module runs (Kq-2), 0 if stopped",
                                         labels=["module"]),
            "sync_locked": GaugeMetricFamily("qkdnode_module_sync_locked",
                                             "1 if the module's Qsync is locked",
                                             labels=["module"]),
            "sifted_rate_bps": GaugeMetricFamily("qkdnode_module_sifted_rate_bps",
                                                 "Sifted X bits per second since start",
                                                 labels=["module"]),
            "secret_key_rate_bps": GaugeMetricFamily("qkdnode_module_secret_key_rate_bps",
                                                     "Secret key bits per second since start",
                                                     labels=["module"]),
        }
        blocks = GaugeMetricFamily("qkdnode_module_blocks_total", "Blocks ended, by outcome",
                                   labels=["module", "outcome"])
        for name, report in status["modules"].items():
            if "running" in report:
                figures["running"].add_metric([name], 1.0 if report["running"] else 0.0)
            if "sync" in report:
                figures["sync_locked"].add_metric([name],
                                                  1.0 if report["sync"] == "locked" else 0.0)
            for key in ("sifted_rate_bps", "secret_key_rate_bps"):
                value = report.get(key)
                if isinstance(value, int | float):
                    figures[key].add_metric([name], float(value))
            for outcome in ("completed", "aborted"):
                value = report.get(f"blocks_{outcome}")
                if isinstance(value, int):
                    blocks.add_metric([name, outcome], value)
        counters = GaugeMetricFamily("qkdnode_keys_total", "Keys handled since start",
                                     labels=["event"])
        for event, count in status["counters"].items():
            counters.add_metric([event], count)
        rates = GaugeMetricFamily("qkdnode_key_rate_per_second",
                                  "Keys per second over the last minute", labels=["event"])
        for event, rate in status["rates_per_s"].items():
            rates.add_metric([event], rate)
        alarms = GaugeMetricFamily("qkdnode_alarms", "Active alarms by kind", labels=["kind"])
        kinds = collections.Counter(a["kind"] for a in status["alarms"])
        for kind in ("peer_down", "pool_low", "store_full", "qber_high"):
            alarms.add_metric([kind], kinds.get(kind, 0))
        yield from (avail, pre, reserved, peers, modules, *figures.values(), blocks, counters,
                    rates, alarms)


class NodeDaemon:
    """The key management daemon of one node.

    Args:
        config: the node configuration (paths already resolved by the loader).
        file: the configuration file, for messages.
    """

    def __init__(self, config: NodeConfig, file: str | None = None) -> None:
        km = config.key_manager
        if km.tls is None:
            raise ConfigError(file, "key_manager.tls", None,
                              "required to run a node: Kx and ETSI 014 use mutual TLS")
        # The bearer token control requests need (see .management), new at each start.
        self.token_file = token_path(km)
        if self.token_file.resolve() in (Path(km.store_path).resolve(),
                                         Path(km.kq1_socket).resolve()):
            raise ConfigError(file, "key_manager.management_token_file", None,
                              f"{self.token_file} is the key store or the Kq-1 socket; the "
                              "token needs a file of its own")
        self.config = config
        self.node = config.node.name
        self.store = SqliteKeyStore(km.store_path, max_key_count=km.max_key_count,
                                    wipe_delay_s=km.wipe_delay_s)
        limits = SupplyLimits(key_size_bits=km.key_size_bits, max_key_count=km.max_key_count)
        peer_ids = {p.name: p.kme_id or p.name for p in config.peers}
        self.manager = KeyManager(self.store, self.node, self.node, km.saes,
                                  peer_kme_ids=peer_ids, limits=limits,
                                  link_key_confirm_s=km.link_key_confirm_s)
        tls = km.tls
        server_ssl = make_server_ssl_context(tls.ca, tls.cert, tls.key)
        client_ssl = make_client_ssl_context(tls.ca, tls.cert, tls.key)
        kx_host, kx_port = split_host_port(km.kx_listen)
        self.kx = KxService(self.node, kx_host, kx_port,
                            {p.name: split_host_port(p.kx_address) for p in config.peers},
                            server_ssl, client_ssl)
        self.agent = KxAgent(self.manager, self.kx, [p.name for p in config.peers])
        self.kx.bind(self.agent)
        self.kq1 = Kq1Server(self.manager, km.kq1_socket)
        self.vendor = VendorFeed(self.manager, [
            VendorLink(v.peer, v.url, v.partner_sae, v.role,
                       make_client_ssl_context(v.tls.ca, v.tls.cert, v.tls.key),
                       v.key_size_bits, v.target_keys) for v in km.vendor_links])
        if self.vendor.links:
            self.agent.importer = self.vendor.collect
        etsi_host, etsi_port = split_host_port(km.etsi014_listen)
        self.etsi = Etsi014Server(self.manager, make_server_ssl_context(tls.ca, tls.cert,
                                                                        tls.key),
                                  host=etsi_host, port=etsi_port)
        self.management_address = split_host_port(km.management_listen)
        self._token: str | None = None
        self.management_port = self.management_address[1]
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._registry = CollectorRegistry()
        self._registry.register(_Metrics(self))
        self.started_at = time.time()
        self._samples: collections.deque[tuple[float, dict[str, int]]] = collections.deque()

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts every interface; a port that cannot be bound fails the start."""
        km = self.config.key_manager
        # Drawn now, written once every port is bound: a second daemon started on the same
        # configuration fails to bind and leaves the running one's token file alone.
        token = new_token()
        if not os.access(self.token_file.parent, os.W_OK | os.X_OK):
            raise KeyManagerError(f"node {self.node}: cannot write the management token file "
                                  f"{self.token_file} (its directory is not writable)")
        # Modules held stopped before a restart stay stopped when they reconnect.
        self.kq1.held.update(await asyncio.to_thread(self.store.held_modules))
        await self.kq1.start()
        await self.kx.start()
        await self.etsi.start()
        app = web.Application(middlewares=[
            auth_middleware(token, km.management_auth, self.token_file)])
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/modules/{name}/{action:start|stop}", self._module_control)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = self.management_address
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        if self._runner.addresses:
            self.management_port = self._runner.addresses[0][1]
        self._token = write_token(self.token_file, token)
        self._tasks = [asyncio.create_task(self._sync_loop()),
                       asyncio.create_task(self._expire_loop()),
                       asyncio.create_task(self._module_loop())]
        if any(link.role == "master" for link in self.vendor.links.values()):
            self._tasks.append(asyncio.create_task(self.vendor.run()))
        log.info("node %s: Kq-1 at %s, Kx on port %d, ETSI 014 on port %d, management on "
                 "port %d", self.node, self.kq1.path, self.kx.port, self.etsi.port,
                 self.management_port)

    async def stop(self) -> None:
        """Stops the connected QKD modules (Kq-2; they resume when the key manager is back),
        then everything else, and closes the key store."""
        await self.stop_modules()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(COMPLETION_FLUSH_S):
                await self.agent.flush_completions()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._token is not None:
            remove_token(self.token_file, self._token)
            self._token = None
        with contextlib.suppress(Exception):
            await self.etsi.stop()
        await self.kx.stop()
        await self.kq1.stop()
        await self.vendor.close()
        self.store.close()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until ``stop`` is set (or the task is cancelled)."""
        await self.start()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await self.stop()

    async def _sync_loop(self) -> None:
        while True:
            # Relay completions still owed to their origins (a restart, an origin that did
            # not answer): sent again, so both ends of every relay come to agree.
            with contextlib.suppress(KeyManagerError, OSError):
                await self.agent.resume_completions()
            for peer in self.agent.adjacent:
                try:
                    n = await self.agent.sync_pool(peer)
                except (KeyManagerError, OSError) as exc:
                    log.debug("pool sync with %s: %s", peer, exc)
                    continue
                if n:
                    self.manager.counters["link_keys_activated"] += n
                    log.info("pool %s: %d keys activated", peer, n)
                    # new key changes the routes: tell the network now, not at the next tick
                    self.kx.flood(self.agent.advertisement(), exclude=None)
            await asyncio.sleep(SYNC_EVERY_S)

    async def stop_modules(self) -> None:
        """Kq-2: asks every connected module to stop (not held: it is asked to start again
        when it reconnects to this key manager after its restart). From here on, a module that
        connects is asked to stop too."""
        self.kq1.stopping = True
        for name in list(self.kq1.sessions):
            try:
                await self.kq1.stop_module(name, hold=False, timeout_s=MODULE_STATUS_TIMEOUT_S)
            except (KeyManagerError, OSError) as exc:  # OSError includes TimeoutError
                log.info("module %s not told to stop: %s", name, exc or type(exc).__name__)

    async def _module_loop(self) -> None:
        async def ask(name: str) -> None:
            try:
                await self.kq1.module_status(name, MODULE_STATUS_TIMEOUT_S)
            except (KeyManagerError, OSError, TimeoutError) as exc:
                log.debug("module %s: no status: %s", name, exc)

        while True:
            await asyncio.gather(*(ask(name) for name in list(self.kq1.sessions)))
            await asyncio.sleep(MODULE_STATUS_EVERY_S)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            n = await asyncio.to_thread(self.store.expire, time.time())
            if n:
                log.info("%d expired keys destroyed", n)

    # --- management -------------------------------------------------------------------------

    def _rates(self) -> dict[str, float]:
        """Per-second rates of the counters over the last :data:`RATE_WINDOW_S`."""
        now = time.monotonic()
        counters = dict(self.manager.counters)
        self._samples.append((now, counters))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        t0, c0 = self._samples[0]
        span = now - t0
        if span <= 0:
            return {name: 0.0 for name in counters}
        return {name: round((value - c0.get(name, 0)) / span, 3)
                for name, value in counters.items()}

    def _alarms(self, pools: dict[str, dict[str, int]], peers: dict[str, bool]
                ) -> list[dict[str, str]]:
        km = self.config.key_manager
        alarms = []
        for peer, up in peers.items():
            if not up:
                alarms.append({"kind": "peer_down", "what": peer,
                               "text": f"no Kx connection to {peer}"})
        low_bits = LOW_WATER_KEYS * km.key_size_bits
        for pool, level in pools.items():
            if pool in peers and level["available_bits"] < low_bits:
                alarms.append({"kind": "pool_low", "what": pool,
                               "text": f"{level['available_bits']} bits available for {pool} "
                                       f"(< {LOW_WATER_KEYS} keys of {km.key_size_bits} bits)"})
            live = level["available_keys"] + level["pre_activation_keys"]
            if live >= FULL_FRACTION * km.max_key_count:
                alarms.append({"kind": "store_full", "what": pool,
                               "text": f"pool {pool} holds {live} of max_key_count "
                                       f"{km.max_key_count}"})
        abort_at = {link.name: link.distillation.qber_abort for link in self.config.links}
        for name, report in self._modules().items():
            qber, link = report.get("qber", report.get("key_qber")), report.get("link")
            limit = abort_at.get(str(link), DEFAULT_QBER_ALARM)
            if isinstance(qber, int | float) and qber > limit:
                alarms.append({"kind": "qber_high", "what": name,
                               "text": f"module {name}: QBER {qber:.4f} above {limit}"})
        return alarms

    def _modules(self) -> dict[str, dict[str, Any]]:
        """Each QKD module known over Kq-1/Kq-2 or held stopped (also one not connected since
        a restart): whether it is connected and held stopped, the
        QBER of its last key (key metadata), its last status report and its age."""
        kq1 = self.kq1
        now = time.monotonic()
        out: dict[str, dict[str, Any]] = {}
        for name in sorted({*kq1.sessions, *kq1.last_status, *kq1.key_qber, *kq1.held}):
            entry: dict[str, Any] = {"connected": name in kq1.sessions,
                                     "held_stopped": name in kq1.held}
            if name in kq1.links:
                entry["link"] = kq1.links[name]
            if name in kq1.key_qber:
                entry["key_qber"] = kq1.key_qber[name]
            if name in kq1.status_time:
                entry["status_age_s"] = round(now - kq1.status_time[name], 1)
            entry.update(kq1.last_status.get(name, {}))
            out[name] = entry
        return out

    def status(self) -> dict[str, Any]:
        """The node's state as JSON-ready data (no key material)."""
        modules = self._modules()
        levels = self.store.levels()
        pools = {pool: {"available_bits": lv.available_bytes * 8,
                        "available_keys": lv.available_keys,
                        "pre_activation_keys": lv.pre_activation_keys,
                        "reserved_keys": lv.reserved_keys} for pool, lv in levels.items()}
        peers = {peer: self.kx.peer_up(peer) for peer in self.agent.adjacent}
        key_bits = self.config.key_manager.key_size_bits
        saes = self.manager.sae_nodes
        pairs = {f"{m}->{s}": {"pool": saes[s],
                               "available_keys": pools.get(saes[s], {}).get(
                                   "available_bits", 0) // key_bits}
                 for m in sorted(saes) if saes[m] == self.node
                 for s in sorted(saes) if saes[s] != self.node}
        return {"node": self.node, "uptime_s": round(time.time() - self.started_at, 1),
                "pools": pools, "sae_pairs": pairs, "peers": peers,
                "modules": modules,
                "modules_connected": sorted(self.kq1.sessions),
                "counters": dict(self.manager.counters),
                "rates_per_s": self._rates(),
                "alarms": self._alarms(pools, peers),
                "ports": {"kx": self.kx.port, "etsi014": self.etsi.port,
                          "management": self.management_port},
                "kq1_socket": str(self.kq1.path)}

    async def _status(self, request: web.Request) -> web.Response:
        del request
        return web.json_response(self.status())

    async def _module_control(self, request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        try:
            if action == "stop":
                await self.kq1.stop_module(name, timeout_s=MODULE_STATUS_TIMEOUT_S)
                told = True
            else:
                told = await self.kq1.start_module(name, timeout_s=MODULE_STATUS_TIMEOUT_S)
        except KeyManagerError as exc:
            await self._persist_hold(name)
            return web.json_response({"message": str(exc)}, status=404)
        except OSError as exc:  # a reset connection, or TimeoutError: the module did not read
            await self._persist_hold(name)
            log.info("module %s: %s request failed: %r", name, action, exc)
            return web.json_response(
                {"message": f"module {name!r}: module connection lost ({type(exc).__name__})"},
                status=503)
        await self._persist_hold(name)
        if not told:
            return web.json_response(
                {"module": name, "requested": action,
                 "message": "not connected: no longer held stopped, it starts when it connects"},
                status=202)
        return web.json_response({"module": name, "requested": action})

    async def _persist_hold(self, name: str) -> None:
        """Makes the key store's record of ``name``'s hold match the Kq-2 server's (before the
        answer: a 200 to a stop means it stays stopped across a restart)."""
        await asyncio.to_thread(self.store.hold_module, name, name in self.kq1.held, time.time())

    async def _metrics(self, request: web.Request) -> web.Response:
        del request
        return web.Response(body=generate_latest(self._registry),
                            content_type="text/plain", charset="utf-8")

