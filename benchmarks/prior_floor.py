"""The prior's misfit floor: how well can its decoder represent the truths?

For each prior file (checkpoints of one training run), side by side in one run:

* **encoded**: each truth (``--truths``, default mc1-mc3) is encoded (``transform``, the
  latent mean) and decoded again; the straight-ray data RMSE (ns, the study's 625-ray
  survey, against the checked reference traveltimes) and model RMSE of that decoded image;
* **closest**: the model RMSE of the decoded image nearest to the truth in model space
  (``_common.closest_decoded``: Adam on the image misfit from the encoded code),
  whatever the data: no latent inversion with this prior has a lower model RMSE;
* **refined**: the best latent code that gradient descent finds starting from that
  encoded code (``LatentInverter`` with ``init`` the code, Adam on all rays, no
  regularisation, ``--refine-epochs`` iterations): the lowest data misfit any optimiser
  can expect from this prior near the truth;
* **held-in crops**: the same encoded floor (data and model RMSE) for ``--n-crops``
  crops of the training band (seed 11), their mean;
* **held-out crops**: the same for ``--n-crops`` crops of the validation band (rows
  1900-2499, never trained on; seed 11), their mean, and where each truth's encoded data
  RMSE falls among them (its percentile). The truths' windows are excluded from training
  too, so they are held out in the same way; the gap between the two crop columns is
  what training on the truths' own pixels (as a prior trained on the whole image would)
  could buy.

Then the trend of the refined data RMSE of mc1-mc3 with training length: a power law
``rmse = a * n^-b`` fitted in log-log to the checkpoints from ``--trend-from`` crops
on, with its predictions for 3 M and 10 M crops.

Usage::

    python benchmarks/prior_floor.py --priors /tmp/train/prior_1000k.skv \\
        /tmp/train/prior_1250k.skv ... --name prior_floor
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (closest_decoded, command_line, md_table,  # noqa: E402
                     require_shared, slowness, training_crops, TRUTH_SHAPE, VALID_ROWS,
                     write_results)

from skvaeinv import LatentInverter, VAEPrior  # noqa: E402
from skvaeinv.datasets import extract_patches, load_training_image  # noqa: E402
from skvaeinv.forward import StraightRay  # noqa: E402
from skvaeinv.survey import Grid2D  # noqa: E402

log = logging.getLogger("prior_floor")
TRUTHS = ("mc1", "mc2", "mc3")
ALL_TRUTHS = ("mc1", "mc2", "mc3", "mv1", "mv2", "mv3")
GRID = Grid2D((129, 65), spacing=0.1)


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, float) - b) ** 2)))


def encoded_floor(prior: VAEPrior, images: np.ndarray, rays: np.ndarray,
                  times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Codes, data RMSE and model RMSE of each image re-decoded from its code."""
    codes = prior.transform(images)
    decoded = prior.inverse_transform(codes)
    predicted = StraightRay(GRID).traveltimes(slowness(decoded), rays)
    data = np.sqrt(np.mean((predicted - times) ** 2, axis=1))
    model = np.sqrt(np.mean((decoded - images) ** 2, axis=(1, 2)))
    return codes, data, model


def refined_floor(prior: VAEPrior, code: np.ndarray, rays: np.ndarray, times: np.ndarray,
                  truth: np.ndarray, epochs: int) -> tuple[float, float]:
    """Data and model RMSE of the best code found by full-batch Adam from ``code``."""
    inv = LatentInverter(prior, StraightRay(GRID), n_starts=1, init=code, epochs=epochs,
                         batch_size=len(rays), lr=0.01, lr_decay=0.99, reg=None,
                         optimizer="adam", device="cpu", random_state=0)
    inv.fit(rays, times)
    return float(inv.data_rmse_[0]), _rmse(inv.model_, truth)


def crop_floor(prior: VAEPrior, crops: np.ndarray, rays: np.ndarray,
               times: np.ndarray) -> tuple[dict, np.ndarray]:
    """Mean encoded floor of ``crops`` (data / model RMSE, code norm); data RMSE per crop."""
    codes, data, model = encoded_floor(prior, crops, rays, times)
    return ({"encoded_data_rmse": float(data.mean()), "encoded_model_rmse": float(model.mean()),
             "code_norm": float(np.linalg.norm(codes, axis=1).mean())}, data)


def evaluate(path: str, truths: dict, rays: np.ndarray, ref: dict, crops: dict,
             epochs: int) -> dict:
    prior = VAEPrior.load(path, device="cpu")
    t0 = time.perf_counter()
    images = np.stack(list(truths.values()))
    times = np.stack([ref[n] for n in truths])
    codes, data, model = encoded_floor(prior, images, rays, times)
    _, closest = closest_decoded(prior, images, codes=codes)
    row = {"file": Path(path).name, "n_images_seen": int(prior.n_images_seen_)}
    for i, name in enumerate(truths):
        refined = refined_floor(prior, codes[i], rays, times[i], images[i], epochs)
        row[name] = {"encoded_data_rmse": float(data[i]), "encoded_model_rmse": float(model[i]),
                     "refined_data_rmse": refined[0], "refined_model_rmse": refined[1],
                     "closest_model_rmse": float(closest[i]),
                     "code_norm": float(np.linalg.norm(codes[i]))}
    row["crops"], _ = crop_floor(prior, crops["held_in"][0], rays, crops["held_in"][1])
    row["held_out_crops"], held_out = crop_floor(prior, crops["held_out"][0], rays,
                                                 crops["held_out"][1])
    for i, name in enumerate(truths):
        row[name]["held_out_percentile"] = float(100 * np.mean(held_out < data[i]))
    row["beta"] = float(prior.beta)
    row["seconds"] = time.perf_counter() - t0
    log.info("%s: %s", path, row)
    return row


def trend(rows: list[dict], start: int, truths: tuple[str, ...] = TRUTHS) -> dict:
    """Power law ``a n^-b`` of the refined data RMSE per truth, and its predictions."""
    out = {}
    use = [r for r in rows if r["n_images_seen"] >= start]
    if len({r["n_images_seen"] for r in use}) < 2:
        return out
    n = np.array([r["n_images_seen"] for r in use], dtype=float)
    for name in truths:
        y = np.array([r[name]["refined_data_rmse"] for r in use])
        slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
        out[name] = {"exponent": float(-slope),
                     **{f"predicted_{m}M": float(np.exp(intercept) * (m * 1e6) ** slope)
                        for m in (3, 10)}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--priors", nargs="+", required=True)
    ap.add_argument("--refine-epochs", type=int, default=1000)
    ap.add_argument("--n-crops", type=int, default=50)
    ap.add_argument("--trend-from", type=int, default=1_000_000)
    ap.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=ALL_TRUTHS)
    ap.add_argument("--name", default="prior_floor")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    shared = require_shared()
    ref = dict(np.load(shared / "reference" / "straight_ray_traveltimes.npz"))
    rays = ref["geometry"]
    truths = {n: np.load(shared / "truth" / f"{n}.npy") for n in args.truths}
    ti = load_training_image(shared / "ti.png")
    crops = {"held_in": training_crops(ti)(args.n_crops, 11),
             "held_out": extract_patches(ti, TRUTH_SHAPE, args.n_crops, rows=VALID_ROWS,
                                         random_state=11)}
    crops = {k: (c, StraightRay(GRID).traveltimes(slowness(c), rays))
             for k, c in crops.items()}
    rows = [evaluate(p, truths, rays, ref, crops, args.refine_epochs) for p in args.priors]
    rows.sort(key=lambda r: r["n_images_seen"])
    fit = trend(rows, args.trend_from, tuple(args.truths))
    md = _markdown(rows, fit, command_line(__file__, argv), args)
    write_results(args.name, {"command": command_line(__file__, argv), "rows": rows,
                              "trend": fit, "refine_epochs": args.refine_epochs}, md,
                  study="prior_floor")
    print(md)
    return 0


def _markdown(rows: list[dict], fit: dict, command: str, args) -> str:
    names = args.truths
    table = []
    for r in rows:
        cells = [r["file"], f"{r['n_images_seen'] / 1e6:.3g} M", f"{r.get('beta', 1000):g}"]
        for name in names:
            t = r[name]
            closest = t.get("closest_model_rmse")
            cells.append(f"{t['encoded_data_rmse']:.3f} / {t['refined_data_rmse']:.3f} / "
                         f"{t['refined_model_rmse']:.3f}"
                         + (f" / {closest:.3f}" if closest is not None else ""))
        cells.append(f"{r['crops']['encoded_data_rmse']:.3f} / "
                     f"{r['crops']['encoded_model_rmse']:.3f}")
        cells.append(f"{r['crops']['code_norm']:.2f}" if "code_norm" in r["crops"] else "")
        held_out = r.get("held_out_crops")
        cells.append(f"{held_out['encoded_data_rmse']:.3f} / {held_out['encoded_model_rmse']:.3f}"
                     if held_out else "")
        cells.append(" / ".join(f"{r[n]['held_out_percentile']:.0f}" for n in names)
                     if held_out else "")
        table.append(cells)
    md = ("# The prior's misfit floor against training length\n\n"
          f"Command: `{command}`\n\n"
          "Per truth: data RMSE (ns) of the re-decoded code / data RMSE after "
          f"{args.refine_epochs} full-batch Adam iterations from that code / model RMSE "
          "there / model RMSE of the decoded image closest to the truth (no inversion with "
          "this prior can have a lower one). Held-in crops: mean encoded data / model "
          f"RMSE of {args.n_crops} "
          "training-band crops; code norm: their mean ||z|| (the shell the inversion's "
          "ring should pull towards; N(0, I)'s is 4.42 in 20 dimensions). Held-out crops: "
          f"the same for {args.n_crops} crops of the validation band (never trained on); "
          f"percentile: where {' / '.join(names)}'s encoded data RMSE falls among "
          "them.\n\n"
          + md_table(["file", "crops seen", "beta", *names, "held-in crops", "code norm",
                      "held-out crops", "truths' percentile"], table) + "\n")
    if fit:
        md += ("\nPower-law trend of the refined data RMSE (checkpoints from "
               f"{args.trend_from / 1e6:g} M crops):\n\n"
               + md_table(["truth", "exponent b", "predicted at 3 M", "predicted at 10 M"],
                          [[n, f"{v['exponent']:.3f}", f"{v['predicted_3M']:.3f}",
                            f"{v['predicted_10M']:.3f}"] for n, v in fit.items()]) + "\n")
    return md


if __name__ == "__main__":
    sys.exit(main())
