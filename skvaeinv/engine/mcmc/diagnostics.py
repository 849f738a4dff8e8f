"""Convergence diagnostics of the kept draws: split R-hat and bulk ESS.

Computed by :mod:`arviz_stats` (rank-normalised split R-hat and bulk effective sample
size of Vehtari et al., 2021), not by hand. ``arviz-stats`` is imported when a
diagnostic is asked for.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Diagnostics", "convergence_diagnostics"]


class Diagnostics(NamedTuple):
    """Split R-hat and bulk ESS per latent dimension.

    Attributes
    ----------
    rhat : ndarray of shape (latent_dim,)
        Rank-normalised split R-hat (close to 1 when the chains agree).
    ess_bulk : ndarray of shape (latent_dim,)
        Bulk effective sample size, over all chains together.
    """

    rhat: np.ndarray
    ess_bulk: np.ndarray


def convergence_diagnostics(samples: np.ndarray) -> Diagnostics:
    """Split R-hat and bulk ESS of each latent dimension.

    Parameters
    ----------
    samples : array of shape (n_chains, n_samples, latent_dim)
        Kept draws (e.g. :attr:`SamplerResult.samples`; with tempering, those of the
        temperature-1 chains, :attr:`SamplerResult.posterior_chains`).

    Returns
    -------
    Diagnostics
        R-hat and bulk ESS per dimension.

    Raises
    ------
    ValueError
        If ``samples`` is not three-dimensional.
    ImportError
        If ``arviz-stats`` is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(size=(4, 500, 2))
    >>> diag = convergence_diagnostics(draws)  # doctest: +SKIP
    >>> bool(np.all(np.abs(diag.rhat - 1) < 0.01))  # doctest: +SKIP
    True
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError("samples must have shape (n_chains, n_samples, latent_dim), got "
                         f"{samples.shape}.")
    try:
        from arviz_stats.base import array_stats
    except ImportError as exc:   # pragma: no cover - depends on the environment
        raise ImportError("convergence_diagnostics needs arviz-stats "
                          "(pip install arviz-stats).") from exc
    # a chain that never moved has no within-chain variance: its R-hat is inf or NaN,
    # which says so; numpy's division warnings would only repeat it
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = array_stats.rhat(samples, chain_axis=0, draw_axis=1, method="rank")
        ess = array_stats.ess(samples, chain_axis=0, draw_axis=1, method="bulk")
    return Diagnostics(np.asarray(rhat, dtype=np.float64), np.asarray(ess, dtype=np.float64))
