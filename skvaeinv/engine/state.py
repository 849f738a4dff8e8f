"""Per-start state of a multi-start run: which starts go on, and each one's kept iterate."""

from __future__ import annotations

import math

import torch

__all__ = ["Starts", "KeptIterate"]


class Starts:
    """Which starts are still running, and where the others stopped.

    A start whose cost, gradient or iterate became NaN or infinite is frozen and
    flagged with the iteration; the others go on.

    Parameters
    ----------
    n_starts : int
        Number of starts.
    device : torch.device
        Where the flags live.

    Attributes
    ----------
    active : torch.Tensor of shape (n_starts,)
        Whether each start still runs.
    diverged_at : torch.Tensor of shape (n_starts,)
        Iteration where each start was stopped, -1 if it was not.
    """

    def __init__(self, n_starts: int, device: torch.device) -> None:
        self.active = torch.ones(n_starts, dtype=torch.bool, device=device)
        self.diverged_at = torch.full((n_starts,), -1, dtype=torch.long, device=device)

    def stop_unless(self, ok: torch.Tensor, iteration: int) -> None:
        """Stop the running starts where ``ok`` is False, flagged at ``iteration``.

        Parameters
        ----------
        ok : torch.Tensor of shape (n_starts,)
            Whether each start's values are finite.
        iteration : int
            The iteration to flag.
        """
        newly = self.active & ~ok
        self.diverged_at = torch.where(newly, torch.full_like(self.diverged_at, iteration),
                                       self.diverged_at)
        self.active = self.active & ok

    def any(self) -> bool:
        """Whether any start still runs."""
        return bool(self.active.any())


class KeptIterate:
    """Per start, the iterate with the lowest total cost seen so far.

    Parameters
    ----------
    z : torch.Tensor of shape (n_starts, latent_dim)
        Initial latent vectors (kept until a cost is tracked).

    Attributes
    ----------
    cost, sse : torch.Tensor of shape (n_starts,)
        Total cost and weighted sum of squared residuals of the kept iterate (inf
        where none yet).
    iteration : torch.Tensor of shape (n_starts,)
        Its iteration (-1 where none).
    z : torch.Tensor of shape (n_starts, latent_dim)
        Its latent vector.
    images : torch.Tensor or None
        Its decoded image (None until the first tracked cost).
    """

    def __init__(self, z: torch.Tensor) -> None:
        n, dev = z.shape[0], z.device
        self.cost = torch.full((n,), math.inf, dtype=torch.float32, device=dev)
        self.sse = torch.full((n,), math.inf, dtype=torch.float32, device=dev)
        self.iteration = torch.full((n,), -1, dtype=torch.long, device=dev)
        self.z = z.clone()
        self.images: torch.Tensor | None = None

    def update(self, iteration: int, z: torch.Tensor, images: torch.Tensor,
               sse: torch.Tensor, cost: torch.Tensor, active: torch.Tensor) -> None:
        """Keep the iterate of the active starts whose finite cost is lower.

        Parameters
        ----------
        iteration : int
            The iteration of the candidate iterate.
        z : torch.Tensor of shape (n_starts, latent_dim)
            Candidate latent vectors.
        images : torch.Tensor of shape (n_starts, ...)
            Their decoded images.
        sse, cost : torch.Tensor of shape (n_starts,)
            Their weighted sums of squares and total costs.
        active : torch.Tensor of shape (n_starts,)
            The starts still running.
        """
        better = active & torch.isfinite(cost) & (cost < self.cost)
        if self.images is None:
            self.images = torch.full_like(images, math.nan)
        self.cost = torch.where(better, cost, self.cost)
        self.sse = torch.where(better, sse, self.sse)
        self.iteration = torch.where(better, torch.full_like(self.iteration, iteration),
                                     self.iteration)
        self.z = torch.where(better[:, None], z, self.z)
        self.images = torch.where(better.view(-1, *([1] * (images.ndim - 1))), images,
                                  self.images)
