"""A field survey start to finish: place the grid, invert, write the result folder.

What ``skvaeinv invert SURVEY`` and the demo do with a survey file, as functions:

- :func:`invert_survey` places the prior's image over the sensors
  (:func:`~skvaeinv.survey.grid_for_sensors`, unless an origin is given), fits a
  :class:`~skvaeinv.LatentInverter` with the picking errors (misfit weighted by
  ``1 / σ²``) and accepts the starts that fit as well as the data allow
  (:func:`acceptance_rule`);
- :func:`write_result_folder` writes ``result.npz``, ``cells.csv``, ``report.json`` and
  ``figure.png`` into a folder, all or nothing.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skvaeinv.io import TraveltimeData

__all__ = ["FieldInversion", "acceptance_rule", "invert_survey", "survey_operator",
           "write_result_folder", "RESULT_FILES"]

logger = logging.getLogger(__name__)

#: The files of a result folder.
RESULT_FILES = ("result.npz", "cells.csv", "report.json", "figure.png")


@dataclass
class FieldInversion:
    """A fitted inversion of a survey and what it was fitted with.

    Parameters
    ----------
    data : TraveltimeData
        The picks.
    grid : Grid2D
        The model grid.
    inverter : LatentInverter
        Fitted.
    sigma : ndarray of shape (n_picks,) or None
        Picking errors used (ns); None: unweighted.
    sigma_source : str
        Where ``sigma`` came from ("file", "error model a + r*t" or "none").
    rule : dict
        The acceptance rule (:func:`acceptance_rule`).
    wall_s : float
        Seconds of the fit.
    ensemble : Ensemble or None
        The accepted starts (:meth:`LatentInverter.ensemble` with :attr:`rule`); None
        computes them from the inverter.
    """

    data: TraveltimeData
    grid: Any
    inverter: Any
    sigma: np.ndarray | None
    sigma_source: str
    rule: dict = field(default_factory=dict)
    wall_s: float = 0.0
    ensemble: Any = None

    def __post_init__(self) -> None:
        if self.ensemble is None:
            self.ensemble = self.inverter.ensemble(self.rule.get("rmse"),
                                                   chi2=self.rule.get("chi2"))


def acceptance_rule(inverter: Any, n_data: int, chi2: float | None = None) -> dict:
    """Which starts to accept: those that fit as well as the data allow.

    With picking errors (``inverter.chi2_`` set) the rule is on the χ² per datum:
    ``chi2`` if given, else ``max(1 + 3 sqrt(2 / n), 1.1 min(chi2_))`` -- a model that
    fits to within the errors (χ² within three standard deviations of 1), or, when the
    prior cannot fit that well, within 10 % of the best start. Without errors, the same
    10 % on the data RMSE.

    Parameters
    ----------
    inverter : LatentInverter
        Fitted.
    n_data : int
        Number of data (for the statistical floor).
    chi2 : float or None, default=None
        A fixed χ² threshold.

    Returns
    -------
    dict
        ``{"chi2": value}`` or ``{"rmse": value}``, plus ``"rule"`` in words.
    """
    if getattr(inverter, "chi2_", None) is not None:
        if chi2 is not None:
            return {"chi2": float(chi2), "rule": f"chi2 <= {chi2:g} (given)"}
        floor = 1.0 + 3.0 * np.sqrt(2.0 / n_data)
        best = 1.1 * float(np.nanmin(inverter.chi2_))
        return {"chi2": max(floor, best),
                "rule": "chi2 <= max(1 + 3 sqrt(2/n), 1.1 x best chi2) = "
                        f"max({floor:.3f}, {best:.3f})"}
    if chi2 is not None:
        raise ValueError("a chi2 threshold needs picking errors (from the file or an "
                         "error model).")
    best = 1.1 * float(np.min(inverter.data_rmse_))
    return {"rmse": best, "rule": f"data RMSE <= 1.1 x best = {best:.4g} ns"}


def survey_operator(data: TraveltimeData, shape: tuple[int, int], spacing: float, *,
                    origin: tuple[float, float] | None = None, nonlinear: bool = False,
                    secondary_nodes: int = 3) -> tuple[Any, Any, np.ndarray]:
    """The grid over a survey's sensors, its forward operator and the checked rays.

    Parameters
    ----------
    data : TraveltimeData
        The picks.
    shape : tuple of int
        ``(nz, nx)`` cells (the prior's image shape).
    spacing : float
        Cell size (m).
    origin : tuple of float or None, default=None
        Top-left corner of the grid; None centres it on the sensors
        (:func:`~skvaeinv.survey.grid_for_sensors`).
    nonlinear : bool, default=False
        :class:`~skvaeinv.forward.ShortestPath` (bent rays), else
        :class:`~skvaeinv.forward.StraightRay`.
    secondary_nodes : int, default=3
        Of the shortest-path graph.

    Returns
    -------
    grid : Grid2D
    forward : ForwardOperator
    rays : ndarray of shape (n_picks, 4)

    Raises
    ------
    ValueError
        If the grid cannot cover the sensors.
    """
    from skvaeinv.forward import ShortestPath, StraightRay
    from skvaeinv.survey import Grid2D, grid_for_sensors

    shape = tuple(shape)
    grid = grid_for_sensors(data.sensors, shape, spacing) if origin is None else \
        Grid2D(shape, spacing, origin=tuple(origin))
    forward = ShortestPath(grid, secondary_nodes=secondary_nodes) if nonlinear \
        else StraightRay(grid)
    return grid, forward, forward.validate_rays(data.rays)


def invert_survey(data: TraveltimeData, prior: Any, *, spacing: float,
                  origin: tuple[float, float] | None = None, nonlinear: bool = False,
                  secondary_nodes: int = 3, sigma: np.ndarray | None = None,
                  sigma_source: str = "none", chi2: float | None = None,
                  petrophysics: Any = None, **inverter_params: Any) -> FieldInversion:
    """Invert a survey's picks with a prior: grid, operator, fit, acceptance.

    Parameters
    ----------
    data : TraveltimeData
        The picks.
    prior : VAEPrior
        A fitted prior; its image shape is the grid's.
    spacing : float
        Cell size (m).
    origin : tuple of float or None, default=None
        Top-left corner of the grid; None centres the grid on the sensors.
    nonlinear : bool, default=False
        Bent rays (:class:`~skvaeinv.forward.ShortestPath`), else straight rays.
    secondary_nodes : int, default=3
        Of the shortest-path graph.
    sigma : ndarray of shape (n_picks,) or None, default=None
        Picking errors (ns).
    sigma_source : str, default="none"
        Where they came from, for the report.
    chi2 : float or None, default=None
        Fixed χ² acceptance threshold (default: :func:`acceptance_rule`'s).
    petrophysics : callable or None, default=None
        Facies to slowness (default: the study's :class:`LinearVelocity`).
    **inverter_params
        Further :class:`~skvaeinv.LatentInverter` parameters (schedule, starts, ...).

    Returns
    -------
    FieldInversion
        Its inverter's ``acceptance_threshold`` / ``acceptance_chi2`` are set to the
        rule, and its ``accepted_`` and ensemble images follow them.

    Raises
    ------
    ValueError
        If the grid cannot cover the sensors, or the fit fails (bad input, every start
        diverged).
    """
    from skvaeinv import LatentInverter

    grid, forward, rays = survey_operator(data, prior.image_shape_, spacing, origin=origin,
                                          nonlinear=nonlinear,
                                          secondary_nodes=secondary_nodes)
    inv = LatentInverter(prior, forward, petrophysics=petrophysics, **inverter_params)
    t0 = time.perf_counter()
    inv.fit(rays, data.traveltimes, sigma=sigma)
    wall = time.perf_counter() - t0
    rule = acceptance_rule(inv, data.n_picks, chi2)
    # the inverter's own acceptance (accepted_, ensemble_mean_, ...) follows the rule, so
    # that what takes the inverter (LatentSampler(init=...)) sees the same accepted starts
    inv.set_params(acceptance_threshold=rule.get("rmse"), acceptance_chi2=rule.get("chi2"))
    ensemble = inv._accept(stacklevel=3)
    return FieldInversion(data, grid, inv, sigma, sigma_source, rule, wall, ensemble)


def write_result_folder(out: str | os.PathLike, result: FieldInversion, *,
                        command_line: str = "", timings: dict | None = None,
                        figure: bool = True) -> list[Path]:
    """Write the result folder of a field inversion, all files or none.

    The files are made in a temporary folder beside ``out`` and moved in once all are
    complete (files of these names already in ``out`` are replaced, others kept):

    - ``result.npz``: ``model`` (best facies image), ``slowness`` and ``velocity`` of
      it, ``models``, ``latents``, ``data_rmse`` and ``chi2`` per start (``chi2`` only
      with errors), ``time_shift`` (with ``time_shift=True``), ``best_index``,
      ``accepted``, ``ensemble_mean``, ``ensemble_std``, ``channel_share`` (share of
      accepted starts with a channel in each cell: their agreement, not a probability),
      ``predicted`` and ``observed`` times, ``sigma``, ``sensors``, ``source``,
      ``receiver``, ``x_centers``, ``z_centers``;
    - ``cells.csv``: one row per cell, ``x,z,facies,velocity,channel_share``
      (m, m, 0-1, m/ns, 0-1);
    - ``report.json``: data fit (χ² per datum, RMSE), accepted starts and rule, grid,
      settings, timings, versions and the command line;
    - ``figure.png``: sensors over the best model and the starts' agreement, with the
      misfit curves.

    Parameters
    ----------
    out : str or path-like
        The folder (made if missing).
    result : FieldInversion
        What :func:`invert_survey` returned.
    command_line : str, default=""
        For the report.
    timings : dict or None, default=None
        Further timings (s) for the report.
    figure : bool, default=True
        Write ``figure.png`` (needs matplotlib).

    Returns
    -------
    list of Path
        The files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".skvaeinv-", dir=out))
    try:
        names = _write_files(tmp, result, command_line, timings or {}, figure)
        written = []
        for name in names:
            os.replace(tmp / name, out / name)
            written.append(out / name)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_files(folder: Path, res: FieldInversion, command_line: str, timings: dict,
                 figure: bool) -> list[str]:
    from skvaeinv._files import save_figure, save_npz
    from skvaeinv.petrophysics import apply_numpy

    inv, grid, data = res.inverter, res.grid, res.data
    ens = res.ensemble
    slowness = apply_numpy(inv.petrophysics_, inv.model_[None])[0].reshape(grid.shape)
    extra = {}
    if inv.chi2_ is not None:
        extra["chi2"] = inv.chi2_
    if inv.time_shift_ is not None:
        extra["time_shift"] = inv.time_shift_
    if res.sigma is not None:
        extra["sigma"] = res.sigma
    save_npz(folder / "result.npz", model=inv.model_, slowness=slowness,
             velocity=1.0 / slowness, models=inv.models_, latents=inv.latents_,
             data_rmse=inv.data_rmse_, best_index=inv.best_index_, accepted=ens.accepted,
             ensemble_mean=ens.mean, ensemble_std=ens.std,
             channel_share=ens.channel_probability, predicted=inv.predict(data.rays),
             observed=data.traveltimes, sensors=data.sensors, source=data.source,
             receiver=data.receiver, x_centers=grid.x_centers, z_centers=grid.z_centers,
             **extra)
    _write_cells(folder / "cells.csv", grid, inv.model_, 1.0 / slowness,
                 ens.channel_probability)
    report = _report(res, command_line, timings)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n",
                                        encoding="utf-8")
    names = ["result.npz", "cells.csv", "report.json"]
    if figure:
        from skvaeinv.plotting import plot_inversion

        fig = plot_inversion(inv, grid=grid, threshold=res.rule.get("rmse"),
                             chi2=res.rule.get("chi2"), sensors=data.sensors)
        save_figure(fig, folder / "figure.png")
        names.append("figure.png")
    return names


def _write_cells(path: Path, grid: Any, facies: np.ndarray, velocity: np.ndarray,
                 share: np.ndarray) -> None:
    xx, zz = np.meshgrid(grid.x_centers, grid.z_centers)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "z", "facies", "velocity", "channel_share"])
        for row in zip(xx.ravel(), zz.ravel(), np.asarray(facies).ravel(),
                       velocity.ravel(), np.asarray(share).ravel()):
            w.writerow([f"{v:.6g}" for v in row])


def _report(res: FieldInversion, command_line: str, timings: dict) -> dict:
    import torch

    from skvaeinv import __version__

    inv, ens = res.inverter, res.ensemble
    best = int(inv.best_index_)
    fit = {"data_rmse_ns_best": float(inv.data_rmse_[best]),
           "data_rmse_ns_per_start": [float(v) for v in inv.data_rmse_],
           "data_rmse_weighted": res.sigma is not None}
    if inv.chi2_ is not None:
        fit.update(chi2_per_datum_best=float(inv.chi2_[best]),
                   chi2_per_datum_per_start=[float(v) for v in inv.chi2_])
    if inv.time_shift_ is not None:
        fit["time_shift_ns_best"] = float(inv.time_shift_[best])
    params = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
              for k, v in inv.get_params(deep=False).items()
              if k not in ("prior", "forward", "init")}
    return {
        "command_line": command_line,
        "versions": {"skvaeinv": __version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "survey": {"n_picks": res.data.n_picks, "n_sensors": res.data.n_sensors,
                   "errors": res.sigma_source,
                   "sigma_ns_median": None if res.sigma is None else
                   float(np.median(res.sigma))},
        "grid": {"shape": list(res.grid.shape), "spacing_m": res.grid.spacing,
                 "origin_m": list(res.grid.origin)},
        "forward": type(inv.forward_).__name__,
        "fit": fit,
        "accepted": {"n": ens.n_accepted, "of": int(inv.n_starts),
                     "starts": [int(i) for i in ens.accepted], "rule": res.rule["rule"]},
        "inverter": params,
        "n_iter": int(inv.n_iter_),
        "timings_s": {"inversion": res.wall_s, **timings},
    }
