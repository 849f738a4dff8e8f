"""Classic smoothness-constrained inversion (pyGIMLi) against the latent inversion.

Side by side in one run, for each truth model (mc1-mc3, mv1-mv3) and two surveys:

- ``regular``: the study's survey (sensors on grid nodes at x = 0 and 6.5 m, depths
  0.5-12.5 m every 0.5 m, 625 picks);
- ``irregular``: the source borehole deviates by 0.5 m over its length, sensors every
  0.25 m between the grid nodes in both boreholes, 10 % of the picks missing (seeded).

Data: shortest-path times (our ``ShortestPath``, 2 secondary nodes; on the regular
survey these are pyGIMLi 1.6.1's to 1e-14) plus the shared noise realisation times
0.25 ns (the irregular survey draws its own N(0, 0.25²) noise, seeded); sigma 0.25 ns
per pick. Both go through a pyGIMLi ``.sgt`` file (``skvaeinv.io``) and are read back.

- pyGIMLi: ``_classic.classic_inversion`` (its ``TravelTimeManager.invert`` set up for
  radar: homogeneous start from the data, velocity limits, regularisation chosen for
  chi² ~ 1; its docstring says how).
- Ours: ``skvaeinv.workflow.invert_survey`` (the ``skvaeinv invert SURVEY`` path) with
  the reference prior, ``ShortestPath`` with 3 secondary nodes (``--secondary-nodes``;
  2 gives it the data's own physics, as pyGIMLi has), the study's bent-ray
  schedule (750 iterations; on the irregular survey the same number of iterations and
  decays per iteration), the picking errors as weights; the reported model is the best
  start's.
- With ``--posterior N``, also the latent posterior mean (``LatentSampler``: MALA with
  the Gauss-Newton metric, the noise scale sampled with the picking errors as relative
  weights) with the rays frozen at the best start's image (a ``MatrixOperator`` of its
  shortest paths: exact at that image, a linearisation around it), twice: chains started
  from the accepted starts, and all chains started from the best start (where the
  linearisation holds). The posterior mean is not a decoded image, so it is not
  bounded by the prior's closest image.

Reported per truth and survey: model RMSE against the truth (facies units; pyGIMLi's
velocities converted with the study's petrophysics and clipped to [0, 1]), the share of
cells classified right (channel where the velocity is below the mid velocity 0.07 m/ns),
chi² per datum, wall time; a figure with the truth and both images (and the
posterior mean with ``--posterior``). Target: our model
RMSE at most half of pyGIMLi's on every truth. Beside it, the prior's reach: the model
RMSE of the decoded image closest to the truth (``_common.closest_decoded``, whatever
the data), which no latent inversion with this prior can beat, and the ratio it would
give against pyGIMLi: where that bound is above 0.5, the target is out of this prior's
reach.

Usage::

    python benchmarks/classic_vs_prior.py                       # everything
    python benchmarks/classic_vs_prior.py --truths mc2 --starts 8 --name classic_vs_prior_mc2
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (PRIORS, SHARED, TRUTH_SHAPE, closest_decoded,  # noqa: E402
                     command_line, md_table, require_shared, study_dir, write_results)

from skvaeinv import LatentSampler, VAEPrior  # noqa: E402
from skvaeinv.forward import MatrixOperator, ShortestPath  # noqa: E402
from skvaeinv.inverter import reference_schedule  # noqa: E402
from skvaeinv.io import TraveltimeData, read_sgt, write_sgt  # noqa: E402
from skvaeinv.petrophysics import LinearVelocity  # noqa: E402
from skvaeinv.survey import Grid2D, crosshole  # noqa: E402
from skvaeinv.workflow import invert_survey  # noqa: E402

log = logging.getLogger("classic_vs_prior")
STUDY = "classic_vs_prior"
TRUTHS = ("mc1", "mc2", "mc3", "mv1", "mv2", "mv3")
SIGMA = 0.25
PETRO = LinearVelocity()   # the study's petrophysics: channel 0.06, matrix 0.08 m/ns
V_MID = 0.07            # m/ns, between channel (0.06) and matrix (0.08)


def regular_survey(grid: Grid2D) -> TraveltimeData:
    """The study's 625-pick survey, sensors on the grid edges."""
    rays = crosshole(grid, np.arange(0.5, 12.51, 0.5), source_x=0.0, receiver_x=6.5)
    return TraveltimeData.from_rays(rays, np.ones(len(rays)))


def irregular_survey(seed: int = 0) -> TraveltimeData:
    """Deviated source borehole (0.5 m over its length), sensors every 0.25 m between
    the nodes, 10 % of the picks missing."""
    z = np.arange(0.37, 12.6, 0.25)
    left = np.column_stack([0.03 + 0.5 * (z - z[0]) / (z[-1] - z[0]), z])
    right = np.column_stack([np.full(z.size, 6.47), z + 0.06])
    sensors = np.vstack([left, right])
    src, rec = np.meshgrid(np.arange(z.size), z.size + np.arange(z.size), indexing="ij")
    keep = np.random.default_rng(seed).permutation(src.size)[: int(round(0.9 * src.size))]
    keep.sort()
    return TraveltimeData(sensors, src.ravel()[keep], rec.ravel()[keep], np.ones(keep.size))


def noisy_data(geometry: TraveltimeData, truth: np.ndarray, grid: Grid2D, noise: np.ndarray
               ) -> TraveltimeData:
    t = ShortestPath(grid, secondary_nodes=2).traveltimes(PETRO(truth),
                                                          geometry.rays)
    return TraveltimeData(geometry.sensors, geometry.source, geometry.receiver,
                          t + SIGMA * noise, np.full(t.size, SIGMA))


def through_file(data: TraveltimeData, folder: Path, name: str) -> TraveltimeData:
    path = folder / f"{name}.sgt"
    write_sgt(path, data)
    return read_sgt(path)


def schedule_for(n_picks: int, name: str = "bent") -> dict:
    """The study's bent-ray schedule ``name`` (``reference_schedule``), kept at 750
    iterations for any number of picks."""
    s = reference_schedule(name)
    n_batches = -(-n_picks // s["batch_size"])
    per_epoch = 25 / n_batches                        # the study's epochs have 25 batches
    s["epochs"] = max(1, round(s["epochs"] * per_epoch))
    s["lr_step"] = max(1, round(s["lr_step"] * per_epoch))
    return s


def scores(facies: np.ndarray, truth: np.ndarray, velocity: np.ndarray | None = None
           ) -> dict:
    """Model RMSE (facies, clipped to [0, 1]) and the share of cells classified right.

    ``velocity``: the model's velocities where the model is one (pyGIMLi's); None takes
    them from ``facies`` through the study's petrophysics."""
    if velocity is None:
        velocity = PETRO.velocity(facies)
    m = np.clip(facies, 0.0, 1.0)
    truth_v = PETRO.velocity(truth)
    return {"model_rmse": float(np.sqrt(np.mean((m - truth) ** 2))),
            "classified_right": float(np.mean((velocity < V_MID) == (truth_v < V_MID)))}


def run_ours(data: TraveltimeData, prior, grid: Grid2D, truth: np.ndarray, args) -> dict:
    t0 = time.perf_counter()
    res = invert_survey(data, prior, spacing=grid.spacing, origin=grid.origin,
                        nonlinear=True, secondary_nodes=args.secondary_nodes,
                        sigma=data.sigma(), sigma_source="file", n_starts=args.starts,
                        n_jobs=args.n_jobs, chunk_size=args.chunk_size, device="cpu",
                        random_state=args.seed,
                        **schedule_for(data.n_picks, args.schedule))
    wall = time.perf_counter() - t0
    inv = res.inverter
    best = inv.best_index_
    out = scores(inv.model_, truth)
    ensemble_rmse = scores(res.ensemble.mean, truth)["model_rmse"]
    out.update(chi2=float(inv.chi2_[best]), data_rmse_ns=float(inv.data_rmse_[best]),
               ensemble_model_rmse=ensemble_rmse,
               wall_s=wall, image=inv.model_, accepted=int(res.ensemble.n_accepted),
               chi2_per_start=[float(v) for v in inv.chi2_])
    if args.posterior:
        out["posterior"] = run_posterior(res, data, prior, truth, args)
    return out


def run_posterior(res, data: TraveltimeData, prior, truth: np.ndarray, args) -> dict:
    """Posterior mean with the rays frozen at the best start's image.

    Two starting rules, same chains otherwise: ``"accepted"`` (the chains start from the
    accepted starts, repeated) and ``"best"`` (all from the best start, the image the
    rays were frozen at, where the linearisation is exact).
    """
    inv = res.inverter
    rays = inv.forward_.validate_rays(data.rays)
    paths = inv.forward_.jacobian(PETRO(inv.model_), rays)
    frozen, sigma = MatrixOperator(paths, res.grid, rays=rays), data.sigma()
    inits = {"accepted": inv, "best": np.repeat(inv.z_[None], args.posterior_chains, 0)}
    out = {}
    for rule, init in inits.items():
        post = LatentSampler(prior, frozen, sampler="mala", mass="gauss-newton",
                             n_chains=args.posterior_chains, n_samples=args.posterior,
                             n_warmup=args.posterior_warmup, noise_std="estimate",
                             init=init, n_jobs=1, device="cpu", random_state=args.seed)
        t0 = time.perf_counter()
        post.fit(rays, data.traveltimes, sigma=sigma)
        mean = post.posterior_mean_
        r = scores(mean, truth)
        r.update(wall_s=time.perf_counter() - t0, image=np.clip(mean, 0, 1),
                 max_rhat=float(np.nanmax(post.rhat_)),
                 min_ess_bulk=float(np.nanmin(post.ess_bulk_)),
                 acceptance=float(post.acceptance_rate_.mean()),
                 noise_factor=float(np.median(post.noise_std_)),
                 noise_factor_per_chain=[float(v) for v in
                                         np.median(post.noise_std_, axis=1)],
                 gradient_evals=int(post.n_gradient_evals_))
        out[rule] = r
    return out


def without_images(d: dict) -> dict:
    """``d`` without its ``"image"`` entries, at any depth (for the JSON)."""
    return {k: without_images(v) if isinstance(v, dict) else v
            for k, v in d.items() if k != "image"}


def run_classic(data: TraveltimeData, truth: np.ndarray, args) -> dict:
    from _classic import classic_inversion

    t0 = time.perf_counter()
    r = classic_inversion(data.sensors, data.source, data.receiver, data.traveltimes,
                          data.sigma(), sec_nodes=args.classic_sec_nodes,
                          max_iter=args.classic_max_iter)
    wall = time.perf_counter() - t0
    facies = (PETRO.v_matrix - r["velocity"]) / (PETRO.v_matrix - PETRO.v_channel)
    out = scores(facies, truth, r["velocity"])
    out.update(chi2=float(r["chi2"]), data_rmse_ns=float(r["rms_ns"]), wall_s=wall,
               image=np.clip(facies, 0, 1), lam=float(r["lam"]),
               iterations=int(r["iterations"]), settings=r.get("settings", {}))
    return out


def figure(rows: list[tuple[str, str, np.ndarray, dict, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = 4 if any("posterior" in row[4] for row in rows) else 3
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(2.2 * n_cols, 4.2 * len(rows)),
                             squeeze=False)
    for (truth_name, survey_name, truth, classic, ours), ax in zip(rows, axes):
        panels = [(truth, f"{truth_name} ({survey_name})"),
                  (classic["image"], f"pyGIMLi: RMSE {classic['model_rmse']:.3f}\n"
                                     f"chi² {classic['chi2']:.2f}"),
                  (ours["image"], f"latent, best start: RMSE {ours['model_rmse']:.3f}\n"
                                  f"chi² {ours['chi2']:.2f}")]
        if "posterior" in ours:
            post = ours["posterior"]["accepted"]
            panels.append((post["image"], "latent posterior mean:\n"
                                          f"RMSE {post['model_rmse']:.3f}"))
        for a, (img, title) in zip(ax, panels):
            a.imshow(img, cmap="gray_r", vmin=0, vmax=1, extent=(0, 6.5, 12.9, 0))
            a.set_title(title, fontsize=8)
            a.set_xticks([0, 3, 6])
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=TRUTHS)
    ap.add_argument("--surveys", nargs="+", default=["regular", "irregular"],
                    choices=["regular", "irregular"])
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--schedule", default="bent", choices=["bent", "bent-as-coded"],
                    help="the latent inversion's schedule: the study's published numbers "
                         "(bent, the results so far) or the steps its code took")
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--secondary-nodes", type=int, default=3,
                    help="secondary nodes per cell edge of the latent inversion's shortest "
                         "paths (the data are made with 2; 3 is the study's inversion, 2 "
                         "the same physics as the data and as pyGIMLi's)")
    ap.add_argument("--classic-sec-nodes", type=int, default=2)
    ap.add_argument("--classic-max-iter", type=int, default=16,
                    help="pyGIMLi's Gauss-Newton iterations at most (8 give the same model "
                         "RMSE within 0.01 at a higher chi², in half the time)")
    ap.add_argument("--posterior", type=int, default=0, metavar="N",
                    help="also the latent posterior mean, N kept draws per chain (0: not)")
    ap.add_argument("--posterior-chains", type=int, default=8)
    ap.add_argument("--posterior-warmup", type=int, default=200)
    ap.add_argument("--prior", default=str(PRIORS / "reference_prior.skv"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=STUDY)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    require_shared()
    prior = VAEPrior.load(args.prior, device="cpu")
    grid = Grid2D(TRUTH_SHAPE, 0.1)
    geometries = {"regular": regular_survey(grid), "irregular": irregular_survey(args.seed)}
    shared_noise = np.load(SHARED / "truth" / "noise_realization.npy")
    results, rows, fig_rows, post_rows = {}, [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for t_name in args.truths:
            truth = np.load(SHARED / "truth" / f"{t_name}.npy").astype(np.float64)
            reach = float(closest_decoded(prior, truth[None])[1][0])
            for s_name in args.surveys:
                geom = geometries[s_name]
                noise = shared_noise if s_name == "regular" else \
                    np.random.default_rng(args.seed + 1).standard_normal(geom.n_picks)
                data = through_file(noisy_data(geom, truth, grid, noise), Path(tmp),
                                    f"{t_name}_{s_name}")
                log.info("%s, %s survey: %d picks", t_name, s_name, data.n_picks)
                classic = run_classic(data, truth, args)
                log.info("  pyGIMLi: model RMSE %.3f, chi2 %.2f, %.0f s",
                         classic["model_rmse"], classic["chi2"], classic["wall_s"])
                ours = run_ours(data, prior, grid, truth, args)
                log.info("  latent:  model RMSE %.3f, chi2 %.2f, %.0f s",
                         ours["model_rmse"], ours["chi2"], ours["wall_s"])
                ratio = ours["model_rmse"] / classic["model_rmse"]
                results[f"{t_name}/{s_name}"] = {
                    "n_picks": data.n_picks, "ratio_model_rmse": ratio,
                    "prior_closest_model_rmse": reach,
                    "ratio_bound": reach / classic["model_rmse"],
                    "classic": without_images(classic), "latent": without_images(ours)}
                rows.append([t_name, s_name, data.n_picks, classic["model_rmse"],
                             ours["model_rmse"], ours["ensemble_model_rmse"], ratio,
                             "yes" if ratio <= 0.5 else "no", reach,
                             reach / classic["model_rmse"],
                             classic["classified_right"], ours["classified_right"],
                             classic["chi2"], ours["chi2"], classic["wall_s"],
                             ours["wall_s"], classic["lam"]])
                fig_rows.append((t_name, s_name, truth, classic, ours))
                for rule, p in ours.get("posterior", {}).items():
                    ratio = p["model_rmse"] / classic["model_rmse"]
                    results[f"{t_name}/{s_name}"][f"ratio_posterior_mean_{rule}"] = ratio
                    log.info("  posterior mean (chains from %s): model RMSE %.3f, %.0f s",
                             rule, p["model_rmse"], p["wall_s"])
                    post_rows.append([t_name, s_name, rule, classic["model_rmse"],
                                      ours["model_rmse"], p["model_rmse"], ratio,
                                      "yes" if ratio <= 0.5 else "no", p["classified_right"],
                                      p["noise_factor"], p["max_rhat"], p["min_ess_bulk"],
                                      p["acceptance"], p["gradient_evals"], p["wall_s"]])
    fig_path = study_dir(STUDY) / f"{args.name}.png"
    figure(fig_rows, fig_path)
    table = md_table(["truth", "survey", "picks", "pyGIMLi model RMSE", "latent model RMSE",
                      "latent ensemble-mean model RMSE", "ratio", "<= 0.5",
                      "prior's closest image RMSE", "ratio bound", "pyGIMLi classified right",
                      "latent classified right", "pyGIMLi chi²", "latent chi²",
                      "pyGIMLi s", "latent s", "pyGIMLi lambda"], rows)
    md = (f"# Classic (pyGIMLi) against latent inversion\n\nCommand: "
          f"`{command_line(__file__, argv)}`\n\nLatent: {args.starts} starts, best start's "
          "model (ratio: its RMSE / pyGIMLi's), and the accepted starts' mean image; "
          "sigma 0.25 ns; model RMSE in facies units (pyGIMLi's clipped to [0, 1]); "
          f"classified right: velocity below {V_MID} m/ns = channel; prior's closest image: "
          "the decoded image nearest to the truth (no inversion with this prior can have "
          f"a lower model RMSE), ratio bound: its RMSE / pyGIMLi's.\n\n{table}\n\n"
          f"Figure: `{fig_path.name}`.\n")
    if post_rows:
        md += (f"\n## Latent posterior mean, rays frozen at the best start's image\n\n"
               f"MALA (Gauss-Newton metric), {args.posterior_chains} chains started from the "
               "accepted starts (repeated) or all from the best start (the image the rays "
               f"are frozen at), {args.posterior_warmup} warm-up + {args.posterior} kept "
               "draws each; "
               "the noise scale sampled (noise factor: its posterior median, times the "
               "picks' 0.25 ns).\n\n" + md_table(
                   ["truth", "survey", "chains from", "pyGIMLi model RMSE",
                    "latent best start", "latent posterior mean", "ratio", "<= 0.5",
                    "classified right", "noise factor", "max R-hat", "min bulk ESS", "acceptance",
                    "gradient evals", "s"], post_rows) + "\n")
    write_results(args.name, {"command": command_line(__file__, argv),
                              "starts": args.starts, "results": results}, md, study=STUDY)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
