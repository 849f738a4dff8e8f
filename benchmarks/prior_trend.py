"""Decoder floor and density samples of prior checkpoints: what more training changes.

For each prior file, side by side in one run:

* the **decoder floor**: the worst-lag two-point z (and x) error of re-decoded training
  crops (``inverse_transform(transform(crops))``: no sampling at all), for three sets of
  1,000 training-band crops;
* the **density samples**: the same errors for 1,000 ``sample(source="density")`` draws
  per sample seed, from a Gaussian kernel density on the codes of 18,000 training-band
  crops (seed 31, as the committed density), with the bandwidth factor chosen by
  ``VAEPrior.fit_latent_density`` (``"cv"``: 5-fold cross-validated likelihood;
  ``"pattern"``: pattern statistics of decoded draws against held-out crops, over 5
  folds; both with ``random_state=0``) and with fixed factors.

All errors are relative to 1,000 reference training-band crops (seed 2024, as in
``train_prior.py`` and ``latent_density.py``, or ``--reference-seed``).

Usage::

    python benchmarks/prior_trend.py --priors benchmarks/priors/reference_prior.skv \\
        /tmp/prior_1300k.skv --name prior_trend
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, md_table, write_results  # noqa: E402
from latent_samplers import setup  # noqa: E402
from train_prior import bandwidth_arg, compare_stats, pattern_stats  # noqa: E402

from skvaeinv import VAEPrior  # noqa: E402

log = logging.getLogger("prior_trend")


def worst(images: np.ndarray, ref: dict) -> dict:
    """Worst-lag two-point errors and the proportion error of ``images``."""
    e = compare_stats(pattern_stats(images), ref)
    return {k: e[f"{k}_max_rel_error"] for k in ("two_point_z", "two_point_x")} | {
        "proportion": e["proportion_rel_error"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--priors", nargs="+", required=True, help="prior files (.skv)")
    ap.add_argument("--floor-seeds", type=int, nargs="+", default=[5, 6, 7])
    ap.add_argument("--sample-seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--bandwidths", nargs="+", type=bandwidth_arg,
                    default=["cv", 0.2, 0.3, 0.4], help="'cv', 'pattern' or factors")
    ap.add_argument("--density-crops", type=int, default=18_000)
    ap.add_argument("--reference-seed", type=int, default=2024,
                    help="seed of the 1,000 reference crops (2024: train_prior.py's)")
    ap.add_argument("--name", default="prior_trend")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    _, crops, _, ref = setup(args.priors[0], 1000, args.reference_seed)
    fit_crops = crops(args.density_crops, 31)
    results, rows = [], []
    for path in args.priors:
        t0 = time.perf_counter()
        prior = VAEPrior.load(path, device="cpu")
        entry = {"prior": path, "images_seen": prior.n_images_seen_, "floor": {},
                 "density": {}}
        for seed in args.floor_seeds:
            c = crops(1000, seed)
            entry["floor"][seed] = worst(prior.inverse_transform(prior.transform(c)), ref)
        for bw in args.bandwidths:
            t1 = time.perf_counter()
            prior.fit_latent_density(fit_crops, kind="kernel", random_state=0, bandwidth=bw)
            h = prior.latent_bandwidth_
            log.info("bandwidth %s: factor %.3f in %.0f s", bw, h, time.perf_counter() - t1)
            entry["density"][f"{bw} ({h:.3f})"] = {
                seed: worst(prior.sample(1000, random_state=seed, source="density"), ref)
                for seed in args.sample_seeds}
        entry["wall_s"] = time.perf_counter() - t0
        results.append(entry)
        log.info("%s: %s", path, entry)

        def cell(per_seed: dict, key: str) -> str:
            return " / ".join(f"{100 * v[key]:.1f}" for v in per_seed.values())
        rows.append([f"{Path(path).name} ({prior.n_images_seen_:,} crops)",
                     "decoder floor (re-decoded crops)", cell(entry["floor"], "two_point_z"),
                     cell(entry["floor"], "two_point_x")])
        for label, per_seed in entry["density"].items():
            rows.append(["", f"kernel density, bandwidth {label}",
                         cell(per_seed, "two_point_z"), cell(per_seed, "two_point_x")])

    md = ["# Decoder floor and density samples of prior checkpoints", "",
          f"Worst-lag (0-30) relative errors in % against 1,000 training-band crops (seed "
          f"{args.reference_seed}); floor "
          f"for crop sets {args.floor_seeds}, density samples (1,000 each) for sample seeds "
          f"{args.sample_seeds}; kernel densities on the codes of "
          f"{args.density_crops:,} training-band crops (seed 31).", "",
          md_table(["prior", "images decoded from", "two-point z, worst lag (%)",
                    "two-point x, worst lag (%)"], rows), "",
          f"Command: `{command_line(__file__, argv)}`"]
    write_results(args.name, {"priors": results}, "\n".join(md), study="prior_trend")


if __name__ == "__main__":
    main()
