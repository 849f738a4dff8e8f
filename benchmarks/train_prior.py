"""Train the reference 129 x 65 prior on crops of the study's training image and report.

Reports, side by side in one run: training throughput (images/s) in float32 and
bfloat16, reconstruction error on crops from the validation band (rows 1900-2499)
against the trivial mean-image reconstruction, and pattern statistics of 1,000 prior
samples against the training image (channel proportion, two-point probabilities and
indicator variograms along x and z, fraction of undecided pixels) -- for samples decoded
from ``z ~ N(0, I)`` and from a latent density fitted to the codes of training crops
after training (``VAEPrior.fit_latent_density``: by default a Gaussian kernel density
whose bandwidth matches the pattern statistics of held-out crops (over 5 folds), or
``--density-bandwidth cv`` or a factor, or ``--density mixture``; saved into the prior
file).

Training streams fresh random crops (rows 0-1899, the truth windows excluded) through
``VAEPrior.partial_fit`` in chunks (``skvaeinv.prior._training.train_in_chunks``, as the
command line's ``train-prior``), saving a checkpoint after each chunk, so an
interrupted run resumes with ``--resume`` on the same crops.

Usage (the committed prior was made with)::

    python benchmarks/train_prior.py --n-images 1000000 --seed 0 \\
        --out benchmarks/priors/reference_prior.skv

Quick check of the script itself::

    python benchmarks/train_prior.py --n-images 2000 --chunk 1000 --n-samples 100 \\
        --throughput-batches 1 --out /tmp/prior.skv --name train_prior_smoke

Throughput alone (float32 and bfloat16, eager and compiled, best of alternating runs)::

    python benchmarks/train_prior.py --throughput-only --throughput-batches 5 \\
        --throughput-repeats 2 --compile --name train_prior_throughput
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (command_line, SHARED, TRAIN_ROWS, TRUTH_SHAPE, VALID_ROWS,  # noqa: E402
                     add_allocator_option, apply_allocator, device_label,
                     exclusion_windows, machine_info, md_table, setting_label,
                     study_dir, training_crops, write_results)

from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv.prior import cosine_lr, train_in_chunks  # noqa: E402
from skvaeinv.datasets import extract_patches, load_training_image  # noqa: E402
from skvaeinv.metrics import compare_pattern_statistics, pattern_statistics  # noqa: E402

log = logging.getLogger("train_prior")
#: Folder of this script's results: benchmarks/results/train_prior/.
STUDY = "train_prior"


def throughput(precision: str, n_batches: int, seed: int, patches: np.ndarray,
               compile: bool, device: str = "cpu") -> float:
    prior = VAEPrior(precision=precision, device=device, random_state=seed, compile=compile)
    prior.partial_fit(patches[:100])            # warm-up (and compilation)
    t0 = time.perf_counter()
    prior.partial_fit(patches[100:100 * (n_batches + 1)])  # ends with .item() of the loss
    return 100 * n_batches / (time.perf_counter() - t0)


def throughput_table(n_batches: int, seed: int, patches: np.ndarray, modes: list[bool],
                     repeats: int, device: str = "cpu") -> dict:
    """Images/s per precision (and "<precision> compiled"): best of ``repeats`` runs.

    The runs of all settings alternate, so that a slow spell of the (shared) machine
    does not fall on one setting only; all runs are kept in ``"runs"``.
    """
    runs: dict[str, list[float]] = {}
    for _ in range(repeats):
        for compile in modes:
            for precision in ("float32", "bfloat16"):
                runs.setdefault(setting_label(precision, compile), []).append(
                    throughput(precision, n_batches, seed, patches, compile, device))
    return {**{k: max(v) for k, v in runs.items()}, "runs": runs}


def throughput_rows(results: dict) -> list[list]:
    """Table rows of ``results["throughput_images_per_s"]`` (the 500 img/s CPU target)."""
    tp = results.get("throughput_images_per_s", {})
    on = results.get("throughput_device", "cpu")
    on_cpu = on == "cpu"
    where = "" if on_cpu else f", {device_label(on)}"
    return [[f"throughput {key} (img/s{where})", value,
             ">= 500" if "bfloat16" in key and on_cpu else ""]
            for key, value in tp.items() if key != "runs"]


def pattern_stats(images: np.ndarray, max_lag: int = 30) -> dict:
    """:func:`skvaeinv.metrics.pattern_statistics` (thresholded at 0.5) in the form the
    results files have always had: lists, and ``proportion_binary`` / ``proportion_mean``
    for the thresholded and the raw channel proportion."""
    s = pattern_statistics(images, max_lag)
    return {"proportion_mean": s["mean"], "proportion_binary": s["proportion"],
            "undecided_fraction": s["undecided_fraction"],
            **{k: v.tolist() for k, v in s.items() if isinstance(v, np.ndarray)}}


def compare_stats(s: dict, r: dict) -> dict:
    """Relative errors of sample statistics ``s`` against training-image statistics ``r``
    (both from :func:`pattern_stats`): :func:`skvaeinv.metrics.compare_pattern_statistics`."""
    return compare_pattern_statistics(*({"proportion": d["proportion_binary"], **d}
                                        for d in (s, r)))


def budgeted_images(prior, crops, args, t0: float) -> int:
    """Images to have seen at the end of a run of about ``args.time_budget`` seconds.

    Trains up to two chunks at the run's starting rate (the first pays for compilation
    and warm-up, the second is timed, crop drawing and checkpoint included), then
    returns ``args.n_images`` cut to the whole chunks that fit in the time left at 95 %
    of the measured speed.
    """
    def train_to(n: int) -> float:
        train_in_chunks(prior, crops, min(args.n_images, n), chunk_size=args.chunk,
                        seed=args.seed, checkpoint=args.out)
        return time.perf_counter()

    t1 = train_to(getattr(prior, "n_images_seen_", 0) + args.chunk)
    before = prior.n_images_seen_
    now = train_to(before + args.chunk)
    if prior.n_images_seen_ >= args.n_images:
        return args.n_images
    rate = (prior.n_images_seen_ - before) / max(now - t1, 1e-9)
    left = max(0.0, args.time_budget - (now - t0))
    more = int(0.95 * rate * left) // args.chunk * args.chunk
    n_images = min(args.n_images, prior.n_images_seen_ + more)
    log.info("time budget %.0f s: %.0f img/s measured, %.0f s left: training to %d images",
             args.time_budget, rate, left, n_images)
    return n_images


def bandwidth_arg(text: str) -> str | float:
    """A ``--density-bandwidth`` value: 'pattern', 'cv' or a positive finite factor."""
    if text in ("cv", "pattern"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not 'pattern', 'cv' or a positive finite factor")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ti", default=str(SHARED / "ti.png"), help="training image")
    ap.add_argument("--n-images", type=int, default=1_000_000, help="training crops in all")
    ap.add_argument("--chunk", type=int, default=20_000, help="crops per partial_fit call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16", "auto"],
                    help="training arithmetic; bfloat16 is the committed prior's recipe "
                         "(10-20x slower than float32 where the CPU lacks native bfloat16, "
                         "e.g. AVX2 only: use auto there)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step")
    ap.add_argument("--out", default="benchmarks/priors/reference_prior.skv")
    ap.add_argument("--resume", action="store_true", help="continue from --out")
    ap.add_argument("--device", default="auto",
                    help="where the training runs: auto (a GPU if torch sees one), cpu, "
                         "cuda, ... (evaluation always runs on the CPU)")
    ap.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                    help="train for about this long: two chunks measure the speed, then "
                         "--n-images is cut to what fits (a cosine --lr-final schedule "
                         "then ends where the training ends); for a lent GPU's minutes. "
                         "The speed is measured once, so on a shared machine give "
                         "--n-images; the log names the images planned, and --n-images "
                         "with that number repeats the run")
    ap.add_argument("--lr", type=float, default=None,
                    help="Adam's learning rate for this run (default: the saved prior's, "
                         "1e-3 for a new one); e.g. a lower one to anneal a resumed run")
    ap.add_argument("--lr-final", type=float, default=None,
                    help="cosine schedule: Adam lr falls from --lr to this by --n-images "
                         "(per chunk; needs --lr)")
    ap.add_argument("--anneal-from", type=int, default=None,
                    help="images seen where the cosine schedule starts (default: where "
                         "this run starts; give it when resuming an interrupted anneal)")
    ap.add_argument("--beta", type=float, default=None,
                    help="KL weight (default: the prior's own, 1000 for a new one)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="crops per Adam step (default: the prior's own, 100 for a new one)")
    ap.add_argument("--evaluate-only", action="store_true", help="skip training, evaluate --out")
    ap.add_argument("--throughput-batches", type=int, default=5)
    ap.add_argument("--throughput-device", default="cpu",
                    help="device of the throughput runs (the target is for the CPU)")
    ap.add_argument("--throughput-repeats", type=int, default=1,
                    help="timed runs per setting (alternating); the best is reported")
    ap.add_argument("--throughput-only", action="store_true",
                    help="measure the throughput, write the results and stop (no training "
                         "or evaluation)")
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--n-valid", type=int, default=1000)
    ap.add_argument("--name", default="train_prior",
                    help="results file stem (in benchmarks/results/train_prior/)")
    ap.add_argument("--density", default="kernel", choices=["kernel", "mixture", "none"],
                    help="latent density fitted after training and saved into --out: "
                         "a kernel density (bandwidth: --density-bandwidth), a Gaussian "
                         "mixture of --density-components, or none (keep the saved one)")
    ap.add_argument("--density-bandwidth", default="pattern", type=bandwidth_arg,
                    help="bandwidth of --density kernel: 'pattern' (matches the pattern "
                         "statistics of held-out crops; the committed prior's), 'cv' "
                         "(cross-validated likelihood of the codes) or a factor")
    ap.add_argument("--density-components", type=int, default=200,
                    help="components of --density mixture (0: fit no density of either "
                         "kind, keep the saved one)")
    ap.add_argument("--density-seeds", type=int, nargs="*", default=[2, 3, 4],
                    help="further sample seeds whose density samples are compared too")
    ap.add_argument("--density-crops", type=int, default=18_000,
                    help="training crops whose codes the latent density is fitted to")
    add_allocator_option(ap)
    args = ap.parse_args(argv)
    if args.throughput_only and args.throughput_batches < 1:
        ap.error("--throughput-only needs --throughput-batches >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    allocator = apply_allocator(args)

    ti = load_training_image(args.ti)
    windows = exclusion_windows()
    train_crops = training_crops(ti)
    out = Path(args.out)
    results: dict = {"command": command_line(__file__, argv),
                     "seed": args.seed, "training_image": Path(args.ti).name,
                     "allocator": allocator,
                     "train_rows": TRAIN_ROWS, "excluded_windows": windows}

    # 1. throughput, float32 and bfloat16 (eager, and compiled with --compile) side by
    #    side in this process
    if args.throughput_batches > 0:
        crops = train_crops(100 * (args.throughput_batches + 1), 12345)
        modes = [False, True] if args.compile else [False]
        tp = throughput_table(args.throughput_batches, args.seed, crops, modes,
                              args.throughput_repeats, args.throughput_device)
        results["throughput_images_per_s"] = tp
        results["throughput_device"] = args.throughput_device
        log.info("throughput: %s", tp)
        if args.throughput_only:
            cpu = machine_info()
            md = (f"# Reference prior training: throughput only\n\nCommand: "
                  f"`{results['command']}`\n\nAllocator: {allocator}. CPU: "
                  f"{cpu.get('cpu_model')} ({cpu['cpu_capability']}; "
                  f"{', '.join(cpu.get('cpu_flags', []))}).\n\n"
                  + md_table(["quantity", "value", "target"], throughput_rows(results))
                  + "\n")
            write_results(args.name, results, md, study=STUDY)
            print(md)
            return 0

    # 2. training
    if not args.evaluate_only:
        if args.resume and out.exists():
            prior = VAEPrior.load(out, device=args.device)
            given = {"lr": args.lr, "beta": args.beta, "batch_size": args.batch_size}
            prior.set_params(compile=args.compile, precision=args.precision,
                             **{k: v for k, v in given.items() if v is not None})
            log.info("resuming from %s (%d images seen, Adam lr %g)", out,
                     prior.n_images_seen_, prior.lr)
        else:
            prior = VAEPrior(latent_dim=20, beta=1000.0 if args.beta is None else args.beta,
                             batch_size=100 if args.batch_size is None else args.batch_size,
                             lr=1e-3 if args.lr is None else args.lr,
                             precision=args.precision, device=args.device,
                             compile=args.compile, random_state=args.seed)
        if args.lr_final is not None and args.lr is None:
            ap.error("--lr-final needs --lr (the rate the cosine schedule starts from)")
        start = (getattr(prior, "n_images_seen_", 0) if args.anneal_from is None
                 else args.anneal_from)
        t0 = time.perf_counter()
        n_images = args.n_images
        if args.time_budget is not None:
            n_images = budgeted_images(prior, train_crops, args, t0)
        schedule = None
        if args.lr_final is not None:
            schedule = cosine_lr(args.lr, args.lr_final, start, n_images)
            log.info("cosine lr %g -> %g over images %d-%d", args.lr, args.lr_final, start,
                     n_images)
        train_in_chunks(prior, train_crops, n_images, chunk_size=args.chunk,
                        seed=args.seed, checkpoint=out, lr_schedule=schedule)
        results["training"] = {"wall_s_this_run": time.perf_counter() - t0,
                               "device": str(prior.device_), "planned_images": n_images}
    prior = VAEPrior.load(out, device="cpu")
    results["training"] = {**results.get("training", {}),
                           "images_seen": prior.n_images_seen_, "batches": prior.n_batches_,
                           "precision": prior.precision, "loss_curve_per_chunk":
                           prior.loss_curve_, "file": out.as_posix(),
                           "file_mb": out.stat().st_size / 1e6}

    # 3. validation-band reconstructions
    valid = extract_patches(ti, TRUTH_SHAPE, args.n_valid, rows=VALID_ROWS,
                            random_state=args.seed + 7)
    err = prior.reconstruction_error(valid)
    train_mean = train_crops(2000, 99).mean(axis=0)
    err_mean = ((valid - train_mean) ** 2).sum(axis=(1, 2))
    recon = prior.inverse_transform(prior.transform(valid))
    results["validation"] = {
        "n_crops": args.n_valid, "sse_per_crop": float(err.mean()),
        "sse_per_crop_mean_image": float(err_mean.mean()),
        "pixel_error_rate_thresholded": float(((recon >= 0.5) != (valid >= 0.5)).mean()),
    }

    # 4. pattern statistics of samples vs the training image (training band): decoding
    #    z ~ N(0, I), and decoding draws of a density fitted to the codes of training crops
    # --density-components 0 keeps the saved density, as it did before --density existed
    refit = args.density != "none" and args.density_components > 0
    bandwidth = args.density_bandwidth
    if refit:
        t0 = time.perf_counter()
        prior.fit_latent_density(
            train_crops(args.density_crops, args.seed + 31),
            n_components=args.density_components, kind=args.density, random_state=args.seed,
            bandwidth=bandwidth)
        results["density_fit_s"] = time.perf_counter() - t0
        prior.save(out)
        log.info("latent density (%s, %d crops) saved into %s", args.density,
                 args.density_crops, out)
    ref = train_crops(args.n_samples, 2024)
    r_stats = pattern_stats(ref)
    results["patterns"] = {"training_image": r_stats}
    sources = ["normal"] + (["density"] if hasattr(prior, "latent_density_") else [])
    drawn = {}
    for source in sources:
        drawn[source] = prior.sample(args.n_samples, random_state=args.seed + 1,
                                     source=source)
        st = pattern_stats(drawn[source])
        results["patterns"][source] = {"samples": st, **compare_stats(st, r_stats)}
    if "density" in sources:
        # fitted in this run, or kept from the saved prior (--density none)
        results["patterns"]["density"].update(
            kind=prior.latent_density_.kind,
            n_components=int(prior.latent_density_.mixture_.n_components),
            bandwidth=getattr(prior, "latent_bandwidth_", None),
            bandwidth_choice=bandwidth if refit and args.density == "kernel" else None,
            n_crops=args.density_crops if refit else None,
            file_mb=out.stat().st_size / 1e6,
            other_seeds={seed: compare_stats(pattern_stats(prior.sample(
                args.n_samples, random_state=seed, source="density")), r_stats)
                for seed in args.density_seeds})

    # 5. figure
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows_fig = [(drawn["normal"], "N(0,I) sample"), (valid, "valid"), (recon, "recon")]
        if "density" in drawn:
            rows_fig.insert(1, (drawn["density"], "density sample"))
        fig, axes = plt.subplots(len(rows_fig), 8, figsize=(12, 3 * len(rows_fig)))
        for j in range(8):
            for i, (imgs, title) in enumerate(rows_fig):
                img = imgs[j]
                axes[i, j].imshow(img, cmap="gray_r", vmin=0, vmax=1)
                axes[i, j].set_title(title, fontsize=8)
                axes[i, j].axis("off")
        fig.tight_layout()
        fig.savefig(study_dir(STUDY) / f"{args.name}.png", dpi=80)
        plt.close(fig)
    except ImportError:
        log.warning("matplotlib missing: no figure")

    rows = throughput_rows(results)
    rows += [
        ["images seen in training", prior.n_images_seen_, ">= 1,000,000"],
        ["validation SSE per crop (VAE)", results["validation"]["sse_per_crop"], ""],
        ["validation SSE per crop (mean image)",
         results["validation"]["sse_per_crop_mean_image"], ""],
    ]
    for source in sources:
        pt = results["patterns"][source]
        label = ("z ~ N(0, I)" if source == "normal" else _density_label(pt))
        rows += [
            [f"{label}: channel proportion samples / TI",
             f"{pt['samples']['proportion_binary']:.4f} / "
             f"{r_stats['proportion_binary']:.4f}", "within 10 %"],
            [f"{label}: proportion rel. error", pt["proportion_rel_error"], "<= 0.10"],
            # the target is on the two-point probability (issue 2); the variogram,
            # another view of the same pairs, is shown for information
            *[[f"{label}: {stat} {axis}, max rel. error (lags {lags})",
               pt[f"{key}_{axis}_max_rel_error"], target]
              for stat, key, lags, target in (("two-point", "two_point", "0-30", "<= 0.10"),
                                              ("variogram", "variogram", "1-30", ""))
              for axis in ("x", "z")],
            *[[f"{label}: {stat} {axis}, relative L2 error over lags {lags}",
               pt[f"{key}_{axis}_curve_rel_error"], ""]
              for stat, key, lags in (("two-point", "two_point", "0-30"),
                                      ("variogram", "variogram", "1-30"))
              for axis in ("x", "z")],
            [f"{label}: undecided pixels (0.1 < m < 0.9)",
             pt["samples"]["undecided_fraction"], ""],
        ]
        if pt.get("other_seeds"):
            seeds = [args.seed + 1, *pt["other_seeds"]]
            errs = [pt, *pt["other_seeds"].values()]
            rows += [[f"{label}: {name}, sample seeds {', '.join(map(str, seeds))}",
                      " / ".join(f"{e[key]:.4f}" for e in errs), target]
                     for name, key, target in (
                         ("proportion rel. error", "proportion_rel_error", "<= 0.10"),
                         ("two-point x, max rel. error", "two_point_x_max_rel_error",
                          "<= 0.10"),
                         ("two-point z, max rel. error", "two_point_z_max_rel_error",
                          "<= 0.10"))]
    md = (f"# Reference prior training\n\nCommand: `{results['command']}`\n\n"
          f"Allocator: {results['allocator']}.\n\n"
          + md_table(["quantity", "value", "target"], rows) + "\n")
    write_results(args.name, results, md, study=STUDY)
    print(md)
    return 0


def _density_label(info: dict) -> str:
    """Table label of the latent density described by ``results["patterns"]["density"]``."""
    if info["kind"] == "kernel":
        h = info["bandwidth"]
        how = f" ({info['bandwidth_choice']})" if info.get("bandwidth_choice") else ""
        return (f"latent kernel density ({info['n_components']} codes"
                + (f", bandwidth {h:.3f}{how})" if h is not None else ")"))
    return f"latent density ({info['n_components']} comp.)"


if __name__ == "__main__":
    sys.exit(main())
