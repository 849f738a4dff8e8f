"""The prior of the latent vector in the target: ``N(0, I)`` or a fitted Gaussian mixture.

The VAE was trained with the standard-normal prior, the default. A density fitted to the
codes of training images after training (:class:`skvaeinv.prior.LatentDensity`: a
full-covariance Gaussian mixture, or a kernel density held as a tied mixture) follows
where real images' codes lie; its log-density is a log-sum-exp of Gaussians, smooth and
differentiable, so MALA and HMC use its gradient as they use ``-z``. Both priors give
``(log p(z), ∇ log p(z))`` for a batch, in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["GaussianMixturePrior", "LatentPrior", "StandardNormal"]


class LatentPrior:
    """A prior of latent vectors: its log-density, gradient and curvature on batches."""

    #: Whether it is ``N(0, I)`` (pCN's proposal then needs no prior correction).
    is_standard_normal = False

    def log_prob(self, z: torch.Tensor, with_grad: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Log-density of each row and, with ``with_grad``, its gradient.

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent vectors (float64).
        with_grad : bool, default=True
            Also return the gradient.

        Returns
        -------
        log_prob : torch.Tensor of shape (n,)
            ``log p(z)`` (up to a constant).
        grad : torch.Tensor of shape (n, d) or None
            ``∇ log p(z)``, or None.
        """
        raise NotImplementedError

    def curvature(self, z: torch.Tensor) -> torch.Tensor:
        """A positive definite curvature of ``-log p`` at each row.

        Parameters
        ----------
        z : torch.Tensor of shape (n, d)
            Latent vectors (float64).

        Returns
        -------
        torch.Tensor of shape (n, d, d)
            The prior's precision at each row (the Gauss-Newton metric's prior part).
        """
        raise NotImplementedError


class StandardNormal(LatentPrior):
    """The VAE's own prior ``N(0, I)``: ``log p(z) = -½ ||z||²`` (up to a constant).

    Examples
    --------
    >>> import torch
    >>> lp, grad = StandardNormal().log_prob(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    >>> float(lp[0]), grad.tolist()
    (-2.5, [[-1.0, -2.0]])
    """

    is_standard_normal = True

    def log_prob(self, z: torch.Tensor, with_grad: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # -½ ||z||² and -z
        return -0.5 * (z * z).sum(1), (-z if with_grad else None)

    def curvature(self, z: torch.Tensor) -> torch.Tensor:
        # the identity: the Hessian of -log p
        n, d = z.shape
        return torch.eye(d, dtype=z.dtype, device=z.device).repeat(n, 1, 1)


class GaussianMixturePrior(LatentPrior):
    """A Gaussian mixture density of latent vectors, with its exact gradient.

    ``log p(z) = logsumexp_k [log w_k + log|L_k| - ½ ||L_kᵀ (z - μ_k)||²] - d/2 log 2π``
    with the precision factors ``L_k`` (``Σ_k⁻¹ = L_k L_kᵀ``; scikit-learn's
    ``precisions_cholesky_``), one per component or one shared ("tied", as a kernel
    density holds it). Scored in blocks of components, so a kernel density over many
    codes takes bounded memory.

    Parameters
    ----------
    weights : array of shape (n_components,)
        Mixture weights (positive, summing to 1).
    means : array of shape (n_components, d)
        Component means.
    precisions_cholesky : array of shape (d, d) or (n_components, d, d)
        Precision factors: one shared (tied) or one per component.
    device : torch.device or str, default="cpu"
        Where it is evaluated.

    Examples
    --------
    >>> import numpy as np, torch
    >>> p = GaussianMixturePrior(np.ones(1), np.zeros((1, 2)), np.eye(2))
    >>> lp, grad = p.log_prob(torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    >>> round(float(lp[0] + np.log(2 * np.pi)), 6), grad.tolist()
    (-2.5, [[-1.0, -2.0]])
    """

    #: components scored at a time
    BLOCK = 4096

    def __init__(self, weights: Any, means: Any, precisions_cholesky: Any,
                 device: torch.device | str = "cpu") -> None:
        kw = dict(dtype=torch.float64, device=torch.device(device))
        self.log_weights = torch.log(torch.as_tensor(np.asarray(weights), **kw))
        self.means = torch.as_tensor(np.asarray(means), **kw)
        self.factors = torch.as_tensor(np.asarray(precisions_cholesky), **kw)
        self.tied = self.factors.ndim == 2
        d = self.means.shape[1]
        diag = torch.diagonal(self.factors, dim1=-2, dim2=-1)
        self.log_det = torch.log(diag).sum(-1)               # () or (K,)
        self.const = -0.5 * d * math.log(2 * math.pi)
        if self.tied:
            self.white_means = self.means @ self.factors     # (K, d)

    @classmethod
    def from_mixture(cls, mixture: Any, device: torch.device | str = "cpu"
                     ) -> GaussianMixturePrior:
        """From a fitted ``sklearn.mixture.GaussianMixture`` ("full" or "tied").

        Parameters
        ----------
        mixture : sklearn.mixture.GaussianMixture
            Fitted, with ``covariance_type`` "full" or "tied".
        device : torch.device or str, default="cpu"
            Where it is evaluated.

        Returns
        -------
        GaussianMixturePrior
            The same density.

        Raises
        ------
        ValueError
            For another covariance type.
        """
        if mixture.covariance_type not in ("full", "tied"):
            raise ValueError(f"a mixture of covariance_type={mixture.covariance_type!r} "
                             "cannot be a latent prior; use 'full' or 'tied'.")
        return cls(mixture.weights_, mixture.means_, mixture.precisions_cholesky_, device)

    def _component_log_prob(self, z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """``log w_k + log|L_k| - ½ ||L_kᵀ (z - μ_k)||²`` of components ``lo:hi``."""
        if self.tied:
            y = z @ self.factors                                        # (n, d)
            m = self.white_means[lo:hi]
            sq = (y * y).sum(1)[:, None] - 2 * y @ m.T + (m * m).sum(1)[None]
            return self.log_weights[lo:hi] + self.log_det - 0.5 * sq.clamp_min(0)
        diff = z[:, None, :] - self.means[None, lo:hi]                   # (n, k, d)
        y = torch.einsum("nkd,kde->nke", diff, self.factors[lo:hi])
        return self.log_weights[lo:hi] + self.log_det[lo:hi] - 0.5 * (y * y).sum(-1)

    def log_prob(self, z: torch.Tensor, with_grad: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # the log-sum-exp over blocks of components; its gradient by autograd
        z = z.detach().requires_grad_(with_grad)
        with torch.set_grad_enabled(with_grad):
            k = self.means.shape[0]
            parts = [torch.logsumexp(self._component_log_prob(z, lo, min(lo + self.BLOCK, k)),
                                     dim=1) for lo in range(0, k, self.BLOCK)]
            lp = torch.logsumexp(torch.stack(parts, 1), dim=1) + self.const
        grad = torch.autograd.grad(lp.sum(), z)[0] if with_grad else None
        return lp.detach(), grad

    @torch.no_grad()
    def curvature(self, z: torch.Tensor) -> torch.Tensor:
        # Σ_k r_k(z) L_k L_kᵀ: the components' precisions averaged with their
        # responsibilities (the Hessian of -log p without the responsibilities' spread)
        if self.tied:
            precision = self.factors @ self.factors.T
            return precision.expand(z.shape[0], -1, -1).clone()
        resp = torch.softmax(self._component_log_prob(z, 0, self.means.shape[0]), dim=1)
        precisions = self.factors @ self.factors.transpose(-1, -2)
        return torch.einsum("nk,kde->nde", resp, precisions)
