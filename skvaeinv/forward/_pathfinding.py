"""Exact shortest paths on a :class:`~skvaeinv.forward.ShortestPath` graph, compiled.

The ``"numba"`` backend of :class:`~skvaeinv.forward.ShortestPath` (and of ``"auto"``
where numba is installed). One search starts at a root node and stops as soon as all of
its target nodes are settled, so it never labels the whole graph unless a target needs
it. The search is A*: the priority of a node is its distance from the root plus a lower
bound of the remaining distance, ``h(v) = s_min · d(v, box)``, where ``s_min`` is the
smallest slowness of the model (times ``1 - 1e-9``, a margin far above rounding) and
``d(v, box)`` the Euclidean distance from the node to the bounding box of the search's
targets. Every graph edge is a straight segment whose weight is at least ``s_min`` times
its length, and the distance to a convex set changes by at most the length of a step,
so ``h`` is consistent: every settled node has its exact shortest distance, as in
Dijkstra's algorithm, which this is when ``h = 0``. The searched region shrinks from the
whole grid to a neighbourhood of the straight line between the root and its targets.

Searches are independent, so several run at once in threads (the compiled code releases
the GIL); results do not depend on the number of threads.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numba import njit

__all__ = ["shortest_paths"]

logger = logging.getLogger(__name__)


def _compiled(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit(**options)`` with an on-disk cache where numba can write one.

    Numba caches compiled code next to this file or in the user's cache directory; where
    neither is writable (a read-only installation and home directory, as in some
    containers and clusters) ``cache=True`` fails at import. The functions are then
    compiled at first use in every process instead, and an info message
    says how to get the cache back (``NUMBA_CACHE_DIR``).
    """
    def decorate(func: Callable[..., Any]) -> Any:
        try:
            return njit(cache=True, **options)(func)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator"
            if not uncached:  # one message per process
                logger.info("numba cannot cache %s (%s): the shortest-path searches are "
                            "compiled in each process. Set NUMBA_CACHE_DIR to a writable "
                            "directory to cache them.", func.__name__, exc)
            uncached.append(func.__name__)
            return njit(cache=False, **options)(func)
    return decorate


#: Names of the functions compiled without an on-disk cache (see :func:`_compiled`).
uncached: list[str] = []

#: Heuristic scale factor below ``min(s)``; keeps ``h`` consistent despite rounding.
_H_MARGIN = 1e-9


@_compiled(nogil=True, inline="always")
def _box_distance(x, z, box):  # pragma: no cover - compiled
    """Euclidean distance from ``(x, z)`` to the box ``(x0, z0, x1, z1)``."""
    dx = max(box[0] - x, 0.0, x - box[2])
    dz = max(box[1] - z, 0.0, z - box[3])
    return np.sqrt(dx * dx + dz * dz)


@_compiled(nogil=True, inline="always")
def _place(heapk, heapv, hpos, i, key, node):  # pragma: no cover - compiled
    """Put ``node`` with priority ``key`` at position ``i`` of the heap."""
    heapk[i] = key
    heapv[i] = node
    hpos[node] = i


@_compiled(nogil=True, inline="always")
def _sink(heapk, heapv, hpos, size):  # pragma: no cover - compiled
    """Move the entry at position ``size`` (just past the heap's end) to the top of the
    heap of ``size`` entries, and let it sink to its place."""
    kx = heapk[size]
    vx = heapv[size]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and heapk[c + 1] < heapk[c]:
            c += 1
        if heapk[c] < kx:
            _place(heapk, heapv, hpos, i, heapk[c], heapv[c])
            i = c
        else:
            break
    _place(heapk, heapv, hpos, i, kx, vx)


@_compiled(nogil=True)
def _search(indptr, indices, w, xs, zs, hs, root, targets, box,
            dist, pred, ppos, hval, hpos, heapk, heapv, mark):  # pragma: no cover - compiled
    """A* from ``root`` until every node of ``targets`` is settled.

    Fills ``dist`` (inf where never reached), ``pred`` (previous node) and ``ppos``
    (CSR position of the edge used) for the nodes reached. ``hpos`` is a work array:
    -1 never seen, -2 settled, otherwise the node's position in the binary heap
    (``heapk`` keys, ``heapv`` nodes). ``mark`` flags the targets (reset on return).
    """
    n = dist.shape[0]
    for i in range(n):
        dist[i] = np.inf
        hpos[i] = -1
    remaining = 0
    for t in targets:
        if mark[t] == 0:
            mark[t] = 1
            remaining += 1
    dist[root] = 0.0
    pred[root] = -1
    ppos[root] = -1
    hval[root] = hs * _box_distance(xs[root], zs[root], box)
    _place(heapk, heapv, hpos, 0, hval[root], root)
    size = 1
    while size > 0:
        u = heapv[0]
        hpos[u] = -2
        size -= 1
        if size > 0:  # the last entry moves to the top and sinks
            _sink(heapk, heapv, hpos, size)
        if mark[u]:
            mark[u] = 0
            remaining -= 1
            if remaining == 0:
                break
        du = dist[u]
        for p in range(indptr[u], indptr[u + 1]):
            v = indices[p]
            hv = hpos[v]
            if hv == -2:
                continue
            nd = du + w[p]
            if nd < dist[v]:
                dist[v] = nd
                pred[v] = u
                ppos[v] = p
                if hv == -1:
                    hval[v] = hs * _box_distance(xs[v], zs[v], box)
                    i = size
                    size += 1
                else:
                    i = hv
                kv = nd + hval[v]
                while i > 0:  # the improved node rises
                    parent = (i - 1) >> 1
                    if heapk[parent] > kv:
                        _place(heapk, heapv, hpos, i, heapk[parent], heapv[parent])
                        i = parent
                    else:
                        break
                _place(heapk, heapv, hpos, i, kv, v)
    for t in targets:  # unreachable targets (none on a connected grid) stay marked
        mark[t] = 0
    return remaining


@_compiled(nogil=True)
def _paths(pred, ppos, edge_of_pos, root, targets):  # pragma: no cover - compiled
    """Edge ids of each target's path back to ``root`` (after :func:`_search`).

    Returns the number of edges of each path and their ids, path after path.
    """
    counts = np.zeros(targets.size, np.int64)
    for r in range(targets.size):
        cur = targets[r]
        while cur != root:
            cur = pred[cur]
            counts[r] += 1
    edges = np.empty(counts.sum(), np.int64)
    k = 0
    for r in range(targets.size):
        cur = targets[r]
        while cur != root:
            edges[k] = edge_of_pos[ppos[cur]]
            cur = pred[cur]
            k += 1
    return counts, edges


def shortest_paths(
    indptr: np.ndarray, indices: np.ndarray, w: np.ndarray, xs: np.ndarray,
    zs: np.ndarray, s_min: float, roots: np.ndarray, root_row: np.ndarray, target: np.ndarray,
    edge_of_pos: np.ndarray | None = None, threads: int = 1, split: int = 2,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Shortest distances (and path edges) from ``roots[root_row[r]]`` to ``target[r]``.

    Parameters
    ----------
    indptr, indices, w : ndarray
        The weighted directed graph in CSR form (int32 structure, float64 weights).
    xs, zs : ndarray of shape (n_nodes,)
        Node coordinates (contiguous float64); edge weights must be at least ``s_min``
        times the Euclidean distance between their end nodes.
    s_min : float
        A lower bound of the slowness (``> 0``).
    roots : ndarray of int
        Distinct search roots.
    root_row, target : ndarray of int, shape (n_rays,)
        Each ray's root (index into ``roots``) and target node.
    edge_of_pos : ndarray of int, optional
        Undirected edge id of each CSR position; when given, the paths are returned.
    threads : int, default=1
        Searches running at once.
    split : int, default=2
        A root with at most this many rays gets one search per ray (each aimed at a
        single target); other roots get one search for all their rays.

    Returns
    -------
    t : ndarray of shape (n_rays,)
        Shortest distances.
    path_ray, path_edge : ndarray or None
        For every edge of every path, its ray and its undirected edge id (None unless
        ``edge_of_pos`` is given).
    """
    n = indptr.size - 1
    hs = float(s_min) * (1.0 - _H_MARGIN)
    jobs = _plan_searches(roots, root_row, target, xs, zs, split)
    n_jobs = len(jobs.rays)
    dist_t = np.empty(target.size)
    paths: list[tuple[np.ndarray, np.ndarray] | None] = [None] * n_jobs
    counter = itertools.count()
    errors: list[BaseException] = []

    def work() -> None:
        dist, hval = np.empty(n), np.empty(n)
        pred, ppos, hpos = (np.empty(n, np.int32) for _ in range(3))
        heapk, heapv = np.empty(n), np.empty(n, np.int32)
        mark = np.zeros(n, np.uint8)
        try:
            while (j := next(counter)) < n_jobs:
                left = _search(indptr, indices, w, xs, zs, hs, jobs.root[j], jobs.targets[j],
                               jobs.boxes[j], dist, pred, ppos, hval, hpos, heapk, heapv,
                               mark)
                if left:  # pragma: no cover - the grid graph is connected
                    raise RuntimeError("shortest-path graph is disconnected")
                dist_t[jobs.rays[j]] = dist[jobs.targets[j]]
                if edge_of_pos is not None:
                    paths[j] = _paths(pred, ppos, edge_of_pos, jobs.root[j], jobs.targets[j])
        except BaseException as exc:  # pragma: no cover - re-raised below
            errors.append(exc)

    _in_threads(work, max(1, min(int(threads), n_jobs)))
    if errors:
        raise errors[0]
    if edge_of_pos is None:
        return dist_t, None, None
    if n_jobs == 0:
        return dist_t, np.empty(0, np.int64), np.empty(0, np.int64)
    path_ray = np.concatenate([np.repeat(jobs.rays[j], paths[j][0]) for j in range(n_jobs)])
    path_edge = np.concatenate([paths[j][1] for j in range(n_jobs)])
    return dist_t, path_ray, path_edge


class _Searches(NamedTuple):
    """The searches of one call: each one's root node, rays, target nodes and the
    bounding box of its targets."""

    root: list[int]
    rays: list[np.ndarray]
    targets: list[np.ndarray]
    boxes: list[np.ndarray]


def _plan_searches(roots: np.ndarray, root_row: np.ndarray, target: np.ndarray,
                   xs: np.ndarray, zs: np.ndarray, split: int) -> _Searches:
    """One search per root, or one per ray for a root with at most ``split`` rays (a
    search towards a single target explores the least)."""
    order = np.argsort(root_row, kind="stable")
    bounds = np.searchsorted(root_row[order], np.arange(roots.size + 1))
    job_root: list[int] = []
    job_rays: list[np.ndarray] = []
    for j in range(roots.size):
        members = order[bounds[j]:bounds[j + 1]]
        parts = np.split(members, members.size) if members.size <= split else [members]
        job_root += [int(roots[j])] * len(parts)
        job_rays += parts
    groups = [np.ascontiguousarray(target[m], dtype=np.int64) for m in job_rays]
    boxes = [np.array([xs[g].min(), zs[g].min(), xs[g].max(), zs[g].max()]) for g in groups]
    return _Searches(job_root, job_rays, groups, boxes)


def _in_threads(work: Callable[[], None], n_threads: int) -> None:
    """Run ``work`` in ``n_threads`` threads at once (in this one when 1)."""
    if n_threads == 1:
        work()
        return
    pool = [threading.Thread(target=work) for _ in range(n_threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
