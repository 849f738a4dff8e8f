"""Capacity probe: can the reference network represent a truth once it is trained on it?

A diagnostic for issue 29, **not a way to make a prior**: the project's rule (shared/data
README) is never to train on the truths' windows, and no prior made here may be
committed or used in a benchmark of the method. The question it answers is what limits
the misfit floor of a truth such as mc3: the network (20 latent dimensions, the study's
layers) or what the training shows it. The study trained on the whole training image,
the truths' own windows included.

One arm per process (run two side by side, one thread each), from the same prior, the
same crops count and the same learning-rate schedule:

* ``--arm control``: crops of the training band, the truths' windows excluded (the
  project's rule, as ``train_prior.py``);
* ``--arm exposed``: the same, except that a share ``--truth-share`` of each chunk is
  crops around the truths' windows (``--truths``, each equally often), their corners
  shifted by up to ``--jitter`` rows and columns (the exact window among them).

The floors of the resulting files are then measured side by side with
``prior_floor.py --priors <start> <control> <exposed> --truths mc1 mc2 mc3 mv1 mv2 mv3``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/prior_exposure.py --arm exposed \\
        --start benchmarks/priors/reference_prior.skv --out /tmp/exposure/exposed.skv
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PRIORS, SHARED, TRUTH_SHAPE, TRUTH_WINDOWS,  # noqa: E402
                     training_crops)

from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv.datasets import load_training_image  # noqa: E402
from skvaeinv.prior._training import cosine_lr, train_in_chunks  # noqa: E402

log = logging.getLogger("prior_exposure")


def truth_crops(ti: np.ndarray, truths: list[str], jitter: tuple[int, int]):
    """``crops(n, seed)``: crops whose corners lie within ``jitter`` of the truths'."""
    h, w = TRUTH_SHAPE
    corners = np.array([TRUTH_WINDOWS[t] for t in truths])

    def crops(n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        pick = corners[rng.integers(len(corners), size=n)]
        shift = rng.integers(-np.array(jitter), np.array(jitter) + 1, size=(n, 2))
        r = np.clip(pick[:, 0] + shift[:, 0], 0, ti.shape[0] - h)
        c = np.clip(pick[:, 1] + shift[:, 1], 0, ti.shape[1] - w)
        return windows[r, c]
    windows = sliding_window_view(np.asarray(ti, dtype=np.float32), (h, w))
    return crops


def mixed_crops(band, near, share: float):
    """``crops(n, seed)``: ``round(share * n)`` crops from ``near``, the rest from
    ``band``, shuffled together."""
    def crops(n: int, seed: int) -> np.ndarray:
        k = int(round(share * n))
        both = np.concatenate([near(k, seed + 1), band(n - k, seed)])
        return both[np.random.default_rng(seed + 2).permutation(n)]
    return crops


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arm", choices=("control", "exposed"), required=True)
    ap.add_argument("--start", default=str(PRIORS / "reference_prior.skv"),
                    help="prior both arms start from (copied, never changed)")
    ap.add_argument("--out", required=True, help="the arm's prior file (a scratch path)")
    ap.add_argument("--more-images", type=int, default=150_000,
                    help="crops to train on beyond the start's")
    ap.add_argument("--truth-share", type=float, default=0.25)
    ap.add_argument("--truths", nargs="+", default=list(TRUTH_WINDOWS),
                    choices=list(TRUTH_WINDOWS))
    ap.add_argument("--jitter", type=int, nargs=2, default=(16, 8), metavar=("ROWS", "COLS"))
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--lr-final", type=float, default=3e-6)
    ap.add_argument("--chunk", type=int, default=25_000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    ti = load_training_image(SHARED / "ti.png")
    band = training_crops(ti)
    crops = band
    if args.arm == "exposed":
        near = truth_crops(ti, args.truths, tuple(args.jitter))
        crops = mixed_crops(band, near, args.truth_share)
        log.warning("arm 'exposed' trains on the truths' windows %s: a diagnostic prior, "
                    "never to be committed or used to judge the method", args.truths)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    resuming = out.exists()
    if not resuming:
        shutil.copyfile(args.start, out)
    prior = VAEPrior.load(out, device="cpu")
    prior.set_params(compile=args.compile, precision="bfloat16")
    # where the schedule starts: the start prior's count (read again only when resuming)
    start = (VAEPrior.load(args.start, device="cpu").n_images_seen_ if resuming
             else prior.n_images_seen_)
    stop = start + args.more_images
    train_in_chunks(prior, crops, stop, chunk_size=args.chunk, seed=args.seed,
                    checkpoint=out, lr_schedule=cosine_lr(args.lr, args.lr_final, start,
                                                          stop))
    log.info("%s: %d images seen, written to %s", args.arm, prior.n_images_seen_, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
