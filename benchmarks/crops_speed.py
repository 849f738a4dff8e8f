"""Speed of ``extract_patches`` on a training chunk, against the earlier pixel gather.

``VAEPrior`` training (``train_prior.py``, ``train_in_chunks``) draws each chunk of
fresh crops with ``skvaeinv.datasets.extract_patches``: 25,000 crops of 129 x 65 from
the training band of the study's training image. Until 2026-12-07 the crops were
gathered pixel by pixel with fancy indexing (``image[rows[:, :, None], cols[:, None,
:]]``, kept here as the reference); now they are copied row by row from a strided
view (``numpy.lib.stride_tricks.sliding_window_view``). Both take the same corners
(``return_positions``), the outputs are checked identical, and both are timed
alternately in one process. The training rates beside them say what share of a chunk's
time the crops took: on a CPU about 430 img/s (``train_prior/``), on an H100 about
10,000 img/s (``train_prior_cuda.md``).

Usage::

    python benchmarks/crops_speed.py [--n 25000] [--repeats 5]

Writes ``benchmarks/results/datasets_speed/crops_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import (SHARED, TRAIN_ROWS, TRUTH_SHAPE, command_line, exclusion_windows,
                     machine_info, md_table, require_shared, write_results)

from skvaeinv.datasets import extract_patches, load_training_image

#: Training rates (img/s) the crop time is set against: ``train_prior/`` (Zen 4, two
#: cores, bfloat16 compiled) and ``train_prior_cuda.md`` (H100, float32 compiled).
TRAINING_RATES = {"CPU, 2 cores": 432.0, "H100": 10_470.0}


def reference_gather(image: np.ndarray, pos: np.ndarray, shape: tuple[int, int]
                     ) -> np.ndarray:
    """The earlier gather: every pixel of every crop by fancy indexing."""
    ri = pos[:, 0, None] + np.arange(shape[0])
    ci = pos[:, 1, None] + np.arange(shape[1])
    return image[ri[:, :, None], ci[:, None, :]].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=25_000, help="crops per chunk")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    require_shared()
    ti = load_training_image(SHARED / "ti.png")
    kw = dict(rows=TRAIN_ROWS, exclude=exclusion_windows())
    ours, pos = extract_patches(ti, TRUTH_SHAPE, args.n, random_state=0,
                                return_positions=True, **kw)
    identical = bool(np.array_equal(ours, reference_gather(ti, pos, TRUTH_SHAPE)))
    times: dict[str, list[float]] = {"extract_patches": [], "reference gather": []}
    for k in range(args.repeats):  # alternate, so that a slow spell hits both
        t0 = time.perf_counter()
        _, pos = extract_patches(ti, TRUTH_SHAPE, args.n, random_state=k,
                                 return_positions=True, **kw)
        times["extract_patches"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference_gather(ti, pos, TRUTH_SHAPE)
        times["reference gather"].append(time.perf_counter() - t0)
    median = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for name, t in median.items():
        share = {where: t / (t + args.n / rate) for where, rate in TRAINING_RATES.items()}
        rows.append([name, t, min(times[name]), args.n / t,
                     *(f"{100 * s:.0f} %" for s in share.values())])
    result = {"command": command_line(__file__, argv), "n_crops": args.n,
              "crop_shape": list(TRUTH_SHAPE), "identical_outputs": identical,
              "seconds": times, "median_seconds": median,
              "speedup_median": median["reference gather"] / median["extract_patches"],
              "training_rates_img_per_s": TRAINING_RATES, "machine": machine_info()}
    m = result["machine"]
    md = (f"# Training crops: extract_patches against the earlier gather\n\n"
          f"Command: `{result['command']}`\n\n"
          f"{args.n:,} crops of 129 x 65 from the training band of `ti.png` (the "
          f"truth windows excluded), {args.repeats} alternating runs each. The "
          f"reference gathers the crops at the corners `extract_patches` has just "
          f"drawn, so its time leaves out drawing them.\n\n"
          + md_table(["gather", "median (s)", "best (s)", "crops/s (median)",
                      *(f"share of a chunk at {r:,.0f} img/s ({w})"
                        for w, r in TRAINING_RATES.items())], rows)
          + f"\n\nSpeed-up (medians) {result['speedup_median']:.1f}x; identical crops: "
          f"{identical}.\n\nMachine: {m.get('cpu_model')} (family/model "
          f"{m.get('cpu_family_model')}, {', '.join(m.get('cpu_flags', []))}), "
          f"{m['cpu_count']} cores.\n")
    write_results("crops_speed", result, md, study="datasets_speed")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
