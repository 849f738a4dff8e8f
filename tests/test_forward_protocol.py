"""The forward-operator protocol, checked the same way for every operator."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from skvaeinv.forward import (ForwardOperator, MatrixOperator, ShortestPath, StraightRay,
                              straight_ray_kernel)
from skvaeinv.survey import Grid2D, crosshole

GRID = Grid2D((6, 4), 0.5)
RAYS = crosshole(GRID, [0.3, 1.1, 2.6], receiver_depths=[0.2, 1.7, 2.9])


class DiagonalPhysics(ForwardOperator):
    """A user-defined operator in a few lines: times from a fixed kernel times 2."""

    is_linear = True

    def __init__(self, grid, factor=2.0):
        self.grid = grid
        self.factor = factor

    def _jacobian(self, slowness, rays):
        return (self.factor * straight_ray_kernel(self.grid, rays)).tocsr()


def _operators():
    return [
        StraightRay(GRID),
        ShortestPath(GRID, secondary_nodes=2),
        MatrixOperator(straight_ray_kernel(GRID, RAYS), GRID, rays=RAYS),
        DiagonalPhysics(GRID),
    ]


OPS = pytest.mark.parametrize("op", _operators(), ids=lambda o: type(o).__name__)


def _slowness(seed=0):
    return np.random.default_rng(seed).uniform(0.8, 1.5, GRID.shape)


@OPS
def test_shapes_and_batches(op):
    s = _slowness()
    t = op.traveltimes(s, RAYS)
    assert t.shape == (len(RAYS),)
    np.testing.assert_allclose(op.traveltimes(s.ravel(), RAYS), t)
    S = np.stack([s, 1.3 * s])
    T = op.traveltimes(S, RAYS)
    assert T.shape == (2, len(RAYS))
    np.testing.assert_allclose(T[0], t, rtol=1e-12)
    np.testing.assert_allclose(op.traveltimes(S.reshape(2, -1), RAYS), T)


@OPS
def test_t_equals_J_s(op):
    s = _slowness(1)
    J = op.jacobian(s, RAYS)
    assert isinstance(J, sp.csr_matrix) and J.shape == (len(RAYS), GRID.n_cells)
    np.testing.assert_allclose(J @ s.ravel(), op.traveltimes(s, RAYS), rtol=1e-12)


@OPS
def test_jacobian_matches_finite_differences(op):
    s = _slowness(2).ravel()
    J = op.jacobian(s, RAYS)
    d = np.random.default_rng(5).normal(size=s.size)
    eps = 1e-7
    fd = (op.traveltimes(s + eps * d, RAYS) - op.traveltimes(s - eps * d, RAYS)) / (2 * eps)
    np.testing.assert_allclose(fd, J @ d, rtol=1e-5, atol=1e-7)


@OPS
def test_clone(op):
    c = clone(op)
    assert type(c) is type(op)
    np.testing.assert_allclose(c.traveltimes(_slowness(), RAYS), op.traveltimes(_slowness(), RAYS))


@OPS
@pytest.mark.parametrize(
    "rays, match",
    [
        (np.array([[0.0, 0.1, 9.0, 0.1]]), r"rows \[0\].*outside the grid"),
        (np.vstack([RAYS[:2], [[0.0, -0.1, 1.0, 1.0]]]), r"rows \[2\]"),
        (np.array([[0.0, np.nan, 1.0, 1.0]]), "NaN or inf"),
        (np.array([[0.0, 0.1, np.inf, 1.0]]), "NaN or inf"),
        (np.zeros((3, 3)), r"shape \(3, 3\)"),
        ([["a", "b", "c", "d"]], "float"),
        (RAYS + 0j, "Complex data not supported: rays"),
    ],
)
def test_bad_rays(op, rays, match):
    with pytest.raises(ValueError, match=match):
        op.traveltimes(_slowness(), rays)


@OPS
@pytest.mark.parametrize(
    "slowness, match",
    [
        (np.ones((5, 4)), r"shape \(5, 4\)"),
        (np.ones(23), r"shape \(23,\)"),
        (np.ones((2, 3, 5)), "shape"),
        (-np.ones((6, 4)), "finite and > 0"),
        (np.zeros((6, 4)), "finite and > 0"),
        (np.full((6, 4), np.nan), "finite and > 0"),
        (np.full((6, 4), np.inf), "finite and > 0"),
        (None, "slowness"),
        (np.ones((6, 4)) + 1j, "Complex data not supported: slowness"),
    ],
)
def test_bad_slowness(op, slowness, match):
    with pytest.raises(ValueError, match=match):
        op.traveltimes(slowness, RAYS)


def test_jacobian_takes_one_model():
    with pytest.raises(ValueError, match="one model"):
        ShortestPath(GRID).jacobian(np.ones((2, GRID.n_cells)), RAYS)


def test_bad_grid():
    with pytest.raises(ValueError, match=r"grid='not a grid' is not valid; expected a "
                                         r"skvaeinv\.survey\.Grid2D"):
        StraightRay("not a grid").traveltimes(np.ones(24), RAYS)


def test_matrix_operator_subsets_and_errors():
    K = straight_ray_kernel(GRID, RAYS)
    op = MatrixOperator(K.toarray(), GRID, rays=RAYS)
    s = _slowness()
    np.testing.assert_allclose(op.traveltimes(s, RAYS[::-1]), (K @ s.ravel())[::-1])
    with pytest.raises(ValueError, match="not rays of this"):
        op.traveltimes(s, RAYS[:1] * [1, 1, 0.9, 1])
    positional = MatrixOperator(K, GRID)
    np.testing.assert_allclose(positional.traveltimes(s, RAYS), K @ s.ravel())
    with pytest.raises(ValueError, match="needs all"):
        positional.traveltimes(s, RAYS[:2])
    with pytest.raises(ValueError, match="matrix has shape"):
        MatrixOperator(np.ones((9, 5)), GRID).traveltimes(s, RAYS)


def test_matrix_operator_sees_every_new_matrix():
    # the cache is matched by identity: a new array that reuses a freed one's id (which
    # happens within a few tries) must not be served the old matrix's results
    grid = Grid2D((1, 2), 1.0)
    ray = np.array([[0.0, 0.5, 1.0, 0.5]])
    s = np.array([1.0, 10.0])
    op = MatrixOperator(np.array([[1.0, 0.0]]), grid)
    for k in range(50):
        first, second = (1.0, 0.0) if k % 2 else (0.0, 1.0)
        op.set_params(matrix=np.array([[5.0, 5.0]]))  # replaced before being used
        op.set_params(matrix=np.array([[first, second]]))
        np.testing.assert_array_equal(op.traveltimes(s, ray), [first + 10.0 * second])


def test_matrix_operator_reads_negative_zero_as_zero():
    K = straight_ray_kernel(GRID, RAYS)
    op = MatrixOperator(K, GRID, rays=RAYS)
    rays = RAYS[:3].copy()
    assert (rays[:, 0] == 0).all()
    rays[:, 0] = -0.0
    np.testing.assert_allclose(op.traveltimes(_slowness(), rays),
                               StraightRay(GRID).traveltimes(_slowness(), rays))


def test_missing_jacobian_is_reported():
    class Incomplete(ForwardOperator):
        is_linear = True

    with pytest.raises(NotImplementedError, match="_jacobian"):
        Incomplete(GRID).traveltimes(_slowness(), RAYS)


def test_pickling_keeps_the_originals_caches():
    import copy
    import pickle

    s = np.random.default_rng(0).uniform(1, 2, GRID.n_cells)
    for op in (StraightRay(GRID), ShortestPath(GRID, secondary_nodes=1),
               MatrixOperator(straight_ray_kernel(GRID, RAYS), GRID, rays=RAYS)):
        expected = op.traveltimes(s, RAYS)
        caches = {k: v for k, v in vars(op).items() if k in op._cache_attrs}
        assert caches
        for copied in (pickle.loads(pickle.dumps(op)), copy.deepcopy(op)):
            assert not any(k in op._cache_attrs for k in vars(copied))
            np.testing.assert_array_equal(copied.traveltimes(s, RAYS), expected)
        assert all(vars(op)[k] is v for k, v in caches.items())  # still there


def test_operator_shared_between_threads():
    import sys
    import threading

    op = StraightRay(GRID)
    surveys = [RAYS[i:] for i in range(12)]  # more ray sets than the cache holds
    expected = [straight_ray_kernel(GRID, r).sum(axis=1) for r in surveys]
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                k = rng.integers(len(surveys))
                got = op.traveltimes(np.ones(GRID.n_cells), surveys[k])
                np.testing.assert_allclose(got, np.ravel(expected[k]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[0]


def test_more_boundary_checks():
    import torch

    from skvaeinv.forward import TorchForward
    from skvaeinv.petrophysics import LinearVelocity, check_petrophysics
    from skvaeinv.survey import rays_from_sensors

    with pytest.raises(ValueError, match="outside the grid"):
        straight_ray_kernel(GRID, [[-5.0, 1.0, 20.0, 1.0]])
    with pytest.raises(ValueError, match="floating point dtype"):
        TorchForward(StraightRay(GRID), RAYS, dtype=torch.int64)
    with pytest.raises(ValueError, match="not a valid torch device"):
        TorchForward(StraightRay(GRID), RAYS, device="gpu")
    rays = RAYS.copy()
    bridge = TorchForward(ShortestPath(GRID, secondary_nodes=1), rays)
    rays[:] = rays[::-1]  # the bridge keeps its own copy of the survey
    np.testing.assert_array_equal(bridge.rays, RAYS)
    assert bridge(torch.ones(0, GRID.n_cells)).shape == (0, len(RAYS))
    assert ShortestPath(GRID).traveltimes(np.ones((0, GRID.n_cells)), RAYS).shape == \
        (0, len(RAYS))
    for kw, match in [(dict(n_jobs=0), "n_jobs"), (dict(secondary_nodes=True), "bool")]:
        with pytest.raises(ValueError, match=match):
            ShortestPath(GRID, **kw).traveltimes(np.ones(GRID.n_cells), RAYS)
    with pytest.raises(ValueError, match="detach"):
        StraightRay(GRID).traveltimes(torch.ones(GRID.n_cells, requires_grad=True), RAYS)
    with pytest.raises(ValueError, match="rays could not be converted"):
        StraightRay(GRID).validate_rays([[0, 1, 2], [0, 1, 2, 3]])
    with pytest.raises(ValueError, match="depths could not be converted"):
        crosshole(GRID, "abc")
    with pytest.raises(ValueError, match="s_idx"):
        rays_from_sensors([[0, 1], [2, 1]], [np.inf], [1])
    # facies outside [0, 1] and velocity pairs without contrast
    h = LinearVelocity()
    assert h(0.5) == pytest.approx(1 / 0.07) and h([0, 1]).shape == (2,)
    for bad in (4.0, np.array([0, 255]), np.array([np.nan])):
        with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
            h(bad)
    with pytest.raises(ValueError, match="velocities are equal"):
        check_petrophysics((0.06, 0.06))


@pytest.mark.parametrize("make", [StraightRay, lambda g: ShortestPath(g, secondary_nodes=2)],
                         ids=["straight", "shortest"])
def test_float32_sensors_on_the_edge(make):
    # 0.6 m rounds up in float32 (0.6000000238): sensors on the edge of a 6-cell-wide
    # grid given in float32 are still inside, and the times are those of the float64 rays
    grid = Grid2D((12, 6), spacing=0.1)
    rays = crosshole(grid, depths=[0.05, 0.35, 0.75, 1.15])
    rays32 = rays.astype(np.float32)
    assert float(rays32[:, 2].max()) > grid.extent[1]
    s = np.random.default_rng(0).uniform(10, 15, grid.shape)
    op = make(grid)
    np.testing.assert_allclose(op.traveltimes(s, rays32), op.traveltimes(s, rays), rtol=1e-6)
    # beyond rounding it is still an error
    with pytest.raises(ValueError, match="outside the grid"):
        op.traveltimes(s, rays + [0, 0, 1e-5, 0])
    # within it, the point is moved onto the edge (no operator sees it outside): the
    # same times as the ray from the edge, also with a far-off origin
    far = Grid2D((12, 6), spacing=0.1, origin=(1000.3, 20.7))
    edge = crosshole(far, far.extent[2] + np.array([0.05, 0.35]))
    outside = edge - [0.99e-6 * far.spacing, 0, 0, 0]
    np.testing.assert_array_equal(make(far).validate_rays(outside), edge)
    np.testing.assert_array_equal(make(far).traveltimes(s, outside),
                                  make(far).traveltimes(s, edge))
