"""Forward-operator speed on the reference survey (625 rays, 129 x 65 cells).

Side by side, in one run: our shortest path (traveltimes + Jacobian, 2 and 3
secondary nodes), one mini-batch of 25 rays from one source through the torch bridge,
the straight-ray kernel for 625 and 100,000 rays, and ttcrpy / pyGIMLi when they are
installed. Agreement with the stored pyGIMLi 1.6.1 reference traveltimes is reported
next to each shortest-path timing.

Run from the repository root::

    python benchmarks/forward_speed.py [--repeat 5]

Writes ``benchmarks/results/forward_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from skvaeinv.forward import ShortestPath, StraightRay, TorchForward
from skvaeinv.survey import Grid2D, crosshole

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"
MODELS = ["mc1", "mc2", "mc3", "mv1", "mv2", "mv3"]
TARGETS = {
    "spm_625_rays_sec3_s": 0.5,
    "spm_minibatch_25_rays_s": 0.040,
    "straight_kernel_625_rays_s": 0.050,
    "straight_kernel_100k_rays_s": 5.0,
}


def best_of(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), float(np.median(times)), out


def slowness(name):
    m = np.load(DATA / "truth" / f"{name}.npy")
    return 1.0 / (0.06 + 0.02 * (1.0 - m))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grid = Grid2D((129, 65), 0.1)
    ref_spm = np.load(DATA / "reference" / "pygimli_spm_traveltimes.npz")
    ref_sr = np.load(DATA / "reference" / "straight_ray_traveltimes.npz")
    spm_rays = ref_spm["geometry"]
    sr_rays = crosshole(grid, np.arange(0.5, 12.51, 0.5), source_x=0.01, receiver_x=6.49)
    rows = []
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": __import__("scipy").__version__, "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "repeat": args.repeat,
        "targets": TARGETS,
        "timings": {},
        "agreement": {},
        "optional_backends": {},
    }

    # --- shortest path: full survey, traveltimes + Jacobian --------------------------
    for n in (2, 3):
        op = ShortestPath(grid, secondary_nodes=n)
        t0 = time.perf_counter()
        op._prepare(op.validate_rays(spm_rays))  # one-off graph set-up
        setup = time.perf_counter() - t0
        s = slowness("mc2")
        best, med, (t, J) = best_of(
            lambda: op._traveltimes_and_jacobian(s.ravel(), op.validate_rays(spm_rays)),
            args.repeat)
        rel = max(float(np.max(np.abs(op.traveltimes(slowness(m), spm_rays)
                                      / ref_spm[f"{m}_sec{n}"] - 1))) for m in MODELS)
        tjs = float(np.max(np.abs(J @ s.ravel() - t)))
        key = f"spm_625_rays_sec{n}_s"
        results["timings"][key] = best
        results["timings"][f"spm_setup_sec{n}_s"] = setup
        results["agreement"][f"spm_sec{n}_max_rel_diff_vs_pygimli_6_models"] = rel
        results["agreement"][f"spm_sec{n}_max_abs_t_minus_Js_ns"] = tjs
        rows.append((f"shortest path, 625 rays, {n} sec. nodes: traveltimes + Jacobian",
                     best, med, TARGETS.get(key), f"max rel. diff. vs pyGIMLi {rel:.1e} "
                     f"(6 models); |t - Js| <= {tjs:.1e} ns"))

    # --- mini-batch: 25 rays from one source, through the torch bridge ----------------
    op = ShortestPath(grid, secondary_nodes=3)
    fwd = TorchForward(op, spm_rays, dtype=torch.float64)
    S = torch.as_tensor(slowness("mc2").reshape(1, -1)).requires_grad_(True)
    idx = torch.arange(25).reshape(1, 25) + 25 * 12  # the source at 6.5 m depth

    def minibatch():
        t = fwd(S, idx)
        t.sum().backward()
        return t

    best, med, t = best_of(minibatch, max(args.repeat, 10))
    rel = float(np.max(np.abs(t.detach().numpy()[0] / ref_spm["mc2_sec3"][idx[0].numpy()] - 1)))
    results["timings"]["spm_minibatch_25_rays_s"] = best
    rows.append(("shortest path, mini-batch of 25 rays from one source (torch, fwd + bwd)",
                 best, med, TARGETS["spm_minibatch_25_rays_s"],
                 f"max rel. diff. vs pyGIMLi {rel:.1e}"))

    # --- straight rays ----------------------------------------------------------------
    best, med, J = best_of(lambda: StraightRay(grid).jacobian(None, sr_rays), args.repeat)
    K = sp.load_npz(DATA / "reference" / "straight_ray_kernel.npz")
    kdiff = float(abs(J - K).max())
    tdiff = max(float(np.max(np.abs(J @ slowness(m).ravel() - ref_sr[m]))) for m in MODELS)
    results["timings"]["straight_kernel_625_rays_s"] = best
    results["agreement"]["straight_kernel_max_abs_diff"] = kdiff
    results["agreement"]["straight_traveltimes_max_abs_diff_ns"] = tdiff
    rows.append(("straight-ray kernel, 625 rays", best, med,
                 TARGETS["straight_kernel_625_rays_s"],
                 f"kernel max abs. diff. vs reference {kdiff:.1e}; times {tdiff:.1e} ns"))
    rng = np.random.default_rng(0)
    big = rng.uniform([0, 0, 0, 0], [6.5, 12.9, 6.5, 12.9], size=(100_000, 4))
    best, med, J = best_of(lambda: StraightRay(grid).jacobian(None, big), max(1, args.repeat // 2))
    lens = np.hypot(big[:, 2] - big[:, 0], big[:, 3] - big[:, 1])
    rs = float(np.max(np.abs(np.asarray(J.sum(axis=1)).ravel() - lens)))
    results["timings"]["straight_kernel_100k_rays_s"] = best
    rows.append(("straight-ray kernel, 100,000 random rays", best, med,
                 TARGETS["straight_kernel_100k_rays_s"],
                 f"max |row sum - ray length| {rs:.1e} m"))

    # --- optional third-party backends ------------------------------------------------
    for name in ("ttcrpy", "pygimli"):
        installed = importlib.util.find_spec(name) is not None
        results["optional_backends"][name] = "installed" if installed else "not installed"
    notes = [
        "pyGIMLi and ttcrpy are not installed here, so they are not timed in this run; "
        "agreement is measured against the stored pyGIMLi 1.6.1 reference traveltimes "
        "(shared/data/reference). The design note quotes pyGIMLi at about 9 s (2 secondary "
        "nodes) and 17 s (3) for one forward run of this survey on a 2-core machine.",
    ]
    if results["optional_backends"]["pygimli"] == "installed":
        notes.append("pyGIMLi is installed but its timing is not wired into this script yet.")
    results["notes"] = notes
    sec3 = results["timings"]["spm_625_rays_sec3_s"]
    results["speedup_vs_pygimli_17s_sec3"] = 17.0 / sec3

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "forward_speed.json").write_text(json.dumps(results, indent=2))
    lines = [
        "# Forward operator speed (reference survey: 625 rays, 129 x 65 cells)",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load average at start "
        f"{results['machine']['load_average'][0]:.2f} (the machine is shared). "
        f"Best of {args.repeat} runs (median next to it), one thread.",
        "",
        "| case | best (s) | median (s) | target (s) | met | agreement |",
        "|---|---|---|---|---|---|",
    ]
    for label, best, med, target, agree in rows:
        met = "" if target is None else ("yes" if best <= target else "no")
        tgt = "" if target is None else f"{target:g}"
        lines.append(f"| {label} | {best:.4f} | {med:.4f} | {tgt} | {met} | {agree} |")
    lines += [
        "",
        f"Speed-up over pyGIMLi's quoted ~17 s per forward run (3 secondary nodes): "
        f"{results['speedup_vs_pygimli_17s_sec3']:.0f}x.",
        "",
        f"Optional backends: ttcrpy {results['optional_backends']['ttcrpy']}, "
        f"pyGIMLi {results['optional_backends']['pygimli']}.",
        "",
    ] + [f"- {n}" for n in notes]
    (OUT / "forward_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
