"""Tests of skvaeinv.engine with small torch decoders and dense-matrix forwards.

The engine does not depend on scikit-learn or the forward package: these tests build
their own decoder and forward callables.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skvaeinv.engine import SGDHistory, chi_mean, learning_rate, reg_weight_at

from conftest import run_latent_sgd


class DenseForward:
    """Linear forward ``t = s K^T`` following the TorchForward call contract."""

    def __init__(self, K, record=False):
        self.K = torch.as_tensor(K, dtype=torch.float32)
        self.calls = [] if record else None

    def __call__(self, s, idx=None):
        if self.calls is not None:
            self.calls.append(None if idx is None else idx.clone())
        t = s @ self.K.T
        return t if idx is None else t.gather(1, idx)


def linear_decoder(A, c):
    A = torch.as_tensor(A, dtype=torch.float32)
    c = torch.as_tensor(c, dtype=torch.float32)
    return lambda z: z @ A.T + c


def seeds(n, seed=0):
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    n_pix, n_rays, d = 12, 30, 3
    A = rng.normal(size=(n_pix, d))
    c = np.full(n_pix, 2.0)
    K = np.abs(rng.normal(size=(n_rays, n_pix)))
    z_true = rng.normal(size=d)
    y = K @ (A @ z_true + c)
    return dict(A=A, c=c, K=K, y=y, d=d, z_true=z_true)


def test_chi_mean_exact():
    for n in (1, 2, 5, 20, 200):
        assert chi_mean(n) == pytest.approx(stats.chi(n).mean(), rel=1e-12)
    assert chi_mean(20) == pytest.approx(4.4166, abs=1e-4)
    with pytest.raises(ValueError, match="n=0"):
        chi_mean(0)


def test_schedule_helpers():
    assert learning_rate(0.1, 0.8, 5, 4) == pytest.approx(0.1)
    assert learning_rate(0.1, 0.8, 5, 5) == pytest.approx(0.08)
    assert reg_weight_at(10.0, 0.99, 3) == pytest.approx(10 * 0.99**3)


def test_one_full_batch_sgd_step_matches_analytic_gradient(problem):
    A, c, K, y = problem["A"], problem["c"], problem["K"], problem["y"]
    z0 = np.array([[0.3, -0.2, 0.5], [1.0, 2.0, -1.0]])
    lr, lam = 1e-4, 3.0
    res = run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2),
                         epochs=1, batch_size=len(y), lr=lr, reg="ring", reg_weight=lam,
                         reg_decay=0.5)
    chi = chi_mean(3)
    for b in range(2):
        z = z0[b]
        r = K @ (A @ z + c) - y
        g = 2 * (K @ A).T @ r + lam * 2 * (np.linalg.norm(z) - chi) * z / np.linalg.norm(z)
        np.testing.assert_allclose(res.final_latents[b], z - lr * g, rtol=1e-4)
        # history of iteration 0 and tracked cost at z0
        np.testing.assert_allclose(res.history.data_rmse[b, 0], np.sqrt(np.mean(r**2)),
                                   rtol=1e-5)
        np.testing.assert_allclose(res.history.cost[b, 0],
                                   np.sum(r**2) + lam * (np.linalg.norm(z) - chi) ** 2,
                                   rtol=1e-5)
    np.testing.assert_allclose(res.history.reg_weight, [lam])


def test_origin_step_matches_analytic_gradient(problem):
    A, c, K, y = problem["A"], problem["c"], problem["K"], problem["y"]
    z0 = np.array([[0.3, -0.2, 0.5], [1.0, 2.0, -1.0]])
    lr, lam = 1e-4, 3.0
    res = run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2),
                         epochs=1, batch_size=len(y), lr=lr, reg="origin", reg_weight=lam)
    for b in range(2):
        z = z0[b]
        r = K @ (A @ z + c) - y
        g = 2 * (K @ A).T @ r + lam * 2 * z              # d/dz (|r|^2 + lam |z|^2)
        np.testing.assert_allclose(res.final_latents[b], z - lr * g, rtol=1e-4)
        np.testing.assert_allclose(res.history.cost[b, 0], np.sum(r**2) + lam * z @ z,
                                   rtol=1e-5)


def test_adam_steps_match_torch_adam(problem):
    # three full-batch steps (one per epoch, lr decaying) against torch.optim.Adam on
    # the same analytic cost, computed independently in float64
    A, c, K, y = problem["A"], problem["c"], problem["K"], problem["y"]
    z0 = np.array([[0.3, -0.2, 0.5], [1.0, 2.0, -1.0]])
    lr, decay, betas = 0.05, 0.5, (0.8, 0.95)
    res = run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2), epochs=3,
                         batch_size=len(y), lr=lr, lr_decay=decay, reg=None,
                         optimizer="adam", adam_betas=betas)
    KA, Kc = torch.tensor(K @ A), torch.tensor(K @ c)
    for b in range(2):
        z = torch.tensor(z0[b], requires_grad=True)
        opt = torch.optim.Adam([z], lr=lr, betas=betas, eps=1e-8)
        for epoch in range(3):
            opt.param_groups[0]["lr"] = lr * decay ** epoch
            opt.zero_grad()
            torch.sum((KA @ z + Kc - torch.tensor(y)) ** 2).backward()
            opt.step()
        np.testing.assert_allclose(res.final_latents[b], z.detach().numpy(), rtol=1e-5)


def test_schedules_and_epoch_orders(problem):
    K, y = problem["K"], problem["y"]
    fwd = DenseForward(K, record=True)
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), fwd, y,
                         np.zeros((3, 3)) + 0.1, seeds(3), epochs=4, batch_size=7,
                         lr=0.01, lr_decay=0.5, lr_step=2, reg_weight=2.0, reg_decay=0.9,
                         linear=False, track_every=1000)
    n_batches = math.ceil(30 / 7)  # 4 full batches + one of 2 rays
    assert res.n_iter == 4 * n_batches == res.history.n_iter
    h = res.history
    np.testing.assert_allclose(h.lr, 0.01 * 0.5 ** (h.epoch // 2))
    np.testing.assert_allclose(h.reg_weight, 2.0 * 0.9 ** np.arange(res.n_iter))
    batch_calls = [i for i in fwd.calls if i is not None]
    assert len(batch_calls) == res.n_iter
    assert [c.shape[1] for c in batch_calls[:n_batches]] == [7, 7, 7, 7, 2]
    for e in range(4):
        epoch_idx = torch.cat(batch_calls[e * n_batches:(e + 1) * n_batches], dim=1)
        for b in range(3):  # every start visits every ray once per epoch
            assert sorted(epoch_idx[b].tolist()) == list(range(30))
        assert not torch.equal(epoch_idx[0], epoch_idx[1])  # own order per start
    # nonlinear mode: full data evaluated at k % track_every == 0 and at the end only
    assert np.isfinite(h.data_rmse[:, 0]).all() and np.isnan(h.data_rmse[:, 1:]).all()
    assert set(res.best_iteration) <= {0, res.n_iter}


def test_tracking_cadence_nonlinear(problem):
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]),
                         problem["y"], np.ones((2, 3)), seeds(2), epochs=3, batch_size=10,
                         lr=1e-4, linear=False, track_every=4)
    tracked = np.isfinite(res.history.data_rmse[0])
    np.testing.assert_array_equal(np.flatnonzero(tracked), np.arange(0, res.n_iter, 4))


def test_best_iterate_is_the_lowest_total_cost(problem):
    # a large constant lr makes the cost go up and down: the kept iterate is the minimum
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]),
                         problem["y"], np.random.default_rng(1).normal(size=(4, 3)), seeds(4),
                         epochs=20, batch_size=5, lr=3e-4, lr_decay=1.0, reg="origin",
                         reg_weight=1.0, reg_decay=0.99)
    h = res.history
    for b in range(4):
        k = res.best_iteration[b]
        if k < res.n_iter:
            assert res.cost[b] == pytest.approx(np.nanmin(h.cost[b]), rel=1e-6)
            assert res.cost[b] == pytest.approx(h.cost[b, k], rel=1e-6)
            assert res.data_rmse[b] == pytest.approx(h.data_rmse[b, k], rel=1e-5)
        else:  # final iterate was better than every recorded one
            assert res.cost[b] <= np.nanmin(h.cost[b])
    # the kept model is the decoded kept latent
    dec = linear_decoder(problem["A"], problem["c"])
    np.testing.assert_allclose(res.models, dec(torch.tensor(res.latents)).numpy(), rtol=1e-5)


def test_converges_on_linear_problem(problem):
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]),
                         problem["y"], np.zeros((2, 3)), seeds(2), epochs=60, batch_size=10,
                         lr=2e-3, lr_decay=0.97, reg=None)
    assert res.data_rmse.max() < 1e-2 * problem["y"].std()
    np.testing.assert_allclose(res.latents, np.tile(problem["z_true"], (2, 1)), atol=1e-2)


def test_adam_and_bfloat16_run_and_reduce_misfit(problem):
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 12),
                              torch.nn.Sigmoid())
    for p in dec.parameters():
        p.requires_grad_(False)
    K = problem["K"]
    y = K @ dec(torch.tensor(problem["z_true"], dtype=torch.float32)[None])[0].numpy()
    for optimizer, precision in [("adam", "float32"), ("sgd", "bfloat16")]:
        res = run_latent_sgd(dec, DenseForward(K), y, np.zeros((3, 3)), seeds(3), epochs=30,
                             batch_size=10, lr=0.05 if optimizer == "adam" else 0.1,
                             optimizer=optimizer, precision=precision, reg=None)
        assert np.all(res.history.data_rmse[:, -1] < 0.5 * res.history.data_rmse[:, 0])


def test_starts_are_independent_of_their_batch_mates(problem):
    args = (linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]), problem["y"])
    z0 = np.random.default_rng(3).normal(size=(3, 3))
    kw = dict(epochs=5, batch_size=6, lr=1e-4, reg="ring", reg_weight=1.0)
    together = run_latent_sgd(*args, z0, seeds(3), **kw)
    rngs = seeds(3)
    for b in range(3):
        alone = run_latent_sgd(*args, z0[b:b + 1], rngs[b:b + 1], **kw)
        np.testing.assert_allclose(alone.latents[0], together.latents[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(alone.history.batch_rmse[0], together.history.batch_rmse[b],
                                   rtol=1e-4)


def test_deterministic(problem):
    args = (linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]), problem["y"])
    z0 = np.ones((2, 3))
    a = run_latent_sgd(*args, z0, seeds(2, 5), epochs=3, batch_size=4, lr=1e-4)
    b = run_latent_sgd(*args, z0, seeds(2, 5), epochs=3, batch_size=4, lr=1e-4)
    np.testing.assert_array_equal(a.latents, b.latents)
    np.testing.assert_array_equal(a.history.batch_rmse, b.history.batch_rmse)


def test_diverging_start_is_flagged_and_others_go_on(problem):
    base = linear_decoder(problem["A"], problem["c"])

    def decoder(z):  # NaN image for latent vectors with a large first component
        x = base(z)
        return torch.where(z[:, :1] > 5.0, torch.full_like(x, math.nan), x)

    fwd = DenseForward(problem["K"])
    z0 = np.array([[0.1, 0.0, 0.0], [10.0, 0.0, 0.0], [-0.5, 0.2, 0.1]])
    kw = dict(epochs=4, batch_size=6, lr=1e-4, reg="ring", reg_weight=1.0)
    res = run_latent_sgd(decoder, fwd, problem["y"], z0, seeds(3), **kw)
    np.testing.assert_array_equal(res.diverged, [False, True, False])
    assert res.diverged_at[1] == 0 and res.best_iteration[1] == -1
    assert np.isnan(res.models[1]).all() and np.isinf(res.data_rmse[1])
    assert np.isnan(res.history.batch_rmse[1]).all()
    assert np.isfinite(res.data_rmse[[0, 2]]).all()
    rngs = seeds(3)
    alone = run_latent_sgd(base, fwd, problem["y"], z0[[0, 2]], [rngs[0], rngs[2]], **kw)
    np.testing.assert_allclose(alone.latents, res.latents[[0, 2]], rtol=1e-5, atol=1e-6)


def test_overflowing_latent_norm_is_divergence(problem):
    # a latent vector can stay finite while its norm overflows float32; with a saturating
    # decoder and reg=None nothing else turns non-finite, yet the start has diverged
    A = torch.as_tensor(problem["A"], dtype=torch.float32)

    def decoder(z):
        return 1.0 + torch.sigmoid(z @ A.T)

    z0 = np.array([[0.1, 0.2, -0.3], [3e38, 3e38, 0.0]])
    res = run_latent_sgd(decoder, DenseForward(problem["K"]), problem["y"], z0, seeds(2),
                         epochs=2, batch_size=10, lr=1e-3, reg=None)
    np.testing.assert_array_equal(res.diverged, [False, True])
    assert res.diverged_at[1] == 0 and np.isnan(res.history.z_norm[1]).all()
    assert np.isfinite(res.history.z_norm[0]).all()


def test_all_diverged_log_names_the_iteration(problem, caplog):
    def decoder(z):  # NaN image from the start: every start diverges at iteration 0
        return torch.full((z.shape[0], problem["K"].shape[1]), math.nan) + 0 * z.sum()

    with caplog.at_level("WARNING", logger="skvaeinv.engine"):
        res = run_latent_sgd(decoder, DenseForward(problem["K"]), problem["y"],
                             np.zeros((2, problem["d"])), seeds(2), epochs=3, batch_size=6)
    assert (res.diverged_at == 0).all()
    # found at the end of the first epoch (iteration 5), but reported as it happened
    assert "all 2 starts diverged (the last at iteration 0)" in caplog.text


def test_divergence_by_overflow_with_huge_lr(problem):
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]),
                         problem["y"], np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), seeds(2),
                         epochs=50, batch_size=30, lr=1.0, reg=None)
    assert res.diverged.all()  # lr far above 2 / L: the iterates blow up to inf
    assert np.isfinite(res.data_rmse).all()  # each keeps its best finite iterate
    assert (res.best_iteration == 0).all()


def test_keyboard_interrupt_keeps_results(problem):
    class Interrupting(DenseForward):
        n = 0

        def __call__(self, s, idx=None):
            self.n += 1
            if self.n == 8:
                raise KeyboardInterrupt
            return super().__call__(s, idx)

    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), Interrupting(problem["K"]),
                         problem["y"], np.zeros((2, 3)), seeds(2), epochs=5, batch_size=10,
                         lr=1e-4)
    assert res.interrupted and res.n_iter == 7 and res.history.n_iter == 7
    assert np.isfinite(res.data_rmse).all() and (res.best_iteration < 7).all()


def test_bad_config(problem):
    args = (linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]), problem["y"],
            np.zeros((1, 3)), seeds(1))
    with pytest.raises(ValueError, match=r"batch_size=31 is invalid; expected an int in \[1"):
        run_latent_sgd(*args, batch_size=31)
    with pytest.raises(ValueError, match="optimizer='lbfgs'"):
        run_latent_sgd(*args, optimizer="lbfgs")
    with pytest.raises(ValueError, match="reg='box'"):
        run_latent_sgd(*args, reg="box")
    with pytest.raises(ValueError, match="precision='float16'"):
        run_latent_sgd(*args, precision="float16", epochs=1)
    with pytest.raises(ValueError, match="rngs has 2 generators for 1 starts"):
        run_latent_sgd(*args[:4], seeds(2))


def test_history_queries():
    rng = np.random.default_rng(0)
    kw = {name: rng.normal(size=(2, 4)) for name in SGDHistory.per_start_fields}
    h = SGDHistory(**kw, lr=np.ones(4), reg_weight=np.ones(4), epoch=np.arange(4))
    assert len(h) == 4 and h.keys()[0] == "data_rmse"
    np.testing.assert_array_equal(h[1, "z_norm"], kw["z_norm"][1])
    assert set(h[0]) == set(h.keys())
    with pytest.raises(KeyError, match="'loss' is not recorded"):
        h["loss"]
    short = SGDHistory(**{k: v[:, :2] for k, v in kw.items()}, lr=np.ones(2),
                       reg_weight=np.ones(2), epoch=np.arange(2))
    both = SGDHistory.concatenate([h, short])
    assert both.n_starts == 4 and both.n_iter == 4
    assert np.isnan(both.data_rmse[2:, 2:]).all()


def test_ring_and_decay_beat_constant_lr_without_regularisation():
    """Toy with a known answer and local minima.

    The decoder depends on the direction of z only (as a generator far from the
    typical set), and the misfit over that direction has one global minimum (the
    truth's angle) and two local ones. Without regularisation the norm of z grows
    at every step, so the effective angular step shrinks and starts stay in local
    basins; the ring keeps ||z|| at E[chi_2], and the decaying learning rate anneals
    from large, exploring steps.
    """
    P, n_rays, theta0 = 4, 40, 0.3
    K = torch.tensor(np.random.default_rng(0).normal(size=(n_rays, 2 * P)), dtype=torch.float32)
    alphas = torch.linspace(0, math.pi, P + 1)[:-1]

    def decoder(z):
        th = torch.atan2(z[:, 1], z[:, 0])[:, None]
        return torch.cat([torch.cos(th - alphas), torch.cos(3 * (th - alphas))], 1)

    fwd = DenseForward(K)
    z_true = torch.tensor([[math.cos(theta0), math.sin(theta0)]]) * chi_mean(2)
    y = fwd(decoder(z_true))[0].numpy()

    def success(**kw):
        rngs = seeds(32, 1)
        z0 = np.stack([r.standard_normal(2) for r in rngs])
        res = run_latent_sgd(decoder, fwd, y, z0, rngs, epochs=40, batch_size=5, lr=0.1, **kw)
        theta = np.arctan2(res.latents[:, 1], res.latents[:, 0])
        return np.mean(np.abs(np.angle(np.exp(1j * (theta - theta0)))) < 0.2)

    ring_decay = success(lr_decay=0.9, reg="ring", reg_weight=10.0, reg_decay=0.995)
    plain = success(lr_decay=1.0, reg=None)
    assert ring_decay >= 0.9
    assert ring_decay >= plain + 0.2


def test_grouped_batches_are_whole_groups(problem):
    """With groups of batch_size rays, each mini-batch is one whole group, every ray is
    visited once per epoch, and group order differs between starts."""
    K, y = problem["K"], problem["y"]
    groups = np.repeat(np.arange(6), 5)            # 6 groups of 5 rays
    perm = np.random.default_rng(1).permutation(30)
    groups = groups[perm]                          # groups not contiguous in ray order
    fwd = DenseForward(K, record=True)
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), fwd, y,
                         np.zeros((4, 3)) + 0.1, seeds(4), epochs=3, batch_size=5,
                         lr=0.01, batch_groups=groups, linear=False, track_every=1000)
    calls = [i for i in fwd.calls if i is not None]
    assert len(calls) == res.n_iter == 3 * 6
    first_batches = []
    for e in range(3):
        epoch_calls = calls[e * 6:(e + 1) * 6]
        for b in range(4):
            for c in epoch_calls:
                assert len(set(groups[c[b].numpy()])) == 1      # one group per batch
            allidx = torch.cat([c[b] for c in epoch_calls]).tolist()
            assert sorted(allidx) == list(range(30))
        first_batches.append([int(groups[epoch_calls[0][b][0]]) for b in range(4)])
    assert len({tuple(f) for f in first_batches}) > 1 or len(set(first_batches[0])) > 1
    with pytest.raises(ValueError, match="labels"):
        run_latent_sgd(linear_decoder(problem["A"], problem["c"]), fwd, y,
                       np.zeros((1, 3)), seeds(1), epochs=1, batch_size=5,
                       batch_groups=groups[:10])


def test_progress_bar(problem, capsys):
    K, y = problem["K"], problem["y"]
    run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(K), y,
                   np.zeros((2, 3)), seeds(2), epochs=2, batch_size=10, lr=0.01,
                   progress=True, log_prefix="toy: ")
    err = capsys.readouterr().err
    assert "toy" in err and "6/6" in err


def test_ring_radius_replaces_the_chi_mean(problem):
    A, c, K, y = problem["A"], problem["c"], problem["K"], problem["y"]
    z0 = np.array([[0.3, -0.2, 0.5], [1.0, 2.0, -1.0]])
    lr, lam, radius = 1e-4, 3.0, 2.5
    res = run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2),
                         epochs=1, batch_size=len(y), lr=lr, reg="ring", reg_weight=lam,
                         ring_radius=radius)
    for b in range(2):
        z = z0[b]
        r = K @ (A @ z + c) - y
        g = 2 * (K @ A).T @ r + lam * 2 * (np.linalg.norm(z) - radius) * z / np.linalg.norm(z)
        np.testing.assert_allclose(res.final_latents[b], z - lr * g, rtol=1e-4)
    # with a negligible data pull, the ring alone brings ||z|| to the radius
    res = run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2),
                         sample_weight=np.full(len(y), 1e-12), epochs=30, batch_size=len(y),
                         lr=0.25, reg="ring", reg_weight=1.0, reg_decay=1.0,
                         ring_radius=radius)
    assert not res.diverged.any()
    np.testing.assert_allclose(np.linalg.norm(res.final_latents, axis=1), radius, rtol=1e-4)
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="ring_radius"):
            run_latent_sgd(linear_decoder(A, c), DenseForward(K), y, z0, seeds(2),
                           epochs=1, ring_radius=bad)


def test_zero_weight_batches_record_zero_misfit(problem):
    y = problem["y"]
    w = np.ones(len(y))
    w[: len(y) // 2] = 0.0
    res = run_latent_sgd(linear_decoder(problem["A"], problem["c"]), DenseForward(problem["K"]),
                         y, np.zeros((2, 3)), seeds(2), epochs=2, batch_size=1, lr=1e-4,
                         sample_weight=w)
    assert np.isfinite(res.history.batch_rmse).all() and not res.diverged.any()
    assert (res.history.batch_rmse == 0).sum() == 2 * 2 * (len(y) // 2)
