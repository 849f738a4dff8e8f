"""What the latent estimators share at their public boundary.

:class:`~skvaeinv.LatentInverter` and :class:`~skvaeinv.LatentSampler` both take a
fitted prior, a forward operator and petrophysics, and rays ``X`` with traveltimes
``y``. Their parameter plumbing (a fitted prior shared by clones, nested operator
parameters), the checks of their inputs and the resolution of device, precision and
petrophysics live here, once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.utils.validation import (_check_sample_weight, check_array,
                                      check_consistent_length, check_is_fitted)

from skvaeinv._device import resolve_device, resolve_precision
from skvaeinv._validation import as_real_array, check_traveltimes, input_errors
from skvaeinv.petrophysics import check_petrophysics

__all__ = ["LatentModelMixin", "Runtime", "check_weights", "check_decoder",
           "initial_latents"]


@dataclass(frozen=True)
class Runtime:
    """Device, precision, petrophysics and decoder of a fit, resolved once.

    Parameters
    ----------
    device : torch.device
        Where the batches run.
    precision : {"float32", "bfloat16"}
        The decoder's autocast precision.
    petrophysics : callable
        A copy of the facies-to-slowness mapping (changing the parameter later does
        not change a fitted estimator).
    decoder : torch.nn.Module
        The prior's decoder on ``device``.
    latent_dim : int
        Size of the latent vectors.
    image_shape : tuple of int
        ``(nz, nx)`` of the decoded images.
    """

    device: torch.device
    precision: str
    petrophysics: Any
    decoder: Any
    latent_dim: int
    image_shape: tuple[int, int]


class LatentModelMixin:
    """Parameter plumbing and input checks of an estimator over a fitted prior.

    The estimator has the parameters ``prior``, ``forward``, ``petrophysics``,
    ``device`` and ``precision``. The fitted prior is used as-is: a clone holds it in
    :class:`sklearn.frozen.FrozenEstimator` (whose clone is itself), and its own
    parameters are neither listed by :meth:`get_params` nor settable.
    """

    def __sklearn_clone__(self) -> Any:
        # sklearn's clone would replace the fitted prior by an unfitted copy: the
        # clone holds it frozen, the one mechanism that also serves a grid over fitted
        # priors; every other parameter is cloned.
        params = self.get_params(deep=False)
        new = {k: (_frozen(v) if k == "prior" else clone(v, safe=False))
               for k, v in params.items()}
        return type(self)(**new)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = True          # the fitted prior is required, not the data
        tags.input_tags.allow_nan = False
        tags.target_tags.required = True  # traveltimes
        tags.non_deterministic = False    # repeatable for a random_state on the CPU
        return tags

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of the forward operator (``forward__*``) and of
            an estimator-like ``petrophysics``. The prior's parameters are not
            included: the fitted prior is shared, not a hyper-parameter (see
            :meth:`set_params`).

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        params = super().get_params(deep=False)
        if deep:
            for key in ("forward", "petrophysics"):
                value = params[key]
                if hasattr(value, "get_params") and not isinstance(value, type):
                    params.update((f"{key}__{k}", v)
                                  for k, v in value.get_params(deep=True).items())
        return params

    def set_params(self, **params: Any) -> Any:
        """Set parameters (``forward__*`` for the forward operator's).

        Parameters
        ----------
        **params : dict
            Estimator parameters. ``prior`` may be replaced by another fitted prior
            (in a parameter grid, wrapped in :class:`sklearn.frozen.FrozenEstimator`);
            the prior's own parameters (``prior__*``) cannot be set here, because the
            prior is used as-is and shared with every clone (a grid search over them
            would change the caller's fitted prior without refitting it).

        Returns
        -------
        self : estimator
            This estimator, with the new parameters.
        """
        nested = sorted(k for k in params if k.startswith("prior__"))
        if nested:
            raise ValueError(
                f"cannot set {nested}: {type(self).__name__} uses its fitted prior as-is "
                "and shares it with its clones. Fit a prior with those parameters and "
                "pass it: set_params(prior=VAEPrior(...).fit(images))."
            )
        return super().set_params(**params)

    def _check_prior(self) -> tuple[int, tuple[int, int]]:
        """Latent size and image shape of the fitted prior (clear errors otherwise)."""
        prior = self.prior
        if hasattr(prior, "fit"):
            try:
                check_is_fitted(prior)
            except NotFittedError:
                raise NotFittedError(
                    f"the prior {type(prior).__name__} is not fitted: pass a fitted prior "
                    "(e.g. VAEPrior(...).fit(images)). In a parameter grid, wrap each "
                    "fitted prior in sklearn.frozen.FrozenEstimator: GridSearchCV clones "
                    "the grid's values, and a clone of a prior is unfitted.") from None
        elif not hasattr(prior, "image_shape_"):
            raise NotFittedError(
                f"the prior {type(prior).__name__} has no image_shape_: pass a fitted "
                "prior (e.g. VAEPrior(...).fit(images))."
            )
        return int(prior.latent_dim), tuple(int(s) for s in prior.image_shape_)

    def _check_survey(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated rays (inside the operator's grid, which is the prior's) and
        traveltimes (finite, positive); sets no attribute."""
        _, image_shape = self._check_prior()
        X = check_array(X, dtype=np.float64, estimator=self)   # the rays' errors first
        y = check_traveltimes(y)
        check_consistent_length(X, y)
        rays = self.forward.validate_rays(X)
        grid = getattr(self.forward, "grid", None)
        if grid is not None and tuple(grid.shape) != image_shape:
            raise ValueError(
                f"the prior's image shape {image_shape} does not match the forward "
                f"operator's grid shape {tuple(grid.shape)}; expected the same (nz, nx)."
            )
        return rays, y

    def _runtime(self, stacklevel: int) -> Runtime:
        """Device, precision (warning once, at the caller), petrophysics and decoder."""
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device, stacklevel=stacklevel + 1)
        latent_dim, image_shape = self._check_prior()
        # a copy: set_params on the parameter must not change a fitted estimator
        petrophysics = copy.deepcopy(check_petrophysics(self.petrophysics, image_shape,
                                                        device))
        decoder = self.prior.get_decoder(device)
        check_decoder(decoder, latent_dim, image_shape, device)
        return Runtime(device, precision, petrophysics, decoder, latent_dim, image_shape)


def _frozen(prior: Any) -> Any:
    """``prior`` wrapped in FrozenEstimator, unless it is frozen or no estimator."""
    if isinstance(prior, FrozenEstimator) or not hasattr(prior, "fit"):
        return prior
    return FrozenEstimator(prior)


def initial_latents(init: Any, rngs: list[np.random.Generator], latent_dim: int,
                    name: str = "init") -> np.ndarray:
    """Starting latent vectors: ``N(0, I)`` draws (one per generator), or ``init``.

    Parameters
    ----------
    init : None or array-like of shape (n, latent_dim) or (latent_dim,)
        Given vectors; one vector is used for every start.
    rngs : list of numpy Generators
        One per start; they draw the vectors when ``init`` is None.
    latent_dim : int
        Size of the latent vectors.
    name : str, default="init"
        The parameter's name in error messages.

    Returns
    -------
    ndarray of shape (len(rngs), latent_dim)
        The starting vectors.

    Raises
    ------
    ValueError
        For a wrong shape, non-finite values or values beyond float32.
    """
    n = len(rngs)
    if init is None:
        return np.stack([rng.standard_normal(latent_dim) for rng in rngs])
    z0 = as_real_array(init, name)
    if z0.ndim == 1:
        z0 = np.tile(z0, (n, 1))
    if z0.shape != (n, latent_dim):
        raise ValueError(
            f"{name} has shape {np.shape(init)}; expected (n_starts, latent_dim) = "
            f"({n}, {latent_dim}) or ({latent_dim},)."
        )
    if not np.all(np.isfinite(z0)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if np.abs(z0).max() > np.finfo(np.float32).max:
        raise ValueError(f"{name} has values beyond the float32 range (about 3.4e38) the "
                         "inversion runs in.")
    return z0


def check_weights(sample_weight: Any, y: np.ndarray) -> np.ndarray:
    """Per-datum weights: one per row of ``y``, finite, >= 0 and not all zero.

    Parameters
    ----------
    sample_weight : array-like of shape (n_rays,)
        The weights.
    y : ndarray of shape (n_rays,)
        The data they weigh.

    Returns
    -------
    ndarray of shape (n_rays,)
        The weights divided by their maximum: every use is scale-free, and weights
        near the float64 maximum would overflow their sums.
    """
    w = _check_sample_weight(sample_weight, y, dtype=np.float64, ensure_non_negative=True)
    if not np.all(np.isfinite(w)) or not w.max() > 0:
        raise ValueError(
            f"sample_weight must be finite, >= 0 and not all zero; got sum {w.sum()!r}."
        )
    return w / w.max()


def check_sigma(sigma: Any, n_rays: int, *, allow_scalar: bool = False) -> np.ndarray:
    """Per-ray standard deviations (ns): one per ray, finite and > 0.

    Parameters
    ----------
    sigma : float or array-like of shape (n_rays,)
        The picking errors.
    n_rays : int
        Number of data.
    allow_scalar : bool, default=False
        Accept one value for all rays.

    Returns
    -------
    ndarray of shape (n_rays,)
        The errors as float64.
    """
    if allow_scalar and np.ndim(sigma) == 0:
        sigma = np.full(n_rays, as_real_array(sigma, "sigma").item())
    s = as_real_array(sigma, "sigma").reshape(-1) if np.ndim(sigma) else None
    if s is None or s.size != n_rays:
        raise ValueError(f"sigma has shape {np.shape(sigma)}; expected one standard "
                         f"deviation per ray, ({n_rays},)"
                         + (" or one for all" if allow_scalar else "") + ".")
    bad = np.flatnonzero(~(np.isfinite(s) & (s > 0)))
    if bad.size:
        raise ValueError(f"sigma must be finite and > 0 (ns); {bad.size} value(s) are not, "
                         f"the first at row {bad[0]} ({s[bad[0]]!r}).")
    return s


def check_decoder(decoder: Any, latent_dim: int, image_shape: tuple[int, int],
                  device: torch.device) -> None:
    """Check that the prior's decoder maps ``(1, latent_dim)`` to ``(1, *image_shape)``.

    Parameters
    ----------
    decoder : callable
        The decoder.
    latent_dim : int
        The prior's latent size.
    image_shape : tuple of int
        The prior's image shape.
    device : torch.device
        Where the decoder runs.

    Raises
    ------
    ValueError
        If it does not (e.g. ``latent_dim`` changed after the prior was fitted).
    """
    # a RuntimeError here: e.g. latent_dim changed after the prior was fitted
    with input_errors(RuntimeError, lambda exc: (
            f"the prior's decoder does not take latent vectors of size prior.latent_dim="
            f"{latent_dim} ({exc}); was the prior's latent_dim changed after fitting? "
            "Refit the prior or restore its parameter.")), torch.no_grad():
        shape = tuple(decoder(torch.zeros((1, latent_dim), device=device)).shape)
    if shape != (1, *image_shape):
        raise ValueError(f"the prior's decoder gives images of shape {shape[1:]}; "
                         f"expected its image_shape_ {image_shape}.")
