"""The posterior of latent vectors, evaluated through :class:`LatentObjective`.

``log p(z | d, s²) = -½ Σ_i w_i r_i(z)² / s² - ½ ||z||² + const`` with the residuals
``r = f(h(g(z))) - d`` and weights ``w`` of the objective (decoding, petrophysics,
forward operator and weighting are the objective's). The decoder and the operator run
in float32; the misfit is summed and the densities kept in float64.
"""

from __future__ import annotations

import torch

from skvaeinv.engine.mcmc.prior import LatentPrior, StandardNormal
from skvaeinv.engine.mcmc.state import ChainState
from skvaeinv.engine.objective import LatentObjective

__all__ = ["GAUSS_NEWTON_CHUNK", "GAUSS_NEWTON_STEP", "LatentPosterior", "init_state",
           "rescale_noise"]

#: Step of the central differences in ``z`` of :meth:`LatentPosterior.gauss_newton`, by
#: the decoder's precision (bfloat16 rounds ``z`` itself to steps of 0.016 at |z| in
#: [2, 4), so its differences need a longer step).
GAUSS_NEWTON_STEP = {"float32": 1e-2, "bfloat16": 1e-1}
#: Chains whose ``2 d`` perturbed points are decoded in one batch there.
GAUSS_NEWTON_CHUNK = 4


class LatentPosterior:
    """Log-likelihood, log-prior and their gradients for a batch of latent vectors.

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator, data and weights ``w_i = 1 / σ_i²``
        relative to ``s²``.
    prior : StandardNormal or GaussianMixturePrior or None, default=None
        The prior of ``z``; None: ``N(0, I)``.

    Attributes
    ----------
    n_data : int
        Number of rays with a positive weight (the ``N`` of the noise's Gibbs step).
    device : torch.device
        The objective's device.
    """

    def __init__(self, objective: LatentObjective, prior: LatentPrior | None = None) -> None:
        self.objective = objective
        self.prior = StandardNormal() if prior is None else prior
        self.device = objective.device
        self.n_data = int((objective.w > 0).sum())

    def misfit(self, z: torch.Tensor, with_grad: bool
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weighted sum of squared residuals of each latent vector, and its gradient.

        Parameters
        ----------
        z : torch.Tensor of shape (n_chains, latent_dim)
            Latent vectors (float64).
        with_grad : bool
            Also return the gradient.

        Returns
        -------
        sse : torch.Tensor of shape (n_chains,)
            ``Σ_i w_i r_i²`` (float64; inf where the model, the misfit or its gradient
            is not finite).
        grad : torch.Tensor of shape (n_chains, latent_dim) or None
            Its gradient (zero where not finite), or None.
        """
        objective = self.objective
        z = z.detach().requires_grad_(with_grad)
        with torch.set_grad_enabled(with_grad):
            decoded = objective.decode(z.to(torch.float32))
            r = objective.residuals(decoded.slowness).to(torch.float64)
            sse = objective.weighted_sse(r)
        finite = decoded.finite & torch.isfinite(sse)
        grad = None
        if with_grad:
            total = torch.where(finite, sse, torch.zeros_like(sse)).sum()
            (grad,) = torch.autograd.grad(total, z)
            finite &= torch.isfinite(grad).all(1)
            grad = torch.where(finite[:, None], grad, torch.zeros_like(grad))
        sse = torch.where(finite, sse.detach(), torch.full_like(sse, torch.inf))
        return sse, grad

    @torch.no_grad()
    def gauss_newton(self, z: torch.Tensor, noise_var: torch.Tensor,
                     inv_temperature: torch.Tensor, step: float | None = None
                     ) -> torch.Tensor:
        """The Gauss-Newton precision of the tempered posterior at each chain's ``z``.

        ``H = β Jᵀ W J / s² + H_p``: the Hessian of ``-log π`` without the residuals'
        second derivatives (``H_p``: the prior's curvature, ``I`` for ``N(0, I)``),
        ``J = ∂r/∂z`` by central differences of step ``step``
        (``2 d`` evaluations of decoder and operator per chain; they work with any
        operator, bent rays included). Its inverse is the covariance of the Laplace
        approximation at ``z`` (Martin et al. 2012's stochastic Newton MCMC), a metric
        that needs no warm-up draws.

        Parameters
        ----------
        z : torch.Tensor of shape (n_chains, latent_dim)
            Latent vectors (float64).
        noise_var : torch.Tensor of shape (n_chains,)
            Noise variance ``s²`` of each chain.
        inv_temperature : torch.Tensor of shape (n_chains,)
            ``β = 1 / T`` of each chain.
        step : float or None, default=None
            Difference step in ``z``; None: :data:`GAUSS_NEWTON_STEP` of the
            objective's precision.

        Returns
        -------
        torch.Tensor of shape (n_chains, latent_dim, latent_dim)
            Symmetric positive definite precisions (float64); the prior's alone for a
            chain whose perturbed models are not all finite.
        """
        n, d = z.shape
        if step is None:
            step = GAUSS_NEWTON_STEP[self.objective.precision]
        eye = torch.eye(d, dtype=torch.float64, device=z.device)
        w = self.objective.w.to(torch.float64)
        prior = self.prior.curvature(z)
        out = prior.clone()
        for lo in range(0, n, GAUSS_NEWTON_CHUNK):
            zc = z[lo:lo + GAUSS_NEWTON_CHUNK]
            k = zc.shape[0]
            points = torch.cat([zc[:, None] + step * eye, zc[:, None] - step * eye], 1)
            decoded = self.objective.decode(points.reshape(-1, d).to(torch.float32))
            r = self.objective.residuals(decoded.slowness).to(torch.float64)
            r = r.reshape(k, 2, d, -1)
            jac = (r[:, 0] - r[:, 1]) / (2 * step)            # (k, d, n_rays)
            ok = decoded.finite.reshape(k, -1).all(1) & torch.isfinite(jac).all(-1).all(-1)
            curvature = torch.einsum("kir,r,kjr->kij", torch.nan_to_num(jac), w,
                                     torch.nan_to_num(jac))
            scale = (inv_temperature[lo:lo + k] / noise_var[lo:lo + k])[:, None, None]
            out[lo:lo + k] += torch.where(ok[:, None, None], scale * curvature,
                                           torch.zeros_like(curvature))
        return out

    def state(self, z: torch.Tensor, noise_var: torch.Tensor, with_grad: bool) -> ChainState:
        """The chain state at ``z`` (one evaluation of decoder and operator).

        Parameters
        ----------
        z : torch.Tensor of shape (n_chains, latent_dim)
            Latent vectors (float64).
        noise_var : torch.Tensor of shape (n_chains,)
            Noise variance ``s²`` of each chain.
        with_grad : bool
            Compute the gradients (MALA, HMC).

        Returns
        -------
        ChainState
            Position, log-densities (and gradients), misfit and noise variance.
        """
        z = z.detach()
        sse, grad = self.misfit(z, with_grad)
        log_prior, grad_prior = self.prior.log_prob(z, with_grad)
        log_prior = torch.where(torch.isfinite(log_prior), log_prior,
                                torch.full_like(log_prior, -torch.inf))
        return ChainState(
            position=z, log_likelihood=-0.5 * sse / noise_var, log_prior=log_prior,
            grad_log_likelihood=None if grad is None else -0.5 * grad / noise_var[:, None],
            grad_log_prior=grad_prior, sse=sse, noise_var=noise_var)


def init_state(target: LatentPosterior, position: torch.Tensor,
               noise_var: torch.Tensor | None, *, with_grad: bool) -> ChainState:
    """The initial state of a batch of chains.

    Parameters
    ----------
    target : LatentPosterior
        The posterior.
    position : torch.Tensor of shape (n_chains, latent_dim)
        Starting latent vectors.
    noise_var : torch.Tensor of shape (n_chains,) or None
        Noise variance of each chain; None (noise estimated): each chain starts at the
        weighted mean squared residual of its starting point, ``Σ w r² / N``.
    with_grad : bool
        Compute the gradients (MALA, HMC).

    Returns
    -------
    ChainState
        The chains' state.
    """
    position = position.detach().to(device=target.device, dtype=torch.float64)
    if noise_var is not None:
        return target.state(position, noise_var.to(torch.float64), with_grad)
    ones = torch.ones(position.shape[0], dtype=torch.float64, device=target.device)
    state = target.state(position, ones, with_grad)
    start = state.sse / max(target.n_data, 1)
    ok = torch.isfinite(start) & (start > 0)
    return rescale_noise(state, torch.where(ok, start, ones))


def rescale_noise(state: ChainState, noise_var: torch.Tensor) -> ChainState:
    """The state at another noise variance, without evaluating the model again.

    The log-likelihood and its gradient are proportional to ``1 / s²``: both are scaled
    by the ratio of the variances.

    Parameters
    ----------
    state : ChainState
        The chains' state.
    noise_var : torch.Tensor of shape (n_chains,)
        The new noise variances (> 0).

    Returns
    -------
    ChainState
        The same positions and misfits at ``noise_var``.
    """
    ratio = state.noise_var / noise_var
    grad = state.grad_log_likelihood
    return state._replace(
        log_likelihood=state.log_likelihood * ratio, noise_var=noise_var,
        grad_log_likelihood=None if grad is None else grad * ratio[:, None])
