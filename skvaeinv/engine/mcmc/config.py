"""The frozen configuration of a latent MCMC run, validated once when it is made."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_TARGET_ACCEPT", "MASSES", "SAMPLERS", "SamplerConfig"]

#: The samplers and their default target acceptance of the warm-up's step-size
#: adaptation (MALA: Roberts & Rosenthal's 0.574; HMC: Stan's 0.8; pCN: the random-walk
#: 0.234 to 0.3).
DEFAULT_TARGET_ACCEPT = {"mala": 0.574, "hmc": 0.8, "pcn": 0.3}
SAMPLERS = tuple(DEFAULT_TARGET_ACCEPT)
#: The metrics of MALA and HMC (see ``SamplerConfig.mass``).
MASSES = ("identity", "diag", "dense", "gauss-newton")


@dataclass(frozen=True)
class SamplerConfig:
    """Everything that defines a latent MCMC run but its data and starting points.

    Made once at the public boundary (a direct caller of
    :func:`~skvaeinv.engine.mcmc.run_chains`, or an estimator) and validated on
    construction: the layers below trust it. ``target_accept`` and ``mass`` given as
    None are resolved to the sampler's defaults, so the attributes of a made
    configuration are never None.

    Parameters
    ----------
    sampler : {"mala", "hmc", "pcn"}, default="mala"
        The Metropolis-adjusted kernel: preconditioned Langevin (MALA), Hamiltonian
        Monte Carlo with ``n_leapfrog`` steps, or preconditioned Crank-Nicolson
        (gradient-free).
    n_samples : int, default=1000
        Draws kept per chain (after thinning).
    n_warmup : int, default=500
        Warm-up iterations per chain (adaptation; their draws are not kept).
    thin : int, default=1
        Keep every ``thin``-th draw after the warm-up.
    step_size : float, default=0.1
        Initial step size: MALA's and HMC's ``ε``; pCN's ``β`` (in ``(0, 1]``).
    target_accept : float or None, default=None
        Acceptance probability that the warm-up adapts the step size to, in ``(0, 1)``;
        None: 0.574 (MALA), 0.8 (HMC), 0.3 (pCN).
    n_leapfrog : int, default=10
        Leapfrog steps per HMC iteration.
    step_jitter : float, default=0.0
        HMC only: each iteration scales the step sizes by a uniform draw in
        ``[1 - step_jitter, 1 + step_jitter]``, in ``[0, 1)`` (e.g. 0.2 against the
        periodic trajectories of a fixed ``ε L`` on near-Gaussian posteriors).
    mass : {"identity", "diag", "dense", "gauss-newton"} or None, default=None
        Inverse mass matrix (metric) of MALA and HMC, estimated from the warm-up draws
        of all chains at the same temperature pooled (``"diag"``, ``"dense"``; with at
        least 100 warm-up iterations, else the identity), each chain's inverse
        Gauss-Newton precision at its position (``"gauss-newton"``: before the first
        step and at the end of each adaptation window; ``2 d`` evaluations each time)
        or the identity; pCN has none (only ``"identity"``). None: ``"identity"`` for
        pCN, ``"diag"`` otherwise.
    mass_init : {"identity", "gauss-newton"}, default="identity"
        The metric of the first warm-up steps, before the first estimate from draws
        (``mass="diag"`` or ``"dense"``): the identity, or each chain's inverse
        Gauss-Newton precision at its start (``2 d`` evaluations per chain; the
        windows' draws then come from chains that already mix, and a shorter warm-up
        does). ``mass="gauss-newton"`` implies it, ``mass="identity"`` ignores it; pCN
        has no metric (only ``"identity"``).
    step_size_adaptation : {"chain", "shared"} or None, default="chain"
        Dual averaging of one step size per chain, of one shared by the chains at the
        same temperature (driven by their mean acceptance), or none (the initial step
        size throughout).
    noise_var : float or "estimate", default=1.0
        Noise variance ``s²`` (the data's standard deviations are
        ``s / sqrt(sample_weight)``), or ``"estimate"``: ``s²`` is sampled too, by its
        exact Gibbs step under the scale-invariant prior ``p(s) ∝ 1/s``.
    temperatures : tuple of float, default=(1.0,)
        Replica exchange ladder of likelihood temperatures ``T_k``, the first 1, the
        others increasing (the likelihood is raised to ``1 / T_k``); the number of
        chains must be a multiple of its length. ``(1.0,)``: no tempering.
    precision : {"float32", "bfloat16"}, default="float32"
        Autocast precision of the decoder, already resolved for the device.
    progress : bool, default=False
        Show a progress bar over the iterations.

    Raises
    ------
    ValueError
        If a value is out of its range (the message names the parameter).
    """

    sampler: str = "mala"
    n_samples: int = 1000
    n_warmup: int = 500
    thin: int = 1
    step_size: float = 0.1
    target_accept: float | None = None
    n_leapfrog: int = 10
    step_jitter: float = 0.0
    mass: str | None = None
    mass_init: str = "identity"
    step_size_adaptation: str | None = "chain"
    noise_var: float | str = 1.0
    temperatures: tuple[float, ...] = (1.0,)
    precision: str = "float32"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            _fail("sampler", self.sampler, "'mala', 'hmc' or 'pcn'")
        if self.target_accept is None:
            object.__setattr__(self, "target_accept", DEFAULT_TARGET_ACCEPT[self.sampler])
        if self.mass is None:
            object.__setattr__(self, "mass", "identity" if self.sampler == "pcn" else "diag")
        if not isinstance(self.temperatures, tuple):
            object.__setattr__(self, "temperatures", _as_tuple(self.temperatures))
        self._check_ranges()
        self._check_temperatures()

    @property
    def n_iter(self) -> int:
        """Iterations per chain: warm-up plus ``n_samples * thin``."""
        return self.n_warmup + self.n_samples * self.thin

    @property
    def gauss_newton_start(self) -> bool:
        """Whether the first steps use the Gauss-Newton metric."""
        return self.mass == "gauss-newton" or (self.mass_init == "gauss-newton"
                                                and self.mass in ("diag", "dense"))

    @property
    def estimate_noise(self) -> bool:
        """Whether the noise variance is sampled."""
        return isinstance(self.noise_var, str)

    @property
    def uses_gradient(self) -> bool:
        """Whether the kernel needs gradients (MALA, HMC)."""
        return self.sampler != "pcn"

    def _check_ranges(self) -> None:
        pcn = self.sampler == "pcn"
        step_ok = _is_real(self.step_size) and 0 < self.step_size < math.inf
        checks = [
            ("n_samples", self.n_samples, _is_int(self.n_samples) and self.n_samples >= 1,
             "an int >= 1"),
            ("n_warmup", self.n_warmup, _is_int(self.n_warmup) and self.n_warmup >= 0,
             "an int >= 0"),
            ("thin", self.thin, _is_int(self.thin) and self.thin >= 1, "an int >= 1"),
            ("step_size", self.step_size, step_ok and (not pcn or self.step_size <= 1),
             "a float in (0, 1] (pCN's beta)" if pcn else "a finite float > 0"),
            ("target_accept", self.target_accept, _is_real(self.target_accept)
             and 0 < self.target_accept < 1, "a float in (0, 1)"),
            ("n_leapfrog", self.n_leapfrog, _is_int(self.n_leapfrog)
             and self.n_leapfrog >= 1, "an int >= 1"),
            ("step_jitter", self.step_jitter, _is_real(self.step_jitter)
             and 0 <= self.step_jitter < 1, "a float in [0, 1)"),
            ("mass", self.mass, self.mass == "identity" if pcn
             else self.mass in MASSES,
             "'identity' (pCN has no mass matrix)" if pcn
             else "'identity', 'diag', 'dense' or 'gauss-newton'"),
            ("mass_init", self.mass_init, self.mass_init == "identity" if pcn
             else self.mass_init in ("identity", "gauss-newton"),
             "'identity' (pCN has no mass matrix)" if pcn
             else "'identity' or 'gauss-newton'"),
            ("step_size_adaptation", self.step_size_adaptation,
             self.step_size_adaptation in ("chain", "shared", None),
             "'chain', 'shared' or None"),
            ("noise_var", self.noise_var, self.noise_var == "estimate" if
             isinstance(self.noise_var, str) else _is_real(self.noise_var)
             and 0 < self.noise_var < math.inf, "a finite float > 0 or 'estimate'"),
            ("precision", self.precision, self.precision in ("float32", "bfloat16"),
             "'float32' or 'bfloat16' (resolve 'auto' for the device first)"),
            ("progress", self.progress, isinstance(self.progress, (bool, np.bool_)),
             "a bool"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                _fail(name, value, expected)

    def _check_temperatures(self) -> None:
        t = self.temperatures
        ok = (len(t) >= 1 and all(_is_real(v) and math.isfinite(v) for v in t)
              and t[0] == 1 and all(b > a for a, b in itertools.pairwise(t)))
        if not ok:
            _fail("temperatures", self.temperatures,
                  "a tuple of finite floats, the first 1.0, strictly increasing")


def _as_tuple(values: object) -> object:
    try:
        return tuple(float(v) for v in values)   # type: ignore[union-attr]
    except (TypeError, ValueError):
        return values


def _fail(name: str, value: object, expected: str) -> None:
    raise ValueError(f"{name}={value!r} is invalid; expected {expected}.")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: object) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))
