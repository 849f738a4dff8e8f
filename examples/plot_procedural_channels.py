"""
Procedural training images
==========================

:func:`skvaeinv.datasets.make_channels` is the package's built-in training data:
sinuous channels (1) in a matrix (0), with controls for width, proportion,
sinuosity and orientation. No download needed, and the same ``random_state`` gives the
same images.
"""

import matplotlib.pyplot as plt

from skvaeinv.datasets import make_channels
from skvaeinv.plotting import plot_models

images = make_channels(6, shape=(129, 65), random_state=0)
fig = plot_models(images, titles=[f"p = {m.mean():.2f}" for m in images])

# %%
# Thicker, straighter, steeper channels and a lower channel proportion:
other = make_channels(6, shape=(129, 65), width=(10, 14), sinuosity=0.03, orientation=30,
                      proportion=0.15, random_state=0)
fig = plot_models(other, titles=[f"p = {m.mean():.2f}" for m in other])
plt.show()
