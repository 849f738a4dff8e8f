"""Latent densities of a fitted prior: ex-post estimates of where real images' codes lie.

Both kinds are :class:`sklearn.mixture.GaussianMixture` objects, so that they score,
sample and persist the same way:

* a mixture of a few full-covariance components fitted by EM (``"mixture"``);
* a Gaussian kernel density (``"kernel"``): one equal-weight component at each code,
  all sharing the codes' covariance scaled by ``bandwidth**2`` (a "tied" mixture). Its
  bandwidth factor can be chosen by cross-validated log-likelihood of the codes.

The functions here take and return plain arrays; :class:`skvaeinv.VAEPrior` owns the
encoding of images and the fitted attribute.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from sklearn.mixture import GaussianMixture

logger = logging.getLogger(__name__)

#: bounds of the cross-validated bandwidth search (factors of the codes' covariance root)
CV_BOUNDS = (0.02, 3.0)


def mixture_density(Z: np.ndarray, n_components: int, random_state: Any) -> GaussianMixture:
    """A full-covariance Gaussian mixture of ``n_components`` fitted to the codes ``Z``."""
    return GaussianMixture(int(n_components), covariance_type="full",
                           random_state=random_state).fit(Z)


def _whitener(Z: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the codes' covariance, with a clear error if singular."""
    try:
        return np.linalg.cholesky(np.atleast_2d(np.cov(Z.T)))
    except np.linalg.LinAlgError:
        raise ValueError(
            "the latent codes' covariance is singular (repeated or collinear codes): "
            "pass more, and more varied, images to fit a kernel density.") from None


def kernel_density(Z: np.ndarray, bandwidth: float) -> GaussianMixture:
    """Gaussian kernel density on the codes ``Z``, as a tied-covariance mixture.

    One component per code, weights ``1/n``, covariance ``bandwidth**2 * cov(Z)``. The
    centres are the codes rounded to float32 (which :func:`density_state` then stores
    without loss).
    """
    Z = np.asarray(Z, dtype=np.float32).astype(np.float64)
    n = len(Z)
    chol = float(bandwidth) * _whitener(Z)
    gmm = GaussianMixture(n, covariance_type="tied")
    _set_fitted(gmm, _uniform(n), Z, chol @ chol.T)
    return gmm


def held_out_log_likelihood(fit: np.ndarray, held: np.ndarray,
                            factors: np.ndarray) -> np.ndarray:
    """Mean log-density of ``held`` under kernel densities on ``fit``, for each factor.

    The kernel covariance is ``factor**2 * cov(fit)``. Returns an array of the shape of
    ``factors``.
    """
    chol = _whitener(fit)
    a = np.linalg.solve(chol, fit.T).T
    b = np.linalg.solve(chol, held.T).T
    sq = np.maximum((b**2).sum(1)[:, None] + (a**2).sum(1)[None] - 2.0 * b @ a.T, 0.0)
    d = fit.shape[1]
    const = (-math.log(len(fit)) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi))
    factors = np.atleast_1d(np.asarray(factors, dtype=np.float64))
    out = [logsumexp(-0.5 * sq / h**2, axis=1).mean() - d * math.log(h) + const
           for h in factors]
    return np.asarray(out)


def cv_bandwidth(Z: np.ndarray, rng: np.random.RandomState, n_folds: int = 5,
                 max_held_out: int = 5000) -> float:
    """Bandwidth factor that maximises the ``n_folds``-fold cross-validated log-likelihood.

    Each fold's kernel density is built on the other folds' codes (with their
    covariance); at most ``max_held_out`` held-out codes in all are scored, spread
    evenly over the folds. The factor is searched on a log scale within
    :data:`CV_BOUNDS` (Brent's method); a maximum at a bound is warned about.
    """
    n = len(Z)
    if n < 2 * n_folds:
        raise ValueError(f"bandwidth='cv' needs at least {2 * n_folds} images "
                         f"({n_folds} folds of two), got {n}; pass more images or a "
                         "bandwidth factor.")
    folds = rng.permutation(n) % n_folds
    per_fold = max(1, max_held_out // n_folds)
    pairs = []
    for k in range(n_folds):
        held = np.flatnonzero(folds == k)
        if len(held) > per_fold:
            held = rng.choice(held, per_fold, replace=False)
        pairs.append((Z[folds != k], Z[held]))

    def loss(log_h: float) -> float:
        return -float(np.mean([held_out_log_likelihood(a, b, math.exp(log_h))[0]
                               for a, b in pairs]))

    lo, hi = (math.log(b) for b in CV_BOUNDS)
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-3})
    h = float(math.exp(res.x))
    if min(res.x - lo, hi - res.x) < 0.01:
        warnings.warn(
            f"the cross-validated bandwidth factor {h:.3g} lies at the edge of the search "
            f"range {CV_BOUNDS}; pass a bandwidth factor explicitly.", RuntimeWarning,
            stacklevel=3)
    logger.info("kernel density: bandwidth factor %.3f (%d-fold CV, mean held-out "
                "log-likelihood %.3f)", h, n_folds, -res.fun)
    return h


def draw(gmm: GaussianMixture, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` draws from a fitted full or tied mixture, in random order."""
    d = gmm.means_.shape[1]
    counts = rng.multinomial(n, gmm.weights_ / gmm.weights_.sum())
    chol = np.linalg.cholesky(gmm.covariances_)
    if gmm.covariance_type == "tied":
        z = np.repeat(gmm.means_, counts, axis=0) + rng.standard_normal((n, d)) @ chol.T
    else:
        z = np.concatenate([gmm.means_[k] + rng.standard_normal((c, d)) @ chol[k].T
                            for k, c in enumerate(counts) if c])
    return z[rng.permutation(n)]


def density_state(gmm: GaussianMixture, bandwidth: float | None = None) -> dict:
    """The arrays of a fitted full or tied mixture, as tensors (for the safe file format).

    Means that are float32 values (a kernel density's centres) are stored as float32,
    and equal weights ``1/n`` (a kernel density's) are not stored: they are rebuilt.
    """
    means = np.asarray(gmm.means_, dtype=np.float64)
    if np.array_equal(means.astype(np.float32), means):
        means = means.astype(np.float32)
    weights = np.asarray(gmm.weights_, dtype=np.float64)
    state = {"covariance_type": gmm.covariance_type,
             "means": torch.as_tensor(means),
             "covariances": torch.as_tensor(np.asarray(gmm.covariances_, dtype=np.float64))}
    if not np.array_equal(weights, _uniform(len(weights))):
        state["weights"] = torch.as_tensor(weights)
    if bandwidth is not None:
        state["bandwidth"] = float(bandwidth)
    return state


def _uniform(n: int) -> np.ndarray:
    """Equal mixture weights, as :func:`kernel_density` makes them."""
    return np.full(n, 1.0 / n)


def density_from_state(state: dict) -> tuple[GaussianMixture, float | None]:
    """Rebuild a fitted mixture (and its bandwidth factor, if any) from :func:`density_state`."""
    kind = state.get("covariance_type", "full")   # files of format version 1: full
    if kind not in ("full", "tied"):
        raise ValueError(f"unknown latent density covariance type {kind!r}")
    mu, cov = (state[k].numpy().astype(np.float64) for k in ("means", "covariances"))
    w = state["weights"].numpy().astype(np.float64) if "weights" in state else _uniform(
        len(mu))
    gmm = GaussianMixture(len(w), covariance_type=kind)
    _set_fitted(gmm, w, mu, cov)
    return gmm, state.get("bandwidth")


def _set_fitted(gmm: GaussianMixture, weights: np.ndarray, means: np.ndarray,
                covariances: np.ndarray) -> None:
    """Give a GaussianMixture the fitted attributes of the given parameters."""
    gmm.weights_, gmm.means_, gmm.covariances_ = weights, means, covariances
    eye = np.eye(means.shape[1])
    if gmm.covariance_type == "tied":
        gmm.precisions_cholesky_ = np.linalg.solve(np.linalg.cholesky(covariances), eye).T
        gmm.precisions_ = gmm.precisions_cholesky_ @ gmm.precisions_cholesky_.T
    else:
        gmm.precisions_cholesky_ = np.stack(
            [np.linalg.solve(c, eye).T for c in np.linalg.cholesky(covariances)])
        gmm.precisions_ = gmm.precisions_cholesky_ @ np.transpose(
            gmm.precisions_cholesky_, (0, 2, 1))
    gmm.converged_, gmm.n_iter_, gmm.lower_bound_ = True, 0, float("nan")
    gmm.n_features_in_ = means.shape[1]
