"""Batched multi-start stochastic gradient descent in a generator's latent space.

This module is the numerical core of :class:`skvaeinv.LatentInverter`; it imports
neither scikit-learn nor the rest of the package (only the torch helpers of
``skvaeinv._utils``), so it can be used (and tested) with any torch decoder and any
forward callable.

The method (Lopez-Alvis et al., 2021) minimises, for every start ``b`` independently,

.. math::

    \\sum_{j \\in \\mathcal{B}_k^b} w_j \\left(f_j(h(g(z_b))) - d_j\\right)^2
    + \\lambda_k R(z_b)

over the latent vector ``z_b``, where ``g`` is the decoder, ``h`` the petrophysics,
``f`` the forward operator, ``\\mathcal{B}_k^b`` the mini-batch of rays of start ``b``
at iteration ``k`` and ``R`` the regulariser:

* ``"ring"``: ``R(z) = (||z|| - E[chi_n])^2`` with the exact mean of the chi
  distribution with ``n = latent_dim`` degrees of freedom, ``sqrt(2) Γ((n+1)/2) / Γ(n/2)``
  (4.4166 for ``n = 20``): it pulls ``z`` towards the shell where ``N(0, I)`` has its
  mass (``ring_radius`` replaces ``E[chi_n]`` by another radius, e.g. that of the codes
  of real images for a prior whose aggregate posterior does not fill ``N(0, I)``);
* ``"origin"``: ``R(z) = ||z||^2``;
* ``None``: no regularisation.

Conventions (those of the study's published code, so that its learning rates apply
unchanged: ``lr = 1e-2`` for the linear and ``0.1`` for the nonlinear reference case
with batches of 25 of 625 rays):

* the data term of an iteration is the weighted **sum** (not the mean) of squared
  residuals over the mini-batch rays; the weights are used as given (the estimator
  normalises them to mean one so that the learning-rate scale does not change);
* every epoch visits all rays once, in an order drawn independently for every start,
  in ``ceil(n_rays / batch_size)`` mini-batches (the last one smaller when
  ``batch_size`` does not divide ``n_rays``);
* learning rate ``lr * lr_decay ** (epoch // lr_step)``; regularisation weight
  ``reg_weight * reg_decay ** k`` at iteration ``k`` (0-based);
* plain SGD ``z <- z - lr grad``, or Adam (per start moments, the usual bias
  correction);
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

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from skvaeinv._utils import autocast_context, ieee_float32, resolve_precision

__all__ = ["chi_mean", "learning_rate", "reg_weight_at", "SGDHistory", "EngineResult",
           "run_latent_sgd"]

logger = logging.getLogger(__name__)

ForwardCallable = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def chi_mean(n: int) -> float:
    """Mean of the chi distribution with ``n`` degrees of freedom.

    ``E[||z||]`` for ``z ~ N(0, I_n)``: ``sqrt(2) Γ((n + 1) / 2) / Γ(n / 2)``.

    Parameters
    ----------
    n : int
        Degrees of freedom (latent dimension), ``n >= 1``.

    Returns
    -------
    float
        ``E[||z||]`` for ``z ~ N(0, I_n)``: ``sqrt(2) Γ((n + 1) / 2) / Γ(n / 2)``.

    Examples
    --------
    >>> round(chi_mean(20), 4)
    4.4166
    """
    if n < 1:
        raise ValueError(f"n={n!r}: the chi distribution needs n >= 1 degrees of freedom.")
    return math.sqrt(2.0) * math.exp(math.lgamma((n + 1) / 2.0) - math.lgamma(n / 2.0))


def learning_rate(lr: float, lr_decay: float, lr_step: int, epoch: int) -> float:
    """Learning rate of ``epoch`` (0-based): ``lr * lr_decay ** (epoch // lr_step)``.

    Parameters
    ----------
    lr : float
        Initial learning rate (that of epoch 0).
    lr_decay : float
        Factor applied to the learning rate every ``lr_step`` epochs.
    lr_step : int
        Number of epochs between two decays.
    epoch : int
        Epoch (0-based).

    Returns
    -------
    float
        The learning rate of ``epoch`` (``inf`` where it overflows a float).
    """
    return _scaled(lr, lr_decay, int(epoch) // int(lr_step))


def reg_weight_at(reg_weight: float, reg_decay: float, iteration: int) -> float:
    """Regularisation weight of ``iteration`` (0-based): ``reg_weight * reg_decay ** k``.

    Parameters
    ----------
    reg_weight : float
        Initial regularisation weight (that of iteration 0).
    reg_decay : float
        Factor applied to the weight at every iteration.
    iteration : int
        Iteration ``k`` (0-based, counted over all epochs).

    Returns
    -------
    float
        The regularisation weight ``λ_k`` of ``iteration`` (0 for a zero
        ``reg_weight``; ``inf`` where it overflows a float).
    """
    return _scaled(reg_weight, reg_decay, int(iteration))


def _scaled(value: float, factor: float, power: int) -> float:
    """``value * factor ** power``: 0 for a zero value, ``inf`` where it overflows."""
    if float(value) == 0.0:
        return 0.0
    try:
        return float(value) * float(factor) ** power
    except OverflowError:
        return math.inf


class SGDHistory:
    """Per-start, per-iteration record of a multi-start latent SGD run.

    Parameters
    ----------
    data_rmse : ndarray of shape (n_starts, n_iter)
        Full-data (weighted) RMSE of the iterate before the update of each iteration;
        NaN where it was not evaluated (nonlinear forward between tracking points) or
        after a start diverged.
    batch_rmse : ndarray of shape (n_starts, n_iter)
        (Weighted) RMSE over the iteration's mini-batch.
    z_norm : ndarray of shape (n_starts, n_iter)
        ``||z||`` of the iterate before the update.
    cost : ndarray of shape (n_starts, n_iter)
        Total cost (full-data weighted sum of squares + ``λ_k R(z)``), NaN where not
        evaluated.
    lr : ndarray of shape (n_iter,)
        Learning rate of each iteration (the same for every start).
    reg_weight : ndarray of shape (n_iter,)
        Regularisation weight ``λ_k`` of each iteration (the same for every start).
    epoch : ndarray of shape (n_iter,)
        Epoch (0-based) of each iteration.

    Examples
    --------
    >>> import numpy as np
    >>> h = SGDHistory(data_rmse=np.ones((2, 3)), batch_rmse=np.ones((2, 3)),
    ...                z_norm=np.ones((2, 3)), cost=np.ones((2, 3)),
    ...                lr=np.full(3, 0.01), reg_weight=np.ones(3), epoch=np.zeros(3, int))
    >>> h.n_starts, h.n_iter, h["data_rmse"].shape, h[1, "lr"].shape
    (2, 3, (2, 3), (3,))
    """

    per_start_fields = ("data_rmse", "batch_rmse", "z_norm", "cost")
    per_iteration_fields = ("lr", "reg_weight", "epoch")

    def __init__(self, *, data_rmse: np.ndarray, batch_rmse: np.ndarray, z_norm: np.ndarray,
                 cost: np.ndarray, lr: np.ndarray, reg_weight: np.ndarray,
                 epoch: np.ndarray) -> None:
        self.data_rmse = np.asarray(data_rmse)
        self.batch_rmse = np.asarray(batch_rmse)
        self.z_norm = np.asarray(z_norm)
        self.cost = np.asarray(cost)
        self.lr = np.asarray(lr)
        self.reg_weight = np.asarray(reg_weight)
        self.epoch = np.asarray(epoch)

    @property
    def n_starts(self) -> int:
        """Number of starts recorded."""
        return int(self.data_rmse.shape[0])

    @property
    def n_iter(self) -> int:
        """Number of iterations recorded."""
        return int(self.data_rmse.shape[1])

    def keys(self) -> tuple[str, ...]:
        """Names of the recorded quantities.

        Returns
        -------
        tuple of str
            The per-start fields (``"data_rmse"``, ``"batch_rmse"``, ``"z_norm"``,
            ``"cost"``) followed by the per-iteration fields (``"lr"``,
            ``"reg_weight"``, ``"epoch"``).
        """
        return self.per_start_fields + self.per_iteration_fields

    def __len__(self) -> int:
        return self.n_iter

    def __getitem__(self, key: Any) -> Any:
        """Look up records by name, start or both.

        Parameters
        ----------
        key : str, int or tuple (int, str)
            A record name, a start index, or both.

        Returns
        -------
        ndarray or dict
            ``h["data_rmse"]`` → (n_starts, n_iter); ``h["lr"]`` → (n_iter,);
            ``h[i, "z_norm"]`` → (n_iter,) of start ``i``; ``h[i]`` → dict of start ``i``.
        """
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{key!r} is not recorded; available: {self.keys()}")
            return getattr(self, key)
        if isinstance(key, tuple) and len(key) == 2:
            start, name = key
            values = self[name]
            return values if name in self.per_iteration_fields else values[start]
        if isinstance(key, (int, np.integer)):
            return self.start(int(key))
        raise KeyError(f"unsupported history key {key!r}")

    def start(self, index: int) -> dict[str, np.ndarray]:
        """All records of one start, each of shape (n_iter,).

        Parameters
        ----------
        index : int
            Index of the start, in ``[-n_starts, n_starts)`` (negative values count from
            the end).

        Returns
        -------
        dict of str to ndarray of shape (n_iter,)
            Every recorded quantity (see :meth:`keys`): the per-start ones for start
            ``index``, and the per-iteration ones, which all starts share.

        Raises
        ------
        IndexError
            If ``index`` is out of range.
        """
        if not -self.n_starts <= index < self.n_starts:
            raise IndexError(f"start index {index} out of range for {self.n_starts} starts")
        out = {name: getattr(self, name)[index] for name in self.per_start_fields}
        out.update({name: getattr(self, name) for name in self.per_iteration_fields})
        return out

    def to_dict(self) -> dict[str, np.ndarray]:
        """All records as a dict of arrays.

        Returns
        -------
        dict of str to ndarray
            One entry per name of :meth:`keys`: arrays of shape (n_starts, n_iter) for
            the per-start quantities and (n_iter,) for the per-iteration ones. The
            arrays are not copied.
        """
        return {name: getattr(self, name) for name in self.keys()}

    @classmethod
    def concatenate(cls, histories: Sequence["SGDHistory"]) -> "SGDHistory":
        """Stack the histories of chunks of starts (shorter ones padded with NaN).

        Parameters
        ----------
        histories : sequence of SGDHistory
            Histories of chunks of starts, stacked in the given order; they may have run
            for different numbers of iterations.

        Returns
        -------
        SGDHistory
            The histories of all starts, with ``n_iter`` the largest of the chunks'. The
            per-start quantities of shorter histories are padded with NaN; the
            per-iteration ones (``lr``, ``reg_weight``, ``epoch``) are those of the
            longest history.
        """
        n_iter = max(h.n_iter for h in histories)
        longest = max(histories, key=lambda h: h.n_iter)

        def pad(a: np.ndarray) -> np.ndarray:
            if a.shape[1] == n_iter:
                return a
            out = np.full((a.shape[0], n_iter), np.nan, dtype=a.dtype)
            out[:, : a.shape[1]] = a
            return out

        stacked = {name: np.concatenate([pad(getattr(h, name)) for h in histories])
                   for name in cls.per_start_fields}
        stacked.update({name: getattr(longest, name) for name in cls.per_iteration_fields})
        return cls(**stacked)

    def __repr__(self) -> str:
        return f"SGDHistory(n_starts={self.n_starts}, n_iter={self.n_iter})"


@dataclass
class EngineResult:
    """What :func:`run_latent_sgd` returns (numpy arrays, one row per start).

    Each parameter is kept as the attribute of the same name.

    Parameters
    ----------
    models : ndarray of shape (B, H, W)
        Decoded image of the kept (lowest total cost) iterate; NaN if none was tracked.
    latents : ndarray of shape (B, latent_dim)
        Kept latent vectors.
    data_rmse : ndarray of shape (B,)
        Full-data weighted RMSE at the kept iterate (inf if none).
    cost : ndarray of shape (B,)
        Total cost at the kept iterate.
    best_iteration : ndarray of shape (B,)
        Iteration of the kept iterate (``n_iter`` = the final iterate; -1 = none).
    final_latents : ndarray of shape (B, latent_dim)
        Latent vectors after the last update.
    diverged : ndarray of shape (B,)
        Whether the start was stopped because of NaN/inf.
    diverged_at : ndarray of shape (B,)
        Iteration where it was stopped (-1 if it was not).
    n_iter : int
        Iterations completed.
    interrupted : bool
        True when the run was stopped by KeyboardInterrupt.
    history : SGDHistory
        Per-start, per-iteration records of the run.
    """

    models: np.ndarray
    latents: np.ndarray
    data_rmse: np.ndarray
    cost: np.ndarray
    best_iteration: np.ndarray
    final_latents: np.ndarray
    diverged: np.ndarray
    diverged_at: np.ndarray
    n_iter: int
    interrupted: bool
    history: SGDHistory = field(repr=False)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_config(*, epochs: int, batch_size: int, n_rays: int, lr: float, lr_decay: float,
                  lr_step: int, reg: str | None, reg_weight: float, reg_decay: float,
                  optimizer: str, track_every: int, ring_radius: float | None = None
                  ) -> None:
    checks = [
        ("epochs", epochs, epochs >= 1, "an int >= 1"),
        ("batch_size", batch_size, 1 <= batch_size <= n_rays,
         f"an int in [1, n_rays={n_rays}]"),
        ("lr", lr, lr > 0, "a positive float"),
        ("lr_decay", lr_decay, lr_decay > 0, "a positive float"),
        ("lr_step", lr_step, lr_step >= 1, "an int >= 1"),
        ("reg", reg, reg in ("ring", "origin", None), "'ring', 'origin' or None"),
        ("reg_weight", reg_weight, reg_weight >= 0, "a float >= 0"),
        ("reg_decay", reg_decay, reg_decay > 0, "a positive float"),
        ("optimizer", optimizer, optimizer in ("sgd", "adam"), "'sgd' or 'adam'"),
        ("track_every", track_every, track_every >= 1, "an int >= 1"),
        ("ring_radius", ring_radius,
         ring_radius is None or (math.isfinite(ring_radius) and ring_radius > 0),
         "None or a positive float"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name}={value!r} is invalid; expected {expected}.")
    # the schedules run in float32: their start values must be in range, and a decay
    # factor above 1, which grows its schedule, must keep it there to the end (the
    # regularisation weight only matters with a regulariser)
    n_total = epochs * -(-n_rays // batch_size)
    schedules = [("lr", lr, "lr_decay", lr_decay, "learning rate",
                  learning_rate(lr, lr_decay, lr_step, epochs - 1))]
    if reg is not None:
        schedules.append(("reg_weight", reg_weight, "reg_decay", reg_decay,
                          "regularisation weight", reg_weight_at(reg_weight, reg_decay,
                                                                 n_total)))
    for start_name, start, name, value, what, last in schedules:
        if not start <= _FLOAT32_MAX:
            raise ValueError(
                f"{start_name}={start!r} is beyond the float32 range the inversion runs "
                f"in (max {_FLOAT32_MAX:.7g}); use a smaller {start_name}.")
        if not last <= _FLOAT32_MAX:
            raise ValueError(
                f"{name}={value!r} makes the {what} grow beyond the float32 range "
                f"(max {_FLOAT32_MAX:.7g}) within the run's {n_total} iterations (it would "
                f"reach {last:.7g}); use "
                f"{name} <= 1, or a value closer to 1.")


def run_latent_sgd(
    decoder: Callable[[torch.Tensor], torch.Tensor],
    forward: ForwardCallable,
    y: np.ndarray | torch.Tensor,
    z0: np.ndarray | torch.Tensor,
    rngs: Sequence[np.random.Generator],
    *,
    petrophysics: Callable[[torch.Tensor], torch.Tensor] | None = None,
    sample_weight: np.ndarray | None = None,
    epochs: int = 120,
    batch_size: int = 25,
    lr: float = 1e-2,
    lr_decay: float = 0.95,
    lr_step: int = 1,
    reg: str | None = "ring",
    reg_weight: float = 10.0,
    reg_decay: float = 0.999,
    ring_radius: float | None = None,
    optimizer: str = "sgd",
    batch_groups: np.ndarray | None = None,
    linear: bool = True,
    track_every: int = 1,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    compile: bool = False,
    adam_betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    log_every: int = 0,
    log_prefix: str = "",
    progress: bool = False,
) -> EngineResult:
    """Run latent-space SGD for a batch of starts.

    Parameters
    ----------
    decoder : callable
        Maps a float32 tensor ``(B, latent_dim)`` to images ``(B, H, W)`` (or
        ``(B, 1, H, W)``), differentiably w.r.t. its input. Its weights are not updated.
    forward : callable
        ``forward(slowness (B, N), ray_index (B, k) or None) -> (B, k)`` traveltimes of
        rays ``ray_index[b]`` through ``slowness[b]`` (all rays, ``(B, n_rays)``, when
        ``ray_index`` is None), differentiable w.r.t. the slowness (the
        :class:`skvaeinv.forward.TorchForward` contract).
    y : array of shape (n_rays,)
        Observed traveltimes.
    z0 : array of shape (B, latent_dim)
        Initial latent vectors.
    rngs : sequence of numpy Generators, length B
        One generator per start, drawing that start's mini-batch orders, so that a
        start's trajectory does not depend on which other starts share its batch.
    petrophysics : callable, optional
        Facies → slowness on torch tensors; identity if None. It is called with the
        decoded batch as the decoder returns it (``(B, H, W)`` float32 for image
        decoders) and must return slowness of that shape.
    sample_weight : array of shape (n_rays,), optional
        Weights of the squared residuals (used as given).
    epochs : int, default=120
        Number of epochs; each visits all rays once (see the module docstring).
    batch_size : int, default=25
        Rays per mini-batch, in ``[1, n_rays]``; an epoch has
        ``ceil(n_rays / batch_size)`` mini-batches.
    lr : float, default=1e-2
        Learning rate of the first epoch.
    lr_decay : float, default=0.95
        Decay factor of the learning rate, ``lr * lr_decay ** (epoch // lr_step)``.
    lr_step : int, default=1
        Number of epochs between two learning-rate decays.
    reg : {"ring", "origin"} or None, default="ring"
        Regulariser ``R(z)`` of the latent vectors (see the module docstring); None
        means no regularisation (its weight is then 0 throughout, whatever
        ``reg_weight`` and ``reg_decay`` say).
    reg_weight : float, default=10.0
        Regularisation weight ``λ_0`` of the first iteration.
    reg_decay : float, default=0.999
        Decay factor of the regularisation weight per iteration,
        ``λ_k = reg_weight * reg_decay ** k``.
    ring_radius : float or None, default=None
        Radius of the ring regulariser; None means ``E[χ_n]`` (the study's choice).
    optimizer : {"sgd", "adam"}, default="sgd"
        Plain SGD ``z <- z - lr grad`` or Adam (per-start moments, with the usual bias
        correction).
    batch_groups : array of shape (n_rays,), optional
        Group label of each ray (e.g. its source). If given, each epoch visits the
        groups in a random order (per start) and the rays of a group consecutively, in
        random order, so a mini-batch holds rays of one or two groups. With groups of
        ``batch_size`` rays, every mini-batch is one group: for a shortest-path operator
        one source gather needs one Dijkstra run instead of about one per ray. None
        (default): uniformly random mini-batches.
    linear : bool, default=True
        If True, compute all rays with gradients at every iteration (cheap for a linear
        operator) and track the best iterate at every iteration; else compute the
        mini-batch rays only and track every ``track_every`` iterations.
    track_every : int, default=1
        Cadence of the full-data cost evaluation when ``linear`` is False.
    device : str or torch.device, default="cpu"
        Torch device of the run: the latent vectors, data and weights are placed there,
        and ``decoder`` and ``forward`` receive tensors on it.
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Autocast precision of the decoder; petrophysics, forward and cost are float32.
        "auto" is bfloat16 where ``device`` has native bfloat16 kernels, float32
        elsewhere; "bfloat16" without them warns (emulated, 10-20x slower). On a GPU
        the run's float32 convolutions are full float32, not TF32
        (``skvaeinv._utils.ieee_float32``).
    compile : bool, default=False
        Run the decoder through :func:`torch.compile` (in this process; a few seconds
        of compilation, then about 1.3-1.7x faster iterations for the study's network
        on an AVX-512 CPU, none measured on an AVX2-only one). Needs a C++ compiler on
        the CPU.
    adam_betas : tuple of two floats, default=(0.9, 0.999)
        Adam's decay rates of the first and second moment estimates (used only with
        ``optimizer="adam"``).
    adam_eps : float, default=1e-8
        Adam's constant added to the denominator for numerical stability (used only with
        ``optimizer="adam"``).
    log_every : int, default=0
        Log progress (``logging.INFO``) every this many epochs; 0 = never.
    log_prefix : str, default=""
        Prefix of the log lines.
    progress : bool, default=False
        Show a tqdm progress bar over the iterations (with the best data RMSE).

    Returns
    -------
    EngineResult
        The kept iterate of every start, its cost, divergence flags and the history.
    """
    dev = torch.device(device)
    f32 = torch.float32
    # copies (torch.tensor), so read-only inputs (e.g. memory-mapped by joblib) are fine
    y_t = torch.tensor(np.asarray(y, dtype=np.float32) if not isinstance(y, torch.Tensor)
                       else y.detach(), dtype=f32, device=dev).reshape(-1)
    n_rays = int(y_t.numel())
    z = torch.tensor(np.asarray(z0, dtype=np.float32) if not isinstance(z0, torch.Tensor)
                     else z0.detach(), dtype=f32, device=dev)
    if z.ndim != 2:
        raise ValueError(f"z0 must have shape (n_starts, latent_dim), got {tuple(z.shape)}.")
    n_starts, latent_dim = z.shape
    if len(rngs) != n_starts:
        raise ValueError(f"rngs has {len(rngs)} generators for {n_starts} starts.")
    _check_config(epochs=epochs, batch_size=batch_size, n_rays=n_rays, lr=lr,
                  lr_decay=lr_decay, lr_step=lr_step, reg=reg, reg_weight=reg_weight,
                  reg_decay=reg_decay, optimizer=optimizer, track_every=track_every,
                  ring_radius=ring_radius)
    if reg is None:
        reg_weight = 0.0   # no regulariser: its weight is 0 throughout (0 * decay**k = 0)
    precision = resolve_precision(precision, dev)
    if sample_weight is None:
        w = torch.ones(n_rays, dtype=f32, device=dev)
    else:
        w = torch.tensor(np.asarray(sample_weight, dtype=np.float32), device=dev).reshape(-1)
        if w.numel() != n_rays:
            raise ValueError(f"sample_weight has {w.numel()} values for {n_rays} rays.")
    w_sum = w.sum()
    petro = petrophysics if petrophysics is not None else (lambda m: m)
    chi = chi_mean(latent_dim) if ring_radius is None else float(ring_radius)
    n_batches = -(-n_rays // batch_size)
    n_total = epochs * n_batches
    track_every = 1 if linear else int(track_every)

    # Per-start state, all on the device.
    active = torch.ones(n_starts, dtype=torch.bool, device=dev)
    diverged_at = torch.full((n_starts,), -1, dtype=torch.long, device=dev)
    best_cost = torch.full((n_starts,), math.inf, dtype=f32, device=dev)
    best_sse = torch.full((n_starts,), math.inf, dtype=f32, device=dev)
    best_iter = torch.full((n_starts,), -1, dtype=torch.long, device=dev)
    best_z = z.clone()
    best_x: torch.Tensor | None = None
    nan = torch.tensor(math.nan, dtype=f32, device=dev)
    tiny = torch.finfo(f32).tiny
    h_data = torch.full((n_total, n_starts), math.nan, dtype=f32, device=dev)
    h_batch = torch.full((n_total, n_starts), math.nan, dtype=f32, device=dev)
    h_znorm = torch.full((n_total, n_starts), math.nan, dtype=f32, device=dev)
    h_cost = torch.full((n_total, n_starts), math.nan, dtype=f32, device=dev)
    h_lr = np.full(n_total, np.nan)
    h_reg = np.full(n_total, np.nan)
    h_epoch = np.full(n_total, -1, dtype=np.int64)
    if optimizer == "adam":
        m_adam = torch.zeros_like(z)
        v_adam = torch.zeros_like(z)
        b1, b2 = adam_betas

    def penalty(znorm: torch.Tensor) -> torch.Tensor:
        if reg == "ring":
            return (znorm - chi) ** 2
        if reg == "origin":
            return znorm ** 2
        return torch.zeros_like(znorm)

    run_decoder = torch.compile(decoder) if compile else decoder

    def decode(zz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_context(dev, precision):
            x = run_decoder(zz)
        x = x.to(f32)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        return x, petro(x).reshape(zz.shape[0], -1)

    def track(k: int, zz: torch.Tensor, x: torch.Tensor, sse: torch.Tensor,
              reg_term: torch.Tensor, lam: float) -> torch.Tensor:
        nonlocal best_x, best_cost, best_sse, best_iter, best_z
        cost = sse + lam * reg_term
        better = active & torch.isfinite(cost) & (cost < best_cost)
        if best_x is None:
            best_x = torch.full_like(x, math.nan)
        best_cost = torch.where(better, cost, best_cost)
        best_sse = torch.where(better, sse, best_sse)
        best_iter = torch.where(better, torch.full_like(best_iter, k), best_iter)
        best_z = torch.where(better[:, None], zz, best_z)
        best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x, best_x)
        return cost

    if batch_groups is not None:
        groups = np.unique(np.asarray(batch_groups).reshape(-1), return_inverse=True)[1]
        if groups.size != n_rays:
            raise ValueError(f"batch_groups has {groups.size} labels for {n_rays} rays.")
        n_groups = int(groups.max()) + 1

    def epoch_order(rng: np.random.Generator) -> np.ndarray:
        if batch_groups is None:
            return rng.permutation(n_rays)
        rank = rng.permutation(n_groups)[groups]
        return np.lexsort((rng.random(n_rays), rank))

    it = 0
    interrupted = False
    bar = tqdm(total=n_total, desc=log_prefix.rstrip(": ") or "latent SGD", unit="it",
               leave=False, disable=not progress)
    try:
        with ieee_float32(dev):   # no TF32 convolutions on a GPU
            for epoch in range(epochs):
                orders = torch.from_numpy(np.stack([epoch_order(rng) for rng in rngs])).to(dev)
                lr_e = learning_rate(lr, lr_decay, lr_step, epoch)
                for j in range(n_batches):
                    lam = reg_weight_at(reg_weight, reg_decay, it)
                    idx = orders[:, j * batch_size:(j + 1) * batch_size]
                    tracked = linear or (it % track_every == 0)
                    zr = z.detach().requires_grad_(True)
                    x, s = decode(zr)
                    # a non-finite model must not reach the forward operator (a CPU physics
                    # code may reject the whole batch): its start is flagged below
                    s_ok = torch.isfinite(s).all(1)
                    s = torch.where(s_ok[:, None], s, torch.ones_like(s))
                    if linear:
                        r_all = forward(s, None) - y_t
                        r_b = r_all.gather(1, idx)
                        sse = (w * r_all.detach() ** 2).sum(1)
                    else:
                        r_b = forward(s, idx) - y_t[idx]
                    w_b = w[idx]
                    batch_sse = (w_b * r_b ** 2).sum(1)
                    znorm = torch.linalg.vector_norm(zr, dim=1)
                    reg_term = penalty(znorm)
                    total = torch.where(active, batch_sse + lam * reg_term,
                                        torch.zeros_like(batch_sse)).sum()
                    (grad,) = torch.autograd.grad(total, zr)
                    with torch.no_grad():
                        reg_term = reg_term.detach()
                        batch_sse = batch_sse.detach()
                        if not linear and tracked:
                            sse = (w * (forward(s.detach(), None) - y_t) ** 2).sum(1)
                        # (a finite z whose norm overflows float32 has diverged too)
                        ok = (s_ok & torch.isfinite(batch_sse) & torch.isfinite(grad).all(1)
                              & torch.isfinite(znorm.detach()))
                        if tracked:
                            ok &= torch.isfinite(sse)
                        newly = active & ~ok
                        diverged_at = torch.where(newly, torch.full_like(diverged_at, it),
                                                  diverged_at)
                        active = active & ok
                        # a batch whose weights are all zero has zero (weighted) misfit
                        h_batch[it] = torch.where(
                            active, torch.sqrt(batch_sse / w_b.sum(1).clamp_min(tiny)), nan)
                        h_znorm[it] = torch.where(active, znorm.detach(), nan)
                        if tracked:
                            cost = track(it, zr.detach(), x.detach(), sse, reg_term, lam)
                            h_data[it] = torch.where(active, torch.sqrt(sse / w_sum), nan)
                            h_cost[it] = torch.where(active, cost, nan)
                        # update
                        if optimizer == "sgd":
                            z_new = zr.detach() - lr_e * grad
                        else:
                            m_new = b1 * m_adam + (1 - b1) * grad
                            v_new = b2 * v_adam + (1 - b2) * grad ** 2
                            t = it + 1
                            step = lr_e * (m_new / (1 - b1 ** t)) / (
                                torch.sqrt(v_new / (1 - b2 ** t)) + adam_eps)
                            z_new = zr.detach() - step
                            keep = active[:, None]
                            m_adam = torch.where(keep, m_new, m_adam)
                            v_adam = torch.where(keep, v_new, v_adam)
                        ok = torch.isfinite(torch.linalg.vector_norm(z_new, dim=1))   # and z
                        newly = active & ~ok
                        diverged_at = torch.where(newly, torch.full_like(diverged_at, it),
                                                  diverged_at)
                        active = active & ok
                        z = torch.where(active[:, None], z_new, zr.detach())
                    h_lr[it] = lr_e
                    h_reg[it] = lam
                    h_epoch[it] = epoch
                    it += 1
                    bar.update(1)
                if progress:
                    bar.set_postfix(best_rmse=f"{float(_best_rmse(best_sse, w_sum).min()):.3g}")
                if log_every and (epoch + 1) % log_every == 0:
                    _log_progress(log_prefix, epoch, epochs, it, lr_e, lam, best_sse, w_sum,
                                  active)
                if not bool(active.any()):
                    logger.warning("%sall %d starts diverged (the last at iteration %d); "
                                   "stopping.", log_prefix, n_starts, int(diverged_at.max()))
                    break
            # final iterate (after the last update)
            with torch.no_grad():
                lam = reg_weight_at(reg_weight, reg_decay, it)
                x, s = decode(z)
                s_ok = torch.isfinite(s).all(1)
                s = torch.where(s_ok[:, None], s, torch.ones_like(s))
                sse = (w * (forward(s, None) - y_t) ** 2).sum(1)
                ok = s_ok & torch.isfinite(sse)
                diverged_at = torch.where(active & ~ok, torch.full_like(diverged_at, it),
                                          diverged_at)
                active = active & ok
                track(it, z, x, sse, penalty(torch.linalg.vector_norm(z, dim=1)), lam)
    except KeyboardInterrupt:
        interrupted = True
        bar.close()
        logger.warning("%sinterrupted at iteration %d of %d; keeping the results so far.",
                       log_prefix, it, n_total)

    bar.close()
    if best_x is None:  # interrupted before anything was tracked
        with torch.no_grad():
            shape = decode(z[:1])[0].shape[1:]
        best_x = torch.full((n_starts, *shape), math.nan, dtype=f32, device=dev)
    h = slice(0, it)
    history = SGDHistory(
        data_rmse=h_data[h].T.cpu().numpy(), batch_rmse=h_batch[h].T.cpu().numpy(),
        z_norm=h_znorm[h].T.cpu().numpy(), cost=h_cost[h].T.cpu().numpy(),
        lr=h_lr[h], reg_weight=h_reg[h], epoch=h_epoch[h])
    data_rmse = torch.sqrt(best_sse / w_sum)
    return EngineResult(
        models=best_x.cpu().numpy(),
        latents=best_z.cpu().numpy(),
        data_rmse=data_rmse.cpu().numpy().astype(np.float64),
        cost=best_cost.cpu().numpy().astype(np.float64),
        best_iteration=best_iter.cpu().numpy(),
        final_latents=z.detach().cpu().numpy(),
        diverged=(diverged_at >= 0).cpu().numpy(),
        diverged_at=diverged_at.cpu().numpy(),
        n_iter=it,
        interrupted=interrupted,
        history=history,
    )


def _best_rmse(best_sse: torch.Tensor, w_sum: torch.Tensor) -> torch.Tensor:
    """Weighted RMSE of the kept iterates (inf where none yet)."""
    return torch.sqrt(best_sse / w_sum)


def _log_progress(prefix: str, epoch: int, epochs: int, it: int, lr: float, lam: float,
                  best_sse: torch.Tensor, w_sum: torch.Tensor, active: torch.Tensor) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    rmse = _best_rmse(best_sse, w_sum).cpu().numpy()
    finite = rmse[np.isfinite(rmse)]
    best = float(finite.min()) if finite.size else math.nan
    median = float(np.median(finite)) if finite.size else math.nan
    logger.info("%sepoch %d/%d (iteration %d): lr=%.3g, reg weight=%.3g, kept data RMSE "
                "min %.4g median %.4g, %d/%d starts active", prefix, epoch + 1, epochs, it,
                lr, lam, best, median, int(active.sum()), active.numel())
