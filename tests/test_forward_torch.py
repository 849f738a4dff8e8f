"""Tests for the torch autograd bridge skvaeinv.forward.TorchForward."""

import warnings

import numpy as np
import pytest
import torch

from skvaeinv.forward import MatrixOperator, ShortestPath, StraightRay, TorchForward
from skvaeinv.survey import Grid2D, crosshole

GRID = Grid2D((4, 3), 0.5)
RAYS = crosshole(GRID, [0.3, 1.1, 1.9], receiver_depths=[0.2, 1.0, 1.7])


def _slowness(B, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (0.8 + 0.7 * torch.rand(B, GRID.n_cells, generator=g)).to(dtype)


@pytest.mark.parametrize("op", [StraightRay(GRID), ShortestPath(GRID, secondary_nodes=2)],
                         ids=["straight", "shortest"])
def test_matches_numpy_and_gradient_is_Jt_g(op):
    fwd = TorchForward(op, RAYS, dtype=torch.float64)
    assert fwd.n_rays == 9
    S = _slowness(3).requires_grad_(True)
    idx = torch.tensor([[0, 4, 8], [1, 1, 2], [7, 3, 5]])
    t = fwd(S, idx)
    assert t.shape == (3, 3)
    g = torch.randn(3, 3, dtype=torch.float64)
    (t * g).sum().backward()
    for b in range(3):
        s_b = S[b].detach().numpy()
        rays_b = RAYS[idx[b].numpy()]
        np.testing.assert_allclose(t[b].detach().numpy(), op.traveltimes(s_b, rays_b),
                                   rtol=1e-12)
        J = op.jacobian(s_b, rays_b)
        np.testing.assert_allclose(S.grad[b].numpy(), J.T @ g[b].numpy(), rtol=1e-10,
                                   atol=1e-12)
    full = fwd.full(S.detach())
    assert full.shape == (3, 9)
    np.testing.assert_allclose(full[0].numpy(), op.traveltimes(S[0].detach().numpy(), RAYS),
                               rtol=1e-12)


@pytest.mark.parametrize("op", [StraightRay(GRID), ShortestPath(GRID, secondary_nodes=1)],
                         ids=["straight", "shortest"])
def test_gradcheck(op):
    fwd = TorchForward(op, RAYS, dtype=torch.float64)
    S = _slowness(2, seed=1).requires_grad_(True)
    idx = torch.tensor([[0, 5, 8, 2], [3, 3, 6, 1]])
    assert torch.autograd.gradcheck(lambda s: fwd(s, idx), (S,), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda s: fwd(s), (S,), eps=1e-6, atol=1e-6)


def test_float32_default_and_shared_index():
    fwd = TorchForward(StraightRay(GRID), RAYS)
    S = _slowness(2, dtype=torch.float32)
    t = fwd(S, torch.tensor([0, 2]))  # a 1-D index is shared by all starts
    assert t.dtype == torch.float32 and t.shape == (2, 2)
    t64 = TorchForward(StraightRay(GRID), RAYS, dtype=torch.float64)(S.double(), [0, 2])
    np.testing.assert_allclose(t.numpy(), t64.numpy(), rtol=1e-6)


@pytest.mark.parametrize("kernel", ["dense", "sparse"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64])
def test_any_integer_ray_index_dtype(kernel, dtype):
    # uint8 must not be read as a boolean mask, int16 not be refused by torch
    fwd = TorchForward(StraightRay(GRID), RAYS, dtype=torch.float64, kernel=kernel)
    S = _slowness(2)
    idx = np.array([[0, 3], [5, 1]])
    expected = fwd(S, torch.from_numpy(idx))
    torch.testing.assert_close(fwd(S, idx.astype(dtype)), expected, rtol=0, atol=0)


def test_user_operator_through_bridge():
    from skvaeinv.forward import straight_ray_kernel

    K = straight_ray_kernel(GRID, RAYS)
    fwd = TorchForward(MatrixOperator(K, GRID, rays=RAYS), RAYS, dtype=torch.float64)
    S = _slowness(1)
    np.testing.assert_allclose(fwd.full(S)[0].numpy(), K @ S[0].numpy(), rtol=1e-12)


def test_sparse_kernel_matches_dense():
    dense = TorchForward(StraightRay(GRID), RAYS, dtype=torch.float64, kernel="dense")
    sparse = TorchForward(StraightRay(GRID), RAYS, dtype=torch.float64, kernel="sparse")
    assert sparse._sparse and not dense._sparse
    S = _slowness(2).requires_grad_(True)
    S2 = S.detach().clone().requires_grad_(True)
    idx = torch.tensor([[0, 1, 8], [2, 3, 3]])
    g = torch.randn(2, 3, dtype=torch.float64)
    t = sparse(S, idx)
    (t * g).sum().backward()
    (dense(S2, idx) * g).sum().backward()
    np.testing.assert_allclose(t.detach().numpy(), dense(S2.detach(), idx).numpy(),
                               rtol=1e-14)
    np.testing.assert_allclose(S.grad.numpy(), S2.grad.numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(sparse.full(S.detach()).numpy(), dense.full(S2.detach()).numpy(),
                               rtol=1e-14)
    assert torch.autograd.gradcheck(lambda s: sparse(s), (S.detach().requires_grad_(True),),
                                    eps=1e-6, atol=1e-6)
    # float32 slowness against the float64 kernel: converted on the fly
    t32 = sparse(S.detach().float(), idx)
    assert t32.dtype == torch.float32
    np.testing.assert_allclose(t32.numpy(), t.detach().numpy(), rtol=1e-6)


def test_auto_kernel_choice(monkeypatch):
    import skvaeinv.forward._torch as mod

    # the 12-cell toy kernel is ~50 % full: dense; a crosshole kernel on a finer grid
    # is mostly empty: CSR
    assert not TorchForward(StraightRay(GRID), RAYS)._sparse
    big = Grid2D((40, 20), 0.25)
    rays = crosshole(big, np.linspace(0.5, 9.5, 8))
    fwd = TorchForward(StraightRay(big), rays)
    assert fwd._sparse
    # too many entries for a dense kernel: sparse whatever the fill
    monkeypatch.setattr(mod, "_DENSE_LIMIT", 10)
    assert TorchForward(StraightRay(GRID), RAYS)._sparse
    with pytest.raises(ValueError, match="kernel must be"):
        TorchForward(StraightRay(GRID), RAYS, kernel="csr")


def test_bad_inputs():
    fwd = TorchForward(ShortestPath(GRID, secondary_nodes=1), RAYS)
    with pytest.raises(ValueError, match=r"expected \(B, 12\)"):
        fwd(torch.ones(2, 5))
    with pytest.raises(ValueError, match="torch.Tensor"):
        fwd(np.ones((2, 12)))
    with pytest.raises(ValueError, match="ray_index values"):
        fwd(torch.ones(2, 12), torch.tensor([[0, 9], [0, 1]]))
    with pytest.raises(ValueError, match="ray_index has shape"):
        fwd(torch.ones(2, 12), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        fwd(torch.ones(2, 12), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="finite and > 0"):
        fwd(-torch.ones(1, 12), torch.tensor([[0]]))
    s = torch.ones(2, 12)
    s[1, 5:] = torch.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no numpy all-NaN warning on the way
        with pytest.raises(ValueError, match=r"start 1 has nan in cell 5 \(7 bad value"):
            fwd(s, torch.tensor([[0], [0]]))
    with pytest.raises(ValueError, match="operator"):
        TorchForward("straight", RAYS)
    with pytest.raises(ValueError, match="outside the grid"):
        TorchForward(StraightRay(GRID), RAYS + 10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("op", [StraightRay(GRID), ShortestPath(GRID, secondary_nodes=1)],
                         ids=["straight", "shortest"])
def test_cuda(op):
    fwd = TorchForward(op, RAYS, device="cuda", dtype=torch.float64)
    S = _slowness(2).cuda().requires_grad_(True)
    t = fwd(S, torch.tensor([[0, 1], [2, 3]], device="cuda"))
    t.sum().backward()
    assert t.device.type == "cuda" and S.grad.device.type == "cuda"
    ref = TorchForward(op, RAYS, dtype=torch.float64)(S.detach().cpu(), [[0, 1], [2, 3]])
    np.testing.assert_allclose(t.detach().cpu().numpy(), ref.numpy(), rtol=1e-12)


def test_pickles_without_caches():
    import pickle

    op = ShortestPath(GRID, secondary_nodes=1)
    fwd = TorchForward(op, RAYS, dtype=torch.float64)
    S = _slowness(1)
    t = fwd(S, [[0, 3]])
    blob = pickle.dumps(fwd)
    assert len(blob) < 20_000  # the graph caches stay behind
    np.testing.assert_allclose(pickle.loads(blob)(S, [[0, 3]]).numpy(), t.numpy())


def test_torch_sparse_notices_are_silenced_and_nothing_else():
    from skvaeinv.forward._torch import _quiet_sparse

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with _quiet_sparse():
            warnings.warn("Sparse invariant checks are implicitly disabled. Memory errors",
                          UserWarning)
            warnings.warn("Sparse CSR tensor support is in beta state", UserWarning)
            warnings.warn("slowness has NaN", UserWarning)
    assert [str(w.message) for w in seen] == ["slowness has NaN"]


def test_sparse_kernel_takes_half_precision_slowness():
    s = torch.rand(2, GRID.n_cells, dtype=torch.float64) + 1.0
    bridge = TorchForward(StraightRay(GRID), RAYS, kernel="sparse")
    expected = bridge(s.float())
    for dtype in (torch.bfloat16, torch.float16):
        got = bridge(s.to(dtype))
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=0)


class _BentRays(StraightRay):
    """A nonlinear user operator: straight rays whose kernel grows with the slowness,
    counting what it is asked for."""

    is_linear = False

    def __init__(self, grid):
        super().__init__(grid)
        self.asked = {"jacobian": 0, "times": 0}

    def _jacobian(self, slowness, rays):
        self.asked["jacobian"] += 1
        return super()._jacobian(None, rays).multiply(1.0 + 0.01 * slowness).tocsr()

    def _traveltimes(self, S, rays):
        self.asked["times"] += 1
        K = super()._jacobian(None, rays)
        return np.stack([K.multiply(1.0 + 0.01 * s) @ s for s in S])


@pytest.mark.parametrize("make_op", [lambda: ShortestPath(GRID, secondary_nodes=2),
                                     lambda: _BentRays(GRID)], ids=["shortest", "user"])
def test_nonlinear_times_without_gradient_skip_the_jacobian(make_op, monkeypatch):
    op = make_op()
    fwd = TorchForward(op, RAYS, dtype=torch.float64)
    S = _slowness(2).requires_grad_(True)
    idx = torch.tensor([[0, 4, 8], [1, 1, 2]])
    with_grad = [fwd(S, idx), fwd(S)]
    if isinstance(op, ShortestPath):
        asked = []
        run = op._run
        monkeypatch.setattr(op, "_run", lambda *a, jacobian: asked.append(jacobian)
                            or run(*a, jacobian=jacobian))
    else:
        op.asked.update(jacobian=0, times=0)
    with torch.no_grad():
        no_grad = [fwd(S, idx), fwd(S)]
    plain = [fwd(S.detach(), idx), fwd(S.detach())]
    for a, b, c in zip(with_grad, no_grad, plain):
        assert a.requires_grad and not b.requires_grad and not c.requires_grad
        np.testing.assert_allclose(b.numpy(), a.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(c.numpy(), a.detach().numpy(), rtol=1e-12)
    if isinstance(op, ShortestPath):
        assert asked and not any(asked)            # every search without the Jacobian
    else:
        assert op.asked["jacobian"] == 0 and op.asked["times"] > 0
    with pytest.raises(ValueError, match="start 1 has"):   # the slowness check stays
        with torch.no_grad():
            fwd(torch.cat([S.detach()[:1], -S.detach()[1:]]), idx)


def test_an_operators_own_older_evaluator_still_works():
    """An operator overriding ``_subset_evaluator`` with the older ``(s, idx)`` form."""
    class OldStyle(_BentRays):
        def _subset_evaluator(self, rays):
            def evaluate(s, idx):
                return self._traveltimes_and_jacobian(s, rays[idx])
            return evaluate

    fwd = TorchForward(OldStyle(GRID), RAYS, dtype=torch.float64)
    S = _slowness(2).requires_grad_(True)
    idx = torch.tensor([[0, 4, 8], [1, 1, 2]])
    t = fwd(S, idx)
    t.sum().backward()
    with torch.no_grad():
        np.testing.assert_allclose(fwd(S, idx).numpy(), t.detach().numpy(), rtol=1e-12)
    assert S.grad is not None and torch.isfinite(S.grad).all()
