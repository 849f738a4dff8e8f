"""Metropolis-adjusted kernels in the latent space: pCN, MALA and HMC.

Each kernel is an object with ``init(position, noise_var) -> ChainState`` and
``step(state, generators, params) -> (ChainState, StepInfo)``, advancing every chain
of the batch at once. Each step ends with an exact Metropolis-Hastings accept/reject of
the tempered target ``π_β(z) ∝ L(z)^β p(z)`` (``p`` the target's prior, ``N(0, I)`` by
default), so any fixed ``params`` leave it invariant. A proposal whose model, misfit,
gradient or position is not finite has density zero and is rejected (the chain stays;
nothing raises).

Draws per chain and step, from that chain's generator: (HMC with a step jitter: one
uniform), ``d`` standard normals, then one uniform (the accept/reject).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from skvaeinv.engine.mcmc.draws import normal_draws, uniform_draws
from skvaeinv.engine.mcmc.state import ChainState, KernelParams, StepInfo, select_state
from skvaeinv.engine.mcmc.target import LatentPosterior, init_state

__all__ = ["HMCKernel", "MALAKernel", "PCNKernel", "make_kernel", "metropolis"]


def metropolis(generators: Sequence[np.random.Generator], log_ratio: torch.Tensor,
               proposal: ChainState, state: ChainState
               ) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
    """Accept each chain's proposal with probability ``min(1, exp(log_ratio))``.

    Parameters
    ----------
    generators : sequence of numpy Generators
        One per chain (one uniform each).
    log_ratio : torch.Tensor of shape (n_chains,)
        Log Metropolis-Hastings ratios (NaN counts as ``-inf``: rejected).
    proposal, state : ChainState
        Proposed and current states.

    Returns
    -------
    state : ChainState
        The new state.
    acceptance_prob : torch.Tensor of shape (n_chains,)
        ``min(1, exp(log_ratio))``.
    accepted : torch.Tensor of shape (n_chains,)
        Whether each proposal was accepted.
    """
    log_ratio = torch.where(torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf),
                            log_ratio)
    u = uniform_draws(generators, log_ratio.device)
    accepted = torch.log(u) < log_ratio
    prob = torch.exp(torch.clamp(log_ratio, max=0.0))
    return select_state(accepted, proposal, state), prob, accepted


class _Kernel:
    """What the kernels share: the target, the initial state and the accept/reject.

    A kernel defines ``_propose(state, generators, params) -> (proposal, log_ratio,
    divergent)``; :meth:`step` rejects the divergent proposals and accepts the others
    with probability ``min(1, exp(log_ratio))``.
    """

    uses_gradient = True
    #: Decoder-and-forward evaluations per chain and transition, and those with a gradient.
    n_forward_evals = 1
    n_gradient_evals = 1

    def __init__(self, target: LatentPosterior) -> None:
        self.target = target

    def init(self, position: torch.Tensor, noise_var: torch.Tensor | None) -> ChainState:
        """The chains' initial state.

        Parameters
        ----------
        position : torch.Tensor of shape (n_chains, latent_dim)
            Starting latent vectors.
        noise_var : torch.Tensor of shape (n_chains,) or None
            Noise variances; None: from the starting misfit (noise estimated).

        Returns
        -------
        ChainState
            With gradients where the kernel uses them.
        """
        return init_state(self.target, position, noise_var, with_grad=self.uses_gradient)

    def step(self, state: ChainState, generators: Sequence[np.random.Generator],
             params: KernelParams) -> tuple[ChainState, StepInfo]:
        """One transition of every chain: a proposal, then its accept/reject.

        Parameters
        ----------
        state : ChainState
            Current state (with gradients where the kernel uses them).
        generators : sequence of numpy Generators
            One per chain.
        params : KernelParams
            Step sizes (pCN's ``β``), metric and inverse temperatures.

        Returns
        -------
        state : ChainState
            The new state.
        info : StepInfo
            Acceptance probability and decision.
        """
        proposal, log_ratio, divergent = self._propose(state, generators, params)
        log_ratio = torch.where(divergent, torch.full_like(log_ratio, -math.inf), log_ratio)
        new, prob, accepted = metropolis(generators, log_ratio, proposal, state)
        return new, StepInfo(prob, accepted, divergent, self.n_forward_evals,
                             self.n_gradient_evals)

    def _propose(self, state: ChainState, generators: Sequence[np.random.Generator],
                 params: KernelParams) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """Each chain's proposal, its log Metropolis-Hastings ratio and divergence."""
        raise NotImplementedError


class PCNKernel(_Kernel):
    """Preconditioned Crank-Nicolson: ``z' = sqrt(1 - β²) z + β ξ``, ``ξ ~ N(0, I)``.

    The proposal is reversible w.r.t. ``N(0, I)``, so with that prior the acceptance
    ratio is the (tempered) likelihood ratio alone; with another prior ``p`` it also
    holds ``p(z') N(z; 0, I) / (p(z) N(z'; 0, I))``. No gradient is used. ``params.step_size`` is
    ``β`` in ``(0, 1]`` and ``params.metric`` is ignored.

    Parameters
    ----------
    target : LatentPosterior
        The posterior.
    """

    uses_gradient = False
    n_gradient_evals = 0

    def _propose(self, state: ChainState, generators: Sequence[np.random.Generator],
                 params: KernelParams) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """pCN's proposal; ``params.step_size`` is ``β``."""
        z = state.position
        beta = params.step_size[:, None]
        xi = normal_draws(generators, z.shape[1], z.device)
        proposal = self.target.state(torch.sqrt(1 - beta * beta) * z + beta * xi,
                                     state.noise_var, with_grad=False)
        divergent = ~torch.isfinite(proposal.log_density(params.inv_temperature))
        log_ratio = params.inv_temperature * (proposal.log_likelihood - state.log_likelihood)
        if not self.target.prior.is_standard_normal:
            log_ratio = log_ratio + (_log_prior_over_normal(proposal)
                                     - _log_prior_over_normal(state))
        return proposal, log_ratio, divergent


def _log_prior_over_normal(state: ChainState) -> torch.Tensor:
    """``log p(z) - log N(z; 0, I)`` (up to a constant): pCN's prior correction."""
    z = state.position
    return state.log_prior + 0.5 * (z * z).sum(1)


class MALAKernel(_Kernel):
    """Metropolis-adjusted Langevin with a metric ``C``.

    Proposal ``z' = z + ε²/2 C ∇log π(z) + ε L ξ`` (``C = L Lᵀ``), accepted with the
    exact Metropolis-Hastings ratio, the reverse proposal density included.

    Parameters
    ----------
    target : LatentPosterior
        The posterior.
    """

    def _propose(self, state: ChainState, generators: Sequence[np.random.Generator],
                 params: KernelParams) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """MALA's proposal, with the reverse proposal density in its log ratio."""
        beta, metric = params.inv_temperature, params.metric
        eps = params.step_size[:, None]
        z = state.position
        xi = normal_draws(generators, z.shape[1], z.device)
        z_new = z + 0.5 * eps ** 2 * metric.velocity(state.grad_log_density(beta)) \
            + eps * metric.scaled_noise(xi)
        proposal = self.target.state(z_new, state.noise_var, with_grad=True)
        back = z - z_new - 0.5 * eps ** 2 * metric.velocity(proposal.grad_log_density(beta))
        log_q_forward = -0.5 * (xi * xi).sum(1)
        log_q_backward = -0.5 * metric.mahalanobis(back) / params.step_size ** 2
        log_pi_new = proposal.log_density(beta)
        divergent = ~torch.isfinite(log_pi_new)
        log_ratio = log_pi_new - state.log_density(beta) + log_q_backward - log_q_forward
        return proposal, log_ratio, divergent


class HMCKernel(_Kernel):
    """Hamiltonian Monte Carlo: ``n_leapfrog`` leapfrog steps with a metric ``C``.

    Momentum ``p ~ N(0, C⁻¹)``, kinetic energy ``½ pᵀ C p``, position updates
    ``z += ε C p``; the end point is accepted with probability
    ``min(1, exp(H(z, p) - H(z', p')))``. A trajectory that meets a non-finite point is
    rejected (a symmetric criterion: the reversed trajectory meets it too).

    Parameters
    ----------
    target : LatentPosterior
        The posterior.
    n_leapfrog : int
        Leapfrog steps per transition.
    step_jitter : float, default=0.0
        Each transition multiplies every chain's step size by a uniform draw in
        ``[1 - step_jitter, 1 + step_jitter]`` (drawn first, from the chain's generator,
        when positive): an auxiliary variable independent of the state, so the kernel
        stays exact, and it breaks the periodic trajectories of a fixed ``ε L`` on
        near-Gaussian targets.
    """

    def __init__(self, target: LatentPosterior, n_leapfrog: int,
                 step_jitter: float = 0.0) -> None:
        super().__init__(target)
        self.n_leapfrog = n_leapfrog
        self.step_jitter = step_jitter

    @property
    def n_forward_evals(self) -> int:
        """Decoder-and-forward evaluations per chain and transition: ``n_leapfrog``."""
        return self.n_leapfrog

    @property
    def n_gradient_evals(self) -> int:
        """Of those, the ones with a gradient: all ``n_leapfrog``."""
        return self.n_leapfrog

    def _propose(self, state: ChainState, generators: Sequence[np.random.Generator],
                 params: KernelParams) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """The end of a leapfrog trajectory; its log ratio is ``H(z, p) - H(z', p')``."""
        if self.step_jitter > 0:
            u = uniform_draws(generators, state.position.device)
            params = params._replace(
                step_size=params.step_size * (1 + self.step_jitter * (2 * u - 1)))
        beta, metric = params.inv_temperature, params.metric
        p0 = metric.momentum(normal_draws(generators, state.position.shape[1],
                                          state.position.device))
        end, p1, divergent = self.leapfrog(state, p0, params)
        h0 = -state.log_density(beta) + metric.kinetic_energy(p0)
        h1 = -end.log_density(beta) + metric.kinetic_energy(p1)
        divergent |= ~torch.isfinite(h1)
        return end, h0 - h1, divergent

    def leapfrog(self, state: ChainState, momentum: torch.Tensor, params: KernelParams
                 ) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """Integrate ``n_leapfrog`` leapfrog steps from ``(state, momentum)``.

        Parameters
        ----------
        state : ChainState
            Start (with gradients).
        momentum : torch.Tensor of shape (n_chains, d)
            Initial momenta.
        params : KernelParams
            Step sizes, metric and inverse temperatures.

        Returns
        -------
        end : ChainState
            The state at the end point.
        momentum : torch.Tensor of shape (n_chains, d)
            The final momenta.
        divergent : torch.Tensor of shape (n_chains,)
            Whether a point of the trajectory was not finite.
        """
        beta, metric = params.inv_temperature, params.metric
        eps = params.step_size[:, None]
        divergent = torch.zeros_like(params.step_size, dtype=torch.bool)
        p = momentum + 0.5 * eps * state.grad_log_density(beta)
        current = state
        for i in range(self.n_leapfrog):
            z = current.position + eps * metric.velocity(p)
            current = self.target.state(z, state.noise_var, with_grad=True)
            divergent |= ~torch.isfinite(current.log_density(beta))
            half = 0.5 if i == self.n_leapfrog - 1 else 1.0
            p = p + half * eps * current.grad_log_density(beta)
        divergent |= ~torch.isfinite(p).all(1)
        return current, p, divergent


def make_kernel(sampler: str, target: LatentPosterior, n_leapfrog: int = 10,
                step_jitter: float = 0.0) -> PCNKernel | MALAKernel | HMCKernel:
    """The kernel named ``sampler``.

    Parameters
    ----------
    sampler : {"pcn", "mala", "hmc"}
        Which kernel.
    target : LatentPosterior
        The posterior.
    n_leapfrog : int, default=10
        HMC's leapfrog steps.
    step_jitter : float, default=0.0
        HMC's relative step-size jitter.

    Returns
    -------
    PCNKernel or MALAKernel or HMCKernel
        The kernel.
    """
    if sampler == "pcn":
        return PCNKernel(target)
    if sampler == "mala":
        return MALAKernel(target)
    return HMCKernel(target, n_leapfrog, step_jitter)
