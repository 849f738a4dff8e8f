"""Files: safe ``.npy`` loading, user tables, output-path checks and atomic saves.

Reading: :func:`load_plain_npy` (never unpickles) and :func:`read_table` (``.npy`` or
CSV/blank-separated text, with the file, line and problem in every error). Writing:
:func:`check_outputs` refuses unwritable or clashing output paths before any long
computation; :func:`save_npz`, :func:`save_figure` and :func:`save_prior` write
atomically (an existing file of that name is replaced only once the new one is
complete, and nothing is left behind on failure).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skvaeinv._validation import as_real_array

__all__ = ["InputError", "load_plain_npy", "read_table", "check_outputs", "check_folder",
           "check_figure_format", "atomic_path", "save_npz", "save_figure", "save_prior"]


class InputError(ValueError):
    """A user file or argument is malformed (exit code 2)."""


def load_plain_npy(path: Any, what: str, *, keep_dtype: bool = False) -> np.ndarray:
    """Load a ``.npy`` file safely (``allow_pickle=False``) as a real numeric array.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file.
    what : str
        What the file holds, for error messages (e.g. "training image").
    keep_dtype : bool, default=False
        Return the array with its stored (boolean, integer or float) dtype instead of
        float64.

    Returns
    -------
    ndarray
        The array, float64 unless ``keep_dtype``.

    Raises
    ------
    ValueError
        Naming ``what`` and the file, when it holds pickled objects or is not a real
        numeric array (strings, dates, complex or structured values are refused).
    """
    try:
        arr = np.load(path, allow_pickle=False)
        if arr.dtype.kind == "c":
            as_real_array(arr, f"{what} file {str(path)!r}")   # raises its complex error
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"its dtype is {arr.dtype}, not a number type")
        return arr if keep_dtype else arr.astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a plain numeric .npy array: "
                         f"{exc}") from exc


# --------------------------------------------------------------------------- reading
def read_table(path: str | os.PathLike, name: str, n_cols: int | None) -> np.ndarray:
    """Read a numeric table from ``.npy`` or CSV (optional header line, comma or blanks).

    Parameters
    ----------
    path : str or path-like
        A ``.npy`` file, or a text file: one row per line, fields separated by commas
        or blanks, ``#`` comment lines, an optional header line (no field a number)
        and an optional byte-order mark.
    name : str
        What the table holds, for error messages (e.g. "traveltimes").
    n_cols : int or None
        Columns expected; None takes the first row's count.

    Returns
    -------
    ndarray
        Float array of shape (n_rows, n_cols) (or (n_rows,) when ``n_cols`` is 1).

    Raises
    ------
    InputError
        Naming the file, the line and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name} file {str(path)!r} does not exist.")
    if not path.is_file():
        raise InputError(f"{name} file {str(path)!r} is not a file.")
    if path.suffix.lower() == ".npy":
        return _read_npy_table(path, name, n_cols)
    return _read_text_table(path, name, n_cols)


def _read_npy_table(path: Path, name: str, n_cols: int | None) -> np.ndarray:
    """:func:`read_table` of a ``.npy`` file."""
    try:
        arr = load_plain_npy(path, name)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if arr.size == 0:
        raise InputError(f"{name} file {str(path)!r} holds no data rows.")
    if n_cols == 1:
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
            raise InputError(f"{name} array in {str(path)!r} has shape {arr.shape}; "
                             "expected (n,) or (n, 1).")
        arr = arr.reshape(-1)
    elif arr.ndim != 2 or arr.shape[1] != n_cols:
        raise InputError(f"{name} array in {str(path)!r} has shape {arr.shape}; expected "
                         f"(n, {n_cols}).")
    bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
    if bad.any():
        raise InputError(f"{name} array in {str(path)!r} has NaN/inf in row(s) "
                         f"{np.flatnonzero(bad)[:10].tolist()}.")
    return arr


def _read_text_table(path: Path, name: str, n_cols: int | None) -> np.ndarray:
    """:func:`read_table` of a text file."""
    rows: list[list[float]] = []
    try:
        # utf-8-sig: spreadsheet programs write a byte-order mark ("CSV UTF-8")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} file {str(path)!r} is neither .npy nor UTF-8 text "
                         f"({exc.reason} at byte {exc.start}).") from None
    lines = [(lineno, line.strip()) for lineno, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.strip().startswith("#")]
    comma = any("," in line for _, line in lines)  # comments do not decide
    for k, (lineno, stripped) in enumerate(lines):
        fields = ([f.strip() for f in next(csv.reader([stripped]))] if comma
                  else stripped.split())
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if k == 0 and not any(_is_number(f) for f in fields):
                continue                      # a header line: no field is a number
            raise InputError(f"{str(path)!r}, line {lineno}: cannot read {stripped!r} as "
                             f"numbers.") from None
        want = n_cols if n_cols is not None else len(values)
        if len(values) != want:
            raise InputError(f"{str(path)!r}, line {lineno}: expected {want} column(s) "
                             f"({name}), found {len(values)}.")
        if not all(np.isfinite(values)):
            raise InputError(f"{str(path)!r}, line {lineno}: NaN or infinite value.")
        rows.append(values)
    if not rows:
        raise InputError(f"{name} file {str(path)!r} holds no data rows.")
    arr = np.asarray(rows, dtype=float)
    return arr[:, 0] if n_cols == 1 else arr


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- checks
def check_outputs(outputs: dict[str, str | None], inputs: Sequence[str | None]) -> None:
    """Refuse, before any long computation, output paths that cannot be written or that
    name an input file, a folder, or another output.

    Parameters
    ----------
    outputs : dict
        Each output's flag (for messages, e.g. ``"--out"``) mapped to its path, or to
        None when that output is not asked for.
    inputs : sequence of str or None
        The input files, which no output may replace.

    Raises
    ------
    InputError
        Naming the flag, the path and the problem.
    """
    taken = {Path(p).resolve(): "an input file" for p in inputs if p}
    for flag, value in outputs.items():
        if value is None:
            continue
        if not str(value).strip():
            raise InputError(f"{flag} is empty; give a file name.")
        path = Path(value)
        resolved = path.resolve()
        if resolved in taken:
            raise InputError(f"{flag} {value!r} is {taken[resolved]}; choose another name.")
        taken[resolved] = f"also the {flag} file"
        if path.is_dir():
            raise InputError(f"{flag} {value!r} is a folder; give a file name.")
        check_folder(path.parent, f"{flag} {value!r}")


def check_folder(folder: Path, what: str) -> None:
    """``folder`` exists as a writable folder, or can be made in a writable one.

    ``what`` starts the error message (an InputError).
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what}: {str(existing)!r} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what}: no permission to write in {str(existing)!r}.")


def check_figure_format(value: str, flag: str) -> None:
    """matplotlib is installed and can write ``value``'s format (else an InputError
    naming ``flag``)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(f"{flag} needs matplotlib: pip install 'skvaeinv[plot]'.") from None
    fmt = Path(value).suffix.lstrip(".").lower() or "png"
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise InputError(f"{flag} {value!r}: matplotlib cannot write '.{fmt}' files; use "
                         f"one of {', '.join('.' + f for f in sorted(formats))}.")


# --------------------------------------------------------------------------- writing
def atomic_path(target: Path) -> Path:
    """A temporary file next to ``target`` (renamed onto it once complete), with the
    permissions a plain new file gets (``mkstemp`` alone would make it owner-only)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix,
                               dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def save_figure(fig: Any, target: Path) -> None:
    """Save a matplotlib figure atomically to ``target`` (format from its suffix, PNG
    without one) and close it."""
    import matplotlib.pyplot as plt

    tmp = atomic_path(target)
    try:
        fig.savefig(tmp, dpi=100, format=target.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def save_prior(prior: Any, target: Path) -> None:
    """``prior.save`` (atomic already) to ``target``, creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prior.save(target)


def save_npz(target: Path, **arrays: Any) -> None:
    """Save ``arrays`` atomically to ``target`` as a compressed ``.npz`` file."""
    tmp = atomic_path(target)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
