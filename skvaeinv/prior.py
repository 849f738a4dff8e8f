"""The learned pattern prior: a variational autoencoder as a scikit-learn transformer."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import logging
import numbers
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from skvaeinv import _density
from skvaeinv._networks import Decoder, Encoder
from skvaeinv._utils import (as_real_array, autocast_context, check_finite, ieee_float32, int_pair,
                             resolve_device, resolve_precision)
from skvaeinv.metrics import _max_relative_error, two_point_probability

__all__ = ["VAEPrior"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2   # 2: the latent density may be a kernel density (tied)

#: Rows per batch of ``transform``, ``inverse_transform`` and ``score_samples``. On a
#: CPU small batches stay in the cache: with 64 rows the reference network decodes and
#: encodes 1.3-1.5x faster than with 256 (``benchmarks/results/prior_batches.md``).
#: GPUs take larger ones.
_CPU_ROWS = 64
_DEVICE_ROWS = 256


class VAEPrior(TransformerMixin, BaseEstimator):
    """Variational autoencoder prior for images of geological patterns.

    Learns a ``latent_dim``-dimensional representation of binary (or continuous) facies
    images in [0, 1] -- typically random crops of a training image -- with a standard
    normal prior ``p(z) = N(0, I)``. The decoder ``g(z)`` is the generator used by
    :class:`~skvaeinv.LatentInverter` to keep inverted models on the pattern manifold.

    For 129 x 65 images the network is exactly the one of the reference study
    (Lopez-Alvis et al., 2021): four strided convolutions (32, 64, 128, 256 channels,
    kernels 5, 5, 4, 4) with instance normalisation and ReLU, a 512-unit layer and a
    mirrored transposed-convolution decoder with a sigmoid output. Other shapes are
    zero-padded to the next valid size (see ``skvaeinv._networks``).

    Parameters
    ----------
    latent_dim : int, default=20
        Number of latent dimensions ``n``.
    beta : float, default=1000.0
        Weight of the KL term. The loss of a batch is the *sum* over images and pixels of
        the squared reconstruction error plus ``beta`` times the *mean* over images and
        latent dimensions of ``KL(q(z|x) || N(0, 1))`` -- the convention of the reference
        study, where ``beta = 1000`` balances 8,385-pixel images against 20 latent
        dimensions. Larger values give smoother, more Gaussian latent spaces and blurrier
        reconstructions.
    epochs : int, default=10
        Passes over ``X`` in :meth:`fit`.
    batch_size : int, default=100
        Images per gradient step.
    lr : float, default=1e-3
        Adam learning rate.
    image_shape : tuple of int or None, default=None
        (H, W) of the images. Needed only when ``X`` is given flat as ``(n, H*W)``.
    base_channels : int, default=32
        Channels of the first convolution (doubled at each of the four layers). The
        reference network uses 32; smaller values give fast toy priors.
    hidden_units : int, default=512
        Width of the fully connected layer (reference: 512).
    device : str, default="auto"
        Torch device for training and encoding/decoding: "auto" (CUDA if available, else
        CPU), "cpu", "cuda" or "cuda:N".
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Arithmetic for training. "bfloat16" uses autocast (mixed precision; weights stay
        float32) and is about twice as fast on CPUs with AVX-512 BF16 and on GPUs; on
        CPUs without native bfloat16 kernels (AVX2 only) torch emulates it, 10-20x
        slower than float32, and fitting warns (``skvaeinv.runtime.SlowPrecisionWarning``).
        "auto" trains in bfloat16 where the device has native kernels
        (:func:`skvaeinv.runtime.has_native_bfloat16`) and in float32 elsewhere, so its
        results depend on the machine. On a GPU, float32 convolutions (training and
        inference) are full float32, not torch's default TF32 (restored afterwards).
    compile : bool, default=False
        Compile the training step with :func:`torch.compile`; the layers then run in a
        fusable form (see ``skvaeinv._networks.run_layers``) with the same function.
        About 1.2x faster for the study's network in bfloat16 on a 2-core CPU, after
        10-60 s of compilation; needs a C++ compiler. Inference (``transform``,
        ``inverse_transform``, ``sample``) is not compiled; for inversion see
        ``LatentInverter(compile=True)``.
    random_state : int, RandomState instance or None, default=None
        Seed for weight initialisation, batch order and the reparameterisation noise.
        With an int, CPU runs are repeatable bit for bit at the same number of torch
        threads (another thread count sums in another order: results then agree to
        float32 rounding, ~1e-6, not bit for bit). On CUDA the initial weights and
        the batch order are the CPU's, but the reparameterisation noise comes from the
        GPU's generator (other numbers for the same seed), and cuDNN may pick
        convolution algorithms that round differently from call to call: decoded
        images agree to float32 rounding (~1e-7), not bit for bit, and training, which
        accumulates such differences, is not repeatable.
    verbose : int, default=0
        If > 0, show a progress bar with the running loss.

    Attributes
    ----------
    image_shape_ : tuple of int
        (H, W) of the training images.
    encoder_ : torch.nn.Module
        Fitted encoder (images -> posterior mean and log-variance).
    decoder_ : torch.nn.Module
        Fitted decoder (latent vectors -> images in [0, 1]).
    device_ : torch.device
        Device the modules live on.
    loss_curve_ : list of float
        Mean loss per image for each epoch (each :meth:`partial_fit` call adds one).
    n_iter_ : int
        Number of epochs run.
    n_batches_ : int
        Number of gradient steps taken.
    n_images_seen_ : int
        Number of images processed during training.
    latent_density_ : sklearn.mixture.GaussianMixture
        Only after :meth:`fit_latent_density` (until the next :meth:`fit` or
        :meth:`partial_fit`, which change the codes it was fitted to): a mixture
        (full covariances) or kernel density (tied covariances; a subclass whose
        ``score_samples`` scores all components at once) fitted to the latent codes of
        real images, used by ``sample(..., source="density")``.
    latent_bandwidth_ : float
        Only with a kernel density: its bandwidth factor (given or cross-validated).

    See Also
    --------
    skvaeinv.LatentInverter : Inversion of traveltimes in this prior's latent space.
    skvaeinv.datasets.make_channels : Procedural training images.
    skvaeinv.datasets.extract_patches : Random crops of a training image.

    References
    ----------
    .. [1] Lopez-Alvis, J., Laloy, E., Nguyen, F., Hermans, T. (2021). Deep generative
       models in inversion: the impact of the generator's nonlinearity and development
       of a new approach based on a variational autoencoder. Computers & Geosciences 152.
    .. [2] Kingma, D. P., Welling, M. (2014). Auto-encoding variational Bayes. ICLR.

    Examples
    --------
    >>> from skvaeinv import VAEPrior
    >>> from skvaeinv.datasets import make_channels
    >>> X = make_channels(64, shape=(40, 24), random_state=0)
    >>> prior = VAEPrior(latent_dim=4, epochs=1, batch_size=32, base_channels=4,
    ...                  hidden_units=32, device="cpu", random_state=0).fit(X)
    >>> prior.transform(X[:2]).shape
    (2, 4)
    >>> prior.sample(3, random_state=0).shape
    (3, 40, 24)
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "image_shape": [tuple, list, None],
        "base_channels": [Interval(numbers.Integral, 1, None, closed="left")],
        "hidden_units": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions({"float32", "bfloat16", "auto"})],
        "compile": ["boolean"],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, latent_dim: int = 20, *, beta: float = 1000.0, epochs: int = 10,
                 batch_size: int = 100, lr: float = 1e-3,
                 image_shape: tuple[int, int] | None = None, base_channels: int = 32,
                 hidden_units: int = 512, device: str = "auto", precision: str = "float32",
                 compile: bool = False, random_state: int | np.random.RandomState | None = None,
                 verbose: int = 0) -> None:
        self.latent_dim = latent_dim
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.image_shape = image_shape
        self.base_channels = base_channels
        self.hidden_units = hidden_units
        self.device = device
        self.precision = precision
        self.compile = compile
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _validate_images(self, X: Any, *, reset: bool) -> np.ndarray:
        """Return X as float32 ``(n, H, W)``, checking values and shape."""
        X = as_real_array(X, "X (images)", np.float32)
        if reset:
            shape = self.image_shape
        else:
            shape = self.image_shape_
        if shape is not None:
            shape = int_pair(shape, "image_shape (H, W)")
        if X.ndim == 2:
            if shape is None:
                raise ValueError(
                    f"X has shape {X.shape} (flat images); pass image_shape=(H, W) to "
                    "VAEPrior or give X as (n_samples, H, W)."
                )
            h, w = shape
            if X.shape[1] != h * w:
                hint = (" It looks like a single image: pass X[None], of shape (1, H, W)."
                        if tuple(X.shape) == shape else "")
                raise ValueError(
                    f"X has {X.shape[1]} features per sample but image_shape={shape} "
                    f"needs {h * w}.{hint}"
                )
            X = X.reshape(-1, h, w)
        elif X.ndim == 4 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 3:
            raise ValueError(
                f"X must be images of shape (n_samples, H, W) or flat (n_samples, H*W); "
                f"got an array with {X.ndim} dimension(s), shape {X.shape}."
            )
        if X.shape[0] == 0:
            raise ValueError("X contains 0 images; at least 1 is required.")
        check_finite(X, "X")
        lo, hi = float(X.min()), float(X.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"X values must lie in [0, 1] (facies images, 1 = channel); got values in "
                f"[{lo:.4g}, {hi:.4g}]. Rescale, e.g. X / 255 for 8-bit images."
            )
        if not reset and tuple(X.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(
                f"X has images of shape {tuple(X.shape[1:])} but this prior was fitted on "
                f"images of shape {tuple(self.image_shape_)}."
            )
        if reset and shape is not None and X.ndim == 3 and tuple(X.shape[1:]) != tuple(shape):
            raise ValueError(
                f"X has images of shape {tuple(X.shape[1:])} but image_shape={tuple(shape)}."
            )
        if reset and min(X.shape[1:]) < 4:
            raise ValueError(
                f"images of shape {tuple(X.shape[1:])} are too small for the convolutional "
                "network; each side must be at least 4 pixels."
            )
        return X

    def _validate_latents(self, Z: Any) -> np.ndarray:
        Z = as_real_array(Z, "Z (latent vectors)")
        if Z.ndim == 1:
            Z = Z[None, :]
        if Z.ndim != 2 or Z.shape[1] != self.latent_dim or Z.shape[0] == 0:
            raise ValueError(
                f"latent vectors must have shape (n_samples, {self.latent_dim}) with "
                f"n_samples >= 1; got {Z.shape}."
            )
        check_finite(Z, "Z")
        with np.errstate(over="ignore"):
            Z32 = Z.astype(np.float32)
        if not np.all(np.isfinite(Z32)):
            raise ValueError("Z has values beyond the float32 range (about 3.4e38).")
        return Z32

    # ------------------------------------------------------------------ training
    def _init_modules(self, image_shape: tuple[int, int], rng: np.random.RandomState) -> None:
        self.device_ = resolve_device(self.device)
        self.image_shape_ = tuple(int(s) for s in image_shape)
        seed = int(rng.randint(0, 2**31 - 1))
        # Initialise weights from our own seed without leaving a trace in torch's
        # global generators (no global state): the modules are built on the CPU, so only
        # its generator is seeded (torch.manual_seed would reseed every GPU's too) and
        # restored after.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            kw = dict(latent_dim=self.latent_dim, base_channels=self.base_channels,
                      hidden_units=self.hidden_units)
            self.encoder_ = Encoder(self.image_shape_, **kw).to(self.device_)
            self.decoder_ = Decoder(self.image_shape_, **kw).to(self.device_)
        self._optimizer = self._make_optimizer()
        self._torch_gen = torch.Generator(device=self.device_)
        self._torch_gen.manual_seed(int(rng.randint(0, 2**31 - 1)))
        self._rng = rng
        self._drop_latent_density()   # fitted to the codes of an earlier network
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.n_batches_ = 0
        self.n_images_seen_ = 0

    def _drop_latent_density(self) -> None:
        """Forget the latent density (and bandwidth): the network it was fitted to changes."""
        self.__dict__.pop("latent_density_", None)
        self.__dict__.pop("latent_bandwidth_", None)

    def _check_fitted(self) -> None:
        """NotFittedError before fit; ValueError if the network's size parameters changed.

        ``latent_dim``, ``base_channels`` and ``hidden_units`` describe the fitted
        network; after ``set_params`` changes one of them, the fitted network no longer
        matches its parameters, and using (or saving) it would fail or write a file
        that cannot be loaded.
        """
        check_is_fitted(self, "decoder_")
        fitted = self.decoder_.architecture
        changed = [f"{k}={getattr(self, k)!r}" for k, v in fitted.items()
                   if getattr(self, k) != v]
        if changed:
            now = ", ".join(f"{k}={v!r}" for k, v in fitted.items())
            raise ValueError(
                f"{', '.join(changed)} changed after fit, but the fitted network has "
                f"{now}: call fit again to train a network of the new size, or set the "
                "parameter back.")

    def _make_optimizer(self) -> torch.optim.Adam:
        """Adam over both networks, as one fused kernel where torch has one for the device.

        The fused step is about 5x faster on a CPU (torch >= 2.4); older torch versions,
        which fuse only on CUDA, fall back to the plain implementation.
        """
        params = list(self.encoder_.parameters()) + list(self.decoder_.parameters())
        try:
            return torch.optim.Adam(params, lr=self.lr, fused=True)
        except RuntimeError:
            return torch.optim.Adam(params, lr=self.lr)

    def _loss_terms(self, x: torch.Tensor, eps: torch.Tensor | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed squared error and mean KL of a batch (float32); ``eps`` = noise."""
        with autocast_context(self.device_, self._training_precision):
            mean, logvar = self.encoder_(x)
            z = mean if eps is None else mean + eps * torch.exp(0.5 * logvar)
            recon = self.decoder_(z)
        mean, logvar = mean.float(), logvar.float()
        sse = ((recon.float() - x) ** 2).sum()
        kl = (-0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp())).mean()
        return sse, kl

    def _training_loss_fn(self):
        if not self.compile:
            return self._loss_terms
        fn = getattr(self, "_compiled_loss", None)
        if fn is None:
            fn = self._compiled_loss = torch.compile(self._loss_terms)
        return fn

    def _run_epoch(self, X: np.ndarray, pbar: Any) -> float:
        self.encoder_.train()
        self.decoder_.train()
        n = X.shape[0]
        order = self._rng.permutation(n)
        total = 0.0
        bs = min(self.batch_size, n)
        loss_fn = self._training_loss_fn()
        for start in range(0, n, bs):
            idx = np.sort(order[start:start + bs])
            x = torch.from_numpy(X[idx]).to(self.device_)
            eps = torch.randn((len(idx), self.latent_dim), generator=self._torch_gen,
                              device=self.device_)
            sse, kl = loss_fn(x, eps)
            loss = sse + self.beta * kl
            if not torch.isfinite(loss):
                hint = ("lower lr or use precision='float32'"
                        if self._training_precision == "bfloat16" else "lower lr")
                raise FloatingPointError(
                    f"VAE training diverged (loss={loss.item()}) at batch {self.n_batches_}; "
                    f"{hint}.")
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
            total += loss.item()
            self.n_batches_ += 1
            self.n_images_seen_ += len(idx)
            if pbar is not None:
                pbar.update(len(idx))
                pbar.set_postfix(loss=f"{loss.item() / len(idx):.1f}")
        epoch_loss = total / n
        self.loss_curve_.append(epoch_loss)
        self.n_iter_ += 1
        logger.debug("epoch %d: loss per image %.3f", self.n_iter_, epoch_loss)
        return epoch_loss

    def fit(self, X: Any, y: None = None) -> "VAEPrior":
        """Train the VAE on images.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images with values in [0, 1] (1 = channel). Flat images need
            ``image_shape``.
        y : None
            Ignored.

        Returns
        -------
        self : VAEPrior
            The fitted prior.

        Raises
        ------
        FloatingPointError
            If training diverges (a non-finite loss). The prior is then left as it was
            before the call: still the earlier fitted prior, or still unfitted.
        """
        self._validate_params()
        with self._unchanged_on_error():
            X = self._validate_images(X, reset=True)
            if X.shape[0] < 2:
                raise ValueError(
                    f"VAEPrior.fit needs at least 2 images to learn a distribution; got "
                    f"{X.shape[0]}."
                )
            self._init_modules(X.shape[1:], check_random_state(self.random_state))
            self._train(X, self.epochs)
        return self

    @contextlib.contextmanager
    def _unchanged_on_error(self) -> Iterator[None]:
        """Put the estimator's attributes back as they were if the body raises.

        For a body that replaces attributes (a fresh ``fit`` builds new networks, a new
        loss curve, ...) rather than changing them in place: a fit that fails, e.g.
        diverges, leaves the earlier fitted prior, or an unfitted one, not a half-trained
        network that looks fitted.
        """
        before = dict(self.__dict__)
        try:
            yield
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def partial_fit(self, X: Any, y: None = None) -> "VAEPrior":
        """Run one epoch over ``X``, continuing from the current weights.

        Useful to train on a stream of fresh random crops that would not fit in memory
        at once (see ``benchmarks/train_prior.py``). The first call initialises the
        network; later calls use the current ``lr`` (``set_params(lr=...)`` between
        calls changes the step size). The Adam moments live in memory only: after
        pickling or :meth:`save` / :meth:`load`, training resumes with fresh moments, so
        it does not repeat an uninterrupted run bit for bit.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images with values in [0, 1].
        y : None
            Ignored.

        Returns
        -------
        self : VAEPrior
            The estimator, trained one more epoch.

        Raises
        ------
        FloatingPointError
            If training diverges (a non-finite loss). A first call then leaves the prior
            unfitted; a later call leaves the weights of the last batch with a finite
            loss, from which training can go on with a lower ``lr``.
        """
        first = not hasattr(self, "encoder_")
        self._validate_params()
        if first:
            with self._unchanged_on_error():   # a first call that fails leaves no network
                X = self._validate_images(X, reset=True)
                self._init_modules(X.shape[1:], check_random_state(self.random_state))
                self._train(X, 1)
            return self
        self._check_fitted()
        X = self._validate_images(X, reset=False)
        if hasattr(self, "latent_density_"):
            logger.info("partial_fit: the latent density was fitted to the codes of the "
                        "network before this training and is dropped; refit it with "
                        "fit_latent_density.")
            self._drop_latent_density()
        if not hasattr(self, "_optimizer"):
            self._restore_training_state()
        for group in self._optimizer.param_groups:
            group["lr"] = float(self.lr)
        self._train(X, 1)
        return self

    def _restore_training_state(self) -> None:
        """After unpickling/loading: a fresh optimizer and generators to keep training."""
        self._optimizer = self._make_optimizer()
        rng = check_random_state(self.random_state)
        self._rng = rng
        self._torch_gen = torch.Generator(device=self.device_)
        self._torch_gen.manual_seed(int(rng.randint(0, 2**31 - 1)) + self.n_batches_)

    def _train(self, X: np.ndarray, epochs: int) -> None:
        # "auto" -> bfloat16 where the device has native kernels; a warning for bfloat16
        # where it would be emulated (stacklevel: the caller of fit / partial_fit)
        self._training_precision = resolve_precision(self.precision, self.device_,
                                                     stacklevel=3)
        pbar = None
        if self.verbose:
            pbar = tqdm(total=epochs * X.shape[0], unit="img", desc="VAEPrior",
                        leave=False)
        try:
            with ieee_float32(self.device_):   # no TF32 convolutions on a GPU
                for _ in range(epochs):
                    self._run_epoch(X, pbar)
        finally:
            if pbar is not None:
                pbar.close()
            self._optimizer.zero_grad(set_to_none=True)   # no stale gradients kept
        self.encoder_.eval()
        self.decoder_.eval()

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def _in_batches(self, A: np.ndarray, fn: Any) -> np.ndarray:
        """``fn`` of ``A`` on the device, in batches of rows, as one float64 array."""
        size = _CPU_ROWS if self.device_.type == "cpu" else _DEVICE_ROWS
        out = []
        with ieee_float32(self.device_):   # no TF32 convolutions on a GPU
            for start in range(0, A.shape[0], size):
                batch = torch.tensor(A[start:start + size]).to(self.device_)
                out.append(fn(batch).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def transform(self, X: Any) -> np.ndarray:
        """Encode images to their posterior means.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images in [0, 1], of the fitted shape.

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim)
            Latent means ``E[z | x]``.
        """
        self._check_fitted()
        return self._encode(self._validate_images(X, reset=False))

    def _encode(self, X: np.ndarray) -> np.ndarray:
        """Posterior means of validated images ``(n, H, W)``."""
        self.encoder_.eval()
        return self._in_batches(X, lambda x: self.encoder_(x)[0])

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Decode latent vectors to images.

        Parameters
        ----------
        Z : array-like of shape (n_samples, latent_dim)
            Latent vectors.

        Returns
        -------
        images : ndarray of shape (n_samples, H, W)
            Decoded images with values in [0, 1].
        """
        self._check_fitted()
        Z = self._validate_latents(Z)
        self.decoder_.eval()
        return self._in_batches(Z, self.decoder_)

    def fit_latent_density(self, X: Any, n_components: int = 50, *,
                           kind: str = "mixture", bandwidth: float | str = "cv",
                           random_state: Any = None) -> "VAEPrior":
        """Fit a density to the latent codes of ``X`` (ex-post density estimation).

        With the reference loss the posteriors are narrow and their aggregate does not
        fill ``N(0, I)``: decoding ``z ~ N(0, I)`` then lands between the codes of real
        images and gives blurred, too-channel-rich pictures (the "prior hole"). A
        density fitted to the codes of training images after training follows the
        aggregate posterior instead (Ghosh et al., 2020), and
        ``sample(..., source="density")`` draws from it. The network is not changed.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images of the fitted shape, typically (a subset of) the training images.
            For ``kind="mixture"`` at least ``n_components`` of them, and ideally many
            more; for ``kind="kernel"`` more than ``latent_dim``, and with
            ``bandwidth="cv"`` or ``"pattern"`` more than ``latent_dim`` outside each of
            5 folds (about ``1.25 * latent_dim + 2``).
        n_components : int, default=50
            Number of Gaussian components (full covariances) of ``kind="mixture"``;
            ignored by ``kind="kernel"``.
        kind : {"mixture", "kernel"}, default="mixture"
            "mixture": a Gaussian mixture fitted by EM. "kernel": a Gaussian kernel
            density, one equal-weight component at each code, all with the codes'
            covariance times ``bandwidth**2`` (stored as a tied-covariance
            GaussianMixture holding every code, so its size grows with ``X``; its
            ``score_samples`` takes all components at once). On the reference prior
            the kernel density scores the codes of held-out crops 2.35 nats per code
            higher than a 200-component mixture with ``bandwidth="cv"`` (and lower
            with "pattern", which trades that likelihood for samples closer to the
            training image), and its samples are statistically closer to the training
            image with either
            (``benchmarks/results/latent_density.md``).
        bandwidth : float, "cv" or "pattern", default="cv"
            ``kind="kernel"`` only: the factor ``h`` of the kernel covariance
            ``h**2 * cov(codes)``.

            - "cv" picks it by maximising the 5-fold cross-validated log-likelihood of
              the codes (at most 5,000 held-out codes scored; factors searched within
              [0.02, 3], with a warning at the edge): the density that best explains
              unseen codes.
            - "pattern" picks it by the pattern statistics of the decoded samples. ``X``
              is split into 5 random folds; with each fold held out in turn, a kernel
              density on the codes of the other four draws 1,000 latent vectors for each
              factor of 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8 and 1.0 (the
              same random numbers for all factors, scaled by the factor), and their
              decoded images are compared with the held-out images by their two-point
              curves along z and x (:func:`skvaeinv.metrics.two_point_probability`,
              thresholded at 0.5, lags up to ``min(30, H // 2, W // 2)``; lag 0 is the
              channel proportion). The factor with the smallest worst-lag relative error,
              averaged over the folds, is kept. This targets what samples are judged by;
              on the reference prior it picks a narrower kernel than "cv" (0.35 against
              0.55) and about halves the worst-lag two-point error of its samples
              (``benchmarks/results/prior_trend_pattern.md``). It decodes 55,000 images,
              so it takes longer (a progress bar with ``verbose``; a warning if the choice
              is the smallest or largest factor), and it wants thousands of images: on the
              reference prior, 5,000 crops gave 0.30-0.35 over four random states and
              18,000 gave 0.35-0.40 over three (one held-out fifth alone, instead of all
              five, gave 0.1-0.5 with 5,000). Very small factors approach re-decoding the
              images of ``X`` themselves (little variety); the smallest factor tried is
              0.1.
            - A float uses that factor.

            As with "cv", the chosen factor then serves the density on the codes of all
            of ``X``. Ignored by ``kind="mixture"``, but validated.
        random_state : int, RandomState instance or None, default=None
            Seed of the mixture's initialisation, of the cross-validation folds, or of
            the folds and the draws of ``bandwidth="pattern"``.

        Returns
        -------
        self : VAEPrior
            With ``latent_density_`` set, and for ``kind="kernel"``
            ``latent_bandwidth_``.
        """
        self._check_fitted()
        if not isinstance(kind, str) or kind not in ("mixture", "kernel"):
            raise ValueError(f"kind must be 'mixture' or 'kernel', got {kind!r}.")
        if not isinstance(n_components, numbers.Integral) or n_components < 1:
            raise ValueError(
                f"n_components must be a positive integer, got {n_components!r}.")
        if not (isinstance(bandwidth, str) and bandwidth in ("cv", "pattern")):
            ok = isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool)
            try:
                ok = ok and 0 < float(bandwidth) < np.inf
            except OverflowError:   # an int beyond float's range
                ok = False
            if not ok:
                raise ValueError("bandwidth must be 'cv', 'pattern' or a positive finite "
                                 f"factor, got {bandwidth!r}.")
        images = self._validate_images(X, reset=False)
        Z = self._encode(images)
        rng = check_random_state(random_state)
        if kind == "mixture":
            if Z.shape[0] < max(2, n_components):
                raise ValueError(
                    f"fit_latent_density needs at least n_components={n_components} "
                    f"images (and at least 2), got {Z.shape[0]}; pass more images or "
                    "fewer components.")
            density, h = _density.mixture_density(Z, n_components, rng), None
            logger.info("latent density: %d components fitted to %d codes", n_components,
                        Z.shape[0])
        else:
            if bandwidth == "cv":
                h = _density.cv_bandwidth(Z, rng)
            elif bandwidth == "pattern":
                h = self._pattern_bandwidth(images, Z, rng)
            else:
                h = float(bandwidth)
            density = _density.kernel_density(Z, h)
            logger.info("latent density: kernel density on %d codes, bandwidth factor %.3f",
                        Z.shape[0], h)
        self.latent_density_ = density
        self.__dict__.pop("latent_bandwidth_", None)
        if h is not None:
            self.latent_bandwidth_ = h
        return self

    def _pattern_bandwidth(self, images: np.ndarray, Z: np.ndarray,
                           rng: np.random.RandomState) -> float:
        """The kernel factor of ``bandwidth="pattern"`` (see :meth:`fit_latent_density`)."""
        n_folds = _density.PATTERN_FOLDS
        folds = _density.fold_labels(*Z.shape, rng, n_folds, "pattern")
        max_lag = min(_density.PATTERN_MAX_LAG, min(self.image_shape_) // 2)

        def curves(images: np.ndarray) -> list[np.ndarray]:
            return [two_point_probability(images, max_lag, axis=axis) for axis in "zx"]

        def loss(z: np.ndarray, ref: list[np.ndarray]) -> float:   # worst lag, z and x
            return max(map(_max_relative_error, curves(self.inverse_transform(z)), ref))

        splits = []
        for k in range(n_folds):
            ref = curves(images[folds == k])
            if min(c.min() for c in ref) <= 0:
                raise ValueError(
                    f"bandwidth='pattern' compares two-point curves (lags 0-{max_lag}) "
                    "relative to those of each held-out fifth of X, and one of them is "
                    "zero at some lag (too few channel pixels, or none that far apart): "
                    "pass more images with channels, or use bandwidth='cv'.")
            splits.append((Z[folds != k], functools.partial(loss, ref=ref)))
        h, _ = _density.select_bandwidth(splits, _density.PATTERN_FACTORS, rng,
                                         _density.PATTERN_DRAWS, verbose=bool(self.verbose))
        return h

    def sample(self, n_samples: int = 1, random_state: Any = None, *,
               source: str = "normal") -> np.ndarray:
        """Draw images from the prior by decoding random latent vectors.

        Parameters
        ----------
        n_samples : int, default=1
            Number of images.
        random_state : int, RandomState instance or None, default=None
            Seed for the latent draws.
        source : {"normal", "density"}, default="normal"
            Where the latent vectors come from: "normal" draws ``z ~ N(0, I)``, the
            VAE's prior; "density" draws from the density fitted by
            :meth:`fit_latent_density`, which follows the codes of real images and
            gives sharper, statistically closer samples for a prior with a "hole".

        Returns
        -------
        images : ndarray of shape (n_samples, H, W)
            Images with values in [0, 1].
        """
        self._check_fitted()
        if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
        return self.inverse_transform(
            self._sample_latents(int(n_samples), check_random_state(random_state), source))

    def _sample_latents(self, n: int, rng: np.random.RandomState, source: str) -> np.ndarray:
        """``n`` latent vectors from N(0, I) or from the fitted latent density."""
        if source == "normal":
            return rng.standard_normal((n, self.latent_dim))
        if source != "density":
            raise ValueError(f"source must be 'normal' or 'density', got {source!r}.")
        if not hasattr(self, "latent_density_"):
            raise NotFittedError(
                "sample(source='density') needs a latent density: call "
                "prior.fit_latent_density(training_images) first.")
        return _density.draw(self.latent_density_, n, rng)

    def score_samples(self, X: Any) -> np.ndarray:
        """Negative VAE loss of each image (an ELBO-type score, higher is better).

        ``-(||x - g(mu(x))||^2 + beta * mean_j KL_j(x))``: the loss of :meth:`fit` for one
        image, evaluated deterministically at the posterior mean.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images in [0, 1].

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Per-image score (higher is better): minus the loss above.
        """
        self._check_fitted()
        X = self._validate_images(X, reset=False)
        self.encoder_.eval()
        self.decoder_.eval()

        def score(x: torch.Tensor) -> torch.Tensor:
            mean, logvar = self.encoder_(x)
            sse = ((self.decoder_(mean) - x) ** 2).sum(dim=(1, 2))
            kl = (-0.5 * (1.0 + logvar - mean.pow(2) - logvar.exp())).mean(dim=1)
            return -(sse + self.beta * kl)

        return self._in_batches(X, score)

    def score(self, X: Any, y: None = None) -> float:
        """Mean of :meth:`score_samples` (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images in [0, 1].
        y : None
            Ignored.

        Returns
        -------
        score : float
            Mean of :meth:`score_samples` over ``X`` (higher is better).

        Notes
        -----
        The score weighs the KL term by the prior's own ``beta``, so it compares priors
        of the same ``beta`` only: a search over ``beta`` itself (e.g. ``GridSearchCV``)
        would favour the smallest one by construction. Compare such priors by a
        criterion that does not contain ``beta``, e.g. ``-reconstruction_error(X).mean()``
        of held-out images, or the pattern statistics of their samples
        (:mod:`skvaeinv.metrics`).
        """
        return float(np.mean(self.score_samples(X)))

    def reconstruction_error(self, X: Any) -> np.ndarray:
        """Squared reconstruction error ``||x - g(E[z|x])||^2`` of each image.

        Parameters
        ----------
        X : array-like of shape (n_samples, H, W) or (n_samples, H*W)
            Images in [0, 1], of the fitted shape.

        Returns
        -------
        errors : ndarray of shape (n_samples,)
            Sum over pixels of the squared difference between each image and its
            reconstruction from the posterior mean.
        """
        self._check_fitted()
        X = self._validate_images(X, reset=False)
        recon = self.inverse_transform(self.transform(X))
        return ((recon - X) ** 2).sum(axis=(1, 2))

    def get_decoder(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """A frozen copy of the decoder for use as a differentiable torch function.

        Parameters
        ----------
        device : str or torch.device, default="cpu"
            Where the copy lives.

        Returns
        -------
        decoder : torch.nn.Module
            Module mapping a float32 tensor ``(B, latent_dim)`` to ``(B, H, W)`` in
            [0, 1], in eval mode, with ``requires_grad=False`` on every weight (gradients
            flow to the input only). Picklable, so it can travel to joblib workers.
            It runs under the caller's torch settings: on a GPU, torch's default lets
            cuDNN use TF32 for its float32 convolutions (unlike :meth:`inverse_transform`
            and :class:`~skvaeinv.LatentInverter`); set
            ``torch.backends.cudnn.allow_tf32 = False`` for full float32.
        """
        self._check_fitted()
        dev = resolve_device(device)
        dec = copy.deepcopy(self.decoder_).to(dev).eval()
        for p in dec.parameters():
            p.requires_grad_(False)
        return dec

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the latent features: z0, z1, ..., up to latent_dim - 1.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored; present for scikit-learn API compatibility.

        Returns
        -------
        feature_names_out : ndarray of str objects of shape (latent_dim,)
            ``["z0", "z1", ..., f"z{latent_dim - 1}"]``.
        """
        self._check_fitted()
        return np.asarray([f"z{i}" for i in range(self.latent_dim)], dtype=object)

    # ------------------------------------------------------------------ persistence
    def _state(self, with_params: bool = True, with_density: bool = True) -> dict:
        params = self.get_params(deep=False) if with_params else {}
        if not isinstance(params.get("random_state"), (numbers.Integral, type(None))):
            params["random_state"] = None   # a RandomState instance has no plain form
        params = {k: _plain_value(v, k) for k, v in params.items()}
        return {
            "format": "skvaeinv.VAEPrior",
            # version 1 unless a kernel density needs 2, so older releases read the rest
            "format_version": _FORMAT_VERSION if getattr(
                getattr(self, "latent_density_", None), "covariance_type", "full"
            ) == "tied" else 1,
            "params": params,
            # the size the networks were built with (params may have changed since fit)
            "architecture": dict(self.decoder_.architecture),
            "image_shape_": [int(s) for s in self.image_shape_],
            "loss_curve_": [float(v) for v in self.loss_curve_],
            "n_iter_": int(self.n_iter_),
            "n_batches_": int(self.n_batches_),
            "n_images_seen_": int(self.n_images_seen_),
            "encoder": {k: v.detach().cpu() for k, v in self.encoder_.state_dict().items()},
            "decoder": {k: v.detach().cpu() for k, v in self.decoder_.state_dict().items()},
            "saved_device": str(self.device_),
            **({"latent_density": _density.density_state(
                self.latent_density_, getattr(self, "latent_bandwidth_", None))}
               if with_density and hasattr(self, "latent_density_") else {}),
        }

    def _load_state(self, state: dict) -> None:
        self.image_shape_ = tuple(state["image_shape_"])
        self.loss_curve_ = list(state["loss_curve_"])
        self.n_iter_ = state["n_iter_"]
        self.n_batches_ = state["n_batches_"]
        self.n_images_seen_ = state["n_images_seen_"]
        try:
            self.device_ = resolve_device(self.device)
        except ValueError:
            warnings.warn(
                f"this prior's device={self.device!r} is not available here; it is loaded "
                "on the CPU and its device parameter set to 'cpu'.", RuntimeWarning,
                stacklevel=3)
            self.device = "cpu"
            self.device_ = torch.device("cpu")
        kw = state.get("architecture") or dict(
            latent_dim=self.latent_dim, base_channels=self.base_channels,
            hidden_units=self.hidden_units)
        enc = Encoder(self.image_shape_, **kw)
        dec = Decoder(self.image_shape_, **kw)
        enc.load_state_dict(state["encoder"])
        dec.load_state_dict(state["decoder"])
        self.encoder_ = enc.to(self.device_).eval()
        self.decoder_ = dec.to(self.device_).eval()
        if "latent_density" in state:
            self.latent_density_, h = _density.density_from_state(
                state["latent_density"], int(kw["latent_dim"]))
            if h is not None:
                self.latent_bandwidth_ = h

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("encoder_", "decoder_", "_optimizer", "_torch_gen", "_rng",
                              "device_", "_compiled_loss", "_training_precision")}
        if hasattr(self, "encoder_"):
            # the parameters and the latent density (the fitted scikit-learn object
            # itself) travel in __dict__; the torch state holds the networks
            state["_torch_state"] = self._state(with_params=False, with_density=False)
        return state

    def __setstate__(self, state: dict) -> None:
        torch_state = state.pop("_torch_state", None)
        self.__dict__.update(state)
        if torch_state is not None:
            self._load_state(torch_state)

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted prior to a file in a safe format.

        The file is a ``torch.save`` archive of tensors, numbers, strings and lists only
        (no pickled code), loadable with ``torch.load(weights_only=True)``. It carries a
        SHA-256 checksum of its contents, which :meth:`load` verifies (torch's reader
        does not check the archive's own CRCs). The file is written atomically (to a
        temporary name, then renamed).

        Parameters
        ----------
        path : str or path-like
            Destination, conventionally with suffix ``.skv``, in an existing folder.

        Raises
        ------
        FileNotFoundError
            If the destination's folder does not exist.
        IsADirectoryError
            If the destination is a folder (or an empty name).
        OSError
            If the file cannot be written; no partial or temporary file is left.
        """
        self._check_fitted()
        path = Path(path)
        if not path.name or path.is_dir():
            raise IsADirectoryError(f"cannot save to {str(path)!r}: it is a folder; give a "
                                    "file name, e.g. 'prior.skv'.")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"cannot save to {str(path)!r}: the folder "
                                    f"{str(path.parent)!r} does not exist; create it first.")
        state = self._state()
        state["checksum"] = _checksum(state)
        tmp = path.with_name(path.name + ".tmp")
        try:
            try:
                torch.save(state, tmp)
            except RuntimeError as exc:   # torch reports an unwritable file this way
                raise OSError(f"cannot write {str(path)!r}: {exc}") from exc
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)   # what a failed torch.save left (gone if replaced)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "VAEPrior":
        """Load a prior written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            File written by :meth:`save`.
        device : str or None, default=None
            Override the saved ``device`` parameter (e.g. "cpu"); an unavailable device
            is an error. With None, the saved parameter is used; a prior saved with a
            GPU device loads on the CPU, with a warning, when no GPU is present.

        Returns
        -------
        prior : VAEPrior
            A fitted prior whose :meth:`inverse_transform` reproduces the saved one's.

        Raises
        ------
        FileNotFoundError
            If there is no file at ``path``.
        ValueError
            If the file is not a prior written by :meth:`save`, is damaged (its checksum
            does not match, or entries are missing or do not fit), was written by a newer
            skvaeinv, or ``device`` is not available.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no prior file at {str(path)!r}")
        with open(path, "rb") as fh:   # an unreadable file: the system's own error
            if not fh.read(1):
                raise ValueError(f"{str(path)!r} is empty, not a prior file written by "
                                 "VAEPrior.save.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for corrupt/unsafe files
            lines = str(exc).strip().splitlines()
            if not zipfile.is_zipfile(path):
                reason = ("it is not an archive written by torch.save (a text file, or a "
                          "file cut short?)")
            elif isinstance(exc, EOFError) or not lines:
                reason = ("the file is empty or cut short" if isinstance(exc, EOFError)
                          else type(exc).__name__)
            elif "weights only" in lines[0].lower() or "weights_only" in lines[0]:
                reason = "it holds objects other than tensors and plain values"
            else:
                reason = lines[0]
            raise ValueError(
                f"{str(path)!r} is not a readable skvaeinv prior file "
                f"(expected a file written by VAEPrior.save): {reason}.") from exc
        if not isinstance(state, dict) or state.get("format") != "skvaeinv.VAEPrior":
            raise ValueError(f"{str(path)!r} is not a skvaeinv prior file "
                             "(written by VAEPrior.save).")
        version = state.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"{str(path)!r} is a damaged prior file: its format_version "
                             f"is {version!r}, not an integer.")
        if version > _FORMAT_VERSION:
            raise ValueError(
                f"{str(path)!r} was written by a newer skvaeinv (format version "
                f"{state['format_version']}); upgrade skvaeinv to read it.")
        # files written since the checksum exists carry one (torch's own reader does not
        # check the archive's CRCs, so changed bytes in the weights would load silently)
        if "checksum" in state and state["checksum"] != _checksum(
                {k: v for k, v in state.items() if k != "checksum"}):
            raise ValueError(f"{str(path)!r} is a damaged prior file: its contents do not "
                             "match the checksum written with them.")
        if device is not None:
            resolve_device(device)  # a clear error for an unavailable device
        try:
            params = dict(state["params"])
            if params.get("image_shape") is not None:
                params["image_shape"] = tuple(params["image_shape"])
            if device is not None:
                params["device"] = device
            prior = cls(**params)
            prior._load_state(state)
            prior._check_fitted()   # the saved parameters describe the saved networks
        except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as exc:
            # missing entries, unknown parameters, weights that do not fit the network,
            # entries of the wrong kind, a latent density that is not positive definite
            raise ValueError(f"{str(path)!r} is a damaged or incompatible prior file "
                             f"({type(exc).__name__}: {exc}).") from exc
        return prior

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags



def _checksum(state: Any) -> str:
    """SHA-256 of a saved state: every key, plain value and tensor (dtype, shape, bytes)."""
    h = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                h.update(f"<{key!s}>".encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for item in value:
                feed(item)
            h.update(b"]")
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())

    feed(state)
    return h.hexdigest()


def _plain_value(value: Any, name: str) -> Any:
    """``value`` as the plain Python types a ``weights_only`` load accepts.

    numpy scalars (as ``np.arange`` grids and ``GridSearchCV.best_params_`` give) become
    Python numbers, tuples lists and devices strings; anything else is refused here, at
    save time, rather than written into a file that cannot be loaded.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_plain_value(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"VAEPrior parameter {name}={value!r} cannot be saved: the safe file format holds "
        "numbers, strings and lists only. Set it to a plain value before saving.")
