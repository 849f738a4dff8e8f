"""Training data: a procedural channel generator, image loading and patch extraction.

:func:`make_channels` is the package's embedded default data (no download): binary
images of sinuous sand channels (1) in a clay matrix (0). :func:`load_training_image`
and :func:`extract_patches` turn a user's training image into training crops, with a
row band and excluded windows so that a prior is never trained on its test models.
"""

from __future__ import annotations

import logging
import numbers
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.utils import check_random_state

from skvaeinv._files import load_plain_npy
from skvaeinv._validation import as_real_array, check_finite, int_pair, whole_numbers

__all__ = ["make_channels", "load_training_image", "extract_patches"]

logger = logging.getLogger(__name__)


#: Pixels per chunk of images in make_channels (bounds its working memory).
_CHUNK_PIXELS = 1_000_000
#: A shortfall of the mean channel proportion (absolute) that make_channels warns about.
_SHORT_OF_TARGET = 0.02


def _as_range(value: Any, name: str, *, positive: bool = True) -> tuple[float, float]:
    """A scalar or a (low, high) pair as a float range."""
    if isinstance(value, numbers.Real):
        lo = hi = float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a (low, high) pair, "
                             f"got {value!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo > hi or (positive and lo <= 0):
        raise ValueError(
            f"{name}={value!r} is invalid: expected {'positive ' if positive else ''}finite "
            "values with low <= high.")
    return lo, hi


def make_channels(n_samples: int = 100, shape: tuple[int, int] = (129, 65), *,
                  width: float | tuple[float, float] = (5.0, 9.0),
                  n_channels: int | tuple[int, int] | None = None,
                  proportion: float | None = None,
                  sinuosity: float = 0.12,
                  wavelength: float | tuple[float, float] = (60.0, 200.0),
                  orientation: float = 0.0,
                  orientation_spread: float = 15.0,
                  max_channels: int = 24,
                  dtype: Any = np.float32,
                  random_state: int | np.random.RandomState | None = None) -> np.ndarray:
    """Procedural images of sinuous channels (1) in a matrix (0).

    Each channel is a band of constant perpendicular ``width`` around a centreline made
    of two superposed sine waves, rotated by an angle drawn around ``orientation``.
    This is the package's built-in training data, deterministic for a given
    ``random_state``.

    Parameters
    ----------
    n_samples : int, default=100
        Number of images.
    shape : tuple of int, default=(129, 65)
        (H, W): rows (depth) x columns.
    width : float or (float, float), default=(5.0, 9.0)
        Channel width in pixels, or a range to draw each channel's width from.
    n_channels : int or (int, int) or None, default=None
        Channels per image (a range ``(low, high)`` draws the count per image, both
        included). Give either this or ``proportion``.
    proportion : float or None, default=None
        Target channel proportion per image in (0, 1). Channels are added one by one and
        the count whose proportion is closest to the target is kept (at most
        ``max_channels``). None with ``n_channels`` None means 0.27 (the reference
        training image has 0.26).
    sinuosity : float, default=0.12
        Amplitude of the centreline's meanders as a fraction of their wavelength
        (0 gives straight channels).
    wavelength : float or (float, float), default=(60.0, 200.0)
        Meander wavelength in pixels (or a range to draw from).
    orientation : float, default=0.0
        Mean channel direction in degrees from the horizontal (x) axis.
    orientation_spread : float, default=15.0
        Each channel's direction is drawn uniformly within +/- this many degrees.
    max_channels : int, default=24
        Upper bound on channels per image when ``proportion`` is set.
    dtype : numpy dtype, default=np.float32
        Output dtype.
    random_state : int, RandomState instance or None, default=None
        Seed; the same seed gives the same images.

    Returns
    -------
    images : ndarray of shape (n_samples, H, W)
        Binary images (values 0 and 1).

    Warns
    -----
    UserWarning
        When ``max_channels`` channels cannot reach ``proportion``: the images' mean
        proportion falls more than 0.02 short of it (large images need more channels).

    Examples
    --------
    >>> from skvaeinv.datasets import make_channels
    >>> X = make_channels(10, shape=(64, 32), random_state=0)
    >>> X.shape, sorted(set(X.ravel().tolist()))
    ((10, 64, 32), [0.0, 1.0])
    """
    if (not isinstance(n_samples, numbers.Integral) or isinstance(n_samples, bool)
            or n_samples < 1):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    spec = _channel_spec(shape, width=width, n_channels=n_channels, proportion=proportion,
                         sinuosity=sinuosity, wavelength=wavelength, orientation=orientation,
                         orientation_spread=orientation_spread, max_channels=max_channels)
    rng = check_random_state(random_state)
    n = int(n_samples)
    # Draw every random number up front (in a fixed order) so the output does not
    # depend on the chunking below.
    draws = _draw_channels(rng, spec, n)
    h, w = spec.h, spec.w
    x = np.arange(w, dtype=np.float64) + 0.5 - w / 2          # columns, centred
    zz = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None]
    out = np.empty((n, h, w), dtype=dtype)
    short = np.zeros(n)   # how far all max_channels channels stay below the target
    # Chunks of images bound the memory (the centrelines are (c, K, W), the masks
    # (c, H, W)).
    chunk = max(1, _CHUNK_PIXELS // (h * w))
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        centre, half = _centrelines(draws, sl, x, h, w)
        want = None if draws.counts is None else draws.counts[sl]
        out[sl], short_sl = _rasterise(centre, half, zz, spec, want)
        if short_sl is not None:
            short[sl] = short_sl
    _warn_if_short(out, short, spec)
    if spec.steep:
        out = np.ascontiguousarray(out.transpose(0, 2, 1))
    return out


class _ChannelSpec(NamedTuple):
    """Checked settings of :func:`make_channels`, in the frame where the channels run
    within 45 degrees of the x axis (the image transposed when ``steep``)."""

    h: int
    w: int
    width: tuple[float, float]
    wavelength: tuple[float, float]
    sinuosity: float
    orientation: float
    orientation_spread: float
    proportion: float | None          # the target proportion, or None ...
    counts: tuple[int, int] | None    # ... for a range of channel counts per image
    k_max: int                        # channels drawn per image
    steep: bool


def _channel_spec(shape: Any, *, width: Any, n_channels: Any, proportion: Any,
                  sinuosity: Any, wavelength: Any, orientation: Any,
                  orientation_spread: Any, max_channels: Any) -> _ChannelSpec:
    """Check the parameters of :func:`make_channels` (errors name them)."""
    h, w = int_pair(shape, "shape (H, W)")
    width_r = _as_range(width, "width")
    wave_r = _as_range(wavelength, "wavelength")
    for name, value in (("sinuosity", sinuosity), ("orientation", orientation),
                        ("orientation_spread", orientation_spread)):
        if not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if sinuosity < 0:
        raise ValueError(f"sinuosity must be >= 0, got {sinuosity!r}.")
    proportion, counts, k_max = _channel_counts(n_channels, proportion, max_channels)
    # Channels are rasterised column by column along their mean direction; for steep
    # directions the image is generated transposed and turned back.
    steep = abs(((orientation + 90.0) % 180.0) - 90.0) > 45.0
    if steep:
        h, w = w, h
        orientation = 90.0 - orientation
    return _ChannelSpec(h, w, width_r, wave_r, sinuosity, orientation, orientation_spread,
                        proportion, counts, k_max, steep)


def _channel_counts(n_channels: Any, proportion: Any, max_channels: Any
                    ) -> tuple[float | None, tuple[int, int] | None, int]:
    """``(proportion, (low, high) channel counts, channels drawn per image)``: one of the
    first two is None."""
    if proportion is not None and n_channels is not None:
        raise ValueError(f"give either proportion ({proportion!r}) or n_channels "
                         f"({n_channels!r}), not both.")
    if proportion is None and n_channels is None:
        proportion = 0.27
    if proportion is not None:
        if (not isinstance(proportion, numbers.Real) or isinstance(proportion, bool)
                or not 0.0 < proportion < 1.0):
            raise ValueError(f"proportion must be a number in (0, 1), got {proportion!r}.")
        if not isinstance(max_channels, numbers.Integral) or max_channels < 1:
            raise ValueError(f"max_channels must be a positive integer, got {max_channels!r}.")
        return proportion, None, int(max_channels)
    if isinstance(n_channels, numbers.Integral):
        lo = hi = int(n_channels)
    elif (isinstance(n_channels, Sequence) and len(n_channels) == 2
          and all(isinstance(v, numbers.Integral) for v in n_channels)):
        lo, hi = (int(v) for v in n_channels)
    else:
        raise ValueError(f"n_channels must be an int or a pair (low, high) of ints, "
                         f"got {n_channels!r}.")
    if lo < 0 or hi < lo:
        raise ValueError(f"n_channels={n_channels!r} is invalid: need 0 <= low <= high.")
    return None, (lo, hi), max(int(hi), 1)


class _ChannelDraws(NamedTuple):
    """The random numbers of :func:`make_channels`, per image and channel."""

    theta: np.ndarray      # direction (radians), (n, K)
    widths: np.ndarray     # (n, K)
    lam: np.ndarray        # wavelengths of the two meanders, (n, K, 2)
    amp: np.ndarray        # their amplitudes, (n, K, 2)
    phase: np.ndarray      # (n, K, 2)
    centre_u: np.ndarray   # offset of the centreline in [0, 1], (n, K)
    counts: np.ndarray | None   # channels per image, without a target proportion


def _draw_channels(rng: np.random.RandomState, spec: _ChannelSpec, n: int) -> _ChannelDraws:
    """Every random number of ``n`` images, drawn in a fixed order."""
    k_max = spec.k_max
    theta = np.deg2rad(spec.orientation + rng.uniform(-spec.orientation_spread,
                                                      spec.orientation_spread, (n, k_max)))
    widths = rng.uniform(*spec.width, (n, k_max))
    lam = rng.uniform(*spec.wavelength, (n, k_max, 2))
    amp = spec.sinuosity * lam * rng.uniform(0.3, 1.0, (n, k_max, 2)) / np.array([1.0, 2.0])
    phase = rng.uniform(0, 2 * np.pi, (n, k_max, 2))
    centre_u = rng.uniform(0.0, 1.0, (n, k_max))
    counts = None if spec.counts is None else rng.randint(spec.counts[0], spec.counts[1] + 1, n)
    return _ChannelDraws(theta, widths, lam, amp, phase, centre_u, counts)


def _centrelines(d: _ChannelDraws, sl: slice, x: np.ndarray, h: int, w: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Centreline ``z`` and vertical half thickness of the channels of images ``sl`` at
    the columns ``x``, both float32 of shape (c, K, 1, W).

    The centreline is ``z_c(x) = offset + x tan(theta) + two meanders``; the vertical
    half thickness ``w / (2 cos(atan(dz_c/dx)))`` keeps the perpendicular width constant.
    """
    k = 2 * np.pi / d.lam[sl]                                  # (c, K, 2)
    arg = k[..., None] * x + d.phase[sl, ..., None]            # (c, K, 2, W)
    tan = np.tan(d.theta[sl])[..., None]
    reach = (0.5 * h + 0.5 * w * np.abs(tan) + d.amp[sl].sum(-1)[..., None]
             + d.widths[sl, :, None])
    centre = ((d.centre_u[sl, :, None] * 2 - 1) * reach + x * tan
              + (d.amp[sl, ..., None] * np.sin(arg)).sum(axis=2))
    slope = tan + (d.amp[sl, ..., None] * k[..., None] * np.cos(arg)).sum(axis=2)
    half = 0.5 * d.widths[sl, :, None] * np.sqrt(1.0 + slope**2)
    return centre.astype(np.float32)[:, :, None, :], half.astype(np.float32)[:, :, None, :]


def _rasterise(centre: np.ndarray, half: np.ndarray, zz: np.ndarray, spec: _ChannelSpec,
               want: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Binary images (c, H, W) of the channels, added one at a time to the union of the
    previous ones: ``want`` of them, or the count closest to the target proportion.

    Also returns, with a target, how far all ``k_max`` channels stay below it.
    """
    c = centre.shape[0]
    union = np.zeros((c, spec.h, spec.w), dtype=bool)
    img = np.zeros((c, spec.h, spec.w), dtype=bool)
    best = np.full(c, np.inf)
    for j in range(spec.k_max):
        union |= np.abs(zz - centre[:, j]) < half[:, j]      # (c, H, W)
        if spec.proportion is not None:  # keep the count closest to the target (first)
            miss = np.abs(union.mean(axis=(1, 2)) - spec.proportion)
            better = miss < best
            best[better] = miss[better]
            img[better] = union[better]
        else:
            img[want == j + 1] = union[want == j + 1]
    if spec.proportion is None:
        return img, None
    return img, spec.proportion - union.mean(axis=(1, 2))


def _warn_if_short(images: np.ndarray, short: np.ndarray, spec: _ChannelSpec) -> None:
    """Warn (at make_channels' caller) when the images' mean proportion falls short of the
    target by more than ``_SHORT_OF_TARGET``."""
    capped = short > 0
    if spec.proportion is None or not capped.any():
        return
    achieved = float(images.mean(dtype=np.float64))
    if achieved < spec.proportion - _SHORT_OF_TARGET:
        warnings.warn(
            f"the images' channel proportion is {achieved:.3g}, short of "
            f"proportion={spec.proportion:g}: {int(capped.sum())} of {len(images)} images "
            f"stay below it even with max_channels={spec.k_max} channels. Raise "
            "max_channels (large images need more channels) or widen the channels.",
            UserWarning, stacklevel=3)


def load_training_image(path: str | os.PathLike, *, threshold: float | None = None
                        ) -> np.ndarray:
    """Read a training image from a PNG (or other Pillow format) or ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        A picture Pillow reads (PNG, TIFF, ...) or a ``.npy`` array of shape (H, W)
        (or (H, W, 3|4), averaged over colours after scaling; alpha is ignored), loaded
        with ``allow_pickle=False``. Colour pictures are converted to greyscale. Values
        are scaled to [0, 1]: values already in [0, 1] are kept (a 0/1 picture stays
        binary), whole numbers up to 255 are divided by 255, and those of a 16- or
        32-bit integer picture (or integer ``.npy`` array) with values above 255 by
        65535. Anything else (negative values, fractions above 1, larger
        numbers, NaN) is an error.
    threshold : float or None, default=None
        If given, binarise: values >= threshold (on the [0, 1] scale) become 1.

    Returns
    -------
    image : ndarray of shape (H, W), float32
        Values in [0, 1] (1 = channel).
    """
    if threshold is not None and (not isinstance(threshold, numbers.Real)
                                  or not 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be a number in [0, 1] or None, got {threshold!r}.")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training image at {str(path)!r}")
    if path.suffix.lower() == ".npy":
        arr = load_plain_npy(path, "training image", keep_dtype=True)
        colour = arr.ndim == 3 and arr.shape[-1] in (3, 4)
        if colour:
            arr = arr[..., :3]
        integer = arr.dtype.kind in "iu"
        arr = arr.astype(np.float64)
        full = 65535.0 if integer and arr.size and arr.max() > 255 else 255.0
        # scale first, then average the colours (their mean need not be a whole number)
        arr = _unit_range(arr, path, full, colour=colour)
        if colour:
            arr = arr.mean(axis=-1)
    else:
        arr = _read_picture(path)
    if threshold is not None:
        arr = (arr >= threshold).astype(np.float64)
    return arr.astype(np.float32)


def _read_picture(path: Path) -> np.ndarray:
    """A Pillow-readable picture as float64 values in [0, 1] (see load_training_image)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("F", "I") or mode.startswith("I;16"):  # float, 16/32-bit integer
                arr = np.asarray(im, dtype=np.float64)
            else:  # 1-bit, 8-bit grey, palette, RGB(A), ...: 8-bit luminance
                arr = np.asarray(im.convert("L"), dtype=np.float64)
    except UnidentifiedImageError as exc:
        raise ValueError(f"{str(path)!r} is not an image file Pillow can read.") from exc
    except OSError as exc:  # e.g. a truncated file
        raise ValueError(f"{str(path)!r} could not be read as an image: {exc}") from exc
    logger.debug("loaded %s (mode %s, shape %s)", path, mode, arr.shape)
    integer = mode == "I" or mode.startswith("I;16")
    full = 65535.0 if integer and arr.size and arr.max() > 255 else 255.0
    return _unit_range(arr, path, full)


def _unit_range(arr: np.ndarray, path: Path, full: float, colour: bool = False
                ) -> np.ndarray:
    """A 2-D image (``(H, W, 3)`` with ``colour``) scaled to [0, 1]: values in [0, 1] are
    kept (a 0/1 image stays binary), whole numbers up to ``full`` are divided by it,
    anything else is refused."""
    if arr.ndim != 2 + colour or arr.size == 0:
        raise ValueError(f"{str(path)!r} holds an array of shape {arr.shape}; a non-empty "
                         "2-D image (H, W) is required.")
    check_finite(arr, f"image {str(path)!r}")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise ValueError(f"{str(path)!r}: negative values ({lo:.4g}); expected [0, 1].")
    if hi <= 1.0:
        return arr
    if hi > full or not np.array_equal(arr, np.round(arr)):
        raise ValueError(f"{str(path)!r}: values must lie in [0, 1] or be whole numbers in "
                         f"[0, {full:g}]; got [{lo:.4g}, {hi:.4g}].")
    return arr / full


def _check_window(win: Any, i: int) -> tuple[int, int, int, int]:
    window = whole_numbers(win, 4)
    if window is None:
        raise ValueError(f"exclude[{i}]={win!r} must be a window of four integers (row, "
                         "col, height, width).")
    if window[2] <= 0 or window[3] <= 0:
        raise ValueError(f"exclude[{i}]={win!r} has a non-positive height or width.")
    return window


def extract_patches(image: np.ndarray, patch_shape: tuple[int, int], n_patches: int, *,
                    rows: tuple[int, int] | None = None,
                    exclude: Sequence[tuple[int, int, int, int]] = (),
                    random_state: int | np.random.RandomState | None = None,
                    return_positions: bool = False,
                    max_tries: int = 50) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Random crops of a training image, inside a row band, avoiding excluded windows.

    Parameters
    ----------
    image : ndarray of shape (H, W)
        Training image with values in [0, 1].
    patch_shape : tuple of int
        (h, w) of each crop.
    n_patches : int
        Number of crops.
    rows : (int, int) or None, default=None
        Row band ``[start, stop)``: crops lie entirely inside it. None = all rows.
    exclude : sequence of (row, col, height, width), default=()
        Windows no crop may overlap (not even by one pixel), e.g. the places of test
        models cut from the same image.
    random_state : int, RandomState instance or None, default=None
        Seed for the crop positions.
    return_positions : bool, default=False
        Also return the upper-left corners ``(n_patches, 2)`` (row, col).
    max_tries : int, default=50
        Rounds of redrawing the positions that overlap an excluded window; crops still
        unplaced after them are drawn uniformly among the valid positions (so crops are
        placed whenever one valid position exists).

    Returns
    -------
    patches : ndarray of shape (n_patches, h, w), float32
        The crops, in drawing order.
    positions : ndarray of shape (n_patches, 2)
        Only if ``return_positions``.

    Raises
    ------
    ValueError
        If the crop does not fit the band, or no position avoids the excluded windows.
    """
    image = _check_image(image)
    H, W = image.shape
    ph, pw = int_pair(patch_shape, "patch_shape (h, w)")
    if (not isinstance(n_patches, numbers.Integral) or isinstance(n_patches, bool)
            or n_patches < 1):
        raise ValueError(f"n_patches must be a positive integer, got {n_patches!r}.")
    if not isinstance(max_tries, numbers.Integral) or max_tries < 0:
        raise ValueError(f"max_tries must be an integer >= 0, got {max_tries!r}.")
    r0, r1 = (0, H) if rows is None else int_pair(rows, "rows (start, stop)", minimum=0)
    if not (0 <= r0 < r1 <= H):
        raise ValueError(f"rows={rows!r} must satisfy 0 <= start < stop <= {H} (image height).")
    if ph < 1 or pw < 1 or ph > r1 - r0 or pw > W:
        raise ValueError(
            f"patch_shape={tuple(patch_shape)} does not fit in rows [{r0}, {r1}) x {W} "
            "columns of the image.")
    exclude = () if exclude is None else exclude
    windows = np.array([_check_window(win, i) for i, win in enumerate(exclude)],
                       dtype=np.int64).reshape(-1, 4)
    rng = check_random_state(random_state)
    pos = _crop_corners(rng, int(n_patches), (r0, r1), W, (ph, pw), windows, max_tries)
    # one row copy per crop row from a strided view: ~14x faster than gathering each
    # pixel by fancy indexing (25,000 crops of 129 x 65: 0.3 s against 4.2 s)
    windows_view = sliding_window_view(np.asarray(image, dtype=np.float32), (ph, pw))
    patches = windows_view[pos[:, 0], pos[:, 1]]
    return (patches, pos) if return_positions else patches


def _check_image(image: Any) -> np.ndarray:
    """A training image: 2-D, finite, values in [0, 1] (errors say which is not)."""
    image = as_real_array(image, "image", dtype=None)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}.")
    check_finite(image, "image")
    if image.size and (image.min() < 0 or image.max() > 1):
        raise ValueError(f"image values must lie in [0, 1], got [{image.min():.4g}, "
                         f"{image.max():.4g}]; scale it first (see load_training_image).")
    return image


def _crop_corners(rng: np.random.RandomState, n: int, rows: tuple[int, int], W: int,
                  shape: tuple[int, int], windows: np.ndarray, max_tries: int) -> np.ndarray:
    """Upper-left corners ``(n, 2)`` of crops of ``shape`` in the row band ``rows`` of an
    image ``W`` wide, none overlapping ``windows``.

    Positions are drawn uniformly and those overlapping a window redrawn, up to
    ``max_tries`` rounds; the rest are drawn among the valid corners.
    """
    (r0, r1), (ph, pw) = rows, shape
    pos = np.empty((n, 2), dtype=np.int64)
    todo = np.arange(n)
    for _ in range(max_tries):
        pos[todo, 0] = rng.randint(r0, r1 - ph + 1, todo.size)
        pos[todo, 1] = rng.randint(0, W - pw + 1, todo.size)
        if windows.size == 0:
            todo = todo[:0]
            break
        pr, pc = pos[todo, 0:1], pos[todo, 1:2]
        overlap = ((pr < windows[:, 0] + windows[:, 2]) & (windows[:, 0] < pr + ph)
                   & (pc < windows[:, 1] + windows[:, 3]) & (windows[:, 1] < pc + pw))
        todo = todo[overlap.any(axis=1)]
        if todo.size == 0:
            break
    if todo.size:  # few valid positions: draw the rest among all of them
        valid = _valid_corners(rows, W, shape, windows)
        corners = np.flatnonzero(valid)
        if corners.size == 0:
            raise ValueError(
                f"no crop of shape {(ph, pw)} in rows [{r0}, {r1}) avoids the excluded "
                "windows; widen rows or exclude less.")
        pick = corners[rng.randint(0, corners.size, todo.size)]
        pos[todo, 0] = r0 + pick // valid.shape[1]
        pos[todo, 1] = pick % valid.shape[1]
    return pos


def _valid_corners(rows: tuple[int, int], W: int, shape: tuple[int, int],
                   windows: np.ndarray) -> np.ndarray:
    """Mask of the upper-left corners (rows from ``rows[0]``) whose crop overlaps no
    window."""
    (r0, r1), (ph, pw) = rows, shape
    valid = np.ones((r1 - ph + 1 - r0, W - pw + 1), dtype=bool)
    for r, c, hh, ww in windows:  # corners whose crop would overlap the window
        rows_hit = slice(max(r - ph + 1 - r0, 0), max(r + hh - r0, 0))
        valid[rows_hit, max(c - pw + 1, 0):max(c + ww, 0)] = False
    return valid
