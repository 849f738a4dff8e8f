"""Speed of ``LatentInverter`` before and after a refactoring, in alternating runs.

Each run is a fresh Python process that imports ``skvaeinv`` from one checkout
(``PYTHONPATH``) and times ``LatentInverter.fit`` on the study's linear case (committed
reference prior, truth mc2, 625 straight rays, the study's schedule): ``--starts``
starts in one chunk, ``--epochs`` epochs, one torch thread, for each ``--precisions``.
Old and new alternate ``--repeats`` times, so that a slow spell of the shared machine
falls on both; reported: each run's seconds, the best of each side and the ratio
old / new of the best (above 1: the new code is faster), and of the medians.

Usage::

    python benchmarks/redesign_speed.py --old /path/to/old/checkout --name redesign_speed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_TIMED = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.forward import StraightRay
from skvaeinv.survey import Grid2D
starts, epochs, precision, prior_path, shared = sys.argv[1:6]
prior = VAEPrior.load(prior_path, device="cpu")
ref = np.load(shared + "/reference/straight_ray_traveltimes.npz")
inv = LatentInverter(prior, StraightRay(Grid2D((129, 65), spacing=0.1)),
                     n_starts=int(starts), chunk_size=int(starts), epochs=int(epochs),
                     precision=precision, device="cpu", n_jobs=1, random_state=0)
inv.set_params(epochs=1).fit(ref["geometry"], ref["mc2"])      # warm-up
inv.set_params(epochs=int(epochs))
t0 = time.perf_counter()
inv.fit(ref["geometry"], ref["mc2"])
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "rmse": float(inv.data_rmse_.min())}))
"""


def _run(tree: Path, starts: int, epochs: int, precision: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _TIMED, str(starts), str(epochs), precision,
         str(HERE / "priors" / "reference_prior.skv"),
         str(ROOT.parent / "shared" / "data")],
        env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="checkout of the code before")
    ap.add_argument("--new", default=str(ROOT), help="checkout of the code after")
    ap.add_argument("--starts", type=int, default=25)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--name", default=None,
                    help="write benchmarks/results/redesign_speed/<name>.json and .md")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from _common import command_line, machine_info, md_table, write_results

    rows, payload = [], {"command": command_line(__file__, argv), "runs": {}}
    for precision in args.precisions:
        runs = {"old": [], "new": []}
        for _ in range(args.repeats):
            for side in ("old", "new"):
                tree = Path(args.old if side == "old" else args.new)
                runs[side].append(_run(tree, args.starts, args.epochs, precision))
        payload["runs"][precision] = runs
        t = {side: sorted(r["seconds"] for r in runs[side]) for side in runs}
        best = t["old"][0] / t["new"][0]
        median = t["old"][len(t["old"]) // 2] / t["new"][len(t["new"]) // 2]
        same = all(a["rmse"] == b["rmse"] for a, b in zip(runs["old"], runs["new"]))
        rows.append([precision, " / ".join(f"{s:.2f}" for s in t["old"]),
                     " / ".join(f"{s:.2f}" for s in t["new"]), f"{best:.3f}",
                     f"{median:.3f}", "yes" if same else "no"])
    cpu = machine_info()
    md = (f"# LatentInverter speed before and after the redesign\n\nCommand: "
          f"`{payload['command']}`\n\n{args.starts} starts x {args.epochs} epochs "
          f"({args.epochs * 25} iterations), one thread, alternating runs. CPU: "
          f"{cpu.get('cpu_model')}.\n\n"
          + md_table(["precision", "old (s, sorted)", "new (s, sorted)",
                      "old / new (best)", "old / new (median)", "same best RMSE"], rows)
          + "\n")
    print(md)
    if args.name:
        write_results(args.name, {**payload, "rows": rows}, md, study="redesign")
    return 0


if __name__ == "__main__":
    sys.exit(main())
