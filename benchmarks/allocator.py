"""Effect of :func:`skvaeinv.runtime.tune_allocator` on training and inversion speed.

glibc's ``malloc`` returns freed activation buffers to the system and takes them back
page by page at the next step; ``tune_allocator`` keeps them. The setting is
process-wide and cannot be undone, so each measurement runs in a fresh child process
(one at a time), default and tuned alternating, ``--pairs`` times. Each child reports:

* VAE training of the reference 129 x 65 network, bfloat16, ``compile=True`` (the
  setting of issue 2's throughput target), batches of 100 procedural crops: images/s,
  and per step the process's CPU time (user + system, both threads) and page faults;
* latent SGD of the study's linear case (``LatentInverter``, float32, eager,
  ``--starts`` starts x ``--iterations`` iterations, ``n_jobs=2``): start-iterations/s.

Ratios are taken pair by pair (tuned / default of the same pair), so a slow spell of
the shared machine falls on both sides of a ratio.

Usage::

    python benchmarks/allocator.py                 # 4 pairs, ~10 min on 2 cores
    python benchmarks/allocator.py --pairs 1 --batches 2 --iterations 20 --name allocator_smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, TRUTH_SHAPE, md_table, slowness, survey, write_results  # noqa: E402



def _usage() -> tuple[float, float, int]:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime, u.ru_stime, u.ru_minflt


def child(mode: str, batches: int, starts: int, iterations: int) -> dict:
    """One measurement in this (fresh) process; ``mode`` is "default" or "tuned"."""
    from skvaeinv.runtime import tune_allocator

    tuned = tune_allocator() if mode == "tuned" else False

    from sgd_speed import LINEAR

    from skvaeinv import LatentInverter, VAEPrior
    from skvaeinv.datasets import make_channels
    from skvaeinv.forward import StraightRay

    bs = 100
    crops = make_channels(bs * (batches + 1), shape=TRUTH_SHAPE,
                          random_state=0).astype(np.float32)
    prior = VAEPrior(precision="bfloat16", batch_size=bs, random_state=0, compile=True)
    prior.partial_fit(crops[:bs])                    # compilation
    prior.partial_fit(crops[:bs])                    # settle the heap
    u0, t0 = _usage(), time.perf_counter()
    prior.partial_fit(crops[bs:])
    wall, u1 = time.perf_counter() - t0, _usage()
    train = {"images_per_s": bs * batches / wall,
             "cpu_ms_per_step": 1e3 * (u1[0] - u0[0] + u1[1] - u0[1]) / batches,
             "system_ms_per_step": 1e3 * (u1[1] - u0[1]) / batches,
             "page_faults_per_step": (u1[2] - u0[2]) / batches}

    grid, rays = survey()
    fwd = StraightRay(grid)
    y = fwd.traveltimes(slowness(prior.sample(1, random_state=0)[0]), rays)
    epochs = max(1, iterations // (len(rays) // LINEAR["batch_size"]))
    inv = LatentInverter(prior, fwd, n_starts=starts, epochs=epochs, precision="float32",
                         n_jobs=2, random_state=0, **LINEAR)
    t0 = time.perf_counter()
    inv.fit(rays, y)
    sgd = {"start_iterations_per_s": starts * inv.n_iter_ / (time.perf_counter() - t0),
           "iterations": inv.n_iter_}
    return {"mode": mode, "applied": tuned, "train": train, "sgd": sgd}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--batches", type=int, default=10, help="timed training batches of 100")
    ap.add_argument("--starts", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--name", default="allocator")
    ap.add_argument("--child", choices=["default", "tuned"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.batches, args.starts, args.iterations)))
        return 0

    runs: list[dict] = []
    for _ in range(args.pairs):
        for mode in ("default", "tuned"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--batches", str(args.batches),
                 "--starts", str(args.starts), "--iterations", str(args.iterations)],
                check=True, capture_output=True, text=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(mode, runs[-1]["train"]["images_per_s"],
                  runs[-1]["sgd"]["start_iterations_per_s"], flush=True)

    def col(mode: str, part: str, key: str) -> np.ndarray:
        return np.array([r[part][key] for r in runs if r["mode"] == mode])

    rows, summary = [], {}
    for part, key, label in [("train", "images_per_s", "VAE training, img/s"),
                             ("train", "cpu_ms_per_step", "training CPU ms per step"),
                             ("train", "system_ms_per_step", "training system ms per step"),
                             ("train", "page_faults_per_step", "page faults per step"),
                             ("sgd", "start_iterations_per_s", "latent SGD, start-it/s")]:
        d, t = col("default", part, key), col("tuned", part, key)
        ratio = float(np.median(t / np.maximum(d, 1e-12)))
        summary[key] = {"default": d.tolist(), "tuned": t.tolist(),
                        "median_ratio_tuned_over_default": ratio}
        rows.append([label, ", ".join(f"{v:.0f}" for v in d),
                     ", ".join(f"{v:.0f}" for v in t), f"{ratio:.3f}"])
    command = command_line(__file__, argv)
    md = "\n".join([
        "# glibc allocator: default vs `tune_allocator()`",
        "",
        f"Fresh process per run, default and tuned alternating, {args.pairs} pairs. "
        "Training: reference network, bfloat16, compiled, batches of 100, "
        f"{args.batches} timed batches. Latent SGD: {args.starts} starts x "
        f"{args.iterations} iterations, float32, eager, n_jobs=2.",
        "",
        md_table(["quantity", "default (per run)", "tuned (per run)",
                  "median ratio tuned / default"], rows),
        "",
        f"Command: `{command}`",
    ])
    write_results(args.name, {"command": command, "runs": runs, "summary": summary}, md,
                  study="allocator")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
