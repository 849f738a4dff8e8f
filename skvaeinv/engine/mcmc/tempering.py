"""Replica exchange (parallel tempering) across a ladder of likelihood temperatures.

The batch holds ``n_replicas`` copies of the ladder ``T_0 = 1 < T_1 < ... < T_{K-1}``:
chain ``b`` sits at level ``b % K`` of replica ``b // K`` and targets
``π_k(z, s²) ∝ L(z, s²)^{1/T_k} p(z) p(s²)``. Chains are slots of fixed temperature:
a swap exchanges the states of two neighbouring slots of a replica. Swaps alternate
between the even pairs ``(0, 1), (2, 3), ...`` and the odd pairs ``(1, 2), ...``
(deterministic even-odd swaps), each accepted with the exact probability
``min(1, exp((β_k - β_{k+1}) (ℓ_{k+1} - ℓ_k)))`` with ``ℓ`` the untempered
log-likelihood (its normalisation in ``s`` included). The draws of the chains of the
level-0 slots (``T = 1``) sample the posterior.

Draws per swap attempt: one uniform, from the generator of the pair's lower slot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from skvaeinv.engine.mcmc.draws import uniform_draws
from skvaeinv.engine.mcmc.noise import full_log_likelihood
from skvaeinv.engine.mcmc.state import ChainState

__all__ = ["ladder", "swap_step"]


def ladder(temperatures: Sequence[float], n_chains: int, device: torch.device
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each chain's inverse temperature and level.

    Parameters
    ----------
    temperatures : sequence of float
        The ladder, ``T_0 = 1`` first; ``n_chains`` is a multiple of its length.
    n_chains : int
        Number of chains.
    device : torch.device
        Where the tensors live.

    Returns
    -------
    inv_temperature : torch.Tensor of shape (n_chains,)
        ``1 / T`` of each chain (float64).
    level : torch.Tensor of shape (n_chains,)
        Its level ``b % K``.

    Examples
    --------
    >>> import torch
    >>> beta, level = ladder((1.0, 4.0), 4, torch.device("cpu"))
    >>> beta.tolist(), level.tolist()
    ([1.0, 0.25, 1.0, 0.25], [0, 1, 0, 1])
    """
    level = torch.arange(n_chains, device=device) % len(temperatures)
    inv_t = 1.0 / torch.as_tensor(temperatures, dtype=torch.float64, device=device)
    return inv_t[level], level


def swap_step(state: ChainState, generators: Sequence[np.random.Generator],
              inv_temperature: torch.Tensor, n_levels: int, parity: int, n_data: int
              ) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
    """Propose swaps between neighbouring slots of every replica.

    Parameters
    ----------
    state : ChainState
        Current state (slot ``b`` at temperature ``1 / inv_temperature[b]``).
    generators : sequence of numpy Generators
        One per chain; the lower slot of each pair draws the uniform.
    inv_temperature : torch.Tensor of shape (n_chains,)
        ``β`` of each slot.
    n_levels : int
        Length ``K`` of the ladder.
    parity : int
        0: pairs ``(0, 1), (2, 3), ...``; 1: pairs ``(1, 2), (3, 4), ...``.
    n_data : int
        Number of data of positive weight.

    Returns
    -------
    state : ChainState
        The state after the swaps.
    attempted : torch.Tensor of shape (n_chains,)
        Whether slot ``b`` was the lower slot of a pair.
    acceptance_prob : torch.Tensor of shape (n_chains,)
        The swap's acceptance probability at the lower slots (0 elsewhere).
    """
    n = inv_temperature.shape[0]
    level = torch.arange(n, device=inv_temperature.device) % n_levels
    lower = (level % 2 == parity) & (level + 1 < n_levels)
    lower_idx = torch.nonzero(lower).flatten()
    ell = full_log_likelihood(state, n_data)
    log_ratio = torch.full((n,), -math.inf, dtype=torch.float64, device=ell.device)
    up = lower_idx + 1
    log_ratio[lower_idx] = ((inv_temperature[lower_idx] - inv_temperature[up])
                            * (ell[up] - ell[lower_idx]))
    log_ratio = torch.where(torch.isnan(log_ratio), torch.full_like(log_ratio, -math.inf),
                            log_ratio)
    u = uniform_draws([generators[i] for i in lower_idx.tolist()], ell.device)
    swap = torch.zeros(n, dtype=torch.bool, device=ell.device)
    swap[lower_idx] = torch.log(u) < log_ratio[lower_idx]
    perm = torch.arange(n, device=ell.device)
    perm[swap] += 1
    perm[torch.nonzero(swap).flatten() + 1] -= 1
    new = ChainState(*(None if f is None else f[perm] for f in state))
    prob = torch.where(lower, torch.exp(torch.clamp(log_ratio, max=0.0)),
                       torch.zeros_like(log_ratio))
    return new, lower, prob
