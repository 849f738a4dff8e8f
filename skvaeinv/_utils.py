"""Small shared helpers: torch device/precision resolution and input validation."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch

__all__ = [
    "resolve_device",
    "resolve_dtype",
    "autocast_context",
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

    Raises
    ------
    ValueError
        If the device string is not understood, or names an accelerator that is not
        available on this machine.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(
                f"device={device!r} was requested but MPS is not available; use 'cpu'."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'auto', 'cpu' or 'cuda'.")
    return dev


def resolve_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype for a ``precision`` parameter (None means plain float32)."""
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
    try:
        items = list(value)
    except TypeError:
        items = []
    ok = len(items) == 2 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
        and float(v) == int(v) and int(v) >= minimum for v in items)
    if not ok:
        raise ValueError(f"{name} must be a pair of integers >= {minimum}, got {value!r}.")
    return int(items[0]), int(items[1])


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


def load_plain_npy(path: Any, what: str) -> np.ndarray:
    """Load a ``.npy`` file safely (``allow_pickle=False``) as a float64 array.

    Parameters
    ----------
    path : str or path-like
        The ``.npy`` file.
    what : str
        What the file holds, for error messages (e.g. "training image").

    Returns
    -------
    ndarray of float64
        The array.

    Raises
    ------
    ValueError
        Naming ``what`` and the file, when it holds pickled objects or is not a real
        numeric array.
    """
    try:
        arr = np.load(path, allow_pickle=False)
        return as_real_array(arr, f"{what} file {str(path)!r}")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a plain numeric .npy array: "
                         f"{exc}") from exc
