"""Latent densities: ex-post estimates of where the codes of real images lie."""

from __future__ import annotations

import logging
import numbers
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _bandwidth
from ._mixtures import draw, kernel_density, mixture_density

__all__ = ["LatentDensity"]

logger = logging.getLogger(__name__)


class LatentDensity(BaseEstimator):
    """A density of latent codes: a Gaussian mixture or a Gaussian kernel density.

    With the reference VAE loss the posteriors are narrow and their aggregate does not
    fill ``N(0, I)``: decoding ``z ~ N(0, I)`` then lands between the codes of real
    images and gives blurred pictures (the "prior hole"). A density fitted to the codes
    of training images after training follows the aggregate posterior instead (Ghosh
    et al., 2020). :meth:`skvaeinv.VAEPrior.fit_latent_density` fits one to the codes
    of images and keeps it as ``latent_density_`` for ``sample(source="density")``.

    Parameters
    ----------
    kind : {"mixture", "kernel"}, default="mixture"
        "mixture": a Gaussian mixture of ``n_components`` full-covariance components
        fitted by EM. "kernel": a Gaussian kernel density, one equal-weight component
        at each code, all with the codes' covariance times ``bandwidth**2`` (stored as
        a tied-covariance mixture holding every code, so its size grows with the
        codes; its ``score_samples`` takes all components at once).
    n_components : int, default=50
        Components of ``kind="mixture"``; ignored by ``kind="kernel"``, but validated.
    bandwidth : float, "cv" or "pattern", default="cv"
        ``kind="kernel"`` only: the factor ``h`` of the kernel covariance
        ``h**2 * cov(codes)``.

        - "cv" picks it by maximising the 5-fold cross-validated log-likelihood of the
          codes (at most 5,000 held-out codes scored; factors searched within
          [0.02, 3], with a warning at the edge): the density that best explains
          unseen codes.
        - "pattern" picks it by the pattern statistics of decoded draws, and needs the
          images and a decoder in :meth:`fit`. The images are split into 5 random
          folds; with each fold held out in turn, a kernel density on the codes of
          the other four draws 1,000 latent vectors for each factor of 0.1, 0.15, 0.2,
          0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8 and 1.0 (the same random numbers for all
          factors, scaled by the factor), and their decoded images are compared with
          the held-out images by their two-point curves along z and x
          (:func:`skvaeinv.metrics.two_point_probability`, thresholded at 0.5, lags up
          to ``min(30, H // 2, W // 2)``; lag 0 is the channel proportion). The factor
          with the smallest worst-lag relative error, averaged over the folds, is
          kept, with a warning if it is the smallest or largest factor. This targets
          what samples are judged by; it usually picks a narrower kernel than "cv".
          It decodes 55,000 images and wants thousands of them: with few, the choice
          varies with the random folds. Very small factors approach re-decoding the
          images themselves (little variety).
        - A float uses that factor.

        The chosen factor then serves the density on all the codes. Ignored by
        ``kind="mixture"``, but validated.
    random_state : int, RandomState instance or None, default=None
        Seed of the mixture's initialisation, of the cross-validation folds, or of the
        folds and the draws of ``bandwidth="pattern"``.
    verbose : int, default=0
        If > 0, show a progress bar during ``bandwidth="pattern"``.

    Attributes
    ----------
    mixture_ : sklearn.mixture.GaussianMixture
        The fitted density: a full-covariance mixture, or for ``kind="kernel"`` a
        tied-covariance mixture with one component per code (a subclass whose
        ``score_samples`` scores all components at once).
    bandwidth_ : float
        Only with ``kind="kernel"``: the bandwidth factor used (given or chosen).
    n_features_in_ : int
        Dimension of the codes.

    See Also
    --------
    skvaeinv.VAEPrior.fit_latent_density : Fits one to the codes of images.

    References
    ----------
    .. [1] Ghosh, P., Sajjadi, M. S. M., Vergari, A., Black, M., Schölkopf, B. (2020).
       From variational to deterministic autoencoders. ICLR.

    Examples
    --------
    >>> import numpy as np
    >>> from skvaeinv.prior import LatentDensity
    >>> codes = np.random.RandomState(0).standard_normal((200, 3))
    >>> density = LatentDensity("kernel", bandwidth=0.5).fit(codes)
    >>> density.sample(4, random_state=0).shape
    (4, 3)
    >>> density.bandwidth_
    0.5
    """

    def __init__(self, kind: str = "mixture", *, n_components: int = 50,
                 bandwidth: float | str = "cv", random_state: Any = None,
                 verbose: int = 0) -> None:
        self.kind = kind
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        """ValueError, naming the parameter, for a kind, size or bandwidth not understood."""
        kind, bandwidth = self.kind, self.bandwidth
        if not isinstance(kind, str) or kind not in ("mixture", "kernel"):
            raise ValueError(f"kind must be 'mixture' or 'kernel', got {kind!r}.")
        if not isinstance(self.n_components, numbers.Integral) or self.n_components < 1:
            raise ValueError(
                f"n_components must be a positive integer, got {self.n_components!r}.")
        if isinstance(bandwidth, str) and bandwidth in ("cv", "pattern"):
            return
        ok = isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool)
        try:
            ok = ok and 0 < float(bandwidth) < np.inf
        except OverflowError:   # an int beyond float's range
            ok = False
        if not ok:
            raise ValueError("bandwidth must be 'cv', 'pattern' or a positive finite "
                             f"factor, got {bandwidth!r}.")

    def fit(self, Z: Any, y: None = None, *, images: np.ndarray | None = None,
            decode: Callable[[np.ndarray], np.ndarray] | None = None) -> "LatentDensity":
        """Fit the density to latent codes.

        Parameters
        ----------
        Z : array-like of shape (n_codes, latent_dim)
            The codes. ``kind="mixture"`` needs at least ``n_components`` of them (and
            at least 2); ``kind="kernel"`` more than ``latent_dim``, and with
            ``bandwidth="cv"`` or ``"pattern"`` more than ``latent_dim`` outside each of
            5 folds (about ``1.25 * latent_dim + 2``).
        y : None
            Ignored.
        images : ndarray of shape (n_codes, H, W) or None, default=None
            The images the codes encode, row for row; needed by
            ``bandwidth="pattern"`` only.
        decode : callable or None, default=None
            Maps latent vectors ``(n, latent_dim)`` to images ``(n, H, W)``; needed by
            ``bandwidth="pattern"`` only.

        Returns
        -------
        self : LatentDensity
            The fitted density.

        Raises
        ------
        ValueError
            For parameters not understood, too few or degenerate codes, or
            ``bandwidth="pattern"`` without ``images`` and ``decode``.
        """
        self._check_params()
        Z = validate_data(self, Z, dtype=np.float64)
        rng = check_random_state(self.random_state)
        if self.kind == "mixture":
            if Z.shape[0] < max(2, self.n_components):
                raise ValueError(
                    f"the mixture needs at least n_components={self.n_components} images "
                    f"(and at least 2), got {Z.shape[0]}; pass more images or fewer "
                    "components.")
            self.mixture_ = mixture_density(Z, self.n_components, rng)
            self.__dict__.pop("bandwidth_", None)
            logger.info("latent density: %d components fitted to %d codes",
                        self.n_components, Z.shape[0])
            return self
        h = self._choose_bandwidth(Z, rng, images, decode)
        self.mixture_ = kernel_density(Z, h)
        self.bandwidth_ = h
        logger.info("latent density: kernel density on %d codes, bandwidth factor %.3f",
                    Z.shape[0], h)
        return self

    def _choose_bandwidth(self, Z: np.ndarray, rng: np.random.RandomState,
                          images: np.ndarray | None,
                          decode: Callable[[np.ndarray], np.ndarray] | None) -> float:
        """The kernel factor: given, or chosen by ``bandwidth="cv"`` or ``"pattern"``."""
        if self.bandwidth == "cv":
            return _bandwidth.cv_bandwidth(Z, rng)
        if self.bandwidth != "pattern":
            return float(self.bandwidth)
        if images is None or decode is None:
            raise ValueError("bandwidth='pattern' compares decoded draws with images: "
                             "pass fit(Z, images=..., decode=...).")
        if len(images) != len(Z):
            raise ValueError(f"images has {len(images)} rows but Z has {len(Z)}; pass "
                             "the images the codes encode, row for row.")
        return _bandwidth.pattern_bandwidth(np.asarray(images), Z, decode, rng,
                                            verbose=bool(self.verbose))

    def sample(self, n_samples: int = 1, random_state: Any = None) -> np.ndarray:
        """Draw latent vectors from the density.

        Parameters
        ----------
        n_samples : int, default=1
            Number of draws.
        random_state : int, RandomState instance or None, default=None
            Seed of the draws.

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim)
            The draws, in random order.
        """
        check_is_fitted(self, "mixture_")
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        return draw(self.mixture_, int(n_samples), check_random_state(random_state))

    def score_samples(self, Z: Any) -> np.ndarray:
        """Log of the density at each latent vector.

        Parameters
        ----------
        Z : array-like of shape (n_samples, latent_dim)
            Where the density is evaluated.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
            Log-density of each vector.
        """
        check_is_fitted(self, "mixture_")
        return self.mixture_.score_samples(Z)

    def score(self, Z: Any, y: None = None) -> float:
        """Mean log-density of the latent vectors (higher is better).

        Parameters
        ----------
        Z : array-like of shape (n_samples, latent_dim)
            Latent vectors.
        y : None
            Ignored.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples`.
        """
        return float(np.mean(self.score_samples(Z)))

    @classmethod
    def _from_mixture(cls, mixture: GaussianMixture,
                      bandwidth: float | None) -> "LatentDensity":
        """A fitted density holding ``mixture`` (as a saved file rebuilds it).

        A tied mixture is a kernel density whose parameter ``bandwidth`` is its factor;
        a full one a mixture of its number of components.
        """
        if mixture.covariance_type == "tied":
            density = cls("kernel", bandwidth="cv" if bandwidth is None else bandwidth)
            if bandwidth is not None:
                density.bandwidth_ = bandwidth
        else:
            density = cls("mixture", n_components=int(mixture.n_components))
        density.mixture_ = mixture
        density.n_features_in_ = int(mixture.means_.shape[1])
        return density
