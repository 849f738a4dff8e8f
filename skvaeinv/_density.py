"""Latent densities of a fitted prior: ex-post estimates of where real images' codes lie.

Both kinds are :class:`sklearn.mixture.GaussianMixture` objects, so that they score,
sample and persist the same way:

* a mixture of a few full-covariance components fitted by EM (``"mixture"``);
* a Gaussian kernel density (``"kernel"``): one equal-weight component at each code,
  all sharing the codes' covariance scaled by ``bandwidth**2`` (a "tied" mixture, held
  in a :class:`TiedMixture`, which scores all components at once). Its bandwidth factor
  can be chosen by cross-validated log-likelihood of the codes, or by the pattern
  statistics of decoded draws.

The functions here take and return plain arrays; :class:`skvaeinv.VAEPrior` owns the
encoding of images and the fitted attribute.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

#: bounds of the cross-validated bandwidth search (factors of the codes' covariance root)
CV_BOUNDS = (0.02, 3.0)
#: factors tried by ``bandwidth="pattern"`` (see :meth:`skvaeinv.VAEPrior.fit_latent_density`)
PATTERN_FACTORS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8, 1.0)
#: folds of ``bandwidth="pattern"``: each held out once as the reference of the others
PATTERN_FOLDS = 5
#: latent vectors drawn and decoded per factor and fold by ``bandwidth="pattern"``
PATTERN_DRAWS = 1000
#: largest lag of the two-point curves ``bandwidth="pattern"`` compares (at most half
#: of each image side)
PATTERN_MAX_LAG = 30


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


def _centres(Z: np.ndarray) -> np.ndarray:
    """A kernel density's centres: the codes rounded to float32 (stored without loss)."""
    return np.asarray(Z, dtype=np.float32).astype(np.float64)


def _sq_distances(b: np.ndarray, a: np.ndarray, a_sq: np.ndarray) -> np.ndarray:
    """Squared distances ``(len(b), len(a))`` between rows; ``a_sq`` is ``(a**2).sum(1)``."""
    sq = b @ a.T
    sq *= -2.0
    sq += (b**2).sum(1)[:, None]
    sq += a_sq[None]
    return np.maximum(sq, 0.0, out=sq)


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """``log(sum(exp(x), axis=1))`` of a 2-D float array, overwriting ``x``.

    Several times faster than :func:`scipy.special.logsumexp` on the large blocks here
    (no copies). Rows that are all ``-inf`` give ``-inf``.
    """
    m = x.max(axis=1)
    m[~np.isfinite(m)] = 0.0
    x -= m[:, None]
    np.exp(x, out=x)
    with np.errstate(divide="ignore"):
        return np.log(x.sum(axis=1)) + m


#: entries of the ``(rows, components)`` blocks that scoring works through at a time
#: (2 MB of float64: cache-sized)
_BLOCK = 1 << 18


class TiedMixture(GaussianMixture):
    """A :class:`~sklearn.mixture.GaussianMixture` that scores a tied mixture at once.

    scikit-learn evaluates the components of a ``covariance_type="tied"`` mixture one
    at a time, in a Python loop, which is slow for a kernel density (one component per
    code: about 3 s for 1,000 codes against 18,000 components, 15-20x longer than
    here; ``benchmarks/results/density_score.md``). Here :meth:`score_samples`
    (and so ``score``) whitens once and takes all squared distances as one matrix
    product, in blocks of bounded memory. Everything else, and every other
    ``covariance_type``, is scikit-learn's.
    """

    def score_samples(self, X: Any) -> np.ndarray:
        """Log of the mixture's density at each sample.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
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
        rows = max(1, _BLOCK // len(a))
        for i in range(0, len(X), rows):
            log_p = _sq_distances(X[i:i + rows] @ L, a, a_sq)
            log_p *= -0.5
            log_p += log_w
            out[i:i + rows] = _logsumexp_rows(log_p)
        return out + const


def kernel_density(Z: np.ndarray, bandwidth: float) -> GaussianMixture:
    """Gaussian kernel density on the codes ``Z``, as a tied-covariance mixture.

    One component per code, weights ``1/n``, covariance ``bandwidth**2 * cov(Z)``. The
    centres are the codes rounded to float32 (which :func:`density_state` then stores
    without loss).
    """
    Z = _centres(Z)
    n, d = Z.shape
    if n <= d:
        raise ValueError(
            f"a kernel density needs more images than latent_dim={d} (the codes' "
            f"covariance must be invertible), got {n}; pass more images.")
    chol = float(bandwidth) * _whitener(Z)
    with np.errstate(over="ignore", under="ignore"):   # checked just below
        cov = chol @ chol.T
    gmm = TiedMixture(n, covariance_type="tied")
    try:
        ok = bool(np.all(np.isfinite(cov)))
        if ok:
            _set_fitted(gmm, _uniform(n), Z, cov)
    except np.linalg.LinAlgError:   # underflow: not positive definite
        ok = False
    if not ok:
        raise ValueError(
            f"bandwidth={bandwidth!r} scales the codes' covariance out of the range of "
            "float64 (it must stay finite and positive definite); use a factor of order "
            "0.1-1, or bandwidth='cv' (which searches 0.02-3).")
    return gmm


class _Fold:
    """One cross-validation fold, whitened by its fitting codes' covariance."""

    def __init__(self, fit: np.ndarray, held: np.ndarray) -> None:
        chol = _whitener(fit)
        self.a = np.linalg.solve(chol, fit.T).T
        self.b = np.linalg.solve(chol, held.T).T
        self.a_sq = (self.a**2).sum(1)
        self.const = (-math.log(len(fit)) - np.log(np.diag(chol)).sum()
                      - 0.5 * fit.shape[1] * math.log(2 * math.pi))

    def log_likelihoods(self, factors: np.ndarray) -> np.ndarray:
        """Sum over the held-out codes of their log-density, for each factor."""
        d = self.a.shape[1]
        out = np.zeros(len(factors))
        rows = max(1, _BLOCK // len(self.a))   # bounded memory: rows x n_fit at a time
        for i in range(0, len(self.b), rows):
            b = self.b[i:i + rows]
            sq = _sq_distances(b, self.a, self.a_sq)
            for j, h in enumerate(factors):
                out[j] += _logsumexp_rows(-0.5 / h**2 * sq).sum()
        return out + len(self.b) * (self.const - d * np.log(factors))


def _log_likelihoods(folds: list[_Fold], factors: Any) -> np.ndarray:
    """Mean held-out log-density over all folds' held-out codes, for each factor."""
    factors = np.atleast_1d(np.asarray(factors, dtype=np.float64))
    total = sum(f.log_likelihoods(factors) for f in folds)
    return total / sum(len(f.b) for f in folds)


def fold_labels(n: int, d: int, rng: np.random.RandomState, n_folds: int,
                what: str) -> np.ndarray:
    """Random fold labels ``0..n_folds-1`` of ``n`` codes in ``d`` dimensions.

    Raises ValueError, naming ``what`` (the bandwidth choice that needs the folds), if
    the codes outside one fold are too few for a kernel density (at most ``d``).
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
             max_held_out: int = 5000) -> list[_Fold]:
    """The ``n_folds`` folds of :func:`cv_bandwidth`: each fold's fitting codes are the
    other folds'; at most ``max_held_out`` held-out codes in all, spread evenly."""
    folds = fold_labels(*Z.shape, rng, n_folds, "cv")
    per_fold = max(1, max_held_out // n_folds)
    out = []
    for k in range(n_folds):
        held = np.flatnonzero(folds == k)
        if len(held) > per_fold:
            held = rng.choice(held, per_fold, replace=False)
        out.append(_Fold(Z[folds != k], Z[held]))
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
    """
    folds = cv_folds(Z, rng, n_folds, max_held_out)

    def loss(log_h: float) -> float:
        return -float(_log_likelihoods(folds, math.exp(log_h))[0])

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


def select_bandwidth(splits: list[tuple[np.ndarray, Callable[[np.ndarray], float]]],
                     factors: Any, rng: np.random.RandomState, n_draws: int,
                     verbose: bool = False) -> tuple[float, np.ndarray]:
    """The factor whose kernel-density draws minimise a loss, and every factor's loss.

    ``splits`` holds pairs ``(Z, loss)``: the codes of a kernel density and the loss of
    its draws (a function of an array ``(n_draws, d)`` of latent vectors). For each
    split and factor ``h`` the ``n_draws`` draws of :func:`kernel_density` ``(Z, h)`` are
    passed to ``loss``, and a factor's loss is the mean over the splits. Within a split
    all factors share the same random numbers: the same centres and the same
    standard-normal offsets, scaled by ``h``, so that the losses differ by the factor
    rather than by sampling noise. A non-finite loss never wins; ties go to the first
    factor. A choice at either end of ``factors`` is warned about (the best factor may
    lie beyond it). With ``verbose`` a progress bar counts the draws' decodings.

    Raises ValueError if every factor's loss is non-finite.
    """
    factors = np.asarray(factors, dtype=np.float64)
    losses = np.zeros((len(splits), len(factors)))
    with tqdm(total=losses.size, desc="bandwidth", unit="factor", leave=False,
              disable=not verbose) as bar:
        for j, (Z, loss) in enumerate(splits):
            Z = _centres(Z)
            centres = Z[rng.randint(len(Z), size=n_draws)]
            offsets = rng.standard_normal((n_draws, Z.shape[1])) @ _whitener(Z).T
            for i, h in enumerate(factors):
                losses[j, i] = float(loss(centres + h * offsets))
                bar.update()
    with np.errstate(invalid="ignore"):
        losses = losses.mean(axis=0)
    finite = np.isfinite(losses)
    if not finite.any():
        raise ValueError("no bandwidth factor gave a finite selection loss.")
    i = int(np.flatnonzero(finite)[np.argmin(losses[finite])])
    best = float(factors[i])
    if len(factors) > 1 and i in (0, len(factors) - 1):
        warnings.warn(
            f"the selected bandwidth factor {best:.3g} is the "
            f"{'smallest' if i == 0 else 'largest'} of the factors tried "
            f"({factors[0]:.3g}-{factors[-1]:.3g}); the best one may lie beyond it, or "
            "the selection may be noise (losses: "
            + ", ".join(f"{h:.3g}: {v:.3g}" for h, v in zip(factors, losses))
            + "). Pass more images or a bandwidth factor.", RuntimeWarning, stacklevel=4)
    logger.info("kernel density: bandwidth factor %.3f selected; losses %s", best,
                ", ".join(f"{h:.3g}: {v:.4g}" for h, v in zip(factors, losses)))
    return best, losses


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
    and a kernel density's equal weights ``1/n`` are not stored: they are rebuilt.
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


def density_from_state(state: dict, latent_dim: int) -> tuple[GaussianMixture, float | None]:
    """Rebuild a fitted mixture (and its bandwidth factor, if any) from :func:`density_state`.

    Raises ValueError if the arrays do not describe a density in ``latent_dim`` dimensions.
    """
    kind = state.get("covariance_type", "full")   # files of format version 1: full
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
