"""Pattern statistics of prior samples drawn with different latent samplers.

Decodes ``--n-samples`` latent vectors from each sampler with the committed reference
prior and compares the channel proportion and the two-point / variogram curves with
those of training-band crops (the functions of ``train_prior.py``), for two sample seeds:

* the committed density (``VAEPrior.sample(source="density")``);
* a mixture refitted like the one committed until 2026-11-27 (200 components, 20,000
  codes), and with its covariances scaled by 0.7 ("temperature");
* a mixture of 200 components fitted to 60,000 codes;
* codes of training crops drawn at random, without noise (re-decoded training crops:
  the best any latent sampler can do with this decoder) and with Gaussian kernel noise
  of 0.2, 0.4 and Scott's factor times the code covariance;
* the committed density's draws after 1, 2 and 3 encode-decode cycles (one seed).

Usage::

    python benchmarks/latent_samplers.py            # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (command_line, PRIORS, md_table, require_shared, training_crops,  # noqa: E402
                     write_results)
from train_prior import compare_stats, pattern_stats  # noqa: E402

from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv.datasets import load_training_image  # noqa: E402

log = logging.getLogger("latent_samplers")


def mixture_sampler(gmm, temperature: float = 1.0):
    """Draws from a fitted GaussianMixture with covariances scaled by ``temperature``."""
    chol = np.sqrt(temperature) * np.linalg.cholesky(gmm.covariances_)

    def draw(rng: np.random.RandomState, n: int) -> np.ndarray:
        counts = rng.multinomial(n, gmm.weights_ / gmm.weights_.sum())
        return np.concatenate([gmm.means_[k] + rng.standard_normal((c, chol.shape[1]))
                               @ chol[k].T for k, c in enumerate(counts) if c])
    return draw


def kernel_sampler(codes: np.ndarray, factor: float):
    """Draws ``code + factor * N(0, cov(codes))`` around codes picked at random."""
    chol = np.linalg.cholesky(np.cov(codes.T))

    def draw(rng: np.random.RandomState, n: int) -> np.ndarray:
        z = codes[rng.randint(len(codes), size=n)]
        return z + factor * rng.standard_normal((n, codes.shape[1])) @ chol.T
    return draw


def setup(prior_path: str, n_samples: int, reference_seed: int = 2024):
    """``(ti, crops, prior, ref)``: the training image, a function ``crops(n, seed)`` of
    training-band crops (``_common.training_crops``), the prior loaded on the CPU, and
    the pattern statistics of ``n_samples`` reference crops (seed 2024 as in
    ``train_prior.py``, or ``reference_seed``)."""
    ti = load_training_image(require_shared() / "ti.png")
    crops = training_crops(ti)
    return (ti, crops, VAEPrior.load(prior_path, device="cpu"),
            pattern_stats(crops(n_samples, reference_seed)))


def main(argv: list[str] | None = None) -> None:
    from sklearn.mixture import GaussianMixture

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--n-codes", type=int, default=60_000)
    ap.add_argument("--name", default="latent_samplers")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    _, crops, prior, ref = setup(args.prior, args.n_samples)
    t0 = time.perf_counter()
    codes = prior.transform(crops(args.n_codes, 31))     # seed 31 as the committed density
    log.info("%d codes in %.0f s", len(codes), time.perf_counter() - t0)

    def committed(rng: np.random.RandomState, n: int) -> np.ndarray:
        return prior._sample_latents(n, rng, "density")

    refit = GaussianMixture(200, covariance_type="full", random_state=0).fit(codes[:20_000])
    wide = GaussianMixture(200, covariance_type="full", random_state=0).fit(codes)
    scott = len(codes) ** (-1.0 / (codes.shape[1] + 4))
    samplers = {
        "committed density (sample(source=\"density\"))": committed,
        "mixture, 200 comp., 20,000 codes (committed until 2026-11-27)":
            mixture_sampler(refit),
        "same, temperature 0.7": mixture_sampler(refit, 0.7),
        f"mixture, 200 comp., {len(codes):,} codes": mixture_sampler(wide),
        "training codes, no noise (re-decoded crops)": kernel_sampler(codes, 0.0),
        "training codes + 0.2 x kernel noise": kernel_sampler(codes, 0.2),
        "training codes + 0.4 x kernel noise": kernel_sampler(codes, 0.4),
        f"training codes + {scott:.2f} (Scott) x kernel noise": kernel_sampler(codes, scott),
    }
    rows, results = [], {}
    for label, draw in samplers.items():
        per_seed = []
        for seed in (1, 2):
            s = pattern_stats(prior.inverse_transform(draw(np.random.RandomState(seed),
                                                           args.n_samples)))
            per_seed.append({"proportion": s["proportion_binary"], **compare_stats(s, ref)})
        results[label] = per_seed
        rows.append(seed_row(label, per_seed, ref))
        log.info("%s: %s", label, rows[-1])
    z = committed(np.random.RandomState(1), args.n_samples)
    cycles = []
    for cycle in range(1, 4):
        z = prior.transform(prior.inverse_transform(z))
        s = pattern_stats(prior.inverse_transform(z))
        cycles.append({"proportion": s["proportion_binary"], **compare_stats(s, ref)})
        rows.append(seed_row(f"committed density, {cycle} encode-decode cycle(s) (seed 1)",
                         cycles[-1:], ref))
    results["encode-decode cycles"] = cycles

    md = ["# Latent samplers: pattern statistics of decoded samples", "",
          f"Prior: {Path(args.prior).name}. {args.n_samples} samples per sampler and seed "
          f"(seeds 1, 2) against {args.n_samples} training-band crops; codes of "
          f"{len(codes):,} training-band crops. Errors relative to the crops' statistics.",
          "", md_table(["latent draws", "proportion error (signed)",
                        "two-point z, worst lag", "two-point x, worst lag",
                        "two-point z, whole curve"], rows), "",
          f"Command: `{command_line(__file__, argv)}`"]
    write_results(args.name, {"prior": Path(args.prior).name, "n_samples": args.n_samples,
                              "n_codes": len(codes), "reference": ref,
                              "samplers": results}, "\n".join(md), study="latent_samplers")


def seed_row(label: str, per_seed: list[dict], ref: dict) -> list:
    def both(fn) -> str:
        return " / ".join(fn(r) for r in per_seed)
    p0 = ref["proportion_binary"]
    return [label, both(lambda r: f"{100 * (r['proportion'] - p0) / p0:+.1f} %"),
            both(lambda r: f"{100 * r['two_point_z_max_rel_error']:.1f} %"),
            both(lambda r: f"{100 * r['two_point_x_max_rel_error']:.1f} %"),
            both(lambda r: f"{100 * r['two_point_z_curve_rel_error']:.1f} %")]


if __name__ == "__main__":
    main()
