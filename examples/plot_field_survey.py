"""
A field survey, from its file to the figure
============================================

Picked first arrivals usually arrive as a pyGIMLi data file (``.sgt``): the sensors,
then one row per pick with its source, receiver, time and picking error. Here the file
is that of an irregular survey, made to rehearse with: the source borehole deviates by
0.5 m over its length, the sensors sit between the grid nodes every 0.4 m, 10 % of the
picks are missing, and each pick has an error of 0.3 ns + 1 % of its time.

The command line does the rest, as for a real survey::

    skvaeinv invert survey.sgt --prior prior.skv --spacing 0.2 --out result

It places the prior's image over the sensors, weighs each pick by ``1 / σ²``, accepts
the starts that fit as well as the data allow, and writes the result folder
(``result.npz``, ``cells.csv``, ``report.json``, ``figure.png``), all or nothing.
"""

import json
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from skvaeinv import cli
from skvaeinv.datasets import make_channels
from skvaeinv.demo import DEMO, DEMO_PRIOR_FILE
from skvaeinv.forward import StraightRay
from skvaeinv.io import read_sgt, simulate, write_sgt
from skvaeinv.petrophysics import LinearVelocity
from skvaeinv.survey import Grid2D

folder = Path(tempfile.mkdtemp())

# %%
# The survey file
# ---------------
# A truth on the demo's grid (65 x 33 cells of 0.2 m) and the irregular survey.
grid = Grid2D(DEMO["shape"], DEMO["spacing"])
truth = make_channels(1, shape=DEMO["shape"], random_state=DEMO["truth_seed"],
                      **DEMO["channels"])[0].astype(float)
z = np.arange(0.45, 12.6, 0.4)
left = np.column_stack([0.05 + 0.5 * z / z[-1], z])          # deviated borehole
right = np.column_stack([np.full(z.size, 6.43), z + 0.1])
sensors = np.vstack([left, right])
src, rec = np.meshgrid(np.arange(z.size), z.size + np.arange(z.size), indexing="ij")
keep = np.sort(np.random.default_rng(0).permutation(src.size)[: int(0.9 * src.size)])
data = simulate(StraightRay(grid), LinearVelocity()(truth), sensors, src.ravel()[keep],
                rec.ravel()[keep], absolute=0.3, relative=0.01, random_state=1)
write_sgt(folder / "survey.sgt", data)
print((folder / "survey.sgt").read_text()[:120] + "...")
print(f"{read_sgt(folder / 'survey.sgt').n_picks} picks between {data.n_sensors} sensors")

# %%
# Invert it from the command line
# -------------------------------
# (``cli.main`` runs the ``skvaeinv`` command inside this process; few starts and
# epochs keep the example short.)
cli.main(["invert", str(folder / "survey.sgt"), "--prior", str(DEMO_PRIOR_FILE),
          "--spacing", "0.2", "--out", str(folder / "result"), "--starts", "6",
          "--epochs", "40"])
report = json.loads((folder / "result" / "report.json").read_text())
print(json.dumps({k: report[k] for k in ("survey", "grid", "accepted")}, indent=1))
print(f"chi² per datum of the best start: {report['fit']['chi2_per_datum_best']:.2f}")

# %%
# The figure it wrote: sensors over the best model, where the accepted starts agree on
# a channel (their agreement, not a probability: ``skvaeinv sample`` gives the
# posterior), and the misfit of every start.
fig, ax = plt.subplots(figsize=(10, 4))
ax.imshow(plt.imread(folder / "result" / "figure.png"))
ax.set_axis_off()

# %%
# The model cell by cell, as a table for other software:
print((folder / "result" / "cells.csv").read_text().splitlines()[:4])
