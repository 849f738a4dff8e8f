"""Progress of a multi-start run: a progress bar and log lines, both optional."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["Progress"]

logger = logging.getLogger("skvaeinv.engine")


class Progress:
    """Reports a run's progress: a tqdm bar over iterations and a log line per epochs.

    Parameters
    ----------
    n_iter : int
        Iterations planned.
    epochs : int
        Epochs planned.
    bar : bool
        Show the progress bar (with the best data RMSE).
    log_every : int
        Log a line every this many epochs (``logging.INFO``); 0 = never.
    prefix : str
        Prefix of the log lines and the bar's label.
    """

    def __init__(self, n_iter: int, epochs: int, *, bar: bool, log_every: int,
                 prefix: str) -> None:
        self.epochs = epochs
        self.log_every = log_every
        self.prefix = prefix
        self.show_bar = bar
        self.bar = tqdm(total=n_iter, desc=prefix.rstrip(": ") or "latent SGD", unit="it",
                        leave=False, disable=not bar)

    def iteration(self) -> None:
        """One more iteration done."""
        self.bar.update(1)

    def epoch(self, epoch: int, iteration: int, lr: float, reg_weight: float,
              rmse: torch.Tensor, active: torch.Tensor) -> None:
        """An epoch done: update the bar and, at the cadence, log a line.

        Parameters
        ----------
        epoch : int
            The epoch just finished (0-based).
        iteration : int
            Iterations done so far.
        lr, reg_weight : float
            The schedule values of its last iteration.
        rmse : torch.Tensor of shape (n_starts,)
            Data RMSE of each start's kept iterate (inf where none).
        active : torch.Tensor of shape (n_starts,)
            The starts still running.
        """
        if self.show_bar:
            self.bar.set_postfix(best_rmse=f"{float(rmse.min()):.3g}")
        if not self.log_every or (epoch + 1) % self.log_every:
            return
        if not logger.isEnabledFor(logging.INFO):
            return
        values = rmse.cpu().numpy()
        finite = values[np.isfinite(values)]
        best = float(finite.min()) if finite.size else math.nan
        median = float(np.median(finite)) if finite.size else math.nan
        logger.info("%sepoch %d/%d (iteration %d): lr=%.3g, reg weight=%.3g, kept data RMSE "
                    "min %.4g median %.4g, %d/%d starts active", self.prefix, epoch + 1,
                    self.epochs, iteration, lr, reg_weight, best, median,
                    int(active.sum()), active.numel())

    def all_stopped(self, n_starts: int, last: int) -> None:
        """Say that every start diverged, the last at iteration ``last``."""
        logger.warning("%sall %d starts diverged (the last at iteration %d); stopping.",
                       self.prefix, n_starts, last)

    def interrupted(self, iteration: int, n_iter: int) -> None:
        """Say that the run was interrupted at ``iteration``."""
        self.bar.close()
        logger.warning("%sinterrupted at iteration %d of %d; keeping the results so far.",
                       self.prefix, iteration, n_iter)

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
