"""The data misfit of latent vectors: decoder, petrophysics and forward operator.

One object, :class:`LatentObjective`, turns a batch of latent vectors into facies images,
slowness and traveltime residuals. The SGD step and any other loop over latent vectors
(e.g. a sampler's) use it, so the decoding and weighting are written once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from skvaeinv._device import autocast_context

__all__ = ["ForwardCallable", "LatentObjective", "Decoded", "as_device_tensor"]

#: ``forward(slowness (B, N), ray_index (B, k) or None) -> traveltimes (B, k)``.
ForwardCallable = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def as_device_tensor(values: np.ndarray | torch.Tensor, device: torch.device
                     ) -> torch.Tensor:
    """A float32 copy of ``values`` on ``device`` (read-only inputs are fine).

    Parameters
    ----------
    values : array-like or torch.Tensor
        The values.
    device : torch.device
        Where the copy lives.

    Returns
    -------
    torch.Tensor
        A new float32 tensor, detached from any graph.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach()
    else:
        values = np.asarray(values, dtype=np.float32)
    return torch.tensor(values, dtype=torch.float32, device=device)


class Decoded:
    """Images and slowness decoded from a batch of latent vectors.

    Parameters
    ----------
    images : torch.Tensor of shape (B, ...)
        Facies images, float32.
    slowness : torch.Tensor of shape (B, N)
        Slowness of each image, with the rows of non-finite models replaced by ones
        (a non-finite model must not reach a forward operator, which may reject the
        whole batch).
    finite : torch.Tensor of shape (B,)
        Whether each model's slowness was finite.
    """

    __slots__ = ("images", "slowness", "finite")

    def __init__(self, images: torch.Tensor, slowness: torch.Tensor,
                 finite: torch.Tensor) -> None:
        self.images = images
        self.slowness = slowness
        self.finite = finite


class LatentObjective:
    """Weighted traveltime residuals of the models decoded from latent vectors.

    Parameters
    ----------
    decoder : callable
        Maps a float32 tensor ``(B, latent_dim)`` to images ``(B, H, W)`` or
        ``(B, 1, H, W)``, differentiably.
    forward : callable
        ``forward(slowness (B, N), ray_index (B, k) or None) -> (B, k)``, the
        :class:`skvaeinv.forward.TorchForward` contract.
    y : array-like of shape (n_rays,)
        Observed traveltimes.
    device : torch.device
        Where the data live and the arithmetic runs.
    petrophysics : callable or None, default=None
        Facies to slowness on torch tensors; identity if None.
    sample_weight : array-like of shape (n_rays,) or None, default=None
        Weights of the squared residuals, used as given.
    precision : {"float32", "bfloat16"}, default="float32"
        Autocast precision of the decoder (resolved); the rest runs in float32.
    compile : bool, default=False
        Run the decoder through :func:`torch.compile`.
    time_shift : bool, default=False
        Residuals have a constant time shift profiled out: each model's residuals minus
        their weighted mean over the rays they are computed for (the least-squares
        shift; :meth:`time_shift` gives it). With a flat prior on the shift, the
        Gaussian likelihood marginalised over it has this misfit too.

    Raises
    ------
    ValueError
        If ``sample_weight`` does not have one value per ray.
    """

    def __init__(self, decoder: Callable[[torch.Tensor], torch.Tensor],
                 forward: ForwardCallable, y: np.ndarray | torch.Tensor,
                 device: torch.device, *,
                 petrophysics: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 sample_weight: np.ndarray | None = None, precision: str = "float32",
                 compile: bool = False, time_shift: bool = False) -> None:
        self.device = torch.device(device)
        self.decoder = torch.compile(decoder) if compile else decoder
        self.forward = forward
        self.petrophysics = petrophysics
        self.precision = precision
        self.y = as_device_tensor(y, self.device).reshape(-1)
        n_rays = self.n_rays
        if sample_weight is None:
            self.w = torch.ones(n_rays, dtype=torch.float32, device=self.device)
        else:
            self.w = as_device_tensor(sample_weight, self.device).reshape(-1)
            if self.w.numel() != n_rays:
                raise ValueError(f"sample_weight has {self.w.numel()} values for "
                                 f"{n_rays} rays.")
        self.w_sum = self.w.sum()
        self.time_shift = bool(time_shift)

    @property
    def n_rays(self) -> int:
        """Number of observed traveltimes."""
        return int(self.y.numel())

    def decode(self, z: torch.Tensor) -> Decoded:
        """Images and slowness of latent vectors ``z`` (differentiable).

        Parameters
        ----------
        z : torch.Tensor of shape (B, latent_dim)
            Latent vectors.

        Returns
        -------
        Decoded
            Float32 images ``(B, H, W)``, slowness ``(B, N)`` and its finiteness.
        """
        with autocast_context(self.device, self.precision):
            x = self.decoder(z)
        x = x.to(torch.float32)
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        s = x if self.petrophysics is None else self.petrophysics(x)
        s = s.reshape(z.shape[0], -1)
        finite = torch.isfinite(s).all(1)
        return Decoded(x, torch.where(finite[:, None], s, torch.ones_like(s)), finite)

    def residuals(self, slowness: torch.Tensor,
                  ray_index: torch.Tensor | None = None) -> torch.Tensor:
        """Computed minus observed traveltimes.

        Parameters
        ----------
        slowness : torch.Tensor of shape (B, N)
            Slowness models.
        ray_index : torch.Tensor of shape (B, k) or None, default=None
            Rays of each model; None means all rays.

        Returns
        -------
        torch.Tensor of shape (B, k) or (B, n_rays)
            Residuals, differentiable w.r.t. ``slowness``; with ``time_shift``, minus
            their weighted mean over these rays.
        """
        if ray_index is None:
            r = self.forward(slowness, None) - self.y
        else:
            r = self.forward(slowness, ray_index) - self.y[ray_index]
        if self.time_shift:
            r = r - self.shift_of(r, ray_index)[:, None]
        return r

    def shift_of(self, residuals: torch.Tensor,
                 ray_index: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted mean of each model's residuals: minus its best time shift.

        Parameters
        ----------
        residuals : torch.Tensor of shape (B, k)
            Computed minus observed times of rays ``ray_index`` (all when None).
        ray_index : torch.Tensor of shape (B, k) or None, default=None
            Their rays.

        Returns
        -------
        torch.Tensor of shape (B,)
            ``sum_j w_j r_j / sum_j w_j`` (0 where the weights sum to 0).
        """
        w = self.w if ray_index is None else self.w[ray_index]
        w = w.expand_as(residuals)
        return (w * residuals).sum(1) / w.sum(1).clamp_min(torch.finfo(torch.float32).tiny)

    @torch.no_grad()
    def time_shift_of(self, slowness: torch.Tensor) -> torch.Tensor:
        """The least-squares constant time shift of each model, over all rays.

        Parameters
        ----------
        slowness : torch.Tensor of shape (B, N)
            Slowness models.

        Returns
        -------
        torch.Tensor of shape (B,)
            The shift ``t0`` (ns) that, added to the models' traveltimes, fits the data
            best: ``sum_j w_j (y_j - f_j) / sum_j w_j``.
        """
        return -self.shift_of(self.forward(slowness, None) - self.y)

    def weighted_sse(self, residuals: torch.Tensor,
                     ray_index: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted sum of squared residuals of each model.

        Parameters
        ----------
        residuals : torch.Tensor of shape (B, k)
            Residuals of rays ``ray_index`` (all rays when None).
        ray_index : torch.Tensor of shape (B, k) or None, default=None
            Their rays.

        Returns
        -------
        torch.Tensor of shape (B,)
            ``sum_j w_j r_j²``.
        """
        w = self.w if ray_index is None else self.w[ray_index]
        return (w * residuals ** 2).sum(1)

    def rmse(self, sse: torch.Tensor) -> torch.Tensor:
        """Weighted RMSE over all rays from the weighted sum of squares.

        Parameters
        ----------
        sse : torch.Tensor of shape (B,)
            Weighted sums of squared residuals over all rays.

        Returns
        -------
        torch.Tensor of shape (B,)
            ``sqrt(sse / sum(w))``.
        """
        return torch.sqrt(sse / self.w_sum)
