"""The two kinds of latent density of ``VAEPrior.fit_latent_density``, side by side.

For the committed reference prior, fits both kinds to the codes of the same training-band
crops (``--n-codes``, seed 31 as the committed density), the kernel density with both of
its bandwidth choices (``"cv"``: cross-validated likelihood of the codes; ``"pattern"``:
pattern statistics of decoded draws), and reports for each, and for ``z ~ N(0, I)``:

* the mean log-likelihood of the codes of other, held-out training-band crops (a
  model-selection score that does not look at the pattern statistics);
* the pattern statistics of ``--n-samples`` decoded samples for each of ``--seeds``
  against training-band crops (the functions and reference crops of ``train_prior.py``).

Usage::

    python benchmarks/latent_density.py            # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, PRIORS, TRAIN_ROWS, md_table, write_results  # noqa: E402
from latent_samplers import seed_row, setup  # noqa: E402
from train_prior import compare_stats, pattern_stats  # noqa: E402

log = logging.getLogger("latent_density")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--n-codes", type=int, default=18_000)
    ap.add_argument("--n-held-out", type=int, default=5_000)
    ap.add_argument("--n-components", type=int, default=200)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--name", default="latent_density")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    ti, crops, prior, ref = setup(args.prior, args.n_samples)
    # the yardstick: the reference crops against every pixel pair of the training band
    band_stats = pattern_stats(ti[TRAIN_ROWS[0]:TRAIN_ROWS[1]][None])
    band = compare_stats(ref, band_stats)
    yardstick = {axis: band[f"two_point_{axis}_max_rel_error"] for axis in ("x", "z")}
    fit_crops = crops(args.n_codes, 31)                    # as the committed density
    held = prior.transform(crops(args.n_held_out, 77))
    d = held.shape[1]

    densities: dict = {"z ~ N(0, I)": None}     # VAEPrior objects with a density
    how = {"cv": "5-fold CV", "pattern": "5-fold pattern statistics"}
    for kind, bandwidth in (("mixture", "cv"), ("kernel", "cv"), ("kernel", "pattern")):
        t0 = time.perf_counter()
        p = copy.deepcopy(prior).fit_latent_density(
            fit_crops, n_components=args.n_components, kind=kind, random_state=0,
            bandwidth=bandwidth)
        label = (f"mixture, {args.n_components} components" if kind == "mixture" else
                 f"kernel density, bandwidth {p.latent_bandwidth_:.3f} ({how[bandwidth]})")
        densities[label] = p
        log.info("%s fitted in %.0f s", label, time.perf_counter() - t0)

    rows, results = [], {}
    for label, p in densities.items():
        if p is None:
            ll = float(-0.5 * (held**2).sum(1).mean() - 0.5 * d * np.log(2 * np.pi))
        else:
            ll = float(p.latent_density_.score(held))
        per_seed = []
        for seed in args.seeds:
            draws = (prior if p is None else p).sample(
                args.n_samples, random_state=seed,
                source="normal" if p is None else "density")
            s = pattern_stats(draws)
            per_seed.append({"proportion": s["proportion_binary"], **compare_stats(s, ref)})
        results[label] = {"held_out_log_likelihood": ll, "per_seed": per_seed}
        rows.append([label, f"{ll:.2f}", *seed_row(label, per_seed, ref)[1:]])
        log.info("%s: %s", label, rows[-1])

    md = ["# Latent densities of the reference prior", "",
          f"Prior: {Path(args.prior).name}. Densities fitted to the codes of "
          f"{args.n_codes:,} training-band crops (seed 31); log-likelihood: mean over the "
          f"codes of {args.n_held_out:,} other training-band crops (seed 77), nats per "
          f"code. {args.n_samples} samples per sample seed "
          f"({', '.join(map(str, args.seeds))}) against {args.n_samples} training-band "
          "crops; errors relative to the crops' statistics, one value per seed.", "",
          md_table(["latent density", "held-out log-likelihood",
                    "proportion error (signed)", "two-point z, worst lag",
                    "two-point x, worst lag", "two-point z, whole curve"], rows), "",
          "Yardstick: the reference crops' two-point probabilities differ from those of "
          f"the whole training band (rows {TRAIN_ROWS[0]}-{TRAIN_ROWS[1] - 1}, every pixel "
          f"pair) by at most {100 * yardstick['x']:.2f} % (x) and "
          f"{100 * yardstick['z']:.2f} % (z) over lags 0-30.", "",
          f"Command: `{command_line(__file__, argv)}`"]
    write_results(args.name, {"prior": Path(args.prior).name, "n_codes": args.n_codes,
                              "n_held_out": args.n_held_out, "seeds": args.seeds,
                              "reference": ref, "training_band": band_stats,
                              "reference_vs_band_max_rel_diff": yardstick,
                              "densities": results}, "\n".join(md), study="latent_density")


if __name__ == "__main__":
    main()
