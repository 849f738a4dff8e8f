r"""Outputs of ``LatentInverter`` before and after a refactoring: record, then compare.

``record`` runs two fixed-seed float32 CPU inversions with whatever ``skvaeinv`` is on
the path (point ``PYTHONPATH`` at an older checkout to record its outputs) and writes
``models_``, ``latents_``, ``data_rmse_`` and every ``history_`` record to an ``.npz``:

* ``tiny``: the test suite's tiny prior (``tests/data/tiny_prior.skv``), its 32 x 16
  straight-ray survey (256 rays) and a truth decoded from ``z ~ N(0, I)`` (seed 8), 6
  starts in two chunks, 30 epochs, Adam and SGD;
* ``reference``: the committed reference prior, truth mc2, the study's 625 straight rays
  and linear schedule, 4 starts for the full 120 epochs (3,000 iterations).

``compare`` reads two such files and reports the largest differences, relative to the
float32 rounding of each quantity.

Usage::

    PYTHONPATH=/path/to/old/checkout python benchmarks/redesign_equivalence.py record /tmp/old.npz
    python benchmarks/redesign_equivalence.py record /tmp/new.npz
    python benchmarks/redesign_equivalence.py compare /tmp/old.npz /tmp/new.npz \
        --name redesign_equivalence
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
FIELDS = ("models_", "latents_", "data_rmse_")


def _tiny_cases() -> dict:
    import torch
    from skvaeinv import LatentInverter, VAEPrior
    from skvaeinv.forward import StraightRay
    from skvaeinv.survey import Grid2D, crosshole

    torch.set_num_threads(1)
    prior = VAEPrior.load(ROOT / "tests" / "data" / "tiny_prior.skv")
    grid = Grid2D((32, 16), spacing=0.1)
    rays = crosshole(grid, depths=np.arange(0.1, 3.2, 0.2))
    z_true = np.random.default_rng(8).standard_normal((1, prior.latent_dim))
    truth = prior.inverse_transform(z_true)[0]
    y = StraightRay(grid).traveltimes(1.0 / (0.06 + 0.02 * (1.0 - truth)), rays)
    out = {}
    for opt in ("sgd", "adam"):
        inv = LatentInverter(prior, StraightRay(grid), n_starts=6, chunk_size=3, epochs=30,
                             batch_size=16, lr=1e-3 if opt == "sgd" else 5e-2,
                             optimizer=opt, device="cpu", n_jobs=1, random_state=3)
        out[f"tiny_{opt}"] = inv.fit(rays, y)
    return out


def _reference_case() -> dict:
    import torch
    from skvaeinv import LatentInverter, VAEPrior
    from skvaeinv.forward import StraightRay
    from skvaeinv.survey import Grid2D

    torch.set_num_threads(2)
    prior = VAEPrior.load(HERE / "priors" / "reference_prior.skv", device="cpu")
    ref = np.load(SHARED / "reference" / "straight_ray_traveltimes.npz")
    grid = Grid2D((129, 65), spacing=0.1)
    rays = ref["geometry"]
    inv = LatentInverter(prior, StraightRay(grid), n_starts=4, epochs=120, device="cpu",
                         n_jobs=1, random_state=0)
    return {"reference": inv.fit(rays, ref["mc2"])}


def record(path: str) -> None:
    import skvaeinv

    arrays = {"package": np.array(str(Path(skvaeinv.__file__).parent))}
    for case, inv in {**_tiny_cases(), **_reference_case()}.items():
        for name in FIELDS:
            arrays[f"{case}/{name}"] = np.asarray(getattr(inv, name))
        for key, values in inv.history_.to_dict().items():
            arrays[f"{case}/history_{key}"] = np.asarray(values)
    np.savez(path, **arrays)
    print(f"recorded {len(arrays) - 1} arrays from {arrays['package']} into {path}")


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference and its size in float32 ulps of the values (NaN-aware)."""
    if a.shape != b.shape:
        return np.inf, np.inf
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return np.inf, np.inf
    ok = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(a[~ok], b[~ok], equal_nan=True):
        return np.inf, np.inf
    if not ok.any():
        return 0.0, 0.0
    diff = np.abs(a[ok].astype(np.float64) - b[ok])
    scale = np.maximum(np.abs(a[ok]).astype(np.float64), np.finfo(np.float32).tiny)
    return float(diff.max()), float((diff / (scale * np.finfo(np.float32).eps)).max())


def compare(old: str, new: str, name: str | None) -> int:
    a, b = np.load(old), np.load(new)
    keys = [k for k in a.files if k != "package"]
    rows, worst = [], 0.0
    for key in keys:
        if key not in b.files:
            rows.append((key, "missing", "missing"))
            worst = np.inf
            continue
        d, ulps = _difference(a[key], b[key])
        worst = max(worst, ulps)
        rows.append((key, f"{d:.3g}", f"{ulps:.3g}"))
    lines = ["| array | max abs. difference | in float32 ulps of the value |", "|---|---|---|"]
    lines += [f"| {k} | {d} | {u} |" for k, d, u in rows]
    md = (f"# Outputs before and after the redesign\n\nOld: `{a['package']}`, new: "
          f"`{b['package']}`.\n\n" + "\n".join(lines)
          + f"\n\nLargest difference: {worst:.3g} float32 ulps.\n")
    print(md)
    if name:
        sys.path.insert(0, str(HERE))
        from _common import write_results

        write_results(name, {"old": str(a["package"]), "new": str(b["package"]),
                             "rows": rows, "worst_ulps": worst}, md,
                      study="redesign")
    return 0 if worst <= 256 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out")
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--name", default=None,
                   help="write the results as benchmarks/results/redesign/<name>.{json,md}")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.out)
        return 0
    return compare(args.old, args.new, args.name)


if __name__ == "__main__":
    sys.exit(main())
