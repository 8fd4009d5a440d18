"""The simulated optical bench: an event-level physics engine of a decoy-state BB84 link.

The simulated instruments (VISA, serial and C-mock front ends) sit on
:class:`SimulatedLink`; the node never imports this package except through them. A named
:class:`Bench` holds one link and its instruments' state; importing this package registers
the ``sim://BENCH/INSTRUMENT`` transport (see :mod:`qkdnode.drivers.sim.transport`).

Example:
    >>> from qkdnode.drivers.sim import BenchParams, FibreParams, SimulatedLink
    >>> link = SimulatedLink(BenchParams(fibre=FibreParams(length_km=25.0)), seed=7)
    >>> link.load_frame(basis, bit, intensity)
    >>> batch = link.run(n_slots=10**8)
    >>> batch.timestamps_ps, batch.channels, batch.lost_events
"""

from __future__ import annotations

from ..transport.factory import register_scheme, registered_schemes
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

if "sim" not in registered_schemes():
    from .transport import open_sim_transport

    register_scheme("sim", open_sim_transport)
