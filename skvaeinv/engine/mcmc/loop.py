"""The sampling loop: warm-up with adaptation, then the kept draws of every chain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from skvaeinv._device import ieee_float32
from skvaeinv.engine.mcmc.adaptation import WindowAdaptation
from skvaeinv.engine.mcmc.config import SamplerConfig
from skvaeinv.engine.mcmc.kernels import make_kernel
from skvaeinv.engine.mcmc.noise import noise_step
from skvaeinv.engine.mcmc.prior import LatentPrior
from skvaeinv.engine.mcmc.state import ChainState, KernelParams, StepInfo
from skvaeinv.engine.mcmc.target import LatentPosterior
from skvaeinv.engine.mcmc.tempering import ladder, swap_step
from skvaeinv.engine.objective import ForwardCallable, LatentObjective

__all__ = ["ChainLoop", "SamplerResult", "run_chains", "sample_latent"]

logger = logging.getLogger(__name__)


@dataclass
class SamplerResult:
    """What :func:`run_chains` returns (numpy arrays, one row per chain).

    Each parameter is kept as the attribute of the same name. With tempering, chain
    ``b`` is the slot of temperature ``1 / inv_temperature[b]``: only the chains with
    ``inv_temperature == 1`` sample the posterior (:attr:`posterior_chains`).

    Parameters
    ----------
    samples : ndarray of shape (n_chains, n_samples, latent_dim)
        The kept draws of ``z`` (float64).
    log_posterior : ndarray of shape (n_chains, n_samples)
        ``log p(z | d)`` of each draw, up to a constant: ``-½ Σ w r² / s² + log p(z)``
        at the given noise variance, or, with the noise estimated, the marginal
        ``-N/2 log(Σ w r²) + log p(z)`` (``s`` integrated out); ``log p(z) = -½ ||z||²``
        for the default prior.
    acceptance_rate : ndarray of shape (n_chains,)
        Fraction of accepted proposals after the warm-up.
    step_size : ndarray of shape (n_chains,)
        The step size kept after the warm-up.
    noise_std : ndarray of shape (n_chains, n_samples) or None
        Draws of ``s`` where the noise is estimated.
    n_gradient_evals : int
        Gradient evaluations over all chains, warm-up and initial state included.
    n_forward_evals : int
        Decoder-and-forward evaluations over all chains (those with a gradient
        included), warm-up and initial state included.
    n_divergent : ndarray of shape (n_chains,)
        Proposals after the warm-up rejected because they were not finite.
    inv_temperature : ndarray of shape (n_chains,)
        ``1 / T`` of each chain (ones without tempering).
    swap_rate : ndarray of shape (n_temperatures - 1,) or None
        Mean swap acceptance probability between neighbouring temperatures after the
        warm-up (None without tempering).
    inverse_mass : ndarray or None
        The metric kept after the warm-up: ``(n_chains, d)`` diagonals,
        ``(n_chains, d, d)`` matrices, or None for the identity.
    interrupted : bool
        True when the run was stopped by KeyboardInterrupt (the draws so far are kept).
    """

    samples: np.ndarray
    log_posterior: np.ndarray
    acceptance_rate: np.ndarray
    step_size: np.ndarray
    noise_std: np.ndarray | None
    n_gradient_evals: int
    n_forward_evals: int
    n_divergent: np.ndarray
    inv_temperature: np.ndarray
    swap_rate: np.ndarray | None
    inverse_mass: np.ndarray | None
    interrupted: bool = False

    @property
    def posterior_chains(self) -> np.ndarray:
        """The draws of the chains at temperature 1, ``(n, n_samples, latent_dim)``."""
        return self.samples[self.inv_temperature == 1]


class _Records:
    """The kept draws and per-chain counters, on the chains' device."""

    def __init__(self, n_chains: int, n_samples: int, dim: int, n_levels: int,
                 device: torch.device) -> None:
        kw = dict(dtype=torch.float64, device=device)
        self.samples = torch.full((n_chains, n_samples, dim), torch.nan, **kw)
        self.log_posterior = torch.full((n_chains, n_samples), torch.nan, **kw)
        self.noise_var = torch.full((n_chains, n_samples), torch.nan, **kw)
        self.accepted = torch.zeros(n_chains, **kw)
        self.divergent = torch.zeros(n_chains, dtype=torch.long, device=device)
        self.swap_prob = torch.zeros(max(n_levels - 1, 0), **kw)
        self.swap_count = torch.zeros(max(n_levels - 1, 0), **kw)
        self.n_kept, self.n_steps = 0, 0

    def step(self, info: StepInfo) -> None:
        self.accepted += info.accepted.to(torch.float64)
        self.divergent += info.divergent.to(torch.long)
        self.n_steps += 1

    def swaps(self, attempted: torch.Tensor, prob: torch.Tensor, n_levels: int) -> None:
        level = torch.nonzero(attempted).flatten() % n_levels
        self.swap_prob.index_add_(0, level, prob[attempted])
        self.swap_count.index_add_(0, level, torch.ones_like(prob[attempted]))

    def keep(self, state: ChainState, log_posterior: torch.Tensor) -> None:
        j = self.n_kept
        self.samples[:, j] = state.position
        self.log_posterior[:, j] = log_posterior
        self.noise_var[:, j] = state.noise_var
        self.n_kept += 1


class ChainLoop:
    """Warm-up and sampling of a batch of chains.

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator, data and relative weights.
    config : SamplerConfig
        The run's configuration.
    z0 : torch.Tensor of shape (n_chains, latent_dim)
        Starting latent vectors (on the objective's device).
    generators : sequence of numpy Generators
        One per chain.
    prior : StandardNormal or GaussianMixturePrior or None, default=None
        The prior of ``z`` (None: ``N(0, I)``).
    """

    def __init__(self, objective: LatentObjective, config: SamplerConfig, z0: torch.Tensor,
                 generators: Sequence[np.random.Generator],
                 prior: LatentPrior | None = None) -> None:
        self.config = config
        self.generators = list(generators)
        self.target = LatentPosterior(objective, prior)
        self.kernel = make_kernel(config.sampler, self.target, config.n_leapfrog,
                                  config.step_jitter)
        n, device = z0.shape[0], objective.device
        self.n_levels = len(config.temperatures)
        self.inv_temperature, level = ladder(config.temperatures, n, device)
        self.adaptation = WindowAdaptation(config, self.inv_temperature, level,
                                           curvature=self.curvature)
        noise = None if config.estimate_noise else torch.full(
            (n,), float(config.noise_var), dtype=torch.float64, device=device)
        self.state = self.kernel.init(z0, noise)
        grad = int(self.kernel.uses_gradient)
        self.n_forward, self.n_gradient = n, n * grad
        self.records = _Records(n, config.n_samples, z0.shape[1], self.n_levels, device)
        self.params: KernelParams | None = None

    def run(self) -> SamplerResult:
        """Warm up, then draw the kept samples (until done or interrupted).

        Returns
        -------
        SamplerResult
            The draws and the run's diagnostics.
        """
        config = self.config
        bar = tqdm(total=config.n_iter, desc=f"latent MCMC ({config.sampler})", unit="it",
                   leave=False, disable=not config.progress)
        interrupted = False
        try:
            with ieee_float32(self.target.device):
                self.warmup(bar)
                self.sample(bar)
        except KeyboardInterrupt:
            interrupted = True
            logger.warning("interrupted after %d of %d kept draws; keeping them.",
                           self.records.n_kept, config.n_samples)
        bar.close()
        return self.result(interrupted)

    def curvature(self, state: ChainState) -> torch.Tensor:
        """The Gauss-Newton precision of every chain at ``state`` (counted evaluations).

        Parameters
        ----------
        state : ChainState
            The chains' state.

        Returns
        -------
        torch.Tensor of shape (n_chains, latent_dim, latent_dim)
            See :meth:`LatentPosterior.gauss_newton`.
        """
        n, d = state.position.shape
        self.n_forward += 2 * n * d
        return self.target.gauss_newton(state.position, state.noise_var,
                                        self.inv_temperature)

    def transition(self, params: KernelParams, iteration: int) -> StepInfo:
        """One iteration: the kernel, the noise's Gibbs step, the swaps.

        Parameters
        ----------
        params : KernelParams
            The kernel's parameters.
        iteration : int
            The iteration (0-based, warm-up included; its parity picks the swap pairs).

        Returns
        -------
        StepInfo
            The kernel's report.
        """
        state, info = self.kernel.step(self.state, self.generators, params)
        n = len(self.generators)
        self.n_forward += n * info.n_forward_evals
        self.n_gradient += n * info.n_gradient_evals
        if self.config.estimate_noise:
            state = noise_step(state, self.generators, self.target.n_data,
                               self.inv_temperature)
        if self.n_levels > 1:
            state, attempted, prob = swap_step(state, self.generators, self.inv_temperature,
                                               self.n_levels, iteration % 2,
                                               self.target.n_data)
            if iteration >= self.config.n_warmup:
                self.records.swaps(attempted, prob, self.n_levels)
        self.state = state
        return info

    def warmup(self, bar: tqdm) -> None:
        """The warm-up iterations, adapting step sizes and metric.

        Parameters
        ----------
        bar : tqdm
            Progress bar.
        """
        params = self.adaptation.start(self.state)
        for i in range(self.config.n_warmup):
            info = self.transition(params, i)
            params = self.adaptation.update(i, self.state, info)
            bar.update(1)
        self.params = self.adaptation.final_params()
        if self.config.n_warmup:
            step = self.params.step_size
            logger.info("warm-up done: step size median %.3g (min %.3g, max %.3g)",
                        float(step.median()), float(step.min()), float(step.max()))

    def sample(self, bar: tqdm) -> None:
        """The iterations after the warm-up, keeping every ``thin``-th state.

        Parameters
        ----------
        bar : tqdm
            Progress bar.
        """
        config, records = self.config, self.records
        for j in range(config.n_samples * config.thin):
            info = self.transition(self.params, config.n_warmup + j)
            records.step(info)
            if (j + 1) % config.thin == 0:
                records.keep(self.state, self.log_posterior(self.state))
            bar.update(1)
            if config.progress and j % 50 == 0:
                bar.set_postfix(accept=f"{float(records.accepted.mean()) / records.n_steps:.2f}")

    def log_posterior(self, state: ChainState) -> torch.Tensor:
        """``log p(z | d)`` of the states, up to a constant (see :class:`SamplerResult`).

        Parameters
        ----------
        state : ChainState
            The chains' state.

        Returns
        -------
        torch.Tensor of shape (n_chains,)
            The log-posterior (marginal in ``s`` when the noise is estimated).
        """
        if self.config.estimate_noise:
            return -0.5 * self.target.n_data * torch.log(state.sse) + state.log_prior
        return state.log_likelihood + state.log_prior

    def result(self, interrupted: bool) -> SamplerResult:
        """The run's outcome as numpy arrays.

        Parameters
        ----------
        interrupted : bool
            Whether the run was interrupted.

        Returns
        -------
        SamplerResult
            The kept draws (those done, when interrupted) and diagnostics.
        """
        rec, k = self.records, self.records.n_kept
        params = self.params or self.adaptation.params()
        metric = params.metric.inv_mass
        swap = (rec.swap_prob / rec.swap_count.clamp_min(1)).cpu().numpy() \
            if self.n_levels > 1 else None
        return SamplerResult(
            samples=rec.samples[:, :k].cpu().numpy(),
            log_posterior=rec.log_posterior[:, :k].cpu().numpy(),
            acceptance_rate=(rec.accepted / max(rec.n_steps, 1)).cpu().numpy(),
            step_size=params.step_size.cpu().numpy(),
            noise_std=torch.sqrt(rec.noise_var[:, :k]).cpu().numpy()
            if self.config.estimate_noise else None,
            n_gradient_evals=self.n_gradient, n_forward_evals=self.n_forward,
            n_divergent=rec.divergent.cpu().numpy(),
            inv_temperature=self.inv_temperature.cpu().numpy(), swap_rate=swap,
            inverse_mass=None if metric is None else metric.cpu().numpy(),
            interrupted=interrupted)


def run_chains(objective: LatentObjective, z0: np.ndarray | torch.Tensor,
               generators: Sequence[np.random.Generator], config: SamplerConfig, *,
               prior: LatentPrior | None = None) -> SamplerResult:
    """Sample the latent posterior with a batch of Markov chains.

    Parameters
    ----------
    objective : LatentObjective
        Decoder, petrophysics, forward operator, data ``d`` and relative weights
        ``w_i`` (its ``sample_weight``; ``σ_i = s / sqrt(w_i)``); its precision must be
        ``config.precision``.
    z0 : array of shape (n_chains, latent_dim)
        Starting latent vectors (finite).
    generators : sequence of numpy Generators, length n_chains
        One per chain: a chain's draws do not depend on which other chains share its
        batch (its warm-up does, through a shared step size or pooled metric only).
    config : SamplerConfig
        Sampler, lengths, adaptation, noise, temperatures (validated when made).
    prior : StandardNormal or GaussianMixturePrior or None, default=None
        The prior of ``z`` in the target (None: ``N(0, I)``, the VAE's own).

    Returns
    -------
    SamplerResult
        The draws of every chain and the run's diagnostics.

    Raises
    ------
    ValueError
        If the starting points, generators, data or precision do not match each other
        or ``config``.
    """
    if isinstance(z0, torch.Tensor):
        z = z0.detach().to(device=objective.device, dtype=torch.float64)
    else:
        z = torch.as_tensor(np.asarray(z0, dtype=np.float64), device=objective.device)
    _check_run(objective, config, z, generators)
    return ChainLoop(objective, config, z, generators, prior).run()


def sample_latent(decoder: Callable[[torch.Tensor], torch.Tensor], forward: ForwardCallable,
                  y: np.ndarray | torch.Tensor, z0: np.ndarray | torch.Tensor,
                  generators: Sequence[np.random.Generator], config: SamplerConfig, *,
                  petrophysics: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  sample_weight: np.ndarray | None = None,
                  device: str | torch.device = "cpu",
                  prior: LatentPrior | None = None) -> SamplerResult:
    """Build the objective (at ``config.precision``) and run :func:`run_chains`.

    Parameters
    ----------
    decoder : callable
        Maps float32 ``(B, latent_dim)`` to images, differentiably.
    forward : callable
        ``forward(slowness (B, N), None) -> (B, n_rays)`` traveltimes, differentiable.
    y : array of shape (n_rays,)
        Observed traveltimes.
    z0 : array of shape (n_chains, latent_dim)
        Starting latent vectors.
    generators : sequence of numpy Generators, length n_chains
        One per chain.
    config : SamplerConfig
        The run's configuration.
    petrophysics : callable, optional
        Facies to slowness on torch tensors; identity if None.
    sample_weight : array of shape (n_rays,), optional
        Relative weights ``w_i = s² / σ_i²``; ones if None.
    device : str or torch.device, default="cpu"
        Where the chains run.
    prior : StandardNormal or GaussianMixturePrior or None, default=None
        The prior of ``z`` (None: ``N(0, I)``).

    Returns
    -------
    SamplerResult
        The draws of every chain and the run's diagnostics.
    """
    objective = LatentObjective(decoder, forward, y, torch.device(device),
                                petrophysics=petrophysics, sample_weight=sample_weight,
                                precision=config.precision)
    return run_chains(objective, z0, generators, config, prior=prior)


def _check_run(objective: LatentObjective, config: SamplerConfig, z: torch.Tensor,
               generators: Sequence[np.random.Generator]) -> None:
    """The starting points, generators and data agree with each other and the config."""
    if z.ndim != 2 or z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"z0 must have shape (n_chains, latent_dim), got {tuple(z.shape)}.")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z0 has non-finite values; chains must start at finite points.")
    if len(generators) != z.shape[0] or not all(
            isinstance(g, np.random.Generator) for g in generators):
        raise ValueError(f"generators must be {z.shape[0]} numpy Generators (one per "
                         f"chain), got {len(generators)} objects.")
    if z.shape[0] % len(config.temperatures):
        raise ValueError(f"z0 has {z.shape[0]} chains, not a multiple of the "
                         f"{len(config.temperatures)} temperatures.")
    if objective.precision != config.precision:
        raise ValueError(f"the objective's precision={objective.precision!r} differs from "
                         f"config.precision={config.precision!r}.")
    if config.estimate_noise and int((objective.w > 0).sum()) < 1:
        raise ValueError("noise_var='estimate' needs at least one datum of positive "
                         "sample_weight.")
