"""Write tests/data/tiny_prior.skv, the tiny prior the inversion tests share.

    python tests/data/make_tiny_prior.py

Trains ``conftest.train_tiny_prior`` (30 epochs on 250 procedural 32 x 16 images, about
5 s on one CPU thread, as the test session runs it) and saves it with ``VAEPrior.save``.
The committed file was written on an AMD EPYC (Zen 3), torch 2.13.0+cpu, one thread.
Rewrite it only when the network or its file format changes, and rerun the suite: the
inversion tests' thresholds were calibrated on this prior.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path.insert(0, str(TESTS))
    from conftest import TINY_PRIOR_FILE, make_tiny_images, train_tiny_prior

    torch.set_num_threads(1)   # as in the test session (conftest.pytest_configure)
    prior = train_tiny_prior(make_tiny_images())
    prior.save(TINY_PRIOR_FILE)
    print(f"wrote {TINY_PRIOR_FILE} ({TINY_PRIOR_FILE.stat().st_size} bytes); "
          f"final loss {prior.loss_curve_[-1]:.4f}")


if __name__ == "__main__":
    main()
