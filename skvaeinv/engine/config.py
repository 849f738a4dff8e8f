"""The frozen configuration of a latent SGD run, validated once when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skvaeinv.engine.schedules import learning_rate, reg_weight_at

__all__ = ["SGDConfig", "FLOAT32_MAX"]

#: Largest finite float32: the schedules run in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class SGDConfig:
    """Everything that defines a latent SGD run but its data and starts.

    Made once at the public boundary (the estimator's ``fit``, or a direct caller of
    :func:`~skvaeinv.engine.run_latent_sgd`) and validated on construction: the layers
    below trust it.

    Parameters
    ----------
    n_rays : int
        Number of data (rays) of the run; an epoch visits each once.
    epochs : int, default=120
        Number of epochs.
    batch_size : int, default=25
        Rays per mini-batch, in ``[1, n_rays]``; an epoch has
        ``ceil(n_rays / batch_size)`` mini-batches (the last one smaller when
        ``batch_size`` does not divide ``n_rays``).
    lr : float, default=1e-2
        Learning rate of the first epoch.
    lr_decay : float, default=0.95
        Factor of the learning rate every ``lr_step`` epochs.
    lr_step : int, default=1
        Epochs between two learning-rate decays.
    reg : {"ring", "origin"} or None, default="ring"
        Regulariser ``R(z)``: ``(||z|| - r)²``, ``||z||²`` or none (then its weight is
        0 throughout, whatever ``reg_weight`` says).
    reg_weight : float, default=10.0
        Regularisation weight ``λ_0`` of the first iteration.
    reg_decay : float, default=0.999
        ``λ_k = reg_weight * reg_decay ** k``.
    ring_radius : float or None, default=None
        Radius ``r`` of the ring; None means ``E[χ_n]`` for the latent size.
    optimizer : {"sgd", "adam"}, default="sgd"
        Plain ``z <- z - lr grad`` (:class:`~skvaeinv.engine.step.PlainSGD`) or
        :class:`torch.optim.Adam` (per-start moments).
    adam_betas : tuple of two floats, default=(0.9, 0.999)
        Adam's moment decay rates.
    adam_eps : float, default=1e-8
        Adam's denominator constant.
    linear : bool, default=True
        Compute all rays at every iteration and track the best iterate at every one
        (cheap for a linear operator); else only the mini-batch rays, tracking every
        ``track_every`` iterations.
    track_every : int, default=1
        Cadence of the full-data cost when ``linear`` is False.
    precision : {"float32", "bfloat16"}, default="float32"
        Autocast precision of the decoder, already resolved for the device.
    compile : bool, default=False
        Run the decoder through :func:`torch.compile`.
    time_shift : bool, default=False
        Fit a constant time shift (e.g. radar's zero-time error) with the latent code:
        the misfit is that of the residuals minus their weighted mean (the shift that
        fits best, profiled out in closed form), per mini-batch and over all rays.
    log_every : int, default=0
        Log progress every this many epochs; 0 = never.
    progress : bool, default=False
        Show a progress bar over the iterations.

    Attributes
    ----------
    n_batches : int
        Mini-batches per epoch.
    n_iter : int
        Iterations of the whole run.

    Raises
    ------
    ValueError
        If a value is out of its range, or a schedule leaves the float32 range within
        the run.
    """

    n_rays: int
    epochs: int = 120
    batch_size: int = 25
    lr: float = 1e-2
    lr_decay: float = 0.95
    lr_step: int = 1
    reg: str | None = "ring"
    reg_weight: float = 10.0
    reg_decay: float = 0.999
    ring_radius: float | None = None
    optimizer: str = "sgd"
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    linear: bool = True
    track_every: int = 1
    precision: str = "float32"
    compile: bool = False
    time_shift: bool = False
    log_every: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        self._check_ranges()
        self._check_float32_schedules()

    @property
    def n_batches(self) -> int:
        """Mini-batches per epoch, ``ceil(n_rays / batch_size)``."""
        return -(-self.n_rays // self.batch_size)

    @property
    def n_iter(self) -> int:
        """Iterations of the whole run, ``epochs * n_batches``."""
        return self.epochs * self.n_batches

    @property
    def tracking_cadence(self) -> int:
        """Iterations between two full-data cost evaluations (1 when linear)."""
        return 1 if self.linear else self.track_every

    def reg_weight_at(self, iteration: int) -> float:
        """``λ_k`` of iteration ``k`` (0 throughout without a regulariser).

        Parameters
        ----------
        iteration : int
            Iteration ``k`` (0-based).

        Returns
        -------
        float
            The regularisation weight of that iteration.
        """
        if self.reg is None:
            return 0.0
        return reg_weight_at(self.reg_weight, self.reg_decay, iteration)

    def _check_ranges(self) -> None:
        n = self.n_rays
        checks = [
            ("n_rays", n, _is_int(n) and n >= 1, "an int >= 1"),
            ("epochs", self.epochs, _is_int(self.epochs) and self.epochs >= 1,
             "an int >= 1"),
            ("batch_size", self.batch_size,
             _is_int(self.batch_size) and 1 <= self.batch_size <= n,
             f"an int in [1, n_rays={n}]"),
            ("lr", self.lr, self.lr > 0, "a positive float"),
            ("lr_decay", self.lr_decay, self.lr_decay > 0, "a positive float"),
            ("lr_step", self.lr_step, _is_int(self.lr_step) and self.lr_step >= 1,
             "an int >= 1"),
            ("reg", self.reg, self.reg in ("ring", "origin", None),
             "'ring', 'origin' or None"),
            ("reg_weight", self.reg_weight, self.reg_weight >= 0, "a float >= 0"),
            ("reg_decay", self.reg_decay, self.reg_decay > 0, "a positive float"),
            ("optimizer", self.optimizer, self.optimizer in ("sgd", "adam"),
             "'sgd' or 'adam'"),
            ("track_every", self.track_every,
             _is_int(self.track_every) and self.track_every >= 1, "an int >= 1"),
            ("ring_radius", self.ring_radius, self.ring_radius is None
             or (math.isfinite(self.ring_radius) and self.ring_radius > 0),
             "None or a positive float"),
            ("precision", self.precision, self.precision in ("float32", "bfloat16"),
             "'float32' or 'bfloat16' (resolve 'auto' for the device first)"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}={value!r} is invalid; expected {expected}.")

    def _check_float32_schedules(self) -> None:
        # the schedules run in float32: their start values must be in range, and a
        # decay factor above 1, which grows its schedule, must keep it there to the end
        # (the regularisation weight only matters with a regulariser)
        schedules = [("lr", self.lr, "lr_decay", self.lr_decay, "learning rate",
                      learning_rate(self.lr, self.lr_decay, self.lr_step, self.epochs - 1))]
        if self.reg is not None:
            schedules.append(("reg_weight", self.reg_weight, "reg_decay", self.reg_decay,
                              "regularisation weight", self.reg_weight_at(self.n_iter)))
        for start_name, start, name, value, what, last in schedules:
            if not start <= FLOAT32_MAX:
                raise ValueError(
                    f"{start_name}={start!r} is beyond the float32 range the inversion "
                    f"runs in (max {FLOAT32_MAX:.7g}); use a smaller {start_name}.")
            if not last <= FLOAT32_MAX:
                raise ValueError(
                    f"{name}={value!r} makes the {what} grow beyond the float32 range "
                    f"(max {FLOAT32_MAX:.7g}) within the run's {self.n_iter} iterations "
                    f"(it would reach {last:.7g}); use {name} <= 1, or a value closer "
                    "to 1.")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
