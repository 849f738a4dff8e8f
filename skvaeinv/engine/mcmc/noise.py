"""The Gibbs step of the noise variance ``s²`` given the latent vectors.

With relative weights ``w_i`` (``σ_i = s / sqrt(w_i)``), ``N`` data of positive weight
and the scale-invariant prior ``p(s) ∝ 1/s``, the conditional posterior of ``s²`` at
inverse temperature ``β`` (the likelihood raised to ``β``, its normalisation included)
is ``InvGamma(β N / 2, β Σ_i w_i r_i² / 2)``. The step draws it exactly; the stored
log-likelihood and its gradient are rescaled by the ratio of the variances, with no new
evaluation of the model.

Draws per chain and step: one gamma variate, from that chain's generator.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from skvaeinv.engine.mcmc.draws import gamma_draws
from skvaeinv.engine.mcmc.state import ChainState
from skvaeinv.engine.mcmc.target import rescale_noise

__all__ = ["full_log_likelihood", "noise_step"]


def noise_step(state: ChainState, generators: Sequence[np.random.Generator], n_data: int,
               inv_temperature: torch.Tensor) -> ChainState:
    """Draw every chain's noise variance from its conditional posterior.

    Parameters
    ----------
    state : ChainState
        Current state (its misfit ``sse``).
    generators : sequence of numpy Generators
        One per chain.
    n_data : int
        Number of data of positive weight, ``N >= 1``.
    inv_temperature : torch.Tensor of shape (n_chains,)
        ``β`` of each chain.

    Returns
    -------
    ChainState
        The state at the new noise variances (unchanged for a chain whose misfit is not
        finite and positive).

    Examples
    --------
    >>> import numpy as np, torch
    >>> one = torch.ones(1, dtype=torch.float64)
    >>> state = ChainState(torch.zeros(1, 2, dtype=torch.float64), -0.5 * 8 * one,
    ...                    0 * one, None, None, 8 * one, one)
    >>> new = noise_step(state, [np.random.default_rng(0)], 4, one)
    >>> bool(torch.allclose(new.log_likelihood, -0.5 * 8 / new.noise_var))
    True
    """
    beta = inv_temperature.cpu().numpy()
    shape = 0.5 * n_data * beta
    gamma = gamma_draws(generators, shape, state.sse.device)
    scale = 0.5 * inv_temperature * state.sse
    new_var = scale / gamma
    ok = torch.isfinite(new_var) & (new_var > 0)
    return rescale_noise(state, torch.where(ok, new_var, state.noise_var))


def full_log_likelihood(state: ChainState, n_data: int) -> torch.Tensor:
    """The log-likelihood with its normalisation in ``s``: ``-½ Σ w r² / s² - N/2 log s²``.

    Parameters
    ----------
    state : ChainState
        The chains' state.
    n_data : int
        Number of data of positive weight.

    Returns
    -------
    torch.Tensor of shape (n_chains,)
        The log-likelihood, up to a constant shared by every ``z`` and ``s``.
    """
    return state.log_likelihood - 0.5 * n_data * torch.log(state.noise_var)
