"""Construction of the shipped LDPC family: quasi-cyclic progressive edge growth (QC-PEG).

Each code is the ``z``-fold circulant lift of a base graph with ``nb`` variables and ``mb`` checks.
The edges are placed one at a time as in PEG (Hu, Eleftheriou, Arnold, IEEE Trans. IT 51(1), 2005),
but the breadth-first search that finds the checks farthest from the current variable runs in the
*lifted* graph, from copy 0 of the base variable; the chosen lifted check ``(i, u)`` fixes both the
base check ``i`` and the circulant shift ``u``. Because all ``z`` copies of a base variable see the
same graph, one search per base edge places ``z`` edges at once, so a 64 000-bit code takes a few
seconds, and the code ships as its base graph (a few kilobytes).

Variable-degree distributions come from ``distributions.py`` (edge-perspective, with sources);
check degrees are kept concentrated (every base check within one of the mean).

Rebuild the shipped family with::

    python -m qkdnode.dsp.ldpc.construct --out dsp/codes [--evaluate]

and measure it (``--no-build --evaluate``) with the default decoder of
:mod:`qkdnode.dsp.ldpc.decoder` (layered sum-product; 50 iterations, 100 frames per point): the
largest QBER on a grid of efficiency steps of 0.01 at which at most 1 % of frames fail, and the
efficiency ``f = (1 - R) / h(QBER)`` there, without puncturing or shortening. Measured 2026-11-22:

=====  ======  =====  ============  =====  ======  =====  ============  =====
n      rate    girth  QBER          f      n       girth  QBER          f
=====  ======  =====  ============  =====  ======  =====  ============  =====
64000  0.50    6      9.42 %        1.11   16000   6      9.18 %        1.13
64000  0.55    8      8.20 %        1.10   16000   6      7.79 %        1.14
64000  0.60    6      6.77 %        1.12   16000   6      6.37 %        1.17
64000  0.65    6      5.63 %        1.12   16000   6      5.18 %        1.19
64000  0.70    6      4.52 %        1.13   16000   6      4.22 %        1.19
64000  0.75    6      3.51 %        1.14   16000   6      3.28 %        1.20
64000  0.80    6      2.63 %        1.14   16000   6      2.41 %        1.22
64000  0.85    6      1.77 %        1.17   16000   6      1.58 %        1.28
64000  0.90    6      0.98 %        1.26   16000   4      0.91 %        1.34
64000  0.95    6      0.34 %        1.51   16000   4      (none)        > 1.6
=====  ======  =====  ============  =====  ======  =====  ============  =====

(The rate-0.95 rows are those of the code replaced on 2026-11-22 by one built from the project's
own design, ``distributions.py`` / :mod:`qkdnode.dsp.ldpc.design`. ``--evaluate --frames 40``
gives the new ``n64000_r095`` 0.36 %, f = 1.45. With the whole syndrome and no shortening, 200
sum-product iterations, the old one decoded 4/4 frames at f = 1.33 and 1/4 at f = 1.20, the new
one 2/4 at f = 1.20; in ``reconcile_local`` the new one keeps every frame from QBER 0.3 to 0.7 %
at f = 1.28-1.42, see ``codes.VALIDATED_QBER``.)

The high rates are the weak end: at 0.90 and 0.95 the frames are short in checks (6400 and 3200
at n = 64000) and the check degrees high (about 50 and 100). Hence the 192 000-bit codes at rates
0.85 and 0.90 (``z = 192``, about 8 minutes each to build on a loaded 2-core machine): at QBER 2 %
with the sum-product decoder, 8 frames each, ``n192000_r085`` failed 2/8 frames at f = 1.10 and
5/8 at 1.08 where ``n64000_r085`` failed 4/8 and 7/8 (measured 2026-11-22, not by ``--evaluate``).

Two codes come from the project's rate-0.91 design (``distributions.py``; degrees up to 30,
density-evolution threshold f = 1.088): ``n192000_r091`` (QBER 1 %: f = 1.11-1.14 in
``reconcile_local`` where ``n192000_r090`` gave 1.16-1.17) and, at rate 0.92, ``n16000_r092``
for small blocks at QBER 0.5-1.1 % (see ``codes.VALIDATED_QBER``). Their seeds are fixed in
``_ADDED_SEEDS``; they are built only at those lifts.

``n384000_r085`` is the EL2009 rate-0.85 distribution at ``z = 384`` (seed in ``_ADDED_SEEDS``;
153 s of CPU to build, 2026-11-22), for QBER 1.75-2 %: at 2 % cold 60-iteration decodes need
f = 1.088 on average where ``n192000_r085`` needs 1.0925 (see ``codes.VALIDATED_QBER``).
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from .distributions import DISTRIBUTIONS

__all__ = [
    "FAMILY",
    "build_code",
    "check_degree_cap",
    "evaluate",
    "girth_reference",
    "load_distributions",
    "main",
    "node_degrees",
    "qc_girth",
    "qc_peg",
    "qc_peg_reference",
    "shipped_builds",
]

# Distance given to lifted checks the search did not reach: they are preferred over any reached
# check (connecting to them closes no cycle at all).
_UNREACHED = np.int32(1 << 30)


def load_distributions() -> dict[str, Any]:
    """The degree distributions of ``distributions.py`` (a deep copy, safe to modify).

    Returns:
        ``["rates"][key]["lambda"]`` maps degree (as a string) to the fraction of edges on
        variables of that degree; ``["sources"]`` cites where each came from.
    """
    return copy.deepcopy(DISTRIBUTIONS)


def node_degrees(
    edge_lambda: dict[int, float], nb: int, max_degree2: int | None = None
) -> NDArray[np.int32]:
    """Turns an edge-perspective distribution into ``nb`` variable degrees, sorted ascending.

    Node fractions are ``(lambda_d / d) / sum(lambda_k / k)``; counts are rounded by largest
    remainder so that they sum to ``nb`` exactly. Degree-2 variables beyond ``max_degree2`` become
    degree 3: more than ``m - 1`` of them must close cycles among themselves, and such a cycle is
    a low-weight codeword (an error floor).

    Args:
        edge_lambda: Degree -> fraction of edges (normalised here).
        nb: Number of base variables.
        max_degree2: Most degree-2 variables allowed, or ``None`` for no limit.

    Returns:
        ``int32[nb]`` of degrees, ascending.

    Raises:
        ValueError: A degree is below 2, a fraction negative, or ``nb`` not positive.
    """
    if nb <= 0:
        raise ValueError(f"nb must be positive, got {nb}")
    if any(d < 2 for d in edge_lambda) or any(f < 0 for f in edge_lambda.values()):
        raise ValueError("edge_lambda: degrees must be >= 2 and fractions >= 0")
    degrees = sorted(edge_lambda)
    weights = np.array([edge_lambda[d] / d for d in degrees], dtype=np.float64)
    exact = weights / weights.sum() * nb
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: nb - int(counts.sum())]] += 1
    result = np.repeat(np.array(degrees, dtype=np.int32), counts).astype(np.int32)
    if max_degree2 is not None:
        excess = np.nonzero(result == 2)[0][max(max_degree2, 0) :]
        result[excess] = 3
        result.sort()
    return result


def check_degree_cap(var_deg: NDArray[np.int32], mb: int) -> int:
    """Largest base-check degree allowed: the ceiling of the mean, so degrees stay concentrated."""
    return math.ceil(int(var_deg.sum()) / mb)


def _validate(var_deg: NDArray[np.int32], mb: int, z: int, rand: NDArray[np.float64]) -> None:
    if var_deg.dtype != np.int32 or var_deg.ndim != 1:
        raise TypeError("var_deg must be a 1-d int32 array")
    if rand.dtype != np.float64 or rand.shape != (int(var_deg.sum()),):
        raise TypeError("rand must be float64 with one entry per base edge")
    if mb <= 0 or z <= 0:
        raise ValueError(f"mb and z must be positive, got mb={mb}, z={z}")
    if var_deg.size and (var_deg.min() < 1 or var_deg.max() > mb):
        raise ValueError(f"var_deg must lie in 1..mb={mb}")


@numba.njit(cache=True, nogil=True)
def _qc_peg_kernel(
    var_deg: NDArray[np.int32], mb: int, z: int, cap: int, far: int, rand: NDArray[np.float64],
    unreached: np.int32,
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:  # pragma: no cover
    nb = var_deg.shape[0]
    n_edges = 0
    for j in range(nb):
        n_edges += var_deg[j]
    dmax = 1
    for j in range(nb):
        dmax = max(dmax, var_deg[j])
    rows = np.empty(n_edges, dtype=np.int32)
    cols = np.empty(n_edges, dtype=np.int32)
    shifts = np.empty(n_edges, dtype=np.int32)
    v_chk = np.empty((nb, dmax), dtype=np.int32)
    v_sh = np.empty((nb, dmax), dtype=np.int32)
    v_cnt = np.zeros(nb, dtype=np.int32)
    c_var = np.empty((mb, nb), dtype=np.int32)
    c_sh = np.empty((mb, nb), dtype=np.int32)
    c_cnt = np.zeros(mb, dtype=np.int32)
    dist = np.empty(mb * z, dtype=np.int32)
    v_seen = np.zeros(nb * z, dtype=np.int32)
    v_queue = np.empty(nb * z, dtype=np.int32)
    c_queue = np.empty(mb * z, dtype=np.int32)
    adjacent = np.zeros(mb, dtype=np.uint8)
    stamp = 0
    edge = 0
    for j in range(nb):
        for _ in range(var_deg[j]):
            # Breadth-first search in the lifted graph from variable copy (j, 0).
            dist[:] = unreached
            stamp += 1
            v_seen[j * z] = stamp
            v_queue[0] = j * z
            v_len = 1
            level = 0
            while v_len > 0:
                c_len = 0
                for q in range(v_len):
                    var = v_queue[q]
                    b = var // z
                    t = var % z
                    for k in range(v_cnt[b]):
                        chk = v_chk[b, k] * z + (t + v_sh[b, k]) % z
                        if dist[chk] == unreached:
                            dist[chk] = level
                            c_queue[c_len] = chk
                            c_len += 1
                v_len = 0
                for q in range(c_len):
                    chk = c_queue[q]
                    i = chk // z
                    u = chk % z
                    for k in range(c_cnt[i]):
                        var = c_var[i, k] * z + (u - c_sh[i, k] + z) % z
                        if v_seen[var] != stamp:
                            v_seen[var] = stamp
                            v_queue[v_len] = var
                            v_len += 1
                level += 1
            # Choose: base check not yet adjacent to j; at distance >= far if possible; under
            # the degree cap; farthest; lowest degree; ties broken by the edge's random number.
            for k in range(v_cnt[j]):
                adjacent[v_chk[j, k]] = 1
            best_free = -1
            best_near = -1
            best_under = -1
            best_dist = -1
            best_deg = 0
            n_best = 0
            for i in range(mb):
                if adjacent[i]:
                    continue
                under = 1 if c_cnt[i] < cap else 0
                free = 1
                for u in range(z):
                    if dist[i * z + u] != unreached:
                        free = 0
                        break
                for u in range(z):
                    d = dist[i * z + u]
                    near = d if d < far else (far if d != unreached else far + 1)
                    better = False
                    same = False
                    if free != best_free:
                        better = free > best_free
                    elif near != best_near:
                        better = near > best_near
                    elif under != best_under:
                        better = under > best_under
                    elif d != best_dist:
                        better = d > best_dist
                    elif c_cnt[i] != best_deg:
                        better = c_cnt[i] < best_deg
                    else:
                        same = True
                    if better:
                        best_free = free
                        best_near = near
                        best_under = under
                        best_dist = d
                        best_deg = c_cnt[i]
                        n_best = 1
                    elif same:
                        n_best += 1
            pick = min(int(rand[edge] * n_best), n_best - 1)
            chosen_i = -1
            chosen_u = -1
            for i in range(mb):
                if adjacent[i] or chosen_i >= 0:
                    continue
                under = 1 if c_cnt[i] < cap else 0
                if under != best_under or c_cnt[i] != best_deg:
                    continue
                free = 1
                for u in range(z):
                    if dist[i * z + u] != unreached:
                        free = 0
                        break
                if free != best_free:
                    continue
                for u in range(z):
                    if dist[i * z + u] == best_dist:
                        if pick == 0:
                            chosen_i = i
                            chosen_u = u
                            break
                        pick -= 1
            for k in range(v_cnt[j]):
                adjacent[v_chk[j, k]] = 0
            rows[edge] = chosen_i
            cols[edge] = j
            shifts[edge] = chosen_u
            v_chk[j, v_cnt[j]] = chosen_i
            v_sh[j, v_cnt[j]] = chosen_u
            v_cnt[j] += 1
            c_var[chosen_i, c_cnt[chosen_i]] = j
            c_sh[chosen_i, c_cnt[chosen_i]] = chosen_u
            c_cnt[chosen_i] += 1
            edge += 1
    return rows, cols, shifts


def qc_peg(
    var_deg: NDArray[np.int32], mb: int, z: int, cap: int, far: int, rand: NDArray[np.float64]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
    """Places the base edges and circulant shifts of a QC-LDPC code by lifted-graph PEG.

    Base variables are processed in the given order, each edge in turn. The base check is chosen
    among those not yet adjacent to the variable, by these criteria in turn: no copy of the base
    check reached by the search from variable copy 0 (no new cycle in the base graph either, so
    none in any lift); the lifted check unreached (no new cycle), else its search level ``L`` up
    to ``far`` (a check at level ``L`` closes a cycle of length ``2L + 2``); a base degree below
    ``cap``; the full level; the lowest base degree; and last ``rand[edge]``. So new cycles are
    avoided, then cycles shorter than ``2 far + 2``, then check degrees kept concentrated, then
    PEG proper. Placing the degree-2 variables first with at most ``mb - 1`` of them, they form a
    forest, so no codeword is made of degree-2 variables alone.

    Args:
        var_deg: ``int32[nb]`` base-variable degrees (ascending order is the PEG convention).
        mb: Number of base checks.
        z: Lifting size.
        cap: Preferred maximum base-check degree (see :func:`check_degree_cap`).
        far: Search level from which a check is far enough to trade distance for balance.
        rand: ``float64[sum(var_deg)]`` uniform numbers in ``[0, 1)``, one per edge.

    Returns:
        ``(rows, cols, shifts)``, ``int32`` arrays with one entry per base edge.

    Raises:
        TypeError: Wrong dtypes or length of ``rand``.
        ValueError: Non-positive sizes or a degree outside ``1..mb``.
    """
    _validate(var_deg, mb, z, rand)
    rows, cols, shifts = _qc_peg_kernel(
        np.ascontiguousarray(var_deg), mb, z, cap, far, np.ascontiguousarray(rand), _UNREACHED
    )
    return rows, cols, shifts


def qc_peg_reference(
    var_deg: NDArray[np.int32], mb: int, z: int, cap: int, far: int, rand: NDArray[np.float64]
) -> tuple[NDArray[np.int32], NDArray[np.int32], NDArray[np.int32]]:
    """Plain-Python twin of :func:`qc_peg` (same choices, same tie-breaking)."""
    _validate(var_deg, mb, z, rand)
    inf = int(_UNREACHED)
    v_adj: list[list[tuple[int, int]]] = [[] for _ in range(len(var_deg))]
    c_adj: list[list[tuple[int, int]]] = [[] for _ in range(mb)]
    rows: list[int] = []
    cols: list[int] = []
    shifts: list[int] = []
    for j, degree in enumerate(var_deg.tolist()):
        for _ in range(degree):
            dist = {}
            seen = {(j, 0)}
            frontier = [(j, 0)]
            level = 0
            while frontier:
                checks = []
                for b, t in frontier:
                    for i, s in v_adj[b]:
                        key = (i, (t + s) % z)
                        if key not in dist:
                            dist[key] = level
                            checks.append(key)
                frontier = []
                for i, u in checks:
                    for b, s in c_adj[i]:
                        var = (b, (u - s) % z)
                        if var not in seen:
                            seen.add(var)
                            frontier.append(var)
                level += 1
            adjacent = {i for i, _ in v_adj[j]}
            candidates = []
            for i in range(mb):
                if i in adjacent:
                    continue
                under = 1 if len(c_adj[i]) < cap else 0
                free = int(all((i, u) not in dist for u in range(z)))
                for u in range(z):
                    d = dist.get((i, u), inf)
                    near = d if d < far else (far if d != inf else far + 1)
                    candidates.append((free, near, under, d, -len(c_adj[i]), i, u))
            best = max(c[:5] for c in candidates)
            ties = [c for c in candidates if c[:5] == best]
            edge = len(rows)
            pick = min(int(rand[edge] * len(ties)), len(ties) - 1)
            i, u = ties[pick][5:]
            rows.append(i)
            cols.append(j)
            shifts.append(u)
            v_adj[j].append((i, u))
            c_adj[i].append((j, u))
    as32 = np.int32
    return np.array(rows, as32), np.array(cols, as32), np.array(shifts, as32)


# Girth reported when the graph has no cycle at all.
NO_CYCLE = 0


@numba.njit(cache=True, nogil=True)
def _qc_girth_kernel(
    v_ptr: NDArray[np.int64], v_chk: NDArray[np.int32], v_sh: NDArray[np.int32],
    c_ptr: NDArray[np.int64], c_var: NDArray[np.int32], c_sh: NDArray[np.int32],
    nb: int, mb: int, z: int, no_cycle: int,
) -> int:  # pragma: no cover - compiled
    n_vars = nb * z
    n_nodes = (nb + mb) * z
    dist = np.full(n_nodes, -1, dtype=np.int32)
    parent = np.full(n_nodes, -1, dtype=np.int32)
    queue = np.empty(n_nodes, dtype=np.int32)
    best = 1 << 30
    # Every lifted variable is a cyclic shift of copy 0 of its base variable, so the searches
    # from the copies 0 see every cycle of the graph.
    for j in range(nb):
        root = j * z
        dist[root] = 0
        queue[0] = root
        head = 0
        tail = 1
        while head < tail:
            x = queue[head]
            head += 1
            if 2 * dist[x] + 1 >= best:
                break
            if x < n_vars:
                b = x // z
                t = x % z
                lo = v_ptr[b]
                hi = v_ptr[b + 1]
            else:
                b = (x - n_vars) // z
                t = (x - n_vars) % z
                lo = c_ptr[b]
                hi = c_ptr[b + 1]
            for k in range(lo, hi):
                if x < n_vars:
                    y = n_vars + v_chk[k] * z + (t + v_sh[k]) % z
                else:
                    y = c_var[k] * z + (t - c_sh[k] + z) % z
                if y == parent[x]:
                    continue
                if dist[y] < 0:
                    dist[y] = dist[x] + 1
                    parent[y] = x
                    queue[tail] = y
                    tail += 1
                else:
                    best = min(best, dist[x] + dist[y] + 1)
        for q in range(tail):
            dist[queue[q]] = -1
            parent[queue[q]] = -1
    return no_cycle if best == 1 << 30 else best


def _base_adjacency(
    keys: NDArray[np.int32], others: NDArray[np.int32], shifts: NDArray[np.int32], count: int
) -> tuple[NDArray[np.int64], NDArray[np.int32], NDArray[np.int32]]:
    order = np.argsort(keys, kind="stable")
    ptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=count), out=ptr[1:])
    return ptr, others[order].astype(np.int32), shifts[order].astype(np.int32)


def qc_girth(
    rows: NDArray[np.int32], cols: NDArray[np.int32], shifts: NDArray[np.int32],
    mb: int, nb: int, z: int,
) -> int:
    """Girth (length of the shortest cycle) of the lifted Tanner graph of a QC code.

    Args:
        rows: Base check of each base edge.
        cols: Base variable of each base edge.
        shifts: Circulant shift of each base edge.
        mb: Number of base checks.
        nb: Number of base variables.
        z: Lifting size.

    Returns:
        The girth (even, at least 4), or ``NO_CYCLE`` if the graph is a forest.
    """
    rows = np.asarray(rows, dtype=np.int32)
    cols = np.asarray(cols, dtype=np.int32)
    shifts = np.asarray(shifts, dtype=np.int32)
    v_ptr, v_chk, v_sh = _base_adjacency(cols, rows, shifts, nb)
    c_ptr, c_var, c_sh = _base_adjacency(rows, cols, shifts, mb)
    girth: int = _qc_girth_kernel(v_ptr, v_chk, v_sh, c_ptr, c_var, c_sh, nb, mb, z, NO_CYCLE)
    return girth


def girth_reference(checks: NDArray[np.integer], variables: NDArray[np.integer]) -> int:
    """Plain-Python girth of any Tanner graph given by its edges (check, variable).

    A breadth-first search from every variable; a non-tree edge met at depths ``a`` and ``b``
    closes a cycle of length ``a + b + 1``, and the minimum over all roots is the girth.

    Returns:
        The girth, or ``NO_CYCLE`` if the graph is a forest.
    """
    adjacency: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for c, v in zip(np.asarray(checks).tolist(), np.asarray(variables).tolist(), strict=True):
        adjacency.setdefault(("v", v), []).append(("c", c))
        adjacency.setdefault(("c", c), []).append(("v", v))
    best = math.inf
    for root in [node for node in adjacency if node[0] == "v"]:
        dist = {root: 0}
        parent: dict[tuple[str, int], tuple[str, int] | None] = {root: None}
        queue = deque([root])
        while queue:
            x = queue.popleft()
            for y in adjacency[x]:
                if y == parent[x]:
                    continue
                if y not in dist:
                    dist[y] = dist[x] + 1
                    parent[y] = x
                    queue.append(y)
                else:
                    best = min(best, dist[x] + dist[y] + 1)
    return NO_CYCLE if best == math.inf else int(best)



# The shipped family: (base variables nb, lifting size z, rate keys or None for all) per frame
# length n = nb * z. nb = 1000 resolves node-degree fractions to 0.1 % and makes every rate step of
# 0.05 (and 0.97) an integer number of base checks; z = 64 gives the default 64 000-bit frames
# (near-capacity, still fast to decode), z = 16 a 16 000-bit family for small blocks and quick
# tests, and z = 192 192 000-bit frames at the high rates (QBER 1-2 %), where the short frames
# fall furthest from capacity and the 64-bit verification tag weighs most; a longer lift also
# fills the decoder's vector loops better.
FAMILY: tuple[tuple[int, int, tuple[str, ...] | None], ...] = (
    (1000, 64, None),
    (1000, 16, None),
    (1000, 192, ("0.85", "0.90", "0.91")),
    (1000, 384, ("0.85",)),
)

# PEG trades distance for check-degree balance only beyond this search level: checks at level >= 3
# close cycles of length >= 8, so 4- and 6-cycles are avoided whenever possible, then degrees
# are balanced.
FAR_LEVEL = 3

# Seed of the shipped family; each code adds its index so that codes are independent.
DEFAULT_SEED = 20261122

# Seeds of the codes added after the first family was built: fixed here, so that adding a rate
# does not renumber (and so change) the codes already shipped. The first family's seeds are
# DEFAULT_SEED + 1 + (index of the code in FAMILY order, over the rate keys 0.50 ... 0.95).
_FIRST_FAMILY_KEYS = ("0.50", "0.55", "0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90",
                      "0.95")
# Keyed by (rate key, z); an added rate key is built only at the lifts listed here.
_ADDED_SEEDS: dict[tuple[str, int], int] = {
    ("0.91", 192): DEFAULT_SEED + 201,  # n192000_r091
    ("0.92", 16): DEFAULT_SEED + 202,  # n16000_r092
    ("0.85", 384): DEFAULT_SEED + 179,  # n384000_r085
}


def code_name(n: int, rate: float) -> str:
    """File stem of a shipped code, e.g. ``n64000_r080``."""
    return f"n{n}_r{round(rate * 100):03d}"


def shipped_builds() -> list[tuple[str, str, int, int, int]]:
    """The recipe of every shipped code: ``(name, rate_key, nb, z, seed)``."""
    keys = sorted(load_distributions()["rates"], key=float)
    builds: list[tuple[str, str, int, int, int]] = []
    index = 0
    for nb, z, rates in FAMILY:
        for key in keys if rates is None else sorted(rates, key=float):
            if (key, z) in _ADDED_SEEDS:
                seed = _ADDED_SEEDS[(key, z)]
            elif key in _FIRST_FAMILY_KEYS or rates is not None:
                index += 1
                seed = DEFAULT_SEED + index
            else:
                continue  # an added rate without a seed at this lift is not built there
            builds.append((code_name(nb * z, float(key)), key, nb, z, seed))
    return builds


def build_code(rate_key: str, nb: int, z: int, seed: int) -> dict[str, Any]:
    """Constructs one QC code from the distribution of ``rate_key`` in ``distributions.py``.

    Args:
        rate_key: Key of the rate in the file, e.g. ``"0.80"``.
        nb: Number of base variables.
        z: Lifting size.
        seed: Seed of the tie-breaking random numbers.

    Returns:
        The arrays and metadata stored in the code's ``.npz`` file.

    Raises:
        ValueError: The rate does not give an integer number of base checks.
    """
    entry = load_distributions()["rates"][rate_key]
    rate = float(rate_key)
    mb_exact = (1.0 - rate) * nb
    mb = round(mb_exact)
    if abs(mb - mb_exact) > 1e-9:
        raise ValueError(f"rate {rate_key} with nb={nb} gives a fractional number of checks")
    edge_lambda = {int(d): float(f) for d, f in entry["lambda"].items()}
    var_deg = node_degrees(edge_lambda, nb, max_degree2=mb - 1)
    cap = check_degree_cap(var_deg, mb)
    rand = np.random.default_rng(seed).random(int(var_deg.sum()))
    rows, cols, shifts = qc_peg(var_deg, mb, z, cap, FAR_LEVEL, rand)
    girth = qc_girth(rows, cols, shifts, mb, nb, z)
    return {
        "format": np.str_("qc"),
        "n": np.int64(nb * z),
        "m": np.int64(mb * z),
        "z": np.int64(z),
        "rows": rows.astype(np.int16),
        "cols": cols.astype(np.int16),
        "shifts": shifts.astype(np.int16),
        "girth": np.int64(girth),
        "seed": np.int64(seed),
        "distribution": np.str_(f"{rate_key}:{entry['source']}"),
    }


def _binary_entropy(p: float) -> float:
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def _inverse_entropy(h: float) -> float:
    lo, hi = 1e-9, 0.5
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binary_entropy(mid) < h:
            lo = mid
        else:
            hi = mid
    return lo


def _frame_errors(code: Any, qber: float, frames: int, iterations: int, seed: int) -> int:
    from .codes import syndrome
    from .decoder import decode_syndromes

    rng = np.random.default_rng(seed)
    alice = rng.integers(0, 2, size=(frames, code.n), dtype=np.uint8)
    bob = alice ^ (rng.random((frames, code.n)) < qber).astype(np.uint8)
    syndromes = np.stack([syndrome(code, row) for row in alice])
    magnitude = math.log((1 - qber) / qber)
    llrs = np.where(bob == 0, magnitude, -magnitude).astype(np.float32)
    result = decode_syndromes(code, syndromes, llrs, iterations)
    ok = np.asarray(result.converged) & np.all(result.bits == alice, axis=1)
    return int(frames - ok.sum())


def evaluate(
    code: Any, frames: int, iterations: int, seed: int, target_fer: float = 0.01
) -> tuple[float, float]:
    """Finds the smallest efficiency ``f`` (step 0.01) at which the code meets ``target_fer``.

    The QBER at efficiency ``f`` is ``h^-1((1 - R) / f)``. A coarse pass (steps of 0.04, a fifth
    of the frames, no failure allowed) brackets ``f``; a fine pass then rises in steps of 0.01
    from just below the bracket until at most ``target_fer * frames`` frames fail.

    Returns:
        ``(f, qber)`` reached, or ``(nan, nan)`` if even ``f = 1.6`` fails.
    """
    coarse_frames = max(frames // 5, 10)

    def qber_at(f: float) -> float:
        return _inverse_entropy((1.0 - code.rate) / f)

    coarse = math.nan
    for step in range(1, 16):
        f = 1.0 + 0.04 * step
        if _frame_errors(code, qber_at(f), coarse_frames, iterations, seed + step) == 0:
            coarse = f
            break
    if math.isnan(coarse):
        return math.nan, math.nan
    f = max(coarse - 0.03, 1.01)
    while f < coarse + 0.2:
        qber = qber_at(f)
        if _frame_errors(code, qber, frames, iterations, seed + 100) <= target_fer * frames:
            return round(f, 2), qber
        f += 0.01
    return math.nan, math.nan


def _code_from_file(path: Path) -> Any:
    from .codes import _build, expand_qc

    with np.load(path, allow_pickle=False) as data:
        z = int(data["z"])
        m = int(data["m"])
        chk_ptr, chk_var = expand_qc(z, m // z, data["rows"], data["cols"], data["shifts"])
        return _build(m, int(data["n"]), chk_ptr, chk_var, path.stem), int(data["girth"])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: rebuild and/or evaluate the shipped family; prints one line per code."""
    parser = argparse.ArgumentParser(description="Rebuild the shipped QC-PEG LDPC family.")
    parser.add_argument("--out", type=Path, required=True, help="folder of the .npz files")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rates", nargs="*", help="rate keys, e.g. 0.80 (default: all)")
    parser.add_argument("--z", type=int, nargs="*", help="lifting sizes (default: all)")
    parser.add_argument("--no-build", action="store_true", help="use the files already in --out")
    parser.add_argument("--evaluate", action="store_true", help="measure f at FER <= 1%%")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, key, nb, z, seed in shipped_builds():
        if (args.rates and key not in args.rates) or (args.z and z not in args.z):
            continue
        path = args.out / f"{name}.npz"
        line = f"{name}:"
        if not args.no_build:
            started = time.perf_counter()
            np.savez_compressed(path, **build_code(key, nb, z, seed - DEFAULT_SEED + args.seed))
            line += f" built in {time.perf_counter() - started:.0f} s;"
        code, girth = _code_from_file(path)
        line += f" n={code.n} rate={code.rate:.2f} girth={girth} edges={code.n_edges}"
        if args.evaluate:
            f, qber = evaluate(code, args.frames, args.iterations, args.seed)
            line += f"; FER<=1% up to QBER={100 * qber:.2f}% i.e. f={f:.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
