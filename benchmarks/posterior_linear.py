"""Posterior sampling of mc2 with straight rays: pCN, MALA and HMC against the SGD ensemble.

Issue 27's benchmark. The reference prior (``benchmarks/priors/reference_prior.skv``),
the truth mc2, the study's 625-ray straight-ray survey with the checked traveltimes
(``../shared/data/reference/straight_ray_traveltimes.npz``, ``mc2``) plus the shared
noise realisation x 0.25 ns. In one run:

1. (optional, ``--jobs-probe``) time one MALA iteration of the 16 chains in one batch
   (``n_jobs=1``) and in two workers (``n_jobs=2, chunk_size=8``); the faster layout
   runs the chains unless ``--n-jobs``/``--chunk-size`` are given;
2. the SGD ensemble: ``LatentInverter`` with 16 starts and the study's straight-ray
   schedule; its ensemble (starts with data RMSE <= ``--threshold-factor`` x the best)
   gives the comparison's channel probability, and its solutions start the chains
   (``init=inverter``; ``--init-epochs`` runs a separate, shorter SGD for that);
3. the gradient samplers (``LatentSampler``, 16 chains each) with the given noise level
   (``noise_std=0.25``): MALA (dense mass matrix by default) and HMC, each within
   ``--max-evals`` gradient evaluations over all chains;
4. pCN with as many model evaluations as the best gradient sampler (highest min bulk
   ESS per model evaluation) made;
5. the samplers of ``--estimate`` (default: the best gradient sampler; pCN too) again
   with the noise level estimated (``noise_std="estimate"``).

Targets are checked per noise model: the best gradient sampler of the setting against
pCN in the same setting.

Reported per run: decoder evaluations, wall time of ``fit`` (its decoding of every draw
for the pixel summaries included), acceptance, max R-hat, min bulk ESS, ESS per 1,000
model evaluations (decoder and operator, with or without a gradient), posterior-mean model RMSE
against the truth and the calibration of the channel probability against the truth's
channels (``truth > 0.5``): Brier score ``mean((p - truth)^2)`` and the expected
calibration error over 10 equal-width bins (design note, section 5). Figures: a
reliability diagram, the channel probabilities side by side and ``plot_posterior`` of
the best gradient sampler (both noise models).

Optional (``--bent``): a short shortest-path run (8 MALA chains, mc2, 3 secondary nodes,
sensors at x = 0 and 6.5 m, pyGIMLi's ``mc2_sec3`` traveltimes plus the same noise),
warm-started from a few epochs of the ``bent-long`` SGD schedule.

Usage::

    python benchmarks/posterior_linear.py                 # the full run (~15-20 min, 2 cores)
    python benchmarks/posterior_linear.py --quick --name posterior_linear_quick
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PRIORS, command_line, md_table, require_shared,  # noqa: E402
                     study_dir, survey, write_results)

from skvaeinv import LatentInverter, LatentSampler, VAEPrior  # noqa: E402
from skvaeinv.forward import StraightRay  # noqa: E402
from skvaeinv.engine.mcmc import MASSES, SamplerConfig  # noqa: E402
from skvaeinv.engine.mcmc.adaptation import gauss_newton_updates  # noqa: E402
from skvaeinv.inverter import reference_schedule  # noqa: E402

log = logging.getLogger("posterior_linear")
STUDY = "posterior_linear"
NOISE_SD = 0.25
N_BINS = 10
#: Targets of issue 27.
TARGET_RHAT, TARGET_ESS, TARGET_EVALS, TARGET_RATIO, TARGET_ECE = 1.01, 400, 40_000, 10.0, 0.05


# ---------------------------------------------------------------------- metrics
def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def calibration(p: np.ndarray, truth: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Brier score and expected calibration error of channel probabilities ``p``.

    Channel = ``truth > 0.5``; bins ``[k/n, (k+1)/n)``, the last one closed.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    t = (np.asarray(truth) > 0.5).astype(np.float64).ravel()
    b = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(b, weights=p, minlength=n_bins) / count
        freq = np.bincount(b, weights=t, minlength=n_bins) / count
    used = count > 0
    ece = float(np.sum(count[used] / p.size * np.abs(mean_p[used] - freq[used])))
    return {"brier": float(np.mean((p - t) ** 2)), "ece": ece,
            "bin_count": count.astype(int).tolist(),
            "bin_mean_p": [None if not u else float(v) for u, v in zip(used, mean_p)],
            "bin_frequency": [None if not u else float(v) for u, v in zip(used, freq)],
            "channel_fraction": float(t.mean())}


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:   # pragma: no cover
        return []


# ---------------------------------------------------------------------- stages
def jobs_probe(prior, forward, rays, d, z0, args) -> dict:
    """Seconds per MALA iteration of the chains: one batch against two workers.

    Each chunk of chains runs on one torch thread, so one batch uses one core and two
    workers both; but the two workers each pool their own chunk's warm-up draws for the
    mass matrix (8 chains instead of 16), which changes the results.
    """
    # every chunk runs on one torch thread (skvaeinv._parallel.chunk_context): one batch
    # uses one core, two workers use both
    layouts = {"n_jobs=1 (one batch, one core)": dict(n_jobs=1, chunk_size=None),
               f"n_jobs=2, chunk_size={args.chains // 2} (two workers, one core each)":
                   dict(n_jobs=2, chunk_size=args.chains // 2)}
    n_short, n_long = 5, 5 + args.probe_iterations
    out = {name: [] for name in layouts}

    def fit_time(n, kw):
        s = LatentSampler(prior, forward, sampler="mala", n_chains=args.chains, n_warmup=0,
                          n_samples=n, noise_std=NOISE_SD, init=z0, device="cpu",
                          precision=args.precision, random_state=args.seed, **kw)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.fit(rays, d)
        return time.perf_counter() - t0

    for kw in layouts.values():   # start the workers once before timing
        fit_time(2, kw)
    for _ in range(args.probe_repeats):   # alternating, best of the repeats
        for name, kw in layouts.items():
            out[name].append((fit_time(n_long, kw) - fit_time(n_short, kw))
                             / args.probe_iterations)
    best = {name: float(min(v)) for name, v in out.items()}
    chosen = min(best, key=best.get)
    log.info("jobs probe: %s", ", ".join(f"{k}: {1000 * v:.1f} ms/it" for k, v in
                                         best.items()))
    return {"seconds_per_iteration": best, "all": out, "chosen": chosen,
            "kwargs": layouts[chosen], "iterations": args.probe_iterations,
            "loadavg": loadavg()}


def run_sgd(prior, forward, rays, d, truth, args, epochs=None) -> tuple:
    schedule = reference_schedule("straight")
    if epochs is not None:
        schedule["epochs"] = epochs
    inv = LatentInverter(prior, forward, n_starts=args.starts, n_jobs=args.sgd_n_jobs,
                         chunk_size=args.sgd_chunk_size, device="cpu",
                         precision=args.precision, random_state=args.seed, **schedule)
    t0 = time.perf_counter()
    inv.fit(rays, d)
    wall = time.perf_counter() - t0
    threshold = float(args.threshold_factor * np.nanmin(inv.data_rmse_))
    ens = inv.ensemble(threshold)
    res = {"epochs": schedule["epochs"], "schedule": schedule, "starts": args.starts,
           "wall_s": wall, "threshold_ns": threshold,
           "threshold_rule": f"{args.threshold_factor} x best data RMSE",
           "n_accepted": int(ens.n_accepted), "accepted": ens.accepted.tolist(),
           "data_rmse_ns": inv.data_rmse_.tolist(),
           "data_rmse_best_ns": float(np.nanmin(inv.data_rmse_)),
           "model_rmse_best": rmse(inv.model_, truth),
           "model_rmse_ensemble_mean": rmse(ens.mean, truth),
           "model_rmse_per_start": [rmse(m, truth) for m in inv.models_],
           "calibration": calibration(ens.channel_probability, truth),
           "loadavg": loadavg()}
    log.info("SGD (%d epochs): %.0f s, best data RMSE %.3f ns, %d/%d accepted at %.3f ns, "
             "Brier %.4f, ECE %.4f", schedule["epochs"], wall, res["data_rmse_best_ns"],
             ens.n_accepted, args.starts, threshold, res["calibration"]["brier"],
             res["calibration"]["ece"])
    return inv, ens, res


def chain_init(inv, ens, n_chains):
    """``init=inverter`` when every start is accepted, else the accepted starts' codes
    (what ``init=inverter`` gives for an inverter fitted with that threshold)."""
    if ens.n_accepted == len(inv.data_rmse_):
        return inv
    z = inv.latents_[ens.accepted]
    return z[np.arange(n_chains) % len(z)]


def run_sampler(label, prior, forward, rays, d, truth, init, args, layout, *, sampler,
                n_warmup, n_samples, thin=1, noise_std=NOISE_SD, mass=None,
                n_leapfrog=10, step_jitter=0.0, mass_init="identity") -> tuple:
    s = LatentSampler(prior, forward, sampler=sampler, n_chains=args.chains,
                      n_warmup=n_warmup, n_samples=n_samples, thin=thin, mass=mass,
                      n_leapfrog=n_leapfrog, step_jitter=step_jitter, mass_init=mass_init,
                      noise_std=noise_std,
                      init=init, device="cpu",
                      precision=args.precision, random_state=args.seed, **layout)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.fit(rays, d)
    wall = time.perf_counter() - t0
    evals = s.n_forward_evals_   # every evaluation of decoder and operator
    ess, rhat = float(np.nanmin(s.ess_bulk_)), float(np.nanmax(s.rhat_))
    res = {"label": label, "sampler": sampler, "mass": mass, "mass_init": mass_init,
           "n_leapfrog": n_leapfrog if sampler == "hmc" else None,
           "step_jitter": step_jitter if sampler == "hmc" else None,
           "noise_std": noise_std, "chains": args.chains, "n_warmup": n_warmup,
           "n_samples": n_samples, "thin": thin, "layout": layout,
           "n_forward_evals": int(s.n_forward_evals_),
           "n_gradient_evals": int(s.n_gradient_evals_), "wall_s": wall,
           "acceptance_mean": float(s.acceptance_rate_.mean()),
           "acceptance_per_chain": s.acceptance_rate_.tolist(),
           "step_size_median": float(np.median(s.step_size_)),
           "rhat_max": rhat, "ess_bulk_min": ess,
           "ess_bulk_median": float(np.nanmedian(s.ess_bulk_)),
           "rhat": s.rhat_.tolist(), "ess_bulk": s.ess_bulk_.tolist(),
           "ess_per_1000_evals": 1000 * ess / evals,
           "evals_counted": "model",
           "model_rmse_posterior_mean": rmse(s.posterior_mean_, truth),
           "data_rmse_posterior_mean_ns": rmse(s.predict(rays), d),
           "posterior_std_mean": float(s.posterior_std_.mean()),
           "calibration": calibration(s.channel_probability_, truth),
           "chains_report": chain_report(s.samples_, s.log_posterior_),
           "warnings": [str(w.message) for w in caught], "loadavg": loadavg()}
    if s.noise_std_ is not None:
        q = np.quantile(s.noise_std_, [0.05, 0.5, 0.95])
        res["noise_std_estimate"] = {"mean": float(s.noise_std_.mean()), "q05": float(q[0]),
                                     "median": float(q[1]), "q95": float(q[2])}
    log.info("%s: %.0f s, %d grad / %d fwd evals, accept %.2f, R-hat %.3f, ESS %.0f "
             "(%.2f per 1000 %s), model RMSE %.4f, Brier %.4f, ECE %.4f%s", label, wall,
             s.n_gradient_evals_, s.n_forward_evals_, res["acceptance_mean"], rhat, ess,
             res["ess_per_1000_evals"], res["evals_counted"],
             res["model_rmse_posterior_mean"], res["calibration"]["brier"],
             res["calibration"]["ece"],
             "" if s.noise_std_ is None else
             f", noise {res['noise_std_estimate']['median']:.3f} ns")
    return s, res


def diagnostics(samples: np.ndarray) -> tuple[float, float]:
    """Max R-hat and min bulk ESS of draws ``(chains, draws, dim)``."""
    from skvaeinv.engine.mcmc import convergence_diagnostics

    diag = convergence_diagnostics(samples)
    return float(np.nanmax(diag.rhat)), float(np.nanmin(diag.ess_bulk))


def chain_report(samples: np.ndarray, log_posterior: np.ndarray) -> dict:
    """What tells a slow start from separate modes: each chain's log-posterior level,
    the diagnostics of the second half of the draws, and with the most outlying chain
    left out."""
    n = samples.shape[1]
    lp_mean, lp_sd = log_posterior.mean(1), log_posterior.std(1)
    half = lp_mean[None] if n < 2 else log_posterior[:, : n // 2].mean(1)
    out = {"log_posterior_chain_mean": lp_mean.tolist(),
           "log_posterior_chain_sd": lp_sd.tolist(),
           "log_posterior_first_half_mean": np.atleast_1d(half).tolist(),
           "log_posterior_spread_over_sd": float((lp_mean.max() - lp_mean.min())
                                                 / max(np.median(lp_sd), 1e-12))}
    if n >= 4:
        # each chain's own ESS summed: the autocorrelation alone, without what the
        # chains' different starting points add to (or take from) the pooled ESS
        from arviz_stats.base import array_stats

        own = np.sum([array_stats.ess(c[None], chain_axis=0, draw_axis=1, method="bulk")
                      for c in np.asarray(samples, dtype=np.float64)], axis=0)
        out["ess_within_chains_min"] = float(np.nanmin(own))
    if n >= 8:
        out["rhat_max_second_half"], out["ess_bulk_min_second_half"] = diagnostics(
            samples[:, n // 2:])
    if samples.shape[0] > 2 and n >= 4:
        loo = [diagnostics(np.delete(samples, c, axis=0))[0] for c in range(len(samples))]
        worst = int(np.argmin(loo))
        out.update({"rhat_max_without_worst_chain": float(loo[worst]),
                    "worst_chain": worst})
    return out


def iterations_for(max_evals: int, chains: int, per_iteration: int, extra: int = 0) -> int:
    """Iterations per chain so that ``chains * (1 + extra + per_iteration * n) <= max_evals``."""
    return (max_evals // chains - 1 - extra) // per_iteration


def sampler_label(name: str, setting: dict) -> str:
    """``"MALA (gauss-newton)"``, ``"HMC (dense from gauss-newton)"``, ``"pCN"``."""
    if name == "pcn":
        return "pCN"
    start = setting.get("mass_init", "identity")
    mass = setting["mass"] + (f" from {start}" if start != "identity"
                              and setting["mass"] in ("diag", "dense") else "")
    return f"{name.upper()} ({mass})"


def metric_evals(mass: str, n_warmup: int, latent_dim: int, mass_init: str = "identity"
                 ) -> int:
    """Model evaluations per chain of the Gauss-Newton metric (the engine's count)."""
    config = SamplerConfig(sampler="mala", mass=mass, mass_init=mass_init, n_warmup=n_warmup)
    return 2 * latent_dim * gauss_newton_updates(config)


def diagnose(prior, forward, rays, d, truth, inv, init, args, layout, setting: dict,
             label: str, main: dict) -> dict:
    """Why the best gradient sampler misses the targets (given noise level), measured:

    - ``long``: the same warm-up, ``--diagnose-factor`` x the kept draws; R-hat and ESS of
      consecutive windows as long as the main run's kept draws (a window starting later
      is the main run with a longer burn-in at the same fixed kernel), and of all draws
      up to each window's end (longer chains);
    - ``long warm-up``: ``--diagnose-warmup-factor`` x the warm-up (adaptation), the main
      run's kept draws;
    - ``one start``: the main run's settings with every chain started at the best SGD
      solution (separate modes among the SGD solutions against a slow kernel).
    """
    out = {}
    per_it = setting.get("n_leapfrog", 1) if setting["sampler"] == "hmc" else 1
    w = setting["n_samples"]
    long = {**setting, "n_samples": w * args.diagnose_factor}
    s, r = run_sampler(f"{label}, {args.diagnose_factor}x kept draws", prior, forward, rays,
                       d, truth, init, args, layout, **long)
    windows = []
    for k in range(args.diagnose_factor):
        rh_w, ess_w = diagnostics(s.samples_[:, k * w:(k + 1) * w])
        rh_c, ess_c = diagnostics(s.samples_[:, : (k + 1) * w])
        windows.append({"draws": [k * w, (k + 1) * w],
                        "burn_in_gradient_evals": args.chains * per_it * (
                            setting["n_warmup"] + k * w),
                        "window_rhat_max": rh_w, "window_ess_bulk_min": ess_w,
                        "cumulative_gradient_evals": args.chains * (
                            1 + per_it * (setting["n_warmup"] + (k + 1) * w)),
                        "cumulative_rhat_max": rh_c, "cumulative_ess_bulk_min": ess_c})
    r["windows"] = windows
    out["long"] = r
    longw = {**setting, "n_warmup": setting["n_warmup"] * args.diagnose_warmup_factor}
    _, out["long_warmup"] = run_sampler(
        f"{label}, {args.diagnose_warmup_factor}x warm-up", prior, forward, rays, d, truth,
        init, args, layout, **longw)
    best_start = inv.latents_[int(np.nanargmin(inv.data_rmse_))]
    _, out["one_start"] = run_sampler(
        f"{label}, all chains from the best SGD start", prior, forward, rays, d, truth,
        np.repeat(best_start[None], args.chains, axis=0), args, layout, **setting)
    out["main"] = {k: main[k] for k in ("rhat_max", "ess_bulk_min", "n_gradient_evals",
                                        "chains_report")}
    return out


def diagnose_markdown(dg: dict) -> list[str]:
    md = ["\n## Why: the best gradient sampler at the given noise level, measured\n"]
    rows = []
    for key in ("long", "long_warmup", "one_start"):
        r = dg[key]
        c = r["chains_report"]
        rows.append([r["label"], f"{r['n_warmup']} + {r['n_samples']}", r["n_gradient_evals"],
                     r["wall_s"], r["acceptance_mean"], r["step_size_median"], r["rhat_max"],
                     r["ess_bulk_min"], c.get("rhat_max_second_half", float("nan")),
                     c.get("rhat_max_without_worst_chain", float("nan")),
                     c["log_posterior_spread_over_sd"]])
    m = dg["main"]["chains_report"]
    md.append(md_table(["run", "warm-up + kept", "gradient evals", "wall (s)", "acceptance",
                        "step size", "max R-hat", "min bulk ESS", "R-hat 2nd half",
                        "R-hat w/o worst chain", "chain log-post. spread / sd"], rows))
    md.append(f"\nMain run: R-hat 2nd half {m.get('rhat_max_second_half', float('nan')):.3f}, "
              f"without its worst chain {m.get('rhat_max_without_worst_chain', float('nan')):.3f}"
              f", chains' mean log-posterior spread {m['log_posterior_spread_over_sd']:.2f} "
              "x the median within-chain sd.\n")
    md.append("Windows of the long run (each as long as the main run's kept draws):\n")
    md.append(md_table(["kept draws", "burn-in (gradient evals)", "window R-hat",
                        "window ESS", "all draws to here: gradient evals", "R-hat", "ESS"],
                       [[f"{w['draws'][0]}-{w['draws'][1]}", w["burn_in_gradient_evals"],
                         w["window_rhat_max"], w["window_ess_bulk_min"],
                         w["cumulative_gradient_evals"], w["cumulative_rhat_max"],
                         w["cumulative_ess_bulk_min"]] for w in dg["long"]["windows"]]))
    return md


# ---------------------------------------------------------------------- figures
def reliability_figure(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axh) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
    for (label, cal), marker in zip(curves.items(), "osD^v<>ph*"):
        x = np.array([np.nan if v is None else v for v in cal["bin_mean_p"]])
        y = np.array([np.nan if v is None else v for v in cal["bin_frequency"]])
        ok = np.isfinite(x)
        ax.plot(x[ok], y[ok], marker=marker, ms=4, lw=1.2,
                label=f"{label} (Brier {cal['brier']:.3f}, ECE {cal['ece']:.3f})")
        axh.plot(np.arange(N_BINS)[ok] + 0.5, np.asarray(cal["bin_count"])[ok],
                 marker=marker, ms=4, lw=1.2, label=label)
    ax.set_xlabel("predicted channel probability (bin mean)")
    ax.set_ylabel("observed channel frequency (truth > 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability, mc2, straight rays", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    axh.set_yscale("log")
    axh.set_xticks(np.arange(N_BINS + 1))
    axh.set_xticklabels([f"{k / N_BINS:.1f}" for k in range(N_BINS + 1)], fontsize=7)
    axh.set_xlabel("probability bin")
    axh.set_ylabel("pixels in bin")
    axh.set_title("Pixels per bin", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def probability_figure(truth, maps: dict, path: Path, grid) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n + 1, 4.4), layout="constrained")
    extent = [0, grid.shape[1] * grid.spacing, grid.shape[0] * grid.spacing, 0]
    axes[0].imshow((truth > 0.5).astype(float), cmap="magma", vmin=0, vmax=1, extent=extent)
    axes[0].set_title("truth mc2 (channel)", fontsize=8)
    for ax, (label, p) in zip(axes[1:], maps.items()):
        im = ax.imshow(p, cmap="magma", vmin=0, vmax=1, extent=extent)
        ax.set_title(label, fontsize=8)
    for ax in axes:
        ax.set_xlabel("x (m)", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6, label="channel probability")
    fig.savefig(path, dpi=80)
    plt.close(fig)


def posterior_figure(sampler, truth, grid, title, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skvaeinv.plotting import plot_posterior

    fig = plot_posterior(sampler, truth=truth, grid=grid)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# ---------------------------------------------------------------------- bent rays
def run_bent(prior, truth, noise, args) -> dict:
    """Short shortest-path posterior: 8 MALA chains warm-started from bent-long SGD."""
    from skvaeinv.forward import ShortestPath

    shared = require_shared()
    grid, rays = survey(0.0, 6.5)
    ref = np.load(shared / "reference" / "pygimli_spm_traveltimes.npz")
    if not np.allclose(ref["geometry"], rays):
        raise SystemExit("the pyGIMLi geometry differs from survey(0.0, 6.5)")
    d = ref["mc2_sec3"] + NOISE_SD * noise
    forward = ShortestPath(grid, secondary_nodes=3)
    schedule = {**reference_schedule("bent-long"), "epochs": args.bent_epochs}
    t0 = time.perf_counter()
    inv = LatentInverter(prior, forward, n_starts=args.bent_chains, n_jobs=1, device="cpu",
                         random_state=args.seed, **schedule).fit(rays, d)
    sgd_wall = time.perf_counter() - t0
    out = {"schedule": schedule, "sgd_wall_s": sgd_wall,
           "sgd_data_rmse_ns": inv.data_rmse_.tolist(),
           "sgd_model_rmse_best": rmse(inv.model_, truth),
           "sgd_calibration": calibration(inv.ensemble().channel_probability, truth)}
    log.info("bent SGD (%d epochs): %.0f s, data RMSE %.3f-%.3f ns", args.bent_epochs,
             sgd_wall, np.nanmin(inv.data_rmse_), np.nanmax(inv.data_rmse_))
    s = LatentSampler(prior, forward, sampler="mala", mass=args.mass, n_chains=args.bent_chains,
                      n_warmup=args.bent_warmup, n_samples=args.bent_samples,
                      noise_std="estimate", init=inv, device="cpu", random_state=args.seed,
                      n_jobs=1)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.fit(rays, d)
    wall = time.perf_counter() - t0
    q = np.quantile(s.noise_std_, [0.05, 0.5, 0.95])
    out.update({
        "chains": args.bent_chains, "n_warmup": args.bent_warmup,
        "n_samples": args.bent_samples, "mass": args.mass, "wall_s": wall,
        "n_gradient_evals": int(s.n_gradient_evals_),
        "n_forward_evals": int(s.n_forward_evals_),
        "acceptance_mean": float(s.acceptance_rate_.mean()),
        "rhat_max": float(np.nanmax(s.rhat_)), "ess_bulk_min": float(np.nanmin(s.ess_bulk_)),
        "model_rmse_posterior_mean": rmse(s.posterior_mean_, truth),
        "calibration": calibration(s.channel_probability_, truth),
        "noise_std_estimate": {"median": float(q[1]), "q05": float(q[0]), "q95": float(q[2])},
        "warnings": [str(w.message) for w in caught]})
    log.info("bent MALA: %.0f s, R-hat %.3f, ESS %.0f, model RMSE %.4f, Brier %.4f, ECE %.4f",
             wall, out["rhat_max"], out["ess_bulk_min"], out["model_rmse_posterior_mean"],
             out["calibration"]["brier"], out["calibration"]["ece"])
    posterior_figure(s, truth, grid, f"mc2, shortest paths (3 secondary nodes), MALA "
                     f"{args.bent_chains} chains, noise estimated",
                     study_dir(STUDY) / f"{args.name}_bent_posterior.png")
    return out


# ---------------------------------------------------------------------- report
def result_rows(runs: list[dict], sgd: dict) -> list[list]:
    rows = []
    for r in runs:
        noise = (f"estimated ({r['noise_std_estimate']['median']:.3f} ns)"
                 if "noise_std_estimate" in r else f"{r['noise_std']} ns")
        rows.append([r["label"], noise, r["n_forward_evals"], r["n_gradient_evals"],
                     r["wall_s"], r["acceptance_mean"], r["rhat_max"], r["ess_bulk_min"],
                     r["chains_report"].get("ess_within_chains_min", float("nan")),
                     f"{r['ess_per_1000_evals']:.3g} ({r['evals_counted'][:4]}.)",
                     r["model_rmse_posterior_mean"], r["calibration"]["brier"],
                     r["calibration"]["ece"]])
    rows.append([f"SGD ensemble ({sgd['n_accepted']}/{sgd['starts']} starts, "
                 f"{sgd['epochs']} epochs)", f"- (thr. {sgd['threshold_ns']:.3f} ns)", "-",
                 "-", sgd["wall_s"], "-", "-", "-", "-", "-", sgd["model_rmse_ensemble_mean"],
                 sgd["calibration"]["brier"], sgd["calibration"]["ece"]])
    return rows


def best_of(runs: list[dict], estimated: bool) -> dict | None:
    """The gradient sampler with the most ESS per model evaluation in one noise model."""
    grad = [r for r in runs if r["sampler"] != "pcn"
            and (r["noise_std"] == "estimate") == estimated]
    return max(grad, key=lambda r: r["ess_per_1000_evals"]) if grad else None


def targets(runs: list[dict], sgd: dict, best: str | None) -> list[dict]:
    """Issue 27's targets, for each noise model: the best gradient sampler of the
    setting (most ESS per model evaluation) against pCN in the same setting; the
    calibration targets with the noise estimated."""
    out = []
    for estimated in (False, True):
        same = [r for r in runs if (r["noise_std"] == "estimate") == estimated]
        top = best_of(runs, estimated)
        if top is None:
            continue
        name = f"{top['label']}"
        out += [{"target": f"{name}: max R-hat <= {TARGET_RHAT}", "value": top["rhat_max"],
                 "met": top["rhat_max"] <= TARGET_RHAT},
                {"target": f"{name}: min bulk ESS >= {TARGET_ESS}",
                 "value": top["ess_bulk_min"], "met": top["ess_bulk_min"] >= TARGET_ESS},
                {"target": f"{name}: decoder evaluations <= {TARGET_EVALS}",
                 "value": top["n_forward_evals"],
                 "met": top["n_forward_evals"] <= TARGET_EVALS}]
        pcn = next((r for r in same if r["sampler"] == "pcn"), None)
        if pcn is not None:
            ratio = top["ess_per_1000_evals"] / pcn["ess_per_1000_evals"]
            out.append({"target": f"{name}: ESS per evaluation >= {TARGET_RATIO:g} x "
                                  f"{pcn['label']}'s", "value": ratio,
                        "met": ratio >= TARGET_RATIO})
        if estimated:
            out.append({"target": f"{name}: Brier < SGD ensemble's "
                                  f"({sgd['calibration']['brier']:.4f})",
                        "value": top["calibration"]["brier"],
                        "met": top["calibration"]["brier"] < sgd["calibration"]["brier"]})
            out.append({"target": f"{name}: ECE <= {TARGET_ECE}",
                        "value": top["calibration"]["ece"],
                        "met": top["calibration"]["ece"] <= TARGET_ECE})
    return out


def markdown(payload: dict) -> str:
    sgd = payload["sgd"]
    md = ["# Posterior sampling, mc2, straight rays (issue 27)\n",
          f"Command: `{payload['command']}`\n",
          f"Prior `{payload['prior']}`; data: `straight_ray_traveltimes.npz` `mc2` + 0.25 x "
          f"the shared noise realisation; {payload['chains']} chains per sampler started "
          f"from the SGD solutions ({payload['init']}); precision {payload['precision']}; "
          f"chains laid out as {payload['layout_label']}. Wall times are those of `fit` "
          "(decoding every kept draw for the pixel summaries included) on a shared 2-core "
          f"machine (load averages in the JSON). Main run (SGD, probe, samplers, figures): "
          f"{payload.get('main_wall_s', payload['total_wall_s']):.0f} s; everything: "
          f"{payload['total_wall_s']:.0f} s.\n"]
    if payload.get("jobs_probe"):
        jp = payload["jobs_probe"]
        md.append(f"Layout probe (MALA, {payload['chains']} chains, seconds per iteration, best of "
                  f"{len(next(iter(jp['all'].values())))}): "
                  + ", ".join(f"{k}: {1000 * v:.1f} ms" for k, v in
                              jp["seconds_per_iteration"].items())
                  + f"; faster: {jp['chosen']}.\n")
    md.append(md_table(["method", "noise", "forward evals", "gradient evals", "wall (s)",
                        "acceptance", "max R-hat", "min bulk ESS",
                        "min within-chain ESS", "ESS / 1000 evals",
                        "model RMSE (post. mean)", "Brier", "ECE"],
                       result_rows(payload["runs"], sgd)))
    md.append("\nmin within-chain ESS: the chains' own bulk ESS summed (their "
              "autocorrelation alone; the pooled bulk ESS also counts the spread of the "
              "starting points), lowest latent dimension.\n")
    md.append(f"\nSGD: {sgd['starts']} starts, {sgd['epochs']} epochs, best data RMSE "
              f"{sgd['data_rmse_best_ns']:.3f} ns, best model RMSE {sgd['model_rmse_best']:.4f}; "
              f"ensemble threshold {sgd['threshold_rule']} = {sgd['threshold_ns']:.3f} ns. "
              f"Channel fraction of the truth: {sgd['calibration']['channel_fraction']:.3f}.\n")
    if payload.get("init_sgd"):
        i = payload["init_sgd"]
        md.append(f"Chains started from a separate {i['epochs']}-epoch SGD "
                  f"({i['wall_s']:.0f} s, best data RMSE {i['data_rmse_best_ns']:.3f} ns).\n")
    if payload.get("targets"):
        md.append("## Targets\n")
        md.append(md_table(["target", "value", "met"],
                           [[t["target"], t["value"], "yes" if t["met"] else "no"]
                            for t in payload["targets"]]))
    if payload.get("diagnose"):
        md.extend(diagnose_markdown(payload["diagnose"]))
    if payload.get("bent"):
        b = payload["bent"]
        md.append(bent_section(b))
    md.append("\nFigures: `" + "`, `".join(payload["figures"]) + "`.")
    return "\n".join(md)


def bent_section(b: dict) -> str:
    """The shortest-path run's table (Markdown)."""
    sgd = b["sgd_calibration"]
    return "\n## Shortest paths (short run)\n\n" + md_table(
        ["method", "warm-up + samples", "gradient / model evals", "wall (s)", "acceptance",
         "max R-hat", "min bulk ESS", "noise (ns)", "model RMSE", "Brier", "ECE"],
        [[f"MALA ({b['mass']}), {b['chains']} chains, noise estimated",
          f"{b['n_warmup']} + {b['n_samples']}",
          f"{b['n_gradient_evals']} / {b.get('n_forward_evals', '-')}", b["wall_s"],
          b["acceptance_mean"], b["rhat_max"], b["ess_bulk_min"],
          b["noise_std_estimate"]["median"], b["model_rmse_posterior_mean"],
          b["calibration"]["brier"], b["calibration"]["ece"]],
         [f"SGD warm start: {b['schedule']['epochs']} epochs of bent-long, "
          f"{b['chains']} starts", "-", "-", b["sgd_wall_s"], "-", "-", "-",
          f"{min(b['sgd_data_rmse_ns']):.3f} (best data RMSE)",
          f"{b['sgd_model_rmse_best']:.4f} (best start)", sgd["brier"], sgd["ece"]]])


# ---------------------------------------------------------------------- main
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--samplers", nargs="+", default=["mala", "hmc", "pcn"],
                    choices=["mala", "hmc", "pcn"])
    ap.add_argument("--estimate", nargs="*", default=["best"],
                    help="samplers run again with noise_std='estimate' ('best': the best "
                         "gradient sampler; 'mala', 'hmc', 'pcn'; nothing: none)")
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--max-evals", type=int, default=TARGET_EVALS,
                    help="gradient evaluations over all chains of each gradient sampler")
    ap.add_argument("--warmup", type=int, default=1000, help="MALA warm-up iterations")
    ap.add_argument("--mass", default="dense", choices=list(MASSES))
    ap.add_argument("--hmc-leapfrog", type=int, default=5)
    ap.add_argument("--hmc-warmup", type=int, default=200)
    ap.add_argument("--hmc-jitter", type=float, default=0.0,
                    help="HMC's step_jitter (uniform scaling of the step in [1 - j, 1 + j])")
    ap.add_argument("--hmc-mass", default="dense", choices=list(MASSES))
    ap.add_argument("--mass-init", default="identity", choices=["identity", "gauss-newton"],
                    help="MALA's metric before the first estimate from draws")
    ap.add_argument("--hmc-mass-init", default="identity",
                    choices=["identity", "gauss-newton"])
    ap.add_argument("--pcn-warmup", type=int, default=1000)
    ap.add_argument("--pcn-thin", type=int, default=5,
                    help="pCN keeps every n-th draw (its draws are highly correlated; "
                         "fewer draws to decode)")
    ap.add_argument("--starts", type=int, default=16, help="SGD starts")
    ap.add_argument("--sgd-epochs", type=int, default=None,
                    help="epochs of the comparison SGD (default: the study's 120)")
    ap.add_argument("--init-epochs", type=int, default=None,
                    help="start the chains from a separate SGD of this many epochs "
                         "(default: from the comparison SGD)")
    ap.add_argument("--threshold-factor", type=float, default=1.5,
                    help="SGD ensemble: starts with data RMSE <= factor x best")
    ap.add_argument("--sgd-n-jobs", type=int, default=2)
    ap.add_argument("--sgd-chunk-size", type=int, default=8)
    ap.add_argument("--n-jobs", type=int, default=None,
                    help="chains' workers (default: the faster of the jobs probe)")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--jobs-probe", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--probe-only", action="store_true",
                    help="only the layout probe (chains at the truth's code; no SGD)")
    ap.add_argument("--probe-iterations", type=int, default=40)
    ap.add_argument("--probe-repeats", type=int, default=2)
    ap.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--diagnose", action="store_true",
                    help="also measure why the best gradient sampler misses the targets "
                         "(longer kept run, longer warm-up, chains from one start)")
    ap.add_argument("--diagnose-factor", type=int, default=3)
    ap.add_argument("--diagnose-warmup-factor", type=int, default=4)
    ap.add_argument("--bent", action="store_true", help="also the short shortest-path run")
    ap.add_argument("--bent-only", action="store_true",
                    help="only the short shortest-path run (its own --name)")
    ap.add_argument("--bent-chains", type=int, default=8)
    ap.add_argument("--bent-epochs", type=int, default=6)
    ap.add_argument("--bent-warmup", type=int, default=150)
    ap.add_argument("--bent-samples", type=int, default=150)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--name", default=STUDY)
    args = ap.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.chains, args.starts, args.max_evals = 4, 4, 4 * 300
        args.warmup, args.hmc_warmup, args.hmc_leapfrog = 110, 50, 2
        args.pcn_warmup, args.pcn_thin, args.sgd_epochs = 100, 2, 2
        args.probe_iterations, args.probe_repeats = 3, 1
        args.sgd_chunk_size = 2
        args.bent_chains, args.bent_epochs, args.bent_warmup, args.bent_samples = 2, 1, 5, 5
        args.diagnose_factor, args.diagnose_warmup_factor = 2, 2
    return args


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("arviz_stats").setLevel(logging.WARNING)   # the probe's short fits
    args = parse_args(argv)
    t_start = time.perf_counter()
    shared = require_shared()
    folder = study_dir(STUDY)
    grid, rays = survey()
    ref = np.load(shared / "reference" / "straight_ray_traveltimes.npz")
    if not np.allclose(ref["geometry"], rays):
        raise SystemExit("the reference geometry differs from the study's survey()")
    truth = np.load(shared / "truth" / "mc2.npy")
    noise = np.load(shared / "truth" / "noise_realization.npy")
    d = ref["mc2"] + NOISE_SD * noise
    prior = VAEPrior.load(args.prior, device="cpu")
    forward = StraightRay(grid)
    payload = {"command": command_line(__file__, argv), "prior": Path(args.prior).name,
               "truth": "mc2", "noise_sd_ns": NOISE_SD, "chains": args.chains,
               "precision": args.precision, "quick": args.quick, "runs": [],
               "loadavg_start": loadavg()}
    figures = []

    if args.probe_only:
        z0 = np.repeat(prior.transform(truth[None]), args.chains, axis=0)
        jp = payload["jobs_probe"] = jobs_probe(prior, forward, rays, d, z0, args)
        payload["total_wall_s"] = time.perf_counter() - t_start
        md = ["# Layout probe, mc2, straight rays\n", f"Command: `{payload['command']}`\n",
              f"MALA, {args.chains} chains at the truth's code, noise_std=0.25, "
              f"{args.probe_iterations} iterations per timing, alternating, precision "
              f"{args.precision}; load averages {payload['loadavg_start']} (start), "
              f"{jp['loadavg']} (end).\n",
              md_table(["layout", "best s / iteration", "all repeats (s / iteration)"],
                       [[k, v, ", ".join(f"{x:.4f}" for x in jp["all"][k])]
                        for k, v in jp["seconds_per_iteration"].items()]),
              f"\nFaster: {jp['chosen']}."]
        write_results(args.name, payload, "\n".join(md), study=STUDY)
        print("\n".join(md))
        return 0

    if args.bent_only:
        payload["bent"] = run_bent(prior, truth, noise, args)
        payload["total_wall_s"] = time.perf_counter() - t_start
        md = (f"# Posterior sampling, mc2, shortest paths (issue 27)\n\nCommand: "
              f"`{payload['command']}`\n\nPrior `{payload['prior']}`; data: pyGIMLi's "
              "`mc2_sec3` times + 0.25 x the shared noise realisation; `ShortestPath` with 3 "
              "secondary nodes; one worker. Total "
              f"{payload['total_wall_s']:.0f} s.\n{bent_section(payload['bent'])}\n"
              f"\nFigure: `{args.name}_bent_posterior.png`.\n")
        write_results(args.name, payload, md, study=STUDY)
        print(md)
        return 0

    # 1. the comparison SGD (its solutions start the chains unless --init-epochs)
    inv, ens, sgd = run_sgd(prior, forward, rays, d, truth, args, epochs=args.sgd_epochs)
    payload["sgd"] = sgd
    if args.init_epochs is not None:
        inv0, ens0, payload["init_sgd"] = run_sgd(prior, forward, rays, d, truth, args,
                                                  epochs=args.init_epochs)
        init = chain_init(inv0, ens0, args.chains)
        payload["init"] = f"separate {args.init_epochs}-epoch SGD"
    else:
        init = chain_init(inv, ens, args.chains)
        payload["init"] = "the comparison SGD's accepted starts"
    payload["init"] += (", init=inverter" if not isinstance(init, np.ndarray)
                        else ", their latent codes (not all starts accepted)")

    # 2. layout of the chains: measured (the probe is run and recorded even when the
    # layout is given: results depend on chunk_size, whose chunks pool their metric)
    if args.jobs_probe:
        z0 = init.latents_ if not isinstance(init, np.ndarray) else init
        z0 = np.asarray(z0)[np.arange(args.chains) % len(z0)]
        payload["jobs_probe"] = jobs_probe(prior, forward, rays, d, z0, args)
    if args.n_jobs is not None or args.chunk_size is not None:
        layout = {"n_jobs": args.n_jobs, "chunk_size": args.chunk_size}
        payload["layout_label"] = (f"n_jobs={args.n_jobs}, chunk_size={args.chunk_size}"
                                   + (" (one batch of up to 25 chains)"
                                      if args.chunk_size is None else "") + " (given)")
    elif args.jobs_probe:
        layout = payload["jobs_probe"]["kwargs"]
        payload["layout_label"] = payload["jobs_probe"]["chosen"] + " (measured)"
    else:
        layout = {"n_jobs": 1, "chunk_size": None}
        payload["layout_label"] = "n_jobs=1, one batch"
    payload["layout"] = layout

    def save():
        payload["figures"] = figures
        payload["total_wall_s"] = time.perf_counter() - t_start
        write_results(args.name, payload, markdown(payload), study=STUDY)

    # 3. gradient samplers with the given noise level
    samplers = {}
    settings = {}
    dim = prior.latent_dim
    n_mala = iterations_for(args.max_evals, args.chains, 1,
                            metric_evals(args.mass, args.warmup, dim, args.mass_init))
    settings["mala"] = dict(sampler="mala", mass=args.mass, mass_init=args.mass_init,
                            n_warmup=args.warmup,
                            n_samples=n_mala - args.warmup)
    n_hmc = iterations_for(args.max_evals, args.chains, args.hmc_leapfrog,
                           metric_evals(args.hmc_mass, args.hmc_warmup, dim,
                                        args.hmc_mass_init))
    if min(n_mala - args.warmup, n_hmc - args.hmc_warmup) < 1:
        raise SystemExit(f"--max-evals {args.max_evals} leaves no kept draws after the "
                         "warm-up; lower --warmup / --hmc-warmup")
    settings["hmc"] = dict(sampler="hmc", mass=args.hmc_mass, n_leapfrog=args.hmc_leapfrog,
                           step_jitter=args.hmc_jitter, mass_init=args.hmc_mass_init,
                           n_warmup=args.hmc_warmup, n_samples=n_hmc - args.hmc_warmup)
    for name in [s for s in ("mala", "hmc") if s in args.samplers]:
        label = sampler_label(name, settings[name])
        samplers[label], r = run_sampler(label, prior, forward, rays, d, truth, init, args,
                                         layout, **settings[name])
        payload["runs"].append(r)
        save()
    gradient_runs = [r for r in payload["runs"] if r["sampler"] != "pcn"]
    best = max(gradient_runs, key=lambda r: r["ess_per_1000_evals"]) if gradient_runs else None
    payload["best_gradient_sampler"] = None if best is None else best["label"]

    # 4. pCN with as many model evaluations as the best gradient sampler made
    if "pcn" in args.samplers:
        budget = best["n_forward_evals"] if best else args.max_evals
        n_pcn = iterations_for(budget, args.chains, 1)
        n_samples = (n_pcn - args.pcn_warmup) // args.pcn_thin
        warm = n_pcn - n_samples * args.pcn_thin
        settings["pcn"] = dict(sampler="pcn", n_warmup=warm, n_samples=n_samples,
                               thin=args.pcn_thin)
        samplers["pCN"], r = run_sampler("pCN", prior, forward, rays, d, truth, init, args,
                                         layout, **settings["pcn"])
        payload["runs"].append(r)
        save()

    # 5. with the noise level estimated
    wanted = []
    for name in args.estimate:
        if name == "best" and best is not None:
            wanted.append(best["sampler"])
        elif name in settings and name in args.samplers:
            wanted.append(name)
    for name in dict.fromkeys(wanted):
        label = sampler_label(name, settings[name])
        est_label = label + ", noise estimated"
        samplers[est_label], r = run_sampler(est_label, prior, forward, rays, d, truth, init,
                                             args, layout, noise_std="estimate",
                                             **settings[name])
        payload["runs"].append(r)
        save()

    payload["targets"] = targets(payload["runs"], sgd, payload["best_gradient_sampler"])

    # figures
    curves = {f"SGD ensemble ({sgd['n_accepted']})": sgd["calibration"]}
    curves.update({r["label"]: r["calibration"] for r in payload["runs"]})
    reliability_figure(curves, folder / f"{args.name}_reliability.png")
    figures.append(f"{args.name}_reliability.png")
    maps = {f"SGD ensemble ({sgd['n_accepted']} starts)": ens.channel_probability}
    maps.update({label.replace(", noise estimated", ",\nnoise estimated"):
                 s.channel_probability_ for label, s in samplers.items()})
    probability_figure(truth, maps, folder / f"{args.name}_probability.png", grid)
    figures.append(f"{args.name}_probability.png")
    for estimated in (False, True):
        top = best_of(payload["runs"], estimated)
        if top is None:
            continue
        tag = "estimated" if estimated else "given"
        fname = f"{args.name}_posterior_{top['sampler']}_{tag}.png"
        posterior_figure(samplers[top["label"]], truth, grid,
                         f"mc2, straight rays, {top['label']}: R-hat {top['rhat_max']:.3f}, "
                         f"ESS {top['ess_bulk_min']:.0f}", folder / fname)
        figures.append(fname)
    payload["main_wall_s"] = time.perf_counter() - t_start
    save()

    if args.diagnose and best is not None:
        t0 = time.perf_counter()
        payload["diagnose"] = diagnose(prior, forward, rays, d, truth, inv, init, args, layout,
                                       settings[best["sampler"]], best["label"], best)
        payload["diagnose"]["wall_s"] = time.perf_counter() - t0
        save()

    if args.bent:
        payload["bent"] = run_bent(prior, truth, noise, args)
        figures.append(f"{args.name}_bent_posterior.png")
        save()
    save()
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
