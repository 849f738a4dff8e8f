"""The facade: :class:`VAEPrior`, a variational autoencoder as a scikit-learn transformer.

Its parts live beside it: the training loop (:mod:`._training`), the file format and
pickling (:mod:`._persistence`) and the latent density (:mod:`.density`). Here are the
parameters, the validation of inputs, and encoding, decoding and sampling.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
import os
from typing import Any, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .._device import ieee_float32, resolve_device, resolve_precision
from .._validation import as_real_array, check_finite, int_pair
from . import _persistence
from ._training import Trainer, TrainingSetup, build_networks
from ._warnings import outside_stacklevel
from .density import LatentDensity

__all__ = ["VAEPrior"]

logger = logging.getLogger(__name__)

#: Rows per batch of ``transform``, ``inverse_transform`` and ``score_samples`` on a
#: CPU, where small batches stay in the cache; GPUs take larger ones.
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
        Images per gradient step. With the loss above, each image's KL weight is
        ``beta / batch_size``: change both together (e.g. 50 with ``beta=500``) to
        keep the same objective per image.
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
        CPU), "cpu", "cuda" or "cuda:N". Resolved by :meth:`fit` (``device_``); a prior
        loaded by :meth:`load` may hold its networks elsewhere (``load(device=...)``).
    precision : {"float32", "bfloat16", "auto"}, default="float32"
        Arithmetic for training. "bfloat16" uses autocast (mixed precision; weights stay
        float32), faster than float32 on CPUs with AVX-512 BF16 and on recent GPUs; on
        CPUs without native bfloat16 kernels (AVX2 only) torch emulates it, much slower
        than float32, and fitting warns (``skvaeinv.runtime.SlowPrecisionWarning``).
        "auto" trains in bfloat16 where the device has native kernels
        (:func:`skvaeinv.runtime.has_native_bfloat16`) and in float32 elsewhere, so its
        results depend on the machine. On a GPU, float32 convolutions (training and
        inference) are full float32, not torch's default TF32 (restored afterwards).
    compile : bool, default=False
        Compile the training step with :func:`torch.compile`; the layers then run in a
        fusable form (see ``skvaeinv._networks.run_layers``) with the same function.
        Faster for long runs, after a compilation at the first step; needs a C++
        compiler on a CPU. Inference (``transform``,
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
        Device the modules live on (:meth:`partial_fit` goes on training there).
    loss_curve_ : list of float
        Mean loss per image for each epoch (each :meth:`partial_fit` call adds one).
    n_iter_ : int
        Number of epochs run.
    n_batches_ : int
        Number of gradient steps taken.
    n_images_seen_ : int
        Number of images processed during training.
    latent_density_ : LatentDensity
        Only after :meth:`fit_latent_density` (until the next :meth:`fit` or
        :meth:`partial_fit`, which change the codes it was fitted to): a Gaussian
        mixture or kernel density fitted to the latent codes of real images, used by
        ``sample(..., source="density")``.
    latent_bandwidth_ : float
        Only with a kernel density: its bandwidth factor (given or chosen), that is
        ``latent_density_.bandwidth_``.

    See Also
    --------
    skvaeinv.LatentInverter : Inversion of traveltimes in this prior's latent space.
    skvaeinv.prior.LatentDensity : The density of :meth:`fit_latent_density`.
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
        shape = self.image_shape if reset else self.image_shape_
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
        if reset and shape is not None and tuple(X.shape[1:]) != tuple(shape):
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
        """Return Z as float32 ``(n, latent_dim)``, checking values and shape."""
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
    def _training_setup(self, device: torch.device) -> TrainingSetup:
        """This call's training settings; "auto" precision resolved for ``device``.

        A warning for bfloat16 where the device would emulate it points at the line
        that called ``fit`` or ``partial_fit``.
        """
        precision = resolve_precision(self.precision, device,
                                      stacklevel=outside_stacklevel())
        return TrainingSetup(device=device, precision=precision, beta=self.beta,
                             batch_size=self.batch_size, compile=self.compile,
                             verbose=self.verbose)

    def _architecture(self) -> dict:
        """The size parameters of the networks: ``latent_dim``, ``base_channels``, ..."""
        return dict(latent_dim=self.latent_dim, base_channels=self.base_channels,
                    hidden_units=self.hidden_units)

    def _init_modules(self, image_shape: tuple[int, int], rng: np.random.RandomState,
                      device: torch.device) -> None:
        """Fresh networks, trainer and counters (the seeds come from ``rng``)."""
        self.device_ = device
        self.image_shape_ = tuple(int(s) for s in image_shape)
        self.encoder_, self.decoder_ = build_networks(
            self.image_shape_, self._architecture(), device,
            seed=int(rng.randint(0, 2**31 - 1)))
        self._trainer = Trainer(self.encoder_, self.decoder_, lr=self.lr, rng=rng,
                                noise_seed=int(rng.randint(0, 2**31 - 1)))
        self._drop_latent_density()   # fitted to the codes of an earlier network
        self.loss_curve_ = []
        self.n_iter_ = 0
        self.n_batches_ = 0
        self.n_images_seen_ = 0

    def _restore_trainer(self) -> None:
        """After unpickling or loading: a fresh Adam and random streams to keep training.

        The batch order starts again from ``random_state``; the noise seed is offset by
        the steps taken, so that it does not repeat the first steps' noise.
        """
        rng = check_random_state(self.random_state)
        self._trainer = Trainer(self.encoder_, self.decoder_, lr=self.lr, rng=rng,
                                noise_seed=int(rng.randint(0, 2**31 - 1)) + self.n_batches_)

    def _drop_latent_density(self) -> None:
        """Forget the latent density: the network it was fitted to changes."""
        self.__dict__.pop("latent_density_", None)

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
            device = resolve_device(self.device)
            self._init_modules(X.shape[1:], check_random_state(self.random_state), device)
            self._train(X, self.epochs, self._training_setup(device))
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
        at once. The first call initialises the network; later calls go on training on
        ``device_`` with the current ``lr``, ``beta``, ``batch_size``, ``precision`` and
        ``compile`` (``set_params`` between calls changes them). The Adam moments live
        in memory only: after pickling or :meth:`save` / :meth:`load`, training resumes
        with fresh moments, so it does not repeat an uninterrupted run bit for bit.

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
                device = resolve_device(self.device)
                self._init_modules(X.shape[1:], check_random_state(self.random_state),
                                   device)
                self._train(X, 1, self._training_setup(device))
            return self
        self._check_fitted()
        X = self._validate_images(X, reset=False)
        if hasattr(self, "latent_density_"):
            logger.info("partial_fit: the latent density was fitted to the codes of the "
                        "network before this training and is dropped; refit it with "
                        "fit_latent_density.")
            self._drop_latent_density()
        if not hasattr(self, "_trainer"):
            self._restore_trainer()
        self._trainer.set_lr(float(self.lr))
        self._train(X, 1, self._training_setup(self.device_))
        return self

    def _train(self, X: np.ndarray, epochs: int, setup: TrainingSetup) -> None:
        """``epochs`` passes of the trainer over validated images ``X``."""
        with ieee_float32(setup.device):   # no TF32 convolutions on a GPU
            self._trainer.train(X, epochs, setup, self)

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
            Images to encode: values in [0, 1], of the fitted shape.

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
            Latent vectors to decode.

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
        ``sample(..., source="density")`` draws from it. The network is not changed:
        this fits a :class:`~skvaeinv.prior.LatentDensity` to the codes and keeps it as
        ``latent_density_``, replacing an earlier one only if the fit succeeds.

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
            ignored by ``kind="kernel"``, but validated.
        kind : {"mixture", "kernel"}, default="mixture"
            "mixture": a Gaussian mixture fitted by EM. "kernel": a Gaussian kernel
            density, one equal-weight component at each code, all with the codes'
            covariance times ``bandwidth**2`` (its size grows with ``X``). On a
            well-trained prior the kernel density usually explains the codes of
            held-out images better than a mixture, and its samples are statistically
            closer to the training image.
        bandwidth : float, "cv" or "pattern", default="cv"
            ``kind="kernel"`` only: the factor ``h`` of the kernel covariance
            ``h**2 * cov(codes)``. "cv" maximises the 5-fold cross-validated
            log-likelihood of the codes; "pattern" matches the two-point statistics of
            decoded draws to those of held-out images of ``X`` (it decodes 55,000
            images and wants thousands in ``X``; a progress bar with ``verbose``); a
            float is used as it is. See :class:`~skvaeinv.prior.LatentDensity`.
            Ignored by ``kind="mixture"``, but validated.
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
        density = LatentDensity(kind, n_components=n_components, bandwidth=bandwidth,
                                random_state=random_state, verbose=self.verbose)
        density._check_params()   # before the (long) encoding
        images = self._validate_images(X, reset=False)
        self.latent_density_ = density.fit(self._encode(images), images=images,
                                           decode=self.inverse_transform)
        return self

    @property
    def latent_bandwidth_(self) -> float:
        """The kernel latent density's bandwidth factor (``latent_density_.bandwidth_``).

        Raises
        ------
        AttributeError
            Without a kernel latent density.
        """
        density = self.__dict__.get("latent_density_")
        if density is None or not hasattr(density, "bandwidth_"):
            raise AttributeError("latent_bandwidth_: this prior has no kernel latent "
                                 "density (fit_latent_density(X, kind='kernel')).")
        return density.bandwidth_

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
        return self.latent_density_.sample(n, rng)

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
    def __getstate__(self) -> dict:
        """The pickled form: parameters and fitted attributes, networks as a torch state.

        Returns
        -------
        state : dict
            See :func:`skvaeinv.prior._persistence.getstate`.
        """
        return _persistence.getstate(self)

    def __setstate__(self, state: dict) -> None:
        """Restore from :meth:`__getstate__`'s form (the networks on ``device``'s device).

        Parameters
        ----------
        state : dict
            The pickled form.
        """
        _persistence.setstate(self, state)

    def save(self, path: str | os.PathLike) -> None:
        """Save the fitted prior to a file in a safe format.

        The file is a ``torch.save`` archive of tensors, numbers, strings and lists only
        (no pickled code), loadable with ``torch.load(weights_only=True)``. It holds the
        constructor parameters, the networks, the training counters and the latent
        density, and a SHA-256 checksum of its contents, which :meth:`load` verifies
        (torch's reader does not check the archive's own CRCs). The file is written
        atomically (to a temporary name, then renamed).

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
        ValueError
            If a parameter has no plain form (numbers, strings, lists) to be saved in.
        """
        self._check_fitted()
        _persistence.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None) -> "VAEPrior":
        """Load a prior written by :meth:`save`.

        The loaded prior has the saved parameters (``get_params()`` equals the saved
        prior's, a ``random_state`` that was a RandomState instance excepted: it is
        saved as None) and the saved fitted state.

        Parameters
        ----------
        path : str or path-like
            File written by :meth:`save`.
        device : str or None, default=None
            Where the loaded networks live (``device_``, where :meth:`transform`,
            :meth:`inverse_transform` and :meth:`partial_fit` run), e.g. "cpu"; an
            unavailable device is an error. It is fitted state: the ``device``
            parameter stays as saved and serves the next :meth:`fit`. With None, the
            device of the saved parameter; a prior saved with a GPU device loads on the
            CPU, with a warning, when no GPU is present.

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
        return _persistence.load(cls, path, device)

    def __sklearn_tags__(self) -> Any:
        """Images in, 2-D (flat) or 3-D; fitting is required.

        Returns
        -------
        tags : sklearn.utils.Tags
            The estimator's tags.
        """
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags
