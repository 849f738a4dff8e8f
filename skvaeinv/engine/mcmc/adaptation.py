"""Warm-up adaptation wrapped around a kernel: step sizes and the metric.

- Step sizes: the dual averaging of Hoffman & Gelman (2014, Algorithm 5; Stan's
  constants ``γ = 0.05``, ``t0 = 10``, ``κ = 0.75``, ``μ = log(10 ε_0)``) drives each
  chain's acceptance probability towards ``target_accept``. One step size per chain by
  default (a chain's warm-up then depends on its own draws only), or one per
  temperature level shared by its chains (``"shared"``: driven by their mean
  acceptance). After the warm-up each chain keeps its averaged step size ``ε̄``.
- Metric: with ``mass="gauss-newton"`` each chain's metric is the inverse of the
  Gauss-Newton precision at its position (the Laplace approximation), computed before
  the first step and again at the end of each window below, from no draws
  (``mass_init="gauss-newton"``: before the first step only, the windows then estimate
  the metric from draws). With ``mass="diag"`` or ``"dense"`` and at least
  :data:`MIN_MASS_WARMUP` warm-up iterations, the warm-up is cut as Stan's is: an
  initial buffer (15 %, step size only), two windows (a third and two thirds of the
  rest), a terminal buffer (10 %, at least :data:`MIN_TERMINAL` iterations; step size
  only, for the final metric). At the end of each window the metric is estimated
  from that window's draws, pooled over the chains of each temperature
  (:func:`~skvaeinv.engine.mcmc.metric.estimate_metric`), and the dual averaging
  restarts from the current averaged step size.

Step sizes and metric are fixed after the warm-up, so the kept draws come from one
fixed Metropolis-adjusted kernel per chain.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from skvaeinv.engine.mcmc.config import SamplerConfig
from skvaeinv.engine.mcmc.metric import Metric, estimate_metric, metric_from_precision
from skvaeinv.engine.mcmc.state import ChainState, KernelParams, StepInfo

__all__ = ["MIN_MASS_WARMUP", "MIN_TERMINAL", "DualAveraging", "WindowAdaptation",
           "gauss_newton_updates", "mass_windows"]

logger = logging.getLogger(__name__)

#: Fewest warm-up iterations with which the metric is estimated (identity below).
MIN_MASS_WARMUP = 100
#: Fewest iterations of the terminal buffer (step size only, with the final metric).
MIN_TERMINAL = 20


def _group_mean(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each entry replaced by the mean over its group."""
    n_groups = int(groups.max()) + 1
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, groups, values)
    counts.index_add_(0, groups, torch.ones_like(values))
    return (sums / counts)[groups]


class DualAveraging:
    """Dual averaging of log step sizes towards a target acceptance probability.

    Parameters
    ----------
    step_size : torch.Tensor of shape (n_chains,)
        Initial step sizes (float64).
    target_accept : float
        Target acceptance probability ``δ``.
    max_step_size : float, default=inf
        Upper bound of the step sizes (pCN's ``β <= 1``).
    groups : torch.Tensor of shape (n_chains,) or None, default=None
        Chains sharing a step size (their mean acceptance drives it); None: one per
        chain.

    Examples
    --------
    >>> import torch
    >>> da = DualAveraging(torch.tensor([1.0], dtype=torch.float64), 0.5)
    >>> for _ in range(200):
    ...     da.update(torch.exp(-da.step_size))   # acceptance exp(-ε): 0.5 at ε = log 2
    >>> round(float(da.final_step_size), 1)   # log 2 = 0.69
    0.7
    """

    GAMMA, T0, KAPPA = 0.05, 10.0, 0.75

    def __init__(self, step_size: torch.Tensor, target_accept: float, *,
                 max_step_size: float = math.inf, groups: torch.Tensor | None = None
                 ) -> None:
        self.target_accept = target_accept
        self.max_log = math.log(max_step_size) if math.isfinite(max_step_size) else math.inf
        self.groups = groups
        self.restart(step_size)

    def restart(self, step_size: torch.Tensor) -> None:
        """Start the averaging again from ``step_size``.

        Parameters
        ----------
        step_size : torch.Tensor of shape (n_chains,)
            The new starting step sizes.
        """
        self.log_step = torch.clamp(torch.log(step_size), max=self.max_log)
        self.mu = torch.log(10.0 * step_size)
        self.log_step_bar = self.log_step.clone()
        self.h_bar = torch.zeros_like(self.log_step)
        self.t = 0

    def update(self, acceptance_prob: torch.Tensor) -> None:
        """One update from the acceptance probabilities of the last step.

        Parameters
        ----------
        acceptance_prob : torch.Tensor of shape (n_chains,)
            Acceptance probabilities (NaN counts as 0).
        """
        a = torch.nan_to_num(acceptance_prob.to(torch.float64), nan=0.0)
        if self.groups is not None:
            a = _group_mean(a, self.groups)
        self.t += 1
        t, w = self.t, 1.0 / (self.t + self.T0)
        self.h_bar = (1 - w) * self.h_bar + w * (self.target_accept - a)
        self.log_step = torch.clamp(self.mu - math.sqrt(t) / self.GAMMA * self.h_bar,
                                    max=self.max_log)
        eta = t ** -self.KAPPA
        self.log_step_bar = eta * self.log_step + (1 - eta) * self.log_step_bar

    @property
    def step_size(self) -> torch.Tensor:
        """The step sizes of the next warm-up step."""
        return torch.exp(self.log_step)

    @property
    def final_step_size(self) -> torch.Tensor:
        """The averaged step sizes ``ε̄``, kept after the warm-up."""
        return torch.exp(self.log_step_bar)


def mass_windows(n_warmup: int, adapt_mass: bool) -> list[tuple[int, int]]:
    """The warm-up iterations ``[start, end)`` whose draws estimate the metric.

    Parameters
    ----------
    n_warmup : int
        Warm-up iterations.
    adapt_mass : bool
        Whether the metric is estimated at all.

    Returns
    -------
    list of (int, int)
        Two windows (none without mass adaptation or with fewer than
        :data:`MIN_MASS_WARMUP` iterations).

    Examples
    --------
    >>> mass_windows(200, True)
    [(30, 80), (80, 180)]
    >>> mass_windows(100, True)
    [(15, 36), (36, 80)]
    """
    if not adapt_mass or n_warmup < MIN_MASS_WARMUP:
        return []
    start, end = int(0.15 * n_warmup), n_warmup - max(int(0.1 * n_warmup), MIN_TERMINAL)
    middle = start + (end - start) // 3
    return [(start, middle), (middle, end)]


def gauss_newton_updates(config: SamplerConfig) -> int:
    """How often a run computes the Gauss-Newton metric (``2 d`` evaluations per chain each).

    Parameters
    ----------
    config : SamplerConfig
        ``mass``, ``mass_init`` and ``n_warmup``.

    Returns
    -------
    int
        0 without it; 1 (before the first step) with ``mass_init="gauss-newton"``; with
        ``mass="gauss-newton"`` also once at the end of each adaptation window.

    Examples
    --------
    >>> gauss_newton_updates(SamplerConfig(mass="gauss-newton", n_warmup=200))
    3
    >>> gauss_newton_updates(SamplerConfig(mass="dense", mass_init="gauss-newton"))
    1
    """
    if not config.gauss_newton_start:
        return 0
    if config.mass != "gauss-newton":
        return 1
    return 1 + len(mass_windows(config.n_warmup, True))


class WindowAdaptation:
    """Step-size and metric adaptation over a run's warm-up.

    Parameters
    ----------
    config : SamplerConfig
        ``n_warmup``, ``step_size``, ``target_accept``, ``mass``,
        ``step_size_adaptation`` and ``sampler``.
    inv_temperature : torch.Tensor of shape (n_chains,)
        ``1 / T`` of each chain.
    level : torch.Tensor of shape (n_chains,)
        Temperature level of each chain (the chains whose draws are pooled).
    curvature : callable or None, default=None
        ``curvature(state) -> (n_chains, d, d)`` precisions, for
        ``mass="gauss-newton"`` or ``mass_init="gauss-newton"`` (e.g.
        :meth:`LatentPosterior.gauss_newton
        <skvaeinv.engine.mcmc.target.LatentPosterior.gauss_newton>` at the state).
    """

    def __init__(self, config: SamplerConfig, inv_temperature: torch.Tensor,
                 level: torch.Tensor,
                 curvature: Callable[[ChainState], torch.Tensor] | None = None) -> None:
        self.config = config
        self.inv_temperature = inv_temperature
        self.level = level
        self.curvature = curvature if config.gauss_newton_start else None
        if config.gauss_newton_start and curvature is None:
            raise ValueError("a Gauss-Newton metric needs the curvature of the target.")
        self.from_curvature = config.mass == "gauss-newton"
        self.windows = mass_windows(config.n_warmup, config.mass != "identity")
        self.metric = Metric("identity")
        self.initial = torch.full_like(inv_temperature, config.step_size)
        self.dual = None
        if config.step_size_adaptation is not None and config.n_warmup > 0:
            self.dual = DualAveraging(
                self.initial, config.target_accept,
                max_step_size=1.0 if config.sampler == "pcn" else math.inf,
                groups=level if config.step_size_adaptation == "shared" else None)
        self.draws: list[torch.Tensor] = []

    def start(self, state: ChainState) -> KernelParams:
        """The parameters of the first step (the Gauss-Newton metric at ``state``).

        Parameters
        ----------
        state : ChainState
            The chains' starting state.

        Returns
        -------
        KernelParams
            The parameters of the first warm-up step.
        """
        if self.curvature is not None:
            self.metric = metric_from_precision(self.curvature(state))
        return self.params()

    def params(self) -> KernelParams:
        """The kernel's parameters for the next warm-up step."""
        step = self.initial if self.dual is None else self.dual.step_size
        return KernelParams(step, self.metric, self.inv_temperature)

    def update(self, iteration: int, state: ChainState, info: StepInfo) -> KernelParams:
        """Adapt after warm-up step ``iteration`` and give the next step's parameters.

        Parameters
        ----------
        iteration : int
            The warm-up step just done (0-based).
        state : ChainState
            The state after it.
        info : StepInfo
            Its acceptance probabilities.

        Returns
        -------
        KernelParams
            The parameters of the next warm-up step.
        """
        if self.dual is not None:
            self.dual.update(info.acceptance_prob)
        for start, end in self.windows:
            if start <= iteration < end and not self.from_curvature:
                self.draws.append(state.position.clone())
            if iteration == end - 1:
                self._end_window(state)
        return self.params()

    def _end_window(self, state: ChainState) -> None:
        if self.from_curvature:
            self.metric = metric_from_precision(self.curvature(state))
        else:
            self.metric = estimate_metric(torch.stack(self.draws), self.config.mass,
                                          self.level)
        self.draws = []
        if self.dual is not None:
            self.dual.restart(self.dual.final_step_size)
        logger.debug("metric estimated (%s); step sizes restart", self.config.mass)

    def final_params(self) -> KernelParams:
        """The parameters kept after the warm-up: averaged step sizes, last metric."""
        step = self.initial if self.dual is None else self.dual.final_step_size
        return KernelParams(step, self.metric, self.inv_temperature)
