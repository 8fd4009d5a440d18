"""Key managers and QKD modules in one process: what ``qkdnode run`` and ``qkdnode demo`` do.

:func:`node_daemons` makes one key manager per node named in the configuration files (a node
may appear in several files, one per link end; its ``[key_manager]`` must then be the same);
:func:`check_link_ends` refuses a link of which only one end is given (when its instruments are on
a simulated bench in this process, the other end must run here too); :func:`sim_benches` and
:func:`bench_frames` set up the simulated benches; :func:`run_hosted` runs the modules until
asked to stop, then stops them the way a node stops: the key managers ask their modules to
stop over Kq-2, the blocks in flight end, their keys reach the key managers, and only then do
the key managers stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qkdnode.drivers.sim.bench import Bench, get_bench, remove_bench

from ..config.schema import LinkConfig, NodeConfig
from ..errors import ConfigError
from .launch import SIM_READ_SLOTS, LinkEnd, run_ends
from .sim import BenchFrames

if TYPE_CHECKING:
    from ..km.daemon import NodeDaemon

__all__ = ["STOP_GRACE_S", "bench_frames", "check_link_ends", "node_daemons", "run_hosted",
           "sim_benches"]

log = logging.getLogger(__name__)

# At a stop, seconds the modules get to end the blocks in flight (a block's decoding takes a few
# seconds on a loaded core) and then for their keys to reach the key manager; past that, the
# block is abandoned (no key from it) and unacknowledged keys are dropped.
STOP_GRACE_S = 30.0
DRAIN_AT_STOP_S = 10.0
# How often the stop checks whether the blocks in flight have ended.
IDLE_POLL_S = 0.1


@contextlib.contextmanager
def sim_benches(configs: Sequence[NodeConfig]) -> Iterator[list[str]]:
    """Installs the simulated benches of ``configs`` not registered in this process yet (the
    first file naming a bench creates it); removes them at exit. Yields their names."""
    from ..config.bench import install_bench

    installed: list[str] = []
    try:
        for config in configs:
            try:
                get_bench(config.bench.name)
            except ValueError:
                install_bench(config)
                installed.append(config.bench.name)
        yield installed
    finally:
        for name in installed:
            remove_bench(name)


def bench_frames() -> Callable[[Bench, LinkConfig], BenchFrames]:
    """The ``frames_of`` of :func:`.launch.build_ends`: one :class:`.sim.BenchFrames` per
    bench and link, shared by the link's two ends."""
    frames: dict[tuple[str, str], BenchFrames] = {}

    def frames_of(bench: Bench, link: LinkConfig) -> BenchFrames:
        key = (bench.name, link.name)
        if key not in frames:
            frames[key] = BenchFrames(bench, link.block_slots,
                                      min(link.block_slots, SIM_READ_SLOTS))
        return frames[key]

    return frames_of


def check_link_ends(configs: Sequence[tuple[Path, NodeConfig]]) -> None:
    """Refuses a link of which this run holds one end only.

    Raises:
        ConfigError: naming the link, the file of the end given, and what to add.
    """
    ends: dict[str, dict[str, tuple[Path, NodeConfig]]] = {}
    for path, config in configs:
        for link in config.links:
            roles = ends.setdefault(link.name, {})
            if link.role in roles:
                other = roles[link.role][0]
                raise ConfigError(str(path), f"links.{link.name}", None,
                                  f"link {link.name!r} has a {link.role} end in {other} too")
            roles[link.role] = (path, config)
    for name, roles in ends.items():
        if len(roles) == 2:
            continue
        (role, (path, config)), = roles.items()
        link = next(link for link in config.links if link.name == name)
        if not _in_process_bench(config, link):
            continue  # the other end runs elsewhere, on its own instruments or the service
        missing = "receiver" if role == "transmitter" else "transmitter"
        raise ConfigError(str(path), f"links.{name}", None,
                          f"only the {role} end of link {name!r} is in this run: its "
                          f"instruments are on the simulated bench of this process, where the "
                          f"other end must run too; give the {missing}'s file too (node "
                          f"{link.peer!r}: --config PEER.toml), or host the bench with 'qkdnode "
                          f"sim serve' ([bench] service) to run the ends in two processes")


def _in_process_bench(config: NodeConfig, link: LinkConfig) -> bool:
    """Whether a link end's instruments are all on a simulated bench of this process."""
    if config.bench.service is not None:
        return False
    by_name = {inst.name: inst for inst in config.instruments}
    return all((by_name[n].resource or "sim://").startswith("sim://")
               for n in link.instruments if n in by_name)


def node_daemons(configs: Sequence[tuple[Path, NodeConfig]]) -> dict[str, NodeDaemon]:
    """One key manager per node of ``configs`` (not started).

    Raises:
        ConfigError: a node whose files differ in ``[key_manager]`` or ``[[peers]]``, or a key
            manager that cannot run (no TLS material).
    """
    from ..km.daemon import NodeDaemon

    first: dict[str, tuple[Path, NodeConfig]] = {}
    for path, config in configs:
        name = config.node.name
        if name not in first:
            first[name] = (path, config)
            continue
        seen_path, seen = first[name]
        for section, a, b in (("key_manager", seen.key_manager, config.key_manager),
                              ("peers", seen.peers, config.peers)):
            if a != b:
                raise ConfigError(str(path), section, None,
                                  f"node {name!r} has another {section} in {seen_path}: one "
                                  f"node, one key manager")
    # Each key manager knows every link of its node (its alarms use each link's qber_abort).
    links = {name: tuple(link for _, c in configs if c.node.name == name for link in c.links)
             for name in first}
    return {name: NodeDaemon(dataclasses.replace(config, links=links[name]), str(path))
            for name, (path, config) in first.items()}


async def _blocks_ended(ends: Sequence[LinkEnd], timeout_s: float,
                        hurry: asyncio.Event | None = None) -> bool:
    """Waits until no end has a block in flight (twice in a row: a block may start between
    two looks); False if that did not happen within ``timeout_s`` or ``hurry`` was set."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        quiet = quiet + 1 if all(end.module.idle for end in ends) else 0
        if quiet >= 2:
            return True
        await asyncio.sleep(IDLE_POLL_S)
    return False


async def run_hosted(daemons: dict[str, NodeDaemon], ends: list[LinkEnd],
                     stop: asyncio.Event, show: Callable[[list[LinkEnd]], None],
                     interval_s: float, *, grace_s: float = STOP_GRACE_S,
                     say: Callable[[str], None] = log.info,
                     hurry: asyncio.Event | None = None) -> None:
    """Runs ``ends`` with their (started) key managers ``daemons`` until ``stop`` is set, then
    stops the modules first (the key managers ask them over Kq-2), lets their blocks in flight
    end and their keys reach the key managers (``hurry``, once set, cuts that wait short). The
    caller stops the key managers after.

    Raises:
        whatever ended a module (an instrument or configuration failure).
    """
    modules = asyncio.create_task(run_ends(ends, None, show, interval_s, DRAIN_AT_STOP_S))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([modules, stopping], return_when=asyncio.FIRST_COMPLETED)
        if modules.done():
            modules.result()  # a module that ended by itself failed: say why
            return
        say("stopping: the key managers stop their QKD modules (Kq-2); waiting up to "
            f"{grace_s:g} s for the blocks in flight"
            + ("" if hurry is None else " (a second Ctrl-C or SIGTERM: at once)"))
        for daemon in daemons.values():
            await daemon.stop_modules()
        # A block Bob announced just before his stop may reach Alice after hers: she carries
        # it out rather than holding it for a start that will not come.
        for end in ends:
            end.module.finish_announced()
        if not await _blocks_ended(ends, grace_s, hurry):
            say(f"blocks still in flight after {grace_s:g} s are abandoned (no key from them)")
        try:
            async with asyncio.timeout(DRAIN_AT_STOP_S):
                await asyncio.gather(*(end.outbox.drain() for end in ends))
        except TimeoutError:
            say("some keys were not acknowledged by the key manager in time: dropped")
    finally:
        stopping.cancel()
        modules.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await modules
