"""Batched Markov chains in a generator's latent space (issue 27, engine level).

The posterior of the latent vector ``z`` given traveltimes ``d``,

.. math::

    \\log p(z \\mid d) = -\\frac{1}{2 s^2} \\sum_i w_i r_i(z)^2
    + \\log p(z) + \\text{const},
    \\qquad r = f(h(g(z))) - d,

with the relative weights ``w_i = s² / σ_i²`` (the objective's ``sample_weight``) and
the noise variance ``s²`` given or sampled (``noise_var="estimate"``: its exact Gibbs
step under ``p(s) ∝ 1/s``), is sampled by ``n_chains`` chains advancing together as one
``(n_chains, latent_dim)`` tensor. Decoding, petrophysics, forward operator and
weighting are those of :class:`~skvaeinv.engine.LatentObjective`. The parts, BlackJAX's
shape (state in, state and info out; adaptation and loop apart):

- :mod:`~skvaeinv.engine.mcmc.config`: :class:`SamplerConfig`, frozen and validated;
- :mod:`~skvaeinv.engine.mcmc.state`: :class:`ChainState`, :class:`StepInfo`,
  :class:`KernelParams`;
- :mod:`~skvaeinv.engine.mcmc.target`: :class:`LatentPosterior` (log-densities and
  gradients through the objective), :func:`init_state`;
- :mod:`~skvaeinv.engine.mcmc.prior`: the prior of ``z``: ``N(0, I)`` or a fitted
  Gaussian mixture (a latent density), with gradients;
- :mod:`~skvaeinv.engine.mcmc.metric`: the inverse mass matrix and its estimate (from
  warm-up draws, or from the Gauss-Newton precision of the target);
- :mod:`~skvaeinv.engine.mcmc.kernels`: pCN, MALA and HMC, each an exact
  Metropolis-Hastings kernel (non-finite proposals are rejected);
- :mod:`~skvaeinv.engine.mcmc.noise`: the Gibbs step of ``s²``;
- :mod:`~skvaeinv.engine.mcmc.tempering`: replica exchange over a temperature ladder;
- :mod:`~skvaeinv.engine.mcmc.adaptation`: warm-up dual averaging of step sizes and
  windowed metric estimates (fixed after the warm-up);
- :mod:`~skvaeinv.engine.mcmc.draws`: per-chain random draws (one numpy Generator per
  chain, so a chain's draws do not depend on its batch);
- :mod:`~skvaeinv.engine.mcmc.loop`: :func:`run_chains`, :func:`sample_latent`,
  :class:`SamplerResult`;
- :mod:`~skvaeinv.engine.mcmc.diagnostics`: split R-hat and bulk ESS (``arviz-stats``).
"""

from skvaeinv.engine.mcmc.config import MASSES, SamplerConfig
from skvaeinv.engine.mcmc.diagnostics import Diagnostics, convergence_diagnostics
from skvaeinv.engine.mcmc.kernels import HMCKernel, MALAKernel, PCNKernel, make_kernel
from skvaeinv.engine.mcmc.loop import ChainLoop, SamplerResult, run_chains, sample_latent
from skvaeinv.engine.mcmc.metric import Metric, estimate_metric, metric_from_precision
from skvaeinv.engine.mcmc.noise import noise_step
from skvaeinv.engine.mcmc.prior import GaussianMixturePrior, LatentPrior, StandardNormal
from skvaeinv.engine.mcmc.state import ChainState, KernelParams, StepInfo
from skvaeinv.engine.mcmc.target import LatentPosterior, init_state, rescale_noise

__all__ = ["MASSES", "ChainLoop", "ChainState", "Diagnostics", "GaussianMixturePrior", "HMCKernel",
           "LatentPrior", "KernelParams", "LatentPosterior", "MALAKernel", "Metric", "PCNKernel",
           "SamplerConfig", "SamplerResult", "StandardNormal", "StepInfo",
           "convergence_diagnostics", "estimate_metric", "init_state", "make_kernel",
           "metric_from_precision", "noise_step", "rescale_noise", "run_chains", "sample_latent"]
