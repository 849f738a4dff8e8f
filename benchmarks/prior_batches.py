"""Batch size of ``VAEPrior.transform`` / ``inverse_transform`` on the CPU.

The prior encodes and decodes in batches of rows (``skvaeinv.prior._estimator._CPU_ROWS`` on a
CPU). This script times, side by side in one process, ``inverse_transform`` of
``--n-latents`` latent vectors and ``transform`` of ``--n-images`` training-band crops
with the committed reference prior, for each of ``--rows``. The settings alternate over
``--repeats`` rounds and the best time of each is reported, with its speed-up over 256
rows (the size used before). It also checks that every batch size gives the same
images and codes, to float32 rounding.

Usage::

    python benchmarks/prior_batches.py            # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PRIORS, SHARED, command_line, md_table, training_crops,  # noqa: E402
                     write_results)

import skvaeinv.prior  # noqa: E402
from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv.datasets import load_training_image  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--rows", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    ap.add_argument("--n-latents", type=int, default=2000)
    ap.add_argument("--n-images", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="prior_batches")
    args = ap.parse_args(argv)
    if 256 not in args.rows:
        ap.error("--rows must include 256, the reference of the speed-ups")

    prior = VAEPrior.load(args.prior, device="cpu")
    z = np.random.default_rng(0).standard_normal((args.n_latents, prior.latent_dim))
    crops = training_crops(load_training_image(SHARED / "ti.png"))(args.n_images, 5)
    default = skvaeinv.prior._estimator._CPU_ROWS
    times: dict[int, dict[str, list[float]]] = {r: {"decode": [], "encode": []}
                                               for r in args.rows}
    outputs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    try:
        for _ in range(args.repeats):
            for rows in args.rows:
                skvaeinv.prior._estimator._CPU_ROWS = rows
                t = time.perf_counter()
                images = prior.inverse_transform(z)
                times[rows]["decode"].append(time.perf_counter() - t)
                t = time.perf_counter()
                codes = prior.transform(crops)
                times[rows]["encode"].append(time.perf_counter() - t)
                outputs[rows] = (images, codes)
    finally:
        skvaeinv.prior._estimator._CPU_ROWS = default

    best = {r: {k: min(v) for k, v in t.items()} for r, t in times.items()}
    ref_images, ref_codes = outputs[256]
    rows_md, out = [], []
    for r in args.rows:
        d_img = float(np.abs(outputs[r][0] - ref_images).max())
        d_code = float(np.abs(outputs[r][1] - ref_codes).max())
        entry = {"rows": r, "decode_s": best[r]["decode"], "encode_s": best[r]["encode"],
                 "decode_speed_up": best[256]["decode"] / best[r]["decode"],
                 "encode_speed_up": best[256]["encode"] / best[r]["encode"],
                 "max_abs_difference_images": d_img, "max_abs_difference_codes": d_code,
                 "runs": times[r]}
        out.append(entry)
        rows_md.append([r if r != default else f"**{r}** (default)",
                        f"{entry['decode_s']:.2f}", f"{entry['decode_speed_up']:.2f}",
                        f"{entry['encode_s']:.2f}", f"{entry['encode_speed_up']:.2f}",
                        f"{max(d_img, d_code):.1e}"])
    command = command_line(__file__, argv)
    md = "\n\n".join([
        "# VAEPrior batch size on the CPU",
        f"Prior: {Path(args.prior).name}. inverse_transform of {args.n_latents} latent "
        f"vectors, transform of {args.n_images} training-band crops; best of "
        f"{args.repeats} alternating rounds.",
        md_table(["rows per batch", "decode (s)", "x 256 rows", "encode (s)", "x 256 rows",
                  "max. abs. difference to 256 rows"], rows_md),
        f"Command: `{command}`",
    ])
    write_results(args.name, {"command": command, "default_rows": default, "sizes": out},
                  md, study="prior_batches")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
