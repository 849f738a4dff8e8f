"""Scoring codes with a kernel latent density: ``TiedMixture`` against scikit-learn.

A kernel density (``VAEPrior.fit_latent_density(kind="kernel")``) is a tied-covariance
Gaussian mixture with one component per code: 18,000 for the committed reference prior.
scikit-learn's ``GaussianMixture.score_samples`` evaluates such a mixture component by
component; ``skvaeinv.prior._mixtures.TiedMixture`` (what the prior holds) takes all
components at once in cache-sized blocks. Side by side in one process, on the codes of
held-out training-band crops (seed 77, as ``latent_density.py``): the time of
``score_samples`` for each, their ratio, and their largest difference. The
cross-validated bandwidth search of ``bandwidth="cv"`` uses the same kernel sums and is
timed on the same codes.

Usage::

    python benchmarks/density_score.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, PRIORS, SHARED, md_table, training_crops, write_results  # noqa: E402

from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv.prior import _bandwidth  # noqa: E402
from skvaeinv.datasets import load_training_image  # noqa: E402


def best_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--n-codes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--n-cv", type=int, default=5000,
                    help="codes of the timed bandwidth='cv' search (0: not timed)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="density_score")
    args = ap.parse_args(argv)

    prior = VAEPrior.load(args.prior, device="cpu")
    kde = prior.latent_density_.mixture_
    if kde.covariance_type != "tied":
        ap.error(f"{args.prior} holds no kernel density")
    crops = training_crops(load_training_image(SHARED / "ti.png"))
    codes = prior.transform(crops(max(max(args.n_codes), args.n_cv), 77))

    rows, out = [], []
    for n in args.n_codes:
        z = codes[:n]
        t_ours, ours = best_time(lambda z=z: kde.score_samples(z), args.repeats)
        t_ref, ref = best_time(lambda z=z: GaussianMixture.score_samples(kde, z), 1)
        diff = float(np.abs(ours - ref).max())
        out.append({"codes": n, "components": kde.n_components, "tied_mixture_s": t_ours,
                    "sklearn_s": t_ref, "ratio": t_ref / t_ours, "max_abs_difference": diff})
        rows.append([n, kde.n_components, t_ours, t_ref, round(t_ref / t_ours, 1),
                     f"{diff:.1e}"])
    cv = None
    if args.n_cv:
        t_cv, h = best_time(lambda: _bandwidth.cv_bandwidth(codes[:args.n_cv],
                                                            np.random.RandomState(0)), 1)
        cv = {"codes": args.n_cv, "seconds": t_cv, "bandwidth": h}

    command = command_line(__file__, argv)
    md = "\n\n".join([
        "# Scoring codes with the kernel latent density",
        f"Prior: {Path(args.prior).name}. Codes of held-out training-band crops (seed 77). "
        f"Best of {args.repeats} runs for TiedMixture, one run for scikit-learn.",
        md_table(["codes", "components", "TiedMixture.score_samples (s)",
                  "GaussianMixture.score_samples (s)", "ratio", "max. abs. difference"],
                 rows),
        *([f"bandwidth='cv' search on {cv['codes']} codes: {cv['seconds']:.1f} s "
           f"(factor {cv['bandwidth']:.3f})."] if cv else []),
        f"Command: `{command}`",
    ])
    write_results(args.name, {"command": command, "scores": out, "cv_search": cv}, md,
                  study="density_score")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
