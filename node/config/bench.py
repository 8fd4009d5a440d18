"""The simulated bench a configuration describes: created, or reached through its service.

:func:`install_bench` is what an entry point calls once it has the configuration, before
opening ``sim://`` instruments: it registers the bench under its name (a bench in this
process, or a client of the configured bench service) and declares every ``sim://``
instrument of the file with its driver. ``python -m qkdnode.node.config.bench FILE`` hosts the
bench of FILE as a service for other processes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from qkdnode.drivers.sim.bench import Bench, BenchHandle, create_bench
from qkdnode.drivers.sim.devices import EMULATORS
from qkdnode.drivers.sim.service import BenchService, connect_bench

from . import load_config
from .schema import NodeConfig

__all__ = ["install_bench", "main", "serve_bench"]


def _declare(config: NodeConfig, bench: BenchHandle) -> None:
    prefix = f"sim://{config.bench.name}/"
    for instrument in config.instruments:
        resource = instrument.resource or ""
        if resource.startswith(prefix) and instrument.driver in EMULATORS:
            name = resource[len(prefix):].split("?", 1)[0]
            bench.declare(name, instrument.driver)


def install_bench(config: NodeConfig, *, replace: bool = False) -> BenchHandle:
    """Registers the configured bench (or a client of its service) and its instruments.

    Raises:
        ValueError: a bench of that name is registered already and ``replace`` is false.
    """
    section = config.bench
    bench: BenchHandle
    if section.service is not None:
        bench = connect_bench(section.name, section.service, replace=replace)
    else:
        bench = create_bench(section.name, section.params(), section.seed, replace=replace)
    _declare(config, bench)
    return bench


def serve_bench(config: NodeConfig, address: str | None = None) -> BenchService:
    """Hosts the configured bench at ``address`` (default: ``[bench] service``)."""
    section = config.bench
    where = address or section.service
    if where is None:
        raise ValueError("no address: give one, or [bench] service in the configuration")
    bench = Bench(section.name, section.params(), section.seed)
    _declare(config, bench)
    return BenchService(bench, where)


def main(argv: list[str] | None = None) -> int:
    """Hosts the bench of a node configuration until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m qkdnode.node.config.bench",
        description="Host the simulated bench of a node configuration for other processes.")
    parser.add_argument("file", metavar="FILE", help="node configuration (TOML) with [bench]")
    parser.add_argument("--listen", metavar="ADDRESS",
                        help="HOST:PORT or unix:PATH (default: [bench] service)")
    args = parser.parse_args(argv)
    service = serve_bench(load_config(args.file), args.listen)
    print(f"bench {service.bench.name!r} served at {service.address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
