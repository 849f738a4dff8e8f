"""The forward-operator protocol shared by every traveltime operator.

Writing your own operator
-------------------------
Subclass :class:`ForwardOperator`, store the constructor arguments unchanged (so that
:func:`sklearn.base.clone` and ``set_params`` work), set the class attribute
``is_linear`` and implement ``_jacobian(slowness, rays)`` returning a
:class:`scipy.sparse.csr_matrix` of shape ``(n_rays, n_cells)``. Public validation,
batching over models and the torch bridge (:class:`~skvaeinv.forward.TorchForward`) come
for free. A nonlinear operator usually also overrides ``_traveltimes_and_jacobian``
(one computation for both) and, if that is cheaper, ``_traveltimes``::

    class ConstantKernel(ForwardOperator):
        # one fixed sensitivity row per ray, for surveys of exactly these rays
        is_linear = True

        def __init__(self, grid, matrix):
            self.grid = grid
            self.matrix = matrix

        def _jacobian(self, slowness, rays):
            return scipy.sparse.csr_matrix(self.matrix)[: len(rays)]

:class:`MatrixOperator` is exactly that, for any precomputed sensitivity matrix.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from .._validation import as_real_array
from ..survey import Grid2D, _check_grid, _check_rays, _format_rows

__all__ = ["ForwardOperator", "MatrixOperator"]


class ForwardOperator(BaseEstimator):
    """Base class of traveltime forward operators.

    Every operator maps a slowness model on a :class:`~skvaeinv.survey.Grid2D` and a
    set of rays to first-arrival traveltimes, and provides the sparse Jacobian
    ``J`` (ray length in each cell) with ``t = J @ s``.

    Parameters
    ----------
    grid : Grid2D
        The model grid.

    Attributes
    ----------
    is_linear : bool
        Class attribute. True when the Jacobian does not depend on the slowness.

    Notes
    -----
    Slowness arguments are in ns/m (or any unit: times come out in slowness × metres)
    and may be given as one model, ``(nz, nx)`` or ``(n_cells,)``, or as a batch,
    ``(B, nz, nx)`` or ``(B, n_cells)``. Rays are ``(n_rays, 4)`` float arrays with the
    columns ``xs, zs, xr, zr`` (see :mod:`skvaeinv.survey`).

    Subclasses implement ``_jacobian(s, rays)`` (``s`` a validated flat float64 model
    or None for linear operators, ``rays`` validated) and optionally
    ``_traveltimes(S, rays)`` (``S`` of shape ``(B, n_cells)``) and
    ``_traveltimes_and_jacobian(s, rays)``.
    """

    is_linear: bool = False

    #: Instance attributes holding caches (rebuilt on demand, never pickled).
    _cache_attrs = ("_kernel_cache", "_prepared_cache", "_matrix_cache")

    def __init__(self, grid: Grid2D) -> None:
        self.grid = grid

    def __getstate__(self) -> dict:
        # a copy: BaseEstimator may hand back the live __dict__, whose caches must stay
        state = dict(super().__getstate__())
        for name in self._cache_attrs:
            state.pop(name, None)
        return state

    # -- public protocol ------------------------------------------------------------
    def traveltimes(self, slowness: Any, rays: Any) -> np.ndarray:
        """First-arrival traveltimes.

        Parameters
        ----------
        slowness : array-like of shape (nz, nx), (n_cells,), (B, nz, nx) or (B, n_cells)
            One slowness model, or a batch of ``B`` models. Must be finite and > 0.
        rays : array-like of shape (n_rays, 4)
            Columns ``xs, zs, xr, zr``.

        Returns
        -------
        times : ndarray of shape (n_rays,) or (B, n_rays)
            Traveltimes (slowness units × m; ns for ns/m), one row per model if batched.
        """
        grid = self._check_grid()
        S, batched = self._validate_slowness(slowness, grid)
        R = self.validate_rays(rays)
        if S.shape[0] == 0:  # an empty batch of models
            return np.empty((0, R.shape[0]))
        T = self._traveltimes(S, R)
        return T if batched else T[0]

    def jacobian(self, slowness: Any, rays: Any) -> sp.csr_matrix:
        """Sparse Jacobian ``dt/ds``: the length of each ray's path in each cell.

        Parameters
        ----------
        slowness : array-like of shape (nz, nx) or (n_cells,), or None
            One slowness model. Ignored (and may be None) for linear operators.
        rays : array-like of shape (n_rays, 4)
            Columns ``xs, zs, xr, zr``.

        Returns
        -------
        J : scipy.sparse.csr_matrix of shape (n_rays, n_cells)
            ``traveltimes(slowness, rays) == J @ slowness.ravel()``.
        """
        grid = self._check_grid()
        R = self.validate_rays(rays)
        if self.is_linear and slowness is None:
            return self._jacobian(None, R).copy()
        S, batched = self._validate_slowness(slowness, grid)
        if batched:
            if S.shape[0] != 1:
                raise ValueError(
                    f"slowness has shape {np.shape(slowness)}; jacobian takes one model, "
                    f"(nz, nx) = {grid.shape} or ({grid.n_cells},)."
                )
        J = self._jacobian(S[0], R)
        return J.copy() if self.is_linear else J

    def validate_rays(self, rays: Any) -> np.ndarray:
        """Check rays and return them as a float64 ``(n_rays, 4)`` array.

        Parameters
        ----------
        rays : array-like of shape (n_rays, 4) or (4,)
            Columns ``xs, zs, xr, zr``; a single ray may be given as a 1-D array of 4
            coordinates. Sources and receivers must lie within the grid extent (up to
            rounding, ``1e-6 * spacing``: such points are moved onto the edge).

        Returns
        -------
        rays : ndarray of shape (n_rays, 4)
            The rays as a C-contiguous float64 array.

        Raises
        ------
        ValueError
            For a wrong shape, NaN / inf coordinates, or sources / receivers outside
            the grid (the offending rows are named).
        """
        return _check_rays(self._check_grid(), rays)

    # -- defaults for subclasses -------------------------------------------------------
    def _jacobian(self, slowness: np.ndarray | None, rays: np.ndarray) -> sp.csr_matrix:
        raise NotImplementedError(
            f"{type(self).__name__} must implement _jacobian(slowness, rays)."
        )

    def _traveltimes(self, S: np.ndarray, rays: np.ndarray) -> np.ndarray:
        if self.is_linear:
            J = self._jacobian(None, rays)
            return np.asarray((J @ S.T).T)
        return np.stack([self._traveltimes_and_jacobian(s, rays)[0] for s in S])

    def _traveltimes_and_jacobian(
        self, slowness: np.ndarray, rays: np.ndarray
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        J = self._jacobian(None if self.is_linear else slowness, rays)
        return np.asarray(J @ slowness), J

    def _subset_evaluator(self, rays: np.ndarray):
        """A function ``(s, idx, jacobian=True) -> (t, J)`` for subsets ``idx`` of ``rays``.

        Used by the torch bridge for mini-batches (``rays`` are validated). With
        ``jacobian=False`` only the times are needed and ``J`` is None. The default
        evaluates ``rays[idx]`` from scratch; operators with per-survey set-up override it.
        """

        def evaluate(s: np.ndarray, idx: np.ndarray, jacobian: bool = True
                     ) -> tuple[np.ndarray, sp.csr_matrix | None]:
            if not jacobian:
                return self._traveltimes(s[None], rays[idx])[0], None
            return self._traveltimes_and_jacobian(s, rays[idx])

        return evaluate

    # -- helpers -------------------------------------------------------------------
    def _check_grid(self) -> Grid2D:
        return _check_grid(getattr(self, "grid", None))

    @staticmethod
    def _validate_slowness(slowness: Any, grid: Grid2D) -> tuple[np.ndarray, bool]:
        """Return ``(S, batched)`` with S a float64 ``(B, n_cells)`` array."""
        if slowness is None:
            raise ValueError("slowness is None; expected a slowness model (ns/m).")
        S = as_real_array(slowness, "slowness")
        N = grid.n_cells
        if S.shape == (N,) or S.shape == grid.shape:
            S, batched = S.reshape(1, N), False
        elif (S.ndim == 2 and S.shape[1] == N) or (S.ndim == 3 and S.shape[1:] == grid.shape):
            S, batched = S.reshape(S.shape[0], N), True
        else:
            raise ValueError(
                f"slowness has shape {S.shape}; expected {grid.shape}, ({N},), "
                f"(B, {grid.shape[0]}, {grid.shape[1]}) or (B, {N}) for grid {grid!r}."
            )
        bad = ~(np.isfinite(S) & (S > 0))
        if bad.any():
            idx = np.flatnonzero(bad.any(axis=0) if batched else bad[0])
            raise ValueError(
                f"slowness must be finite and > 0; cells {_format_rows(idx)} are not "
                f"(e.g. {S[bad][0]!r})."
            )
        return S, batched


def _rays_key(rays: np.ndarray) -> bytes:
    """A short digest identifying a validated ray array (for caches)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str(rays.shape).encode())
    h.update(rays.tobytes())
    return h.digest()


def _row_key(row: np.ndarray) -> bytes:
    """Bytes of one validated ray, with -0.0 read as 0.0 (equal coordinates, one key)."""
    return (row + 0.0).tobytes()


class _LRU:
    """A tiny least-recently-used cache (kept out of get_params), safe to share
    between threads (an operator may be called from several at once)."""

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


def _cache(obj: Any, name: str, maxsize: int = 4) -> _LRU:
    cache = obj.__dict__.get(name)
    if cache is None:
        cache = _LRU(maxsize)
        obj.__dict__[name] = cache
    return cache


class MatrixOperator(ForwardOperator):
    """A linear operator wrapping any precomputed sensitivity matrix.

    Ray ``i`` of the survey is identified by its coordinates: the rays passed to
    :meth:`traveltimes` / :meth:`jacobian` must be rows of ``rays`` (any subset, any
    order), so cross-validation splits of the survey work unchanged.

    Parameters
    ----------
    matrix : array-like or sparse matrix of shape (n_rays_total, n_cells)
        Sensitivity (ray length in each cell) of every ray of the survey.
    grid : Grid2D
        The model grid; ``matrix`` has ``grid.n_cells`` columns.
    rays : array-like of shape (n_rays_total, 4), default=None
        The coordinates of the rays behind the rows of ``matrix``. None means the rows
        are addressed by the rays' position: then only rays arrays of exactly
        ``n_rays_total`` rows are accepted and row ``i`` is ray ``i``.

    Notes
    -----
    ``matrix`` and ``rays`` are read once and kept while the operator holds the same
    objects (the cache is matched by identity, not by contents): after editing them in
    place, pass them again with ``set_params(matrix=..., rays=...)`` (a new array) for
    the operator to see it.

    Examples
    --------
    >>> import numpy as np
    >>> from skvaeinv.survey import Grid2D
    >>> from skvaeinv.forward import MatrixOperator
    >>> grid = Grid2D((2, 2), 1.0)
    >>> rays = np.array([[0, 0.5, 2, 0.5], [0, 1.5, 2, 1.5]])
    >>> op = MatrixOperator(np.array([[1., 1, 0, 0], [0, 0, 1, 1]]), grid, rays=rays)
    >>> op.traveltimes(np.full(4, 2.0), rays[::-1])
    array([4., 4.])
    """

    is_linear = True

    def __init__(self, matrix: Any, grid: Grid2D, rays: Any = None) -> None:
        self.matrix = matrix
        self.grid = grid
        self.rays = rays

    def _prepared(self) -> tuple[sp.csr_matrix, dict | None]:
        # One entry, holding the objects themselves and matched by identity (an id
        # alone could be reused by a new array once the old one is freed); replaced
        # whole, so threads sharing the operator see either entry complete.
        hit = self.__dict__.get("_matrix_cache")
        if hit is not None and hit[0] is self.matrix and hit[1] is self.rays \
                and hit[2] == self.grid:
            return hit[3], hit[4]
        grid = self._check_grid()
        M = sp.csr_matrix(self.matrix, dtype=np.float64)
        if not np.all(np.isfinite(M.data)):
            raise ValueError("matrix contains NaN or infinite sensitivities.")
        if M.shape[1] != grid.n_cells:
            raise ValueError(
                f"matrix has shape {M.shape}; expected (n_rays, {grid.n_cells}) for {grid!r}."
            )
        lookup = None
        if self.rays is not None:
            R = self.validate_rays(self.rays)
            if R.shape[0] != M.shape[0]:
                raise ValueError(
                    f"rays has {R.shape[0]} rows but matrix has {M.shape[0]}; they must match."
                )
            lookup = {_row_key(row): i for i, row in enumerate(R)}
        self.__dict__["_matrix_cache"] = (self.matrix, self.rays, self.grid, M, lookup)
        return M, lookup

    def _jacobian(self, slowness: np.ndarray | None, rays: np.ndarray) -> sp.csr_matrix:
        M, lookup = self._prepared()
        if lookup is None:
            if rays.shape[0] != M.shape[0]:
                raise ValueError(
                    f"rays has {rays.shape[0]} rows; without `rays` given at construction, "
                    f"MatrixOperator needs all {M.shape[0]} rays in order."
                )
            return M.copy()
        rows = np.array([lookup.get(_row_key(r), -1) for r in rays], dtype=np.int64)
        if (rows < 0).any():
            raise ValueError(
                f"rays rows {_format_rows(np.flatnonzero(rows < 0))} are not rays of this "
                "MatrixOperator's survey."
            )
        return M[rows]
