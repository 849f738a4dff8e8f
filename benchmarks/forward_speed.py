"""Forward-operator speed on the reference survey (625 rays, 129 x 65 cells).

Side by side, in one run: our shortest path with both of its own backends (the compiled
A* searches, ``"numba"``, which ``"auto"`` picks, and scipy's Dijkstra): traveltimes +
Jacobian of the full survey (2 and 3 secondary nodes, one worker and ``--n-jobs``),
mini-batches of 25 rays through the torch bridge (one source; 25 random rays as the
study's SGD draws them),
the straight-ray kernel for 625 and 100,000 rays, and ttcrpy / pyGIMLi when they are
installed (``pip install -e ".[compare]"``; ttcrpy also needs libOpenCL.so.1).
Agreement with the stored pyGIMLi 1.6.1 reference traveltimes is reported next to each
shortest-path timing.

Run from the repository root::

    python benchmarks/forward_speed.py [--repeat 5] [--n-jobs 2]

Writes ``benchmarks/results/forward_speed/forward_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED as DATA  # noqa: E402
from _common import slowness as facies_to_slowness  # noqa: E402
from _common import command_line, machine_info, require_shared, survey, write_results  # noqa: E402

from skvaeinv.forward import ShortestPath, StraightRay, TorchForward  # noqa: E402
MODELS = ["mc1", "mc2", "mc3", "mv1", "mv2", "mv3"]
BACKENDS = ["numba", "scipy"]
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
    """The reference slowness of truth model ``name``."""
    return facies_to_slowness(np.load(DATA / "truth" / f"{name}.npy"))


def version(name):
    from importlib.metadata import version as _v
    return _v(name)


def pg_version():
    return version("pygimli")


def time_pygimli(rays, s, n):
    """pyGIMLi's own Dijkstra modelling on the same grid: (response s, Jacobian s, times)."""
    import pygimli as pg
    from pygimli.physics.traveltime import TravelTimeDijkstraModelling

    pts = np.vstack([rays[:, :2], rays[:, 2:]])
    uniq, inv = np.unique(pts, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel().astype(float)
    data = pg.DataContainer()
    data.registerSensorIndex("s")
    data.registerSensorIndex("g")
    for x, z in uniq:
        data.createSensor([x, -z])  # pyGIMLi's y points up
    data.resize(len(rays))
    data.set("s", inv[:len(rays)])
    data.set("g", inv[len(rays):])
    nz, nx = s.shape
    mesh = pg.createGrid(x=np.linspace(0, 0.1 * nx, nx + 1), y=np.linspace(-0.1 * nz, 0, nz + 1))
    fop = TravelTimeDijkstraModelling(secNodes=n)
    fop.setData(data)
    fop.setMesh(mesh)
    model = s[::-1].ravel()  # pyGIMLi's cells run x fastest, from the bottom up
    fop.response(model)  # set-up (mesh refinement, graph) outside the timing
    t0 = time.perf_counter()
    t = np.asarray(fop.response(model))
    t1 = time.perf_counter()
    fop.createJacobian(model)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, t


def time_ttcrpy(grid, rays, s, n, threads):
    """ttcrpy's shortest-path method (its own SPM graph): times and L for all rays."""
    import ttcrpy.rgrid as rg

    nz, nx = grid.shape
    g = rg.Grid2d(np.linspace(0, grid.spacing * nx, nx + 1),
                  np.linspace(0, grid.spacing * nz, nz + 1),
                  n_threads=threads, cell_slowness=True, method="SPM", nsnx=n, nsnz=n)
    src, rcv = rays[:, :2], rays[:, 2:]
    tt, L = g.raytrace(src, rcv, slowness=s.T.ravel(), compute_L=True)  # (nx, nz) order
    return np.asarray(tt), L


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2,
                        help="threads (numba) or worker processes (scipy) for the "
                             "parallel shortest-path rows")
    args = parser.parse_args(argv)
    require_shared()
    command = command_line(__file__, argv)
    torch.set_num_threads(1)
    grid, sr_rays = survey()
    ref_spm = np.load(DATA / "reference" / "pygimli_spm_traveltimes.npz")
    ref_sr = np.load(DATA / "reference" / "straight_ray_traveltimes.npz")
    spm_rays = ref_spm["geometry"]
    rows = []
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "numpy": np.__version__,
                    "scipy": __import__("scipy").__version__, "torch": torch.__version__,
                    "load_average": os.getloadavg(), **machine_info()},
        "command": command,
        "repeat": args.repeat,
        "targets": TARGETS,
        "timings": {},
        "agreement": {},
        "optional_backends": {},
    }

    # --- shortest path: full survey, traveltimes + Jacobian --------------------------
    # serial (n_jobs=None), then n_jobs threads (numba) or worker processes (scipy)
    s = slowness("mc2")
    ours = {}  # our mc2 times per secondary-node count, for the third-party rows
    for backend, n, n_jobs in itertools.product(BACKENDS, (2, 3), (None, args.n_jobs)):
        op = ShortestPath(grid, secondary_nodes=n, n_jobs=n_jobs, backend=backend)
        t0 = time.perf_counter()
        # one-off set-up: the graph (and, in parallel, the workers and their graphs)
        op._traveltimes_and_jacobian(s.ravel(), op.validate_rays(spm_rays))
        setup = time.perf_counter() - t0
        best, med, (t, J) = best_of(
            lambda: op._traveltimes_and_jacobian(s.ravel(), op.validate_rays(spm_rays)),
            args.repeat)
        rel = max(float(np.max(np.abs(op.traveltimes(slowness(m), spm_rays)
                                      / ref_spm[f"{m}_sec{n}"] - 1))) for m in MODELS)
        tjs = float(np.max(np.abs(J @ s.ravel() - t)))
        ours.setdefault(n, t)  # the default backend's (both agree to ~1e-15)
        tag = f"{backend}_sec{n}" + ("" if n_jobs is None else f"_njobs{n_jobs}")
        key = f"spm_625_rays_{tag}_s"
        results["timings"][key] = best
        results["timings"][f"spm_setup_{tag}_s"] = setup
        results["agreement"][f"spm_{tag}_max_rel_diff_vs_pygimli_6_models"] = rel
        results["agreement"][f"spm_{tag}_max_abs_t_minus_Js_ns"] = tjs
        how = ("one worker" if n_jobs is None else f"n_jobs={n_jobs} "
               + ("threads" if backend == "numba" else "processes"))
        rows.append((f"shortest path ({backend}), 625 rays, {n} sec. nodes: traveltimes "
                     f"+ Jacobian, {how}", best, med,
                     TARGETS["spm_625_rays_sec3_s"] if n == 3 else None,
                     f"max rel. diff. vs pyGIMLi {rel:.1e} (6 models); "
                     f"|t - Js| <= {tjs:.1e} ns"))

    # --- mini-batches of 25 rays through the torch bridge -------------------------------
    # one source (a source gather), and 25 random rays (the study's SGD batches; the
    # same 10 batches each repeat), in one worker and in n_jobs
    S = torch.as_tensor(slowness("mc2").reshape(1, -1)).requires_grad_(True)
    gather = torch.arange(25).reshape(1, 25) + 25 * 12  # the source at 6.5 m depth
    draws = np.random.default_rng(1)
    random_batches = [torch.as_tensor(draws.choice(len(spm_rays), 25, replace=False))[None]
                      for _ in range(10)]
    for backend, (kind, batches), n_jobs in itertools.product(
            BACKENDS, (("source", [gather]), ("random", random_batches)),
            (None, args.n_jobs)):
        op = ShortestPath(grid, secondary_nodes=3, backend=backend, n_jobs=n_jobs)
        fwd = TorchForward(op, spm_rays, dtype=torch.float64)

        def minibatch():
            out = []
            for idx in batches:
                t = fwd(S, idx)
                t.sum().backward()
                out.append(t.detach().numpy()[0])
            return np.concatenate(out)

        best, med, t = best_of(minibatch, max(args.repeat, 10))
        best, med = best / len(batches), med / len(batches)
        rows_idx = torch.cat(batches, dim=1)[0].numpy()
        rel = float(np.max(np.abs(t / ref_spm["mc2_sec3"][rows_idx] - 1)))
        key = (f"spm_minibatch_25_rays_{kind}_{backend}"
               + ("" if n_jobs is None else f"_njobs{n_jobs}") + "_s")
        results["timings"][key] = best
        what = ("from one source" if kind == "source"
                else f"drawn at random (mean of {len(batches)} batches)")
        how = ("one worker" if n_jobs is None else f"n_jobs={n_jobs} "
               + ("threads" if backend == "numba" else "processes"))
        rows.append((f"shortest path ({backend}), mini-batch of 25 rays {what}, 3 sec. "
                     f"nodes, {how} (torch, fwd + bwd)", best, med,
                     TARGETS["spm_minibatch_25_rays_s"] if kind == "source" else None,
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

    # --- optional third-party codes, same survey, same run ------------------------------
    for name in ("ttcrpy", "pygimli"):
        installed = importlib.util.find_spec(name) is not None
        results["optional_backends"][name] = "installed" if installed else "not installed"
    notes = []
    if results["optional_backends"]["pygimli"] == "installed":
        for n in (2, 3):
            resp, jac, t_pg = time_pygimli(spm_rays, s, n)
            rel = float(np.max(np.abs(t_pg / ours[n] - 1)))
            results["timings"][f"pygimli_response_sec{n}_s"] = resp
            results["timings"][f"pygimli_jacobian_sec{n}_s"] = jac
            results["agreement"][f"pygimli_sec{n}_max_rel_diff_vs_ours"] = rel
            rows.append((f"pyGIMLi {pg_version()} TravelTimeDijkstraModelling, {n} sec. "
                         "nodes: response()", resp, resp, None,
                         f"max rel. diff. vs ours {rel:.1e}"))
            rows.append((f"pyGIMLi {pg_version()}, {n} sec. nodes: createJacobian()",
                         jac, jac, None, "(t = J s)"))
        notes.append("pyGIMLi timed once per case (each run takes seconds), with its "
                     "default thread count, in this same process.")
    else:
        notes.append("pyGIMLi is not installed, so it is not timed in this run; agreement "
                     "is measured against the stored pyGIMLi 1.6.1 reference traveltimes. "
                     "The design note quotes pyGIMLi at about 9 s (2 secondary nodes) and "
                     "17 s (3) for one forward run of this survey on a 2-core machine.")
    if results["optional_backends"]["ttcrpy"] == "installed":
        for threads in (1, args.n_jobs):
            best, med, (t_tc, L) = best_of(lambda: time_ttcrpy(grid, spm_rays, s, 3, threads),
                                           args.repeat)
            rel = float(np.max(np.abs(t_tc / ref_spm["mc2_sec3"] - 1)))
            results["timings"][f"ttcrpy_spm_sec3_threads{threads}_s"] = best
            results["agreement"][f"ttcrpy_sec3_threads{threads}_max_rel_diff_vs_pygimli"] = rel
            rows.append((f"ttcrpy {version('ttcrpy')} SPM, 3 sec. nodes, {threads} thread(s): "
                         "traveltimes + L (also our backend='ttcrpy')", best, med, None,
                         f"max rel. diff. vs pyGIMLi {rel:.1e}"))
    else:
        notes.append("ttcrpy is not installed (it needs the system OpenCL loader, "
                     "libOpenCL.so.1), so it is not timed in this run.")
    results["notes"] = notes
    sec3 = results["timings"]["spm_625_rays_numba_sec3_s"]
    par3 = results["timings"][f"spm_625_rays_numba_sec3_njobs{args.n_jobs}_s"]
    tm = results["timings"]
    results["numba_vs_scipy"] = {
        k.replace("_numba", ""): tm[k.replace("numba", "scipy")] / tm[k]
        for k in tm if "numba" in k and k.replace("numba", "scipy") in tm}
    results["speedup_vs_pygimli_17s_sec3"] = 17.0 / sec3
    results[f"parallel_speedup_sec3_njobs{args.n_jobs}"] = sec3 / par3
    if "pygimli_response_sec3_s" in results["timings"]:
        pgt = results["timings"]["pygimli_response_sec3_s"]
        results["speedup_vs_pygimli_measured_sec3"] = pgt / sec3
        results[f"speedup_vs_pygimli_measured_sec3_njobs{args.n_jobs}"] = pgt / par3
    lines = [
        "# Forward operator speed (reference survey: 625 rays, 129 x 65 cells)",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.platform()}; load average at start "
        f"{results['machine']['load_average'][0]:.2f} (the machine is shared). "
        f"Best of {args.repeat} runs (median next to it), after one warm-up call; one "
        "torch thread. 'numba' is the default backend ('auto').",
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
        "Ratio scipy / numba (same case, same run): " + ", ".join(
            f"{k.replace('spm_', '').removesuffix('_s')} {v:.2f}x"
            for k, v in results["numba_vs_scipy"].items()
            if not k.startswith("spm_setup")) + ".",
        "",
        f"Speed-up of the default backend over pyGIMLi's quoted ~17 s per forward run "
        f"(3 secondary nodes): {results['speedup_vs_pygimli_17s_sec3']:.0f}x in one worker, "
        f"{17.0 / par3:.0f}x with n_jobs={args.n_jobs} "
        f"({results[f'parallel_speedup_sec3_njobs{args.n_jobs}']:.2f}x parallel "
        "speed-up).",
        "",
        f"Optional backends: ttcrpy {results['optional_backends']['ttcrpy']}, "
        f"pyGIMLi {results['optional_backends']['pygimli']}.",
        "",
    ] + [f"- {n}" for n in notes] + ["", f"Command: `{command}`"]
    write_results("forward_speed", results, "\n".join(lines), study="forward_speed")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
