"""Torch devices and arithmetic precision: which device, which dtype, and plain float32.

:func:`resolve_device` turns a ``device`` parameter into a :class:`torch.device`;
:func:`resolve_precision` and :func:`resolve_dtype` turn a ``precision`` parameter into
the arithmetic used there (bfloat16 only where the device runs it natively, see
:func:`has_native_bfloat16`); :func:`autocast_context` and :func:`ieee_float32` put that
arithmetic in force for a block of code; :func:`is_device_error` tells a failing device
from a bad input.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import torch

__all__ = [
    "resolve_device",
    "SlowPrecisionWarning",
    "has_native_bfloat16",
    "resolve_precision",
    "resolve_dtype",
    "autocast_context",
    "ieee_float32",
    "is_device_error",
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
        to reference kernels, much slower than float32.
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
