"""Tests for skvaeinv.survey: grid geometry and ray layouts."""

import numpy as np
import pytest

from skvaeinv.survey import Grid2D, crosshole, rays_from_sensors


def test_grid_properties():
    grid = Grid2D(shape=(4, 3), spacing=0.5, origin=(1.0, 2.0))
    assert (grid.nz, grid.nx, grid.n_cells) == (4, 3, 12)
    assert grid.extent == (1.0, 2.5, 2.0, 4.0)
    np.testing.assert_allclose(grid.x_edges, [1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(grid.z_edges, [2.0, 2.5, 3.0, 3.5, 4.0])
    np.testing.assert_allclose(grid.x_centers, [1.25, 1.75, 2.25])
    np.testing.assert_allclose(grid.z_centers, [2.25, 2.75, 3.25, 3.75])
    assert grid == Grid2D((4, 3), 0.5, (1.0, 2.0))
    assert hash(grid) == hash(Grid2D((4, 3), 0.5, (1.0, 2.0)))
    assert grid != Grid2D((4, 3), 0.5)
    assert "Grid2D" in repr(grid)


def test_grid_contains_and_cell_index():
    grid = Grid2D((2, 2), 1.0)
    pts = np.array([[0, 0], [2, 2], [1.0, 0.5], [2.0 + 1e-3, 1], [np.nan, 1]])
    np.testing.assert_array_equal(grid.contains(pts), [True, True, True, False, False])
    # row-major index; points on an interior boundary belong to the lower index
    idx = grid.cell_index([[0.5, 0.5], [1.5, 0.5], [0.5, 1.5], [1.0, 1.0], [0.0, 0.0], [2, 2]])
    np.testing.assert_array_equal(idx, [0, 1, 2, 0, 0, 3])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        grid.cell_index([[0.5, 0.5], [3.0, 0.5]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (0, 3)}, "shape"),
        ({"shape": (3,)}, "shape"),
        ({"shape": (2.5, 3)}, "shape"),
        ({"spacing": 0.0}, "spacing"),
        ({"spacing": np.nan}, "spacing"),
        ({"origin": (0.0, np.inf)}, "origin"),
        ({"origin": (0.0,)}, "origin"),
    ],
)
def test_grid_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Grid2D(**kwargs)


def test_crosshole_layout_matches_reference_geometry():
    grid = Grid2D((129, 65), 0.1)
    depths = np.arange(0.5, 12.51, 0.5)
    rays = crosshole(grid, depths, source_x=0.01, receiver_x=6.49)
    assert rays.shape == (625, 4)
    # source-major: ray i * 25 + j joins source i to receiver j
    np.testing.assert_allclose(rays[26], [0.01, 1.0, 6.49, 1.0])
    np.testing.assert_allclose(rays[1], [0.01, 0.5, 6.49, 1.0])
    default = crosshole(grid, depths)
    assert default[0, 0] == 0.0 and default[0, 2] == 6.5


def test_crosshole_receiver_depths_and_errors():
    grid = Grid2D((10, 5), 1.0)
    rays = crosshole(grid, [1, 2], receiver_depths=[3, 4, 5])
    assert rays.shape == (6, 4)
    np.testing.assert_allclose(rays[:, 3], [3, 4, 5, 3, 4, 5])
    with pytest.raises(ValueError, match=r"outside the grid"):
        crosshole(grid, [1, 11])
    with pytest.raises(ValueError, match="NaN or inf"):
        crosshole(grid, [1, np.nan])
    with pytest.raises(ValueError, match="source_x"):
        crosshole(grid, [1], source_x=np.inf)
    with pytest.raises(ValueError, match=r"grid='grid' is not valid; expected a "
                                         r"skvaeinv\.survey\.Grid2D"):
        crosshole("grid", [1])


def test_rays_from_sensors():
    sensors = [[0.0, 1.0], [0.0, 2.0], [5.0, 1.5]]
    rays = rays_from_sensors(sensors, [0, 1], [2, 2])
    np.testing.assert_allclose(rays, [[0, 1, 5, 1.5], [0, 2, 5, 1.5]])
    with pytest.raises(ValueError, match="g_idx"):
        rays_from_sensors(sensors, [0], [3])
    with pytest.raises(ValueError, match=r"s_idx holds indices outside \[0, 2\] \(min 0.0, "
                                         r"max 1e\+30\)"):
        rays_from_sensors(sensors, [0, 1e30], [2, 2])   # reported as given, not cast
    with pytest.raises(ValueError, match="same length"):
        rays_from_sensors(sensors, [0, 1], [2])
    with pytest.raises(ValueError, match="rows"):
        rays_from_sensors([[0, np.nan]], [0], [0])
    with pytest.raises(ValueError, match="sensors"):
        rays_from_sensors([0, 1, 2], [0], [0])


def test_grid_for_sensors_covers_and_centres():
    from skvaeinv.survey import grid_for_sensors

    sensors = np.array([[0.3, 0.5], [6.4, 12.5], [0.8, 6.0], [6.2, 1.0]])
    grid = grid_for_sensors(sensors, (129, 65), 0.1)
    assert grid.shape == (129, 65) and grid.spacing == 0.1
    assert grid.contains(sensors).all()
    x0, x1, z0, z1 = grid.extent
    assert (sensors[:, 0].min() - x0) == pytest.approx(x1 - sensors[:, 0].max())
    assert (sensors[:, 1].min() - z0) == pytest.approx(z1 - sensors[:, 1].max())
    with pytest.raises(ValueError, match=r"span 6.1 m x 12 m .* cells of at least 0.09531 m"):
        grid_for_sensors(sensors, (128, 64), 0.05)
    with pytest.raises(ValueError, match="non-finite"):
        grid_for_sensors([[0, np.nan]], (10, 10), 0.1)
