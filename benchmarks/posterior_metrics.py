"""Which metric mixes best at a fixed budget: identity/dense windows against Gauss-Newton.

Issue 27's question behind ``posterior_linear.py``: with at most 40,000 model
evaluations over 16 chains, how should MALA and HMC get their metric (inverse mass
matrix)? All variants run on the same problem from the same starting points, so that
only the metric and the kernel settings differ:

- the reference prior, mc2, the study's straight rays, checked traveltimes + 0.25 x the
  shared noise realisation; noise level given (σ = 0.25 ns) or estimated;
- 16 chains from the truth's encoded code plus N(0, 0.05²) jitter (seed 0), one batch,
  one torch thread, float32; the engine directly (``run_chains``), so no SGD is needed;
- each variant as many iterations as fit the budget after its warm-up and its
  Gauss-Newton evaluations (``2 d`` per estimate).

Variants are given as ``sampler:mass:noise[:L[:jitter[:warmup[:mass_init]]]]``, with
``noise`` ``fix`` or ``est``; e.g. ``mala:gauss-newton:fix`` or
``hmc:dense:est:5:0:120:gauss-newton``.

With ``--hessian``: how far the posterior at σ = 0.25 ns is from its Gauss-Newton
(Laplace) picture. 4 chains from the same starts run 200 + 300 MALA iterations
(Gauss-Newton metric); at each chain's last draw the exact Hessian of ``-log π``
(central differences of the gradient, step 0.01) is compared with the Gauss-Newton
precision by their generalized eigenvalues (all 1 where the two agree; negative where
the posterior is not log-concave).

Usage::

    python benchmarks/posterior_metrics.py                     # the default variants (~30 min)
    python benchmarks/posterior_metrics.py mala:dense:fix mala:gauss-newton:fix --name x
    python benchmarks/posterior_metrics.py --hessian --name posterior_hessian   # ~2 min
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PRIORS, command_line, md_table, require_shared,  # noqa: E402
                     survey, write_results)

from skvaeinv import VAEPrior  # noqa: E402
from skvaeinv._latent_estimator import check_petrophysics  # noqa: E402
from skvaeinv.engine import LatentObjective  # noqa: E402
from skvaeinv.engine.mcmc import SamplerConfig, convergence_diagnostics, run_chains  # noqa: E402
from skvaeinv.engine.mcmc.adaptation import gauss_newton_updates  # noqa: E402
from skvaeinv.forward import StraightRay, TorchForward  # noqa: E402

log = logging.getLogger("posterior_metrics")
STUDY = "posterior_linear"
NOISE_SD = 0.25
DEFAULT_VARIANTS = [
    "mala:dense:fix", "mala:dense:fix:1:0:300:gauss-newton", "mala:gauss-newton:fix",
    "hmc:dense:est", "hmc:dense:est:5:0:120", "hmc:gauss-newton:est",
    "hmc:dense:est:5:0:200:gauss-newton", "hmc:dense:est:5:0:120:gauss-newton",
    "mala:gauss-newton:est"]


def parse_variant(text: str) -> dict:
    """``sampler:mass:noise[:L[:jitter[:warmup[:mass_init]]]]`` as SamplerConfig fields."""
    parts = text.split(":")
    if len(parts) < 3 or parts[2] not in ("fix", "est"):
        raise SystemExit(f"variant {text!r}: expected sampler:mass:fix|est[:L[:jitter"
                         "[:warmup[:mass_init]]]]")
    sampler, mass, noise = parts[:3]
    hmc = sampler == "hmc"
    return {"sampler": sampler, "mass": mass, "estimate": noise == "est",
            "n_leapfrog": int(parts[3]) if len(parts) > 3 and hmc else (5 if hmc else 1),
            "step_jitter": float(parts[4]) if len(parts) > 4 else 0.0,
            "n_warmup": int(parts[5]) if len(parts) > 5 else (200 if hmc else 300),
            "mass_init": parts[6] if len(parts) > 6 else "identity"}


def run_variant(objective, z0, v: dict, budget: int, seed: int) -> dict:
    n, dim = z0.shape
    config = SamplerConfig(sampler=v["sampler"], mass=v["mass"], mass_init=v["mass_init"],
                           n_warmup=v["n_warmup"], n_leapfrog=v["n_leapfrog"],
                           step_jitter=v["step_jitter"],
                           noise_var="estimate" if v["estimate"] else NOISE_SD ** 2)
    n_iter = (budget // n - 1 - 2 * dim * gauss_newton_updates(config)) // v["n_leapfrog"]
    config = replace(config, n_samples=n_iter - v["n_warmup"])
    generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
    t0 = time.perf_counter()
    res = run_chains(objective, z0, generators, config)
    wall = time.perf_counter() - t0
    diag = convergence_diagnostics(res.samples)
    return {**v, "n_samples": int(n_iter - v["n_warmup"]), "wall_s": wall,
            "n_forward_evals": int(res.n_forward_evals),
            "n_gradient_evals": int(res.n_gradient_evals),
            "acceptance": float(res.acceptance_rate.mean()),
            "step_size_median": float(np.median(res.step_size)),
            "rhat_max": float(np.nanmax(diag.rhat)),
            "ess_bulk_min": float(np.nanmin(diag.ess_bulk)),
            "ess_bulk_median": float(np.nanmedian(diag.ess_bulk)),
            "ess_per_1000_evals": 1000 * float(np.nanmin(diag.ess_bulk)) / res.n_forward_evals}


def hessian_check(objective, z0: np.ndarray, seed: int, step: float = 1e-2) -> dict:
    """Generalized eigenvalues of the exact Hessian against the Gauss-Newton precision."""
    from skvaeinv.engine.mcmc import LatentPosterior

    n, dim = 4, z0.shape[1]
    generators = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]
    res = run_chains(objective, z0[:n], generators, SamplerConfig(
        sampler="mala", mass="gauss-newton", n_warmup=200, n_samples=300,
        noise_var=NOISE_SD ** 2))
    target = LatentPosterior(objective)
    z = torch.as_tensor(res.samples[:, -1])
    beta = torch.ones(n, dtype=torch.float64)
    noise_var = torch.full((n,), NOISE_SD ** 2, dtype=torch.float64)
    gn = target.gauss_newton(z, noise_var, beta)
    exact = torch.zeros_like(gn)
    for j in range(dim):
        e = torch.zeros(dim, dtype=torch.float64)
        e[j] = step
        up = target.state(z + e, noise_var, True).grad_log_density(beta)
        down = target.state(z - e, noise_var, True).grad_log_density(beta)
        exact[:, :, j] = -(up - down) / (2 * step)
    exact = 0.5 * (exact + exact.transpose(1, 2))
    out = []
    for b in range(n):
        factor = torch.linalg.cholesky(gn[b])
        left = torch.linalg.solve_triangular(factor, exact[b], upper=False)
        whitened = torch.linalg.solve_triangular(factor, left.T, upper=False)
        out.append(torch.linalg.eigvalsh(0.5 * (whitened + whitened.T)).tolist())
    state = target.state(z, noise_var, False)
    rms = torch.sqrt(state.sse / target.n_data).tolist()
    return {"chains": n, "step": step, "acceptance": res.acceptance_rate.tolist(),
            "data_rmse_ns": rms, "generalized_eigenvalues": out}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", default=DEFAULT_VARIANTS)
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--max-evals", type=int, default=40_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--name", default="posterior_metrics")
    ap.add_argument("--hessian", action="store_true",
                    help="only the exact-Hessian against Gauss-Newton check")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    torch.set_num_threads(1)
    shared = require_shared()
    grid, rays = survey()
    ref = np.load(shared / "reference" / "straight_ray_traveltimes.npz")
    truth = np.load(shared / "truth" / "mc2.npy")
    d = ref["mc2"] + NOISE_SD * np.load(shared / "truth" / "noise_realization.npy")
    prior = VAEPrior.load(args.prior, device="cpu")
    cpu = torch.device("cpu")
    objective = LatentObjective(
        prior.get_decoder(cpu), TorchForward(StraightRay(grid), rays, device=cpu,
                                             dtype=torch.float32), d, cpu,
        petrophysics=check_petrophysics(None, prior.image_shape_, cpu))
    z0 = (np.repeat(prior.transform(truth[None]), args.chains, axis=0)
          + 0.05 * np.random.default_rng(0).normal(size=(args.chains, prior.latent_dim)))
    if args.hessian:
        check = hessian_check(objective, z0, args.seed)
        rows = [[b, f"{check['data_rmse_ns'][b]:.3f}", f"{min(ev):.2f}",
                 f"{np.median(ev):.2f}", f"{max(ev):.2f}", sum(e < 0 for e in ev)]
                for b, ev in enumerate(check["generalized_eigenvalues"])]
        md = (f"# Exact Hessian against Gauss-Newton, mc2, straight rays, σ = {NOISE_SD} ns\n\n"
              f"Command: `{command_line(__file__, argv)}`\n\nPrior `{Path(args.prior).name}`; "
              "4 chains, 200 + 300 MALA iterations (Gauss-Newton metric) from the encoded "
              "truth + jitter; at each chain's last draw the generalized eigenvalues of the "
              "exact Hessian of -log posterior (differences of the gradient, step 0.01) "
              "against the Gauss-Newton precision (1 where they agree).\n\n"
              + md_table(["chain", "data RMSE (ns)", "min eigenvalue", "median", "max",
                          "negative"], rows) + "\n")
        write_results(args.name, {"command": command_line(__file__, argv),
                                  "prior": Path(args.prior).name, **check}, md, study=STUDY)
        print(md)
        return 0
    runs = []
    for text, v in zip(args.variants, variants):
        r = run_variant(objective, z0, v, args.max_evals, args.seed)
        r["variant"] = text
        runs.append(r)
        log.info("%s: %.0f s, %d evals, accept %.2f, step %.3f, R-hat %.3f, ESS %.0f "
                 "(median %.0f)", text, r["wall_s"], r["n_forward_evals"], r["acceptance"],
                 r["step_size_median"], r["rhat_max"], r["ess_bulk_min"], r["ess_bulk_median"])
    rows = [[r["sampler"].upper(), r["mass"], r["mass_init"],
             "estimated" if r["estimate"] else f"{NOISE_SD} ns",
             r["n_leapfrog"] if r["sampler"] == "hmc" else "-", r["step_jitter"],
             f"{r['n_warmup']} + {r['n_samples']}", r["n_forward_evals"], r["acceptance"],
             r["step_size_median"], r["rhat_max"], r["ess_bulk_min"], r["ess_bulk_median"],
             r["ess_per_1000_evals"], r["wall_s"]] for r in runs]
    md = (f"# Metrics at a fixed budget, mc2, straight rays (issue 27)\n\nCommand: "
          f"`{command_line(__file__, argv)}`\n\nPrior `{Path(args.prior).name}`; "
          f"{args.chains} chains from the encoded truth + N(0, 0.05²) jitter, one batch, "
          f"one thread; at most {args.max_evals:,} model evaluations per variant (the "
          "Gauss-Newton metric's included); seed "
          f"{args.seed} for every variant.\n\n"
          + md_table(["sampler", "mass", "mass_init", "noise", "L", "jitter",
                      "warm-up + kept", "model evals", "accept", "step", "max R-hat",
                      "min bulk ESS", "median bulk ESS", "ESS / 1,000 evals", "wall (s)"],
                     rows) + "\n")
    write_results(args.name, {"command": command_line(__file__, argv),
                              "prior": Path(args.prior).name, "chains": args.chains,
                              "max_evals": args.max_evals, "runs": runs}, md, study=STUDY)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
