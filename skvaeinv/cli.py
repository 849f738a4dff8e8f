"""Command line: ``skvaeinv demo | train-prior | invert``.

Run ``skvaeinv --help`` or ``skvaeinv COMMAND --help``. Exit codes: 0 success,
1 runtime failure (e.g. a disk error while writing), 2 bad usage, bad input files or
output paths that cannot be written (with a message saying what and where), 130
interrupted. Output paths are checked before any long computation; output files are
written atomically (an existing file of that name is replaced only once the new one is
complete), never over an input file: on failure nothing is left behind.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import logging
import numbers
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skvaeinv import __version__
from skvaeinv._utils import load_plain_npy
from skvaeinv.runtime import tune_allocator

logger = logging.getLogger("skvaeinv.cli")

#: Settings of the demo (and of the small prior shipped in ``skvaeinv/data``).
DEMO = {
    "shape": (65, 33), "spacing": 0.2,            # ~ the study's panel, 0.2 m cells
    "depths": np.arange(0.5, 12.51, 0.5),          # 25 sources x 25 receivers
    "channels": dict(width=(2.5, 4.5), wavelength=(30.0, 100.0), proportion=0.27),
    # beta scaled from the study's 1000 for 8,385 pixels to this image's 2,145
    "prior": dict(latent_dim=20, beta=250.0, base_channels=16, hidden_units=256,
                  batch_size=100, lr=1e-3),
    "truth_seed": 2**31 - 7,                      # never used to make training images
}
DEMO_PRIOR_FILE = Path(__file__).resolve().parent / "data" / "demo_prior.skv"


class InputError(ValueError):
    """A user file or argument is malformed (exit code 2)."""


# --------------------------------------------------------------------------- file I/O
def _read_table(path: str | os.PathLike, name: str, n_cols: int | None) -> np.ndarray:
    """Read a numeric table from ``.npy`` or CSV (optional header line, comma or blanks).

    Returns a float array of shape (n_rows, n_cols) (or (n_rows,) when ``n_cols`` is 1).
    Errors name the file, the line and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{name} file {str(path)!r} does not exist.")
    if not path.is_file():
        raise InputError(f"{name} file {str(path)!r} is not a file.")
    if path.suffix.lower() == ".npy":
        try:
            arr = load_plain_npy(path, name)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if arr.size == 0:
            raise InputError(f"{name} file {str(path)!r} holds no data rows.")
        if n_cols == 1:
            if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 1):
                raise InputError(f"{name} array in {str(path)!r} has shape {arr.shape}; "
                                 "expected (n,) or (n, 1).")
            arr = arr.reshape(-1)
        elif arr.ndim != 2 or arr.shape[1] != n_cols:
            raise InputError(f"{name} array in {str(path)!r} has shape {arr.shape}; expected "
                             f"(n, {n_cols}).")
        bad = ~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1)
        if bad.any():
            raise InputError(f"{name} array in {str(path)!r} has NaN/inf in row(s) "
                             f"{np.flatnonzero(bad)[:10].tolist()}.")
        return arr
    rows: list[list[float]] = []
    try:
        # utf-8-sig: spreadsheet programs write a byte-order mark ("CSV UTF-8")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"{name} file {str(path)!r} is neither .npy nor UTF-8 text "
                         f"({exc.reason} at byte {exc.start}).") from None
    lines = [(lineno, line.strip()) for lineno, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.strip().startswith("#")]
    comma = any("," in line for _, line in lines)  # comments do not decide
    for k, (lineno, stripped) in enumerate(lines):
        fields = ([f.strip() for f in next(csv.reader([stripped]))] if comma
                  else stripped.split())
        try:
            values = [float(f) for f in fields]
        except ValueError:
            if k == 0 and not any(_is_number(f) for f in fields):
                continue                      # a header line: no field is a number
            raise InputError(f"{str(path)!r}, line {lineno}: cannot read {stripped!r} as "
                             f"numbers.") from None
        want = n_cols if n_cols is not None else len(values)
        if len(values) != want:
            raise InputError(f"{str(path)!r}, line {lineno}: expected {want} column(s) "
                             f"({name}), found {len(values)}.")
        if not all(np.isfinite(values)):
            raise InputError(f"{str(path)!r}, line {lineno}: NaN or infinite value.")
        rows.append(values)
    if not rows:
        raise InputError(f"{name} file {str(path)!r} holds no data rows.")
    arr = np.asarray(rows, dtype=float)
    return arr[:, 0] if n_cols == 1 else arr


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_outputs(outputs: dict[str, str | None], inputs: Sequence[str | None]) -> None:
    """Refuse, before any long computation, output paths that cannot be written or that
    name an input file, a folder, or another output."""
    taken = {Path(p).resolve(): "an input file" for p in inputs if p}
    for flag, value in outputs.items():
        if value is None:
            continue
        if not str(value).strip():
            raise InputError(f"{flag} is empty; give a file name.")
        path = Path(value)
        resolved = path.resolve()
        if resolved in taken:
            raise InputError(f"{flag} {value!r} is {taken[resolved]}; choose another name.")
        taken[resolved] = f"also the {flag} file"
        if path.is_dir():
            raise InputError(f"{flag} {value!r} is a folder; give a file name.")
        _check_folder(path.parent, f"{flag} {value!r}")


def _check_folder(folder: Path, what: str) -> None:
    """``folder`` exists as a writable folder, or can be made in a writable one."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what}: {str(existing)!r} is a file, not a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what}: no permission to write in {str(existing)!r}.")


def _check_figure_format(value: str, flag: str) -> None:
    """matplotlib is installed and can write ``value``'s format."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError(f"{flag} needs matplotlib: pip install 'skvaeinv[plot]'.") from None
    fmt = Path(value).suffix.lstrip(".").lower() or "png"
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise InputError(f"{flag} {value!r}: matplotlib cannot write '.{fmt}' files; use "
                         f"one of {', '.join('.' + f for f in sorted(formats))}.")


def _atomic_path(target: Path) -> Path:
    """A temporary file next to ``target`` (renamed onto it once complete), with the
    permissions a plain new file gets (``mkstemp`` alone would make it owner-only)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix,
                               dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _save_figure(fig: Any, target: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = _atomic_path(target)
    try:
        fig.savefig(tmp, dpi=100, format=target.suffix.lstrip(".").lower() or "png")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def _save_prior(prior: Any, target: Path) -> None:
    """``prior.save`` (atomic already) to ``target``, creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    prior.save(target)


def _chunk_seed(seed: int, chunk: int, stride: int = 1_000_003) -> int:
    """Seed of the training images of chunk ``chunk`` of a run seeded with ``seed``.

    ``seed * stride + chunk`` (the formula the committed priors were trained with:
    stride 1,000,003 for train-prior, 7,919 for the demo prior), folded into numpy's seed
    range ``[0, 2**32)``.
    """
    return (int(seed) * int(stride) + int(chunk)) % 2**32


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


def _save_npz(target: Path, **arrays: Any) -> None:
    tmp = _atomic_path(target)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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
    prior = VAEPrior(latent_dim=args.latent_dim, beta=args.beta, batch_size=args.batch_size,
                     lr=args.lr, base_channels=args.base_channels,
                     hidden_units=args.hidden_units, device=args.device,
                     precision=args.precision, compile=args.compile,
                     random_state=args.seed, verbose=int(args.progress))
    out = Path(args.out)
    t0 = time.perf_counter()
    chunk = 0
    seen = 0
    while seen < args.n_images:
        n = min(args.chunk, args.n_images - seen)
        try:
            crops = extract_patches(image, tuple(args.shape), n, rows=rows, exclude=exclude,
                                    random_state=_chunk_seed(args.seed, chunk))
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        try:
            prior.partial_fit(crops)
        except (ValueError, FloatingPointError) as exc:  # parameters, crop shape, divergence
            raise InputError(f"cannot train the prior: {exc}") from exc
        seen += n
        chunk += 1
        logger.info("%d / %d crops, loss per image %.1f, %.0f s", seen, args.n_images,
                    prior.loss_curve_[-1], time.perf_counter() - t0)
    _save_prior(prior, out)
    print(f"trained on {seen} crops of {tuple(args.shape)} in {time.perf_counter() - t0:.0f} s;"
          f" saved to {out}")
    return 0


def _make_forward(grid: Any, nonlinear: bool, secondary_nodes: int) -> Any:
    from skvaeinv.forward import ShortestPath, StraightRay

    return ShortestPath(grid, secondary_nodes=secondary_nodes) if nonlinear \
        else StraightRay(grid)


def _cmd_invert(args: argparse.Namespace) -> int:
    from skvaeinv import LatentInverter, VAEPrior
    from skvaeinv.inverter import reference_schedule
    from skvaeinv.petrophysics import apply_numpy
    from skvaeinv.survey import Grid2D

    inputs = [args.prior, args.rays, args.traveltimes]
    _check_outputs({"--out": args.out, "--figure": args.figure}, inputs)
    if args.figure:
        _check_figure_format(args.figure, "--figure")
    try:
        prior = VAEPrior.load(args.prior, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(f"--prior: {exc}") from exc
    rays = _read_table(args.rays, "rays (xs, zs, xr, zr)", 4)
    tt = _read_table(args.traveltimes, "traveltimes", 1)
    if len(rays) != len(tt):
        raise InputError(f"{len(rays)} rays but {len(tt)} traveltimes: the files must have "
                         "one row per ray, in the same order.")
    bad = np.flatnonzero(tt <= 0)
    if bad.size:
        raise InputError(f"{args.traveltimes}: {bad.size} non-positive traveltime(s), the "
                         f"first in data row {bad[0] + 1} ({tt[bad[0]]:g} ns); traveltimes "
                         "must be > 0 ns.")
    try:
        grid = Grid2D(shape=prior.image_shape_, spacing=args.spacing,
                      origin=tuple(args.origin))
    except ValueError as exc:
        raise InputError(f"--spacing/--origin: {exc}") from exc
    forward = _make_forward(grid, args.nonlinear, args.secondary_nodes)
    try:
        rays = forward.validate_rays(rays)
    except ValueError as exc:
        raise InputError(f"{args.rays}: {exc}") from exc
    study = reference_schedule(args.schedule or ("bent" if args.nonlinear else "straight"))
    settings = {k: (getattr(args, k) if getattr(args, k) is not None else study[k])
                for k in ("epochs", "lr", "lr_decay", "lr_step", "reg_decay")}
    inv = LatentInverter(prior, forward, n_starts=args.starts, batch_size=args.batch_size,
                         reg=None if args.reg == "none" else args.reg,
                         reg_weight=args.reg_weight, acceptance_threshold=args.threshold,
                         n_jobs=args.n_jobs, device=args.device, precision=args.precision,
                         compile=args.compile, random_state=args.seed,
                         verbose=int(args.progress), **settings)
    t0 = time.perf_counter()
    try:
        inv.fit(rays, tt)
    except (ValueError, FloatingPointError) as exc:   # bad input, or every start diverged
        raise InputError(str(exc)) from exc
    wall = time.perf_counter() - t0
    out = Path(args.out)
    with _fit_warned_of_empty_ensemble():
        ens = inv.ensemble(args.threshold)  # the same starts as inv.accepted_
    _save_npz(out, model=inv.model_, models=inv.models_, latents=inv.latents_,
              data_rmse=inv.data_rmse_, best_index=inv.best_index_,
              predicted=inv.predict(rays), accepted=ens.accepted,
              ensemble_mean=ens.mean, channel_probability=ens.channel_probability,
              ensemble_std=ens.std, history_data_rmse=inv.history_.data_rmse,
              history_z_norm=inv.history_.z_norm, history_lr=inv.history_.lr,
              history_reg_weight=inv.history_.reg_weight,
              slowness=apply_numpy(inv.petrophysics_, inv.model_[None])[0],
              interrupted=inv.interrupted_)
    if args.figure:
        from skvaeinv.plotting import plot_inversion

        with _fit_warned_of_empty_ensemble():
            fig = plot_inversion(inv, grid=grid, threshold=args.threshold)
        _save_figure(fig, Path(args.figure))
    print(f"{args.starts} starts, {inv.n_iter_} iterations, {wall:.1f} s; best data RMSE "
          f"{inv.data_rmse_[inv.best_index_]:.4g} ns; accepted {ens.n_accepted}; "
          f"wrote {out}" + (f" and {args.figure}" if args.figure else ""))
    return 0


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

    if not retrain and DEMO_PRIOR_FILE.is_file():
        return VAEPrior.load(DEMO_PRIOR_FILE, device="cpu")
    # bfloat16 where the CPU has native kernels (as for the shipped file), float32
    # where torch would emulate it (10-20x slower)
    prior = VAEPrior(**DEMO["prior"], device="cpu", precision="auto", random_state=seed,
                     verbose=int(progress))
    chunk = 10_000
    for k in range(0, n_images, chunk):
        images = make_channels(min(chunk, n_images - k), shape=DEMO["shape"],
                               random_state=_chunk_seed(seed, k, stride=7919),
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
    prior; the figure is written to ``out_dir/skvaeinv_demo.png``.

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
        Bent rays (shortest paths) instead of straight rays.
    save_prior : str or None, default=None
        Also save the prior to this file.
    figure : bool, default=True
        Write the figure (needs matplotlib).

    Returns
    -------
    summary : dict
        Data and model RMSEs, acceptance, timings, the figure's path (``"figure"``),
        and the fitted ``"inverter"`` and the ``"truth"`` image.
    """
    for name, value in (("starts", starts), ("epochs", epochs), ("n_images", n_images)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    if figure:
        _check_folder(Path(out_dir), f"output folder {str(out_dir)!r}")
        _check_figure_format("skvaeinv_demo.png", "the demo figure")
    if save_prior is not None:
        _check_outputs({"--save-prior": save_prior}, [])
    from skvaeinv import LatentInverter
    from skvaeinv.datasets import make_channels
    from skvaeinv.inverter import reference_schedule
    from skvaeinv.petrophysics import LinearVelocity
    from skvaeinv.survey import Grid2D, crosshole

    t0 = time.perf_counter()
    prior = demo_prior(retrain, n_images=n_images, seed=seed, progress=progress)
    if save_prior is not None:
        _save_prior(prior, Path(save_prior))
    t_prior = time.perf_counter() - t0
    grid = Grid2D(shape=DEMO["shape"], spacing=DEMO["spacing"])
    rays = crosshole(grid, DEMO["depths"])
    truth = make_channels(1, shape=DEMO["shape"], random_state=DEMO["truth_seed"],
                          **DEMO["channels"])[0].astype(float)
    forward = _make_forward(grid, nonlinear, 2 if nonlinear else 3)
    tt = forward.traveltimes(LinearVelocity()(truth), rays)
    schedule = reference_schedule("bent" if nonlinear else "straight")
    if not nonlinear:  # the straight-ray schedule's decays, spread over ``epochs``
        schedule.update(lr_step=max(1, epochs // 120), reg_decay=0.999 ** (120 / epochs))
    schedule["epochs"] = epochs
    inv = LatentInverter(prior, _make_forward(grid, nonlinear, 3), n_starts=starts,
                         device="cpu", n_jobs=1, random_state=seed,
                         verbose=1 if progress else 0, **schedule)
    t1 = time.perf_counter()
    inv.fit(rays, tt)
    t_inv = time.perf_counter() - t1
    # accept the starts that fit the data about as well as the truth's own latent code
    # (or, where the prior cannot represent the truth that well, as well as the best start)
    truth_code = prior.inverse_transform(prior.transform(truth[None]))[0]
    rmse_code = float(np.sqrt(np.mean(
        (forward.traveltimes(LinearVelocity()(truth_code), rays) - tt) ** 2)))
    threshold = 1.1 * max(rmse_code, float(np.min(inv.data_rmse_)))
    ens = inv.ensemble(threshold)
    summary = {
        "data_rmse_best_ns": float(inv.data_rmse_[inv.best_index_]),
        "data_rmse_median_ns": float(np.median(inv.data_rmse_)),
        "model_rmse_best": float(np.sqrt(np.mean((inv.model_ - truth) ** 2))),
        "model_rmse_ensemble_mean": float(np.sqrt(np.mean((ens.mean - truth) ** 2))),
        "model_rmse_prior_mean_image": float(np.sqrt(np.mean(
            (prior.sample(200, random_state=1).mean(axis=0) - truth) ** 2))),
        "data_rmse_truth_code_ns": rmse_code,
        "accepted": f"{ens.n_accepted}/{starts}",
        "threshold_ns": threshold,
        "prior_seconds": t_prior, "inversion_seconds": t_inv,
        "total_seconds": time.perf_counter() - t0,
    }
    if figure:
        from skvaeinv.plotting import plot_inversion

        path = Path(out_dir) / "skvaeinv_demo.png"
        _save_figure(plot_inversion(inv, truth=truth, grid=grid, threshold=threshold), path)
        summary["figure"] = str(path)
    summary["inverter"] = inv
    summary["truth"] = truth
    return summary


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
        The parser with the ``demo``, ``train-prior`` and ``invert`` commands.
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

    i = sub.add_parser("invert", parents=[verbose],
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
                       "interrupted.")
    i.add_argument("--prior", required=True, help="prior file from train-prior")
    i.add_argument("--rays", required=True, help="rays file (.csv or .npy)")
    i.add_argument("--traveltimes", required=True, help="traveltimes file (.csv or .npy)")
    i.add_argument("--out", required=True,
                   help="result file (.npz; replaced if it exists; contents below)")
    i.add_argument("--figure", default=None, help="also write a summary figure (.png)")
    i.add_argument("--nonlinear", action="store_true", help="shortest-path (bent rays)")
    i.add_argument("--secondary-nodes", type=int, default=3)
    i.add_argument("--spacing", type=float, default=0.1, help="cell size in m (default 0.1)")
    i.add_argument("--origin", type=float, nargs=2, default=[0.0, 0.0], metavar=("X0", "Z0"))
    i.add_argument("--starts", type=int, default=20)
    i.add_argument("--schedule", choices=["straight", "bent", "bent-long"], default=None,
                   help="reference schedule (default: 'bent' with --nonlinear, else "
                        "'straight'); --epochs, --lr, ... override its settings")
    i.add_argument("--epochs", type=int, default=None)
    i.add_argument("--batch-size", type=int, default=25)
    i.add_argument("--lr", type=float, default=None)
    i.add_argument("--lr-decay", type=float, default=None)
    i.add_argument("--lr-step", type=int, default=None)
    i.add_argument("--reg", choices=["ring", "origin", "none"], default="ring")
    i.add_argument("--reg-weight", type=float, default=10.0)
    i.add_argument("--reg-decay", type=float, default=None)
    i.add_argument("--threshold", type=float, default=None,
                   help="acceptance threshold on data RMSE (ns)")
    i.add_argument("--n-jobs", type=int, default=None)
    i.add_argument("--device", default="cpu")
    i.add_argument("--precision", choices=["float32", "bfloat16", "auto"],
                   default="float32",
                   help="decoder arithmetic (bfloat16: about 2x faster on CPUs with "
                        "AVX-512 BF16, 10-20x slower on CPUs without it; auto: "
                        "bfloat16 only where it is native)")
    i.add_argument("--compile", action="store_true",
                   help="torch.compile the decoder (about 1.5x faster for long runs; "
                        "needs a C++ compiler)")
    i.add_argument("--seed", type=_seed, default=0)
    i.add_argument("--progress", action="store_true")
    i.set_defaults(func=_cmd_invert)
    return p


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
    args = parser.parse_args(argv)
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
