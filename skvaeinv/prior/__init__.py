"""The learned pattern prior: a variational autoencoder as a scikit-learn transformer.

:class:`VAEPrior` is the estimator. Its parts, each in its own module:

* ``_estimator``: :class:`VAEPrior` itself (parameters, input checks, encoding,
  decoding, sampling);
* ``_training``: the networks' construction, Adam, the loss, the epoch loop, and the
  loop that streams chunks of fresh images through ``partial_fit``
  (:func:`train_in_chunks`, with a learning-rate schedule such as :func:`cosine_lr`);
* ``_persistence``: the safe file format (:meth:`VAEPrior.save` / :meth:`VAEPrior.load`)
  and pickling;
* :mod:`skvaeinv.prior.density`: :class:`LatentDensity`, a density of latent codes
  (with ``_mixtures``, the Gaussian mixtures it holds, and ``_bandwidth``, the choice
  of a kernel density's bandwidth).

The torch networks are in :mod:`skvaeinv._networks`.
"""

from __future__ import annotations

from ._estimator import VAEPrior
from ._training import cosine_lr, train_in_chunks
from .density import LatentDensity

__all__ = ["VAEPrior", "LatentDensity", "train_in_chunks", "cosine_lr"]
