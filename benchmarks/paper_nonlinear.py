"""Reproduce the reference study's shortest-path (nonlinear) results with skvaeinv.

Data: our ShortestPath with 2 secondary nodes on the pyGIMLi geometry (sensors at
x = 0 and 6.5 m, depths 0.5..12.5 m, 625 rays; it reproduces pyGIMLi 1.6.1 to 1e-14);
inversion with 3 secondary nodes and the study's schedule (30 epochs x 25 batches,
lr 0.1 x 0.8 every 5 epochs, ring weight 10 x 0.99 per iteration). Thresholds, reports
and figures as in paper_linear.py.

Usage::

    python benchmarks/paper_nonlinear.py --starts 20 --cases free
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_linear import parse_args, run_benchmark, survey  # noqa: E402

from skvaeinv.forward import ShortestPath  # noqa: E402

SCHEDULE = dict(epochs=30, batch_size=25, lr=0.1, lr_decay=0.8, lr_step=5, reg="ring",
                reg_weight=10.0, reg_decay=0.99)


def main(argv=None) -> int:
    args = parse_args(argv, __doc__, starts=20, name="paper_nonlinear")
    grid, rays = survey(source_x=0.0, receiver_x=6.5)
    return run_benchmark(args, rays, data_forward=ShortestPath(grid, secondary_nodes=2),
                         forward=ShortestPath(grid, secondary_nodes=3), schedule=SCHEDULE,
                         physics="shortest paths", script="paper_nonlinear.py")


if __name__ == "__main__":
    sys.exit(main())
