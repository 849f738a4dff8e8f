"""Small shared helpers: torch device/precision resolution and input validation."""

from __future__ import annotations

import contextlib
import math
import numbers
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "resolve_dtype",
    "autocast_context",
    "ieee_float32",
    "is_device_error",
    "input_errors",
    "as_real_array",
    "check_finite",
    "int_pair",
    "torch_generator",
]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a user ``device`` parameter into a :class:`torch.device`.

    Parameters
    ----------
    device : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device or None
        ``"auto"`` (or None) picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device
        A CUDA device always with its index: ``"cuda"`` and ``"auto"`` mean the GPU
        current at the call (:func:`torch.cuda.current_device`), so modules and tensors
        stay on one GPU even if the current one changes later.

    Raises
    ------
    ValueError
        If the device string is not understood, or names an accelerator that is not
        available on this machine.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', 'cuda' "
            "or 'cuda:N'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine (torch.cuda.is_available() is False); use device='cpu' or "
                "device='auto'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist."
            )
        if dev.index is None:   # the GPU current now, kept even if the current one changes
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(
                f"device={device!r} was requested but MPS is not available; use 'cpu'."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return dev


class SlowPrecisionWarning(UserWarning):
    """bfloat16 was asked for on a device that can only emulate it (slowly).

    Raised by ``VAEPrior.fit`` and ``LatentInverter.fit`` (and the engine) for
    ``precision="bfloat16"`` where :func:`has_native_bfloat16` is False; filter it with
    :func:`warnings.filterwarnings` to silence it.
    """


def has_native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 convolutions and matrix products at full speed.

    Parameters
    ----------
    device : str or torch.device, default="cpu"
        The torch device to ask about.

    Returns
    -------
    bool
        CUDA: whether that GPU's compute capability is 8.0 or newer (older GPUs
        emulate bfloat16, which :func:`torch.cuda.is_bf16_supported` counts as supported
        by default). CPU: whether oneDNN has bfloat16 kernels for this processor
        (AVX-512, or AVX2 with AVX-NE-CONVERT in recent oneDNN); elsewhere torch falls back
        to reference kernels, 10-20x slower than float32 for the study's network.
        Devices or torch builds that cannot tell count as True.

    Raises
    ------
    ValueError
        For a device that is not available (as ``resolve_device``).
    """
    device = resolve_device(device)
    try:
        if device.type == "cuda":   # native from Ampere (8.0) on; older GPUs emulate it
            return torch.cuda.get_device_properties(device).major >= 8
        if device.type == "cpu":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        pass
    return True


def resolve_precision(precision: str, device: torch.device, *, stacklevel: int = 2) -> str:
    """``"float32"`` or ``"bfloat16"`` for a ``precision`` parameter on ``device``.

    Parameters
    ----------
    precision : {"float32", "bfloat16", "auto"}
        The parameter. ``"auto"`` becomes ``"bfloat16"`` where the device has native
        bfloat16 kernels (:func:`has_native_bfloat16`), ``"float32"`` elsewhere. An
        explicit ``"bfloat16"`` on a device without them is kept, with a
        :class:`SlowPrecisionWarning`.
    device : torch.device
        The device that will run the arithmetic.
    stacklevel : int, default=2
        Frame the warning points at, counted from the caller (1 = the caller's line).

    Returns
    -------
    str
        ``"float32"`` or ``"bfloat16"``.
    """
    if precision in ("float32", "fp32"):
        return "float32"
    if precision == "auto":
        return "bfloat16" if has_native_bfloat16(device) else "float32"
    if precision in ("bfloat16", "bf16"):
        if not has_native_bfloat16(device):
            what = ("this GPU has no native bfloat16 support (compute capability 8.0 or "
                    "newer)" if device.type == "cuda" else "this processor has no native "
                    "bfloat16 kernels (AVX-512 or newer)")
            warnings.warn(
                f"precision='bfloat16' on {device}: {what}, so torch emulates them, "
                "typically 10-20x slower than float32. Use precision='float32', or "
                "precision='auto' to use bfloat16 only where it is fast.",
                SlowPrecisionWarning, stacklevel=stacklevel + 1)
        return "bfloat16"
    raise ValueError(f"precision={precision!r} is not supported; use 'float32', "
                     "'bfloat16' or 'auto'.")


def resolve_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype for a resolved ``precision`` (None means plain float32)."""
    if precision in ("float32", "fp32"):
        return None
    if precision in ("bfloat16", "bf16"):
        return torch.bfloat16
    raise ValueError(f"precision={precision!r} is not supported; use 'float32' or 'bfloat16'.")


def autocast_context(device: torch.device, precision: str):
    """Context manager for mixed precision on ``device`` (a no-op for float32)."""
    dtype = resolve_dtype(precision)
    if dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=dtype)


# ieee_float32 changes torch's process-wide cuDNN setting: the first block to enter (in
# any thread) saves and sets it, the last to leave restores it
_TF32_LOCK = threading.RLock()
_tf32_state: dict[str, Any] = {"depth": 0, "saved": None}


def _effective_conv_precision(cudnn: Any) -> str | None:
    """cuDNN's float32 convolution precision after inheritance (torch >= 2.9), else None."""
    conv = getattr(cudnn, "conv", None)
    if not hasattr(conv, "fp32_precision"):
        return None
    for value in (conv.fp32_precision, getattr(cudnn, "fp32_precision", "none"),
                  getattr(torch.backends, "fp32_precision", "none")):
        if value != "none":
            return value
    return "ieee"


def _switch_tf32_off() -> tuple:
    cudnn = torch.backends.cudnn
    leaves = [leaf for leaf in (getattr(cudnn, "conv", None), getattr(cudnn, "rnn", None))
              if hasattr(leaf, "fp32_precision")]
    saved_leaves = [(leaf, leaf.fp32_precision) for leaf in leaves]
    try:
        old = cudnn.allow_tf32
    except RuntimeError:   # torch >= 2.9 after a mix of its two APIs: no single answer
        old = None
    saved = old, saved_leaves
    try:
        cudnn.allow_tf32 = False
        # torch >= 2.9: the old flag leaves the operators' own setting at "none", which
        # inherits a "tf32" set on cuDNN or on torch.backends with the newer API
        if _effective_conv_precision(cudnn) == "tf32":
            for leaf in leaves:
                leaf.fp32_precision = "ieee"
    except BaseException:
        _restore_tf32(saved)
        raise
    return saved


def _restore_tf32(saved: tuple) -> None:
    old, saved_leaves = saved
    if old is not None:
        torch.backends.cudnn.allow_tf32 = old
    for leaf, value in saved_leaves:
        leaf.fp32_precision = value


@contextlib.contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """Plain float32 arithmetic on ``device`` inside the block: no TF32, no outer autocast.

    - On CUDA, torch lets cuDNN run float32 convolutions on TF32 tensor cores by default.
      TF32 keeps 10 mantissa bits, so ``precision="float32"`` on a GPU would silently be
      a coarser arithmetic than on the CPU, and GPU results would differ from CPU ones
      by far more than float32 rounding. Inside the block cuDNN's convolutions are plain
      float32 (whichever of torch's two APIs set TF32). The setting is process-wide:
      while any thread is inside such a block, every thread's convolutions are float32;
      the first block to enter saves torch's setting and the last to leave restores it,
      exceptions included. Matrix products follow torch's own setting (IEEE unless
      ``torch.set_float32_matmul_precision`` chose otherwise).
    - On every device, an autocast region of the caller (``torch.autocast``) is switched
      off in the block, so the package's float32 parts stay float32; its own bfloat16
      decoding re-enables autocast inside (:func:`autocast_context`). torch's cast
      cache is off in the block: it is cleared only when the outermost autocast region
      ends, so over a whole training run it would keep stale bfloat16 copies of the
      weights (and every iterate's copy in an inversion).

    Parameters
    ----------
    device : torch.device
        The device that runs the arithmetic.

    Yields
    ------
    None
        Control, with the settings above in force.
    """
    with torch.autocast(device_type=device.type, enabled=False, cache_enabled=False):
        if device.type != "cuda":
            yield
            return
        with _TF32_LOCK:
            if _tf32_state["depth"] == 0:
                _tf32_state["saved"] = _switch_tf32_off()
            _tf32_state["depth"] += 1
        try:
            yield
        finally:
            with _TF32_LOCK:
                _tf32_state["depth"] -= 1
                if _tf32_state["depth"] == 0:
                    _restore_tf32(_tf32_state["saved"])
                    _tf32_state["saved"] = None


#: RuntimeError subclasses that mean the device itself failed (torch >= 2.1 names them
#: differently across versions)
_DEVICE_ERROR_TYPES = tuple({e for e in (getattr(torch, "OutOfMemoryError", None),
                                         getattr(torch.cuda, "OutOfMemoryError", None),
                                         getattr(torch, "AcceleratorError", None))
                             if e is not None})


def is_device_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the device failed (out of memory, a CUDA error), so that a
    check of the user's input must pass it on as it is rather than blame the input."""
    if isinstance(exc, _DEVICE_ERROR_TYPES):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUDA error" in text
                                              or "out of memory" in text)


@contextlib.contextmanager
def input_errors(catch: type[BaseException] | tuple[type[BaseException], ...],
                 message: Any) -> Iterator[None]:
    """Turn ``catch`` exceptions raised in the block into ``ValueError(message(exc))``.

    For checks that run the user's input (a decoder, a petrophysics mapping) once: a
    failure there is the input's, and the message says how to fix it. Errors that say
    the device failed (:func:`is_device_error`) pass unchanged.

    Parameters
    ----------
    catch : exception type or tuple of types
        What the check blames on the input.
    message : callable
        ``message(exc) -> str``, the ValueError's text.

    Yields
    ------
    None
        Control, for the check.
    """
    try:
        yield
    except catch as exc:
        if is_device_error(exc):
            raise
        raise ValueError(message(exc)) from exc


def as_real_array(values: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """Return ``values`` as a real ``dtype`` array, or raise a ValueError naming ``name``.

    Complex input is refused rather than silently losing its imaginary part.
    """
    try:
        if np.iscomplexobj(values):
            raise ValueError(f"Complex data not supported: {name} must be real; pass "
                             f"np.real(...) or np.abs(...) if that is what you mean.")
        return np.asarray(values, dtype=dtype)
    except ValueError as exc:
        if str(exc).startswith("Complex data"):
            raise
        raise ValueError(f"{name} could not be converted to a float array: {exc}") from exc
    except TypeError as exc:
        raise ValueError(f"{name} could not be converted to a float array: {exc}") from exc
    except RuntimeError as exc:  # e.g. a torch tensor that requires grad
        raise ValueError(f"{name} could not be converted to a numpy array ({exc}); pass "
                         "tensor.detach() for a torch tensor.") from exc


def int_pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """``value`` as a pair of integers ``>= minimum``, or a ValueError naming ``name``.

    Integral floats (``64.0``) are accepted; ``2.7``, booleans, strings, NaN and
    sequences of another length are not.
    """
    items = whole_numbers(value, 2, minimum)
    if items is None:
        raise ValueError(f"{name} must be a pair of integers >= {minimum}, got {value!r}.")
    return items[0], items[1]


def whole_numbers(value: Any, length: int, minimum: float = -math.inf
                  ) -> tuple[int, ...] | None:
    """``value`` as ``length`` integers ``>= minimum``, or None if it is not that.

    Integral floats (``64.0``) count as integers; ``2.7``, booleans, strings and NaN
    do not.
    """
    try:
        items = list(value)
    except TypeError:
        return None
    ok = len(items) == length and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
        and float(v) == int(v) and int(v) >= minimum for v in items)
    return tuple(int(v) for v in items) if ok else None


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise a ValueError naming ``name`` if ``array`` holds NaN or inf."""
    if not np.all(np.isfinite(array)):
        n_bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s); remove or impute them first."
        )


def torch_generator(seed: int | np.random.Generator | Any, device: torch.device | str = "cpu"
                    ) -> torch.Generator:
    """A torch Generator seeded from an int or from a numpy Generator."""
    if isinstance(seed, np.random.Generator):
        seed = int(seed.integers(0, 2**63 - 1))
    elif not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int or numpy Generator, got {type(seed).__name__}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def load_plain_npy(path: Any, what: str, *, keep_dtype: bool = False) -> np.ndarray:
    """Load a ``.npy`` file safely (``allow_pickle=False``) as a real numeric array.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file.
    what : str
        What the file holds, for error messages (e.g. "training image").
    keep_dtype : bool, default=False
        Return the array with its stored (boolean, integer or float) dtype instead of
        float64.

    Returns
    -------
    ndarray
        The array, float64 unless ``keep_dtype``.

    Raises
    ------
    ValueError
        Naming ``what`` and the file, when it holds pickled objects or is not a real
        numeric array (strings, dates, complex or structured values are refused).
    """
    try:
        arr = np.load(path, allow_pickle=False)
        if arr.dtype.kind == "c":
            as_real_array(arr, f"{what} file {str(path)!r}")   # raises its complex error
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"its dtype is {arr.dtype}, not a number type")
        return arr if keep_dtype else arr.astype(np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a plain numeric .npy array: "
                         f"{exc}") from exc
