"""Shortest-path (Dijkstra) traveltimes with exact path-length Jacobians.

The graph is the one pyGIMLi's ``TravelTimeDijkstraModelling`` builds on a grid of
quadrilateral cells (pyGIMLi 1.6, ``core/src/ttdijkstramodelling.cpp``):

- nodes: the grid nodes plus ``secondary_nodes`` equally spaced extra nodes on every
  cell edge (none inside cells);
- within every cell, every pair of its nodes is joined by a straight edge of weight
  ``length × slowness of the cell``;
- an edge lying on a cell boundary belongs to both cells next to it and takes the
  *smaller* of the two slownesses (pyGIMLi's ``fillGraph_`` keeps ``min(new, old)``).

Edges joining two non-adjacent nodes on the same cell side are left out: they are
collinear with the chain of adjacent ones and have exactly its weight, so shortest
distances do not change (the graph is ~25 % smaller and Dijkstra faster).

The Jacobian row of a ray holds the length of its shortest path in every cell: each
graph edge lies in a known cell, and a boundary edge is charged to the neighbour with
the smaller slowness (split in half on an exact tie), so ``t = J s`` holds exactly.
pyGIMLi charges boundary edges the same way, but splits among cells whose slowness is
within ``1e-4`` of the minimum, which breaks ``t = J s`` slightly.
"""

from __future__ import annotations

import functools
import importlib
import logging
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed, effective_n_jobs
from scipy.sparse.csgraph import dijkstra
from sklearn.utils._param_validation import Interval, StrOptions

from ..survey import Grid2D
from ._base import ForwardOperator, _cache, _rays_key

__all__ = ["ShortestPath"]

logger = logging.getLogger(__name__)

#: A sensor within this fraction of the cell size of a graph node uses that node.
_SNAP_RTOL = 1e-6


@dataclass(frozen=True)
class _Graph:
    """Structure of a shortest-path graph; weights are computed per slowness model."""

    n_nodes: int
    # edges (two-way unless added as one-way sensor connections)
    u: np.ndarray
    v: np.ndarray
    length: np.ndarray  # (E,)
    cell_a: np.ndarray  # (E,) the cell (or one of the two cells) holding the edge
    cell_b: np.ndarray  # (E,) the other cell, == cell_a for edges inside one cell
    # directed CSR structure (both directions of every edge)
    indptr: np.ndarray
    indices: np.ndarray
    edge_of_pos: np.ndarray  # (2E,) undirected edge id of each CSR entry
    keys: np.ndarray  # (2E,) row * n_nodes + col, ascending
    # per CSR entry copies (faster weight updates): every entry as if inside one
    # cell, then the (few) cell-boundary entries with the smaller slowness
    len_pos: np.ndarray
    ca_pos: np.ndarray
    bnd_pos: np.ndarray
    bnd_len: np.ndarray
    bnd_ca: np.ndarray
    bnd_cb: np.ndarray

    @classmethod
    def from_edges(
        cls, n_nodes: int, u: np.ndarray, v: np.ndarray, length: np.ndarray,
        cell_a: np.ndarray, cell_b: np.ndarray, n_oneway: int = 0,
    ) -> _Graph:
        """Build from undirected edges; the last ``n_oneway`` edges only go ``u -> v``."""
        E = u.size
        two = E - n_oneway
        rows = np.concatenate([u, v[:two]])
        cols = np.concatenate([v, u[:two]])
        # edge ids (+1, exactly representable) carried through scipy's fast COO -> CSR
        ids = np.concatenate([np.arange(1, E + 1), np.arange(1, two + 1)]).astype(np.float64)
        M = sp.coo_matrix((ids, (rows, cols)), shape=(n_nodes, n_nodes)).tocsr()
        M.sort_indices()
        if M.nnz != rows.size:
            raise RuntimeError("shortest-path graph has duplicated edges")  # internal bug
        edge_of_pos = M.data.astype(np.int64) - 1
        row_of_pos = np.repeat(np.arange(n_nodes, dtype=np.int64), np.diff(M.indptr))
        keys = row_of_pos * n_nodes + M.indices.astype(np.int64)
        ca_pos = cell_a[edge_of_pos]
        cb_pos = cell_b[edge_of_pos]
        bnd = np.flatnonzero(ca_pos != cb_pos)
        return cls(
            n_nodes=n_nodes,
            u=u,
            v=v,
            length=length,
            cell_a=cell_a,
            cell_b=cell_b,
            indptr=M.indptr,
            indices=M.indices,
            edge_of_pos=edge_of_pos,
            keys=keys,
            len_pos=length[edge_of_pos],
            ca_pos=ca_pos.astype(np.intp),
            bnd_pos=bnd,
            bnd_len=length[edge_of_pos[bnd]],
            bnd_ca=ca_pos[bnd],
            bnd_cb=cb_pos[bnd],
        )

    def weights(self, s: np.ndarray) -> np.ndarray:
        """Weight of every CSR entry for one flat slowness model ``s``."""
        w = s.take(self.ca_pos)
        w *= self.len_pos
        w[self.bnd_pos] = self.bnd_len * np.minimum(s[self.bnd_ca], s[self.bnd_cb])
        return w

    def matrix(self, s: np.ndarray) -> sp.csr_matrix:
        """The weighted graph for one flat slowness model ``s``."""
        return sp.csr_matrix((self.weights(s), self.indices, self.indptr),
                             shape=(self.n_nodes,) * 2)

    def edge_ids(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.keys, a.astype(np.int64) * self.n_nodes + b)
        return self.edge_of_pos[pos]


class _Layout:
    """Node numbering of a grid with ``n`` secondary nodes per cell edge."""

    def __init__(self, grid: Grid2D, n: int) -> None:
        self.grid, self.n = grid, n
        nz, nx = grid.shape
        self.n_primary = (nz + 1) * (nx + 1)
        self.n_hsec = (nz + 1) * nx * n
        self.n_vsec = nz * (nx + 1) * n
        self.n_nodes = self.n_primary + self.n_hsec + self.n_vsec

    def P(self, r: Any, c: Any) -> Any:
        return r * (self.grid.nx + 1) + c

    def H(self, r: Any, c: Any, k: Any) -> Any:
        return self.n_primary + (r * self.grid.nx + c) * self.n + k

    def V(self, r: Any, c: Any, k: Any) -> Any:
        return self.n_primary + self.n_hsec + (r * (self.grid.nx + 1) + c) * self.n + k

    def cell_nodes(self, iz: Any, ix: Any) -> tuple[list, np.ndarray, list]:
        """Global ids, local (u, v) coordinates and sides of a cell's nodes."""
        n = self.n
        ids, uv, sides = [], [], []
        for (du, dv), s in (((0, 0), {"t", "l"}), ((1, 0), {"t", "r"}),
                            ((0, 1), {"b", "l"}), ((1, 1), {"b", "r"})):
            ids.append(self.P(iz + dv, ix + du))
            uv.append((du, dv))
            sides.append(s)
        for k in range(n):
            f = (k + 1) / (n + 1)
            ids += [self.H(iz, ix, k), self.H(iz + 1, ix, k),
                    self.V(iz, ix, k), self.V(iz, ix + 1, k)]
            uv += [(f, 0.0), (f, 1.0), (0.0, f), (1.0, f)]
            sides += [{"t"}, {"b"}, {"l"}, {"r"}]
        return ids, np.asarray(uv, dtype=float), sides

    def positions(self) -> np.ndarray:
        """(n_nodes, 2) node coordinates (x, z)."""
        g = self.grid
        nz, nx, n, h = g.nz, g.nx, self.n, g.spacing
        x0, z0 = g.origin
        r, c = np.meshgrid(np.arange(nz + 1), np.arange(nx + 1), indexing="ij")
        prim = np.column_stack([c.ravel(), r.ravel()]).astype(float)
        f = (np.arange(n) + 1) / (n + 1)
        r, c, k = np.meshgrid(np.arange(nz + 1), np.arange(nx), np.arange(n), indexing="ij")
        hs = np.column_stack([(c + f[k]).ravel(), r.ravel()])
        r, c, k = np.meshgrid(np.arange(nz), np.arange(nx + 1), np.arange(n), indexing="ij")
        vs = np.column_stack([c.ravel(), (r + f[k]).ravel()])
        return np.vstack([prim, hs, vs]) * h + np.array([x0, z0])


@functools.lru_cache(maxsize=4)
def _base_graph(grid: Grid2D, n: int) -> tuple[_Layout, _Graph]:
    """The graph structure of a grid (built once per grid and ``n``; vectorised)."""
    lay = _Layout(grid, n)
    nz, nx, h = grid.nz, grid.nx, grid.spacing
    iz, ix = np.divmod(np.arange(grid.n_cells), nx)
    ids, uv, sides = lay.cell_nodes(iz, ix)
    us, vs, lens, ca = [], [], [], []
    m = len(ids)
    for a in range(m):
        for b in range(a + 1, m):
            if sides[a] & sides[b]:
                continue  # same cell side: handled once per edge below
            us.append(ids[a])
            vs.append(ids[b])
            lens.append(np.full(grid.n_cells, h * np.hypot(*(uv[a] - uv[b]))))
            ca.append(np.arange(grid.n_cells))
    cell_b_int = list(ca)
    # chains along cell edges: adjacent nodes only, shared by the two cells
    seg = h / (n + 1)
    # horizontal grid edges (r, c): r = 0..nz, c = 0..nx-1
    r, c = np.meshgrid(np.arange(nz + 1), np.arange(nx), indexing="ij")
    r, c = r.ravel(), c.ravel()
    above = np.where(r > 0, (r - 1) * nx + c, r * nx + c)
    below = np.where(r < nz, r * nx + c, (r - 1) * nx + c)
    chain = [lay.P(r, c)] + [lay.H(r, c, k) for k in range(n)] + [lay.P(r, c + 1)]
    for a, b in zip(chain[:-1], chain[1:]):
        us.append(a), vs.append(b), lens.append(np.full(r.size, seg))
        ca.append(above), cell_b_int.append(below)
    # vertical grid edges (r, c): r = 0..nz-1, c = 0..nx
    r, c = np.meshgrid(np.arange(nz), np.arange(nx + 1), indexing="ij")
    r, c = r.ravel(), c.ravel()
    left = np.where(c > 0, r * nx + c - 1, r * nx + c)
    right = np.where(c < nx, r * nx + c, r * nx + c - 1)
    chain = [lay.P(r, c)] + [lay.V(r, c, k) for k in range(n)] + [lay.P(r + 1, c)]
    for a, b in zip(chain[:-1], chain[1:]):
        us.append(a), vs.append(b), lens.append(np.full(r.size, seg))
        ca.append(left), cell_b_int.append(right)
    graph = _Graph.from_edges(
        lay.n_nodes,
        np.concatenate(us).astype(np.int64),
        np.concatenate(vs).astype(np.int64),
        np.concatenate(lens),
        np.concatenate(ca).astype(np.int64),
        np.concatenate(cell_b_int).astype(np.int64),
    )
    return lay, graph


def _snap(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round values within the snapping tolerance of an integer; return (value, is_int)."""
    r = np.round(q)
    is_int = np.abs(q - r) <= _SNAP_RTOL * np.maximum(1.0, np.abs(q))
    return np.where(is_int, r, q), is_int


def _node_of(lay: _Layout, points: np.ndarray) -> np.ndarray:
    """Graph node at each point, or -1 when none.

    A point is on a node within ``1e-6 · max(1, |q|)`` cells, ``q`` its coordinate in cells.
    """
    g, n = lay.grid, lay.n
    nz, nx, h = g.nz, g.nx, g.spacing
    qx, ix_int = _snap((points[:, 0] - g.origin[0]) / h)
    qz, iz_int = _snap((points[:, 1] - g.origin[1]) / h)
    fx, fx_int = _snap(qx * (n + 1))
    fz, fz_int = _snap(qz * (n + 1))
    node = np.full(points.shape[0], -1, dtype=np.int64)
    prim = ix_int & iz_int
    node[prim] = lay.P(qz[prim].astype(np.int64), qx[prim].astype(np.int64))
    hsec = ~prim & iz_int & fx_int
    if hsec.any():
        c = np.minimum(np.floor(qx[hsec]).astype(np.int64), nx - 1)
        k = fx[hsec].astype(np.int64) - c * (n + 1) - 1
        node[hsec] = lay.H(qz[hsec].astype(np.int64), c, k)
    vsec = ~prim & ix_int & fz_int
    if vsec.any():
        r = np.minimum(np.floor(qz[vsec]).astype(np.int64), nz - 1)
        k = fz[vsec].astype(np.int64) - r * (n + 1) - 1
        node[vsec] = lay.V(r, qx[vsec].astype(np.int64), k)
    return node


def _connections(lay: _Layout, p: np.ndarray) -> list[tuple[int, float, int, int]]:
    """Straight edges from an off-node point to every node of the cell(s) holding it.

    Returns ``(node, length, cell_a, cell_b)`` tuples; an edge running along a cell
    boundary lists both cells (it takes the smaller slowness), others one cell twice.
    """
    g = lay.grid
    nz, nx, h = g.nz, g.nx, g.spacing
    org = np.asarray(g.origin)
    (qx,), (xi,) = _snap(np.array([(p[0] - org[0]) / h]))
    (qz,), (zi,) = _snap(np.array([(p[1] - org[1]) / h]))
    cx = [int(qx) - 1, int(qx)] if xi else [int(np.floor(qx))]
    cz = [int(qz) - 1, int(qz)] if zi else [int(np.floor(qz))]
    cells = [(a, b) for a in cz for b in cx if 0 <= a < nz and 0 <= b < nx]
    nodes: dict[int, np.ndarray] = {}
    for a, b in cells:
        ids, uv, _ = lay.cell_nodes(a, b)
        for i, pos in zip(ids, uv):
            nodes[int(i)] = (np.array([b, a]) + pos) * h + org
    tol = _SNAP_RTOL * h
    out = []
    for i, pos in nodes.items():
        mid = 0.5 * (p + pos)
        holds = [
            a * nx + b for a, b in cells
            if org[0] + b * h - tol <= mid[0] <= org[0] + (b + 1) * h + tol
            and org[1] + a * h - tol <= mid[1] <= org[1] + (a + 1) * h + tol
        ]
        out.append((i, float(np.hypot(*(p - pos))), holds[0], holds[-1]))
    return out


@dataclass
class _Prepared:
    """Everything that depends on the survey's rays but not on the slowness.

    Each sensor has an "out" node (Dijkstra may start there) and an "in" node (a path
    may end there): the same graph node for sensors on nodes; two one-way copies for
    sensors off the nodes, so no path ever passes *through* another sensor.
    """

    graph: _Graph
    xz: np.ndarray  # (2, n_nodes) node coordinates, rows x and z (each contiguous)
    src_out: np.ndarray
    src_in: np.ndarray
    rcv_out: np.ndarray
    rcv_in: np.ndarray
    same: np.ndarray  # rays whose source and receiver coincide (time 0)
    # straight segment between two sensors in a common cell (NaN length: none)
    direct_len: np.ndarray
    direct_ca: np.ndarray
    direct_cb: np.ndarray

    def from_receivers(self, idx: np.ndarray | None = None) -> bool:
        """Whether Dijkstra should start from the receivers of rays ``idx``.

        By reciprocity, it starts from whichever end of the selected rays has fewer
        distinct positions (sources on a tie).
        """
        sl = slice(None) if idx is None else idx
        return bool(np.unique(self.rcv_out[sl]).size < np.unique(self.src_out[sl]).size)

    def select(
        self, idx: np.ndarray | None = None, from_receivers: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(roots, root_row, target)`` for rays ``idx`` (all when None).

        Dijkstra starts from the receivers when ``from_receivers`` is true, from the
        sources when false, and from the end :meth:`from_receivers` picks when None.
        """
        sl = slice(None) if idx is None else idx
        so, si, ro, ri = self.src_out[sl], self.src_in[sl], self.rcv_out[sl], self.rcv_in[sl]
        if from_receivers is None:
            from_receivers = self.from_receivers(idx)
        if from_receivers:
            so, si, ro, ri = ro, ri, so, si
        roots, root_row = np.unique(so, return_inverse=True)
        target = np.where(self.same[sl], so, ri)
        return roots, np.asarray(root_row).ravel(), target


def _prepare(lay: _Layout, base: _Graph, rays: np.ndarray) -> _Prepared:
    n = rays.shape[0]
    pts = np.vstack([rays[:, :2], rays[:, 2:]])
    node = _node_of(lay, pts)
    out_node, in_node = node.copy(), node.copy()
    off = np.flatnonzero(node < 0)
    graph = base
    xz = lay.positions()
    if off.size:
        uniq, inv = np.unique(pts[off], axis=0, return_inverse=True)
        inv = np.asarray(inv).ravel()
        m = uniq.shape[0]
        us, vs, lens, cas, cbs = [], [], [], [], []
        for j, p in enumerate(uniq):
            for i, length, ca, cb in _connections(lay, p):
                # one-way: out copy -> node, node -> in copy
                us += [base.n_nodes + j, i]
                vs += [i, base.n_nodes + m + j]
                lens += [length, length]
                cas += [ca, ca]
                cbs += [cb, cb]
        graph = _Graph.from_edges(
            base.n_nodes + 2 * m,
            np.concatenate([base.u, np.asarray(us, np.int64)]),
            np.concatenate([base.v, np.asarray(vs, np.int64)]),
            np.concatenate([base.length, lens]),
            np.concatenate([base.cell_a, np.asarray(cas, np.int64)]),
            np.concatenate([base.cell_b, np.asarray(cbs, np.int64)]),
            n_oneway=len(us),
        )
        out_node[off] = base.n_nodes + inv
        in_node[off] = base.n_nodes + m + inv
        xz = np.vstack([xz, uniq, uniq])
        logger.debug("shortest path: %d sensor positions off the graph's nodes", m)
    same = np.all(rays[:, :2] == rays[:, 2:], axis=1)
    direct_len = np.full(n, np.nan)
    direct_ca = np.zeros(n, dtype=np.int64)
    direct_cb = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(((node[:n] < 0) | (node[n:] < 0)) & ~same):
        seg = _direct_segment(lay, rays[i, :2], rays[i, 2:])
        if seg is not None:
            direct_len[i], direct_ca[i], direct_cb[i] = seg
    xz = np.ascontiguousarray(xz.T)  # the searches read x and z as separate arrays
    return _Prepared(graph, xz, out_node[:n], in_node[:n], out_node[n:], in_node[n:],
                     same, direct_len, direct_ca, direct_cb)


def _cells_holding(lay: _Layout, p: np.ndarray) -> set[tuple[int, int]]:
    g = lay.grid
    (qx,), (xi,) = _snap(np.array([(p[0] - g.origin[0]) / g.spacing]))
    (qz,), (zi,) = _snap(np.array([(p[1] - g.origin[1]) / g.spacing]))
    cx = [int(qx) - 1, int(qx)] if xi else [int(np.floor(qx))]
    cz = [int(qz) - 1, int(qz)] if zi else [int(np.floor(qz))]
    return {(a, b) for a in cz for b in cx if 0 <= a < g.nz and 0 <= b < g.nx}


def _direct_segment(lay: _Layout, p: np.ndarray, q: np.ndarray):
    """``(length, cell_a, cell_b)`` of the straight segment p-q if both share a cell."""
    g = lay.grid
    common = _cells_holding(lay, p) & _cells_holding(lay, q)
    if not common:
        return None
    mid = 0.5 * (p + q)
    h, org, tol = g.spacing, g.origin, _SNAP_RTOL * g.spacing
    holds = sorted(
        a * g.nx + b for a, b in common
        if org[0] + b * h - tol <= mid[0] <= org[0] + (b + 1) * h + tol
        and org[1] + a * h - tol <= mid[1] <= org[1] + (a + 1) * h + tol
    )
    return float(np.hypot(*(q - p))), holds[0], holds[-1]


class ShortestPath(ForwardOperator):
    """Shortest-path (graph) traveltimes, as pyGIMLi's Dijkstra modelling computes them.

    Rays bend: each traveltime is the shortest path through a graph of grid nodes and
    ``secondary_nodes`` extra nodes on every cell edge, every pair of nodes of a cell
    joined by a straight edge of weight ``length × slowness`` (the smaller slowness of
    the two cells for an edge on a cell boundary). This reproduces pyGIMLi 1.6's
    ``TravelTimeDijkstraModelling`` on a regular grid.

    Parameters
    ----------
    grid : Grid2D
        The model grid.
    secondary_nodes : int, default=3
        Extra nodes on each cell edge. More nodes: smaller angular error (the path
        can only change direction at nodes) but a bigger graph. pyGIMLi's default
        for traveltime modelling is 3 (and the reference study simulated its data
        with 2).
    backend : {"auto", "numba", "scipy", "ttcrpy"}, default="auto"
        ``"numba"`` (and ``"auto"`` where numba is installed, as it is with
        skvaeinv's default dependencies): compiled searches that stop once their
        targets are reached and steer towards them (A* with a lower bound that keeps
        them exact, see Notes); several run at once in ``n_jobs`` threads. A
        mini-batch of a few rays thus explores a small part of the graph, where
        ``"scipy"`` labels all of it.
        ``"scipy"`` (and ``"auto"`` without numba): Dijkstra from
        :mod:`scipy.sparse.csgraph`, each run labelling the whole graph; ``n_jobs``
        worker processes.
        ``"ttcrpy"``: the shortest-path method of the optional, GPL-licensed ttcrpy
        package (``ttcrpy.rgrid.Grid2d``, ``method="SPM"``, multithreaded C++; it needs
        the system OpenCL loader). Its graph is pyGIMLi's too: on the reference survey
        its times agree with ours to about 1e-15. It is never picked by ``"auto"``;
        an ``ImportError`` says how to install it when it is absent. Sensors off the
        grid nodes and ties between equal paths are handled the ttcrpy way.
    n_jobs : int or None, default=None
        Threads (``"numba"``, ``"ttcrpy"``) or worker processes (``"scipy"``) sharing
        the searches of one call (joblib semantics:
        None means 1 unless inside a :func:`joblib.parallel_config` context, -1 all
        cores). Threads take the searches one after another; with ``"scipy"`` the
        sources are split into ``n_jobs`` groups, and each worker process builds its
        own copy of the graph on its first call and keeps it. Worth it for
        full-survey calls, and for mini-batches with ``"numba"``. Inside
        :class:`~skvaeinv.LatentInverter`
        leave it at None: the inverter sets it to its own ``n_jobs`` when its starts
        run in one process (one chunk, or a GPU) and leaves it at one worker when its
        chunks already fill the cores. Results do not depend on ``n_jobs``.

    See Also
    --------
    StraightRay : The linear straight-ray operator.

    Notes
    -----
    - The graph's structure is built once per grid and ``secondary_nodes`` (shared
      by all instances and clones); each slowness model only sets the weights.
    - Only the sources needed by the requested rays are computed, one Dijkstra run
      each. By reciprocity (the graph is undirected) the runs start from whichever
      end, sources or receivers, has fewer distinct positions.
    - ``"numba"`` searches from each root until all of that root's targets are
      settled, one search per ray for a root with at most two rays. A node's
      priority is its distance plus ``min(s) × (1 - 1e-9)`` times its Euclidean
      distance to the box around the search's targets, a consistent lower bound of
      the remaining time (every edge is a straight segment whose slowness is at least
      ``min(s)``), so the settled distances are exact as in Dijkstra's algorithm.
      The times agree with ``"scipy"`` to rounding (~1e-15). Where several paths are
      equally short, the two backends may follow different ones: the same time, a
      different Jacobian row (both exact, ``t = J s``).
    - Sensors on a grid node or a secondary node (within ``1e-6 · max(1, |q|)`` cells,
      ``q`` the coordinate in cells) use that node, which is pyGIMLi's behaviour for
      sensors on nodes. Any other sensor is added as an extra node joined by straight
      edges to all nodes of the cell(s) containing it; pyGIMLi instead moves such a
      sensor to the nearest grid node.
    - The Jacobian is the length of each ray's path in each cell (a boundary edge is
      charged to the neighbour with the smaller slowness, half to each on a tie), so
      ``traveltimes == jacobian @ s`` up to rounding.

    References
    ----------
    Moser, T. J. (1991). Shortest path calculation of seismic rays. Geophysics 56(1).

    Examples
    --------
    A homogeneous 4 m x 4 m square crossed at mid-depth (slowness 0.5: 2 time units):

    >>> from skvaeinv import forward, survey
    >>> grid = survey.Grid2D((4, 4), 1.0)
    >>> bent = forward.ShortestPath(grid, secondary_nodes=2)
    >>> bent.traveltimes([[0.5] * 4] * 4, [[0.0, 2.0, 4.0, 2.0]])
    array([2.])
    """

    is_linear = False

    _parameter_constraints: dict = {
        "grid": [Grid2D],
        "secondary_nodes": [Interval(numbers.Integral, 0, None, closed="left")],
        "backend": [StrOptions({"auto", "numba", "scipy", "ttcrpy"})],
        "n_jobs": [None, Interval(numbers.Integral, None, -1, closed="right"),
                   Interval(numbers.Integral, 1, None, closed="left")],
    }

    def __init__(
        self, grid: Grid2D, secondary_nodes: int = 3, backend: str = "auto",
        n_jobs: int | None = None,
    ) -> None:
        self.grid = grid
        self.secondary_nodes = secondary_nodes
        self.backend = backend
        self.n_jobs = n_jobs

    # -- preparation -------------------------------------------------------------------
    def _check_params(self) -> None:
        self._validate_params()
        if isinstance(self.secondary_nodes, bool):
            raise ValueError(f"secondary_nodes={self.secondary_nodes!r} must be an integer "
                             ">= 0 (nodes added on each cell edge), not a bool.")
        if self.backend == "ttcrpy":
            _import_ttcrpy()
        elif self.backend == "numba":
            _import_pathfinding()

    def _ttcrpy_grid(self) -> Any:
        """The ttcrpy raytracer of this grid (built once, cached)."""
        grid, n = self.grid, int(self.secondary_nodes)
        threads = max(1, effective_n_jobs(self.n_jobs))
        cache = _cache(self, "_prepared_cache", 8)
        key = ("ttcrpy", grid, n, threads)
        tracer = cache.get(key)
        if tracer is None:
            rgrid = _import_ttcrpy()
            tracer = rgrid.Grid2d(grid.x_edges, grid.z_edges, n_threads=threads,
                                  cell_slowness=True, method="SPM", nsnx=n, nsnz=n)
            cache.put(key, tracer)
        return tracer

    def _prepare(self, rays: np.ndarray) -> _Prepared:
        self._check_params()
        grid = self._check_grid()
        n = int(self.secondary_nodes)
        cache = _cache(self, "_prepared_cache", 8)
        key = (grid, n, _rays_key(rays))
        prep = cache.get(key)
        if prep is None:
            lay, base = _base_graph(grid, n)
            prep = _prepare(lay, base, rays)
            cache.put(key, prep)
        return prep

    # -- computation ---------------------------------------------------------------------
    def _traveltimes(self, S: np.ndarray, rays: np.ndarray) -> np.ndarray:
        return np.stack([self._run(s, rays, None, jacobian=False)[0] for s in S])

    def _jacobian(self, slowness: np.ndarray | None, rays: np.ndarray) -> sp.csr_matrix:
        return self._traveltimes_and_jacobian(slowness, rays)[1]

    def _traveltimes_and_jacobian(
        self, slowness: np.ndarray, rays: np.ndarray
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        return self._run(slowness, rays, None, jacobian=True)

    def _subset_evaluator(self, rays: np.ndarray):
        if self._resolved_backend() != "ttcrpy":
            self._prepare(rays)  # set up once, before the first mini-batch

        def evaluate(s: np.ndarray, idx: np.ndarray, jacobian: bool = True
                     ) -> tuple[np.ndarray, sp.csr_matrix | None]:
            return self._run(s, rays, idx, jacobian=jacobian)

        return evaluate

    def _resolved_backend(self) -> str:
        """The backend that runs: ``"auto"`` is ``"numba"`` where numba imports."""
        if self.backend == "auto":
            return "numba" if _import_pathfinding(required=False) is not None else "scipy"
        return self.backend

    def _run(
        self, s: np.ndarray, rays: np.ndarray, idx: np.ndarray | None, jacobian: bool
    ) -> tuple[np.ndarray, sp.csr_matrix | None]:
        """Times (and Jacobian) of rays ``idx`` for one model, over ``n_jobs`` workers.

        ``"numba"``: the searches run in ``n_jobs`` threads of this process.
        ``"scipy"``: the Dijkstra roots are split into contiguous groups, one task per
        group; each worker process keeps its own copy of the graph between calls.
        """
        backend = self._resolved_backend()
        if backend == "ttcrpy":
            return self._run_ttcrpy(s, rays if idx is None else rays[idx], jacobian)
        prep = self._prepare(rays)
        n_cells = self.grid.n_cells
        rev = prep.from_receivers(idx)
        if backend == "numba":
            return _solve(prep, s, idx, n_cells, rev, jacobian,
                          threads=max(1, effective_n_jobs(self.n_jobs)))
        roots, root_row, _ = prep.select(idx, rev)
        n_tasks = min(effective_n_jobs(self.n_jobs), roots.size)
        if n_tasks <= 1:
            return _solve(prep, s, idx, n_cells, rev, jacobian)
        ray_ids = np.arange(rays.shape[0]) if idx is None else np.asarray(idx)
        group = root_row * n_tasks // roots.size
        pos = [np.flatnonzero(group == g) for g in range(n_tasks)]  # positions in idx
        out = Parallel(n_jobs=n_tasks)(
            delayed(_solve_part)(self.grid, int(self.secondary_nodes), rays, s, ray_ids[p],
                                 rev, jacobian)
            for p in pos
        )
        order = np.argsort(np.concatenate(pos), kind="stable")
        t = np.concatenate([o[0] for o in out])[order]
        J = sp.vstack([o[1] for o in out], format="csr")[order] if jacobian else None
        return t, J

    def _run_ttcrpy(
        self, s: np.ndarray, rays: np.ndarray, jacobian: bool
    ) -> tuple[np.ndarray, sp.csr_matrix | None]:
        """Times (and Jacobian) from ttcrpy's shortest-path method, ``n_jobs`` threads."""
        self._check_params()
        nz, nx = self.grid.shape
        tracer = self._ttcrpy_grid()
        s_xz = s.reshape(nz, nx).T.ravel()  # ttcrpy orders cells (x, z)
        if not jacobian:
            return np.asarray(tracer.raytrace(rays[:, :2], rays[:, 2:], slowness=s_xz)), None
        t, L = tracer.raytrace(rays[:, :2], rays[:, 2:], slowness=s_xz, compute_L=True)
        iz, ix = np.divmod(np.arange(nz * nx), nx)
        J = sp.csr_matrix(L)[:, ix * nz + iz]  # back to row-major cells
        J.sort_indices()
        return np.asarray(t, dtype=np.float64), J


@functools.lru_cache(maxsize=2)
def _import_pathfinding(required: bool = True) -> Any:
    """The compiled searches of the ``"numba"`` backend (None if not ``required``
    and numba cannot be imported)."""
    try:
        _pathfinding = importlib.import_module(f"{__package__}._pathfinding")
    except ImportError as exc:
        if not required:
            logger.debug("numba unavailable (%s): ShortestPath uses scipy's Dijkstra", exc)
            return None
        raise ImportError(
            "backend='numba' needs the numba package ('pip install numba'); importing "
            f"it failed ({exc}). Use backend='scipy' (or 'auto', which falls back to "
            "scipy when numba is missing)."
        ) from exc
    return _pathfinding


def _import_ttcrpy() -> Any:
    """``ttcrpy.rgrid``, or an ImportError that says how to get it."""
    try:
        import ttcrpy.rgrid as rgrid
    except ImportError as exc:
        raise ImportError(
            "backend='ttcrpy' needs the optional ttcrpy package (GPL-licensed: "
            "'pip install ttcrpy') and the system OpenCL loader library libOpenCL.so.1 "
            "(Debian/Ubuntu: 'apt install ocl-icd-libopencl1'); importing it failed "
            f"({exc}). Use backend='scipy' (or 'auto')."
        ) from exc
    return rgrid


@functools.lru_cache(maxsize=4)
def _worker_operator(grid: Grid2D, n: int) -> ShortestPath:
    """One operator per grid in each worker process, so its set-up is paid once."""
    return ShortestPath(grid, secondary_nodes=n, backend="scipy")


def _solve_part(
    grid: Grid2D, n: int, rays: np.ndarray, s: np.ndarray, idx: np.ndarray,
    from_receivers: bool, jacobian: bool,
) -> tuple[np.ndarray, sp.csr_matrix | None]:
    """Worker task of :meth:`ShortestPath._run`: rays ``idx`` of one root group."""
    op = _worker_operator(grid, n)
    return _solve(op._prepare(rays), s, idx, grid.n_cells, from_receivers, jacobian)


def _solve(
    prep: _Prepared, s: np.ndarray, idx: np.ndarray | None, n_cells: int,
    from_receivers: bool | None = None, jacobian: bool = True, threads: int | None = None,
) -> tuple[np.ndarray, sp.csr_matrix | None]:
    """Traveltimes and path-length Jacobian (None unless ``jacobian``) of rays ``idx``.

    ``threads`` None: scipy's Dijkstra from every root; otherwise the compiled
    searches of :mod:`._pathfinding` in that many threads.
    """
    roots, root_row, target = prep.select(idx, from_receivers)
    graph = prep.graph
    if threads is None:
        res = dijkstra(graph.matrix(s), directed=True, indices=roots,
                       return_predecessors=jacobian)
        dist, pred = res if jacobian else (res, None)
        t = dist[root_row, target]
    else:
        t, path_ray, path_edge = _import_pathfinding().shortest_paths(
            graph.indptr, graph.indices, graph.weights(s), prep.xz[0], prep.xz[1],
            float(s.min()),
            roots, root_row, target, graph.edge_of_pos if jacobian else None, threads)
    sl = slice(None) if idx is None else idx
    dl, dca, dcb = prep.direct_len[sl], prep.direct_ca[sl], prep.direct_cb[sl]
    direct = ~np.isnan(dl)
    if direct.any():
        tdir = np.where(direct, dl * np.minimum(s[dca], s[dcb]), np.inf)
        direct &= tdir < t
        t = np.where(direct, tdir, t)
        target = np.where(direct, roots[root_row], target)  # no graph path for those
    if not jacobian:
        return t, None
    if threads is None:
        J = _path_jacobian(graph, roots, root_row, target, pred, s, n_cells)
    else:
        keep = ~direct[path_ray]  # rays whose straight segment beat the graph
        J = _edges_jacobian(graph, path_ray[keep], path_edge[keep], s, t.size, n_cells)
    if direct.any():
        r = np.flatnonzero(direct)
        L, ca, cb = dl[r], dca[r], dcb[r]
        wa = np.where(s[ca] < s[cb], L, np.where(s[ca] > s[cb], 0.0, 0.5 * L))
        J = J + sp.csr_matrix(
            (np.concatenate([wa, L - wa]), (np.concatenate([r, r]), np.concatenate([ca, cb]))),
            shape=J.shape,
        )
        J.eliminate_zeros()
    return t, J


def _path_jacobian(
    graph: _Graph, roots: np.ndarray, root_row: np.ndarray, target: np.ndarray,
    pred: np.ndarray, s: np.ndarray, n_cells: int,
) -> sp.csr_matrix:
    """Path length of every ray in every cell, by predecessor backtracking.

    All rays step back together (one vectorised step per path edge), so the cost is
    ``O(longest path)`` NumPy calls whatever the number of rays.
    """
    n_rays = target.size
    ray = np.arange(n_rays)
    row = root_row
    cur = target
    live = cur != roots[row]
    ray, row, cur = ray[live], row[live], cur[live]
    rays_l, a_l, b_l = [], [], []
    while ray.size:
        prev = pred[row, cur]
        if (prev < 0).any():  # pragma: no cover - the grid graph is connected
            raise RuntimeError("shortest-path graph is disconnected")
        rays_l.append(ray)
        a_l.append(prev)
        b_l.append(cur)
        live = prev != roots[row]
        ray, row, cur = ray[live], row[live], prev[live]
    if not rays_l:
        return sp.csr_matrix((n_rays, n_cells))
    eid = graph.edge_ids(np.concatenate(a_l), np.concatenate(b_l))
    return _edges_jacobian(graph, np.concatenate(rays_l), eid, s, n_rays, n_cells)


def _edges_jacobian(
    graph: _Graph, ray: np.ndarray, eid: np.ndarray, s: np.ndarray, n_rays: int,
    n_cells: int,
) -> sp.csr_matrix:
    """Sum the lengths of the path edges ``eid`` of rays ``ray`` into their cells.

    A boundary edge is charged to the neighbour with the smaller slowness (half to
    each on a tie).
    """
    L = graph.length[eid]
    ca, cb = graph.cell_a[eid], graph.cell_b[eid]
    sa, sb = s[ca], s[cb]
    wa = np.where(sa < sb, L, np.where(sa > sb, 0.0, 0.5 * L))
    J = sp.csr_matrix(
        (np.concatenate([wa, L - wa]), (np.concatenate([ray, ray]), np.concatenate([ca, cb]))),
        shape=(n_rays, n_cells),
    )
    J.sum_duplicates()
    J.eliminate_zeros()
    return J
