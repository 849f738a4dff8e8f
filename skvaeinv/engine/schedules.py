"""Schedules of latent SGD: learning rate per epoch, regularisation weight per iteration.

Also the regularisers ``R(z)`` of the latent vectors and the chi mean they use.
"""

from __future__ import annotations

import math

import torch

__all__ = ["chi_mean", "learning_rate", "reg_weight_at", "decay_factor", "penalty"]


def chi_mean(n: int) -> float:
    """Mean of the chi distribution with ``n`` degrees of freedom.

    ``E[||z||]`` for ``z ~ N(0, I_n)``: ``sqrt(2) Γ((n + 1) / 2) / Γ(n / 2)``.

    Parameters
    ----------
    n : int
        Degrees of freedom (latent dimension), ``n >= 1``.

    Returns
    -------
    float
        ``E[||z||]`` for ``z ~ N(0, I_n)``: ``sqrt(2) Γ((n + 1) / 2) / Γ(n / 2)``.

    Examples
    --------
    >>> round(chi_mean(20), 4)
    4.4166
    """
    if n < 1:
        raise ValueError(f"n={n!r}: the chi distribution needs n >= 1 degrees of freedom.")
    return math.sqrt(2.0) * math.exp(math.lgamma((n + 1) / 2.0) - math.lgamma(n / 2.0))


def learning_rate(lr: float, lr_decay: float, lr_step: int, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): ``lr * lr_decay ** (epoch // lr_step)``.

    Parameters
    ----------
    lr : float
        Initial learning rate (that of epoch 0).
    lr_decay : float
        Factor applied to the learning rate every ``lr_step`` epochs.
    lr_step : int
        Number of epochs between two decays.
    epoch : int
        Epoch (0-based).

    Returns
    -------
    float
        The learning rate of ``epoch`` (``inf`` where it overflows a float).
    """
    return float(lr) * decay_factor(lr_decay, int(epoch) // int(lr_step))


def reg_weight_at(reg_weight: float, reg_decay: float, iteration: int) -> float:
    """Regularisation weight of ``iteration`` (0-based): ``reg_weight * reg_decay ** k``.

    Parameters
    ----------
    reg_weight : float
        Initial regularisation weight (that of iteration 0).
    reg_decay : float
        Factor applied to the weight at every iteration.
    iteration : int
        Iteration ``k`` (0-based, counted over all epochs).

    Returns
    -------
    float
        The regularisation weight ``λ_k`` of ``iteration`` (0 for a zero
        ``reg_weight``; ``inf`` where it overflows a float).
    """
    if float(reg_weight) == 0.0:
        return 0.0
    return float(reg_weight) * decay_factor(reg_decay, int(iteration))


def decay_factor(factor: float, power: int) -> float:
    """``factor ** power`` as a float, ``inf`` where it overflows.

    Parameters
    ----------
    factor : float
        The decay (or growth) factor.
    power : int
        How many times it applies.

    Returns
    -------
    float
        ``factor ** power`` (``inf`` where that overflows a float).
    """
    try:
        return float(factor) ** int(power)
    except OverflowError:
        return math.inf


def penalty(reg: str | None, znorm: torch.Tensor, radius: float) -> torch.Tensor:
    """The regulariser ``R(z)`` of each start, from its norm ``||z||``.

    Parameters
    ----------
    reg : {"ring", "origin"} or None
        ``(||z|| - radius)²``, ``||z||²`` or zero.
    znorm : torch.Tensor of shape (B,)
        ``||z||`` of each start.
    radius : float
        Radius of the ring (used by ``"ring"`` only).

    Returns
    -------
    torch.Tensor of shape (B,)
        ``R(z)`` of each start.
    """
    if reg == "ring":
        return (znorm - radius) ** 2
    if reg == "origin":
        return znorm ** 2
    return torch.zeros_like(znorm)
