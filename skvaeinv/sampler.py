"""Posterior sampling in the latent space as a scikit-learn estimator."""

from __future__ import annotations

import logging
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skvaeinv._latent_estimator import LatentModelMixin, Runtime, check_sigma, initial_latents
from skvaeinv._parallel import (chunk_context, operator_with_spare_cores, run_chunks,
                                split_starts, start_generators)
from skvaeinv._validation import as_real_array
from skvaeinv.engine import LatentObjective
from skvaeinv.engine.mcmc import (MASSES, GaussianMixturePrior, SamplerConfig, SamplerResult,
                                  convergence_diagnostics, run_chains)
from skvaeinv.forward import ForwardOperator
from skvaeinv.petrophysics import apply_numpy

__all__ = ["LatentSampler"]

logger = logging.getLogger(__name__)

#: R-hat above which the chains are reported as not mixed (Vehtari et al. 2021).
RHAT_LIMIT = 1.01


class LatentSampler(LatentModelMixin, BaseEstimator):
    """Sample the posterior of the latent code given traveltimes, by batched MCMC.

    The target is ``log p(z | d) = -½ Σ_i (d_i - g_i(z))² / σ_i² - ½ ||z||²``: a
    Gaussian likelihood of the traveltimes ``d`` computed through the prior's decoder,
    the petrophysics and the forward operator ``g``, times the VAE's standard-normal
    prior on ``z`` (or, with ``latent_prior="density"``, the prior's fitted latent
    density ``log p(z)`` in place of ``-½ ||z||²``). ``n_chains`` Markov chains advance
    together as one batch on the torch device; every kept draw comes from an exact
    Metropolis-adjusted kernel (pCN, MALA or HMC), whose step size and mass matrix are
    adapted during the warm-up only. Decoded, the draws give the pixel-wise posterior:
    mean, spread, channel probability and credible intervals.

    The prior usually cannot reproduce data to within their picking error: treating
    its misfit as noise-free physics gives an overconfident posterior. With
    ``noise_std="estimate"`` the noise level is an unknown too (scale-invariant prior
    ``p(s) ∝ 1/s``, exact Gibbs step), so that misfit shows up in ``noise_std_``.

    Parameters
    ----------
    prior : VAEPrior
        A fitted prior, used as-is (as by :class:`~skvaeinv.LatentInverter`).
    forward : ForwardOperator
        Forward operator on the prior's image grid.
    petrophysics : None, callable or tuple of two floats, default=None
        Facies → slowness, as for :class:`~skvaeinv.LatentInverter`.
    sampler : {"mala", "hmc", "pcn"}, default="mala"
        Preconditioned Langevin, Hamiltonian Monte Carlo (``n_leapfrog`` steps) or the
        gradient-free preconditioned Crank-Nicolson.
    n_chains : int, default=8
        Number of chains.
    n_samples : int, default=1000
        Draws kept per chain (after the warm-up and thinning).
    n_warmup : int, default=500
        Warm-up iterations per chain: step sizes adapted (dual averaging towards
        ``target_accept``) and the mass matrix estimated; fixed afterwards.
    thin : int, default=1
        Keep every ``thin``-th draw.
    step_size : float or None, default=None
        Initial step size (pCN's ``β`` in ``(0, 1]``); None: 0.1 for MALA and HMC, 0.5
        for pCN.
    target_accept : float or None, default=None
        Acceptance rate the warm-up aims at; None: 0.574 (MALA), 0.8 (HMC), 0.3 (pCN).
    n_leapfrog : int, default=10
        Leapfrog steps of an HMC iteration.
    step_jitter : float, default=0.0
        HMC only: each iteration scales the step sizes by a uniform draw in
        ``[1 - step_jitter, 1 + step_jitter]`` (in ``[0, 1)``; e.g. 0.2), against the
        periodic trajectories of a fixed ``ε L`` on near-Gaussian posteriors.
    mass : {"identity", "diag", "dense", "gauss-newton"} or None, default=None
        Mass matrix of MALA and HMC estimated from the warm-up draws (pooled over the
        chains of a chunk), or each chain's Gauss-Newton (Laplace) covariance at its
        position (``"gauss-newton"``: no draws needed, ``2 latent_dim`` model
        evaluations per chain three times in the warm-up; the best-mixing choice for
        narrow posteriors, measured in ``benchmarks/results/posterior_linear``);
        None: ``"diag"`` (pCN: none).
    mass_init : {"identity", "gauss-newton"}, default="identity"
        With ``mass="diag"`` or ``"dense"``: the metric of the warm-up's first steps,
        before the first estimate from draws. ``"gauss-newton"`` starts each chain with
        its Laplace covariance (``2 latent_dim`` model evaluations per chain), so the
        draws that estimate the metric already mix and a shorter warm-up suffices.
    latent_prior : {"normal", "density"}, default="normal"
        The prior of ``z`` in the target: the VAE's own ``N(0, I)``, or the prior's
        fitted latent density (``prior.latent_density_``, from
        :meth:`VAEPrior.fit_latent_density`; a Gaussian mixture or kernel density,
        whose log-density and gradient are exact), which puts the posterior where the
        codes of real images lie. With ``"density"`` and ``init=None`` the chains start
        from draws of the density.
    noise_std : float or "estimate", default=1.0
        Standard deviation of the traveltime errors (ns), or ``"estimate"``. Per-ray
        values go to :meth:`fit` as ``sigma`` (then, with ``"estimate"``, they are the
        relative errors and their common scale is sampled).
    temperatures : sequence of float or None, default=None
        Replica exchange: a ladder of likelihood temperatures, the first 1; each chunk
        of chains runs a copy of the ladder (``n_chains`` must be a multiple of its
        length; all chains run in one chunk). Only the temperature-1 chains are kept.
        For posteriors whose modes the chains do not cross (high ``rhat_``).
    init : None, LatentInverter or array-like of shape (n_chains, latent_dim), default=None
        Starting points: None draws them from the prior ``N(0, I)``; a fitted
        :class:`~skvaeinv.LatentInverter` gives its accepted starts' latent vectors
        (repeated as needed); or the vectors themselves.
    chunk_size : int or None, default=None
        Chains per batch (None: 25 on the CPU, all on an accelerator).
    n_jobs : int or None, default=None
        Chunks run in parallel joblib workers (CPU only), one torch thread each, so
        results do not depend on ``n_jobs``.
    device : str or torch.device, default="auto"
        Torch device of the chains.
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Autocast precision of the decoder.
    random_state : int, RandomState instance or None, default=None
        Seeds the chains: one :class:`numpy.random.SeedSequence` child per chain.
    verbose : int, default=0
        1: a progress bar per chunk and a summary in the log.

    Attributes
    ----------
    samples_ : ndarray of shape (n_chains, n_samples, latent_dim)
        The kept draws of the latent code (temperature-1 chains).
    log_posterior_ : ndarray of shape (n_chains, n_samples)
        ``log p(z | d)`` of each draw up to a constant (with the noise estimated: the
        marginal over ``s``).
    acceptance_rate_ : ndarray of shape (n_chains,)
        Accepted fraction of proposals after the warm-up.
    step_size_ : ndarray of shape (n_chains,)
        Step sizes after the warm-up.
    rhat_, ess_bulk_ : ndarray of shape (latent_dim,)
        Rank-normalised split R-hat and bulk effective sample size of each latent
        dimension over all kept chains (``arviz-stats``).
    noise_std_ : ndarray of shape (n_chains, n_samples) or None
        Where the noise is estimated, draws of its standard deviation (ns); with
        ``sigma`` given to :meth:`fit`, of the factor that multiplies ``sigma``.
    n_gradient_evals_, n_forward_evals_ : int
        Gradient and forward evaluations over all chains, warm-up included.
    posterior_mean_, posterior_std_, channel_probability_ : ndarray of shape (H, W)
        Pixel-wise mean and standard deviation of the decoded draws, and the fraction
        of draws with facies above 0.5.
    forward_, petrophysics_ : object
        Copies of the operator and mapping used (for :meth:`predict`).
    n_features_in_ : int
        4 (ray coordinates).

    See Also
    --------
    skvaeinv.LatentInverter : The best-fitting images by multi-start SGD.
    skvaeinv.engine.mcmc : The kernels, adaptation and loop.

    References
    ----------
    Vehtari, A., Gelman, A., Simpson, D., Carpenter, B., Bürkner, P.-C. (2021).
    Rank-normalization, folding, and localization: an improved R-hat for assessing
    convergence of MCMC. Bayesian Analysis 16(2), 667-718.

    Examples
    --------
    The small prior shipped with the package (procedural channels), and noisy data of one
    of its own images:

    >>> import numpy as np
    >>> from skvaeinv import LatentSampler
    >>> from skvaeinv.demo import demo_prior
    >>> from skvaeinv.forward import StraightRay
    >>> from skvaeinv.petrophysics import LinearVelocity
    >>> from skvaeinv.survey import Grid2D, crosshole
    >>> prior = demo_prior()
    >>> grid = Grid2D(prior.image_shape_, spacing=0.1)
    >>> rays = crosshole(grid, depths=np.arange(0.25, 6.4, 0.5))
    >>> truth = prior.sample(1, random_state=2)[0]
    >>> y = StraightRay(grid).traveltimes(LinearVelocity()(truth), rays) + 0.1
    >>> post = LatentSampler(prior, StraightRay(grid), n_chains=2, n_samples=20,
    ...                      n_warmup=10, noise_std=0.5, device="cpu", random_state=0)
    >>> post.fit(rays, y).samples_.shape[:2], post.channel_probability_.shape
    ((2, 20), (65, 33))
    """

    _parameter_constraints: dict = {
        "prior": [HasMethods(["get_decoder"])],
        "forward": [ForwardOperator],
        "petrophysics": [None, callable, tuple],
        "sampler": [StrOptions({"mala", "hmc", "pcn"})],
        "n_chains": [Interval(Integral, 1, None, closed="left")],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "n_warmup": [Interval(Integral, 0, None, closed="left")],
        "thin": [Interval(Integral, 1, None, closed="left")],
        "step_size": [Interval(Real, 0, None, closed="neither"), None],
        "target_accept": [Interval(Real, 0, 1, closed="neither"), None],
        "n_leapfrog": [Interval(Integral, 1, None, closed="left")],
        "step_jitter": [Interval(Real, 0, 1, closed="left")],
        "mass": [StrOptions(set(MASSES)), None],
        "mass_init": [StrOptions({"identity", "gauss-newton"})],
        "latent_prior": [StrOptions({"normal", "density"})],
        "noise_std": [Interval(Real, 0, None, closed="neither"), StrOptions({"estimate"})],
        "temperatures": ["array-like", None],
        "init": [None, "array-like", HasMethods(["fit", "predict"])],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "precision": [StrOptions({"float32", "bfloat16", "auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, prior: Any = None, forward: Any = None, *, petrophysics: Any = None,
                 sampler: str = "mala", n_chains: int = 8, n_samples: int = 1000,
                 n_warmup: int = 500, thin: int = 1, step_size: float | None = None,
                 target_accept: float | None = None, n_leapfrog: int = 10,
                 step_jitter: float = 0.0,
                 mass: str | None = None, mass_init: str = "identity",
                 latent_prior: str = "normal",
                 noise_std: float | str = 1.0,
                 temperatures: Any = None, init: Any = None, chunk_size: int | None = None,
                 n_jobs: int | None = None, device: str | torch.device = "auto",
                 precision: str = "float32", random_state: Any = None,
                 verbose: int = 0) -> None:
        self.prior = prior
        self.forward = forward
        self.petrophysics = petrophysics
        self.sampler = sampler
        self.n_chains = n_chains
        self.n_samples = n_samples
        self.n_warmup = n_warmup
        self.thin = thin
        self.step_size = step_size
        self.target_accept = target_accept
        self.n_leapfrog = n_leapfrog
        self.step_jitter = step_jitter
        self.mass = mass
        self.mass_init = mass_init
        self.latent_prior = latent_prior
        self.noise_std = noise_std
        self.temperatures = temperatures
        self.init = init
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sigma: Any = None) -> "LatentSampler":
        """Sample the posterior of the latent code given traveltimes ``y``.

        Parameters
        ----------
        X : array-like of shape (n_rays, 4)
            One ray per row (``xs, zs, xr, zr`` in metres), inside the grid of the
            forward operator.
        y : array-like of shape (n_rays,)
            The traveltime of each ray (ns), finite and > 0.
        sigma : array-like of shape (n_rays,), default=None
            Standard deviation of each traveltime (ns), finite and > 0; it replaces
            ``noise_std`` (with ``noise_std="estimate"``: relative errors, whose common
            scale is sampled).

        Returns
        -------
        self : LatentSampler
            The fitted estimator.
        """
        rays, y = self._check_survey(X, y)
        weights, noise_var = self._noise_model(sigma, len(y))
        runtime = self._runtime(stacklevel=4)
        density = self._latent_density()
        rngs = start_generators(self.random_state, int(self.n_chains))
        z0 = self._starting_points(rngs, runtime.latent_dim, density)
        config = self._config(runtime.precision, noise_var)
        chunks = self._chunks(runtime.device)
        result = self._run(runtime, config, chunks, rays, y, weights, z0, rngs,
                           None if density is None else
                           GaussianMixturePrior.from_mixture(density.mixture_, runtime.device))
        self._store(result, runtime, sigma_scale=self._relative_scale(sigma))
        validate_data(self, X, reset=True, skip_check_array=True)
        self.petrophysics_ = runtime.petrophysics
        self.forward_ = clone(self.forward, safe=False)
        return self

    def _noise_model(self, sigma: Any, n_rays: int) -> tuple[np.ndarray | None, Any]:
        """Relative weights ``w_i`` and the noise variance (or "estimate")."""
        estimate = isinstance(self.noise_std, str)
        if sigma is None:
            return None, "estimate" if estimate else float(self.noise_std) ** 2
        s = check_sigma(sigma, n_rays)
        if estimate:
            w = 1.0 / s ** 2
            return w / w.mean(), "estimate"
        return 1.0 / s ** 2, 1.0

    @staticmethod
    def _relative_scale(sigma: Any) -> float:
        """``sqrt(mean(1 / sigma²))``: with the weights normalised to mean one, the
        errors are ``s * sqrt(mean(1 / sigma²)) * sigma_i`` (1 without ``sigma``)."""
        if sigma is None:
            return 1.0
        s = np.asarray(sigma, dtype=np.float64).reshape(-1)
        return float(np.sqrt(np.mean(1.0 / s ** 2)))

    def _latent_density(self) -> Any:
        """The prior's latent density for ``latent_prior="density"`` (else None)."""
        if self.latent_prior != "density":
            return None
        density = getattr(self.prior, "latent_density_", None)
        if density is None:
            raise NotFittedError(
                "latent_prior='density' needs the prior's latent density; call "
                "prior.fit_latent_density(images) first, or use latent_prior='normal'.")
        return density

    def _starting_points(self, rngs: list[np.random.Generator], latent_dim: int,
                         density: Any = None) -> np.ndarray:
        init = self.init
        if init is not None and hasattr(init, "fit") and hasattr(init, "predict"):
            init = _inverter_latents(init, len(rngs))
        if init is None and density is not None:   # one draw per chain, from its generator
            return np.concatenate([density.sample(1, np.random.RandomState(
                rng.integers(2 ** 32))) for rng in rngs])
        return initial_latents(init, rngs, latent_dim)

    def _config(self, precision: str, noise_var: Any) -> SamplerConfig:
        default_step = 0.5 if self.sampler == "pcn" else 0.1
        temperatures = (1.0,) if self.temperatures is None else tuple(
            float(t) for t in as_real_array(self.temperatures, "temperatures").ravel())
        return SamplerConfig(
            sampler=self.sampler, n_samples=self.n_samples, n_warmup=self.n_warmup,
            thin=self.thin, step_size=default_step if self.step_size is None
            else float(self.step_size), target_accept=self.target_accept,
            n_leapfrog=self.n_leapfrog, step_jitter=float(self.step_jitter), mass=self.mass,
            mass_init=self.mass_init, noise_var=noise_var,
            temperatures=temperatures, precision=precision, progress=bool(self.verbose))

    def _chunks(self, device: torch.device) -> list[np.ndarray]:
        if self.temperatures is not None:   # a ladder is exchanged within one batch
            return [np.arange(int(self.n_chains))]
        return split_starts(int(self.n_chains), self.chunk_size, device)

    def _run(self, runtime: Runtime, config: SamplerConfig, chunks: list[np.ndarray],
             rays: np.ndarray, y: np.ndarray, weights: np.ndarray | None, z0: np.ndarray,
             rngs: list[np.random.Generator],
             latent_prior: GaussianMixturePrior | None = None) -> SamplerResult:
        n_jobs = effective_n_jobs(self.n_jobs)
        in_process = runtime.device.type != "cpu" or n_jobs == 1 or len(chunks) == 1
        operator = operator_with_spare_cores(self.forward, n_jobs if in_process else 1)
        args = [(runtime.decoder, operator, rays, y, weights, runtime.petrophysics,
                 z0[idx], [rngs[i] for i in idx], str(runtime.device), config, latent_prior)
                for idx in chunks]
        results, _ = run_chunks(_mcmc_chunk, args, n_jobs=n_jobs, in_process=in_process,
                                stop=lambda result: result.interrupted,
                                label="LatentSampler.fit")
        if len(results) < len(chunks):
            raise KeyboardInterrupt   # chains that never ran: no posterior to keep
        return _concatenate(results)

    def _store(self, result: SamplerResult, runtime: Runtime, sigma_scale: float) -> None:
        keep = result.inv_temperature == 1
        self.samples_ = result.samples[keep]
        self.log_posterior_ = result.log_posterior[keep]
        self.acceptance_rate_ = result.acceptance_rate[keep]
        self.step_size_ = result.step_size[keep]
        self.noise_std_ = (None if result.noise_std is None
                           else result.noise_std[keep] * sigma_scale)
        self.n_gradient_evals_ = int(result.n_gradient_evals)
        self.n_forward_evals_ = int(result.n_forward_evals)
        self.swap_rate_ = result.swap_rate
        diagnostics = convergence_diagnostics(self.samples_)
        self.rhat_, self.ess_bulk_ = diagnostics.rhat, diagnostics.ess_bulk
        self._summarise(runtime.image_shape)
        if self.samples_.shape[0] > 1 and np.isnan(self.rhat_).all():
            warnings.warn(
                f"{self.samples_.shape[1]} draws per chain are too few to compute R-hat "
                "and the bulk ESS; keep more draws (n_samples) to check mixing.",
                UserWarning, stacklevel=4)
        elif self.samples_.shape[0] > 1 and not np.all(self.rhat_ <= RHAT_LIMIT):
            warnings.warn(
                f"the chains have not mixed: max R-hat {np.nanmax(self.rhat_):.3f} > "
                f"{RHAT_LIMIT} (min bulk ESS {np.nanmin(self.ess_bulk_):.0f}). R-hat <= "
                "1.01 needs a bulk ESS of roughly 8x the number of chains: sample longer, "
                "or mix faster per evaluation with mass='gauss-newton' (MALA) or "
                "mass='dense', mass_init='gauss-newton' (HMC); if chains sit in "
                "different modes, use replica exchange (temperatures=...).", UserWarning,
                stacklevel=4)
        if self.verbose:
            logger.info("LatentSampler: acceptance %.2f, max R-hat %.3f, min bulk ESS %.0f, "
                        "%d gradient evaluations", float(self.acceptance_rate_.mean()),
                        float(np.nanmax(self.rhat_)), float(np.nanmin(self.ess_bulk_)),
                        self.n_gradient_evals_)

    def _summarise(self, image_shape: tuple[int, int]) -> None:
        """Pixel-wise mean, standard deviation and channel probability of all draws."""
        total = np.zeros(image_shape)
        squares = np.zeros(image_shape)
        channel = np.zeros(image_shape)
        draws = self.samples_.reshape(-1, self.samples_.shape[-1])
        for start in range(0, len(draws), 256):
            images = self.prior.inverse_transform(draws[start:start + 256]).astype(np.float64)
            total += images.sum(0)
            squares += (images ** 2).sum(0)
            channel += (images > 0.5).sum(0)
        n = len(draws)
        self.posterior_mean_ = total / n
        self.posterior_std_ = np.sqrt(np.maximum(squares / n - self.posterior_mean_ ** 2, 0))
        self.channel_probability_ = channel / n

    # ------------------------------------------------------------------ results
    def decode_samples(self, n: int | None = None) -> np.ndarray:
        """Posterior draws decoded as images.

        Parameters
        ----------
        n : int or None, default=None
            At most this many draws, evenly thinned over the chains' draws; None: all.

        Returns
        -------
        ndarray of shape (n_draws, H, W)
            The decoded facies images.
        """
        check_is_fitted(self, "samples_")
        draws = self.samples_.reshape(-1, self.samples_.shape[-1])
        if n is not None:
            if not isinstance(n, Integral) or n < 1:
                raise ValueError(f"n={n!r} must be an int >= 1 or None.")
            draws = draws[np.unique(np.linspace(0, len(draws) - 1, min(n, len(draws)))
                                    .round().astype(int))]
        return self.prior.inverse_transform(draws)

    def credible_interval(self, level: float = 0.9, max_draws: int = 2000
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-wise equal-tailed credible interval of the facies.

        Parameters
        ----------
        level : float, default=0.9
            Posterior probability inside the interval, in ``(0, 1)``.
        max_draws : int, default=2000
            Draws decoded for the quantiles (evenly thinned).

        Returns
        -------
        lower, upper : ndarray of shape (H, W)
            The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of each pixel.
        """
        if not 0 < level < 1:
            raise ValueError(f"level={level!r} must be in (0, 1).")
        images = self.decode_samples(max_draws)
        tail = (1 - level) / 2
        return (np.quantile(images, tail, axis=0), np.quantile(images, 1 - tail, axis=0))

    def predict(self, X: Any) -> np.ndarray:
        """Traveltimes (ns) of the posterior mean image along rays ``X``.

        Parameters
        ----------
        X : array-like of shape (n_rays, 4)
            Any rays inside the grid (``xs, zs, xr, zr``).

        Returns
        -------
        ndarray of shape (n_rays,)
            Traveltimes through ``posterior_mean_``.
        """
        check_is_fitted(self, "forward_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        rays = self.forward_.validate_rays(X)
        slowness = apply_numpy(self.petrophysics_, self.posterior_mean_[None])[0]
        return np.asarray(self.forward_.traveltimes(slowness, rays), dtype=np.float64)


# ---------------------------------------------------------------------- helpers
def _inverter_latents(inverter: Any, n_chains: int) -> np.ndarray:
    """Latent vectors of a fitted inverter's accepted starts, repeated to ``n_chains``."""
    try:
        check_is_fitted(inverter, "latents_")
    except NotFittedError:
        raise NotFittedError(f"init: the {type(inverter).__name__} is not fitted; fit it "
                             "first (its accepted starts become the starting points).") from None
    accepted = getattr(inverter, "accepted_", np.isfinite(inverter.data_rmse_))
    if not np.any(accepted):
        accepted = np.isfinite(inverter.data_rmse_)
    latents = np.asarray(inverter.latents_)[accepted]
    return latents[np.arange(n_chains) % len(latents)]


def _concatenate(results: list[SamplerResult]) -> SamplerResult:
    """The chunks' results as one (chains stacked in order)."""
    if len(results) == 1:
        return results[0]

    def stack(name: str) -> Any:
        values = [getattr(r, name) for r in results]
        return None if values[0] is None else np.concatenate(values)

    return SamplerResult(
        samples=stack("samples"), log_posterior=stack("log_posterior"),
        acceptance_rate=stack("acceptance_rate"), step_size=stack("step_size"),
        noise_std=stack("noise_std"),
        n_gradient_evals=sum(r.n_gradient_evals for r in results),
        n_forward_evals=sum(r.n_forward_evals for r in results),
        n_divergent=stack("n_divergent"), inv_temperature=stack("inv_temperature"),
        swap_rate=None, inverse_mass=None, interrupted=any(r.interrupted for r in results))


def _mcmc_chunk(decoder: torch.nn.Module, operator: Any, rays: np.ndarray, y: np.ndarray,
                weights: np.ndarray | None, petrophysics: Any, z0: np.ndarray,
                rngs: list[np.random.Generator], device: str, config: SamplerConfig,
                latent_prior: GaussianMixturePrior | None, caller: tuple[int, int] | None
                ) -> tuple[SamplerResult, list[logging.LogRecord]]:
    """Run one chunk of chains (in this process, a thread or a joblib worker process)."""
    from skvaeinv.forward import TorchForward

    dev = torch.device(device)
    with chunk_context(dev, caller) as records:
        forward = TorchForward(operator, rays, device=dev, dtype=torch.float32)
        objective = LatentObjective(decoder, forward, y, dev, petrophysics=petrophysics,
                                    sample_weight=weights, precision=config.precision)
        result = run_chains(objective, z0, rngs, config, prior=latent_prior)
    return result, records
