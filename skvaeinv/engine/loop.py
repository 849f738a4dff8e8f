"""The latent SGD loop: epochs of mini-batches over every start at once."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from skvaeinv._device import ieee_float32
from skvaeinv.engine.batches import epoch_orders, group_labels
from skvaeinv.engine.config import SGDConfig
from skvaeinv.engine.history import HistoryRecorder, SGDHistory
from skvaeinv.engine.objective import ForwardCallable, LatentObjective, as_device_tensor
from skvaeinv.engine.progress import Progress
from skvaeinv.engine.schedules import chi_mean, learning_rate, penalty
from skvaeinv.engine.state import KeptIterate, Starts
from skvaeinv.engine.step import SGDState, SGDStep, StepInfo, make_optimizer

__all__ = ["EngineResult", "run_latent_sgd", "SGDLoop"]


@dataclass
class EngineResult:
    """What :func:`run_latent_sgd` returns (numpy arrays, one row per start).

    Each parameter is kept as the attribute of the same name.

    Parameters
    ----------
    models : ndarray of shape (B, H, W)
        Decoded image of the kept (lowest total cost) iterate; NaN if none was tracked.
    latents : ndarray of shape (B, latent_dim)
        Kept latent vectors.
    data_rmse : ndarray of shape (B,)
        Full-data weighted RMSE at the kept iterate (inf if none).
    cost : ndarray of shape (B,)
        Total cost at the kept iterate.
    best_iteration : ndarray of shape (B,)
        Iteration of the kept iterate (``n_iter`` = the final iterate; -1 = none).
    final_latents : ndarray of shape (B, latent_dim)
        Latent vectors after the last update.
    diverged : ndarray of shape (B,)
        Whether the start was stopped because of NaN/inf.
    diverged_at : ndarray of shape (B,)
        Iteration where it was stopped (-1 if it was not).
    n_iter : int
        Iterations completed.
    interrupted : bool
        True when the run was stopped by KeyboardInterrupt.
    history : SGDHistory
        Per-start, per-iteration records of the run.
    time_shift : ndarray of shape (B,) or None, default=None
        With ``config.time_shift``: the least-squares time shift (ns) of each kept
        model, to add to its computed traveltimes (NaN where none was kept).
    """

    models: np.ndarray
    latents: np.ndarray
    data_rmse: np.ndarray
    cost: np.ndarray
    best_iteration: np.ndarray
    final_latents: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    n_iter: int
    interrupted: bool
    history: SGDHistory = field(repr=False)
    time_shift: np.ndarray | None = None


class SGDLoop:
    """Epochs of mini-batch steps over all starts, with the kept iterates and history.

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator and data.
    config : SGDConfig
        The run's configuration (its ``n_rays`` must be the objective's).
    z0 : torch.Tensor of shape (n_starts, latent_dim)
        Initial latent vectors (float32, on the objective's device).
    rngs : sequence of numpy Generators
        One per start, drawing that start's mini-batch orders.
    groups : ndarray of shape (n_rays,) or None, default=None
        Dense ray group labels for grouped mini-batches.
    log_prefix : str, default=""
        Prefix of log lines.
    """

    def __init__(self, objective: LatentObjective, config: SGDConfig, z0: torch.Tensor,
                 rngs: Sequence[np.random.Generator], *, groups: np.ndarray | None = None,
                 log_prefix: str = "") -> None:
        self.objective = objective
        self.config = config
        self.rngs = rngs
        self.groups = groups
        device = objective.device
        self.state = SGDState(z=z0, starts=Starts(z0.shape[0], device), kept=KeptIterate(z0))
        self.radius = (chi_mean(z0.shape[1]) if config.ring_radius is None
                       else float(config.ring_radius))
        self.optimizer = make_optimizer(config, self.state.z)
        self.step = SGDStep(objective, config, self.radius, self.optimizer)
        self.recorder = HistoryRecorder(config.n_iter, z0.shape[0], device)
        self.progress = Progress(config.n_iter, config.epochs, bar=config.progress,
                                 log_every=config.log_every, prefix=log_prefix)
        self.iteration = 0

    def run(self) -> EngineResult:
        """Run every epoch (or until all starts stop, or an interrupt), then the final
        iterate.

        Returns
        -------
        EngineResult
            The kept iterate of every start, its cost, divergence flags and history.
        """
        interrupted = False
        try:
            with ieee_float32(self.objective.device):   # no TF32 convolutions on a GPU
                for epoch in range(self.config.epochs):
                    self.run_epoch(epoch)
                    if not self.state.starts.any():
                        self.progress.all_stopped(len(self.rngs),
                                                  int(self.state.starts.diverged_at.max()))
                        break
                self.track_final()
        except KeyboardInterrupt:
            interrupted = True
            self.progress.interrupted(self.iteration, self.config.n_iter)
        self.progress.close()
        return self.result(interrupted)

    def run_epoch(self, epoch: int) -> None:
        """One pass over the rays: ``n_batches`` steps at the epoch's learning rate.

        Parameters
        ----------
        epoch : int
            The epoch (0-based).
        """
        config = self.config
        orders = torch.from_numpy(epoch_orders(self.rngs, config.n_rays, self.groups)
                                  ).to(self.objective.device)
        lr = learning_rate(config.lr, config.lr_decay, config.lr_step, epoch)
        self.optimizer.param_groups[0]["lr"] = lr
        for j in range(config.n_batches):
            k = self.iteration
            reg_weight = config.reg_weight_at(k)
            ray_index = orders[:, j * config.batch_size:(j + 1) * config.batch_size]
            info = self.step(self.state, k, ray_index, reg_weight,
                             tracked=k % config.tracking_cadence == 0)
            self._record(k, info, lr, reg_weight, epoch)
            self.iteration += 1
            self.progress.iteration()
        self.progress.epoch(epoch, self.iteration, lr, reg_weight,
                            self.objective.rmse(self.state.kept.sse), self.state.starts.active)

    def _record(self, k: int, info: StepInfo, lr: float, reg_weight: float,
                epoch: int) -> None:
        values = dict(batch_rmse=info.batch_rmse, z_norm=info.z_norm)
        if info.cost is not None:
            values.update(data_rmse=info.data_rmse, cost=info.cost)
        self.recorder.record(k, info.active, **values)
        self.recorder.record_schedule(k, lr, reg_weight, epoch)

    @torch.no_grad()
    def track_final(self) -> None:
        """Evaluate the iterate after the last update and keep it where it is better."""
        state, k = self.state, self.iteration
        decoded = self.objective.decode(state.z)
        sse = self.objective.weighted_sse(self.objective.residuals(decoded.slowness))
        state.starts.stop_unless(decoded.finite & torch.isfinite(sse), k)
        znorm = torch.linalg.vector_norm(state.z, dim=1)
        cost = sse + self.config.reg_weight_at(k) * penalty(self.config.reg, znorm,
                                                            self.radius)
        state.kept.update(k, state.z.clone(), decoded.images, sse, cost, state.starts.active)

    def result(self, interrupted: bool) -> EngineResult:
        """Each start's kept iterate, flags and history, copied to numpy.

        Parameters
        ----------
        interrupted : bool
            True when a KeyboardInterrupt ended the run early.

        Returns
        -------
        EngineResult
            Kept models, latents, data RMSE, costs, flags and the history.
        """
        kept, starts = self.state.kept, self.state.starts
        images = kept.images
        if images is None:  # interrupted before anything was tracked
            with torch.no_grad():
                shape = self.objective.decode(self.state.z[:1]).images.shape[1:]
            images = torch.full((len(self.rngs), *shape), math.nan,
                                device=self.objective.device)
        data_rmse = self.objective.rmse(kept.sse).cpu().numpy().astype(np.float64)
        return EngineResult(
            models=images.cpu().numpy(), latents=kept.z.cpu().numpy(), data_rmse=data_rmse,
            cost=kept.cost.cpu().numpy().astype(np.float64),
            best_iteration=kept.iteration.cpu().numpy(),
            final_latents=self.state.z.detach().cpu().numpy().copy(),
            diverged=(starts.diverged_at >= 0).cpu().numpy(),
            diverged_at=starts.diverged_at.cpu().numpy(), n_iter=self.iteration,
            interrupted=interrupted, history=self.recorder.history(self.iteration),
            time_shift=self._time_shifts(data_rmse))

    def _time_shifts(self, data_rmse: np.ndarray) -> np.ndarray | None:
        """The kept models' least-squares time shifts (with ``config.time_shift``)."""
        if not self.config.time_shift:
            return None
        kept = np.isfinite(data_rmse)
        shift = np.full(data_rmse.shape, np.nan)
        if kept.any():
            with torch.no_grad():
                z = self.state.kept.z[torch.as_tensor(kept, device=self.state.kept.z.device)]
                slowness = self.objective.decode(z).slowness
                shift[kept] = self.objective.time_shift_of(slowness).cpu().numpy()
        return shift


def run_latent_sgd(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    forward: ForwardCallable,
    y: np.ndarray | torch.Tensor,
    z0: np.ndarray | torch.Tensor,
    rngs: Sequence[np.random.Generator],
    config: SGDConfig,
    *,
    petrophysics: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sample_weight: np.ndarray | None = None,
    batch_groups: np.ndarray | None = None,
    device: str | torch.device = "cpu",
    log_prefix: str = "",
) -> EngineResult:
    """Run latent-space SGD for a batch of starts.

    Parameters
    ----------
    decoder : callable
        Maps a float32 tensor ``(B, latent_dim)`` to images ``(B, H, W)`` (or
        ``(B, 1, H, W)``), differentiably w.r.t. its input. Its weights are not updated.
    forward : callable
        ``forward(slowness (B, N), ray_index (B, k) or None) -> (B, k)`` traveltimes of
        rays ``ray_index[b]`` through ``slowness[b]`` (all rays, ``(B, n_rays)``, when
        ``ray_index`` is None), differentiable w.r.t. the slowness (the
        :class:`skvaeinv.forward.TorchForward` contract).
    y : array of shape (n_rays,)
        Observed traveltimes; ``n_rays`` must be ``config.n_rays``.
    z0 : array of shape (B, latent_dim)
        Initial latent vectors.
    rngs : sequence of numpy Generators, length B
        One generator per start, drawing that start's mini-batch orders, so that a
        start's trajectory does not depend on which other starts share its batch.
    config : SGDConfig
        Schedules, regulariser, optimiser, tracking, precision (validated when made).
    petrophysics : callable, optional
        Facies → slowness on torch tensors; identity if None. It is called with the
        decoded batch as the decoder returns it (``(B, H, W)`` float32 for image
        decoders) and must return slowness of that shape.
    sample_weight : array of shape (n_rays,), optional
        Weights of the squared residuals (used as given).
    batch_groups : array of shape (n_rays,), optional
        Group label of each ray (e.g. its source). If given, each epoch visits the
        groups in a random order (per start) and the rays of a group consecutively, in
        random order, so a mini-batch holds rays of one or two groups. None (default):
        uniformly random mini-batches.
    device : str or torch.device, default="cpu"
        Torch device of the run: the latent vectors, data and weights are placed there,
        and ``decoder`` and ``forward`` receive tensors on it.
    log_prefix : str, default=""
        Prefix of the log lines.

    Returns
    -------
    EngineResult
        The kept iterate of every start, its cost, divergence flags and the history.

    Raises
    ------
    ValueError
        If the data, starts, generators, weights or groups do not match each other or
        ``config``.
    """
    dev = torch.device(device)
    objective = LatentObjective(decoder, forward, y, dev, petrophysics=petrophysics,
                                sample_weight=sample_weight, precision=config.precision,
                                compile=config.compile, time_shift=config.time_shift)
    z = as_device_tensor(z0, dev)
    _check_run(objective, config, z, rngs)
    loop = SGDLoop(objective, config, z, rngs,
                   groups=group_labels(batch_groups, objective.n_rays), log_prefix=log_prefix)
    return loop.run()


def _check_run(objective: LatentObjective, config: SGDConfig, z: torch.Tensor,
               rngs: Sequence[np.random.Generator]) -> None:
    """The data, the starts and their generators agree with each other and the config."""
    if z.ndim != 2:
        raise ValueError(f"z0 must have shape (n_starts, latent_dim), got {tuple(z.shape)}.")
    if len(rngs) != z.shape[0]:
        raise ValueError(f"rngs has {len(rngs)} generators for {z.shape[0]} starts.")
    if objective.n_rays != config.n_rays:
        raise ValueError(f"y has {objective.n_rays} traveltimes but the configuration is "
                         f"for n_rays={config.n_rays}.")
