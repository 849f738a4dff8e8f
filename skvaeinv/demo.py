"""The demo: invert a synthetic crosshole survey with a small VAE prior.

:func:`run_demo` (the ``skvaeinv demo`` command) inverts the traveltimes of a procedural
channel image (:func:`~skvaeinv.datasets.make_channels`, a seed never used for training
images) from 625 straight or bent rays with the prior of :func:`demo_prior`, and
compares the result with the truth. The settings are in :data:`DEMO`; the small prior
trained with them ships in ``skvaeinv/data`` (:data:`DEMO_PRIOR_FILE`).
"""

from __future__ import annotations

import logging
import numbers
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from skvaeinv._files import (
    InputError,
    check_figure_format,
    check_folder,
    check_outputs,
    save_figure,
)
from skvaeinv._files import save_prior as save_prior_file

__all__ = ["DEMO", "DEMO_PRIOR_FILE", "demo_prior", "run_demo"]

logger = logging.getLogger(__name__)

#: Settings of the demo (and of the small prior shipped in ``skvaeinv/data``).
DEMO = {
    "shape": (65, 33), "spacing": 0.2,            # ~ the study's panel, 0.2 m cells
    "depths": np.arange(0.5, 12.51, 0.5),          # 25 sources x 25 receivers
    # channels 1.0-1.4 m wide with long meanders, about the study's (its truths' channels
    # are ~1.0-1.1 m thick); the thinner, tighter ones used before (0.5-0.9 m,
    # wavelengths 30-100 cells) were beyond what 20 latent dimensions represent here
    "channels": dict(width=(5.0, 7.0), wavelength=(60.0, 150.0), proportion=0.3),
    # beta scaled from the study's 1000 for 8,385 pixels to this image's 2,145
    "prior": dict(latent_dim=20, beta=250.0, base_channels=16, hidden_units=256,
                  batch_size=100, lr=1e-3),
    "truth_seed": 2**31 - 7,                      # never used to make training images
}
#: The prior trained with :data:`DEMO`'s settings, shipped with the package.
DEMO_PRIOR_FILE = Path(__file__).resolve().parent / "data" / "demo_prior.skv"


def demo_prior(retrain: bool = False, *, n_images: int = 200_000, seed: int = 0,
               progress: bool = False) -> Any:
    """The demo's prior: the shipped file, or one trained now on procedural channels.

    Parameters
    ----------
    retrain : bool, default=False
        Train a prior now (on ``n_images`` procedural images) instead of loading the
        one shipped in ``skvaeinv/data``.
    n_images : int, default=200000
        Procedural images to train on when retraining.
    seed : int, default=0
        Seed of the training images and of the network's initialisation.
    progress : bool, default=False
        Show a progress bar while training.

    Returns
    -------
    prior : VAEPrior
        A fitted prior of the demo's 65 x 33 images.
    """
    from skvaeinv import VAEPrior
    from skvaeinv.datasets import make_channels
    from skvaeinv.prior._training import chunk_seed

    if not retrain and DEMO_PRIOR_FILE.is_file():
        return VAEPrior.load(DEMO_PRIOR_FILE, device="cpu")
    # bfloat16 where the CPU has native kernels (as for the shipped file), float32
    # where torch would emulate it (much slower)
    prior = VAEPrior(**DEMO["prior"], device="cpu", precision="auto", random_state=seed,
                     verbose=int(progress))
    chunk = 10_000
    for k in range(0, n_images, chunk):
        images = make_channels(min(chunk, n_images - k), shape=DEMO["shape"],
                               random_state=chunk_seed(seed, k, stride=7919),
                               **DEMO["channels"])
        prior.partial_fit(images)
        logger.info("demo prior: %d / %d images, loss %.1f", k + len(images), n_images,
                    prior.loss_curve_[-1])
    return prior


def run_demo(*, out_dir: str | os.PathLike = ".", starts: int = 8, epochs: int = 60,
             retrain: bool = False, n_images: int = 200_000, nonlinear: bool = False,
             seed: int = 0, progress: bool = True, save_prior: str | None = None,
             figure: bool = True) -> dict:
    """Run the demo and return its summary (used by the ``demo`` command and the tests).

    A procedural truth is inverted from 625 straight (or bent) rays with the demo's
    prior; its traveltimes go through a pyGIMLi ``.sgt`` file
    (``out_dir/skvaeinv_demo.sgt``, read back with :func:`skvaeinv.io.read_sgt`, as a
    field survey would be), and the figure is written to ``out_dir/skvaeinv_demo.png``.
    The accepted starts
    are those that fit the data about as well as the truth's own latent code (or, where
    the prior cannot represent the truth that well, as well as the best start): data
    RMSE at most 1.1 times the larger of the two.

    Parameters
    ----------
    out_dir : str or path-like, default="."
        Folder of the figure (made if missing).
    starts : int, default=8
        Random starts of the inversion.
    epochs : int, default=60
        SGD epochs of each start.
    retrain, n_images, seed, progress
        As in :func:`demo_prior` (``seed`` also seeds the inversion).
    nonlinear : bool, default=False
        Bent rays (shortest paths) instead of straight rays, inverted with the study's
        bent-ray steps (``reference_schedule("bent-as-coded")``) over ``epochs``.
    save_prior : str or None, default=None
        Also save the prior to this file.
    figure : bool, default=True
        Write the figure (needs matplotlib).

    Returns
    -------
    summary : dict
        Data and model RMSEs, acceptance, timings, the figure's and the survey file's
        paths (``"figure"``, ``"survey_file"``),
        and the fitted ``"inverter"`` and the ``"truth"`` image.

    Raises
    ------
    skvaeinv._files.InputError
        For ``starts``, ``epochs`` or ``n_images`` not positive integers, or an output
        path that cannot be written; before any computation.
    """
    _check_demo_arguments(out_dir, starts=starts, epochs=epochs, n_images=n_images,
                          save_prior=save_prior, figure=figure)
    t0 = time.perf_counter()
    prior = demo_prior(retrain, n_images=n_images, seed=seed, progress=progress)
    if save_prior is not None:
        save_prior_file(prior, Path(save_prior))
    t_prior = time.perf_counter() - t0
    survey = _demo_survey(nonlinear)
    # the field user's path: the data go through a pyGIMLi .sgt file and back
    sgt = Path(out_dir) / "skvaeinv_demo.sgt" if figure else None
    survey = _through_sgt(survey, sgt)
    inv = _demo_inverter(prior, survey, nonlinear=nonlinear, starts=starts, epochs=epochs,
                         seed=seed, progress=progress)
    t1 = time.perf_counter()
    inv.fit(survey.rays, survey.traveltimes)
    t_inv = time.perf_counter() - t1
    summary = _demo_summary(prior, inv, survey)
    summary.update(prior_seconds=t_prior, inversion_seconds=t_inv,
                   total_seconds=time.perf_counter() - t0)
    if figure:
        from skvaeinv.plotting import plot_inversion

        path = Path(out_dir) / "skvaeinv_demo.png"
        save_figure(plot_inversion(inv, truth=survey.truth, grid=survey.grid,
                                   threshold=summary["threshold_ns"]), path)
        summary["figure"] = str(path)
        summary["survey_file"] = str(sgt)
    summary["inverter"] = inv
    summary["truth"] = survey.truth
    return summary


class _Survey(NamedTuple):
    """The demo's synthetic survey: the truth and the data it gives."""

    grid: Any
    rays: np.ndarray
    truth: np.ndarray
    forward: Any        # the operator that simulated the data
    traveltimes: np.ndarray


def _check_demo_arguments(out_dir: str | os.PathLike, *, starts: int, epochs: int,
                          n_images: int, save_prior: str | None, figure: bool) -> None:
    """Refuse bad arguments of :func:`run_demo` before any computation."""
    for name, value in (("starts", starts), ("epochs", epochs), ("n_images", n_images)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if figure:
        check_folder(Path(out_dir), f"output folder {str(out_dir)!r}")
        check_figure_format("skvaeinv_demo.png", "the demo figure")
    if save_prior is not None:
        check_outputs({"--save-prior": save_prior}, [])


def _make_forward(grid: Any, nonlinear: bool, secondary_nodes: int) -> Any:
    """A shortest-path operator with ``secondary_nodes`` (``nonlinear``), else straight
    rays."""
    from skvaeinv.forward import ShortestPath, StraightRay

    return ShortestPath(grid, secondary_nodes=secondary_nodes) if nonlinear \
        else StraightRay(grid)


def _demo_survey(nonlinear: bool) -> _Survey:
    """The truth (a procedural image never used for training) and its traveltimes."""
    from skvaeinv.datasets import make_channels
    from skvaeinv.petrophysics import LinearVelocity
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D(shape=DEMO["shape"], spacing=DEMO["spacing"])
    rays = crosshole(grid, DEMO["depths"])
    truth = make_channels(1, shape=DEMO["shape"], random_state=DEMO["truth_seed"],
                          **DEMO["channels"])[0].astype(float)
    # the data: bent rays on a coarser graph than the inversion's (as in the study)
    forward = _make_forward(grid, nonlinear, 2 if nonlinear else 3)
    tt = forward.traveltimes(LinearVelocity()(truth), rays)
    return _Survey(grid, rays, truth, forward, tt)


def _through_sgt(survey: _Survey, path: Path | None) -> _Survey:
    """The survey as read back from the ``.sgt`` file it is written to (a temporary one
    when ``path`` is None)."""
    import tempfile

    from skvaeinv.io import TraveltimeData, read_sgt, write_sgt

    data = TraveltimeData.from_rays(survey.rays, survey.traveltimes)
    with tempfile.TemporaryDirectory() as tmp:
        target = path if path is not None else Path(tmp) / "demo.sgt"
        write_sgt(target, data)
        back = read_sgt(target)
    return survey._replace(rays=back.rays, traveltimes=back.traveltimes)


def _demo_inverter(prior: Any, survey: _Survey, *, nonlinear: bool, starts: int,
                   epochs: int, seed: int, progress: bool) -> Any:
    """The (unfitted) inverter of the demo: the study's schedule over ``epochs``."""
    from skvaeinv import LatentInverter
    from skvaeinv.inverter import reference_schedule

    # bent rays: the study's steps, as with ``skvaeinv invert --nonlinear``
    schedule = reference_schedule("bent-as-coded" if nonlinear else "straight")
    if not nonlinear:  # the straight-ray schedule's decays, spread over ``epochs``
        schedule.update(lr_step=max(1, epochs // 120), reg_decay=0.999 ** (120 / epochs))
    schedule["epochs"] = epochs
    return LatentInverter(prior, _make_forward(survey.grid, nonlinear, 3), n_starts=starts,
                          device="cpu", n_jobs=1, random_state=seed,
                          verbose=1 if progress else 0, **schedule)


def _demo_summary(prior: Any, inv: Any, survey: _Survey) -> dict:
    """Data and model RMSEs of the fitted ``inv`` and its accepted ensemble."""
    from skvaeinv.petrophysics import LinearVelocity

    truth, rays, tt = survey.truth, survey.rays, survey.traveltimes
    # accept the starts that fit the data about as well as the truth's own latent code
    # (or, where the prior cannot represent the truth that well, as well as the best start)
    truth_code = prior.inverse_transform(prior.transform(truth[None]))[0]
    rmse_code = float(np.sqrt(np.mean(
        (survey.forward.traveltimes(LinearVelocity()(truth_code), rays) - tt) ** 2)))
    threshold = 1.1 * max(rmse_code, float(np.min(inv.data_rmse_)))
    ens = inv.ensemble(threshold)
    return {
        "data_rmse_best_ns": float(inv.data_rmse_[inv.best_index_]),
        "data_rmse_median_ns": float(np.median(inv.data_rmse_)),
        "model_rmse_best": float(np.sqrt(np.mean((inv.model_ - truth) ** 2))),
        "model_rmse_ensemble_mean": float(np.sqrt(np.mean((ens.mean - truth) ** 2))),
        "model_rmse_prior_mean_image": float(np.sqrt(np.mean(
            (prior.sample(200, random_state=1).mean(axis=0) - truth) ** 2))),
        "data_rmse_truth_code_ns": rmse_code,
        "accepted": f"{ens.n_accepted}/{inv.n_starts}",
        "threshold_ns": threshold,
    }
