"""Petrophysical mappings from facies images to slowness.

A petrophysical mapping ``h`` turns a facies image ``m`` (values in [0, 1], 1 = channel)
into the slowness ``s = h(m)`` (ns/m) that the forward operators see. Inside the latent
inversion it sits between the decoder and the forward operator, so it must be
differentiable for torch tensors; every mapping here also accepts numpy arrays.

The reference study (Lopez-Alvis et al., 2021) uses a velocity that is linear in the
facies value, ``v = 0.06 m + 0.08 (1 - m)`` m/ns (channel 0.06, matrix 0.08), and the
slowness ``s = 1 / v``: :class:`LinearVelocity`.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from skvaeinv._validation import as_real_array, input_errors

__all__ = ["LinearVelocity", "check_petrophysics"]


class LinearVelocity(BaseEstimator):
    """Velocity linear in the facies value; returns slowness.

    ``v(m) = v_channel * m + v_matrix * (1 - m)`` and ``s(m) = 1 / v(m)``.

    A scikit-learn estimator in the parameter sense: the velocities are stored as
    given and checked when the mapping is used, so :func:`sklearn.base.clone`,
    ``get_params`` and ``set_params`` work, also through a
    :class:`~skvaeinv.LatentInverter` (``set_params(petrophysics__v_channel=0.05)``).
    Two mappings are equal when they are of the same class with equal parameters.

    Parameters
    ----------
    v_channel : float, default=0.06
        Velocity (m/ns) where ``m = 1`` (channel).
    v_matrix : float, default=0.08
        Velocity (m/ns) where ``m = 0`` (matrix).

    See Also
    --------
    check_petrophysics : Turn the ``petrophysics`` parameter of
        :class:`~skvaeinv.LatentInverter` into a callable.

    Examples
    --------
    >>> import numpy as np
    >>> h = LinearVelocity()
    >>> h(np.array([0.0, 1.0]))
    array([12.5       , 16.66666667])
    >>> h.velocity(np.array([0.5]))
    array([0.07])
    """

    def __init__(self, v_channel: float = 0.06, v_matrix: float = 0.08) -> None:
        self.v_channel = v_channel
        self.v_matrix = v_matrix

    def _check(self) -> None:
        """Raise a ValueError unless both velocities are positive finite numbers."""
        for name in ("v_channel", "v_matrix"):
            value = getattr(self, name)
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not np.isfinite(value) or value <= 0):
                raise ValueError(
                    f"LinearVelocity: {name}={value!r} must be a positive finite velocity "
                    "(m/ns)."
                )

    def velocity(self, m: Any) -> Any:
        """Velocity ``v_channel * m + v_matrix * (1 - m)`` (m/ns), same type as ``m``.

        Parameters
        ----------
        m : float, ndarray or torch.Tensor
            Facies values in [0, 1] (1 = channel), of any shape.

        Returns
        -------
        v : float, ndarray or torch.Tensor
            Velocity (m/ns) of each value, of the same type and shape as ``m``.

        Raises
        ------
        ValueError
            If ``v_channel`` or ``v_matrix`` is not a positive finite number.
        """
        self._check()
        return self.v_matrix + (self.v_channel - self.v_matrix) * m

    def __call__(self, m: Any) -> Any:
        """Slowness ``1 / v(m)`` (ns/m) of a facies image.

        Parameters
        ----------
        m : float, array-like or torch.Tensor
            Facies values in [0, 1] (1 = channel), of any shape. Numpy input (and
            lists, numbers) is checked to be finite and in [0, 1]; torch tensors are
            not checked (they are the inversion's differentiable path).

        Returns
        -------
        s : float, ndarray or torch.Tensor
            Slowness (ns/m), of the same shape as ``m`` (numpy for non-tensor input).

        Raises
        ------
        ValueError
            For numpy facies outside [0, 1] or non-finite, or invalid velocities.
        """
        if not isinstance(m, torch.Tensor):
            m = as_real_array(m, "facies m")
            if not np.all(np.isfinite(m)):
                raise ValueError("facies values must be finite and lie in [0, 1] "
                                 "(1 = channel); got NaN or infinite values.")
            if m.size and (m.min() < 0 or m.max() > 1):
                raise ValueError(
                    f"facies values must be finite and lie in [0, 1] (1 = channel); got "
                    f"values in [{m.min():.4g}, {m.max():.4g}]. Rescale the image first "
                    "(e.g. m / 255 for an 8-bit picture).")
            if m.ndim == 0:
                return float(1.0 / self.velocity(float(m)))
        return 1.0 / self.velocity(m)

    def __eq__(self, other: object) -> bool:
        return (type(other) is type(self)
                and other.get_params(deep=False) == self.get_params(deep=False))

    __hash__ = None  # mutable parameters


def check_petrophysics(petrophysics: Any, image_shape: tuple[int, int] | None = None,
                       device: Any = None) -> Callable[[Any], Any]:
    """Turn a ``petrophysics`` parameter into a callable facies → slowness.

    Parameters
    ----------
    petrophysics : None, callable or tuple of two floats
        ``None`` gives the reference :class:`LinearVelocity` (channel 0.06 m/ns, matrix
        0.08 m/ns). A ``(v_matrix, v_channel)`` pair gives a :class:`LinearVelocity` with
        those velocities. A callable is returned as-is; it must map a float32 torch tensor
        of facies images, shape ``(n_images, H, W)``, to slowness of the same shape,
        differentiably. This one form is what the inversion, the check below and
        ``apply_numpy`` (hence ``LatentInverter.predict``) call it with, so a mapping
        may vary in space (e.g. broadcast an ``(H, W)`` or ``(H, 1)`` field). The tensors
        live on the inversion's device in the inversion and on the CPU in the check (and
        once on ``device``, when given) and in ``apply_numpy``: move any tensor of
        the mapping's own to ``m.device``.
    image_shape : tuple of int, default=None
        When given, the mapping is also tried on a batch of three uniform facies images
        of this shape (all 0, all 0.5, all 1): it must return slowness of the same shape,
        finite and positive, and a tensor that carries the gradient of facies that
        require one (not detached, not numpy), or a ``ValueError`` says what it
        returned. This catches a wrong mapping before an inversion starts.
    device : str or torch.device, default=None
        With ``image_shape``: where the inversion will run. For a device other than the
        CPU the mapping is also tried there on one image, so that a tensor of its own
        left on the CPU is reported now, with the fix, rather than by the first
        iteration of the inversion.

    Returns
    -------
    callable
        The mapping facies → slowness (ns/m), for numpy arrays and torch tensors.

    Raises
    ------
    ValueError
        For anything else, for non-positive velocities, or for a mapping that fails the
        check on ``image_shape`` images.
    """
    h = _as_mapping(petrophysics)
    if image_shape is not None:
        # on a copy: a mapping with state (e.g. a call counter) is not advanced by it
        shape = tuple(int(n) for n in image_shape)
        _probe(copy.deepcopy(h), petrophysics, shape)
        device = None if device is None else torch.device(device)
        if device is not None and device.type != "cpu":
            _probe_device(copy.deepcopy(h), petrophysics, shape, device)
    return h


def _probe_device(h: Callable[[Any], Any], given: Any, image_shape: tuple[int, int],
                  device: torch.device) -> None:
    """Run ``h`` once on ``device``: its output must be a tensor there."""
    m = torch.full((1, *image_shape), 0.5, dtype=torch.float32, device=device)
    with input_errors(Exception, lambda exc: (
            f"petrophysics={given!r} failed on a batch of facies images on {device} "
            f"(the inversion's device): {exc}. A mapping gets its facies on the "
            "inversion's device; move any tensor of its own there (e.g. "
            "`field.to(m.device)`).")), torch.no_grad():
        s = h(m)
    if not isinstance(s, torch.Tensor) or s.device != m.device:
        where = s.device if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(
            f"petrophysics={given!r} returned its slowness on {where} for facies on "
            f"{device}; it must return a tensor on the facies' device, differentiably.")


def _probe(h: Callable[[Any], Any], given: Any, image_shape: tuple[int, int]) -> None:
    """Check ``h`` on uniform facies images 0, 0.5 and 1 of ``image_shape``."""
    levels = np.array([0.0, 0.5, 1.0])
    m = np.broadcast_to(levels[:, None, None], (3, *image_shape))
    try:
        s = apply_numpy(h, m)
    except Exception as exc:
        raise ValueError(
            f"petrophysics={given!r} failed on a batch of facies images of shape "
            f"{m.shape} (float32 torch tensor, values in [0, 1]): {exc}") from exc
    if s.shape != m.shape:
        raise ValueError(
            f"petrophysics={given!r} returned shape {s.shape} for facies images of shape "
            f"{m.shape}; it must return one slowness per pixel (the same shape).")
    bad = ~(np.isfinite(s) & (s > 0))
    if bad.any():
        i = np.flatnonzero(bad.any(axis=(1, 2)))[0]   # the first failing level
        level, value = levels[i], s[i][bad[i]][0]
        raise ValueError(
            f"petrophysics={given!r} must map facies in [0, 1] to finite, positive slowness "
            f"(ns/m); for facies {level:g} it returned {float(value)!r}. Check the mapping (is it "
            "velocity instead of slowness, or in other units?).")
    # the inversion differentiates through it: a detached or numpy result would leave
    # the data misfit without a gradient, and the starts would move by the ring alone
    # (not a leaf, as the decoder's output is not)
    try:
        with torch.enable_grad():   # also when the caller runs under torch.no_grad()
            x = torch.full((1, *image_shape), 0.5, dtype=torch.float32,
                           requires_grad=True) * 1.0
            out = h(x)
    except Exception as exc:
        raise ValueError(
            f"petrophysics={given!r} failed on facies images that require a gradient, as "
            f"the inversion passes them: {exc}") from exc
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        what = (f"a {type(out).__name__}" if not isinstance(out, torch.Tensor)
                else "a tensor without a gradient (detached, or computed outside torch)")
        raise ValueError(
            f"petrophysics={given!r} must be differentiable on torch tensors: for facies "
            f"that require a gradient it returned {what}. Write it with torch operations "
            "on its input (no .detach(), .numpy() or torch.no_grad()).")


def _as_mapping(petrophysics: Any) -> Callable[[Any], Any]:
    if petrophysics is None:
        return LinearVelocity()
    if isinstance(petrophysics, tuple):
        if len(petrophysics) != 2:
            raise ValueError(
                f"petrophysics={petrophysics!r}: a tuple must be a (v_matrix, v_channel) "
                "velocity pair in m/ns."
            )
        h = LinearVelocity(v_channel=petrophysics[1], v_matrix=petrophysics[0])
        try:
            h._check()
        except ValueError as exc:
            raise ValueError(
                f"petrophysics={petrophysics!r}: both velocities of the (v_matrix, v_channel) "
                "velocity pair must be positive finite numbers (m/ns)."
            ) from exc
        _check_contrast(h, petrophysics)
        return h
    if callable(petrophysics):
        if isinstance(petrophysics, LinearVelocity):
            petrophysics._check()
            _check_contrast(petrophysics, petrophysics)
        return petrophysics
    raise ValueError(
        f"petrophysics={petrophysics!r} is not supported; expected None, a callable "
        "mapping facies to slowness, or a (v_matrix, v_channel) velocity pair."
    )


def _check_contrast(h: LinearVelocity, given: Any) -> None:
    if h.v_channel == h.v_matrix:
        raise ValueError(
            f"petrophysics={given!r}: the channel and matrix velocities are equal, so the "
            "traveltimes would not depend on the facies; give two different velocities.")


def apply_numpy(petrophysics: Callable[[Any], Any], m: np.ndarray) -> np.ndarray:
    """Apply a mapping to a numpy array.

    A :class:`LinearVelocity` takes the array itself (in float64); any other mapping is
    applied to it as a float32 torch tensor, the form the inversion uses, and its output
    is returned as a float64 numpy array.

    Parameters
    ----------
    petrophysics : callable
        A facies → slowness mapping (see :func:`check_petrophysics`).
    m : ndarray
        Facies values in [0, 1]; for a mapping of images, a batch ``(n_images, H, W)``
        (``m[None]`` for one image).

    Returns
    -------
    ndarray of float64
        Slowness of each value of ``m``.
    """
    if isinstance(petrophysics, LinearVelocity):
        return petrophysics(np.asarray(m, dtype=np.float64))
    with torch.no_grad():
        # a copy: an in-place mapping must not change the caller's array
        out = petrophysics(torch.from_numpy(np.array(m, dtype=np.float32)))
    if isinstance(out, torch.Tensor):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float64)
