"""Pattern statistics of facies images: does a prior draw images like its training image?

A prior is only as good as the patterns it reproduces. These functions measure, on
stacks of images in [0, 1] (1 = channel), the statistics geostatisticians compare a
generator's output with its training image by: the channel proportion, the two-point
(non-centred indicator covariance) probability ``P(m(u) = 1 and m(u + h) = 1)`` and the
indicator variogram ``0.5 E[(m(u) - m(u + h))^2]`` as functions of the lag ``h`` along
depth (``"z"``, the rows) or across (``"x"``, the columns). Images are thresholded at
``threshold`` first (the usual practice for decoded, slightly blurred images); with
``threshold=None`` the values are used as they are.

Every pixel pair at a given lag within each image counts once; pairs never straddle two
images.

Examples
--------
>>> from skvaeinv.datasets import make_channels
>>> from skvaeinv.metrics import compare_pattern_statistics, pattern_statistics
>>> train = pattern_statistics(make_channels(200, shape=(33, 17), random_state=0), max_lag=8)
>>> train["two_point_z"].shape
(9,)
>>> other = pattern_statistics(make_channels(200, shape=(33, 17), random_state=1), max_lag=8)
>>> errors = compare_pattern_statistics(other, train)
>>> print(f"{errors['proportion_rel_error']:.3f}, {errors['two_point_z_max_rel_error']:.3f}")
0.024, 0.056
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from skvaeinv._validation import as_real_array

__all__ = ["two_point_probability", "indicator_variogram", "pattern_statistics",
           "compare_pattern_statistics"]

_AXES = {"z": 1, "x": 2}
#: Values strictly between these bounds count as undecided (neither channel nor matrix).
UNDECIDED = (0.1, 0.9)


def _check_images(images: Any) -> np.ndarray:
    """``(n, H, W)`` float array in [0, 1] from ``(n, H, W)`` or one ``(H, W)`` image."""
    X = as_real_array(images, "images")
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3 or X.size == 0:
        raise ValueError(
            f"images must be one image (H, W) or a stack (n, H, W) with at least one "
            f"pixel; got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("images contain NaN or inf; pass finite values in [0, 1].")
    if X.min() < 0 or X.max() > 1:
        raise ValueError(
            f"images must hold values in [0, 1] (1 = channel); got values in "
            f"[{X.min():.3g}, {X.max():.3g}].")
    return X


def _indicator(X: np.ndarray, threshold: float | None) -> np.ndarray:
    """Boolean channel indicator (``X >= threshold``), or ``X`` itself for None."""
    if threshold is None:
        return X
    if (isinstance(threshold, bool) or not isinstance(threshold, numbers.Real)
            or not 0 < threshold <= 1):
        raise ValueError(f"threshold must be a number in (0, 1] or None; got {threshold!r}.")
    return X >= threshold


def _lag_pairs(X: np.ndarray, max_lag: Any, axis: Any):
    """The pairs ``(m(u), m(u + h))`` as two views, for h = 0..max_lag along ``axis``."""
    if axis not in _AXES:
        raise ValueError(f"axis must be 'z' (along depth, rows) or 'x' (columns); "
                         f"got {axis!r}.")
    ax = _AXES[axis]
    size = X.shape[ax]
    if (isinstance(max_lag, bool) or not isinstance(max_lag, numbers.Integral)
            or not 0 <= max_lag < size):
        raise ValueError(
            f"max_lag must be an integer in [0, {size - 1}] for images of {size} pixels "
            f"along {axis!r}; got {max_lag!r}.")
    for h in range(int(max_lag) + 1):
        head = [slice(None)] * 3
        tail = [slice(None)] * 3
        head[ax], tail[ax] = slice(0, size - h), slice(h, size)
        yield X[tuple(head)], X[tuple(tail)]


def _two_point(b: np.ndarray, max_lag: Any, axis: Any) -> np.ndarray:
    """:func:`two_point_probability` of a checked indicator (boolean: exact counts)."""
    if b.dtype == bool:
        return np.array([np.count_nonzero(u & v) / u.size
                         for u, v in _lag_pairs(b, max_lag, axis)])
    return np.array([float(np.mean(u * v)) for u, v in _lag_pairs(b, max_lag, axis)])


def _variogram(b: np.ndarray, max_lag: Any, axis: Any) -> np.ndarray:
    """:func:`indicator_variogram` of a checked indicator (boolean: exact counts)."""
    if b.dtype == bool:
        return np.array([0.5 * np.count_nonzero(u ^ v) / u.size
                         for u, v in _lag_pairs(b, max_lag, axis)])
    return np.array([0.5 * float(np.mean((u - v) ** 2))
                     for u, v in _lag_pairs(b, max_lag, axis)])


def two_point_probability(images: Any, max_lag: int = 30, *, axis: str = "z",
                          threshold: float | None = 0.5) -> np.ndarray:
    """Probability that two pixels ``h`` apart are both channel, for each lag ``h``.

    Parameters
    ----------
    images : array-like of shape (n_images, H, W) or (H, W)
        Images with values in [0, 1] (1 = channel), rows along depth.
    max_lag : int, default=30
        Largest lag, in pixels; smaller than the image's size along ``axis``.
    axis : {"z", "x"}, default="z"
        Direction of the lag: ``"z"`` down the rows (depth), ``"x"`` along the columns.
    threshold : float in (0, 1] or None, default=0.5
        Pixels ``>= threshold`` are channel. None uses the values themselves, giving
        ``E[m(u) m(u + h)]``.

    Returns
    -------
    p : ndarray of shape (max_lag + 1,)
        ``p[h] = P(m(u) = 1 and m(u + h) = 1)`` over all pixel pairs at lag ``h``;
        ``p[0]`` is the channel proportion.

    Raises
    ------
    ValueError
        If the images are not 2-D or 3-D, hold NaN/inf or values outside [0, 1], or
        ``max_lag``, ``axis`` or ``threshold`` is out of range.
    """
    return _two_point(_indicator(_check_images(images), threshold), max_lag, axis)


def indicator_variogram(images: Any, max_lag: int = 30, *, axis: str = "z",
                        threshold: float | None = 0.5) -> np.ndarray:
    """Indicator variogram ``0.5 E[(m(u) - m(u + h))^2]`` for each lag ``h``.

    Parameters
    ----------
    images : array-like of shape (n_images, H, W) or (H, W)
        As for :func:`two_point_probability`.
    max_lag : int, default=30
        As for :func:`two_point_probability`.
    axis : {"z", "x"}, default="z"
        As for :func:`two_point_probability`.
    threshold : float in (0, 1] or None, default=0.5
        Pixels ``>= threshold`` are channel; None uses the values themselves.

    Returns
    -------
    gamma : ndarray of shape (max_lag + 1,)
        ``gamma[h]``: half the fraction of pixel pairs at lag ``h`` that differ (for
        thresholded images); ``gamma[0] = 0``.

    Raises
    ------
    ValueError
        As :func:`two_point_probability`.
    """
    return _variogram(_indicator(_check_images(images), threshold), max_lag, axis)


def pattern_statistics(images: Any, max_lag: int = 30, *,
                       threshold: float | None = 0.5) -> dict[str, Any]:
    """Channel proportion, two-point probabilities and variograms along z and x.

    Parameters
    ----------
    images : array-like of shape (n_images, H, W) or (H, W)
        Images with values in [0, 1] (1 = channel), rows along depth; e.g. samples of a
        prior, or crops (or the whole) of its training image.
    max_lag : int, default=30
        Largest lag of the curves, in pixels; smaller than both image sides.
    threshold : float in (0, 1] or None, default=0.5
        Pixels ``>= threshold`` are channel; None uses the values themselves.

    Returns
    -------
    stats : dict
        ``"proportion"`` (channel fraction after thresholding), ``"mean"`` (mean value
        before it), ``"undecided_fraction"`` (fraction of values strictly between 0.1
        and 0.9: blur), and the curves ``"two_point_z"``, ``"two_point_x"``,
        ``"variogram_z"``, ``"variogram_x"`` (ndarrays of shape ``(max_lag + 1,)``).

    Raises
    ------
    ValueError
        As :func:`two_point_probability`.
    """
    X = _check_images(images)
    b = _indicator(X, threshold)
    stats: dict[str, Any] = {
        "proportion": float(np.count_nonzero(b) / b.size if b.dtype == bool else b.mean()),
        "mean": float(X.mean()),
        "undecided_fraction": float(np.count_nonzero((X > UNDECIDED[0]) & (X < UNDECIDED[1]))
                                    / X.size),
    }
    for axis in ("z", "x"):
        stats[f"two_point_{axis}"] = _two_point(b, max_lag, axis)
        stats[f"variogram_{axis}"] = _variogram(b, max_lag, axis)
    return stats


def _max_relative_error(curve: np.ndarray, reference: np.ndarray) -> float:
    """``max |curve - reference| / reference`` over the lags (the per-lag reading);
    ``reference`` must be nonzero (the callers check)."""
    return float(np.max(np.abs(curve - reference) / reference))


def compare_pattern_statistics(stats: dict[str, Any], reference: dict[str, Any], *,
                               max_lag: int | None = None) -> dict[str, float]:
    """Relative errors of pattern statistics against a reference's.

    Parameters
    ----------
    stats, reference : dict
        Outputs of :func:`pattern_statistics` (e.g. of prior samples, and of crops of
        the training image), with curves of the same length.
    max_lag : int or None, default=None
        Compare the curves up to this lag only; None compares them whole.

    Returns
    -------
    errors : dict of str to float
        ``"proportion_rel_error"``: ``|p - p_ref| / p_ref``; for each curve ``c`` in
        ``two_point_z``, ``two_point_x`` (from lag 0) and ``variogram_z``,
        ``variogram_x`` (from lag 1, the variogram being 0 at lag 0):
        ``f"{c}_max_rel_error"``, the largest ``|c[h] - c_ref[h]| / c_ref[h]`` over the
        lags (the strict, per-lag reading), and ``f"{c}_curve_rel_error"``,
        ``||c - c_ref|| / ||c_ref||`` over the lags (the whole-curve reading).

    Raises
    ------
    ValueError
        If a statistic is missing, the curves' lengths differ, or a reference value the
        errors are relative to is zero.
    """
    keys = ("proportion", "two_point_z", "two_point_x", "variogram_z", "variogram_x")
    missing = [k for k in keys if k not in stats or k not in reference]
    if missing:
        raise ValueError(f"missing statistics {missing}: pass outputs of pattern_statistics.")
    p, p0 = float(stats["proportion"]), float(reference["proportion"])
    if p0 == 0:
        raise ValueError("the reference has no channel pixels: relative errors are "
                         "undefined.")
    if max_lag is not None and (isinstance(max_lag, bool)
                                or not isinstance(max_lag, numbers.Integral) or max_lag < 1):
        raise ValueError(f"max_lag must be None or an integer >= 1; got {max_lag!r}.")
    out = {"proportion_rel_error": abs(p - p0) / p0}
    for key, first_lag in (("two_point", 0), ("variogram", 1)):
        for axis in ("z", "x"):
            name = f"{key}_{axis}"
            a, b = (np.asarray(d[name], dtype=np.float64) for d in (stats, reference))
            if a.shape != b.shape or a.ndim != 1:
                raise ValueError(f"{name}: curves of shapes {a.shape} and {b.shape} cannot "
                                 "be compared; compute both with the same max_lag.")
            stop = None if max_lag is None else max_lag + 1
            a, b = a[first_lag:stop], b[first_lag:stop]
            if a.size == 0:
                raise ValueError(f"{name}: no lags to compare (max_lag={max_lag!r}).")
            if np.any(b == 0):
                raise ValueError(f"{name}: the reference curve is zero at some lag; "
                                 "relative errors are undefined there.")
            out[f"{name}_max_rel_error"] = _max_relative_error(a, b)
            out[f"{name}_curve_rel_error"] = float(np.linalg.norm(a - b) / np.linalg.norm(b))
    return out
