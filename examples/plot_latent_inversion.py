"""
Inversion in the latent space of a VAE prior
============================================

A small end-to-end run: train a tiny :class:`~skvaeinv.VAEPrior` on procedural
channels, simulate straight-ray traveltimes through a held-out channel model, and invert
them with :class:`~skvaeinv.LatentInverter` from several random starts. (Real runs use
the 129 x 65 reference network and many more training images; see ``benchmarks/``.)
"""

import matplotlib.pyplot as plt
import numpy as np

from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.datasets import make_channels
from skvaeinv.forward import StraightRay
from skvaeinv.petrophysics import LinearVelocity
from skvaeinv.plotting import plot_history, plot_inversion
from skvaeinv.survey import Grid2D, crosshole

shape = (32, 16)
channels = dict(width=(3, 5), wavelength=(20, 60))
images = make_channels(1000, shape=shape, random_state=0, **channels)
prior = VAEPrior(latent_dim=8, beta=50.0, epochs=8, batch_size=50, lr=3e-3,
                 base_channels=8, hidden_units=64, device="cpu", random_state=0)
prior.fit(images)

# %%
# A held-out truth and its noise-free straight-ray traveltimes.
grid = Grid2D(shape=shape, spacing=0.1)
rays = crosshole(grid, depths=np.arange(0.15, 3.2, 0.2))
truth = make_channels(1, shape=shape, random_state=123, **channels)[0]
traveltimes = StraightRay(grid).traveltimes(LinearVelocity()(truth), rays)

# %%
# Invert from 8 random starts with the study's schedule (shorter).
inv = LatentInverter(prior, StraightRay(grid), n_starts=8, epochs=40, batch_size=16,
                     lr=5e-2, lr_decay=0.95, reg="ring", reg_weight=10.0, reg_decay=0.99,
                     device="cpu", random_state=0)
inv.fit(rays, traveltimes)
print("data RMSE per start (ns):", np.round(inv.data_rmse_, 3))
print("model RMSE of the best start:", np.sqrt(np.mean((inv.model_ - truth) ** 2)).round(3))
fig = plot_inversion(inv, truth=truth, threshold=2 * inv.data_rmse_.min())

# %%
# The history: data RMSE, ``||z||`` (pulled to the ring of radius E[chi_8]), learning
# rate and regularisation weight per iteration.
fig = plot_history(inv)
plt.show()
