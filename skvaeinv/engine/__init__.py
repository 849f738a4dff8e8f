"""Batched multi-start optimisation in a generator's latent space.

The numerical core of :class:`skvaeinv.LatentInverter`. It imports neither
scikit-learn nor the estimators, so it can be used (and tested) with any torch decoder
and any forward callable. Its parts:

- :mod:`~skvaeinv.engine.config`: :class:`SGDConfig`, the frozen, validated
  configuration of a run;
- :mod:`~skvaeinv.engine.schedules`: learning rate, regularisation weight, regularisers;
- :mod:`~skvaeinv.engine.objective`: :class:`LatentObjective`, decoding and data misfit;
- :mod:`~skvaeinv.engine.state`: which starts run, and each start's kept iterate;
- :mod:`~skvaeinv.engine.step`: one iteration of every start (gradient and update,
  with :mod:`torch.optim`);
- :mod:`~skvaeinv.engine.batches`: the mini-batch orders;
- :mod:`~skvaeinv.engine.loop`: epochs, tracking, interrupts, the result;
- :mod:`~skvaeinv.engine.history`: the per-iteration records;
- :mod:`~skvaeinv.engine.progress`: progress bar and log lines.
- :mod:`~skvaeinv.engine.mcmc`: batched Markov chains (pCN, MALA, HMC) on the latent posterior.

The method (Lopez-Alvis et al., 2021) minimises, for every start ``b`` independently,

.. math::

    \\sum_{j \\in \\mathcal{B}_k^b} w_j \\left(f_j(h(g(z_b))) - d_j\\right)^2
    + \\lambda_k R(z_b)

over the latent vector ``z_b``, where ``g`` is the decoder, ``h`` the petrophysics,
``f`` the forward operator, ``\\mathcal{B}_k^b`` the mini-batch of rays of start ``b``
at iteration ``k`` and ``R`` the regulariser:

* ``"ring"``: ``R(z) = (||z|| - E[chi_n])^2`` with the exact mean of the chi
  distribution with ``n = latent_dim`` degrees of freedom (4.4166 for ``n = 20``): it
  pulls ``z`` towards the shell where ``N(0, I)`` has its mass (``ring_radius`` replaces
  ``E[chi_n]`` by another radius);
* ``"origin"``: ``R(z) = ||z||^2``;
* ``None``: no regularisation.

Conventions (those of the study's published code, so that its learning rates apply
unchanged):

* the data term of an iteration is the weighted **sum** (not the mean) of squared
  residuals over the mini-batch rays; the weights are used as given;
* every epoch visits all rays once, in an order drawn independently for every start,
  in ``ceil(n_rays / batch_size)`` mini-batches (the last one smaller when
  ``batch_size`` does not divide ``n_rays``);
* learning rate ``lr * lr_decay ** (epoch // lr_step)``; regularisation weight
  ``reg_weight * reg_decay ** k`` at iteration ``k`` (0-based);
* plain SGD ``z <- z - lr grad`` or Adam (:class:`torch.optim.Adam`, per-start
  moments);
* the total cost used to keep, for each start, its best iterate is the weighted sum of
  squared residuals over **all** rays plus ``λ_k R(z)``, evaluated at the iterate
  *before* the update of iteration ``k``, and once more for the final iterate (with
  ``λ`` of iteration ``n_iter``). For a linear forward operator this is done at every
  iteration (one full forward per iteration, from which the mini-batch residuals are
  taken). For a nonlinear one, only the rays of the mini-batch are computed with
  gradients, and the full-data cost is evaluated every ``track_every`` iterations
  (``k % track_every == 0``) and at the end.

The starts advance together as one ``(B, latent_dim)`` tensor: since the objective is a
sum of per-start terms, the gradient of their sum is the stack of the per-start
gradients. A start whose cost, gradient or iterate becomes NaN or infinite is frozen
and flagged, the others go on.
"""

from skvaeinv.engine.config import SGDConfig
from skvaeinv.engine.history import SGDHistory
from skvaeinv.engine.loop import EngineResult, SGDLoop, run_latent_sgd
from skvaeinv.engine.objective import LatentObjective
from skvaeinv.engine.schedules import chi_mean, learning_rate, reg_weight_at

__all__ = ["SGDConfig", "SGDHistory", "EngineResult", "SGDLoop", "LatentObjective",
           "run_latent_sgd", "chi_mean", "learning_rate", "reg_weight_at"]
