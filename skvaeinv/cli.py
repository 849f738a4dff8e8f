"""Command line: ``skvaeinv demo | train-prior | invert``.

Run ``skvaeinv --help`` or ``skvaeinv COMMAND --help``. Exit codes: 0 success,
1 runtime failure (e.g. a disk error while writing), 2 bad usage, bad input files or
output paths that cannot be written (with a message saying what and where), 130
interrupted. Output paths are checked before any long computation; output files are
written atomically (an existing file of that name is replaced only once the new one is
complete), never over an input file: on failure nothing is left behind.

This module parses the command line and runs each command; the demo itself is
:mod:`skvaeinv.demo`, the file reading and writing :mod:`skvaeinv._files`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from skvaeinv import __version__
from skvaeinv._files import (
    InputError,
    check_figure_format,
    check_folder,
    read_table,
    save_figure,
    save_npz,
)
from skvaeinv._files import check_outputs as _check_outputs  # the commands' names
from skvaeinv._files import save_prior as _save_prior
from skvaeinv._validation import check_traveltimes
from skvaeinv.demo import DEMO, _make_forward, run_demo
from skvaeinv.runtime import tune_allocator

logger = logging.getLogger("skvaeinv.cli")


# --------------------------------------------------------------------------- parsing
def _seed(text: str) -> int:
    """argparse type of ``--seed``: an integer in numpy's seed range."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside [0, 2**32 - 1]")
    return value


@contextlib.contextmanager
def _fit_warned_of_empty_ensemble() -> Iterator[None]:
    """Silence the empty-ensemble warning that ``fit`` has given once already."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no start has a data RMSE",
                                category=UserWarning)
        yield


def _parse_rows(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--rows {text!r}: expected START:STOP, e.g. 0:1900.") from None
    return a, b


def _parse_window(text: str) -> tuple[int, int, int, int]:
    try:
        r, c, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--exclude {text!r}: expected ROW,COL,HEIGHT,WIDTH.") from None
    return r, c, h, w


# --------------------------------------------------------------------------- commands
def _cmd_train_prior(args: argparse.Namespace) -> int:
    from skvaeinv import VAEPrior
    from skvaeinv.datasets import extract_patches, load_training_image
    from skvaeinv.prior import cosine_lr, train_in_chunks

    _check_outputs({"--out": args.out}, [args.image])
    try:
        image = load_training_image(args.image)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from exc
    rows = _parse_rows(args.rows)
    exclude = [_parse_window(w) for w in args.exclude]
    for flag, value in (("--n-images", args.n_images), ("--chunk", args.chunk)):
        if value < 1:
            raise InputError(f"{flag} {value}: expected a positive number of crops.")
    schedule = None
    if args.lr_final is not None:
        try:
            schedule = cosine_lr(args.lr, args.lr_final, 0, args.n_images)
        except ValueError as exc:
            raise InputError(f"--lr-final {args.lr_final}: expected a rate in (0, --lr "
                             f"{args.lr}].") from exc
    prior = VAEPrior(latent_dim=args.latent_dim, beta=args.beta, batch_size=args.batch_size,
                     lr=args.lr, base_channels=args.base_channels,
                     hidden_units=args.hidden_units, device=args.device,
                     precision=args.precision, compile=args.compile,
                     random_state=args.seed, verbose=int(args.progress))

    def crops(n: int, seed: int) -> Any:
        try:
            return extract_patches(image, tuple(args.shape), n, rows=rows, exclude=exclude,
                                   random_state=seed)
        except ValueError as exc:
            raise InputError(str(exc)) from exc

    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        train_in_chunks(prior, crops, args.n_images, chunk_size=args.chunk, seed=args.seed,
                        lr_schedule=schedule)
    except InputError:
        raise
    except (ValueError, FloatingPointError) as exc:  # parameters, crop shape, divergence
        raise InputError(f"cannot train the prior: {exc}") from exc
    _save_prior(prior, out)
    print(f"trained on {prior.n_images_seen_} crops of {tuple(args.shape)} in "
          f"{time.perf_counter() - t0:.0f} s; saved to {out}")
    return 0


class _InvertInputs(NamedTuple):
    """What ``invert`` reads and checks before the inversion."""

    prior: Any
    grid: Any
    forward: Any
    rays: Any
    traveltimes: Any


def _cmd_invert(args: argparse.Namespace) -> int:
    if args.survey is not None:
        return _cmd_invert_field(args)
    inputs = [args.prior, args.rays, args.traveltimes]
    _check_outputs({"--out": args.out, "--figure": args.figure}, inputs)
    if args.figure:
        check_figure_format(args.figure, "--figure")
    data = _invert_inputs(args)
    inv = _inverter(args, data.prior, data.forward)
    t0 = time.perf_counter()
    try:
        inv.fit(data.rays, data.traveltimes)
    except (ValueError, FloatingPointError) as exc:   # bad input, or every start diverged
        raise InputError(str(exc)) from exc
    wall = time.perf_counter() - t0
    out = Path(args.out)
    with _fit_warned_of_empty_ensemble():
        ens = inv.ensemble(args.threshold)  # the same starts as inv.accepted_
    _save_result(out, inv, ens, data.rays)
    if args.figure:
        from skvaeinv.plotting import plot_inversion

        with _fit_warned_of_empty_ensemble():
            fig = plot_inversion(inv, grid=data.grid, threshold=args.threshold)
        save_figure(fig, Path(args.figure))
    print(f"{args.starts} starts, {inv.n_iter_} iterations, {wall:.1f} s; best data RMSE "
          f"{inv.data_rmse_[inv.best_index_]:.4g} ns; accepted {ens.n_accepted}; "
          f"wrote {out}" + (f" and {args.figure}" if args.figure else ""))
    return 0


def _load_prior(args: argparse.Namespace) -> Any:
    from skvaeinv import VAEPrior

    try:
        return VAEPrior.load(args.prior, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"--prior: {exc}") from exc


def _read_survey(path: str, time_unit: str | None = None, z_axis: str | None = None) -> Any:
    """A survey file (``.sgt`` or CSV) with the unit and axis options (None: the
    format's defaults)."""
    from skvaeinv.io import read_survey

    z_up = None if z_axis is None else z_axis == "up"
    try:
        return read_survey(path, time_unit=time_unit, z_up=z_up)
    except FileNotFoundError as exc:
        raise InputError(f"survey file: {exc}") from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _picking_errors(args: argparse.Namespace, data: Any) -> tuple[Any, str]:
    """σ per pick: the error model of the flags, else the file's errors, else none."""
    if args.error_absolute is not None or args.error_relative is not None:
        try:
            sigma = data.sigma(args.error_absolute, args.error_relative)
        except ValueError as exc:
            raise InputError(f"--error-absolute/--error-relative: {exc}") from exc
        return sigma, (f"error model {args.error_absolute or 0:g} ns + "
                       f"{args.error_relative or 0:g} x t")
    if data.errors is not None:
        return data.sigma(), "file"
    logger.warning("%s has no picking errors: the misfit is unweighted and no chi2 is "
                   "reported (give --error-absolute/--error-relative)", args.survey)
    return None, "none"


def _cmd_invert_field(args: argparse.Namespace) -> int:
    """``invert SURVEY``: a field file in, a result folder out."""
    from skvaeinv.workflow import RESULT_FILES, invert_survey, write_result_folder

    if args.rays or args.traveltimes:
        raise InputError("give a survey file or --rays/--traveltimes, not both.")
    if args.figure:
        raise InputError("with a survey file the figure is written into the --out folder "
                         "(figure.png); drop --figure.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {args.out!r} is a file; with a survey file --out is the "
                         "result folder.")
    check_folder(out, f"--out {args.out!r}")
    t0 = time.perf_counter()
    data = _read_survey(args.survey, args.time_unit, args.z_axis)
    sigma, source = _picking_errors(args, data)
    prior = _load_prior(args)
    t_read = time.perf_counter() - t0
    try:
        res = invert_survey(data, prior, spacing=args.spacing, origin=args.origin,
                            nonlinear=args.nonlinear, secondary_nodes=args.secondary_nodes,
                            sigma=sigma, sigma_source=source, chi2=args.chi2,
                            **_inverter_params(args))
    except (ValueError, FloatingPointError) as exc:
        raise InputError(str(exc)) from exc
    t1 = time.perf_counter()
    with _fit_warned_of_empty_ensemble():
        write_result_folder(out, res, command_line=getattr(args, "command_line", ""),
                            timings={"reading": t_read})
    ens = res.ensemble
    best = res.inverter.best_index_
    chi2 = "" if res.inverter.chi2_ is None else \
        f", chi2 per datum {res.inverter.chi2_[best]:.3g}"
    print(f"{data.n_picks} picks, {args.starts} starts, {res.wall_s:.1f} s; best data RMSE "
          f"{res.inverter.data_rmse_[best]:.4g} ns{chi2}; accepted {ens.n_accepted} "
          f"({res.rule['rule']}); wrote {', '.join(RESULT_FILES)} to {out} "
          f"({time.perf_counter() - t1:.1f} s)")
    return 0


def _survey_inputs(args: argparse.Namespace) -> tuple[_InvertInputs, Any]:
    """Prior, grid, operator, rays and times from a survey file, and its errors."""
    from skvaeinv.workflow import survey_operator

    if args.rays or args.traveltimes:
        raise InputError("give a survey file or --rays/--traveltimes, not both.")
    data = _read_survey(args.survey, args.time_unit, args.z_axis)
    sigma, _ = _picking_errors(args, data)
    prior = _load_prior(args)
    try:
        grid, forward, rays = survey_operator(
            data, prior.image_shape_, args.spacing, origin=args.origin,
            nonlinear=args.nonlinear, secondary_nodes=args.secondary_nodes)
    except ValueError as exc:
        raise InputError(f"{args.survey}: {exc}") from exc
    return _InvertInputs(prior, grid, forward, rays, data.traveltimes), sigma


def _invert_inputs(args: argparse.Namespace) -> _InvertInputs:
    """The prior, the grid, the forward operator and the survey files of ``invert``."""
    from skvaeinv.survey import Grid2D

    if not (args.rays and args.traveltimes):
        raise InputError("give a survey file (.sgt or .csv) or both --rays and "
                         "--traveltimes.")
    prior = _load_prior(args)
    rays = read_table(args.rays, "rays (xs, zs, xr, zr)", 4)
    tt = read_table(args.traveltimes, "traveltimes", 1)
    if len(rays) != len(tt):
        raise InputError(f"{len(rays)} rays but {len(tt)} traveltimes: the files must have "
                         "one row per ray, in the same order.")
    try:
        tt = check_traveltimes(tt, args.traveltimes, file_rows=True)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    try:
        grid = Grid2D(shape=prior.image_shape_, spacing=args.spacing,
                      origin=tuple(args.origin or (0.0, 0.0)))
    except ValueError as exc:
        raise InputError(f"--spacing/--origin: {exc}") from exc
    forward = _make_forward(grid, args.nonlinear, args.secondary_nodes)
    try:
        rays = forward.validate_rays(rays)
    except ValueError as exc:
        raise InputError(f"{args.rays}: {exc}") from exc
    return _InvertInputs(prior, grid, forward, rays, tt)


def _inverter_params(args: argparse.Namespace) -> dict:
    """LatentInverter's parameters: the reference schedule, with the flags that override
    it."""
    from skvaeinv.inverter import reference_schedule

    default = "bent-as-coded" if args.nonlinear else "straight"
    study = reference_schedule(args.schedule or default)
    settings = {k: (getattr(args, k) if getattr(args, k) is not None else study[k])
                for k in ("epochs", "batch_size", "lr", "lr_decay", "lr_step", "reg_weight",
                          "reg_decay")}
    return dict(n_starts=args.starts, reg=None if args.reg == "none" else args.reg,
                acceptance_threshold=args.threshold, time_shift=args.time_shift,
                n_jobs=args.n_jobs, device=args.device, precision=args.precision,
                compile=args.compile, random_state=args.seed, verbose=int(args.progress),
                **settings)


def _inverter(args: argparse.Namespace, prior: Any, forward: Any) -> Any:
    """The (unfitted) inverter of ``invert --rays ... --traveltimes ...``."""
    from skvaeinv import LatentInverter

    return LatentInverter(prior, forward, **_inverter_params(args))


def _save_result(out: Path, inv: Any, ens: Any, rays: Any) -> None:
    """The result file of ``invert`` (its contents are listed in the command's help)."""
    from skvaeinv.petrophysics import apply_numpy

    save_npz(out, model=inv.model_, models=inv.models_, latents=inv.latents_,
             data_rmse=inv.data_rmse_, best_index=inv.best_index_,
             predicted=inv.predict(rays), accepted=ens.accepted,
             ensemble_mean=ens.mean, channel_probability=ens.channel_probability,
             ensemble_std=ens.std, history_data_rmse=inv.history_.data_rmse,
             history_z_norm=inv.history_.z_norm, history_lr=inv.history_.lr,
             history_reg_weight=inv.history_.reg_weight,
             slowness=apply_numpy(inv.petrophysics_, inv.model_[None])[0],
             interrupted=inv.interrupted_)


def _cmd_simulate(args: argparse.Namespace) -> int:
    """``simulate``: a synthetic survey file from an image, to rehearse with."""
    from skvaeinv.io import TraveltimeData, simulate, write_csv, write_sgt
    from skvaeinv.petrophysics import LinearVelocity
    from skvaeinv.survey import Grid2D, crosshole

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".sgt", ".csv"):
        raise InputError(f"--out {args.out!r}: expected a .sgt or .csv file name.")
    sensors_out = out.with_name(out.stem + "_sensors.csv") if suffix == ".csv" else None
    _check_outputs({"--out": args.out, "the sensor table": sensors_out},
                   [args.image, args.geometry])
    image = _read_image(args.image)
    try:
        grid = Grid2D(shape=image.shape, spacing=args.spacing,
                      origin=tuple(args.origin or (0.0, 0.0)))
    except ValueError as exc:
        raise InputError(f"--spacing/--origin: {exc}") from exc
    if args.geometry:
        geometry = _read_survey(args.geometry)
    else:
        start, stop, step = args.depths
        top = grid.extent[2]
        rays = crosshole(grid, np.arange(start, stop + step / 2, step) + top)
        geometry = TraveltimeData.from_rays(rays, np.ones(len(rays)))
    forward = _make_forward(grid, args.nonlinear, args.secondary_nodes)
    try:
        forward.validate_rays(geometry.rays)
        data = simulate(forward, LinearVelocity()(image), geometry.sensors, geometry.source,
                        geometry.receiver, absolute=args.noise_absolute,
                        relative=args.noise_relative, random_state=args.seed)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if suffix == ".sgt":
        write_sgt(out, data, time_unit=args.time_unit or "s")
    else:
        write_csv(sensors_out, out, data, time_unit=args.time_unit or "ns")
    print(f"simulated {data.n_picks} picks between {data.n_sensors} sensors through "
          f"{args.image} ({'bent' if args.nonlinear else 'straight'} rays, noise "
          f"{args.noise_absolute:g} ns + {args.noise_relative:g} x t); wrote {out}"
          + (f" and {sensors_out}" if sensors_out else ""))
    return 0


def _read_image(path: str) -> np.ndarray:
    """A facies image (0 matrix .. 1 channel) from .npy or .png."""
    from skvaeinv.datasets import load_training_image

    try:
        return np.asarray(load_training_image(path), dtype=np.float64)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"image: {exc}") from exc


def _cmd_demo(args: argparse.Namespace) -> int:
    print(f"skvaeinv {__version__} demo: procedural channels, a "
          f"{DEMO['shape'][0]} x {DEMO['shape'][1]} crosshole panel, 625 "
          f"{'bent (shortest-path)' if args.nonlinear else 'straight'} rays.")
    summary = run_demo(out_dir=args.out, starts=args.starts, epochs=args.epochs,
                       retrain=args.retrain, n_images=args.n_images, nonlinear=args.nonlinear,
                       seed=args.seed, progress=not args.quiet, save_prior=args.save_prior)
    print(f"  data RMSE of the best start : {summary['data_rmse_best_ns']:.3f} ns "
          f"(median over starts {summary['data_rmse_median_ns']:.3f} ns)")
    print(f"  model RMSE vs truth          : best {summary['model_rmse_best']:.3f}, "
          f"ensemble mean {summary['model_rmse_ensemble_mean']:.3f} "
          f"(prior mean image: {summary['model_rmse_prior_mean_image']:.3f})")
    print("  truth's own latent code      : data RMSE "
          f"{summary['data_rmse_truth_code_ns']:.3f} ns")
    print(f"  accepted starts              : {summary['accepted']} "
          f"(data RMSE <= {summary['threshold_ns']:.3f} ns)")
    print(f"  time                         : {summary['total_seconds']:.0f} s "
          f"(prior {summary['prior_seconds']:.0f} s, inversion "
          f"{summary['inversion_seconds']:.0f} s)")
    if "figure" in summary:
        print(f"  figure                       : {summary['figure']}")
    return 0


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The ``skvaeinv`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser with the ``demo``, ``train-prior``, ``invert`` and ``sample``
        commands.
    """
    p = argparse.ArgumentParser(
        prog="skvaeinv",
        description="Crosshole traveltime tomography with a deep generative (VAE) prior.")
    p.add_argument("--version", action="version", version=f"skvaeinv {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    # -v also after the command (SUPPRESS: the command's parser keeps the main one's)
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="more log output")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo_command(sub, verbose)
    _add_train_prior_command(sub, verbose)
    _add_invert_command(sub, verbose)
    _add_sample_command(sub, verbose)
    _add_simulate_command(sub, verbose)
    return p


def _add_demo_command(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """The ``demo`` command and its options."""
    d = sub.add_parser("demo", parents=[verbose],
                       help="train/load a small prior, invert a synthetic survey, write a figure")
    d.add_argument("--out", default=".", help="folder for skvaeinv_demo.png (default: .)")
    d.add_argument("--starts", type=int, default=8, help="random starts (default 8)")
    d.add_argument("--epochs", type=int, default=60, help="SGD epochs (default 60)")
    d.add_argument("--nonlinear", action="store_true", help="bent rays (shortest path)")
    d.add_argument("--retrain", action="store_true",
                   help="train the small prior now instead of loading the shipped one")
    d.add_argument("--n-images", type=int, default=200_000,
                   help="procedural images for --retrain (default 200000: on 2 cores "
                        "~3 min in bfloat16 with AVX-512 BF16, ~6 min in float32 on "
                        "AVX2-only CPUs)")
    d.add_argument("--save-prior", default=None, help="also save the prior to this file")
    d.add_argument("--seed", type=_seed, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_cmd_demo)


def _add_train_prior_command(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """The ``train-prior`` command and its options."""
    t = sub.add_parser("train-prior", parents=[verbose],
                       help="train a VAEPrior on crops of a training image")
    t.add_argument("image", help="training image (.png or .npy, values 0..1 or 0..255)")
    t.add_argument("--shape", type=int, nargs=2, default=[129, 65], metavar=("H", "W"),
                   help="crop shape (default 129 65)")
    t.add_argument("--out", required=True, help="prior file to write (.skv)")
    t.add_argument("--rows", default=None, help="row band START:STOP for the crops")
    t.add_argument("--exclude", action="append", default=[], metavar="R,C,H,W",
                   help="window no crop may overlap (repeatable)")
    t.add_argument("--n-images", type=int, default=100_000, help="crops in all")
    t.add_argument("--chunk", type=int, default=10_000, help="crops held in memory at once")
    t.add_argument("--latent-dim", type=int, default=20)
    t.add_argument("--beta", type=float, default=1000.0)
    t.add_argument("--batch-size", type=int, default=100)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--lr-final", type=float, default=None,
                   help="anneal Adam's rate from --lr to this along a cosine, chunk by "
                        "chunk (annealing lowers the prior's misfit floor; "
                        "default: constant --lr)")
    t.add_argument("--base-channels", type=int, default=32)
    t.add_argument("--hidden-units", type=int, default=512)
    t.add_argument("--precision", choices=["float32", "bfloat16", "auto"], default="auto",
                   help="training arithmetic (auto: bfloat16 where the device has native "
                        "bfloat16 kernels, e.g. AVX-512 BF16 CPUs and recent GPUs, "
                        "float32 elsewhere)")
    t.add_argument("--device", default="auto")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (faster for long runs; needs a "
                        "C++ compiler)")
    t.add_argument("--seed", type=_seed, default=0)
    t.add_argument("--progress", action="store_true", help="progress bar")
    t.set_defaults(func=_cmd_train_prior)


#: help, description and epilog of the commands whose result files need describing
_DOCS = {
    "invert": dict(
        help="invert traveltimes with a trained prior",
        description="Rays: CSV (or .npy) with 4 columns xs,zs,xr,zr in metres "
                       "(z positive down), one ray per row, optional header line. "
                       "Traveltimes: one column (ns), same order.",
        epilog="The result file (.npz, np.load(path)) holds: model (best "
                       "facies image), models, latents and data_rmse (per start), "
                       "best_index, predicted (traveltimes of the best model), accepted "
                       "(indices of the starts with data_rmse <= --threshold; all finite "
                       "ones without it), ensemble_mean, channel_probability and "
                       "ensemble_std (of the accepted models), slowness (of the best "
                       "model, ns/m), history_data_rmse and history_z_norm (start x "
                       "iteration), history_lr and history_reg_weight (per iteration), "
                       "interrupted."),
    "sample": dict(
        help="sample the posterior of the latent code (MCMC)",
        description="The inputs of invert; batched Markov chains in the "
                       "prior's latent space give the posterior mean, spread, channel "
                       "probability and credible intervals of each cell.",
        epilog="The result file (.npz) holds: posterior_mean, posterior_std, "
                       "channel_probability, credible_lower and credible_upper (at "
                       "--level), samples (chain x draw x latent), log_posterior, "
                       "acceptance_rate and step_size (per chain), rhat and ess_bulk (per "
                       "latent dimension), noise_std (draws, with --noise-std estimate), "
                       "predicted (traveltimes of the posterior mean), n_gradient_evals, "
                       "n_forward_evals."),
}


def _documented_parser(sub: Any, name: str, verbose: argparse.ArgumentParser
                       ) -> argparse.ArgumentParser:
    """The subparser of command ``name`` with its texts from :data:`_DOCS`."""
    return sub.add_parser(name, parents=[verbose], **_DOCS[name])


def _add_invert_command(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """The ``invert`` command and its options."""
    i = _documented_parser(sub, "invert", verbose)
    _add_survey_arguments(i, "result folder with a survey file; else a result file "
                             "(.npz; replaced if it exists); contents below")
    i.add_argument("--starts", type=int, default=20)
    i.add_argument("--schedule", choices=["straight", "bent", "bent-as-coded", "bent-long"],
                   default=None,
                   help="reference schedule (default: 'bent-as-coded', the study's "
                        "bent-ray steps, with --nonlinear, else 'straight'); --epochs, "
                        "--lr, --reg-weight, ... override its settings")
    i.add_argument("--epochs", type=int, default=None)
    i.add_argument("--batch-size", type=int, default=None)
    i.add_argument("--lr", type=float, default=None)
    i.add_argument("--lr-decay", type=float, default=None)
    i.add_argument("--lr-step", type=int, default=None)
    i.add_argument("--reg", choices=["ring", "origin", "none"], default="ring")
    i.add_argument("--reg-weight", type=float, default=None)
    i.add_argument("--reg-decay", type=float, default=None)
    i.add_argument("--threshold", type=float, default=None,
                   help="acceptance threshold on data RMSE (ns)")
    i.add_argument("--chi2", type=float, default=None,
                   help="with a survey file and picking errors: accept starts with a chi2 "
                        "per datum at most this (default: max(1 + 3 sqrt(2/n), 1.1 x the "
                        "best start's))")
    i.add_argument("--time-shift", action="store_true",
                   help="fit a constant time shift (zero-time error) with the model")
    _add_runtime_arguments(i)
    i.add_argument("--compile", action="store_true",
                   help="torch.compile the decoder (about 1.5x faster for long runs; "
                        "needs a C++ compiler)")
    i.set_defaults(func=_cmd_invert)


def _add_survey_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """The prior, survey files, outputs and physics options of ``invert`` and ``sample``."""
    parser.add_argument("survey", nargs="?", default=None,
                        help="survey file: pyGIMLi's .sgt, or a CSV pick table NAME.csv "
                             "(source,receiver,time[,error]) with NAME_sensors.csv (x,z) "
                             "beside it; or give --rays and --traveltimes")
    parser.add_argument("--prior", required=True, help="prior file from train-prior")
    parser.add_argument("--rays", default=None, help="rays file (.csv or .npy)")
    parser.add_argument("--traveltimes", default=None,
                        help="traveltimes file (.csv or .npy)")
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--time-unit", choices=["s", "ms", "us", "ns"], default=None,
                        help="unit of the survey file's times and errors (default: s for "
                             ".sgt, as pyGIMLi; ns for .csv)")
    parser.add_argument("--z-axis", choices=["up", "down"], default=None,
                        help="the survey file's vertical axis (default: up for .sgt, "
                             "depths negative, as pyGIMLi; down for .csv)")
    parser.add_argument("--error-absolute", type=float, default=None, metavar="A",
                        help="picking errors sigma = A + R t (ns), instead of the file's")
    parser.add_argument("--error-relative", type=float, default=None, metavar="R",
                        help="relative part R of that error model (e.g. 0.01)")
    parser.add_argument("--figure", default=None, help="also write a summary figure (.png)")
    parser.add_argument("--nonlinear", action="store_true", help="shortest-path (bent rays)")
    parser.add_argument("--secondary-nodes", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=0.1, help="cell size in m (default 0.1)")
    parser.add_argument("--origin", type=float, nargs=2, default=None, metavar=("X0", "Z0"),
                        help="top-left corner of the grid (m; default: 0 0 with --rays, "
                             "centred on the sensors with a survey file)")


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and how the batches run (``invert`` and ``sample``)."""
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "auto"],
                   default="float32",
                   help="decoder arithmetic (bfloat16: about 2x faster on CPUs with "
                        "AVX-512 BF16, 10-20x slower on CPUs without it; auto: "
                        "bfloat16 only where it is native)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--progress", action="store_true")


def _add_simulate_command(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """The ``simulate`` command and its options."""
    c = sub.add_parser("simulate", parents=[verbose],
                       help="make a synthetic survey file from an image (to rehearse)")
    c.add_argument("image", help="facies image (.npy or .png; 0 matrix .. 1 channel), "
                                 "row 0 at the top")
    c.add_argument("--out", required=True,
                   help="survey file to write: .sgt (pyGIMLi) or .csv (then also "
                        "NAME_sensors.csv)")
    c.add_argument("--geometry", default=None,
                   help="take sensors and pairs from this survey file (.sgt or .csv; its "
                        "times are ignored); default: a crosshole survey on the grid's "
                        "left and right edges at --depths")
    c.add_argument("--depths", type=float, nargs=3, default=[0.5, 12.5, 0.5],
                   metavar=("START", "STOP", "STEP"),
                   help="sensor depths below the grid's top (m; default 0.5 12.5 0.5)")
    c.add_argument("--spacing", type=float, default=0.1, help="cell size in m (default 0.1)")
    c.add_argument("--origin", type=float, nargs=2, default=None, metavar=("X0", "Z0"))
    c.add_argument("--noise-absolute", type=float, default=0.25,
                   help="absolute noise (ns, standard deviation; default 0.25)")
    c.add_argument("--noise-relative", type=float, default=0.0,
                   help="relative noise (fraction of the time; default 0)")
    c.add_argument("--nonlinear", action="store_true", help="bent rays (shortest path)")
    c.add_argument("--secondary-nodes", type=int, default=3)
    c.add_argument("--time-unit", choices=["s", "ms", "us", "ns"], default=None,
                   help="unit of the written times (default: s for .sgt, ns for .csv)")
    c.add_argument("--seed", type=_seed, default=0)
    c.set_defaults(func=_cmd_simulate)


def _add_sample_command(sub: Any, verbose: argparse.ArgumentParser) -> None:
    """The ``sample`` command and its options."""
    c = _documented_parser(sub, "sample", verbose)
    _add_survey_arguments(c, "result file (.npz; replaced if it exists; contents below)")
    c.add_argument("--sampler", choices=["mala", "hmc", "pcn"], default="mala")
    c.add_argument("--chains", type=int, default=8)
    c.add_argument("--samples", type=int, default=1000, help="kept draws per chain")
    c.add_argument("--warmup", type=int, default=500, help="warm-up iterations per chain")
    c.add_argument("--mass", choices=["identity", "diag", "dense", "gauss-newton"],
                   default=None, help="metric of mala/hmc (default: diag; gauss-newton: the "
                   "Laplace covariance at each chain's position, no warm-up draws needed)")
    c.add_argument("--latent-prior", choices=["normal", "density"], default="normal",
                   help="prior of z: N(0, I) or the prior file's fitted latent density")
    c.add_argument("--noise-std", type=_noise_std, default="estimate",
                   help="traveltime error (ns), or 'estimate' (default)")
    c.add_argument("--sigma", default=None,
                   help="file of per-ray errors (ns, one column; relative errors with "
                        "--noise-std estimate)")
    c.add_argument("--level", type=float, default=0.9, help="credible level (default 0.9)")
    _add_runtime_arguments(c)
    c.set_defaults(func=_cmd_sample)


def _noise_std(text: str) -> float | str:
    if text == "estimate":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number (ns) nor "
                                         "'estimate'") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of ns")
    return value


def _cmd_sample(args: argparse.Namespace) -> int:
    from skvaeinv import LatentSampler

    inputs = [args.prior, args.rays, args.traveltimes, args.sigma, args.survey]
    _check_outputs({"--out": args.out, "--figure": args.figure}, inputs)
    if args.figure:
        check_figure_format(args.figure, "--figure")
    if not 0 < args.level < 1:
        raise InputError(f"--level {args.level!r} must be in (0, 1).")
    if args.survey is not None:
        if args.sigma is not None:
            raise InputError("with a survey file the errors come from it (or from "
                             "--error-absolute/--error-relative), not from --sigma.")
        data, sigma = _survey_inputs(args)
    else:
        data = _invert_inputs(args)
        sigma = None if args.sigma is None else read_table(args.sigma, "sigma", 1).ravel()
    post = LatentSampler(data.prior, data.forward, sampler=args.sampler,
                         n_chains=args.chains, n_samples=args.samples, n_warmup=args.warmup,
                         mass=args.mass, latent_prior=args.latent_prior,
                         noise_std=args.noise_std, n_jobs=args.n_jobs, device=args.device,
                         precision=args.precision, random_state=args.seed,
                         verbose=int(args.progress))
    t0 = time.perf_counter()
    try:
        post.fit(data.rays, data.traveltimes, sigma=sigma)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    wall = time.perf_counter() - t0
    _save_posterior(Path(args.out), post, data.rays, args.level)
    if args.figure:
        from skvaeinv.plotting import plot_posterior

        save_figure(plot_posterior(post, grid=data.grid), Path(args.figure))
    print(f"{args.chains} chains x {args.samples} draws ({args.sampler}), {wall:.1f} s; "
          f"acceptance {post.acceptance_rate_.mean():.2f}, max R-hat "
          f"{np.nanmax(post.rhat_):.3f}, min bulk ESS {np.nanmin(post.ess_bulk_):.0f}; "
          f"wrote {args.out}" + (f" and {args.figure}" if args.figure else ""))
    return 0


def _save_posterior(out: Path, post: Any, rays: Any, level: float) -> None:
    """The result file of ``sample`` (its contents are listed in the command's help)."""
    lower, upper = post.credible_interval(level)
    extra = {} if post.noise_std_ is None else {"noise_std": post.noise_std_}
    save_npz(out, posterior_mean=post.posterior_mean_, posterior_std=post.posterior_std_,
             channel_probability=post.channel_probability_, credible_lower=lower,
             credible_upper=upper, samples=post.samples_, log_posterior=post.log_posterior_,
             acceptance_rate=post.acceptance_rate_, step_size=post.step_size_,
             rhat=post.rhat_, ess_bulk=post.ess_bulk_, predicted=post.predict(rays),
             n_gradient_evals=post.n_gradient_evals_,
             n_forward_evals=post.n_forward_evals_, **extra)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command.

    Parameters
    ----------
    argv : sequence of str or None, default=None
        Arguments without the program name; None reads ``sys.argv``.

    Returns
    -------
    int
        Exit code: 0 success, 1 runtime failure, 2 bad usage or input, 130 interrupted.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = " ".join(["skvaeinv", *argv])
    level = logging.WARNING - 10 * min(args.verbose + (args.command == "demo"), 2)
    logging.basicConfig(level=level, format="%(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"skvaeinv {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a full disk or a folder that vanished while writing
        print(f"skvaeinv {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"skvaeinv {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> int:
    """Entry point of the ``skvaeinv`` console script and ``python -m skvaeinv``.

    The command line owns its process, so it first keeps freed memory for reuse
    (:func:`skvaeinv.runtime.tune_allocator`, unless the user set glibc's
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` already: theirs win) and
    selects matplotlib's file-only ``Agg`` backend unless ``MPLBACKEND`` is set, shows
    warnings as one line each (``skvaeinv: warning: ...``, without the library's source
    line), then runs :func:`main`.

    Returns
    -------
    int
        The exit code of :func:`main`.
    """
    if not {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"} & set(os.environ):
        tune_allocator()
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files, never to a screen
    warnings.formatwarning = _format_warning
    return main()


def _format_warning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, line: str | None = None) -> str:
    """A warning for a command-line user: what happened, not where in the code."""
    return f"skvaeinv: warning: {message} ({category.__name__})\n"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run())
