"""Survey geometry: the model grid and crosshole ray layouts.

Coordinates are in metres, ``x`` to the right and ``z`` positive *downward*; a model
image is stored row-major with row 0 at the top, so cell ``(iz, ix)`` has the flat
index ``iz * nx + ix``.

Rays are plain float arrays of shape ``(n_rays, 4)`` with the columns
``xs, zs, xr, zr`` (source then receiver). They are scikit-learn's ``X``: splitting
them in cross-validation splits the survey's data.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from skvaeinv._validation import as_real_array

__all__ = ["Grid2D", "crosshole", "grid_for_sensors", "rays_from_sensors"]

#: Relative tolerance (in units of the cell size) for "on the grid boundary" tests.
_BOUNDARY_RTOL = 1e-9
#: Points this far beyond the extent (relative to the spacing) still count as inside:
#: well above float32 rounding of boundary coordinates (~6e-8 relative), as loose as the
#: shortest-path node snapping; _check_rays (hence ForwardOperator.validate_rays) moves
#: such points onto the edge.
_CONTAINS_RTOL = 1e-6


class Grid2D:
    """A regular 2-D grid of square cells, row 0 at the top, ``z`` positive downward.

    Parameters
    ----------
    shape : tuple of int, default=(129, 65)
        Number of cells ``(nz, nx)``: rows (depth) then columns.
    spacing : float, default=0.1
        Side length of the square cells, in metres.
    origin : tuple of float, default=(0.0, 0.0)
        ``(x0, z0)``: coordinates of the top-left corner of the grid, in metres.

    Attributes
    ----------
    nz, nx : int
        Rows and columns of cells.
    n_cells : int
        ``nz * nx``; the length of a flat slowness vector.
    x_edges : ndarray of shape (nx + 1,)
        Cell boundaries along ``x``.
    z_edges : ndarray of shape (nz + 1,)
        Cell boundaries along ``z``.
    x_centers, z_centers : ndarray
        Cell centres.
    extent : tuple of float
        ``(x_min, x_max, z_min, z_max)``.

    Examples
    --------
    >>> from skvaeinv.survey import Grid2D
    >>> grid = Grid2D(shape=(129, 65), spacing=0.1)
    >>> grid.n_cells, grid.extent
    (8385, (0.0, 6.5, 0.0, 12.9))
    """

    def __init__(
        self,
        shape: tuple[int, int] = (129, 65),
        spacing: float = 0.1,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        try:
            shp = tuple(shape)
        except TypeError:
            shp = ()
        if (
            len(shp) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shp)
            or min(shp) < 1
        ):
            raise ValueError(
                f"shape={shape!r} is not valid; expected a pair of positive integers "
                "(nz, nx)."
            )
        if (
            not isinstance(spacing, numbers.Real)
            or isinstance(spacing, bool)
            or not np.isfinite(spacing)
            or spacing <= 0
        ):
            raise ValueError(
                f"spacing={spacing!r} is not valid; expected a finite float > 0 (metres)."
            )
        try:
            org = tuple(float(v) for v in origin)
        except (TypeError, ValueError):
            org = ()
        if len(org) != 2 or not np.all(np.isfinite(org)):
            raise ValueError(
                f"origin={origin!r} is not valid; expected two finite floats (x0, z0)."
            )
        self.shape = (int(shp[0]), int(shp[1]))
        self.spacing = float(spacing)
        self.origin = (org[0], org[1])

    # -- basic properties -------------------------------------------------------------
    @property
    def nz(self) -> int:
        """Number of cell rows (depth)."""
        return self.shape[0]

    @property
    def nx(self) -> int:
        """Number of cell columns."""
        return self.shape[1]

    @property
    def n_cells(self) -> int:
        """Number of cells, ``nz * nx``."""
        return self.shape[0] * self.shape[1]

    @property
    def x_edges(self) -> np.ndarray:
        """Cell boundaries along ``x``, shape ``(nx + 1,)``."""
        return self.origin[0] + self.spacing * np.arange(self.nx + 1)

    @property
    def z_edges(self) -> np.ndarray:
        """Cell boundaries along ``z``, shape ``(nz + 1,)``."""
        return self.origin[1] + self.spacing * np.arange(self.nz + 1)

    @property
    def x_centers(self) -> np.ndarray:
        """Cell centres along ``x``, shape ``(nx,)``."""
        return self.origin[0] + self.spacing * (np.arange(self.nx) + 0.5)

    @property
    def z_centers(self) -> np.ndarray:
        """Cell centres along ``z``, shape ``(nz,)``."""
        return self.origin[1] + self.spacing * (np.arange(self.nz) + 0.5)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """``(x_min, x_max, z_min, z_max)`` of the grid, in metres."""
        x0, z0 = self.origin
        return (x0, x0 + self.nx * self.spacing, z0, z0 + self.nz * self.spacing)

    # -- geometry helpers --------------------------------------------------------------
    def contains(self, points: Any) -> np.ndarray:
        """Whether points lie inside the grid (boundary included).

        Parameters
        ----------
        points : array-like of shape (n, 2) or (2,)
            ``(x, z)`` coordinates in metres.

        Returns
        -------
        inside : ndarray of bool, shape (n,) (or a 0-d array for a single point)
            False for points outside the grid and for NaN / inf coordinates. A tolerance
            of ``1e-6 * spacing`` absorbs rounding on the boundary (e.g. sensors on the
            edge given in float32).
        """
        pts = np.asarray(points, dtype=float)
        if pts.shape[-1:] != (2,):
            raise ValueError(
                f"points has shape {pts.shape}; expected (n, 2) with columns (x, z)."
            )
        tol = _CONTAINS_RTOL * self.spacing
        xmin, xmax, zmin, zmax = self.extent
        with np.errstate(invalid="ignore"):
            return (
                np.isfinite(pts).all(axis=-1)
                & (pts[..., 0] >= xmin - tol)
                & (pts[..., 0] <= xmax + tol)
                & (pts[..., 1] >= zmin - tol)
                & (pts[..., 1] <= zmax + tol)
            )

    def cell_index(self, points: Any) -> np.ndarray:
        """Flat index ``iz * nx + ix`` of the cell holding each point.

        A point on a cell boundary belongs to the cell with the lower index (above /
        to the left), except on the grid's top and left edges.

        Parameters
        ----------
        points : array-like of shape (n, 2)
            ``(x, z)`` coordinates inside the grid.

        Returns
        -------
        index : ndarray of int, shape (n,)
            Flat (row-major) index of the cell holding each point.
        """
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        inside = self.contains(pts)
        if not inside.all():
            bad = np.flatnonzero(~inside)
            raise ValueError(
                f"points rows {_format_rows(bad)} lie outside the grid extent "
                f"{self.extent} (or are not finite)."
            )
        ix = _lower_cell(pts[:, 0], self.origin[0], self.spacing, self.nx)
        iz = _lower_cell(pts[:, 1], self.origin[1], self.spacing, self.nz)
        return iz * self.nx + ix

    # -- value semantics ----------------------------------------------------------------
    def _key(self) -> tuple:
        return (self.shape, self.spacing, self.origin)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid2D) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Grid2D(shape={self.shape}, spacing={self.spacing}, origin={self.origin})"


def _lower_cell(coord: np.ndarray, start: float, h: float, n: int) -> np.ndarray:
    """Cell index along one axis; on a cell boundary pick the lower index."""
    q = (coord - start) / h
    r = np.round(q)
    q = np.where(np.abs(q - r) <= _BOUNDARY_RTOL * np.maximum(1.0, np.abs(q)), r, q)
    return np.clip(np.ceil(q).astype(np.int64) - 1, 0, n - 1)


def _format_rows(rows: np.ndarray, limit: int = 10) -> str:
    rows = np.asarray(rows)
    head = ", ".join(str(int(r)) for r in rows[:limit])
    more = f", ... ({rows.size} in all)" if rows.size > limit else ""
    return f"[{head}{more}]"


def _check_grid(grid: Any) -> Grid2D:
    if not isinstance(grid, Grid2D):
        raise ValueError(f"grid={grid!r} is not valid; expected a skvaeinv.survey.Grid2D.")
    return grid


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.atleast_1d(as_real_array(values, name))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} has shape {np.shape(values)}; expected a non-empty 1-D array.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values; expected finite coordinates.")
    return arr


def crosshole(
    grid: Grid2D,
    depths: Any,
    source_x: float | None = None,
    receiver_x: float | None = None,
    receiver_depths: Any = None,
) -> np.ndarray:
    """Rays of a crosshole survey: every source to every receiver, source-major.

    Parameters
    ----------
    grid : Grid2D
        The model grid; all sensors must lie inside it (boundary included).
    depths : array-like of shape (n_sources,)
        Source depths ``z`` in metres (positive downward).
    source_x : float, default=None
        ``x`` of the source borehole. None means the grid's left edge.
    receiver_x : float, default=None
        ``x`` of the receiver borehole. None means the grid's right edge.
    receiver_depths : array-like of shape (n_receivers,), default=None
        Receiver depths; None means the same as ``depths``.

    Returns
    -------
    rays : ndarray of shape (n_sources * n_receivers, 4)
        Columns ``xs, zs, xr, zr``; ray ``i * n_receivers + j`` joins source ``i`` to
        receiver ``j``.

    Examples
    --------
    >>> import numpy as np
    >>> from skvaeinv.survey import Grid2D, crosshole
    >>> grid = Grid2D((129, 65), 0.1)
    >>> rays = crosshole(grid, np.arange(0.5, 12.51, 0.5), source_x=0.01, receiver_x=6.49)
    >>> rays.shape
    (625, 4)
    """
    grid = _check_grid(grid)
    zs = _as_1d(depths, "depths")
    zr = zs if receiver_depths is None else _as_1d(receiver_depths, "receiver_depths")
    xmin, xmax, _, _ = grid.extent
    xs = xmin if source_x is None else source_x
    xr = xmax if receiver_x is None else receiver_x
    for name, val in (("source_x", xs), ("receiver_x", xr)):
        if not isinstance(val, numbers.Real) or not np.isfinite(val):
            raise ValueError(f"{name}={val!r} is not valid; expected a finite float (metres).")
    rays = np.empty((zs.size * zr.size, 4))
    rays[:, 0] = float(xs)
    rays[:, 1] = np.repeat(zs, zr.size)
    rays[:, 2] = float(xr)
    rays[:, 3] = np.tile(zr, zs.size)
    _check_rays(grid, rays, snap=False)
    return rays


def grid_for_sensors(sensors: Any, shape: tuple[int, int], spacing: float) -> Grid2D:
    """The grid of a prior's images placed over a survey's sensors.

    The grid has the prior's image ``shape`` and cell size ``spacing``; it is centred on
    the sensors' bounding box, so sensors on both boreholes (or at the surface) lie
    inside it with equal margins.

    Parameters
    ----------
    sensors : array-like of shape (n_sensors, 2)
        Sensor coordinates ``(x, z)`` in metres, ``z`` positive downward.
    shape : tuple of int
        ``(nz, nx)`` cells, e.g. ``prior.image_shape_``.
    spacing : float
        Cell size in metres (the scale the prior's patterns were learned at).

    Returns
    -------
    Grid2D
        Covering every sensor.

    Raises
    ------
    ValueError
        If the sensors span more than the grid (naming both extents and the smallest
        cell size that would cover them).

    Examples
    --------
    >>> from skvaeinv.survey import grid_for_sensors
    >>> grid_for_sensors([[0.0, 0.5], [6.5, 12.5]], (129, 65), 0.1)
    Grid2D(shape=(129, 65), spacing=0.1, origin=(0.0, 0.05))
    """
    sens = as_real_array(sensors, "sensors")
    if sens.ndim != 2 or sens.shape[1] != 2 or sens.shape[0] == 0 or \
            not np.isfinite(sens).all():
        raise ValueError(f"sensors has shape {sens.shape} or non-finite values; expected "
                         "finite (x, z) rows of shape (n_sensors, 2).")
    grid = Grid2D(shape, spacing)
    lo, hi = sens.min(axis=0), sens.max(axis=0)
    size = np.array([grid.nx, grid.nz]) * grid.spacing
    span = hi - lo
    if (span > size * (1 + _CONTAINS_RTOL)).any():
        need = float(np.max(span / np.array([grid.nx, grid.nz])))
        raise ValueError(
            f"the sensors span {span[0]:g} m x {span[1]:g} m (x, z) but a grid of "
            f"{grid.nz} x {grid.nx} cells of {spacing:g} m covers {size[0]:g} m x "
            f"{size[1]:g} m; use cells of at least {need:.4g} m or a prior of larger "
            "images.")
    origin = np.round((lo + hi) / 2 - size / 2, 9)   # no float dust in the origin
    return Grid2D(grid.shape, grid.spacing, origin=(float(origin[0]) + 0.0, float(origin[1]) + 0.0))


def rays_from_sensors(sensors: Any, s_idx: Any, g_idx: Any) -> np.ndarray:
    """Rays from sensor positions plus source / receiver indices (pyGIMLi's layout).

    Parameters
    ----------
    sensors : array-like of shape (n_sensors, 2)
        Sensor coordinates ``(x, z)`` in metres, ``z`` positive downward.
    s_idx, g_idx : array-like of int, shape (n_rays,)
        Index into ``sensors`` of each ray's source (``s``) and receiver (``g``).

    Returns
    -------
    rays : ndarray of shape (n_rays, 4)
        Columns ``xs, zs, xr, zr``.

    Examples
    --------
    >>> from skvaeinv.survey import rays_from_sensors
    >>> rays_from_sensors([[0, 1], [6.5, 2]], [0, 0], [1, 1]).shape
    (2, 4)
    """
    sens = as_real_array(sensors, "sensors")
    if sens.ndim != 2 or sens.shape[1] != 2:
        raise ValueError(f"sensors has shape {sens.shape}; expected (n_sensors, 2) as (x, z).")
    if not np.isfinite(sens).all():
        bad = np.flatnonzero(~np.isfinite(sens).all(axis=1))
        raise ValueError(f"sensors rows {_format_rows(bad)} contain NaN or inf coordinates.")
    idx = []
    for name, val in (("s_idx", s_idx), ("g_idx", g_idx)):
        arr = np.atleast_1d(np.asarray(val))
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) and not (
            np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr))
            and np.all(arr == np.round(arr))
        ):
            raise ValueError(f"{name} must be a 1-D array of integer sensor indices.")
        if arr.size and (arr.min() < 0 or arr.max() >= sens.shape[0]):   # before the cast
            raise ValueError(
                f"{name} holds indices outside [0, {sens.shape[0] - 1}] "
                f"(min {arr.min().item()!r}, max {arr.max().item()!r})."
            )
        idx.append(arr.astype(np.int64))
    if idx[0].shape != idx[1].shape:
        raise ValueError(
            f"s_idx and g_idx must have the same length; got {idx[0].size} and {idx[1].size}."
        )
    return np.hstack([sens[idx[0]], sens[idx[1]]])


def _check_rays(grid: Grid2D, rays: Any, *, snap: bool = True) -> np.ndarray:
    """Check rays on ``grid``; return them as a C-contiguous float64 ``(n_rays, 4)`` array.

    The one check of rays behind :meth:`ForwardOperator.validate_rays
    <skvaeinv.forward.ForwardOperator.validate_rays>` and :func:`crosshole`: the shape
    (a single ray may be a 1-D array of 4 coordinates), finite coordinates and sources
    and receivers within the grid extent (:meth:`Grid2D.contains`, up to
    ``1e-6 * spacing``). With ``snap``, points within that tolerance beyond the edge are
    moved onto it, so no operator (or external backend) sees a point outside the grid.

    Raises
    ------
    ValueError
        For a wrong shape, NaN / inf coordinates, or sources / receivers outside the
        grid (the offending rows are named).
    """
    R = as_real_array(rays, "rays")
    if R.ndim == 1 and R.shape == (4,):
        R = R[None, :]
    if R.ndim != 2 or R.shape[1] != 4:
        raise ValueError(
            f"rays has shape {R.shape}; expected (n_rays, 4) with columns xs, zs, xr, zr."
        )
    finite = np.isfinite(R).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"rays rows {_format_rows(np.flatnonzero(~finite))} contain NaN or inf "
            "coordinates."
        )
    inside = grid.contains(R[:, :2]) & grid.contains(R[:, 2:])
    if not inside.all():
        raise ValueError(
            f"rays rows {_format_rows(np.flatnonzero(~inside))} have a source or "
            f"receiver outside the grid extent {grid.extent} (x_min, x_max, z_min, z_max)."
        )
    if snap:
        x0, x1, z0, z1 = grid.extent
        lo, hi = np.array([x0, z0, x0, z0]), np.array([x1, z1, x1, z1])
        if ((R < lo) | (R > hi)).any():
            R = np.clip(R, lo, hi)
    return np.ascontiguousarray(R)
