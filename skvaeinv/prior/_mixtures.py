"""Gaussian mixtures of latent codes: the two kinds a latent density holds, their
draws and their state in the safe file format.

Both kinds are :class:`sklearn.mixture.GaussianMixture` objects, so that they score,
sample and persist the same way:

* a mixture of a few full-covariance components fitted by EM (:func:`mixture_density`);
* a Gaussian kernel density (:func:`kernel_density`): one equal-weight component at
  each code, all sharing the codes' covariance scaled by ``bandwidth**2`` (a "tied"
  mixture, held in a :class:`TiedMixture`, which scores all components at once).

The functions take and return plain arrays; :class:`~skvaeinv.prior.LatentDensity`
chooses the kind and the bandwidth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = ["TiedMixture", "mixture_density", "kernel_density", "draw", "mixture_state",
           "mixture_from_state", "set_fitted", "whitener", "centres", "sq_distances",
           "logsumexp_rows", "BLOCK"]

#: entries of the ``(rows, components)`` blocks that scoring works through at a time
#: (2 MB of float64: cache-sized)
BLOCK = 1 << 18


def mixture_density(Z: np.ndarray, n_components: int, random_state: Any) -> GaussianMixture:
    """A full-covariance Gaussian mixture of ``n_components`` fitted to the codes ``Z``.

    Parameters
    ----------
    Z : ndarray of shape (n_codes, latent_dim)
        The codes.
    n_components : int
        Number of components.
    random_state : int, RandomState instance or None
        Seed of the EM initialisation (passed to the mixture as it is).

    Returns
    -------
    mixture : sklearn.mixture.GaussianMixture
        The fitted mixture.
    """
    return GaussianMixture(int(n_components), covariance_type="full",
                           random_state=random_state).fit(Z)


def whitener(Z: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of the codes' covariance, with a clear error if singular.

    Parameters
    ----------
    Z : ndarray of shape (n_codes, latent_dim)
        The codes.

    Returns
    -------
    chol : ndarray of shape (latent_dim, latent_dim)
        ``L`` with ``L @ L.T == cov(Z)``.

    Raises
    ------
    ValueError
        If the covariance is singular (repeated or collinear codes).
    """
    try:
        return np.linalg.cholesky(np.atleast_2d(np.cov(Z.T)))
    except np.linalg.LinAlgError:
        raise ValueError(
            "the latent codes' covariance is singular (repeated or collinear codes): "
            "pass more, and more varied, images to fit a kernel density.") from None


def centres(Z: np.ndarray) -> np.ndarray:
    """A kernel density's centres: the codes rounded to float32 (stored without loss).

    Parameters
    ----------
    Z : array-like of shape (n_codes, latent_dim)
        The latent codes of the fitted images.

    Returns
    -------
    centres : ndarray of shape (n_codes, latent_dim)
        float64 values that are float32 numbers.
    """
    return np.asarray(Z, dtype=np.float32).astype(np.float64)


def sq_distances(b: np.ndarray, a: np.ndarray, a_sq: np.ndarray) -> np.ndarray:
    """Squared distances between the rows of ``b`` and of ``a``.

    Parameters
    ----------
    b : ndarray of shape (n_b, d)
        First rows.
    a : ndarray of shape (n_a, d)
        Second rows.
    a_sq : ndarray of shape (n_a,)
        ``(a**2).sum(1)``, computed once by the caller.

    Returns
    -------
    sq : ndarray of shape (n_b, n_a)
        Squared Euclidean distances, clipped at 0 (rounding).
    """
    sq = b @ a.T
    sq *= -2.0
    sq += (b**2).sum(1)[:, None]
    sq += a_sq[None]
    return np.maximum(sq, 0.0, out=sq)


def logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """``log(sum(exp(x), axis=1))`` of a 2-D float array, overwriting ``x``.

    Faster than :func:`scipy.special.logsumexp` on large blocks (no copies). Rows that
    are all ``-inf`` give ``-inf``.

    Parameters
    ----------
    x : ndarray of shape (n_rows, n_cols)
        Values; overwritten.

    Returns
    -------
    out : ndarray of shape (n_rows,)
        The row-wise log-sum-exp.
    """
    m = x.max(axis=1)
    m[~np.isfinite(m)] = 0.0
    x -= m[:, None]
    np.exp(x, out=x)
    with np.errstate(divide="ignore"):
        return np.log(x.sum(axis=1)) + m


class TiedMixture(GaussianMixture):
    """A :class:`~sklearn.mixture.GaussianMixture` that scores a tied mixture at once.

    scikit-learn evaluates the components of a ``covariance_type="tied"`` mixture one
    at a time, in a Python loop, which is slow for a kernel density (one component per
    code). Here :meth:`score_samples` (and so ``score``) whitens once and takes all
    squared distances as one matrix product, in blocks of bounded memory. Everything
    else, and every other ``covariance_type``, is scikit-learn's.

    Parameters
    ----------
    n_components : int, default=1
        As :class:`~sklearn.mixture.GaussianMixture`; so are the other parameters.
    **kwargs : dict
        The other parameters of :class:`~sklearn.mixture.GaussianMixture`.
    """

    def score_samples(self, X: Any) -> np.ndarray:
        """Log of the mixture's density at each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Points to score.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            Log-density of each point.
        """
        if self.covariance_type != "tied":
            return super().score_samples(X)
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float64)
        L = self.precisions_cholesky_
        a = self.means_ @ L
        a_sq = (a**2).sum(1)
        log_w = np.log(self.weights_)
        const = np.log(np.diag(L)).sum() - 0.5 * X.shape[1] * math.log(2 * math.pi)
        out = np.empty(len(X))
        rows = max(1, BLOCK // len(a))
        for i in range(0, len(X), rows):
            log_p = sq_distances(X[i:i + rows] @ L, a, a_sq)
            log_p *= -0.5
            log_p += log_w
            out[i:i + rows] = logsumexp_rows(log_p)
        return out + const


def kernel_density(Z: np.ndarray, bandwidth: float) -> TiedMixture:
    """Gaussian kernel density on the codes ``Z``, as a tied-covariance mixture.

    One component per code, weights ``1/n``, covariance ``bandwidth**2 * cov(Z)``. The
    centres are the codes rounded to float32 (which :func:`mixture_state` then stores
    without loss).

    Parameters
    ----------
    Z : ndarray of shape (n_codes, latent_dim)
        The codes; more of them than ``latent_dim``.
    bandwidth : float
        The factor ``h`` of the kernel covariance ``h**2 * cov(Z)``.

    Returns
    -------
    density : TiedMixture
        The fitted kernel density.

    Raises
    ------
    ValueError
        If there are too few codes, their covariance is singular, or the scaled
        covariance leaves the range of float64.
    """
    Z = centres(Z)
    n, d = Z.shape
    if n <= d:
        raise ValueError(
            f"a kernel density needs more images than latent_dim={d} (the codes' "
            f"covariance must be invertible), got {n}; pass more images.")
    chol = float(bandwidth) * whitener(Z)
    with np.errstate(over="ignore", under="ignore"):   # checked just below
        cov = chol @ chol.T
    gmm = TiedMixture(n, covariance_type="tied")
    try:
        ok = bool(np.all(np.isfinite(cov)))
        if ok:
            set_fitted(gmm, _uniform(n), Z, cov)
    except np.linalg.LinAlgError:   # underflow: not positive definite
        ok = False
    if not ok:
        raise ValueError(
            f"bandwidth={bandwidth!r} scales the codes' covariance out of the range of "
            "float64 (it must stay finite and positive definite); use a factor of order "
            "0.1-1, or bandwidth='cv' (which searches 0.02-3).")
    return gmm


def draw(gmm: GaussianMixture, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` draws from a fitted full or tied mixture, in random order.

    Parameters
    ----------
    gmm : sklearn.mixture.GaussianMixture
        A fitted mixture of covariance type "full" or "tied".
    n : int
        Number of draws.
    rng : numpy.random.RandomState
        Source of the component counts, the Gaussian offsets and the order.

    Returns
    -------
    z : ndarray of shape (n, n_features)
        The draws.
    """
    d = gmm.means_.shape[1]
    counts = rng.multinomial(n, gmm.weights_ / gmm.weights_.sum())
    chol = np.linalg.cholesky(gmm.covariances_)
    if gmm.covariance_type == "tied":
        z = np.repeat(gmm.means_, counts, axis=0) + rng.standard_normal((n, d)) @ chol.T
    else:
        z = np.concatenate([gmm.means_[k] + rng.standard_normal((c, d)) @ chol[k].T
                            for k, c in enumerate(counts) if c])
    return z[rng.permutation(n)]


def mixture_state(gmm: GaussianMixture, bandwidth: float | None = None) -> dict:
    """The arrays of a fitted full or tied mixture, as tensors (for the safe file format).

    Means that are float32 values (a kernel density's centres) are stored as float32,
    and a kernel density's equal weights ``1/n`` are not stored: they are rebuilt.

    Parameters
    ----------
    gmm : sklearn.mixture.GaussianMixture
        A fitted mixture of covariance type "full" or "tied".
    bandwidth : float or None, default=None
        A kernel density's bandwidth factor, stored with it.

    Returns
    -------
    state : dict
        ``covariance_type``, ``means``, ``covariances``, and ``weights`` and
        ``bandwidth`` where they are needed.
    """
    means = np.asarray(gmm.means_, dtype=np.float64)
    if np.array_equal(means.astype(np.float32), means):
        means = means.astype(np.float32)
    weights = np.asarray(gmm.weights_, dtype=np.float64)
    state = {"covariance_type": gmm.covariance_type,
             "means": torch.as_tensor(means),
             "covariances": torch.as_tensor(np.asarray(gmm.covariances_, dtype=np.float64))}
    if gmm.covariance_type != "tied" or not np.array_equal(weights, _uniform(len(weights))):
        state["weights"] = torch.as_tensor(weights)   # always for "full": version 1 files
    if bandwidth is not None:
        state["bandwidth"] = float(bandwidth)
    return state


def _uniform(n: int) -> np.ndarray:
    """Equal mixture weights, as :func:`kernel_density` makes them."""
    return np.full(n, 1.0 / n)


def mixture_from_state(state: dict, latent_dim: int
                       ) -> tuple[GaussianMixture, float | None]:
    """Rebuild a fitted mixture (and its bandwidth factor, if any) from :func:`mixture_state`.

    Parameters
    ----------
    state : dict
        What :func:`mixture_state` returned (files of format version 1 have no
        ``covariance_type``: a full mixture).
    latent_dim : int
        Dimension the mixture must have.

    Returns
    -------
    mixture : sklearn.mixture.GaussianMixture
        The fitted mixture (a :class:`TiedMixture` for a kernel density).
    bandwidth : float or None
        The stored bandwidth factor.

    Raises
    ------
    ValueError
        If the arrays do not describe a density in ``latent_dim`` dimensions.
    """
    kind = state.get("covariance_type", "full")
    if kind not in ("full", "tied"):
        raise ValueError(f"unknown latent density covariance type {kind!r}")
    mu, cov = (state[k].numpy().astype(np.float64) for k in ("means", "covariances"))
    w = state["weights"].numpy().astype(np.float64) if "weights" in state else _uniform(
        len(mu))
    d, k = latent_dim, len(mu)
    cov_shape = (d, d) if kind == "tied" else (k, d, d)
    if mu.shape != (k, d) or cov.shape != cov_shape or w.shape != (k,):
        raise ValueError(
            f"the latent density's arrays (means {mu.shape}, covariances {cov.shape}, "
            f"weights {w.shape}) do not fit latent_dim={d}")
    gmm = (TiedMixture if kind == "tied" else GaussianMixture)(len(w), covariance_type=kind)
    set_fitted(gmm, w, mu, cov)
    return gmm, state.get("bandwidth")


def set_fitted(gmm: GaussianMixture, weights: np.ndarray, means: np.ndarray,
               covariances: np.ndarray) -> None:
    """Give a GaussianMixture the fitted attributes of the given parameters.

    Parameters
    ----------
    gmm : sklearn.mixture.GaussianMixture
        An unfitted mixture of covariance type "full" or "tied"; changed in place.
    weights : ndarray of shape (n_components,)
        Component weights.
    means : ndarray of shape (n_components, n_features)
        Component means.
    covariances : ndarray
        ``(n_features, n_features)`` for "tied", ``(n_components, n_features,
        n_features)`` for "full".

    Raises
    ------
    numpy.linalg.LinAlgError
        If a covariance is not positive definite.
    """
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
