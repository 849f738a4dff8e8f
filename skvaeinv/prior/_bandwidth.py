"""Bandwidth choice of a kernel latent density.

* ``"cv"``: the factor that maximises the cross-validated log-likelihood of the codes
  (:func:`cv_bandwidth`);
* ``"pattern"``: the factor whose decoded draws match the two-point statistics of
  held-out images best (:func:`pattern_bandwidth`, through :func:`select_bandwidth`).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from ..metrics import _max_relative_error, two_point_probability
from ._mixtures import BLOCK, centres, logsumexp_rows, sq_distances, whitener
from ._warnings import warn

__all__ = ["CV_BOUNDS", "PATTERN_FACTORS", "PATTERN_FOLDS", "PATTERN_DRAWS",
           "PATTERN_MAX_LAG", "fold_labels", "cv_folds", "log_likelihoods",
           "cv_bandwidth", "select_bandwidth", "pattern_bandwidth"]

logger = logging.getLogger(__name__)

#: bounds of the cross-validated bandwidth search (factors of the codes' covariance root)
CV_BOUNDS = (0.02, 3.0)
#: factors tried by ``bandwidth="pattern"``
PATTERN_FACTORS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)
#: folds of ``bandwidth="pattern"``: each held out once as the reference of the others
PATTERN_FOLDS = 5
#: latent vectors drawn and decoded per factor and fold by ``bandwidth="pattern"``
PATTERN_DRAWS = 1000
#: largest lag of the two-point curves ``bandwidth="pattern"`` compares (at most half
#: of each image side)
PATTERN_MAX_LAG = 30


class Fold:
    """One cross-validation fold, whitened by its fitting codes' covariance.

    Parameters
    ----------
    fit : ndarray of shape (n_fit, d)
        Codes of the fold's kernel density.
    held : ndarray of shape (n_held, d)
        Held-out codes it scores.
    """

    def __init__(self, fit: np.ndarray, held: np.ndarray) -> None:
        chol = whitener(fit)
        self.a = np.linalg.solve(chol, fit.T).T
        self.b = np.linalg.solve(chol, held.T).T
        self.a_sq = (self.a**2).sum(1)
        self.const = (-math.log(len(fit)) - np.log(np.diag(chol)).sum()
                      - 0.5 * fit.shape[1] * math.log(2 * math.pi))

    def log_likelihoods(self, factors: np.ndarray) -> np.ndarray:
        """Sum over the held-out codes of their log-density, for each factor.

        Parameters
        ----------
        factors : ndarray of shape (n_factors,)
            Bandwidth factors.

        Returns
        -------
        sums : ndarray of shape (n_factors,)
            Summed held-out log-densities.
        """
        d = self.a.shape[1]
        out = np.zeros(len(factors))
        rows = max(1, BLOCK // len(self.a))   # bounded memory: rows x n_fit at a time
        for i in range(0, len(self.b), rows):
            b = self.b[i:i + rows]
            sq = sq_distances(b, self.a, self.a_sq)
            for j, h in enumerate(factors):
                out[j] += logsumexp_rows(-0.5 / h**2 * sq).sum()
        return out + len(self.b) * (self.const - d * np.log(factors))


def log_likelihoods(folds: list[Fold], factors: Any) -> np.ndarray:
    """Mean held-out log-density over all folds' held-out codes, for each factor.

    Parameters
    ----------
    folds : list of Fold
        The folds.
    factors : float or array-like of float
        Bandwidth factors.

    Returns
    -------
    means : ndarray of shape (n_factors,)
        Mean log-density of a held-out code.
    """
    factors = np.atleast_1d(np.asarray(factors, dtype=np.float64))
    total = sum(f.log_likelihoods(factors) for f in folds)
    return total / sum(len(f.b) for f in folds)


def fold_labels(n: int, d: int, rng: np.random.RandomState, n_folds: int,
                what: str) -> np.ndarray:
    """Random fold labels ``0..n_folds-1`` of ``n`` codes in ``d`` dimensions.

    Parameters
    ----------
    n, d : int
        Number and dimension of the codes.
    rng : numpy.random.RandomState
        Source of the permutation.
    n_folds : int
        Number of folds.
    what : str
        The bandwidth choice that needs the folds (named in the error).

    Returns
    -------
    labels : ndarray of shape (n,)
        Fold of each code.

    Raises
    ------
    ValueError
        If the codes outside one fold are too few for a kernel density (at most ``d``).
    """
    if n - math.ceil(n / n_folds) <= d:
        need = next(m for m in range(n + 1, 10 * (d + 2) * n_folds)
                    if m - math.ceil(m / n_folds) > d)
        raise ValueError(
            f"bandwidth={what!r} needs more than {d} codes (latent_dim) outside a "
            f"held-out 1/{n_folds} of them, so at least {need} images; got {n}. Pass more "
            "images or a bandwidth factor.")
    return rng.permutation(n) % n_folds


def cv_folds(Z: np.ndarray, rng: np.random.RandomState, n_folds: int = 5,
             max_held_out: int = 5000) -> list[Fold]:
    """The ``n_folds`` folds of :func:`cv_bandwidth`.

    Each fold's fitting codes are the other folds'; at most ``max_held_out`` held-out
    codes in all, spread evenly.

    Parameters
    ----------
    Z : ndarray of shape (n_codes, d)
        The codes.
    rng : numpy.random.RandomState
        Source of the fold labels and of the held-out subsets.
    n_folds : int, default=5
        Number of folds.
    max_held_out : int, default=5000
        Most held-out codes scored, over all folds.

    Returns
    -------
    folds : list of Fold
        The folds.
    """
    folds = fold_labels(*Z.shape, rng, n_folds, "cv")
    per_fold = max(1, max_held_out // n_folds)
    out = []
    for k in range(n_folds):
        held = np.flatnonzero(folds == k)
        if len(held) > per_fold:
            held = rng.choice(held, per_fold, replace=False)
        out.append(Fold(Z[folds != k], Z[held]))
    return out


def cv_bandwidth(Z: np.ndarray, rng: np.random.RandomState, n_folds: int = 5,
                 max_held_out: int = 5000) -> float:
    """Bandwidth factor that maximises the ``n_folds``-fold cross-validated log-likelihood.

    Each fold's kernel density is built on the other folds' codes (with their
    covariance); at most ``max_held_out`` held-out codes in all are scored, spread
    evenly over the folds (:func:`cv_folds`). The factor is searched on a log scale
    within :data:`CV_BOUNDS` (Brent's method); a maximum at a bound is warned about.
    The factor suits densities of ``(n_folds - 1) / n_folds`` of the codes and is used
    as it is for all of them (about 1 % too wide for 20 dimensions and 5 folds, by the
    ``n**(-1/(d+4))`` rule).

    Parameters
    ----------
    Z : ndarray of shape (n_codes, d)
        The codes.
    rng : numpy.random.RandomState
        Source of the folds.
    n_folds : int, default=5
        Number of cross-validation folds.
    max_held_out : int, default=5000
        Cap on the held-out codes scored, all folds together (:func:`cv_folds`).

    Returns
    -------
    bandwidth : float
        The factor.
    """
    folds = cv_folds(Z, rng, n_folds, max_held_out)

    def loss(log_h: float) -> float:
        return -float(log_likelihoods(folds, math.exp(log_h))[0])

    lo, hi = (math.log(b) for b in CV_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-3})
    h = float(math.exp(res.x))
    if min(res.x - lo, hi - res.x) < 0.01:
        warn(f"the cross-validated bandwidth factor {h:.3g} lies at the edge of the search "
             f"range {CV_BOUNDS}; pass a bandwidth factor explicitly.", RuntimeWarning)
    logger.info("kernel density: bandwidth factor %.3f (%d-fold CV, mean held-out "
                "log-likelihood %.3f)", h, n_folds, -res.fun)
    return h


def _split_losses(splits: list[tuple[np.ndarray, Callable[[np.ndarray], float]]],
                  factors: np.ndarray, rng: np.random.RandomState, n_draws: int,
                  verbose: bool) -> np.ndarray:
    """Loss of each split (rows) and factor (columns); see :func:`select_bandwidth`."""
    losses = np.zeros((len(splits), len(factors)))
    with tqdm(total=losses.size, desc="bandwidth", unit="factor", leave=False,
              disable=not verbose) as bar:
        for j, (Z, loss) in enumerate(splits):
            Z = centres(Z)
            drawn = Z[rng.randint(len(Z), size=n_draws)]
            offsets = rng.standard_normal((n_draws, Z.shape[1])) @ whitener(Z).T
            for i, h in enumerate(factors):
                losses[j, i] = float(loss(drawn + h * offsets))
                bar.update()
    return losses


def select_bandwidth(splits: list[tuple[np.ndarray, Callable[[np.ndarray], float]]],
                     factors: Any, rng: np.random.RandomState, n_draws: int,
                     verbose: bool = False) -> tuple[float, np.ndarray]:
    """The factor whose kernel-density draws minimise a loss, and every factor's loss.

    For each split and factor ``h`` the ``n_draws`` draws of :func:`kernel_density`
    ``(Z, h)`` are passed to the split's loss, and a factor's loss is the mean over
    the splits. Within a split all factors share the same random numbers: the same
    centres and the same standard-normal offsets, scaled by ``h``, so that the losses
    differ by the factor rather than by sampling noise. A non-finite loss never wins;
    ties go to the first factor. A choice at either end of ``factors`` is warned about
    (the best factor may lie beyond it).

    Parameters
    ----------
    splits : list of (ndarray, callable)
        Pairs ``(Z, loss)``: the codes of a kernel density and the loss of its draws
        (a function of an array ``(n_draws, d)`` of latent vectors).
    factors : array-like of float
        Bandwidth factors to try.
    rng : numpy.random.RandomState
        Source of the draws.
    n_draws : int
        Draws per split and factor.
    verbose : bool, default=False
        Show a progress bar over the draws' evaluations.

    Returns
    -------
    bandwidth : float
        The chosen factor.
    losses : ndarray of shape (n_factors,)
        Each factor's loss.

    Raises
    ------
    ValueError
        If every factor's loss is non-finite.
    """
    factors = np.asarray(factors, dtype=np.float64)
    losses = _split_losses(splits, factors, rng, n_draws, verbose)
    with np.errstate(invalid="ignore"):
        losses = losses.mean(axis=0)
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError("no bandwidth factor gave a finite selection loss.")
    i = int(np.flatnonzero(finite)[np.argmin(losses[finite])])
    best = float(factors[i])
    if len(factors) > 1 and i in (0, len(factors) - 1):
        warn(f"the selected bandwidth factor {best:.3g} is the "
             f"{'smallest' if i == 0 else 'largest'} of the factors tried "
             f"({factors[0]:.3g}-{factors[-1]:.3g}); the best one may lie beyond it, or "
             "the selection may be noise (losses: "
             + ", ".join(f"{h:.3g}: {v:.3g}" for h, v in zip(factors, losses))
             + "). Pass more images or a bandwidth factor.", RuntimeWarning)
    logger.info("kernel density: bandwidth factor %.3f selected; losses %s", best,
                ", ".join(f"{h:.3g}: {v:.4g}" for h, v in zip(factors, losses)))
    return best, losses


def _two_point_curves(images: np.ndarray, max_lag: int) -> list[np.ndarray]:
    """Two-point curves of ``images`` along z and x, lags 0 to ``max_lag``."""
    return [two_point_probability(images, max_lag, axis=axis) for axis in "zx"]


def _pattern_loss(z: np.ndarray, *, decode: Callable[[np.ndarray], np.ndarray],
                  ref: list[np.ndarray], max_lag: int) -> float:
    """Worst-lag relative error, along z and x, of the decoded ``z`` against ``ref``."""
    return max(map(_max_relative_error, _two_point_curves(decode(z), max_lag), ref))


def pattern_bandwidth(images: np.ndarray, Z: np.ndarray,
                      decode: Callable[[np.ndarray], np.ndarray],
                      rng: np.random.RandomState, verbose: bool = False) -> float:
    """The kernel factor whose decoded draws match held-out images' two-point curves.

    ``images`` are split into :data:`PATTERN_FOLDS` random folds; with each fold held
    out in turn, a kernel density on the codes of the others draws
    :data:`PATTERN_DRAWS` latent vectors for each of :data:`PATTERN_FACTORS`
    (:func:`select_bandwidth`), and their decoded images are compared with the
    held-out images by their two-point curves along z and x
    (:func:`skvaeinv.metrics.two_point_probability`, lags up to
    ``min(PATTERN_MAX_LAG, H // 2, W // 2)``). The factor with the smallest worst-lag
    relative error, averaged over the folds, is kept.

    Parameters
    ----------
    images : ndarray of shape (n_images, H, W)
        The images.
    Z : ndarray of shape (n_images, d)
        Their codes, row for row.
    decode : callable
        Maps latent vectors ``(n, d)`` to images ``(n, H, W)``.
    rng : numpy.random.RandomState
        Source of the folds and of the draws.
    verbose : bool, default=False
        Show a progress bar.

    Returns
    -------
    bandwidth : float
        The chosen factor.

    Raises
    ------
    ValueError
        If there are too few codes for the folds, or a held-out fold's two-point curve
        is zero at some lag.
    """
    folds = fold_labels(*Z.shape, rng, PATTERN_FOLDS, "pattern")
    max_lag = min(PATTERN_MAX_LAG, min(images.shape[1:]) // 2)
    splits = []
    for k in range(PATTERN_FOLDS):
        ref = _two_point_curves(images[folds == k], max_lag)
        if min(c.min() for c in ref) <= 0:
            raise ValueError(
                f"bandwidth='pattern' compares two-point curves (lags 0-{max_lag}) "
                "relative to those of each held-out fifth of X, and one of them is "
                "zero at some lag (too few channel pixels, or none that far apart): "
                "pass more images with channels, or use bandwidth='cv'.")
        splits.append((Z[folds != k], functools.partial(
            _pattern_loss, decode=decode, ref=ref, max_lag=max_lag)))
    h, _ = select_bandwidth(splits, PATTERN_FACTORS, rng, PATTERN_DRAWS, verbose=verbose)
    return h
