"""
Straight rays and bent rays
===========================

Two forward operators share one protocol: :class:`~skvaeinv.forward.StraightRay`
(linear: the Jacobian is the fixed ray-length matrix) and
:class:`~skvaeinv.forward.ShortestPath` (nonlinear: rays bend towards fast zones, so the
Jacobian depends on the model). Both give the Jacobian ``J`` with ``t = J s``; summing
its rows over rays shows where the rays go.
"""

import matplotlib.pyplot as plt
import numpy as np

from skvaeinv.datasets import make_channels
from skvaeinv.forward import ShortestPath, StraightRay
from skvaeinv.petrophysics import LinearVelocity
from skvaeinv.survey import Grid2D, crosshole

grid = Grid2D(shape=(60, 30), spacing=0.1)
rays = crosshole(grid, depths=np.arange(0.5, 5.6, 0.5))
model = make_channels(1, shape=grid.shape, width=(4, 6), random_state=3)[0]
slowness = LinearVelocity()(model)

straight, bent = StraightRay(grid), ShortestPath(grid, secondary_nodes=3)
t_straight = straight.traveltimes(slowness, rays)
t_bent = bent.traveltimes(slowness, rays)
J_straight, J_bent = straight.jacobian(slowness, rays), bent.jacobian(slowness, rays)
print("t = J s holds:", np.allclose(J_bent @ slowness.ravel(), t_bent))
print("bent rays are faster on average by", f"{np.mean(t_straight - t_bent):.3f} ns")

fig, axes = plt.subplots(1, 4, figsize=(12, 4))
extent = [0, 3, 6, 0]
axes[0].imshow(model, cmap="gray_r", extent=extent)
axes[0].set_title("facies (1 = channel)")
for ax, J, name in ((axes[1], J_straight, "straight"), (axes[2], J_bent, "shortest path")):
    ax.imshow(np.asarray(J.sum(axis=0)).reshape(grid.shape), cmap="viridis", extent=extent)
    ax.set_title(f"ray coverage, {name}")
axes[3].plot(t_straight, t_bent, ".")
axes[3].plot([t_bent.min(), t_bent.max()], [t_bent.min(), t_bent.max()], "k--")
axes[3].set_xlabel("straight-ray time (ns)")
axes[3].set_ylabel("shortest-path time (ns)")
fig.tight_layout()
plt.show()
