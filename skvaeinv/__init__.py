"""skvaeinv: deep generative priors for geophysical tomography, the scikit-learn way.

The package learns a pattern prior (a variational autoencoder, :class:`VAEPrior`) from a
training image and inverts crosshole traveltimes by stochastic gradient descent in the
prior's latent space (:class:`LatentInverter`), samples the posterior there by batched
MCMC (:class:`LatentSampler`), with pluggable forward operators (:mod:`skvaeinv.forward`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = ["VAEPrior", "LatentInverter", "LatentSampler", "__version__"]

_LAZY = {
    "VAEPrior": "skvaeinv.prior",
    "LatentInverter": "skvaeinv.inverter",
    "LatentSampler": "skvaeinv.sampler",
}


def __getattr__(name: str) -> Any:  # PEP 562: import heavy modules lazily
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'skvaeinv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
