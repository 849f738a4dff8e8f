"""The prior's safe file format, and its pickled form.

A saved prior is a ``torch.save`` archive of tensors, numbers, strings and lists only
(no pickled code), loadable with ``torch.load(weights_only=True)``, with a SHA-256
checksum of its contents. Loading rebuilds the estimator from the saved parameters,
as its constructor takes them, and restores the fitted state beside them.

Format versions: 1, the networks and a full-covariance latent mixture; 2, also a kernel
density (a tied mixture). A file is written as version 1 unless it holds a kernel
density, so that older releases read the rest.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._device import resolve_device
from ._mixtures import mixture_from_state, mixture_state
from ._training import build_networks
from ._warnings import warn
from .density import LatentDensity

__all__ = ["FORMAT_VERSION", "FORMAT", "prior_state", "restore_fitted", "save", "load",
           "getstate", "setstate", "checksum", "plain_value"]

#: Newest format version this release reads and writes.
FORMAT_VERSION = 2
#: The ``format`` entry of every prior file.
FORMAT = "skvaeinv.VAEPrior"
#: Attributes that a pickle carries in the torch state (or rebuilds) rather than as is.
_NOT_PICKLED = ("encoder_", "decoder_", "device_", "_trainer")


def prior_state(prior: Any, with_params: bool = True, with_density: bool = True) -> dict:
    """A fitted prior as plain values and CPU tensors (the contents of a file).

    Parameters
    ----------
    prior : VAEPrior
        A fitted prior.
    with_params : bool, default=True
        Include the constructor parameters.
    with_density : bool, default=True
        Include the latent density, if the prior has one.

    Returns
    -------
    state : dict
        What :func:`save` writes (without the checksum).
    """
    params = prior.get_params(deep=False) if with_params else {}
    if not isinstance(params.get("random_state"), (numbers.Integral, type(None))):
        params["random_state"] = None   # a RandomState instance has no plain form
    params = {k: plain_value(v, k) for k, v in params.items()}
    density = getattr(prior, "latent_density_", None)
    kernel = density is not None and density.mixture_.covariance_type == "tied"
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if kernel else 1,
        "params": params,
        # the size the networks were built with (params may have changed since fit)
        "architecture": dict(prior.decoder_.architecture),
        "image_shape_": [int(s) for s in prior.image_shape_],
        "loss_curve_": [float(v) for v in prior.loss_curve_],
        "n_iter_": int(prior.n_iter_),
        "n_batches_": int(prior.n_batches_),
        "n_images_seen_": int(prior.n_images_seen_),
        "encoder": {k: v.detach().cpu() for k, v in prior.encoder_.state_dict().items()},
        "decoder": {k: v.detach().cpu() for k, v in prior.decoder_.state_dict().items()},
        "saved_device": str(prior.device_),
    }
    if with_density and density is not None:
        state["latent_density"] = mixture_state(density.mixture_,
                                                getattr(density, "bandwidth_", None))
    return state


def _networks_device(prior: Any, device: torch.device | None) -> torch.device:
    """``device``, or the one the prior's ``device`` parameter names, or the CPU."""
    if device is not None:
        return device
    try:
        return resolve_device(prior.device)
    except ValueError:
        warn(f"this prior's device={prior.device!r} is not available here; its networks "
             "are loaded on the CPU (the device parameter is kept: set_params(device=...) "
             "before training it again).", RuntimeWarning)
        return torch.device("cpu")


def restore_fitted(prior: Any, state: dict, device: torch.device | None = None) -> None:
    """Give ``prior`` the fitted state of ``state`` (its parameters are left alone).

    Parameters
    ----------
    prior : VAEPrior
        The estimator, with the saved parameters.
    state : dict
        What :func:`prior_state` returned.
    device : torch.device or None, default=None
        Where the networks go (``device_``); None: the device of the prior's ``device``
        parameter, or the CPU, with a warning, where that one is not available.
    """
    prior.image_shape_ = tuple(state["image_shape_"])
    prior.loss_curve_ = list(state["loss_curve_"])
    prior.n_iter_ = state["n_iter_"]
    prior.n_batches_ = state["n_batches_"]
    prior.n_images_seen_ = state["n_images_seen_"]
    prior.device_ = _networks_device(prior, device)
    # files written before the architecture was saved: the size parameters describe it
    architecture = state.get("architecture") or dict(
        latent_dim=prior.latent_dim, base_channels=prior.base_channels,
        hidden_units=prior.hidden_units)
    encoder, decoder = build_networks(prior.image_shape_, architecture, prior.device_)
    encoder.load_state_dict(state["encoder"])
    decoder.load_state_dict(state["decoder"])
    prior.encoder_ = encoder.eval()
    prior.decoder_ = decoder.eval()
    if "latent_density" in state:
        prior.latent_density_ = LatentDensity._from_mixture(*mixture_from_state(
            state["latent_density"], int(architecture["latent_dim"])))


def getstate(prior: Any) -> dict:
    """The pickled form of a prior: its ``__dict__``, the networks as a torch state.

    Parameters
    ----------
    prior : VAEPrior
        The estimator, fitted or not.

    Returns
    -------
    state : dict
        The parameters and fitted attributes (the latent density as the fitted object
        itself), and the networks under ``"_torch_state"``. The training state (Adam's
        moments, the random streams) is not kept.
    """
    state = {k: v for k, v in prior.__dict__.items() if k not in _NOT_PICKLED}
    if hasattr(prior, "encoder_"):
        state["_torch_state"] = prior_state(prior, with_params=False, with_density=False)
    return state


def setstate(prior: Any, state: dict) -> None:
    """Restore a prior from :func:`getstate`'s form.

    Parameters
    ----------
    prior : VAEPrior
        The new, empty estimator.
    state : dict
        What :func:`getstate` returned.
    """
    torch_state = state.pop("_torch_state", None)
    prior.__dict__.update(state)
    if torch_state is not None:
        restore_fitted(prior, torch_state)


def save(prior: Any, path: str | os.PathLike) -> None:
    """Write a fitted prior to ``path`` atomically (see :meth:`VAEPrior.save`).

    Parameters
    ----------
    prior : VAEPrior
        A fitted prior.
    path : str or path-like
        Destination file in an existing folder.
    """
    path = Path(path)
    if not path.name or path.is_dir():
        raise IsADirectoryError(f"cannot save to {str(path)!r}: it is a folder; give a "
                                "file name, e.g. 'prior.skv'.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: the folder "
                                f"{str(path.parent)!r} does not exist; create it first.")
    state = prior_state(prior)
    state["checksum"] = checksum(state)
    tmp = path.with_name(path.name + ".tmp")
    try:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:   # torch reports an unwritable file this way
            raise OSError(f"cannot write {str(path)!r}: {exc}") from exc
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # what a failed torch.save left (gone if replaced)


def _read(path: Path) -> Any:
    """The object a prior file holds, read by torch's safe loader."""
    if not path.is_file():
        raise FileNotFoundError(f"no prior file at {str(path)!r}")
    with open(path, "rb") as fh:   # an unreadable file: the system's own error
        if not fh.read(1):
            raise ValueError(f"{str(path)!r} is empty, not a prior file written by "
                             "VAEPrior.save.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
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


def _check_format(state: Any, path: Path) -> None:
    """ValueError unless ``state`` is a prior file's contents this release reads."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not a skvaeinv prior file "
                         "(written by VAEPrior.save).")
    version = state.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"{str(path)!r} is a damaged prior file: its format_version "
                         f"is {version!r}, not an integer.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written by a newer skvaeinv (format version "
            f"{state['format_version']}); upgrade skvaeinv to read it.")
    # files written since the checksum exists carry one (torch's own reader does not
    # check the archive's CRCs, so changed bytes in the weights would load silently)
    if "checksum" in state and state["checksum"] != checksum(
            {k: v for k, v in state.items() if k != "checksum"}):
        raise ValueError(f"{str(path)!r} is a damaged prior file: its contents do not "
                         "match the checksum written with them.")


def load(cls: type, path: str | os.PathLike, device: str | None = None) -> Any:
    """Read a prior written by :func:`save` (see :meth:`VAEPrior.load`).

    Parameters
    ----------
    cls : type
        The estimator class (``VAEPrior``).
    path : str or path-like
        The file.
    device : str or None, default=None
        Where the networks go; None: the saved ``device`` parameter's device.

    Returns
    -------
    prior : VAEPrior
        The fitted prior, with the saved parameters.
    """
    path = Path(path)
    state = _read(path)
    _check_format(state, path)
    networks_device = None if device is None else resolve_device(device)
    try:
        params = dict(state["params"])
        if params.get("image_shape") is not None:
            params["image_shape"] = tuple(params["image_shape"])
        prior = cls(**params)
        restore_fitted(prior, state, networks_device)
        prior._check_fitted()   # the saved parameters describe the saved networks
    except (KeyError, TypeError, RuntimeError, ValueError, AttributeError) as exc:
        # missing entries, unknown parameters, weights that do not fit the network,
        # entries of the wrong kind, a latent density that is not positive definite
        raise ValueError(f"{str(path)!r} is a damaged or incompatible prior file "
                         f"({type(exc).__name__}: {exc}).") from exc
    return prior


def _feed(h: Any, value: Any) -> None:
    """Add ``value`` to the hash ``h``: keys, plain values and tensors, recursively."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            h.update(f"<{key!s}>".encode())
            _feed(h, value[key])
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    else:
        h.update(repr(value).encode())


def checksum(state: Any) -> str:
    """SHA-256 of a saved state: every key, plain value and tensor (dtype, shape, bytes).

    Parameters
    ----------
    state : dict
        A file's contents without its checksum.

    Returns
    -------
    digest : str
        The hexadecimal digest.
    """
    h = hashlib.sha256()
    _feed(h, state)
    return h.hexdigest()


def plain_value(value: Any, name: str) -> Any:
    """``value`` as the plain Python types a ``weights_only`` load accepts.

    numpy scalars (as ``np.arange`` grids and ``GridSearchCV.best_params_`` give) become
    Python numbers, tuples lists and devices strings; anything else is refused here, at
    save time, rather than written into a file that cannot be loaded.

    Parameters
    ----------
    value : object
        A parameter's value.
    name : str
        The parameter's name (for the error).

    Returns
    -------
    plain : None, bool, int, float, str or list
        The value in plain form.

    Raises
    ------
    ValueError
        If the value has no plain form.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [plain_value(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"VAEPrior parameter {name}={value!r} cannot be saved: the safe file format holds "
        "numbers, strings and lists only. Set it to a plain value before saving.")
