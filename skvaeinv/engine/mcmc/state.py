"""The state of a batch of chains, what a step reports, and the kernels' parameters.

BlackJAX's shape: a kernel maps ``(state, draws, params)`` to ``(state, info)``; the
state holds what the next step reuses (position, log-densities and their gradients),
the info what diagnostics and adaptation need. Positions and log-densities are float64
(the decoder and the forward operator run in float32, from a float32 copy of the
position), so acceptance ratios of large misfits keep their precision.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from skvaeinv.engine.mcmc.metric import Metric

__all__ = ["ChainState", "KernelParams", "StepInfo", "select_state"]


class ChainState(NamedTuple):
    """Where every chain is, with what its next step reuses.

    Attributes
    ----------
    position : torch.Tensor of shape (n_chains, latent_dim)
        Latent vectors ``z`` (float64).
    log_likelihood : torch.Tensor of shape (n_chains,)
        ``-½ Σ_i w_i r_i(z)² / s²`` (untempered; ``-inf`` where the model or misfit is
        not finite).
    log_prior : torch.Tensor of shape (n_chains,)
        ``log p(z)``: ``-½ ||z||²`` for the default ``N(0, I)``.
    grad_log_likelihood : torch.Tensor of shape (n_chains, latent_dim) or None
        Its gradient w.r.t. ``z`` (zero where it is not finite); None for a
        gradient-free kernel.
    grad_log_prior : torch.Tensor of shape (n_chains, latent_dim) or None
        Its gradient (``-z`` for ``N(0, I)``); None for a gradient-free kernel.
    sse : torch.Tensor of shape (n_chains,)
        Weighted sum of squared residuals ``Σ_i w_i r_i²`` (inf where not finite).
    noise_var : torch.Tensor of shape (n_chains,)
        Noise variance ``s²`` the log-likelihood is computed with.
    """

    position: torch.Tensor
    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    grad_log_likelihood: torch.Tensor | None
    grad_log_prior: torch.Tensor | None
    sse: torch.Tensor
    noise_var: torch.Tensor

    def log_density(self, inv_temperature: torch.Tensor) -> torch.Tensor:
        """Tempered log-posterior ``β log L + log p(z)`` (up to a constant).

        Parameters
        ----------
        inv_temperature : torch.Tensor of shape (n_chains,)
            ``β = 1 / T`` of each chain.

        Returns
        -------
        torch.Tensor of shape (n_chains,)
            The log-density (``-inf`` where the state is not finite).
        """
        value = inv_temperature * self.log_likelihood + self.log_prior
        return torch.where(torch.isnan(value), torch.full_like(value, -torch.inf), value)

    def grad_log_density(self, inv_temperature: torch.Tensor) -> torch.Tensor:
        """Gradient of :meth:`log_density` w.r.t. the position.

        Parameters
        ----------
        inv_temperature : torch.Tensor of shape (n_chains,)
            Each chain's ``β``, the weight of ``∇ log L``.

        Returns
        -------
        torch.Tensor of shape (n_chains, latent_dim)
            ``β ∇ log L + ∇ log p(z)``.

        Raises
        ------
        ValueError
            If the state was made without gradients.
        """
        if self.grad_log_likelihood is None or self.grad_log_prior is None:
            raise ValueError("this chain state has no gradients (made for a "
                             "gradient-free kernel).")
        return inv_temperature[:, None] * self.grad_log_likelihood + self.grad_log_prior


class StepInfo(NamedTuple):
    """What one transition of every chain reports.

    Attributes
    ----------
    acceptance_prob : torch.Tensor of shape (n_chains,)
        Metropolis-Hastings acceptance probability of the proposal (0 where the
        proposal was not finite).
    accepted : torch.Tensor of shape (n_chains,)
        Whether the proposal was accepted.
    divergent : torch.Tensor of shape (n_chains,)
        Whether the proposal (or an HMC trajectory point) was not finite, and so rejected.
    n_forward_evals : int
        Decoder-and-forward evaluations per chain of the transition.
    n_gradient_evals : int
        Of those, the ones with a gradient.
    """

    acceptance_prob: torch.Tensor
    accepted: torch.Tensor
    divergent: torch.Tensor
    n_forward_evals: int
    n_gradient_evals: int


class KernelParams(NamedTuple):
    """The tuning of a kernel: fixed after the warm-up.

    Attributes
    ----------
    step_size : torch.Tensor of shape (n_chains,)
        MALA's and HMC's ``ε``, pCN's ``β`` (float64).
    metric : Metric
        Inverse mass matrix of each chain (MALA, HMC).
    inv_temperature : torch.Tensor of shape (n_chains,)
        ``1 / T`` of each chain (ones without tempering).
    """

    step_size: torch.Tensor
    metric: Metric
    inv_temperature: torch.Tensor


def select_state(mask: torch.Tensor, new: ChainState, old: ChainState) -> ChainState:
    """Per chain, ``new`` where ``mask`` is True, else ``old``.

    Parameters
    ----------
    mask : torch.Tensor of shape (n_chains,)
        Which chains take the new state.
    new, old : ChainState
        The candidate and the current states (both with gradients, or both without).

    Returns
    -------
    ChainState
        The merged state.
    """
    def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return None
        return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)

    return ChainState(*(pick(a, b) for a, b in zip(new, old)))
