"""Random draws of a batch of chains, one numpy Generator per chain.

Each chain draws from its own generator, in an order fixed by its own kernel, so its
draws do not depend on which other chains share its batch. The draws are made in
float64 on the CPU and moved to the chains' device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["gamma_draws", "normal_draws", "to_device", "uniform_draws"]


def to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """A float64 tensor of ``values`` on ``device``.

    Parameters
    ----------
    values : ndarray
        The values.
    device : torch.device
        Where the tensor lives.

    Returns
    -------
    torch.Tensor
        float64 copy of ``values``.
    """
    return torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)


def normal_draws(generators: Sequence[np.random.Generator], dim: int,
                 device: torch.device) -> torch.Tensor:
    """One standard normal vector per chain.

    Parameters
    ----------
    generators : sequence of numpy Generators
        One per chain.
    dim : int
        Length of each vector.
    device : torch.device
        Where the draws go.

    Returns
    -------
    torch.Tensor of shape (n_chains, dim)
        float64 draws, row ``b`` from ``generators[b]``.

    Examples
    --------
    >>> import numpy as np, torch
    >>> gens = [np.random.default_rng(0), np.random.default_rng(1)]
    >>> normal_draws(gens, 3, torch.device("cpu")).shape
    torch.Size([2, 3])
    """
    return to_device(np.stack([g.standard_normal(dim) for g in generators]), device)


def uniform_draws(generators: Sequence[np.random.Generator],
                  device: torch.device) -> torch.Tensor:
    """One uniform draw in ``[0, 1)`` per chain.

    Parameters
    ----------
    generators : sequence of numpy Generators
        One per chain.
    device : torch.device
        Where the draws go.

    Returns
    -------
    torch.Tensor of shape (n_chains,)
        float64 draws.
    """
    return to_device(np.array([g.random() for g in generators]), device)


def gamma_draws(generators: Sequence[np.random.Generator], shape: np.ndarray,
                device: torch.device) -> torch.Tensor:
    """One unit-scale gamma draw per chain, of the chain's shape parameter.

    Parameters
    ----------
    generators : sequence of numpy Generators
        One per chain.
    shape : ndarray of shape (n_chains,)
        Shape parameters (> 0).
    device : torch.device
        Where the draws go.

    Returns
    -------
    torch.Tensor of shape (n_chains,)
        float64 draws of ``Gamma(shape_b, 1)``.
    """
    return to_device(np.array([g.gamma(a) for g, a in zip(generators, shape)]), device)
