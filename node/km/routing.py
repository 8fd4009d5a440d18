"""The node's view of the network, for relay routes: link states and weighted shortest paths.

Each key manager floods :class:`~qkdnode.node.protocol.kx.LinkStateAdvertised` messages (its
links and the key available on each, in bytes); :class:`LinkStateDb` keeps the newest per node.
:meth:`LinkStateDb.route` is Dijkstra over the links that have enough key for the request, with
a weight that grows as a link's key runs low (``1 + need / available``), so routes spread over
the links with the most key, as Y.3802's distributed controller intends. A hop that failed is
excluded and the next best route taken.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["LinkStateDb", "NoRoute"]


class NoRoute(LookupError):
    """No chain of links with enough key joins the two nodes."""


@dataclass
class LinkStateDb:
    """Newest link state per node. ``links[a][b]`` = key bytes ``a`` reports on its link to b."""

    links: dict[str, dict[str, int]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def update(self, origin: str, seq: int, links: Iterable[tuple[str, int]]) -> bool:
        """Takes an advertisement; False if it is not newer than what is known (drop it)."""
        if seq <= self.seqs.get(origin, -1):
            return False
        self.seqs[origin] = seq
        self.links[origin] = dict(links)
        return True

    def set_local(self, node: str, links: Mapping[str, int]) -> None:
        """This node's own links (always current)."""
        self.links[node] = dict(links)

    def _available(self, a: str, b: str) -> int:
        # Both ends report the same pool; trust the smaller figure when they differ.
        here = self.links.get(a, {}).get(b)
        there = self.links.get(b, {}).get(a)
        known = [x for x in (here, there) if x is not None]
        return min(known) if known else 0

    def route(self, source: str, destination: str, need_bytes: int,
              exclude: Iterable[tuple[str, str]] = ()) -> list[str]:
        """The best route from ``source`` to ``destination`` (both included).

        Args:
            need_bytes: key each link must have available.
            exclude: links (either direction) not to use, e.g. a hop that just failed.

        Raises:
            NoRoute: no usable route.
        """
        banned = {frozenset(e) for e in exclude}
        best: dict[str, float] = {source: 0.0}
        prev: dict[str, str] = {}
        heap: list[tuple[float, str]] = [(0.0, source)]
        while heap:
            cost, node = heapq.heappop(heap)
            if node == destination:
                path = [node]
                while path[-1] != source:
                    path.append(prev[path[-1]])
                return path[::-1]
            if cost > best.get(node, float("inf")):
                continue
            for nxt in self.links.get(node, {}):
                if frozenset((node, nxt)) in banned:
                    continue
                avail = self._available(node, nxt)
                if avail < need_bytes:
                    continue
                c = cost + 1.0 + need_bytes / avail
                if c < best.get(nxt, float("inf")):
                    best[nxt] = c
                    prev[nxt] = node
                    heapq.heappush(heap, (c, nxt))
        raise NoRoute(f"no route from {source!r} to {destination!r} with {need_bytes} bytes of "
                      "key on every link")
