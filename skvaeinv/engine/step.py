"""One latent SGD iteration for all starts: misfit + regularisation, gradient, update."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skvaeinv.engine.config import SGDConfig
from skvaeinv.engine.objective import LatentObjective
from skvaeinv.engine.schedules import penalty
from skvaeinv.engine.state import KeptIterate, Starts

__all__ = ["SGDState", "StepInfo", "SGDStep", "PlainSGD", "make_optimizer"]


@dataclass
class SGDState:
    """What a run carries from one iteration to the next.

    Parameters
    ----------
    z : torch.Tensor of shape (n_starts, latent_dim)
        The current iterates (the optimiser's parameter).
    starts : Starts
        Which starts still run.
    kept : KeptIterate
        Each start's lowest-cost iterate so far.
    """

    z: torch.Tensor
    starts: Starts
    kept: KeptIterate


@dataclass
class StepInfo:
    """What an iteration measured at the iterate it started from (for the history).

    Parameters
    ----------
    batch_rmse : torch.Tensor of shape (n_starts,)
        Weighted RMSE over the mini-batch.
    z_norm : torch.Tensor of shape (n_starts,)
        ``||z||``.
    active : torch.Tensor of shape (n_starts,)
        The starts still running after the checks of that iterate (the history records
        NaN for the others).
    data_rmse, cost : torch.Tensor of shape (n_starts,) or None
        Full-data RMSE and total cost, where the iteration tracked them.
    """

    batch_rmse: torch.Tensor
    z_norm: torch.Tensor
    active: torch.Tensor
    data_rmse: torch.Tensor | None = None
    cost: torch.Tensor | None = None


class PlainSGD:
    """Plain gradient descent, ``z <- z - lr * grad``, rounded as written.

    :class:`torch.optim.SGD` computes the same update as one fused multiply-add
    (``z.add_(grad, alpha=-lr)``), which rounds differently in float32 by one unit in
    the last place now and then; the study's ring schedule amplifies such differences
    over thousands of iterations into different trajectories. This optimiser keeps the
    product ``lr * grad`` rounded before the subtraction, as the study's code and the
    package's earlier releases did, so results stay reproducible across versions. It
    has the part of :class:`torch.optim.Optimizer`'s interface that the loop uses
    (``param_groups`` with an ``"lr"``, and ``step``), and constructing it does not
    import torch's compiler stack as a torch optimiser's first construction does.

    Parameters
    ----------
    params : iterable of torch.Tensor
        The parameters to update.
    lr : float
        The learning rate (the loop sets ``param_groups[0]["lr"]`` every epoch).
    """

    def __init__(self, params, lr: float) -> None:
        self.param_groups = [{"params": list(params), "lr": lr}]

    @torch.no_grad()
    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.copy_(p - group["lr"] * p.grad)


def make_optimizer(config: SGDConfig, z: torch.Tensor) -> PlainSGD | torch.optim.Adam:
    """The torch optimiser of a run: one parameter, the ``(n_starts, latent_dim)`` iterates.

    Parameters
    ----------
    config : SGDConfig
        ``optimizer``, ``lr``, ``adam_betas`` and ``adam_eps``.
    z : torch.Tensor
        The iterates, a leaf tensor updated in place.

    Returns
    -------
    torch.optim.Optimizer
        :class:`PlainSGD` or :class:`torch.optim.Adam` (Adam's moments are
        element-wise, so per start).
    """
    if config.optimizer == "adam":
        return torch.optim.Adam([z], lr=config.lr, betas=config.adam_betas,
                                eps=config.adam_eps)
    return PlainSGD([z], lr=config.lr)


class SGDStep:
    """The iteration of every start at once.

    The data term of a start is the weighted sum of squared residuals of its
    mini-batch, plus ``λ_k R(z)``; the gradient of the sum over running starts is the
    stack of the per-start gradients. A start whose model, misfit, gradient or new
    iterate is not finite stops (its iterate is frozen).

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator and data.
    config : SGDConfig
        The run's configuration.
    radius : float
        Radius of the ring regulariser.
    optimizer : PlainSGD or torch.optim.Adam
        Updates the iterates ``SGDState.z`` from their gradient.
    """

    def __init__(self, objective: LatentObjective, config: SGDConfig, radius: float,
                 optimizer: PlainSGD | torch.optim.Adam) -> None:
        self.objective = objective
        self.config = config
        self.radius = radius
        self.optimizer = optimizer

    def __call__(self, state: SGDState, iteration: int, ray_index: torch.Tensor,
                 reg_weight: float, tracked: bool) -> StepInfo:
        """Advance every running start by one iteration.

        Parameters
        ----------
        state : SGDState
            Updated in place.
        iteration : int
            The iteration (0-based), for divergence flags and the kept iterate.
        ray_index : torch.Tensor of shape (n_starts, k)
            Each start's mini-batch.
        reg_weight : float
            ``λ_k``.
        tracked : bool
            Whether to evaluate the full-data cost and keep the better iterates.

        Returns
        -------
        StepInfo
            The measurements at the iterate the step started from.
        """
        z = state.z.detach().requires_grad_(True)
        decoded, batch_sse, sse, znorm, reg_term = self._misfit(z, ray_index, tracked)
        total = torch.where(state.starts.active, batch_sse + reg_weight * reg_term,
                            torch.zeros_like(batch_sse)).sum()
        (grad,) = torch.autograd.grad(total, z)
        with torch.no_grad():
            batch_sse, znorm, reg_term = batch_sse.detach(), znorm.detach(), reg_term.detach()
            if not self.config.linear and tracked:
                sse = self.objective.weighted_sse(
                    self.objective.residuals(decoded.slowness.detach()))
            ok = (decoded.finite & torch.isfinite(batch_sse) & torch.isfinite(grad).all(1)
                  & torch.isfinite(znorm))   # (a finite z whose norm overflows diverged)
            if tracked:
                ok &= torch.isfinite(sse)
            state.starts.stop_unless(ok, iteration)
            info = self._measure(state, ray_index, batch_sse, znorm)
            if tracked:
                cost = sse + reg_weight * reg_term
                state.kept.update(iteration, z.detach(), decoded.images.detach(), sse, cost,
                                  state.starts.active)
                info.data_rmse, info.cost = self.objective.rmse(sse), cost
            self._update(state, z.detach(), grad, iteration)
        return info

    def _misfit(self, z: torch.Tensor, ray_index: torch.Tensor, tracked: bool):
        """Decoded models, mini-batch and (linear: full-data) misfits, ``||z||``, ``R(z)``."""
        objective = self.objective
        decoded = objective.decode(z)
        sse = None
        if self.config.linear:
            r_all = objective.residuals(decoded.slowness)
            r_batch = r_all.gather(1, ray_index)
            sse = objective.weighted_sse(r_all.detach())
        else:
            r_batch = objective.residuals(decoded.slowness, ray_index)
        batch_sse = objective.weighted_sse(r_batch, ray_index)
        znorm = torch.linalg.vector_norm(z, dim=1)
        return decoded, batch_sse, sse, znorm, penalty(self.config.reg, znorm, self.radius)

    def _measure(self, state: SGDState, ray_index: torch.Tensor, batch_sse: torch.Tensor,
                 znorm: torch.Tensor) -> StepInfo:
        # a batch whose weights are all zero has zero (weighted) misfit
        w_batch = self.objective.w[ray_index].sum(1).clamp_min(torch.finfo(torch.float32).tiny)
        return StepInfo(batch_rmse=torch.sqrt(batch_sse / w_batch), z_norm=znorm,
                        active=state.starts.active)

    def _update(self, state: SGDState, z_before: torch.Tensor, grad: torch.Tensor,
                iteration: int) -> None:
        """The optimiser's update; stopped starts (and those it makes non-finite) freeze."""
        z_before = z_before.clone()
        state.z.grad = grad
        self.optimizer.step()
        state.z.grad = None
        z_new = state.z.detach()
        state.starts.stop_unless(torch.isfinite(torch.linalg.vector_norm(z_new, dim=1)),
                                 iteration)
        state.z.copy_(torch.where(state.starts.active[:, None], z_new, z_before))
