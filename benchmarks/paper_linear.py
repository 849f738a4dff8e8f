"""Reproduce the reference study's straight-ray (linear) results with skvaeinv.

For each truth model (mc1-mc3, mv1-mv3 in ../shared/data/truth) and each case
(noise-free, noisy with the shared realisation x 0.25 ns): simulate straight-ray data
with our own operator on the study's survey (sources x = 0.01 m, receivers x = 6.49 m,
depths 0.5..12.5 m, 625 rays), invert from ``--starts`` random starts with the study's
schedule (120 epochs x 25 batches of 25 rays, lr 1e-2 x 0.95 per epoch, ring weight
10 x 0.999 per iteration), and report success against the threshold

    threshold = best RMSE reached by the same schedule started from
                prior.transform(truth) (``--ref-starts`` runs) x 1.1

(for noisy data that RMSE already holds the noise; "the level reachable from the true
model's code", design note section 1; until 2026-12-07 the median of the runs, which one
diverging run from the truth's code raised: the JSON keeps that rule's threshold and
rate as ``threshold_median_ns`` / ``success_rate_median``), and, for the noise-free cases,
against the study's own acceptance levels (design note: mc1 0.606, mc2 0.998, mc3 1.096,
mv1 0.524, mv2 0.958, mv3 0.734 ns; mv1-mv3 were drawn from the study's VAE, so only its
decoder can reach theirs).

Also (flags): the ablation of the study on one case, and a GridSearchCV over
lr_decay x reg_decay on held-out rays.

Usage (the committed results were made with the command lines in the files of
benchmarks/results/paper_linear/)::

    python benchmarks/paper_linear.py --starts 100 --cases free noisy
    python benchmarks/paper_linear.py --models mc2 --starts 20 --ablation --gridsearch \\
        --name paper_linear_ablation
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from joblib import effective_n_jobs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (command_line, PRIORS, SHARED, md_table, require_shared,  # noqa: E402
                     study_dir, survey, write_results)

from skvaeinv import LatentInverter, VAEPrior  # noqa: E402
from skvaeinv.forward import StraightRay  # noqa: E402
from skvaeinv.inverter import reference_schedule  # noqa: E402
from skvaeinv.petrophysics import LinearVelocity  # noqa: E402

log = logging.getLogger("paper_linear")
MODELS = ["mc1", "mc2", "mc3", "mv1", "mv2", "mv3"]
NOISE_SD = 0.25
#: The study's acceptance levels (data RMSE, ns) for the noise-free linear case.
STUDY_THRESHOLDS = {"mc1": 0.606, "mc2": 0.998, "mc3": 1.096,
                    "mv1": 0.524, "mv2": 0.958, "mv3": 0.734}


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def make_inverter(prior, forward, settings, args, **over):
    kw = {"n_jobs": args.n_jobs, "device": args.device, "chunk_size": args.chunk_size,
          "precision": args.precision, "random_state": args.seed,
          **args.schedule, **settings, **over}
    return LatentInverter(prior, forward, **kw)


def reference_rmse(prior, forward, rays, d, truth, settings, args) -> float:
    """RMSE reached by the schedule started from the truth's own latent code."""
    z_true = prior.transform(truth[None])
    # the few reference starts are spread over all workers
    chunk = -(-args.ref_starts // effective_n_jobs(args.n_jobs))
    inv = make_inverter(prior, forward, settings, args, n_starts=args.ref_starts,
                        init=np.repeat(z_true, args.ref_starts, axis=0), chunk_size=chunk)
    inv.fit(rays, d)
    return inv.data_rmse_


def run_case(prior, forward, rays, truth, d, case, name, settings, args, figure=True,
             reference=None) -> dict:
    """One model and case. ``reference``: the reference RMSEs to use (e.g. the method's,
    for ablation variants), instead of running the reference starts with ``settings``."""
    t0 = time.perf_counter()
    ref_runs = (reference_rmse(prior, forward, rays, d, truth, settings, args)
                if reference is None else reference)
    # the level reachable from the truth's code: its best run, so that one run the
    # schedule throws off from the truth does not raise the bar (a fit to noisy data
    # already holds the noise)
    ref = float(np.min(ref_runs))
    threshold = ref * 1.1
    threshold_median = float(np.median(ref_runs)) * 1.1
    study = (STUDY_THRESHOLDS.get(name)
             if case == "free" and args.physics == "straight rays" else None)
    t1 = time.perf_counter()
    init = None
    if args.warm is not None:
        # two-stage inversion: straight rays from the random starts, then bent rays
        # from where they ended (the warm stage's time is included in wall_s)
        warm_forward, warm_rays, warm_schedule = args.warm
        pre = make_inverter(prior, warm_forward, {}, args, n_starts=args.starts,
                            **warm_schedule)
        init = pre.fit(warm_rays, d).latents_
    inv = make_inverter(prior, forward, settings, args, n_starts=args.starts,
                        acceptance_threshold=threshold, init=init)
    inv.fit(rays, d)
    wall = time.perf_counter() - t1
    ens = inv.ensemble(threshold)

    def success(level: float) -> float:
        return float(np.mean(inv.data_rmse_ <= level))

    res = {
        "model": name, "case": case, "starts": args.starts,
        "reference_rmse_ns": ref, "threshold_ns": threshold,
        "success_rate": success(threshold),
        "threshold_rule": "1.1 x best reference run",
        "threshold_median_ns": threshold_median,
        "success_rate_median": success(threshold_median),
        "study_threshold_ns": study,
        "success_rate_study": None if study is None else success(study),
        "data_rmse_median_ns": float(np.median(inv.data_rmse_)),
        "data_rmse_best_ns": float(inv.data_rmse_.min()),
        "model_rmse_best": rmse(inv.model_, truth),
        "model_rmse_ensemble_mean": rmse(ens.mean, truth) if ens.n_accepted else None,
        "model_rmse_truth_code": rmse(prior.inverse_transform(prior.transform(truth[None]))[0],
                                      truth),
        "wall_s": wall, "wall_s_with_reference": time.perf_counter() - t0,
        "settings": {**args.schedule, **settings},
        "warm_start": None if init is None else {"forward": "straight rays",
                                                 **args.warm[2]},
        "per_start": {"data_rmse_ns": inv.data_rmse_.tolist(),
                      "model_rmse": [rmse(m, truth) for m in inv.models_],
                      "z_norm": np.linalg.norm(inv.latents_, axis=1).tolist(),
                      "reference_data_rmse_ns": np.asarray(ref_runs).tolist()},
    }
    log.info("%s %s: success %.0f %% (thr %.3f), best %.3f ns, model RMSE %.3f, %.0f s",
             name, case, 100 * res["success_rate"], threshold, res["data_rmse_best_ns"],
             res["model_rmse_best"], wall)
    if figure:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from skvaeinv.plotting import plot_inversion

        fig = plot_inversion(inv, truth=truth, threshold=threshold)
        fig.suptitle(f"{name}, {args.physics}, {case}: {ens.n_accepted}/{args.starts} "
                     f"accepted", fontsize=10)
        fig.savefig(study_dir(args.study_folder) / f"{args.name}_{name}_{case}.png", dpi=70)
        plt.close(fig)
    return res


def ablation(prior, forward, rays, truth, d, args, reference) -> list[dict]:
    """The study's ablation: what each ingredient buys (3000 iterations each)."""
    n_it = args.schedule["epochs"] * 25
    variants = {
        "full batch, constant lr, no reg": dict(batch_size=625, epochs=n_it,
                                                lr=args.schedule["lr"] * 25 / 625,
                                                lr_decay=1.0, reg=None),
        "mini-batches only (constant lr, no reg)": dict(lr_decay=1.0, reg=None),
        "mini-batches + origin reg + decay": dict(reg="origin", reg_weight=1.0),
        "mini-batches + ring + decay (the method)": dict(),
    }
    out = []
    # one threshold for every variant: the level the method reaches from the truth's code
    for label, settings in variants.items():
        r = run_case(prior, forward, rays, truth, d, "free", "mc2", settings, args,
                     figure=False, reference=reference)
        r["variant"] = label
        out.append(r)
    return out


def gridsearch(prior, forward, rays, truth, d, args, reference) -> dict:
    from sklearn.model_selection import GridSearchCV, KFold

    inv = make_inverter(prior, forward, {}, args, n_starts=args.gs_starts)
    grid = {"lr_decay": [0.9, 0.95, 0.98], "reg_decay": [0.99, 0.999]}
    t0 = time.perf_counter()
    search = GridSearchCV(inv, grid, cv=KFold(3, shuffle=True, random_state=0), n_jobs=1)
    search.fit(rays, d)
    chosen = search.best_params_
    # judged against the method's threshold, as the ablation variants are
    res = run_case(prior, forward, rays, truth, d, "free", "mc2", chosen, args, figure=False,
                   reference=reference)
    return {"chosen": chosen, "cv_results": {k: np.asarray(v).tolist() for k, v in
                                             search.cv_results_.items() if k.startswith(
                                                 ("mean_test", "std_test", "param_"))},
            "wall_s": time.perf_counter() - t0, "chosen_run": res}


def parse_args(argv, doc: str, *, starts: int, name: str, schedules: tuple = ("straight",),
               warm_start_choices: tuple = ()) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--cases", nargs="+", default=["free", "noisy"], choices=["free", "noisy"])
    ap.add_argument("--starts", type=int, default=starts)
    ap.add_argument("--ref-starts", type=int, default=4,
                    help="starts from the truth's code (the best RMSE x 1.1 is the "
                         "threshold)")
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--gridsearch", action="store_true")
    ap.add_argument("--gs-starts", type=int, default=5)
    ap.add_argument("--skip-main", action="store_true", help="only ablation / grid search")
    ap.add_argument("--schedule", default=schedules[0], choices=list(schedules),
                    help="skvaeinv.inverter.reference_schedule(name)")
    ap.add_argument("--batching", default="random", choices=["random", "source"],
                    help="mini-batches: the study's random ones, or source gathers")
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--chunk-size", type=int, default=None,
                    help="starts per batch (default 25); e.g. starts / cores to use all cores")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=name)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="override schedule settings, e.g. --set epochs=60 lr_decay=0.9")
    if warm_start_choices:
        ap.add_argument("--warm-start", default=None, choices=list(warm_start_choices),
                        help="start each random start with another physics first")
    args = ap.parse_args(argv)
    args.argv = argv
    args.warm = None  # (forward, rays, schedule) of a first stage, set by a caller
    args.overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            args.overrides[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            args.overrides[key] = None if value == "None" else value
    return args


def main(argv=None) -> int:
    args = parse_args(argv, __doc__, starts=100, name="paper_linear")
    grid, rays = survey()
    return run_benchmark(args, rays, data_forward=StraightRay(grid),
                         forward=StraightRay(grid),
                         physics="straight rays", script="paper_linear.py")


def main_table(payload: dict, prior, rows: list[list]) -> list[str]:
    """Markdown header and table of the main cases."""
    md = [f"# Reference study, {payload['physics']}\n\nCommand: "
          f"`{payload['command']}`\n\nPrior: `{payload['prior']}` "
          f"({prior.n_images_seen_} training crops). Success: data RMSE of the kept iterate "
          "<= threshold (the best RMSE reached from the truth's own code x 1.1); noise-free "
          "cases also against the study's acceptance level. Last column: success against "
          "1.1 x the median of the runs from the truth's code, the rule of the files "
          "before 2026-12-07.\n"]
    if rows:
        md.append(md_table(["model", "case", "success", "threshold (ns)",
                            "success at study level (ns)", "median RMSE (ns)",
                            "best RMSE (ns)", "model RMSE best", "model RMSE ens. mean",
                            "model RMSE of truth's code", "wall (s)",
                            "success, median rule (threshold ns)"], rows))
    return md


def run_benchmark(args, rays, *, data_forward, forward, physics, script) -> int:
    """Every case of one physics; writes results/<study>/<name>.json/.md and figures,
    the study folder being the script's name (paper_linear, paper_nonlinear)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.study_folder = Path(script).stem
    args.schedule = {**reference_schedule(args.schedule), "batching": args.batching,
                     **args.overrides}
    args.physics = physics
    prior = VAEPrior.load(args.prior, device=args.device)
    h = LinearVelocity()
    noise = np.load(require_shared() / "truth" / "noise_realization.npy")
    payload = {"command": command_line(script, args.argv),
               "prior": Path(args.prior).name, "prior_images_seen": prior.n_images_seen_,
               "physics": physics, "cases": []}
    rows = []
    for name in ([] if args.skip_main else args.models):
        truth = np.load(SHARED / "truth" / f"{name}.npy")
        d_free = data_forward.traveltimes(h(truth), rays)
        for case in args.cases:
            d = d_free if case == "free" else d_free + NOISE_SD * noise
            r = run_case(prior, forward, rays, truth, d, case, name, {}, args)
            payload["cases"].append(r)
            study = ("-" if r["study_threshold_ns"] is None else
                     f"{100 * r['success_rate_study']:.0f} % ({r['study_threshold_ns']})")
            rows.append([name, case, f"{100 * r['success_rate']:.0f} %", r["threshold_ns"],
                         study, r["data_rmse_median_ns"], r["data_rmse_best_ns"],
                         r["model_rmse_best"], r["model_rmse_ensemble_mean"] or float("nan"),
                         r["model_rmse_truth_code"], r["wall_s"],
                         f"{100 * r['success_rate_median']:.0f} % "
                         f"({r['threshold_median_ns']:.4g})"])
            # keep the finished cases if a long run is interrupted
            write_results(args.name, payload, "\n".join(main_table(payload, prior, rows)),
                          study=args.study_folder)
    md = main_table(payload, prior, rows)
    mc2 = np.load(SHARED / "truth" / "mc2.npy")
    d_mc2 = data_forward.traveltimes(h(mc2), rays)
    if args.ablation or args.gridsearch:
        # the method's reference RMSEs on mc2 (noise-free) judge both: those of the main
        # run when it had that case, else run once here
        reference = next((c["per_start"]["reference_data_rmse_ns"] for c in payload["cases"]
                          if c["model"] == "mc2" and c["case"] == "free"), None)
        if reference is None:
            reference = reference_rmse(prior, forward, rays, d_mc2, mc2, {}, args)
    if args.ablation:
        ab = ablation(prior, forward, rays, mc2, d_mc2, args, reference)
        payload["ablation"] = ab
        md.append("\n## Ablation (mc2, noise-free)\n")
        md.append(f"Threshold for every variant: {ab[0]['threshold_ns']:.4g} ns (the "
                  "method's RMSE from the truth's code x 1.1).\n")
        md.append(md_table(["variant", "success", "median RMSE (ns)", "best RMSE (ns)",
                            "model RMSE best", "wall (s)"],
                           [[r["variant"], f"{100 * r['success_rate']:.0f} %",
                             r["data_rmse_median_ns"], r["data_rmse_best_ns"],
                             r["model_rmse_best"], r["wall_s"]] for r in ab]))
    if args.gridsearch:
        gs = gridsearch(prior, forward, rays, mc2, d_mc2, args, reference)
        payload["gridsearch"] = gs
        c = gs["chosen_run"]
        md.append("\n## GridSearchCV over lr_decay x reg_decay (mc2, noise-free, 3-fold on "
                  "rays)\n")
        md.append(f"Chosen: `{gs['chosen']}` -> success {100 * c['success_rate']:.0f} %, "
                  f"model RMSE best {c['model_rmse_best']:.3f} "
                  f"(search {gs['wall_s']:.0f} s)\n")
    write_results(args.name, payload, "\n".join(md), study=args.study_folder)
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
