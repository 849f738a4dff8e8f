"""Speed of ``make_channels``: 5,000 images of 129 x 65, against the earlier algorithm.

``skvaeinv.datasets.make_channels`` adds the channels of each image one at a time to
a running union, in chunks of images. Until 2026-11-26 it built the masks of all
channels at once, ``(chunk, K, H, W)``, and took their union with
``np.logical_or.accumulate`` along the channel axis (a strided reduction), after
computing every centreline of every image up front. That algorithm is kept here as the
reference (``reference_make_channels``: the same random draws, in the same order), the
outputs are checked to be identical, and both are timed alternately in one process.

Usage::

    python benchmarks/datasets_speed.py [--n 5000] [--repeats 3]

Writes ``benchmarks/results/datasets_speed/datasets_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import machine_info, write_results
from sklearn.utils import check_random_state

from skvaeinv.datasets import make_channels


def reference_make_channels(n: int, shape=(129, 65), width=(5.0, 9.0),
                            proportion: float = 0.27, sinuosity: float = 0.12,
                            wavelength=(60.0, 200.0), orientation: float = 0.0,
                            orientation_spread: float = 15.0, max_channels: int = 24,
                            random_state: int = 0) -> np.ndarray:
    """The earlier algorithm (proportion mode, shallow orientations only)."""
    rng = check_random_state(random_state)
    h, w = shape
    k_max = max_channels
    theta = np.deg2rad(orientation + rng.uniform(-orientation_spread, orientation_spread,
                                                 (n, k_max)))
    widths = rng.uniform(*width, (n, k_max))
    lam = rng.uniform(*wavelength, (n, k_max, 2))
    amp = sinuosity * lam * rng.uniform(0.3, 1.0, (n, k_max, 2)) / np.array([1.0, 2.0])
    phase = rng.uniform(0, 2 * np.pi, (n, k_max, 2))
    centre_u = rng.uniform(0.0, 1.0, (n, k_max))
    x = np.arange(w, dtype=np.float64) + 0.5 - w / 2
    zz = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None]
    k = 2 * np.pi / lam
    arg = k[..., None] * x + phase[..., None]
    tan = np.tan(theta)[..., None]
    reach = 0.5 * h + 0.5 * w * np.abs(tan) + amp.sum(-1)[..., None] + widths[..., None]
    centre = ((centre_u[..., None] * 2 - 1) * reach + x * tan
              + (amp[..., None] * np.sin(arg)).sum(axis=2))
    slope = tan + (amp[..., None] * k[..., None] * np.cos(arg)).sum(axis=2)
    half = 0.5 * widths[..., None] * np.sqrt(1.0 + slope**2)
    centre = centre.astype(np.float32)[:, :, None, :]
    half = half.astype(np.float32)[:, :, None, :]
    out = np.empty((n, h, w), dtype=np.float32)
    chunk = max(1, int(4_000_000 // (k_max * h * w)))
    for s in range(0, n, chunk):
        sl = slice(s, min(s + chunk, n))
        inside = np.abs(zz - centre[sl]) < half[sl]
        union = np.logical_or.accumulate(inside, axis=1)
        props = union.mean(axis=(2, 3))
        best = np.argmin(np.abs(props - proportion), axis=1)
        out[sl] = union[np.arange(union.shape[0]), best]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ours = make_channels(args.n, random_state=0)
    ref = reference_make_channels(args.n, random_state=0)
    identical = bool(np.array_equal(ours, ref))
    times = {"skvaeinv": [], "reference": []}
    for _ in range(args.repeats):  # alternate, so that a slow spell hits both
        t0 = time.perf_counter()
        make_channels(args.n, random_state=0)
        times["skvaeinv"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reference_make_channels(args.n, random_state=0)
        times["reference"].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    result = {
        "n_images": args.n, "shape": [129, 65], "identical_outputs": identical,
        "seconds": times, "best_seconds": best,
        "speedup": best["reference"] / best["skvaeinv"],
        "target": "5,000 images of 129 x 65 in a few seconds",
        "machine": machine_info(),
        "command": f"python benchmarks/datasets_speed.py --n {args.n} --repeats {args.repeats}",
    }
    md = [
        f"# make_channels speed ({args.n} images of 129 x 65)", "",
        f"Command: `{result['command']}`", "",
        "| algorithm | best of runs (s) | runs (s) |", "|---|---|---|",
        f"| make_channels (channel by channel) | {best['skvaeinv']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['skvaeinv'])} |",
        f"| reference (all channels at once, logical_or.accumulate) | "
        f"{best['reference']:.2f} | {', '.join(f'{t:.2f}' for t in times['reference'])} |",
        "", f"Speed-up {result['speedup']:.2f}x; identical images: {identical}.", "",
        f"Machine: {result['machine'].get('cpu_model')} (family/model "
        f"{result['machine'].get('cpu_family_model')}, "
        f"{', '.join(result['machine'].get('cpu_flags', []))}), "
        f"{result['machine']['cpu_count']} cores.",
    ]
    write_results("datasets_speed", result, "\n".join(md) + "\n", study="datasets_speed")
    print("\n".join(md))


if __name__ == "__main__":
    main()
