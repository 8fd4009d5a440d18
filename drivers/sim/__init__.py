"""The simulated optical bench: an event-level physics engine of a decoy-state BB84 link.

The simulated instruments (VISA, serial and C-mock front ends) sit on
:class:`SimulatedLink`; the node never imports this package except through them. A named
:class:`Bench` holds one link and its instruments' state; importing this package registers
the ``sim://BENCH/INSTRUMENT`` transport (see :mod:`qkdnode.drivers.sim.transport`).

The names below load on first use, so that reading the parameters (a configuration check)
does not compile the engine's kernels.

Example:
    >>> from qkdnode.drivers.sim import BenchParams, FibreParams, SimulatedLink
    >>> link = SimulatedLink(BenchParams(fibre=FibreParams(length_km=25.0)), seed=7)
    >>> link.load_frame(basis, bit, intensity)
    >>> batch = link.run(n_slots=10**8)
    >>> batch.timestamps_ps, batch.channels, batch.lost_events
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..resource import ResourceUrl
from ..transport import Transport
from ..transport.factory import TransportOptions, register_scheme, registered_schemes

if TYPE_CHECKING:
    from .bench import Bench, create_bench, get_bench, register_bench, remove_bench
    from .link import Origin, SimulatedLink, TagBatch, TagTruth
    from .params import (
        BenchParams,
        DetectorParams,
        FibreParams,
        ReceiverParams,
        SourceParams,
        TaggerParams,
    )

__all__ = [
    "Bench",
    "BenchParams",
    "DetectorParams",
    "FibreParams",
    "Origin",
    "ReceiverParams",
    "SimulatedLink",
    "SourceParams",
    "TagBatch",
    "TagTruth",
    "TaggerParams",
    "create_bench",
    "get_bench",
    "register_bench",
    "remove_bench",
]

_WHERE = {
    **dict.fromkeys(("Bench", "create_bench", "get_bench", "register_bench", "remove_bench"),
                    ".bench"),
    **dict.fromkeys(("Origin", "SimulatedLink", "TagBatch", "TagTruth"), ".link"),
    **dict.fromkeys(("BenchParams", "DetectorParams", "FibreParams", "ReceiverParams",
                     "SourceParams", "TaggerParams"), ".params"),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def _open_sim(url: ResourceUrl, options: TransportOptions) -> Transport:
    from .transport import open_sim_transport

    return open_sim_transport(url, options)


if "sim" not in registered_schemes():
    register_scheme("sim", _open_sim)
