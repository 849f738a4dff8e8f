"""Checks of user input: arrays, integer pairs, finiteness and traveltimes.

Each check lives here once and raises a ``ValueError`` that names the parameter, the
value and what was expected; every public function that takes such input calls it.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
from sklearn.utils.validation import column_or_1d

from skvaeinv._device import is_device_error

__all__ = [
    "input_errors",
    "as_real_array",
    "int_pair",
    "whole_numbers",
    "check_finite",
    "check_traveltimes",
]


@contextlib.contextmanager
def input_errors(catch: type[BaseException] | tuple[type[BaseException], ...],
                 message: Any) -> Iterator[None]:
    """Turn ``catch`` exceptions raised in the block into ``ValueError(message(exc))``.

    For checks that run the user's input (a decoder, a petrophysics mapping) once: a
    failure there is the input's, and the message says how to fix it. Errors that say
    the device failed (:func:`is_device_error`) pass unchanged.

    Parameters
    ----------
    catch : exception type or tuple of types
        What the check blames on the input.
    message : callable
        ``message(exc) -> str``, the ValueError's text.

    Yields
    ------
    None
        Control, for the check.
    """
    try:
        yield
    except catch as exc:
        if is_device_error(exc):
            raise
        raise ValueError(message(exc)) from exc


def as_real_array(values: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return ``values`` as a real ``dtype`` array, or raise a ValueError naming ``name``.

    Complex input is refused rather than silently losing its imaginary part.
    """
    try:
        if np.iscomplexobj(values):
            raise ValueError(f"Complex data not supported: {name} must be real; pass "
                             f"np.real(...) or np.abs(...) if that is what you mean.")
        return np.asarray(values, dtype=dtype)
    except ValueError as exc:
        if str(exc).startswith("Complex data"):
            raise
        raise ValueError(f"{name} could not be converted to a float array: {exc}") from exc
    except TypeError as exc:
        raise ValueError(f"{name} could not be converted to a float array: {exc}") from exc
    except RuntimeError as exc:  # e.g. a torch tensor that requires grad
        raise ValueError(f"{name} could not be converted to a numpy array ({exc}); pass "
                         "tensor.detach() for a torch tensor.") from exc


def int_pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """``value`` as a pair of integers ``>= minimum``, or a ValueError naming ``name``.

    Integral floats (``64.0``) are accepted; ``2.7``, booleans, strings, NaN and
    sequences of another length are not.
    """
    items = whole_numbers(value, 2, minimum)
    if items is None:
        raise ValueError(f"{name} must be a pair of integers >= {minimum}, got {value!r}.")
    return items[0], items[1]


def whole_numbers(value: Any, length: int, minimum: float = -math.inf
                  ) -> tuple[int, ...] | None:
    """``value`` as ``length`` integers ``>= minimum``, or None if it is not that.

    Integral floats (``64.0``) count as integers; ``2.7``, booleans, strings and NaN
    do not.
    """
    try:
        items = list(value)
    except TypeError:
        return None
    ok = len(items) == length and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
        and float(v) == int(v) and int(v) >= minimum for v in items)
    return tuple(int(v) for v in items) if ok else None


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise a ValueError naming ``name`` if ``array`` holds NaN or inf."""
    if not np.all(np.isfinite(array)):
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s); remove or impute them first."
        )



def check_traveltimes(y: Any, name: str = "y", *, file_rows: bool = False) -> np.ndarray:
    """``y`` as a 1-D float64 array of finite, positive traveltimes (ns).

    Parameters
    ----------
    y : array-like of shape (n_rays,) or (n_rays, 1)
        Traveltimes in ns, one per ray.
    name : str, default="y"
        What ``y`` is called in error messages (a parameter or a file name).
    file_rows : bool, default=False
        Number the rows in error messages as the data rows of a file (from 1, "data
        row 5") instead of array rows (from 0, "row 4").

    Returns
    -------
    y : ndarray of shape (n_rays,)
        The traveltimes as float64.

    Raises
    ------
    ValueError
        For a shape other than a column, for NaN or infinite values, or for
        traveltimes <= 0 (naming how many and the first one's row and value).
    """
    try:
        y = column_or_1d(y, warn=True, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 1-D array of traveltimes (ns): {exc}") from exc
    row, first = ("data row", 1) if file_rows else ("row", 0)
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise ValueError(f"{name} contains NaN or infinity: {bad.size} value(s) (first at "
                         f"{row} {bad[0] + first}); traveltimes must be finite.")
    bad = np.flatnonzero(y <= 0)
    if bad.size:
        raise ValueError(f"{name}: {bad.size} non-positive traveltime(s), the first in {row} "
                         f"{bad[0] + first} ({y[bad[0]]:g} ns); traveltimes must be > 0 ns.")
    return y
