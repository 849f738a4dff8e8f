"""Field files: picked traveltimes with their sensors, read, written and simulated.

A survey's data are held in one small object, :class:`TraveltimeData`: sensor
positions, the source and receiver sensor of each pick, the picked times and (when
known) their errors. It gives the rays (scikit-learn's ``X``), the times (``y``) and the
standard deviation of each pick (``sigma``, from the file or an error model
``σ = a + r·t``).

Two file formats:

- pyGIMLi's unified data format for traveltimes (``.sgt``), :func:`read_sgt` /
  :func:`write_sgt`: a sensor block (a count, a token line such as ``# x y``, rows) and
  a data block (a count, a token line such as ``# s g t err valid``, rows; ``s`` and
  ``g`` are 1-based sensor numbers). pyGIMLi's conventions are the defaults: times and
  errors in seconds, the vertical coordinate growing upward (depths negative).
- A plain CSV pair, :func:`read_csv` / :func:`write_csv`: a sensor table (header
  ``x,z``) and a pick table (header ``source,receiver,time`` and optionally ``error``;
  sensor numbers from 1 as the rows of the sensor table), times in ns and ``z``
  positive downward by default.

Inside the package, as everywhere in skvaeinv, ``z`` is positive downward (metres) and
times are in ns. Every reading error names the file, the line and the fix.
:func:`simulate` makes synthetic field data (absolute plus relative noise) from a model
and a survey, to rehearse with.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skvaeinv._files import InputError, _is_number, atomic_path
from skvaeinv.survey import rays_from_sensors

__all__ = ["TraveltimeData", "read_sgt", "write_sgt", "read_csv", "write_csv", "simulate",
           "read_survey", "TIME_UNITS"]

logger = logging.getLogger(__name__)

#: Nanoseconds per unit of time.
TIME_UNITS = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}
#: Apparent velocities (m/s) that no traveltime survey can have: faster than light, or
#: slower than any wave in rock, soil or air; a median outside means a wrong time unit.
_VELOCITY_BOUNDS = (10.0, 3.0e8)
#: Typical apparent velocities (m/s) of radar and of seismic surveys, for the hint.
_TYPICAL_VELOCITIES = ((3.0e7, 2.0e8), (100.0, 8000.0))


@dataclass(frozen=True, eq=False)
class TraveltimeData:
    """Picked first-arrival times of a survey, with their sensors.

    Parameters
    ----------
    sensors : array-like of shape (n_sensors, 2)
        Sensor coordinates ``(x, z)`` in metres, ``z`` positive downward.
    source, receiver : array-like of int, shape (n_picks,)
        Index (from 0) into ``sensors`` of each pick's source and receiver.
    traveltimes : array-like of shape (n_picks,)
        Picked times in ns, finite and positive.
    errors : array-like of shape (n_picks,) or None, default=None
        Standard deviation of each pick in ns (finite, > 0), e.g. from the file.

    Attributes
    ----------
    rays : ndarray of shape (n_picks, 4)
        ``xs, zs, xr, zr`` of each pick (the estimators' ``X``).
    n_picks, n_sensors : int
        Number of picks and of sensors.

    Raises
    ------
    ValueError
        For shapes that do not match, indices out of range, a pick whose source is its
        receiver, the same (source, receiver) pair twice, or times or errors that are
        not finite and positive.

    Examples
    --------
    >>> from skvaeinv.io import TraveltimeData
    >>> data = TraveltimeData([[0, 1], [6.5, 2]], [0], [1], [85.0], errors=[0.25])
    >>> data.rays
    array([[0. , 1. , 6.5, 2. ]])
    >>> data.sigma(absolute=0.1, relative=0.01)
    array([0.95])
    """

    sensors: np.ndarray
    source: np.ndarray
    receiver: np.ndarray
    traveltimes: np.ndarray
    errors: np.ndarray | None = None

    def __post_init__(self) -> None:
        sensors = np.array(self.sensors, dtype=np.float64)
        if sensors.ndim != 2 or sensors.shape[1] != 2 or not np.isfinite(sensors).all():
            raise ValueError(f"sensors has shape {sensors.shape} or non-finite values; "
                             "expected finite (x, z) rows of shape (n_sensors, 2).")
        src, rec = (_indices(v, name, len(sensors)) for name, v in
                    (("source", self.source), ("receiver", self.receiver)))
        times = np.array(self.traveltimes, dtype=np.float64).reshape(-1)
        errors = None if self.errors is None else \
            np.array(self.errors, dtype=np.float64).reshape(-1)
        for name, arr in (("receiver", rec), ("traveltimes", times), ("errors", errors)):
            if arr is not None and arr.shape != src.shape:
                raise ValueError(f"{name} has {arr.size} values for {src.size} picks; "
                                 "expected one per pick.")
        for name, arr in (("traveltimes", times), ("errors", errors)):
            bad = np.array([]) if arr is None else np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
            if bad.size:
                raise ValueError(f"{name}: {bad.size} value(s) not finite and > 0 ns, the "
                                 f"first at pick {bad[0]} ({arr[bad[0]]!r}).")
        problem = _pair_problem(src, rec)
        if problem:
            raise ValueError(problem[1].format(a=f"pick {problem[0][0]}",
                                               b=f"pick {problem[0][-1]}"))
        for name, arr in (("sensors", sensors), ("source", src), ("receiver", rec),
                          ("traveltimes", times), ("errors", errors)):
            if arr is not None:
                arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def n_picks(self) -> int:
        """Number of picks."""
        return int(self.source.size)

    @property
    def n_sensors(self) -> int:
        """Number of sensors."""
        return int(self.sensors.shape[0])

    @property
    def rays(self) -> np.ndarray:
        """Rays ``xs, zs, xr, zr`` of the picks, shape ``(n_picks, 4)``."""
        return rays_from_sensors(self.sensors, self.source, self.receiver)

    def sigma(self, absolute: float | None = None, relative: float | None = None
              ) -> np.ndarray:
        """Standard deviation (ns) of each pick: the file's errors or an error model.

        Parameters
        ----------
        absolute : float or None, default=None
            ``a`` of the error model ``σ = a + r·t`` (ns).
        relative : float or None, default=None
            ``r`` of the error model (a fraction of the time, e.g. 0.01).

        Returns
        -------
        sigma : ndarray of shape (n_picks,)
            With neither given, the errors read from the file; else ``a + r·t``
            (a missing one counts as 0).

        Raises
        ------
        ValueError
            If neither is given and the data have no errors, or if the model gives a
            σ that is not positive.
        """
        if absolute is None and relative is None:
            if self.errors is None:
                raise ValueError("these data have no picking errors; give an error model "
                                 "(absolute=..., relative=...), e.g. absolute=0.25 (ns).")
            return np.array(self.errors)
        a, r = (0.0 if v is None else float(v) for v in (absolute, relative))
        if not (np.isfinite(a) and np.isfinite(r) and a >= 0 and r >= 0):
            raise ValueError(f"absolute={absolute!r} and relative={relative!r} must be "
                             "finite and >= 0.")
        sigma = a + r * self.traveltimes
        if not (sigma > 0).all():
            raise ValueError("the error model gives sigma = 0 for some picks; give "
                             "absolute > 0 or relative > 0.")
        return sigma

    def subset(self, picks: Any) -> "TraveltimeData":
        """The data of some picks (a boolean mask or indices), with all the sensors.

        Parameters
        ----------
        picks : array-like of bool or int
            Which picks to keep.

        Returns
        -------
        TraveltimeData
        """
        idx = np.arange(self.n_picks)[np.asarray(picks)]
        return TraveltimeData(self.sensors, self.source[idx], self.receiver[idx],
                              self.traveltimes[idx],
                              None if self.errors is None else self.errors[idx])

    @classmethod
    def from_rays(cls, rays: Any, traveltimes: Any, errors: Any = None
                  ) -> "TraveltimeData":
        """Data from rays ``(xs, zs, xr, zr)``: each distinct point becomes a sensor.

        Parameters
        ----------
        rays : array-like of shape (n_picks, 4)
            Source and receiver coordinates (m, ``z`` down).
        traveltimes : array-like of shape (n_picks,)
            Times (ns).
        errors : array-like of shape (n_picks,) or None, default=None
            Errors (ns).

        Returns
        -------
        TraveltimeData
            Sensors in order of first appearance (sources and receivers in pick order).
        """
        r = np.asarray(rays, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] != 4:
            raise ValueError(f"rays has shape {r.shape}; expected (n_picks, 4).")
        points = np.stack([r[:, :2], r[:, 2:]], axis=1).reshape(-1, 2)
        sensors, first, inverse = np.unique(points, axis=0, return_index=True,
                                            return_inverse=True)
        order = np.argsort(first)                    # sensors in order of appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        idx = rank[inverse.reshape(-1)].reshape(-1, 2)
        return cls(sensors[order], idx[:, 0], idx[:, 1], traveltimes, errors)


def _indices(values: Any, name: str, n_sensors: int) -> np.ndarray:
    arr = np.array(values).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all()
                and (arr == np.round(arr)).all()):
            raise ValueError(f"{name} must hold integer sensor indices.")
    arr = arr.astype(np.int64)
    bad = np.flatnonzero((arr < 0) | (arr >= n_sensors))
    if bad.size:
        raise ValueError(f"{name} index {arr[bad[0]]} (pick {bad[0]}) is outside "
                         f"[0, {n_sensors - 1}] for {n_sensors} sensors.")
    return arr


def _pair_problem(src: np.ndarray, rec: np.ndarray) -> tuple[list[int], str] | None:
    """The first pick whose source is its receiver, or the first repeated pair.

    Returns the picks involved and a message template with ``{a}`` and ``{b}``.
    """
    same = np.flatnonzero(src == rec)
    if same.size:
        return ([int(same[0])], f"{{a}} has the same sensor ({src[same[0]] + 1}) as source "
                "and receiver; remove it.")
    pairs = src.astype(np.int64) * (int(max(src.max(initial=0), rec.max(initial=0))) + 1) + rec
    _, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = pairs[first[counts > 1][0]]
        rows = np.flatnonzero(pairs == dup)
        return ([int(rows[0]), int(rows[1])],
                f"{{b}} repeats the source-receiver pair of {{a}} (sensors "
                f"{src[rows[0]] + 1} and {rec[rows[0]] + 1}); keep one pick per pair "
                "(e.g. their mean).")
    return None


# --------------------------------------------------------------------------- parsing
class _Table:
    """Columns read from a file, with the file line of each row (for messages)."""

    def __init__(self, path: Path, tokens: list[str], rows: list[list[str]],
                 lines: list[int]) -> None:
        self.path, self.tokens, self.rows, self.lines = path, tokens, rows, lines

    def column(self, token: str, what: str) -> np.ndarray:
        """The column ``token`` as floats; errors name the line."""
        j = self.tokens.index(token)
        out = np.empty(len(self.rows))
        for i, row in enumerate(self.rows):
            try:
                out[i] = float(row[j])
            except ValueError:
                raise InputError(f"{self.path}, line {self.lines[i]}: {what} "
                                 f"{row[j]!r} is not a number.") from None
        return out

    def require(self, needed: Sequence[str], example: str) -> None:
        missing = [t for t in needed if t not in self.tokens]
        if missing:
            raise InputError(f"{self.path}: the columns {self.tokens} lack "
                             f"{', '.join(map(repr, missing))}; expected e.g. {example}.")


def _sgt_blocks(path: Path) -> tuple[_Table, _Table]:
    """The sensor and data blocks of a ``.sgt`` file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not a text file ({exc}).") from None
    pos = 0
    blocks = []
    for what, example in (("sensor", "'# x y'"), ("data", "'# s g t err valid'")):
        pos, block = _sgt_block(path, lines, pos, what, example)
        blocks.append(block)
    rest = [i for i in range(pos, len(lines)) if _strip(lines[i])]
    if rest:
        logger.info("%s: ignored %d line(s) after the data block (from line %d)", path,
                    len(rest), rest[0] + 1)
    return blocks[0], blocks[1]


def _strip(line: str) -> str:
    """A line without its comment and surrounding blanks."""
    return line.split("#", 1)[0].strip()


def _sgt_block(path: Path, lines: list[str], pos: int, what: str, example: str
               ) -> tuple[int, _Table]:
    """One block (count, token line, rows) starting at line index ``pos``."""
    while pos < len(lines) and not _strip(lines[pos]):
        pos += 1
    if pos == len(lines):
        raise InputError(f"{path}: the file ends before the {what} block; expected a line "
                         f"with the number of {what} rows.")
    head = _strip(lines[pos]).split()
    if len(head) != 1 or not head[0].isdigit():
        raise InputError(f"{path}, line {pos + 1}: expected the number of {what} rows, "
                         f"found {lines[pos].strip()!r}.")
    count, pos = int(head[0]), pos + 1
    tokens = None   # the last comment line of names before the rows
    while pos < len(lines) and not _strip(lines[pos]):
        words = lines[pos].strip().lstrip("#").split()
        if lines[pos].strip().startswith("#") and words and \
                all(re.fullmatch(r"[A-Za-z_]\w*(/\w+)?", w) for w in words):
            tokens = [w.lower() for w in words]
        pos += 1
    if tokens is None:
        raise InputError(f"{path}, line {min(pos, len(lines) - 1) + 1}: the {what} block "
                         f"has no token line naming its columns; add one such as {example} "
                         "after the count.")
    rows, where = [], []
    while len(rows) < count and pos < len(lines):
        fields = _strip(lines[pos]).split()
        if fields:
            if len(fields) < len(tokens):
                raise InputError(f"{path}, line {pos + 1}: {len(fields)} values for the "
                                 f"{len(tokens)} columns {tokens}.")
            rows.append(fields)
            where.append(pos + 1)
        pos += 1
    if len(rows) < count:
        raise InputError(f"{path}: the {what} block announces {count} rows but the file "
                         f"ends after {len(rows)}; correct the count.")
    return pos, _Table(path, tokens, rows, where)


def _vertical_token(table: _Table) -> str:
    """The sensor column holding the vertical coordinate: ``y`` (pyGIMLi 2-D) or ``z``."""
    table.require(["x"], "'# x y'")
    have = [t for t in ("y", "z") if t in table.tokens]
    if not have:
        raise InputError(f"{table.path}: the sensor columns {table.tokens} have no "
                         "vertical coordinate; expected 'y' (pyGIMLi's 2-D) or 'z'.")
    if len(have) == 2:   # x y z: 2-D data keep one of them at zero
        for token in have:
            if not np.any(table.column(token, "coordinate")):
                return have[1 - have.index(token)]
        raise InputError(f"{table.path}: sensors have both y and z coordinates; this "
                         "package inverts 2-D surveys: keep x and one vertical column.")
    return have[0]


def _check_unit(path: Path, data: TraveltimeData, time_unit: str, lines: list[int]) -> None:
    """Refuse times whose apparent velocities no survey has (a wrong time unit)."""
    rays = data.rays
    dist = np.linalg.norm(rays[:, :2] - rays[:, 2:], axis=1)
    if not (dist > 0).any():
        return
    v = float(np.median(dist[dist > 0] / (data.traveltimes[dist > 0] * 1e-9)))
    lo, hi = _VELOCITY_BOUNDS
    if lo <= v <= hi:
        return
    hint = ""
    for unit, factor in TIME_UNITS.items():
        v_unit = v * TIME_UNITS[time_unit] / factor
        if any(a <= v_unit <= b for a, b in _TYPICAL_VELOCITIES):
            hint = f" With the times in {unit!r} they would be {v_unit:.3g} m/s."
            break
    raise InputError(
        f"{path}: read with the time unit {time_unit!r}, the picks give a median apparent "
        f"velocity of {v:.3g} m/s "
        f"({'faster than light' if v > hi else 'slower than sound in air'}), "
        f"so the times are not in {time_unit!r} (lines {lines[0]}-{lines[-1]}).{hint} "
        "Give the right time unit (time_unit=... / --time-unit).")


def _assemble(path: Path, sensors: np.ndarray, table: _Table, cols: dict[str, str],
              time_unit: str, one_based: bool = True) -> TraveltimeData:
    """Picks of ``table`` (columns named in ``cols``) as :class:`TraveltimeData`."""
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit={time_unit!r}; expected one of {list(TIME_UNITS)}.")
    keep = np.ones(len(table.rows), dtype=bool)
    if "valid" in table.tokens:
        keep = table.column("valid", "valid flag") != 0
        if not keep.all():
            logger.info("%s: dropped %d pick(s) marked valid == 0, kept %d", path,
                        int((~keep).sum()), int(keep.sum()))
    lines = [ln for ln, k in zip(table.lines, keep) if k]
    n = len(sensors)
    idx = []
    for key in ("s", "g"):
        col = table.column(cols[key], f"sensor number ({cols[key]})")[keep]
        bad = np.flatnonzero((col != np.round(col)) | (col < 1) | (col > n))
        if bad.size:
            raise InputError(f"{path}, line {lines[bad[0]]}: sensor number {col[bad[0]]:g} "
                             f"({cols[key]}) is not one of the {n} sensors (1 to {n}).")
        idx.append(col.astype(np.int64) - 1)
    values = {}
    for key in ("t", "err"):
        if key not in cols:
            continue
        col = table.column(cols[key], "time" if key == "t" else "error")[keep]
        bad = np.flatnonzero(~(np.isfinite(col) & (col > 0)))
        if bad.size:
            what = "time" if key == "t" else "error"
            raise InputError(f"{path}, line {lines[bad[0]]}: {what} {col[bad[0]]:g} must be "
                             f"finite and > 0; remove the pick or mark it valid = 0.")
        values[key] = col * TIME_UNITS[time_unit]
    problem = _pair_problem(*idx)
    if problem:
        raise InputError(f"{path}: " + problem[1].format(a=f"line {lines[problem[0][0]]}",
                                                         b=f"line {lines[problem[0][-1]]}"))
    data = TraveltimeData(sensors, idx[0], idx[1], values["t"], values.get("err"))
    _check_unit(path, data, time_unit, lines)
    return data


# --------------------------------------------------------------------------- .sgt
def read_sgt(path: str | os.PathLike, *, time_unit: str = "s", z_up: bool = True
             ) -> TraveltimeData:
    """Read picked traveltimes from pyGIMLi's unified data format (``.sgt``).

    Parameters
    ----------
    path : str or path-like
        The file: a sensor block (count, a token line naming the columns, e.g.
        ``# x y`` or ``# x z``, rows) then a data block (count, a token line, e.g.
        ``# s g t err valid``, rows). Columns may come in any order, extra columns are
        ignored, ``#`` comments and blank lines are allowed. ``s`` and ``g`` are sensor
        numbers from 1; ``t`` the times; ``err`` (optional) absolute errors in the
        unit of the times; rows with ``valid == 0`` are dropped (the count is logged).
    time_unit : {"s", "ms", "us", "ns"}, default="s"
        Unit of ``t`` and ``err`` (pyGIMLi's: seconds).
    z_up : bool, default=True
        The file's vertical coordinate grows upward, so depths are negative (pyGIMLi's
        convention); False: it is already a depth (positive downward).

    Returns
    -------
    TraveltimeData
        Sensors with ``z`` positive downward (m), times and errors in ns.

    Raises
    ------
    skvaeinv._files.InputError
        A ``ValueError`` naming the file, the line and the fix, for a missing count or
        token line, too few rows or values, sensor numbers out of range, a repeated
        source-receiver pair, times or errors that are negative, zero or NaN, or times
        whose apparent velocities show a wrong ``time_unit``.
    FileNotFoundError
        If there is no such file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skvaeinv.io import read_sgt
    >>> text = "2\\n# x y\\n0 -1\\n6.5 -1\\n1\\n# s g t err\\n1 2 1.0e-7 2.5e-10\\n"
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "survey.sgt"
    >>> _ = path.write_text(text)
    >>> data = read_sgt(path)
    >>> data.sensors.tolist(), data.traveltimes.tolist(), data.errors.tolist()
    ([[0.0, 1.0], [6.5, 1.0]], [100.0], [0.25])
    """
    path = Path(path)
    sens, picks = _sgt_blocks(path)
    vertical = _vertical_token(sens)
    x = sens.column("x", "coordinate")
    z = sens.column(vertical, "coordinate")
    sensors = np.column_stack([x, -z if z_up else z])
    picks.require(["s", "g", "t"], "'# s g t err valid'")
    cols = {k: k for k in ("s", "g", "t", "err") if k in picks.tokens}
    return _assemble(path, sensors, picks, cols, time_unit)


def write_sgt(path: str | os.PathLike, data: TraveltimeData, *, time_unit: str = "s",
              z_up: bool = True) -> None:
    """Write traveltime data in pyGIMLi's unified data format (``.sgt``).

    The sensor block has the token line ``# x y``: pyGIMLi's 2-D traveltime tools take
    the vertical coordinate from ``y`` (a ``z`` column would put every sensor at
    ``y = 0`` there). The data block is ``# s g t err valid`` (``err`` only where the
    data have errors). The file is written atomically.

    Parameters
    ----------
    path : str or path-like
        The file to write (replaced if it exists).
    data : TraveltimeData
        The data.
    time_unit : {"s", "ms", "us", "ns"}, default="s"
        Unit of the written times and errors.
    z_up : bool, default=True
        Write the vertical coordinate growing upward (depths negative), as pyGIMLi.
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit={time_unit!r}; expected one of {list(TIME_UNITS)}.")
    scale = 1.0 / TIME_UNITS[time_unit]
    z = -data.sensors[:, 1] if z_up else data.sensors[:, 1]
    out = [f"{data.n_sensors} # sensors", "# x y"]
    out += [f"{x:.10g} {v + 0.0:.10g}" for x, v in zip(data.sensors[:, 0], z)]
    has_err = data.errors is not None
    out += [f"{data.n_picks} # data", "# s g t " + ("err " if has_err else "") + "valid"]
    for i in range(data.n_picks):
        err = f" {data.errors[i] * scale:.10g}" if has_err else ""
        out.append(f"{data.source[i] + 1} {data.receiver[i] + 1} "
                   f"{data.traveltimes[i] * scale:.10g}{err} 1")
    _write_text(Path(path), "\n".join(out) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = atomic_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- CSV
def _read_csv_table(path: Path, example: str) -> _Table:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(i + 1, r) for i, r in enumerate(csv.reader(fh))
                    if r and any(f.strip() for f in r) and not r[0].lstrip().startswith("#")]
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not a text file ({exc}).") from None
    if not rows:
        raise InputError(f"{path} is empty; expected a header line such as {example}.")
    header = [h.strip().lower() for h in rows[0][1]]
    if any(_is_number(h) for h in header):
        raise InputError(f"{path}, line {rows[0][0]}: expected a header line naming the "
                         f"columns, such as {example}.")
    body = rows[1:]
    for line, r in body:
        if len(r) < len(header):
            raise InputError(f"{path}, line {line}: {len(r)} values for the "
                             f"{len(header)} columns {header}.")
    return _Table(path, header, [[f.strip() for f in r] for _, r in body],
                  [line for line, _ in body])


def read_csv(sensors_path: str | os.PathLike, picks_path: str | os.PathLike, *,
             time_unit: str = "ns", z_up: bool = False) -> TraveltimeData:
    """Read a survey from two CSV files: the sensors and the picks.

    Parameters
    ----------
    sensors_path : str or path-like
        Sensor table with a header naming the columns ``x`` and ``z`` (metres; other
        columns ignored); sensor ``k`` is the ``k``-th data row, counting from 1.
    picks_path : str or path-like
        Pick table with a header naming ``source``, ``receiver`` (sensor numbers from
        1), ``time`` and optionally ``error`` (absolute, same unit as the times) and
        ``valid`` (rows with 0 are dropped); other columns ignored, any order.
    time_unit : {"s", "ms", "us", "ns"}, default="ns"
        Unit of ``time`` and ``error``.
    z_up : bool, default=False
        The ``z`` column grows upward (depths negative); by default it is a depth.

    Returns
    -------
    TraveltimeData
        Sensors with ``z`` positive downward (m), times and errors in ns.

    Raises
    ------
    skvaeinv._files.InputError
        As :func:`read_sgt`, naming the file and line.
    """
    spath, ppath = Path(sensors_path), Path(picks_path)
    sens = _read_csv_table(spath, "'x,z'")
    sens.require(["x", "z"], "'x,z'")
    z = sens.column("z", "coordinate")
    sensors = np.column_stack([sens.column("x", "coordinate"), -z if z_up else z])
    picks = _read_csv_table(ppath, "'source,receiver,time,error'")
    picks.require(["source", "receiver", "time"], "'source,receiver,time,error'")
    cols = {"s": "source", "g": "receiver", "t": "time"}
    if "error" in picks.tokens:
        cols["err"] = "error"
    return _assemble(ppath, sensors, picks, cols, time_unit)


def write_csv(sensors_path: str | os.PathLike, picks_path: str | os.PathLike,
              data: TraveltimeData, *, time_unit: str = "ns") -> None:
    """Write a survey as the two CSV files that :func:`read_csv` reads (``z`` down).

    Parameters
    ----------
    sensors_path, picks_path : str or path-like
        Files to write (replaced if they exist), atomically.
    data : TraveltimeData
        The data.
    time_unit : {"s", "ms", "us", "ns"}, default="ns"
        Unit of the written times and errors.
    """
    if time_unit not in TIME_UNITS:
        raise ValueError(f"time_unit={time_unit!r}; expected one of {list(TIME_UNITS)}.")
    scale = 1.0 / TIME_UNITS[time_unit]
    sensors = ["x,z"] + [f"{x:.10g},{z:.10g}" for x, z in data.sensors]
    head = "source,receiver,time" + (",error" if data.errors is not None else "")
    picks = [head]
    for i in range(data.n_picks):
        err = "" if data.errors is None else f",{data.errors[i] * scale:.10g}"
        picks.append(f"{data.source[i] + 1},{data.receiver[i] + 1},"
                     f"{data.traveltimes[i] * scale:.10g}{err}")
    _write_text(Path(sensors_path), "\n".join(sensors) + "\n")
    _write_text(Path(picks_path), "\n".join(picks) + "\n")


def read_survey(path: str | os.PathLike, *, time_unit: str | None = None,
                z_up: bool | None = None) -> TraveltimeData:
    """Read a ``.sgt`` file, or a CSV pick table with its sensor table beside it.

    Parameters
    ----------
    path : str or path-like
        A ``.sgt`` file (:func:`read_sgt`), or a CSV pick table ``NAME.csv`` whose
        sensors are in ``NAME_sensors.csv`` next to it (:func:`read_csv`).
    time_unit : str or None, default=None
        None: each format's default (seconds for ``.sgt``, ns for CSV).
    z_up : bool or None, default=None
        None: each format's default (up for ``.sgt``, down for CSV).

    Returns
    -------
    TraveltimeData
    """
    path = Path(path)
    if path.suffix.lower() == ".sgt":
        return read_sgt(path, time_unit=time_unit or "s",
                        z_up=True if z_up is None else z_up)
    if path.suffix.lower() == ".csv":
        sensors = path.with_name(path.stem + "_sensors.csv")
        if not sensors.is_file():
            raise InputError(f"{path}: a CSV pick table needs its sensor table beside it, "
                             f"{sensors.name} (columns x,z), which does not exist.")
        return read_csv(sensors, path, time_unit=time_unit or "ns",
                        z_up=False if z_up is None else z_up)
    raise InputError(f"{path}: unknown survey format {path.suffix!r}; expected .sgt "
                     "(pyGIMLi) or .csv (with NAME_sensors.csv beside it).")


# --------------------------------------------------------------------------- simulate
def simulate(forward: Any, slowness: Any, sensors: Any, source: Any, receiver: Any, *,
             absolute: float = 0.0, relative: float = 0.0,
             random_state: int | np.random.Generator | None = None) -> TraveltimeData:
    """Synthetic field data: traveltimes through a model plus picking noise.

    Parameters
    ----------
    forward : ForwardOperator
        The physics, e.g. :class:`~skvaeinv.forward.ShortestPath` on the model's grid.
    slowness : array-like
        Slowness model (ns/m) in the operator's layout (an image or flat cells).
    sensors : array-like of shape (n_sensors, 2)
        Sensor coordinates ``(x, z)`` (m, ``z`` down), inside the grid.
    source, receiver : array-like of int, shape (n_picks,)
        Sensor index (from 0) of each pick's source and receiver.
    absolute, relative : float, default=0.0
        Noise standard deviation ``σ = absolute + relative · t`` (ns; a fraction).
        The picks' ``errors`` are this σ (None when it is 0).
    random_state : int, Generator or None, default=None
        Seeds the noise.

    Returns
    -------
    TraveltimeData
        The noisy times and their errors.

    Raises
    ------
    ValueError
        For negative noise levels, or noise that made a time non-positive (lower it).
    """
    exact = TraveltimeData(sensors, source, receiver,
                           np.ones(np.size(source)))   # checks the geometry
    t = np.asarray(forward.traveltimes(np.asarray(slowness, dtype=np.float64), exact.rays),
                   dtype=np.float64)
    if absolute < 0 or relative < 0 or not np.isfinite([absolute, relative]).all():
        raise ValueError(f"absolute={absolute!r} and relative={relative!r} must be finite "
                         "and >= 0.")
    sigma = absolute + relative * t
    rng = np.random.default_rng(random_state)
    noisy = t + sigma * rng.standard_normal(t.shape)
    if not (noisy > 0).all():
        raise ValueError("the noise made some times <= 0; lower absolute/relative.")
    return TraveltimeData(exact.sensors, exact.source, exact.receiver, noisy,
                          sigma if (sigma > 0).all() else None)
