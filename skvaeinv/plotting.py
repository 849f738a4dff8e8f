"""Figures for surveys, models, inversion histories and ensembles (matplotlib, optional).

matplotlib is imported lazily, inside each function, so the rest of the package works
without it (``pip install skvaeinv[plot]``). Estimators never call these functions.
Every function returns the figure it drew; those with an ``axes`` (or ``ax``) argument
draw on given axes, or make a new figure.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import NotFittedError

__all__ = ["plot_survey", "plot_models", "plot_history", "plot_ensemble", "plot_inversion",
           "plot_posterior"]


def _plt():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skvaeinv.plotting needs matplotlib: pip install 'skvaeinv[plot]'") from exc
    return plt


def _check_image(img: Any, name: str, grid: Any = None) -> np.ndarray:
    """``img`` as a 2-D float array (of the grid's shape when a grid is given)."""
    img = np.asarray(img, dtype=float)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D image (H, W), got shape "
                         f"{img.shape}.")
    if grid is not None and tuple(img.shape) != tuple(grid.shape):
        raise ValueError(f"{name} has shape {img.shape} but the grid has {tuple(grid.shape)} "
                         "cells (nz, nx); pass the image of this grid.")
    return img


def _check_axes(axes: Any, needed: int, what: str) -> np.ndarray:
    axes = np.ravel(axes)
    if axes.size < needed:
        raise ValueError(f"{what} needs {needed} axes, got {axes.size}.")
    return axes


def _extent(grid: Any, shape: tuple[int, int]) -> list[float]:
    if grid is None:
        return [0, shape[1], shape[0], 0]
    x0, x1, z0, z1 = grid.extent
    return [x0, x1, z1, z0]


def _image(ax: Any, img: np.ndarray, grid: Any, title: str | None, *, cmap: str = "gray_r",
           vmin: float | None = 0.0, vmax: float | None = 1.0) -> Any:
    im = ax.imshow(np.asarray(img), cmap=cmap, vmin=vmin, vmax=vmax,
                   extent=_extent(grid, np.shape(img)), interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (m)" if grid is not None else "column")
    ax.set_ylabel("z (m)" if grid is not None else "row")
    return im


def plot_survey(grid: Any, rays: np.ndarray, *, model: np.ndarray | None = None,
                ax: Any = None, max_rays: int = 2000) -> Any:
    """Draw the grid, the sensors and the straight source-receiver lines.

    Parameters
    ----------
    grid : Grid2D
        The model grid.
    rays : ndarray of shape (n_rays, 4)
        Columns ``xs, zs, xr, zr`` (as from :func:`skvaeinv.survey.crosshole`).
    model : ndarray of shape (nz, nx), optional
        Image drawn underneath.
    ax : matplotlib Axes, optional
        Axes to draw on; None makes a new figure.
    max_rays : int, default=2000
        At most this many ray lines are drawn (evenly subsampled).

    Returns
    -------
    fig : matplotlib Figure
        The figure drawn on (new, or the one holding the given axes).
    """
    plt = _plt()
    if not hasattr(grid, "extent"):
        raise TypeError(f"grid must be a Grid2D, got {type(grid).__name__}.")
    rays = np.asarray(rays, dtype=float)
    if rays.ndim != 2 or rays.shape[1] != 4:
        raise ValueError(f"rays must have shape (n_rays, 4), got {rays.shape}.")
    if not isinstance(max_rays, numbers.Integral) or max_rays < 1:
        raise ValueError(f"max_rays must be a positive integer, got {max_rays!r}.")
    if model is not None:
        model = _check_image(model, "model", grid)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.5, 6))
    x0, x1, z0, z1 = grid.extent
    if model is not None:
        _image(ax, model, grid, None)
    else:
        ax.add_patch(plt.Rectangle((x0, z0), x1 - x0, z1 - z0, fill=False, lw=1))
    drawn = np.unique(np.linspace(0, len(rays) - 1, min(max_rays, len(rays))).astype(int))
    for xs, zs, xr, zr in rays[drawn]:
        ax.plot([xs, xr], [zs, zr], color="tab:blue", lw=0.3, alpha=0.4)
    ax.plot(rays[:, 0], rays[:, 1], "v", color="tab:red", ms=3, label="sources")
    ax.plot(rays[:, 2], rays[:, 3], "o", color="tab:green", ms=3, label="receivers")
    ax.set_xlim(x0 - 0.05 * (x1 - x0), x1 + 0.05 * (x1 - x0))
    ax.set_ylim(z1, z0)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("z (m)")
    ax.legend(loc="lower center", fontsize=7, ncols=2)
    ax.set_title(f"{len(rays)} rays, {grid.nz} x {grid.nx} cells", fontsize=9)
    return ax.figure


def plot_models(models: np.ndarray, *, grid: Any = None,
                titles: Sequence[str] | None = None, ncols: int = 6,
                cmap: str = "gray_r", vmin: float | None = 0.0,
                vmax: float | None = 1.0) -> Any:
    """Show a set of images side by side.

    Parameters
    ----------
    models : ndarray of shape (n, H, W) or (H, W)
        Images to show, one per panel (a single image gives one panel).
    grid : Grid2D, optional
        Gives metre axes.
    titles : sequence of str, optional
        Title of each panel, one per image; None gives untitled panels.
    ncols : int, default=6
        Maximum number of panels per row (at most the number of images); the panels
        fill as many rows as needed.
    cmap : str, default="gray_r"
        Colour map, passed to ``imshow``.
    vmin : float or None, default=0.0
        Value at the low end of the colour map, passed to ``imshow`` (None: the
        smallest value of each image).
    vmax : float or None, default=1.0
        Value at the high end of the colour map, passed to ``imshow`` (None: the
        largest value of each image).

    Returns
    -------
    fig : matplotlib Figure
        A new figure, one panel per image.
    """
    plt = _plt()
    models = np.asarray(models, dtype=float)
    if models.ndim == 2:
        models = models[None]
    if models.ndim != 3 or models.size == 0:
        raise ValueError(f"models must be a non-empty array of shape (n, H, W), got "
                         f"{models.shape}.")
    n = len(models)
    if titles is not None:
        titles = list(titles)
        if len(titles) != n:
            raise ValueError(f"titles has {len(titles)} entries for {n} images.")
    if not isinstance(ncols, numbers.Integral) or isinstance(ncols, bool) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}.")
    if grid is not None:
        _check_image(models[0], "models[0]", grid)
    ncols = min(int(ncols), n)
    nrows = int(np.ceil(n / ncols))
    h, w = models.shape[1:]
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols * max(w / h, 0.4) + 0.8,
                                                    2.8 * nrows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k < n:
            _image(ax, models[k], grid, None if titles is None else titles[k], cmap=cmap,
                   vmin=vmin, vmax=vmax)
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def plot_history(history: Any, *, starts: Sequence[int] | None = None,
                 threshold: float | None = None, axes: Any = None) -> Any:
    """Inversion history like the study's figures: data RMSE, ``||z||``, lr, lambda.

    Parameters
    ----------
    history : SGDHistory or LatentInverter
        ``inverter.history_`` (or a fitted inverter).
    starts : sequence of int, optional
        Starts to draw (default: all, thin lines).
    threshold : float, optional
        Acceptance threshold drawn on the data-RMSE panel.
    axes : array of 4 matplotlib Axes, optional
        Axes of the four panels (data RMSE, ``||z||``, learning rate, regularisation
        weight), in this order; None makes a new figure with one row of four.

    Returns
    -------
    fig : matplotlib Figure
        The figure drawn on (new, or the one holding the given axes).
    """
    plt = _plt()
    if hasattr(history, "fit") and not hasattr(history, "history_"):
        raise NotFittedError(f"this {type(history).__name__} is not fitted yet: call fit "
                             "before plotting its history.")
    history = getattr(history, "history_", history)
    for name in ("data_rmse", "z_norm", "lr", "reg_weight"):
        if not hasattr(history, name):
            raise TypeError(f"history has no {name!r}; pass LatentInverter.history_.")
    rmse = np.asarray(history.data_rmse, dtype=float)
    znorm = np.asarray(history.z_norm, dtype=float)
    idx = (np.arange(rmse.shape[0]) if starts is None
           else np.atleast_1d(np.asarray(starts, dtype=int)))
    if idx.size and (idx.min() < -rmse.shape[0] or idx.max() >= rmse.shape[0]):
        raise ValueError(f"starts {idx.tolist()} include a start outside 0..."
                         f"{rmse.shape[0] - 1}.")
    if axes is None:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    axes = _check_axes(axes, 4, "plot_history")
    it = np.arange(rmse.shape[1])
    alpha = max(0.15, min(1.0, 5.0 / max(len(idx), 1)))
    for i in idx:
        ok = np.isfinite(rmse[i])
        axes[0].plot(it[ok], rmse[i][ok], lw=0.7, alpha=alpha)
        axes[1].plot(it, znorm[i], lw=0.7, alpha=alpha)
    if threshold is not None:
        axes[0].axhline(threshold, color="k", ls="--", lw=1, label="threshold")
        axes[0].legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("data RMSE (ns)")
    axes[1].set_ylabel("||z||")
    axes[2].plot(it, np.asarray(history.lr, dtype=float), color="k")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    axes[3].plot(it, np.asarray(history.reg_weight, dtype=float), color="k")
    axes[3].set_ylabel("regularisation weight")
    for ax in axes:
        ax.set_xlabel("iteration")
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def plot_ensemble(ensemble: Any, *, grid: Any = None, truth: np.ndarray | None = None,
                  axes: Any = None) -> Any:
    """Ensemble mean, channel probability and spread (and the truth, when known).

    Parameters
    ----------
    ensemble : Ensemble or LatentInverter
        From :meth:`skvaeinv.LatentInverter.ensemble`, or a fitted inverter (its
        ensemble at its own ``acceptance_threshold``).
    grid : Grid2D, optional
        Gives metre axes.
    truth : ndarray of shape (H, W), optional
        True model, drawn as an extra first panel.
    axes : array of matplotlib Axes, optional
        Axes of the panels (truth if given, mean, channel probability, spread), in this
        order; None makes a new figure with one row of panels.

    Returns
    -------
    fig : matplotlib Figure
        The figure drawn on (new, or the one holding the given axes).
    """
    plt = _plt()
    if callable(getattr(ensemble, "ensemble", None)):   # an inverter
        if not hasattr(ensemble, "models_"):
            raise NotFittedError(f"this {type(ensemble).__name__} is not fitted yet: call "
                                 "fit before plotting its ensemble.")
        ensemble = ensemble.ensemble(getattr(ensemble, "acceptance_threshold", None))
    for name in ("mean", "channel_probability", "std", "n_accepted"):
        if not hasattr(ensemble, name):
            raise TypeError(f"ensemble has no {name!r}; pass LatentInverter.ensemble(...) "
                            "or a fitted LatentInverter.")
    if truth is not None:
        truth = _check_image(truth, "truth", grid)
        if truth.shape != np.shape(ensemble.mean):
            raise ValueError(f"truth has shape {truth.shape} but the ensemble's images "
                             f"have {np.shape(ensemble.mean)}.")
    panels = [(ensemble.mean, f"mean of {ensemble.n_accepted}", "gray_r", 0, 1),
              (ensemble.channel_probability, "channel probability", "viridis", 0, 1),
              (ensemble.std, "std", "magma", 0, None)]
    if truth is not None:
        panels.insert(0, (truth, "truth", "gray_r", 0, 1))
    if axes is None:
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels) + 1, 4))
    axes = _check_axes(axes, len(panels), "plot_ensemble")
    for ax, (img, title, cmap, lo, hi) in zip(axes, panels):
        im = _image(ax, img, grid, title, cmap=cmap, vmin=lo, vmax=hi)
        ax.figure.colorbar(im, ax=ax, fraction=0.08)
    fig = axes[0].figure
    fig.tight_layout()
    return fig


def plot_inversion(inverter: Any, *, truth: np.ndarray | None = None, grid: Any = None,
                   threshold: float | None = None, chi2: float | None = None,
                   sensors: np.ndarray | None = None) -> Any:
    """One-page summary of a fitted :class:`~skvaeinv.LatentInverter`.

    Truth (if given), best model, the share of accepted starts that put a channel in
    each cell, data RMSE and ``||z||`` per iteration. That share says how much the
    starts agree; it is not a posterior probability (starts that all land on one image
    agree everywhere): :class:`~skvaeinv.LatentSampler` gives the posterior.

    Parameters
    ----------
    inverter : LatentInverter
        A fitted inverter.
    truth : ndarray of shape (H, W), optional
        True model, drawn as an extra first panel.
    grid : Grid2D, optional
        Defaults to the grid of the operator the inverter was fitted with, when it has
        one.
    threshold : float, optional
        Acceptance threshold for the ensemble (default: the inverter's own
        ``acceptance_threshold``; None there accepts every start with a finite RMSE).
    chi2 : float, optional
        Also accept only starts with ``chi2_ <= chi2`` (default: the inverter's own
        ``acceptance_chi2``).
    sensors : ndarray of shape (n_sensors, 2), optional
        Sensor positions ``(x, z)`` drawn over the model panels (needs ``grid``).

    Returns
    -------
    fig : matplotlib Figure
        A new figure.
    """
    plt = _plt()
    if not hasattr(inverter, "model_"):
        raise NotFittedError("plot_inversion needs a fitted LatentInverter (call fit first).")
    if grid is None:
        grid = getattr(getattr(inverter, "forward_", inverter.forward), "grid", None)
    if grid is not None and tuple(inverter.model_.shape) != tuple(grid.shape):
        raise ValueError(
            f"the inverter's models have shape {inverter.model_.shape} but the grid has "
            f"{tuple(grid.shape)} cells (nz, nx); pass the grid of its forward operator, or "
            "none (it is taken from the inverter).")
    if truth is not None:
        truth = _check_image(truth, "truth", grid)
    if threshold is None:
        threshold = getattr(inverter, "acceptance_threshold", None)
    if chi2 is None:
        chi2 = getattr(inverter, "acceptance_chi2", None)
    ens = inverter.ensemble(threshold, chi2=chi2)
    fig = plt.figure(figsize=(13, 5))
    gs = fig.add_gridspec(2, 5)
    k = 0
    if truth is not None:
        _image(fig.add_subplot(gs[:, k]), truth, grid, "truth")
        k += 1
    best = inverter.best_index_
    fit = f"RMSE {inverter.data_rmse_[best]:.3g} ns"
    if getattr(inverter, "chi2_", None) is not None:
        fit += f", χ² {inverter.chi2_[best]:.3g}"
    panels = [fig.add_subplot(gs[:, k])]
    _image(panels[0], inverter.model_, grid, f"best model\n{fit}")
    k += 1
    ax = fig.add_subplot(gs[:, k])
    panels.append(ax)
    im = _image(ax, ens.channel_probability, grid,
                f"starts with a channel here\n({ens.n_accepted}/{len(inverter.data_rmse_)} "
                "accepted; not a probability)", cmap="viridis")
    fig.colorbar(im, ax=ax, fraction=0.08)
    k += 1
    if sensors is not None and grid is not None:
        pts = np.asarray(sensors, dtype=float)
        for ax in panels:
            ax.plot(pts[:, 0], pts[:, 1], "v", color="tab:red", ms=3, clip_on=False)
    ax_r = fig.add_subplot(gs[0, k:])
    ax_z = fig.add_subplot(gs[1, k:])
    h = inverter.history_
    it = np.arange(h.data_rmse.shape[1])
    for i in range(h.data_rmse.shape[0]):
        ok = np.isfinite(h.data_rmse[i])
        ax_r.plot(it[ok], h.data_rmse[i][ok], lw=0.6, alpha=0.5)
        ax_z.plot(it, h.z_norm[i], lw=0.6, alpha=0.5)
    if ens.threshold is not None:
        ax_r.axhline(ens.threshold, color="k", ls="--", lw=1)
    ax_r.set_yscale("log")
    ax_r.set_ylabel("data RMSE (ns)")
    ax_z.set_ylabel("||z||")
    ax_z.set_xlabel("iteration")
    fig.tight_layout()
    return fig


def plot_posterior(sampler: Any, *, truth: np.ndarray | None = None, grid: Any = None,
                   dims: Sequence[int] = (0, 1, 2), fig: Any = None) -> Any:
    """The posterior of a fitted :class:`~skvaeinv.LatentSampler` in one figure.

    Top row: the truth (when given), the posterior mean, its standard deviation and the
    channel probability; bottom row: the traces of latent dimensions ``dims`` (one line
    per chain) and the R-hat of every dimension.

    Parameters
    ----------
    sampler : LatentSampler
        A fitted sampler.
    truth : ndarray of shape (H, W), optional
        The true model, drawn first.
    grid : Grid2D, optional
        Draw the images in metres on this grid (of the images' shape).
    dims : sequence of int, default=(0, 1, 2)
        Latent dimensions whose traces are drawn.
    fig : matplotlib Figure, optional
        Draw into this figure (cleared first); a new one otherwise.

    Returns
    -------
    matplotlib.figure.Figure
        The figure.
    """
    if not hasattr(sampler, "samples_"):
        raise NotFittedError("plot_posterior needs a fitted LatentSampler (call fit).")
    plt = _plt()
    samples = np.asarray(sampler.samples_)
    dims = [int(d) for d in dims if 0 <= int(d) < samples.shape[-1]]
    images = [("posterior mean", sampler.posterior_mean_, "gray_r", 0.0, 1.0),
              ("posterior std", sampler.posterior_std_, "viridis", 0.0, None),
              ("channel probability", sampler.channel_probability_, "magma", 0.0, 1.0)]
    if truth is not None:
        images.insert(0, ("truth", _check_image(truth, "truth", grid), "gray_r", 0.0, 1.0))
    fig = fig if fig is not None else plt.figure(figsize=(3 * max(len(images), 3), 7))
    fig.clear()
    top = fig.subplots(2, max(len(images), len(dims) + 1), squeeze=False)
    for ax, (title, img, cmap, vmin, vmax) in zip(top[0], images):
        im = _image(ax, _check_image(img, title, grid), grid, title, cmap=cmap, vmin=vmin,
                    vmax=vmax)
        fig.colorbar(im, ax=ax, shrink=0.7)
    for ax in top[0, len(images):]:
        ax.axis("off")
    for ax, d in zip(top[1], dims):
        ax.plot(samples[:, :, d].T, lw=0.5)
        ax.set_title(f"trace of z[{d}]", fontsize=9)
        ax.set_xlabel("draw")
    ax = top[1, len(dims)]
    ax.bar(np.arange(samples.shape[-1]), np.asarray(sampler.rhat_) - 1.0, bottom=1.0)
    ax.axhline(1.01, color="k", ls="--", lw=0.8)
    ax.set_title("R-hat per latent dimension", fontsize=9)
    ax.set_xlabel("dimension")
    for ax in top[1, len(dims) + 1:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
