"""Tests for skvaeinv.forward.StraightRay: exact intersection lengths."""


import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from skvaeinv.forward import StraightRay, straight_ray_kernel
from skvaeinv.survey import Grid2D, crosshole

MODELS = ["mc1", "mc2", "mc3", "mv1", "mv2", "mv3"]


def _slowness(m):
    return 1.0 / (0.06 + 0.02 * (1.0 - m))


def test_reference_kernel_and_traveltimes(shared_data):
    grid = Grid2D((129, 65), 0.1)
    rays = crosshole(grid, np.arange(0.5, 12.51, 0.5), source_x=0.01, receiver_x=6.49)
    ref = np.load(shared_data / "reference" / "straight_ray_traveltimes.npz")
    np.testing.assert_allclose(rays, ref["geometry"], atol=1e-12)
    K = sp.load_npz(shared_data / "reference" / "straight_ray_kernel.npz")
    op = StraightRay(grid)
    J = op.jacobian(None, rays)
    assert isinstance(J, sp.csr_matrix) and J.shape == K.shape
    assert abs(J - K).max() <= 1e-9
    S = np.stack([_slowness(np.load(shared_data / "truth" / f"{m}.npy")) for m in MODELS])
    T = op.traveltimes(S, rays)  # a batch of six models
    for m, t in zip(MODELS, T):
        np.testing.assert_allclose(t, ref[m], rtol=0, atol=1e-9)
    np.testing.assert_allclose(T[1, :3], [87.2083, 89.5571, 89.1260], atol=1e-4)


def test_homogeneous_times_are_distance_times_slowness():
    grid = Grid2D((6, 4), 0.5)
    rays = crosshole(grid, [0.3, 1.1, 2.9], source_x=0.1, receiver_x=1.9)
    t = StraightRay(grid).traveltimes(np.full(grid.shape, 3.0), rays)
    dist = np.hypot(rays[:, 2] - rays[:, 0], rays[:, 3] - rays[:, 1])
    np.testing.assert_allclose(t, 3.0 * dist, rtol=1e-13)


def test_boundary_vertical_horizontal_and_zero_length_rays():
    grid = Grid2D((3, 3), 1.0)
    rays = np.array(
        [
            [0.0, 1.0, 3.0, 1.0],  # along the interior line z = 1: the row above
            [0.0, 0.0, 3.0, 0.0],  # along the top edge: row 0
            [0.0, 3.0, 3.0, 3.0],  # along the bottom edge: row 2
            [2.0, 0.0, 2.0, 3.0],  # along the interior line x = 2: the column left
            [0.5, 0.2, 0.5, 2.7],  # vertical inside column 0
            [0.0, 0.0, 3.0, 3.0],  # diagonal through grid nodes
            [1.2, 1.2, 1.2, 1.2],  # zero length
            [3.0, 2.5, 0.0, 2.5],  # right to left
        ]
    )
    J = StraightRay(grid).jacobian(None, rays).toarray().reshape(len(rays), 3, 3)
    expect = np.zeros_like(J)
    expect[0, 0, :] = 1
    expect[1, 0, :] = 1
    expect[2, 2, :] = 1
    expect[3, :, 1] = 1
    expect[4, 0, 0], expect[4, 1, 0], expect[4, 2, 0] = 0.8, 1.0, 0.7
    expect[5][np.eye(3, dtype=bool)] = np.sqrt(2)
    expect[7, 2, :] = 1
    np.testing.assert_allclose(J, expect, atol=1e-14)


def test_kernel_is_cached_per_ray_set():
    grid = Grid2D((4, 4), 1.0)
    op = StraightRay(grid)
    rays = crosshole(grid, [0.5, 1.5])
    J1 = op._jacobian(None, op.validate_rays(rays))
    J2 = op._jacobian(None, op.validate_rays(rays.copy()))
    assert J1 is J2
    # the public method hands out a copy, safe to modify
    Jp = op.jacobian(None, rays)
    Jp.data[:] = 0
    assert op.jacobian(None, rays).sum() > 0


def test_chunking_gives_the_same_kernel(monkeypatch):
    grid = Grid2D((5, 7), 0.3)
    rng = np.random.default_rng(1)
    rays = rng.uniform([0, 0, 0, 0], [2.1, 1.5, 2.1, 1.5], size=(40, 4))
    full = straight_ray_kernel(grid, rays)
    import skvaeinv.forward.straight_ray as mod

    monkeypatch.setattr(mod, "_CHUNK_ENTRIES", 30)
    assert abs(straight_ray_kernel(grid, rays) - full).max() < 1e-15


_coord = st.floats(0.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_coord, _coord, _coord, _coord), min_size=1, max_size=20),
       st.sampled_from([(3, 5, 0.25), (4, 4, 1.0), (1, 6, 0.1)]))
def test_row_sums_are_ray_lengths(unit_rays, geometry):
    nz, nx, h = geometry
    grid = Grid2D((nz, nx), h, origin=(-0.3, 1.7))
    x0, x1, z0, z1 = grid.extent
    u = np.asarray(unit_rays)
    rays = np.column_stack([x0 + u[:, 0] * (x1 - x0), z0 + u[:, 1] * (z1 - z0),
                            x0 + u[:, 2] * (x1 - x0), z0 + u[:, 3] * (z1 - z0)])
    J = StraightRay(grid).jacobian(None, rays)
    lengths = np.hypot(rays[:, 2] - rays[:, 0], rays[:, 3] - rays[:, 1])
    np.testing.assert_allclose(np.asarray(J.sum(axis=1)).ravel(), lengths, rtol=1e-12,
                               atol=1e-12)
    assert (J.data >= 0).all()
    # no cell gets more than the cell's diagonal
    assert (J.data <= h * np.sqrt(2) * (1 + 1e-12)).all()
