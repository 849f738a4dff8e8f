"""Multi-start latent-space SGD inversion as a scikit-learn regressor."""

from __future__ import annotations

import logging
import numbers
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from joblib import effective_n_jobs
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from skvaeinv._validation import check_traveltimes
from skvaeinv._latent_estimator import (LatentModelMixin, Runtime, check_sigma,
                                        check_weights, initial_latents)
from skvaeinv._parallel import (chunk_context, operator_with_spare_cores, run_chunks,
                                split_starts, start_generators)
from skvaeinv.engine import EngineResult, SGDConfig, SGDHistory, run_latent_sgd
from skvaeinv.forward import ForwardOperator
from skvaeinv.petrophysics import apply_numpy

__all__ = ["LatentInverter", "Ensemble", "reference_schedule"]

logger = logging.getLogger(__name__)

_SCHEDULES: dict[str, dict[str, Any]] = {
    # the study's straight-ray schedule (also LatentInverter's defaults)
    "straight": dict(epochs=120, batch_size=25, lr=1e-2, lr_decay=0.95, lr_step=1,
                     reg="ring", reg_weight=10.0, reg_decay=0.999),
    # the study's bent-ray schedule
    "bent": dict(epochs=30, batch_size=25, lr=0.1, lr_decay=0.8, lr_step=5, reg="ring",
                 reg_weight=10.0, reg_decay=0.99),
    # the bent-ray schedule stretched 4x with a stable ring step (lr * reg_weight = 0.5)
    "bent-long": dict(epochs=120, batch_size=25, lr=0.05, lr_decay=0.8, lr_step=20,
                      reg="ring", reg_weight=10.0, reg_decay=0.9975),
    # the study's bent-ray schedule with the steps its code takes: its image gradient
    # is J^T e, without the factor 2 of the squared misfit and the petrophysics'
    # ds/dm = 0.02 s^2 (3.1-5.6 ns/m), ~1/8 of the true gradient; lr 0.1 / 8 on the
    # data, and reg_weight x 8 keeps its ring step (lr * reg_weight = 1)
    "bent-as-coded": dict(epochs=30, batch_size=25, lr=0.0125, lr_decay=0.8, lr_step=5,
                          reg="ring", reg_weight=80.0, reg_decay=0.99),
}


def reference_schedule(name: str = "straight") -> dict[str, Any]:
    """Schedule settings of the reference study, as keyword arguments of LatentInverter.

    Parameters
    ----------
    name : {"straight", "bent", "bent-as-coded", "bent-long"}, default="straight"
        ``"straight"``: the study's straight-ray schedule (3,000 iterations; the
        defaults of :class:`LatentInverter`). ``"bent"``: the study's shortest-path
        schedule as published (750 iterations, ``lr = 0.1``, ``lr * reg_weight = 1``,
        on the edge of ring stability). ``"bent-as-coded"``: the same schedule with the
        steps the study's code took: its bent-ray gradient with respect to the image
        is ``J^T e``, without the factor 2 of the squared misfit and the derivative
        of the slowness with respect to the facies (``0.02 s²``, 3.1-5.6 ns/m for the
        reference petrophysics), so its data step was about 1/8 of the published
        ``lr`` times the true gradient: ``lr = 0.0125``, and ``reg_weight = 80`` keeps
        its ring step. ``"bent-long"``: the published shortest-path schedule
        stretched to 3,000 iterations with ``lr = 0.05`` (a stable ring step), at 4x
        the cost (see the user guide). All assume batches of 25 of a 625-ray survey.

    Returns
    -------
    dict
        A new dict of ``epochs, batch_size, lr, lr_decay, lr_step, reg, reg_weight,
        reg_decay``.

    Examples
    --------
    >>> from skvaeinv.inverter import reference_schedule
    >>> reference_schedule("bent")["epochs"]
    30
    """
    if name not in _SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of "
                         f"{sorted(_SCHEDULES)}.")
    return dict(_SCHEDULES[name])


@dataclass
class Ensemble:
    """The accepted starts of a :class:`LatentInverter` fit and their statistics.

    Returned by :meth:`skvaeinv.LatentInverter.ensemble`; each parameter is kept as the attribute
    of the same name.

    Parameters
    ----------
    threshold : float or None
        Acceptance threshold on the data RMSE (ns); None accepts every start that
        produced a model.
    accepted : ndarray of int
        Indices of the accepted starts.
    models : ndarray of shape (n_accepted, H, W)
        Their kept models (facies in [0, 1]).
    mean : ndarray of shape (H, W)
        Mean image of the accepted models.
    channel_probability : ndarray of shape (H, W)
        Fraction of accepted models with ``m > 0.5`` in each cell.
    std : ndarray of shape (H, W)
        Standard deviation of the accepted models (spread).
    chi2 : float or None, default=None
        Acceptance threshold on the χ² per datum (None: not used).
    """

    threshold: float | None
    accepted: np.ndarray
    models: np.ndarray
    mean: np.ndarray
    channel_probability: np.ndarray
    std: np.ndarray
    chi2: float | None = None

    @property
    def n_accepted(self) -> int:
        """Number of accepted starts."""
        return int(self.accepted.size)


class LatentInverter(LatentModelMixin, RegressorMixin, BaseEstimator):
    """Invert traveltimes by multi-start SGD in the latent space of a VAE prior.

    Minimises, for each of ``n_starts`` random starts ``z_0 ~ N(0, I)``, the misfit
    ``||f(h(g(z))) - d||²`` between observed traveltimes ``d`` and those of the model
    decoded by the prior ``g`` (facies), mapped to slowness by the petrophysics ``h`` and
    passed through the forward operator ``f``, by stochastic gradient descent on random
    mini-batches of rays with a decaying learning rate and a decaying "ring"
    regularisation (Lopez-Alvis et al., 2021). Each start keeps the iterate with the
    lowest total cost; the accepted starts form an ensemble.

    The rays are the samples: ``X`` holds one ray per row (``xs, zs, xr, zr`` in metres)
    and ``y`` its traveltime (ns), so that scikit-learn's cross-validation splits rays
    and :class:`~sklearn.model_selection.GridSearchCV` can choose the decay
    hyper-parameters by how well held-out traveltimes are predicted.

    Parameters
    ----------
    prior : VAEPrior
        A fitted prior (anything with ``get_decoder(device)``, ``image_shape_`` and
        ``latent_dim``). Used as-is: never refitted; a :func:`~sklearn.base.clone` of
        the inverter holds it in :class:`sklearn.frozen.FrozenEstimator`, which shares
        it. To search over several fitted priors, wrap each
        in :class:`sklearn.frozen.FrozenEstimator` (a grid's values are cloned, and a
        clone of a bare prior is unfitted):
        ``GridSearchCV(inv, {"prior": [FrozenEstimator(p1), FrozenEstimator(p2)]})``.
    forward : ForwardOperator
        Forward operator (e.g. :class:`~skvaeinv.forward.StraightRay` or
        :class:`~skvaeinv.forward.ShortestPath`) on the prior's image grid.
    petrophysics : None, callable or tuple of two floats, default=None
        Facies → slowness. None: the reference ``v = 0.06 + 0.02 (1 - m)`` m/ns
        (:class:`~skvaeinv.petrophysics.LinearVelocity`); a ``(v_matrix, v_channel)``
        velocity pair (matrix first: the reverse of ``LinearVelocity``'s positional
        order, so ``LinearVelocity(v_channel=..., v_matrix=...)`` by keyword is the
        unambiguous form); or any callable differentiable on torch tensors: it is called
        with float32 batches of facies images ``(n_images, H, W)`` (in the inversion and
        in :meth:`predict` alike; on ``device`` in the inversion, on the CPU in the
        checks and :meth:`predict`) and returns slowness of the same shape. ``fit`` first
        tries it on uniform facies images (0, 0.5 and 1): it must return finite,
        positive slowness of the images' shape.
    n_starts : int, default=10
        Number of random starts.
    epochs : int, default=120
        Passes over the rays; each visits all rays in random mini-batches without
        replacement (``ceil(n_rays / batch_size)`` iterations per epoch).
    batch_size : int, default=25
        Rays per mini-batch.
    lr : float, default=1e-2
        Initial learning rate. The data term of an iteration is the *sum* of the
        (weighted) squared residuals of the mini-batch (the published convention), so
        ``lr`` scales with the batch size: the reference uses 1e-2 for straight rays and
        0.1 for shortest paths with batches of 25.
    lr_decay : float, default=0.95
        Factor applied to the learning rate every ``lr_step`` epochs.
    lr_step : int, default=1
        Epochs between learning-rate decays.
    reg : {"ring", "origin"} or None, default="ring"
        Latent regularisation: ``λ (||z|| - E[χ_n])²`` (exact chi mean for
        ``n = latent_dim``), ``λ ||z||²``, or none.
    reg_weight : float, default=10.0
        Initial regularisation weight ``λ_0``.
    reg_decay : float, default=0.999
        Factor applied to ``λ`` every iteration.
    ring_radius : float or None, default=None
        Radius of the ring; None means ``E[χ_n]`` (4.4166 for 20 dimensions, the study's
        choice). A prior whose codes of real images lie on another shell (the reference
        prior's: ``||z|| ≈ 6.5``) can be given that radius, e.g.
        ``np.linalg.norm(prior.transform(images), axis=1).mean()``.
    batching : {"random", "source", "receiver"}, default="random"
        How an epoch's rays are split into mini-batches: uniformly at random (the
        study's method), or grouped by source (receiver) position, each epoch visiting
        the gathers in random order, so that a mini-batch holds rays of one or two
        gathers. For :class:`~skvaeinv.forward.ShortestPath` a source-gather batch needs
        one search instead of about one per ray; with its default backend, whose
        searches towards one or two receivers are cheap, that saves little, and random
        batches fit the study's models more often (the user guide has the figures).
    optimizer : {"sgd", "adam"}, default="sgd"
        Plain SGD or Adam (per-start moments).
    init : None or array-like of shape (n_starts, latent_dim) or (latent_dim,), default=None
        Initial latent vectors; None draws ``z_0 ~ N(0, I)`` per start. A single vector
        is used for every start (which still differ by their mini-batch orders).
    acceptance_threshold : float or None, default=None
        Data RMSE (ns) at or below which a start is accepted into the ensemble
        (``accepted_`` etc.); None accepts every start that produced a model. The
        :meth:`ensemble` method recomputes the ensemble for any threshold.
    acceptance_chi2 : float or None, default=None
        With picking errors (``fit(..., sigma=...)``): accept only starts whose χ² per
        datum (``chi2_``; about 1 for a model that fits to within the errors) is at or
        below this, e.g. 1.5. Both thresholds apply where both are given.
    time_shift : bool, default=False
        Fit a constant time shift ``t0`` (ns) with the latent code, e.g. the zero-time
        error of radar data: computed times are ``f(model) + t0``. It is profiled out
        in closed form (the weighted mean residual, per mini-batch and over all rays),
        so it needs no learning rate; ``time_shift_`` holds each start's ``t0`` and
        :meth:`predict` adds it.
    track_every : int or None, default=None
        For nonlinear forward operators, the full-data cost that selects each start's
        kept iterate is evaluated every ``track_every`` iterations (and at the end);
        None means once per epoch. Linear operators track every iteration (the full
        forward is what the mini-batch gradient is taken from, at no extra cost).
    chunk_size : int or None, default=None
        At most this many starts advance together as one batch; the starts are split
        into ``ceil(n_starts / chunk_size)`` chunks of (nearly) equal size (26 starts
        with ``chunk_size=25`` run as 13 + 13). None: 25 on the CPU, all starts on an
        accelerator. Results depend on it (floating-point batching) but not on
        ``n_jobs``.
    n_jobs : int or None, default=None
        Chunks of starts run in parallel joblib workers (CPU only); there is more than
        one chunk only for more than ``chunk_size`` starts. Every chunk uses
        one torch thread, in workers and in this process alike, so results are
        identical for any ``n_jobs``; use ``n_jobs=-1`` to use all cores. When the
        chunks run in this process (a single chunk, or a GPU), a nonlinear operator
        whose own ``n_jobs`` is None (e.g. :class:`~skvaeinv.forward.ShortestPath`)
        runs on these cores instead (a clone of it; results do not change).
    device : str or torch.device, default="auto"
        Torch device; ``"auto"`` picks CUDA when available. On an accelerator all
        chunks run in this process; a nonlinear operator still runs on the CPU and only
        its Jacobian rows travel.
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Autocast precision of the decoder (bfloat16 is faster on CPUs with AVX-512 BF16
        and on GPUs; note that it also rounds the decoder's input). On CPUs without
        native bfloat16 kernels (AVX2 only) torch emulates it, much slower than float32,
        and ``fit`` warns
        (``skvaeinv.runtime.SlowPrecisionWarning``). "auto": bfloat16 where the device
        has native kernels, float32 elsewhere (results then depend on the machine).
        Petrophysics, forward and costs are always float32. On a GPU, float32
        convolutions are full float32, not torch's default TF32, so GPU runs stay
        close to CPU ones (torch's setting is restored after ``fit``; matrix products
        follow torch's own ``torch.set_float32_matmul_precision``).
    compile : bool, default=False
        Compile the decoder with :func:`torch.compile` in every process that runs
        starts: a few seconds of compilation per process, then faster iterations of
        the study's network on AVX-512 CPUs (the user guide has the figures). Needs a
        C++ compiler (CPU) or Triton (CUDA). Worth it for long runs, not for tiny ones.
    random_state : int, RandomState instance or None, default=None
        Seeds the starts: one :class:`numpy.random.SeedSequence` child per start draws
        its initial vector and its mini-batch orders. On the CPU, results are then
        repeatable bit for bit and independent of ``n_jobs``; on CUDA they agree to
        float32 rounding (cuDNN's convolutions need not round the same way twice), and
        SGD with a large learning rate can amplify such differences.
    verbose : int, default=0
        0: silent; 1: a tqdm progress bar per chunk of starts (on stderr) and progress
        logged (``logging.INFO``, logger ``skvaeinv``) about ten times per chunk; 2: logged
        every epoch. Chunks that run in joblib workers send their log records back to
        this process, where they reach its handlers as each chunk finishes.

    Attributes
    ----------
    models_ : ndarray of shape (n_starts, H, W)
        Per start, the decoded image of the iterate with the lowest total cost
        (full-data misfit + regularisation).
    latents_ : ndarray of shape (n_starts, latent_dim)
        The corresponding latent vectors.
    data_rmse_ : ndarray of shape (n_starts,)
        Data RMSE (ns; weighted when ``sample_weight`` or ``sigma`` is given) at the
        kept iterate; inf for a start that produced none.
    chi2_ : ndarray of shape (n_starts,) or None
        With ``sigma``: χ² per datum, ``mean((residual / sigma)²)``, at the kept
        iterate (about 1 when the model fits to within the picking errors); None
        without.
    time_shift_ : ndarray of shape (n_starts,) or None
        With ``time_shift=True``: each kept model's time shift ``t0`` (ns); else None.
    kept_iteration_ : ndarray of shape (n_starts,)
        Iteration of the kept iterate: ``k < n_iter_`` is the iterate before update
        ``k`` (column ``k`` of ``history_``); ``n_iter_`` is the final iterate, after the
        last update, which ``history_`` has no column for (its data RMSE is
        ``data_rmse_``).
    diverged_ : ndarray of shape (n_starts,)
        Starts stopped because their iterate or cost became NaN/inf.
    best_index_ : int
        Start with the lowest data RMSE.
    model_ : ndarray of shape (H, W)
        ``models_[best_index_]``.
    z_ : ndarray of shape (latent_dim,)
        ``latents_[best_index_]``.
    history_ : SGDHistory
        Per-start, per-iteration data RMSE, batch RMSE, ``||z||``, total cost, and per
        iteration learning rate and regularisation weight: ``n_iter_`` columns, column
        ``k`` for the iterate that update ``k`` starts from.
    n_iter_ : int
        Iterations run (``epochs * ceil(n_rays / batch_size)`` unless interrupted).
    interrupted_ : bool
        True when :meth:`fit` was stopped by KeyboardInterrupt (results so far kept).
    accepted_ : ndarray of shape (n_starts,)
        Starts accepted with ``acceptance_threshold``.
    ensemble_mean_, channel_probability_, ensemble_std_ : ndarray of shape (H, W)
        Mean image, channel probability (fraction of accepted models above 0.5) and
        spread (standard deviation) of the accepted models.
    petrophysics_ : callable
        A copy of the facies → slowness mapping used; :meth:`predict` uses it, so
        changing ``petrophysics`` afterwards takes effect at the next :meth:`fit`.
    forward_ : ForwardOperator
        A copy of ``forward`` as fitted; :meth:`predict` and :meth:`score` use it, so
        changing ``forward`` afterwards takes effect at the next :meth:`fit`.
    n_features_in_ : int
        4 (ray coordinates).

    See Also
    --------
    skvaeinv.VAEPrior : The pattern prior.
    skvaeinv.engine.run_latent_sgd : The optimisation engine.

    References
    ----------
    Lopez-Alvis, J., Laloy, E., Nguyen, F., Hermans, T. (2021). Deep generative models
    in inversion: the impact of the generator's nonlinearity and development of a new
    approach based on a variational autoencoder. Computers & Geosciences 152, 104762.

    Examples
    --------
    >>> from skvaeinv import VAEPrior, LatentInverter
    >>> from skvaeinv.datasets import make_channels
    >>> from skvaeinv.survey import Grid2D, crosshole
    >>> from skvaeinv.forward import StraightRay
    >>> images = make_channels(64, shape=(32, 16), random_state=0)
    >>> prior = VAEPrior(latent_dim=4, epochs=1, random_state=0, device="cpu").fit(images)
    >>> grid = Grid2D((32, 16), spacing=0.1)
    >>> rays = crosshole(grid, depths=[0.5, 1.5, 2.5])
    >>> y = StraightRay(grid).traveltimes(1 / (0.06 + 0.02 * (1 - images[0])), rays)
    >>> inv = LatentInverter(prior, StraightRay(grid), n_starts=2, epochs=2, batch_size=3,
    ...                      device="cpu", random_state=0).fit(rays, y)
    >>> inv.models_.shape, inv.predict(rays).shape
    ((2, 32, 16), (9,))
    """

    _parameter_constraints: dict = {
        "prior": [HasMethods(["get_decoder"])],
        "forward": [ForwardOperator],
        "petrophysics": [None, callable, tuple],
        "n_starts": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "lr_decay": [Interval(Real, 0, None, closed="neither")],
        "lr_step": [Interval(Integral, 1, None, closed="left")],
        "reg": [StrOptions({"ring", "origin"}), None],
        "reg_weight": [Interval(Real, 0, None, closed="left")],
        "reg_decay": [Interval(Real, 0, None, closed="neither")],
        "ring_radius": [Interval(Real, 0, None, closed="neither"), None],
        "batching": [StrOptions({"random", "source", "receiver"})],
        "optimizer": [StrOptions({"sgd", "adam"})],
        "init": [None, "array-like"],
        "acceptance_threshold": [Interval(Real, 0, None, closed="neither"), None],
        "acceptance_chi2": [Interval(Real, 0, None, closed="neither"), None],
        "time_shift": ["boolean"],
        "track_every": [Interval(Integral, 1, None, closed="left"), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
        "n_jobs": [Interval(Integral, None, -1, closed="right"),
                   Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
        "precision": [StrOptions({"float32", "bfloat16", "auto"})],
        "compile": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, prior: Any = None, forward: Any = None, *, petrophysics: Any = None,
                 n_starts: int = 10, epochs: int = 120, batch_size: int = 25,
                 lr: float = 1e-2, lr_decay: float = 0.95, lr_step: int = 1,
                 reg: str | None = "ring", reg_weight: float = 10.0,
                 reg_decay: float = 0.999, ring_radius: float | None = None,
                 batching: str = "random", optimizer: str = "sgd",
                 init: Any = None,
                 acceptance_threshold: float | None = None,
                 acceptance_chi2: float | None = None, time_shift: bool = False,
                 track_every: int | None = None,
                 chunk_size: int | None = None, n_jobs: int | None = None,
                 device: str | torch.device = "auto", precision: str = "float32",
                 compile: bool = False, random_state: Any = None, verbose: int = 0) -> None:
        self.prior = prior
        self.forward = forward
        self.petrophysics = petrophysics
        self.n_starts = n_starts
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_step = lr_step
        self.reg = reg
        self.reg_weight = reg_weight
        self.reg_decay = reg_decay
        self.ring_radius = ring_radius
        self.batching = batching
        self.optimizer = optimizer
        self.init = init
        self.acceptance_threshold = acceptance_threshold
        self.acceptance_chi2 = acceptance_chi2
        self.time_shift = time_shift
        self.track_every = track_every
        self.chunk_size = chunk_size
        self.n_jobs = n_jobs
        self.device = device
        self.precision = precision
        self.compile = compile
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_inputs(self, X: Any, y: Any, sample_weight: Any, sigma: Any = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                 np.ndarray | None]:
        """Validated rays, traveltimes, normalised weights and picking errors."""
        rays, y = self._check_survey(X, y)
        if sigma is not None:
            if sample_weight is not None:
                raise ValueError("give sigma (picking errors, weights 1 / sigma²) or "
                                 "sample_weight, not both.")
            sigma = check_sigma(sigma, y.shape[0], allow_scalar=True)
            sample_weight = sigma ** -2.0
        elif self.acceptance_chi2 is not None:
            raise ValueError("acceptance_chi2 needs the picking errors: fit(X, y, "
                             "sigma=...).")
        w = None if sample_weight is None else check_weights(sample_weight, y)
        if w is not None:
            w = w / w.mean()  # mean one: the learning-rate scale does not change
        return rays, y, w, sigma

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, sample_weight: Any = None, *,
            sigma: Any = None) -> "LatentInverter":
        """Run the multi-start inversion.

        Parameters
        ----------
        X : array-like of shape (n_rays, 4)
            Rays, columns ``xs, zs, xr, zr`` (m), inside the forward operator's grid.
        y : array-like of shape (n_rays,)
            Observed traveltimes (ns), finite and positive.
        sample_weight : array-like of shape (n_rays,), default=None
            Per-datum weights, e.g. ``1 / σ²``. They are normalised to mean one (so the
            learning rate keeps its meaning); costs and ``data_rmse_`` are then weighted.
        sigma : float or array-like of shape (n_rays,), default=None
            Picking errors (ns, standard deviations; one for all or one per ray, e.g.
            :meth:`skvaeinv.io.TraveltimeData.sigma`): the misfit weighs each datum by
            ``1 / σ²`` and ``chi2_`` reports the χ² per datum. Not with
            ``sample_weight``.

        Returns
        -------
        self : LatentInverter
            The fitted estimator.

        Raises
        ------
        FloatingPointError
            If no start produced a finite model (all diverged: lower ``lr``); an
            earlier fit is then left as it was.
        """
        rays, y, w, sigma = self._check_inputs(X, y, sample_weight, sigma)
        plan = self._plan(rays)
        results, interrupted = self._run_chunks(plan, rays, y, w)
        self._store_results(results, plan.chunks, plan.runtime.latent_dim,
                            plan.runtime.image_shape, interrupted,
                            None if sigma is None else float(np.mean(sigma ** -2.0)))
        # fitted state that predict uses, set only once the run produced a model (a
        # failed fit leaves an earlier fit as it was)
        validate_data(self, X, reset=True, skip_check_array=True)
        self.petrophysics_ = plan.runtime.petrophysics
        self.forward_ = clone(self.forward, safe=False)
        return self

    def _plan(self, rays: np.ndarray) -> "_FitPlan":
        """Everything the chunks need, resolved and validated once, here."""
        runtime = self._runtime(stacklevel=4)
        rngs = start_generators(self.random_state, int(self.n_starts))
        z0 = initial_latents(self.init, rngs, runtime.latent_dim)
        return _FitPlan(runtime=runtime, config=self._config(rays.shape[0], runtime.precision),
                        z0=z0, rngs=rngs,
                        chunks=split_starts(int(self.n_starts), self.chunk_size,
                                            runtime.device))

    def _config(self, n_rays: int, precision: str) -> SGDConfig:
        """The engine's configuration (validated when made)."""
        n_batches = -(-n_rays // self.batch_size)
        log_every = 0 if not self.verbose else (1 if self.verbose >= 2
                                                else max(1, self.epochs // 10))
        return SGDConfig(
            n_rays=n_rays, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            lr_decay=self.lr_decay, lr_step=self.lr_step, reg=self.reg,
            reg_weight=self.reg_weight, reg_decay=self.reg_decay,
            ring_radius=self.ring_radius, optimizer=self.optimizer,
            linear=bool(getattr(self.forward, "is_linear", False)),
            track_every=self.track_every if self.track_every is not None else n_batches,
            precision=precision, compile=self.compile, time_shift=self.time_shift,
            log_every=log_every, progress=bool(self.verbose))

    def _run_chunks(self, plan: "_FitPlan", rays: np.ndarray, y: np.ndarray,
                    w: np.ndarray | None) -> tuple[list[EngineResult], bool]:
        """Run the chunks of starts, here or in joblib workers."""
        n_jobs = effective_n_jobs(self.n_jobs)
        device = plan.runtime.device
        in_process = device.type != "cpu" or n_jobs == 1 or len(plan.chunks) == 1
        operator = operator_with_spare_cores(self.forward, n_jobs if in_process else 1)
        groups = _batch_groups(rays, self.batching)
        args = [(plan.runtime.decoder, operator, rays, y, w, plan.runtime.petrophysics,
                 plan.z0[idx], [plan.rngs[i] for i in idx], str(device), plan.config, groups,
                 f"starts {idx[0]}-{idx[-1]}: ") for idx in plan.chunks]
        if self.verbose:
            logger.info("LatentInverter: %d starts in %d chunk(s), %d iterations each, on %s",
                        len(plan.z0), len(plan.chunks), plan.config.n_iter, device)
        results, interrupted = run_chunks(_sgd_chunk, args, n_jobs=n_jobs,
                                          in_process=in_process,
                                          stop=lambda result: result.interrupted,
                                          label="LatentInverter.fit")
        return results, interrupted or any(r.interrupted for r in results)

    def _store_results(self, results: list[EngineResult], chunks: list[np.ndarray],
                       latent_dim: int, image_shape: tuple[int, int],
                       interrupted: bool, mean_precision: float | None = None) -> None:
        n = sum(len(idx) for idx in chunks)
        models = np.full((n, *image_shape), np.nan, dtype=np.float32)
        latents = np.full((n, latent_dim), np.nan, dtype=np.float32)
        rmse = np.full(n, np.inf)
        kept = np.full(n, -1, dtype=np.int64)
        diverged = np.zeros(n, dtype=bool)
        shift = np.full(n, np.nan) if self.time_shift else None
        histories = []
        for idx, res in zip(chunks, results):
            if shift is not None:
                shift[idx] = res.time_shift
            models[idx] = res.models.reshape(len(idx), *image_shape)
            latents[idx] = res.latents
            rmse[idx] = res.data_rmse
            kept[idx] = res.best_iteration
            diverged[idx] = res.diverged
            histories.append(res.history)
        rmse[~np.isfinite(rmse)] = np.inf
        if len(results) < len(chunks):  # interrupted: starts never run get empty records
            for idx in chunks[len(results):]:
                histories.append(SGDHistory.empty(len(idx)))
        if not np.isfinite(rmse).any():
            if interrupted:   # stopped before anything could be kept: the interrupt stands
                raise KeyboardInterrupt
            raise FloatingPointError(
                "no start produced a finite model (all diverged); try a smaller lr."
            )
        self.models_ = models
        self.latents_ = latents
        self.data_rmse_ = rmse
        # chi² per datum = sum(r² / σ²) / n = weighted RMSE² (weights 1/σ²) x mean(1/σ²)
        self.chi2_ = None if mean_precision is None else rmse ** 2 * mean_precision
        self.time_shift_ = shift
        self.kept_iteration_ = kept
        self.diverged_ = diverged
        self.best_index_ = int(np.argmin(rmse))
        self.model_ = models[self.best_index_]
        self.z_ = latents[self.best_index_]
        self.history_ = SGDHistory.concatenate(histories)
        self.n_iter_ = int(max(r.n_iter for r in results))
        self.interrupted_ = bool(interrupted)
        if diverged.any():
            warnings.warn(
                f"{int(diverged.sum())} of {n} starts diverged (NaN/inf) and were stopped; "
                "they keep their best iterate before that (see diverged_). A smaller lr "
                "usually helps.", RuntimeWarning, stacklevel=4)
        self._accept(stacklevel=5)                                     # at fit's caller

    # ------------------------------------------------------------------ results
    def ensemble(self, threshold: float | None = None, *,
                 chi2: float | None = None) -> Ensemble:
        """The starts accepted at a data-RMSE (or χ²) threshold and their statistics.

        Parameters
        ----------
        threshold : float or None, default=None
            Accept starts with ``data_rmse_ <= threshold`` (ns); None accepts every
            start with a finite data RMSE.
        chi2 : float or None, default=None
            Also require ``chi2_ <= chi2`` (needs a fit with ``sigma``).

        Returns
        -------
        ensemble : Ensemble
            ``accepted`` (indices of the accepted starts), ``models`` (their kept
            models), ``mean``, ``channel_probability`` and ``std`` (images of shape
            ``(H, W)``), ``n_accepted`` and ``threshold``; the images are all NaN, with
            a warning, when no start is accepted.
        """
        check_is_fitted(self, "models_")
        return self._ensemble(threshold, stacklevel=3, chi2=chi2)

    def _accept(self, stacklevel: int = 2) -> Ensemble:
        """Set ``accepted_`` and the ensemble images from the acceptance parameters.

        Called by :meth:`fit`, and by a caller that sets ``acceptance_threshold`` /
        ``acceptance_chi2`` after the fit from the fitted misfits
        (:func:`skvaeinv.workflow.invert_survey`), so that the fitted attributes agree
        with the parameters.
        """
        ens = self._ensemble(self.acceptance_threshold, stacklevel=stacklevel + 1,
                             chi2=self.acceptance_chi2)
        self.accepted_ = np.zeros(len(self.data_rmse_), dtype=bool)
        self.accepted_[ens.accepted] = True
        self.ensemble_mean_ = ens.mean
        self.channel_probability_ = ens.channel_probability
        self.ensemble_std_ = ens.std
        return ens

    def _ensemble(self, threshold: float | None, stacklevel: int,
                  chi2: float | None = None) -> Ensemble:
        threshold = _positive_or_none(threshold, "threshold", " (ns)")
        chi2 = _positive_or_none(chi2, "chi2")
        ok = np.isfinite(self.data_rmse_)
        if threshold is not None:
            ok &= self.data_rmse_ <= threshold
        if chi2 is not None:
            if self.chi2_ is None:
                raise ValueError("chi2 acceptance needs a fit with picking errors: "
                                 "fit(X, y, sigma=...).")
            ok &= self.chi2_ <= chi2
        accepted = np.flatnonzero(ok)
        models = self.models_[accepted]
        if accepted.size == 0:
            warnings.warn(f"no start has a data RMSE <= {threshold!r} ns"
                          + ("" if chi2 is None else f" and a chi2 <= {chi2!r}")
                          + "; the ensemble is empty.", UserWarning, stacklevel=stacklevel)
            empty = np.full(self.models_.shape[1:], np.nan)
            return Ensemble(threshold, accepted, models, empty, empty.copy(), empty.copy(),
                            chi2)
        return Ensemble(
            threshold=threshold, accepted=accepted, models=models,
            mean=models.mean(axis=0, dtype=np.float64),
            channel_probability=(models > 0.5).mean(axis=0, dtype=np.float64),
            std=models.std(axis=0, dtype=np.float64), chi2=chi2,
        )

    def predict(self, X: Any) -> np.ndarray:
        """Traveltimes (ns) of the best model ``model_`` along rays ``X``.

        With ``time_shift=True`` the best start's shift ``time_shift_`` is added.

        Parameters
        ----------
        X : array-like of shape (n_rays, 4)
            Rays (any, not only those seen in :meth:`fit`).

        Returns
        -------
        ndarray of shape (n_rays,)
            Traveltimes (ns) through ``model_`` (with the operator fitted with).
        """
        check_is_fitted(self, "forward_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        rays = self.forward_.validate_rays(X)
        slowness = apply_numpy(self.petrophysics_, self.model_[None])[0]
        times = np.asarray(self.forward_.traveltimes(slowness, rays), dtype=np.float64)
        if getattr(self, "time_shift_", None) is not None:
            times = times + self.time_shift_[self.best_index_]
        return times

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R² of :meth:`predict` (``RegressorMixin``'s).

        For model selection by the traveltime misfit in ns, use scikit-learn's
        ``scoring="neg_root_mean_squared_error"`` (it works on :meth:`predict`), e.g.
        ``GridSearchCV(inv, grid, scoring="neg_root_mean_squared_error")``.

        Parameters
        ----------
        X : array-like of shape (n_rays, 4)
            Rays.
        y : array-like of shape (n_rays,)
            Observed traveltimes (ns), finite and positive.
        sample_weight : array-like of shape (n_rays,), default=None
            Weights of the squared errors (finite, >= 0, not all zero).

        Returns
        -------
        float
            ``1 - sum(w (y - predict(X))²) / sum(w (y - mean_w(y))²)``.
        """
        y = check_traveltimes(y)
        w = None if sample_weight is None else check_weights(sample_weight, y)
        return super().score(X, y, sample_weight=w)


# ---------------------------------------------------------------------- helpers
@dataclass(frozen=True)
class _FitPlan:
    """What :meth:`LatentInverter.fit` resolved once for all its chunks."""

    runtime: Runtime
    config: SGDConfig
    z0: np.ndarray
    rngs: list
    chunks: list


def _positive_or_none(value: Any, name: str, unit: str = "") -> Any:
    """An acceptance threshold: None or a positive real (a 0-d array is unwrapped)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]   # a 0-d array, e.g. from an array computation
    if value is not None and (not isinstance(value, numbers.Real)
                              or isinstance(value, (bool, np.bool_)) or not value > 0):
        raise ValueError(f"{name}={value!r} must be a positive float{unit} or None.")
    return value


def _batch_groups(rays: np.ndarray, batching: str) -> np.ndarray | None:
    """Group label of each ray for ``batching`` (None: random mini-batches)."""
    if batching == "random":
        return None
    cols = slice(0, 2) if batching == "source" else slice(2, 4)
    return np.unique(np.round(rays[:, cols], 9), axis=0, return_inverse=True)[1].reshape(-1)


def _sgd_chunk(decoder: torch.nn.Module, operator: Any, rays: np.ndarray, y: np.ndarray,
               w: np.ndarray | None, petrophysics: Any, z0: np.ndarray,
               rngs: list[np.random.Generator], device: str, config: SGDConfig,
               groups: np.ndarray | None, log_prefix: str,
               caller: tuple[int, int] | None) -> tuple[EngineResult, list[logging.LogRecord]]:
    """Run one chunk of starts (in this process, a thread or a joblib worker process)."""
    from skvaeinv.forward import TorchForward

    dev = torch.device(device)
    with chunk_context(dev, caller) as records:
        forward = TorchForward(operator, rays, device=dev, dtype=torch.float32)
        result = run_latent_sgd(decoder, forward, y, z0, rngs, config,
                                petrophysics=petrophysics, sample_weight=w,
                                batch_groups=groups, device=dev, log_prefix=log_prefix)
    return result, records
