"""Speed of the latent-space SGD: a published-style per-start loop vs. LatentInverter.

Reference linear case of the study: 129 x 65 grid, 625 straight rays (sources at
x = 0.01 m, receivers at x = 6.49 m, depths 0.5..12.5 m), batches of 25 rays, the
study's schedule (lr 1e-2 x 0.95 per epoch, ring weight 10 x 0.999 per iteration).

(a) ``reference``: one start at a time, the way the published code works (dense
    625 x 8385 kernel, ``torch.mv`` of all rays each iteration, ``torch.optim.SGD``,
    the decoded image copied to numpy and the latent vector stored every iteration),
    with torch's default threads.
(b) ``LatentInverter``: all starts batched (chunks of 25 starts, one torch thread per
    chunk, ``n_jobs`` workers), float32 and bfloat16, eager and with ``compile=True``
    (the decoder through ``torch.compile``; compilation time is included).

Reported: start-iterations per second, wall time of ``--starts`` x ``--iterations``,
peak resident memory of the whole process tree (this process + joblib workers,
sampled from /proc every 0.2 s), and for the nonlinear case the time of
``--nl-iterations`` iterations of one start with :class:`~skvaeinv.forward.ShortestPath`
(3 secondary nodes, the study's nonlinear schedule; ``LatentInverter(n_jobs=--n-jobs)``,
which hands the cores to the operator since one start is one chunk), for each
``--nl-batching`` and, side by side, each ``--nl-backends`` (the compiled A* searches
that ``backend="auto"`` picks, and scipy's Dijkstra), with the ratio to scipy.

Speed does not depend on how well the prior is trained: the committed reference prior
(``benchmarks/priors/*prior*.skv``) is used when present, else a reference-architecture
VAEPrior fitted for one step.

Usage::

    python benchmarks/sgd_speed.py                      # full run (~20-30 min on 2 cores)
    python benchmarks/sgd_speed.py --starts 8 --iterations 100 --ref-iterations 50 \\
        --nl-iterations 5 --name sgd_speed_quick         # smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from joblib import effective_n_jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (command_line, PRIORS, SHARED, add_allocator_option, apply_allocator,  # noqa: E402
                     device_label, md_table, setting_label, slowness, survey,
                     write_results)

from skvaeinv import LatentInverter, VAEPrior  # noqa: E402
from skvaeinv.datasets import make_channels  # noqa: E402
from skvaeinv.engine import chi_mean  # noqa: E402
from skvaeinv.forward import ShortestPath, StraightRay  # noqa: E402
from skvaeinv.inverter import reference_schedule  # noqa: E402

log = logging.getLogger("sgd_speed")
SHAPE = (129, 65)
# the study's schedules; the number of epochs is set per run
LINEAR = {k: v for k, v in reference_schedule("straight").items() if k != "epochs"}
NONLINEAR = {k: v for k, v in reference_schedule("bent").items() if k != "epochs"}


# ---------------------------------------------------------------------- memory
class PeakRSS:
    """Peak of the summed resident memory of this process and its descendants."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree_rss(pid: int) -> int:
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                with open(f"/proc/{p}/statm") as f:
                    total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                with open(f"/proc/{p}/task/{p}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss(os.getpid()))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._tree_rss(os.getpid())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float | None:
        """The peak in GB, or None where ``/proc`` could not be read (not Linux)."""
        return self.peak / 1e9 if self.peak > 0 else None


# ---------------------------------------------------------------------- setup
def load_prior() -> tuple[VAEPrior, str]:
    files = sorted(PRIORS.glob("*prior*.skv"))
    if files:
        return VAEPrior.load(files[0], device="cpu"), str(files[0].name)
    images = make_channels(8, shape=SHAPE, random_state=0)
    prior = VAEPrior(epochs=1, batch_size=8, device="cpu", random_state=0).fit(images)
    return prior, "fresh reference-architecture VAEPrior (1 step; speed only)"


def truth_model(prior: VAEPrior) -> tuple[np.ndarray, str]:
    path = SHARED / "truth" / "mc2.npy"
    if path.exists():
        return np.load(path).astype(np.float64), "mc2"
    return prior.sample(1, random_state=0)[0].astype(np.float64), "prior sample"


# ---------------------------------------------------------------------- (a) reference
def reference_loop(decoder: torch.nn.Module, A: np.ndarray, d: np.ndarray, n_iter: int,
                   seed: int = 0) -> float:
    """One start the way the published code works; returns seconds per iteration.

    Runs on the device of ``decoder`` (the published code also ran on a GPU when one
    was present, copying the decoded image to numpy at every step)."""
    rng = np.random.default_rng(seed)
    weight = next(decoder.parameters())
    latent_dim, dev = weight.shape[1], weight.device
    z = torch.tensor(rng.standard_normal((1, latent_dim)), dtype=torch.float32,
                     device=dev, requires_grad=True)
    optimizer = torch.optim.SGD([z], lr=LINEAR["lr"])
    A_t = torch.tensor(A, dtype=torch.float32, device=dev)
    d_t = torch.tensor(d, dtype=torch.float32, device=dev)
    mchi = chi_mean(latent_dim)
    lam = LINEAR["reg_weight"]
    n_data, bs = len(d), LINEAR["batch_size"]
    dloss, zs, cost_min = [], [], None
    t0 = time.perf_counter()
    it = 0
    while it < n_iter:
        order = rng.permutation(n_data)
        for j in range(n_data // bs):
            if it >= n_iter:
                break
            idx = order[j * bs:(j + 1) * bs]
            x0 = decoder(z)
            x = np.copy(x0.data.cpu().numpy())  # published: copy to numpy each step
            s = 1.0 / (0.06 + 0.02 * (1 - x0))
            sim = torch.mv(A_t, s.flatten())
            e = d_t[idx] - sim[idx]
            loss = torch.sum(e**2)
            optimizer.zero_grad()
            loss.backward()
            reg = lam * (torch.norm(z) - mchi) ** 2
            reg.backward()
            optimizer.step()
            lam *= LINEAR["reg_decay"]
            total = torch.sum((d_t - sim) ** 2) + reg
            if cost_min is None or total <= cost_min:
                cost_min, model_min = total, x[0]  # noqa: F841
            dloss.append(torch.sum((d_t - sim) ** 2).detach().cpu().numpy())
            zs.append(np.copy(z.data.cpu().numpy()))
            it += 1
    return (time.perf_counter() - t0) / n_iter


# ---------------------------------------------------------------------- (b) batched
def batched_run(prior, fwd, rays, y, n_starts: int, epochs: int, precision: str,
                n_jobs: int, schedule: dict, compile: bool = False,
                device: str = "cpu") -> dict:
    # CPU: chunks of at most 25 starts (the fastest batch, results/decoder_roofline/), enough
    # of them to give every worker one; GPU: all starts in one batch (the default)
    chunk = (min(25, -(-n_starts // max(1, effective_n_jobs(n_jobs))))
             if torch.device(device).type == "cpu" else None)
    inv = LatentInverter(prior, fwd, n_starts=n_starts, epochs=epochs, device=device,
                         precision=precision, n_jobs=n_jobs, random_state=0,
                         compile=compile, chunk_size=chunk, **schedule)
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        inv.fit(rays, y)  # returns numpy arrays: the device work is finished
        wall = time.perf_counter() - t0
    return {"precision": precision, "compile": compile, "device": device,
            "starts": n_starts, "iterations": inv.n_iter_,
            "wall_s": wall, "start_iterations_per_s": n_starts * inv.n_iter_ / wall,
            "peak_rss_gb": mem.peak_gb,
            "peak_gpu_memory_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None,
            "best_data_rmse_ns": float(inv.data_rmse_.min()),
            "median_data_rmse_ns": float(np.median(inv.data_rmse_))}


def _label(run: dict) -> str:
    return setting_label(run["precision"], run["compile"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=3000,
                        help="linear iterations (multiple of 25: 25 batches per epoch)")
    parser.add_argument("--ref-iterations", type=int, default=300,
                        help="iterations of the per-start reference loop (its rate is "
                             "per iteration, so a few hundred suffice)")
    parser.add_argument("--nl-iterations", type=int, default=750,
                        help="nonlinear iterations of one start (0 to skip)")
    parser.add_argument("--nl-batching", nargs="+", default=["random", "source"],
                        choices=["random", "source"],
                        help="mini-batching of the nonlinear run(s): the study's random "
                             "batches and/or source gathers (one Dijkstra per iteration)")
    parser.add_argument("--nl-backends", nargs="+", default=["numba", "scipy"],
                        choices=["numba", "scipy", "ttcrpy"],
                        help="ShortestPath backends of the nonlinear run(s), side by side "
                             "('numba' is what 'auto', the default, picks)")
    parser.add_argument("--skip-linear", action="store_true",
                        help="only the nonlinear run(s)")
    parser.add_argument("--precisions", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--compile", nargs="+", default=["eager", "compiled"],
                        choices=["eager", "compiled"],
                        help="run (b) with the eager decoder and/or LatentInverter(compile=True)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="torch device of (a) and (b), e.g. 'cuda' (the shortest-path "
                             "operator itself always runs on the CPU)")
    parser.add_argument("--name", default="sgd_speed")
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    allocator = apply_allocator(args)

    prior, prior_name = load_prior()
    grid, rays = survey()
    truth, truth_name = truth_model(prior)
    sr = StraightRay(grid)
    y = sr.traveltimes(slowness(truth), rays)
    A = sr.jacobian(None, rays).toarray()
    log.info("prior: %s; truth: %s; %d rays", prior_name, truth_name, len(rays))

    # (a) reference loop, with torch's default threads and with one thread (on a busy
    # machine OpenMP threads can slow each other down a lot); the faster is the baseline.
    # On a GPU the thread count does not matter: timed once.
    decoder = prior.get_decoder(args.device)
    on_cpu = torch.device(args.device).type == "cpu"
    default_threads = torch.get_num_threads()
    thread_counts = sorted({default_threads, 1}, reverse=True) if on_cpu else [default_threads]
    timings = {}
    for threads in ([] if args.skip_linear else thread_counts):
        torch.set_num_threads(threads)
        reference_loop(decoder, A, y, 5)  # warm-up
        timings[threads] = reference_loop(decoder, A, y, args.ref_iterations)
        log.info("reference loop, %d thread(s): %.1f start-iterations/s", threads,
                 1.0 / timings[threads])
    torch.set_num_threads(default_threads)
    best_threads = min(timings, key=timings.get) if timings else 1
    sec = timings.get(best_threads, float("nan"))
    ref = {"iterations_timed": args.ref_iterations, "s_per_iteration": sec,
           "start_iterations_per_s": 1.0 / sec, "torch_threads": best_threads,
           "start_iterations_per_s_by_threads": {str(k): 1.0 / v for k, v in timings.items()},
           "extrapolated_s_for_run": sec * args.starts * args.iterations}

    # (b) batched
    epochs = max(1, args.iterations // 25)
    runs = []
    for precision in ([] if args.skip_linear else args.precisions):
        for mode in args.compile:
            r = batched_run(prior, sr, rays, y, args.starts, epochs, precision, args.n_jobs,
                            LINEAR, compile=mode == "compiled", device=args.device)
            r["speedup_vs_reference"] = (r["start_iterations_per_s"]
                                         / ref["start_iterations_per_s"])
            log.info("batched %s %s: %s", precision, mode, r)
            runs.append(r)

    nonlinear_runs = []
    batchings = args.nl_batching if args.nl_iterations > 0 else []
    if batchings:  # the shortest-path survey and its data, once for all runs
        _, rays_nl = survey(source_x=0.0, receiver_x=6.5)
        # data as the study simulated them (2 secondary nodes); 3 inside the inversion
        y_nl = ShortestPath(grid, secondary_nodes=2).traveltimes(slowness(truth), rays_nl)
        nl_epochs = max(1, args.nl_iterations // 25)
    for batching in batchings:
        for backend in args.nl_backends:
            sp = ShortestPath(grid, secondary_nodes=3, backend=backend)
            # one start is one chunk: LatentInverter hands the n_jobs cores to the operator
            r = batched_run(prior, sp, rays_nl, y_nl, 1, nl_epochs, "float32", args.n_jobs,
                            {**NONLINEAR, "batching": batching}, device=args.device)
            r["s_per_iteration"] = r["wall_s"] / r["iterations"]
            r["batching"] = batching
            r["backend"] = backend
            log.info("nonlinear: %s", r)
            nonlinear_runs.append(r)
    for r in nonlinear_runs:  # time of the same run with scipy's Dijkstra / this one
        base = [q for q in nonlinear_runs
                if q["batching"] == r["batching"] and q["backend"] == "scipy"]
        r["speedup_vs_scipy"] = base[0]["wall_s"] / r["wall_s"] if base else None

    full = args.starts == 100 and args.iterations == 3000 and not args.skip_linear
    f32 = [r for r in runs if r["precision"] == "float32"]
    # the memory the table shows: host memory on the CPU, GPU memory on a GPU
    memory = "peak_rss_gb" if on_cpu else "peak_gpu_memory_gb"
    not_run = "not measured in this run"
    targets = {
        "float32 >= 10x reference": {_label(r): r["speedup_vs_reference"] >= 10
                                     for r in f32} or not_run,
        "100 starts x 3000 iterations <= 300 s": {_label(r): r["wall_s"] <= 300
                                                   for r in runs} if full else not_run,
        "nonlinear 750 iterations <= 120 s": {
            f"batching={r['batching']}, backend={r['backend']}": r["wall_s"] <= 120
            for r in nonlinear_runs if r["iterations"] == 750} or not_run,
        "peak memory of the 100-start linear run <= 2 GB": (
            {_label(r): None if r[memory] is None else r[memory] <= 2.0 for r in runs}
            if full else not_run),
    }
    payload = {"prior": prior_name, "truth": truth_name, "grid": list(SHAPE),
               "n_rays": len(rays), "n_jobs": args.n_jobs, "device": args.device,
               "allocator": allocator,
               "reference_loop": ref,
               "batched": runs, "nonlinear": nonlinear_runs, "targets": targets,
               "command": command_line(__file__, argv)}
    where = f"{best_threads} thread(s)" if on_cpu else args.device
    rows = [[f"(a) per-start reference loop, {where}", "float32", 1, args.ref_iterations,
             ref["start_iterations_per_s"], 1.0, "-", "-"]]
    rows += [["(b) LatentInverter, " + (f"n_jobs={args.n_jobs}" if on_cpu else args.device)
              + (", compile=True" if r["compile"] else ""), r["precision"], r["starts"],
              r["iterations"], r["start_iterations_per_s"], r["speedup_vs_reference"],
              r["wall_s"], "-" if r[memory] is None else r[memory]]
             for r in runs]
    if args.skip_linear:
        md = ["# Latent SGD speed, shortest-path case (one start)", "",
              f"Prior: {prior_name}. Truth: {truth_name}. Grid 129 x 65, {len(rays)} "
              f"rays. Device: {device_label(args.device)}. Allocator: {allocator}.", ""]
    else:
        md = [f"# Latent SGD speed ({args.starts} starts x {args.iterations} iterations)",
              "", f"Prior: {prior_name}. Truth: {truth_name}. Grid 129 x 65, {len(rays)} "
              f"straight rays, batches of 25. Device: {device_label(args.device)}. "
              f"Allocator: {allocator}.", "",
              md_table(["run", "precision", "starts", "iterations", "start-it/s",
                        "x reference", "wall s",
                        "peak RSS GB" if on_cpu else "peak GPU memory GB"], rows), ""]
    if nonlinear_runs:
        md += ["Nonlinear: ShortestPath (3 secondary nodes; data simulated with 2, as in the "
               "study), 1 start, LatentInverter "
               f"n_jobs={args.n_jobs} (handed to the operator), the study's schedule.", "",
               md_table(["batching", "backend", "iterations", "wall s", "s/iteration",
                         "x scipy", "best data RMSE ns"],
                        [[r["batching"], r["backend"], r["iterations"], r["wall_s"],
                          r["s_per_iteration"],
                          "-" if r["speedup_vs_scipy"] is None else r["speedup_vs_scipy"],
                          r["best_data_rmse_ns"]] for r in nonlinear_runs]), ""]
    md += ["Targets: " + "; ".join(f"{k}: {v}" for k, v in targets.items()), "",
           f"Command: `{payload['command']}`"]
    paths = write_results(args.name, payload, "\n".join(md), study="sgd_speed")
    log.info("wrote %s", ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
