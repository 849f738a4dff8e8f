"""Training of the VAE: networks, Adam, the loss, the epoch loop and the chunked stream.

:class:`~skvaeinv.VAEPrior` ``fit`` and ``partial_fit`` run their epochs through one
:class:`Trainer`; :func:`train_in_chunks` streams chunks of fresh images through
``partial_fit``, seeded per chunk and optionally checkpointed after each (the command
line's ``train-prior`` runs it).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .._networks import Decoder, Encoder
from .._device import autocast_context

__all__ = ["TrainingSetup", "Trainer", "build_networks", "make_optimizer", "chunk_seed",
           "cosine_lr", "train_in_chunks", "CHUNK_SEED_STRIDE"]

logger = logging.getLogger(__name__)

#: Default ``stride`` of :func:`chunk_seed` (the committed priors were trained with it).
CHUNK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class TrainingSetup:
    """The settings of one ``fit`` or ``partial_fit`` call, resolved at its start.

    Parameters
    ----------
    device : torch.device
        Where the networks live.
    precision : {"float32", "bfloat16"}
        Arithmetic of the forward pass (resolved: never "auto").
    beta : float
        Weight of the KL term.
    batch_size : int
        Images per gradient step.
    compile : bool
        Compile the loss with :func:`torch.compile`.
    verbose : int
        If > 0, show a progress bar.
    """

    device: torch.device
    precision: str
    beta: float
    batch_size: int
    compile: bool
    verbose: int


class TrainingRecord(Protocol):
    """What training advances: the fitted counters of a :class:`~skvaeinv.VAEPrior`."""

    loss_curve_: list[float]
    n_iter_: int
    n_batches_: int
    n_images_seen_: int


def build_networks(image_shape: tuple[int, int], architecture: dict, device: torch.device,
                   seed: int | None = None) -> tuple[Encoder, Decoder]:
    """The encoder and decoder for images of ``image_shape``, on ``device``.

    Parameters
    ----------
    image_shape : tuple of int
        (H, W) of the images.
    architecture : dict
        ``latent_dim``, ``base_channels`` and ``hidden_units``.
    device : torch.device
        Where the networks go.
    seed : int or None, default=None
        Seed of the initial weights, drawn on the CPU from torch's CPU generator
        (None: unseeded, for weights about to be overwritten). The generator's state
        is restored after, so torch's global random state is left as it was.

    Returns
    -------
    encoder, decoder : Encoder, Decoder
        The networks.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        encoder = Encoder(image_shape, **architecture).to(device)
        decoder = Decoder(image_shape, **architecture).to(device)
    return encoder, decoder


def make_optimizer(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over ``params``, as one fused kernel where torch has one for the device.

    torch versions that fuse only on CUDA fall back to the plain implementation.

    Parameters
    ----------
    params : list of torch.nn.Parameter
        The weights.
    lr : float
        Learning rate.

    Returns
    -------
    optimizer : torch.optim.Adam
        The optimizer.
    """
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:
        return torch.optim.Adam(params, lr=lr)


class Trainer:
    """Adam over a VAE's two networks, and the random streams of its batches.

    Parameters
    ----------
    encoder : Encoder
        The encoder (trained in place).
    decoder : Decoder
        The decoder (trained in place).
    lr : float
        Adam's learning rate.
    rng : numpy.random.RandomState
        Source of the batch order.
    noise_seed : int
        Seed of the reparameterisation noise (a torch generator on the device).

    Attributes
    ----------
    optimizer : torch.optim.Adam
        Adam over both networks; its moments live as long as the trainer.
    precision : str
        Arithmetic of the current call, from its :class:`TrainingSetup`.
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, *, lr: float,
                 rng: np.random.RandomState, noise_seed: int) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.device = next(decoder.parameters()).device
        self.latent_dim = int(decoder.architecture["latent_dim"])
        self.optimizer = make_optimizer(list(encoder.parameters())
                                        + list(decoder.parameters()), lr)
        self.rng = rng
        self.noise = torch.Generator(device=self.device)
        self.noise.manual_seed(noise_seed)
        self.precision = "float32"
        self._compiled: Callable | None = None

    def set_lr(self, lr: float) -> None:
        """Use learning rate ``lr`` from the next step on.

        Parameters
        ----------
        lr : float
            The learning rate.
        """
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def loss_terms(self, x: torch.Tensor, eps: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed squared error and mean KL of a batch, in float32.

        Parameters
        ----------
        x : torch.Tensor of shape (B, H, W)
            Images.
        eps : torch.Tensor of shape (B, latent_dim) or None
            Standard normal noise of the reparameterisation; None decodes the means.

        Returns
        -------
        sse : torch.Tensor
            Sum over images and pixels of the squared reconstruction error.
        kl : torch.Tensor
            Mean over images and latent dimensions of ``KL(q(z|x) || N(0, 1))``.
        """
        with autocast_context(self.device, self.precision):
            mean, logvar = self.encoder(x)
            z = mean if eps is None else mean + eps * torch.exp(0.5 * logvar)
            recon = self.decoder(z)
        mean, logvar = mean.float(), logvar.float()
        sse = ((recon.float() - x) ** 2).sum()
        kl = (-0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp())).mean()
        return sse, kl

    def _loss_fn(self, compile: bool) -> Callable:
        """:meth:`loss_terms`, compiled once (and kept) if ``compile``."""
        if not compile:
            return self.loss_terms
        if self._compiled is None:
            self._compiled = torch.compile(self.loss_terms)
        return self._compiled

    def train(self, X: np.ndarray, epochs: int, setup: TrainingSetup,
              record: TrainingRecord) -> None:
        """Run ``epochs`` passes over ``X``, advancing ``record``'s counters.

        Parameters
        ----------
        X : ndarray of shape (n_images, H, W)
            float32 images in [0, 1].
        epochs : int
            Passes over ``X``.
        setup : TrainingSetup
            Settings of this call.
        record : TrainingRecord
            The estimator whose ``n_batches_`` and ``n_images_seen_`` advance after
            each step and ``loss_curve_`` and ``n_iter_`` after each epoch.

        Raises
        ------
        FloatingPointError
            If a batch's loss is not finite (the weights of the last finite step stay).
        """
        self.precision = setup.precision
        bar = tqdm(total=epochs * X.shape[0], unit="img", desc="VAEPrior", leave=False,
                   disable=not setup.verbose)
        try:
            for _ in range(epochs):
                self._epoch(X, setup, record, bar)
        finally:
            bar.close()
            self.optimizer.zero_grad(set_to_none=True)   # no stale gradients kept
        self.encoder.eval()
        self.decoder.eval()

    def _epoch(self, X: np.ndarray, setup: TrainingSetup, record: TrainingRecord,
               bar: Any) -> None:
        """One pass over ``X`` in a random order of batches."""
        self.encoder.train()
        self.decoder.train()
        n = X.shape[0]
        order = self.rng.permutation(n)
        loss_fn = self._loss_fn(setup.compile)
        total = 0.0
        for start in range(0, n, setup.batch_size):
            idx = np.sort(order[start:start + setup.batch_size])
            loss = self._step(loss_fn, X[idx], setup, record.n_batches_)
            total += loss
            record.n_batches_ += 1
            record.n_images_seen_ += len(idx)
            bar.update(len(idx))
            bar.set_postfix(loss=f"{loss / len(idx):.1f}")
        record.loss_curve_.append(total / n)
        record.n_iter_ += 1
        logger.debug("epoch %d: loss per image %.3f", record.n_iter_, total / n)

    def _step(self, loss_fn: Callable, images: np.ndarray, setup: TrainingSetup,
              batch: int) -> float:
        """One Adam step on a batch of images; its loss (summed over the batch)."""
        x = torch.from_numpy(images).to(self.device)
        eps = torch.randn((len(images), self.latent_dim), generator=self.noise,
                          device=self.device)
        sse, kl = loss_fn(x, eps)
        loss = sse + setup.beta * kl
        if not torch.isfinite(loss):
            hint = ("lower lr or use precision='float32'" if setup.precision == "bfloat16"
                    else "lower lr")
            raise FloatingPointError(
                f"VAE training diverged (loss={loss.item()}) at batch {batch}; {hint}.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()


def chunk_seed(seed: int, chunk: int, stride: int = CHUNK_SEED_STRIDE) -> int:
    """Seed of the training images of chunk ``chunk`` of a run seeded with ``seed``.

    ``seed * stride + chunk``, folded into numpy's seed range ``[0, 2**32)``.

    Parameters
    ----------
    seed : int
        Seed of the run.
    chunk : int
        Index of the chunk, counted from the start of training.
    stride : int, default=1_000_003
        Multiplier of ``seed`` (the shipped demo prior used 7,919).

    Returns
    -------
    seed : int
        The chunk's seed.

    Examples
    --------
    >>> chunk_seed(3, 2)
    3000011
    """
    return (int(seed) * int(stride) + int(chunk)) % 2**32


def cosine_lr(lr: float, final_lr: float, start: int, stop: int) -> Callable[[int], float]:
    """A cosine learning-rate schedule over a stretch of a training run.

    The rate falls from ``lr`` at ``start`` images seen to ``final_lr`` at ``stop``,
    along half a cosine period, and stays at ``final_lr`` after ``stop``.

    Parameters
    ----------
    lr : float
        Rate at ``start`` (> 0).
    final_lr : float
        Rate at ``stop`` and after (> 0, at most ``lr``).
    start : int
        Images seen where the schedule begins (>= 0).
    stop : int
        Images seen where it ends (> ``start``).

    Returns
    -------
    schedule : callable
        ``schedule(n_seen)``: the learning rate once ``n_seen`` images have been seen.

    Raises
    ------
    ValueError
        If the rates or the stretch are out of range.

    Examples
    --------
    >>> schedule = cosine_lr(1e-3, 1e-5, 0, 100)
    >>> schedule(0), round(schedule(50), 6), schedule(100), schedule(500)
    (0.001, 0.000505, 1e-05, 1e-05)
    """
    if not (lr > 0 and 0 < final_lr <= lr):
        raise ValueError(f"cosine_lr: expected 0 < final_lr <= lr, got lr={lr}, "
                         f"final_lr={final_lr}.")
    if not 0 <= start < stop:
        raise ValueError(f"cosine_lr: expected 0 <= start < stop, got start={start}, "
                         f"stop={stop}.")

    def schedule(n_seen: int) -> float:
        progress = min(max((n_seen - start) / (stop - start), 0.0), 1.0)
        return float(final_lr + 0.5 * (lr - final_lr) * (1.0 + np.cos(np.pi * progress)))

    return schedule


def train_in_chunks(prior: Any, images: Callable[[int, int], np.ndarray], n_images: int, *,
                    chunk_size: int, seed: int,
                    checkpoint: str | os.PathLike | None = None,
                    lr_schedule: Callable[[int], float] | None = None) -> Any:
    """Train ``prior`` by ``partial_fit`` on chunks of fresh images up to ``n_images``.

    Chunk ``k`` (counted from the start of training, so that a resumed prior goes on
    with the chunk after the last one it finished) holds
    ``min(chunk_size, n_images - prior.n_images_seen_)`` images, drawn by
    ``images(n, chunk_seed(seed, k))``. A prior that has seen ``n_images`` already is
    left as it is.

    Parameters
    ----------
    prior : VAEPrior
        Unfitted, or fitted (then training continues).
    images : callable
        ``images(n, seed)`` returns ``n`` images of the prior's shape.
    n_images : int
        Images to have seen in all.
    chunk_size : int
        Images per ``partial_fit`` call (held in memory at once).
    seed : int
        Seed of the run (:func:`chunk_seed`).
    checkpoint : str, path-like or None, default=None
        File that ``prior.save`` writes after each chunk (its folder is created).
    lr_schedule : callable or None, default=None
        ``lr_schedule(n_seen)`` gives the Adam learning rate of the next chunk from the
        images seen before it (e.g. :func:`cosine_lr`); it is set with
        ``prior.set_params(lr=...)``, so a checkpoint records the rate of its last
        chunk. None keeps ``prior.lr``.

    Returns
    -------
    prior : VAEPrior
        The trained prior.
    """
    start = getattr(prior, "n_images_seen_", 0)
    chunk = start // chunk_size
    t0 = time.perf_counter()
    while (seen := getattr(prior, "n_images_seen_", 0)) < n_images:
        if lr_schedule is not None:
            prior.set_params(lr=float(lr_schedule(seen)))
        prior.partial_fit(images(min(chunk_size, n_images - seen), chunk_seed(seed, chunk)))
        chunk += 1
        if checkpoint is not None:
            Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
            prior.save(checkpoint)
        elapsed = time.perf_counter() - t0
        logger.info("%d / %d images, lr %.3g, loss per image %.1f, %.0f img/s, %.0f s",
                    prior.n_images_seen_, n_images, prior.lr, prior.loss_curve_[-1],
                    (prior.n_images_seen_ - start) / elapsed, elapsed)
    return prior
