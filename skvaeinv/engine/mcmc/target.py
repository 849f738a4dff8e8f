"""The posterior of latent vectors, evaluated through :class:`LatentObjective`.

``log p(z | d, s²) = -½ Σ_i w_i r_i(z)² / s² - ½ ||z||² + const`` with the residuals
``r = f(h(g(z))) - d`` and weights ``w`` of the objective (decoding, petrophysics,
forward operator and weighting are the objective's). The decoder and the operator run
in float32; the misfit is summed and the densities kept in float64.
"""

from __future__ import annotations

import torch

from skvaeinv.engine.mcmc.state import ChainState
from skvaeinv.engine.objective import LatentObjective

__all__ = ["LatentPosterior", "init_state", "rescale_noise"]


class LatentPosterior:
    """Log-likelihood, log-prior and their gradients for a batch of latent vectors.

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator, data and weights ``w_i = 1 / σ_i²``
        relative to ``s²``.

    Attributes
    ----------
    n_data : int
        Number of rays with a positive weight (the ``N`` of the noise's Gibbs step).
    device : torch.device
        The objective's device.
    """

    def __init__(self, objective: LatentObjective) -> None:
        self.objective = objective
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
        log_prior = -0.5 * (z * z).sum(1)
        log_prior = torch.where(torch.isfinite(log_prior), log_prior,
                                torch.full_like(log_prior, -torch.inf))
        return ChainState(
            position=z, log_likelihood=-0.5 * sse / noise_var, log_prior=log_prior,
            grad_log_likelihood=None if grad is None else -0.5 * grad / noise_var[:, None],
            grad_log_prior=-z if with_grad else None, sse=sse, noise_var=noise_var)


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
