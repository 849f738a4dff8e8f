"""Tests of skvaeinv.LatentInverter (CI-sized: tiny prior, tiny grids)."""



import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.metrics import r2_score
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils._param_validation import InvalidParameterError

from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.engine import SGDHistory, chi_mean
from skvaeinv.forward import StraightRay
from skvaeinv.inverter import reference_schedule
from skvaeinv.petrophysics import LinearVelocity
from skvaeinv.survey import Grid2D, crosshole

from conftest import DEVICES, TINY_SHAPE, needs_cxx, slowness

FAST = dict(epochs=3, batch_size=32, lr=0.05, reg_weight=5.0, reg_decay=0.99, device="cpu")


def _failing_petrophysics(m):
    raise RuntimeError("boom")


def test_random_starts_reach_the_level_of_the_true_code(tiny_prior, survey, data):
    grid, rays = survey
    z_true, truth, y = data
    kw = dict(epochs=100, batch_size=32, lr=0.05, lr_decay=0.97, reg="ring", reg_weight=5.0,
              reg_decay=0.99, device="cpu", random_state=0)
    ref = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, init=z_true, **kw)
    ref_rmse = ref.fit(rays, y).data_rmse_[0]
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=16, **kw).fit(rays, y)
    assert inv.n_iter_ == 100 * 8
    assert np.mean(inv.data_rmse_ <= 1.1 * ref_rmse) >= 0.8
    # the kept models look like the truth (channels at the right place)
    assert np.sqrt(np.mean((inv.model_ - truth) ** 2)) < 0.1
    # predict gives the best start's traveltimes: as close as the true code's run
    assert np.sqrt(np.mean((inv.predict(rays) - y) ** 2)) <= 1.1 * ref_rmse
    assert inv.score(rays, y) == pytest.approx(r2_score(y, inv.predict(rays)))
    assert inv.score(rays, y) > 0.99


def test_fitted_attributes_and_ensemble(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=5, random_state=0,
                         acceptance_threshold=1e9, **FAST).fit(rays, y)
    H, W = TINY_SHAPE
    n_iter = 3 * 8
    assert inv.models_.shape == (5, H, W) and inv.latents_.shape == (5, tiny_prior.latent_dim)
    assert inv.data_rmse_.shape == (5,) and inv.n_iter_ == n_iter
    assert inv.best_index_ == np.argmin(inv.data_rmse_)
    np.testing.assert_array_equal(inv.model_, inv.models_[inv.best_index_])
    np.testing.assert_array_equal(inv.z_, inv.latents_[inv.best_index_])
    # the kept model is the decoded kept latent
    np.testing.assert_allclose(inv.models_, tiny_prior.inverse_transform(inv.latents_),
                               atol=1e-5)
    h = inv.history_
    assert isinstance(h, SGDHistory) and (h.n_starts, h.n_iter) == (5, n_iter)
    np.testing.assert_allclose(h["lr"], 0.05 * 0.95 ** (np.arange(n_iter) // 8))
    np.testing.assert_allclose(h["reg_weight"], 5.0 * 0.99 ** np.arange(n_iter))
    assert np.isfinite(h["data_rmse"]).all() and np.isfinite(h["z_norm"]).all()
    kept = inv.kept_iteration_
    for b in range(5):  # data_rmse_ is that of the kept iterate, the lowest total cost
        if kept[b] < n_iter:
            assert inv.data_rmse_[b] == pytest.approx(h[b, "data_rmse"][kept[b]], rel=1e-5)
            assert h[b, "cost"][kept[b]] == pytest.approx(np.nanmin(h[b, "cost"]), rel=1e-6)
    assert not inv.diverged_.any() and not inv.interrupted_
    # ensemble: everything accepted with a huge threshold
    assert inv.accepted_.all()
    np.testing.assert_allclose(inv.ensemble_mean_, inv.models_.mean(0), atol=1e-6)
    np.testing.assert_allclose(inv.channel_probability_, (inv.models_ > 0.5).mean(0))
    np.testing.assert_allclose(inv.ensemble_std_, inv.models_.std(0), atol=1e-6)
    threshold = float(np.median(inv.data_rmse_))
    ens = inv.ensemble(threshold)
    np.testing.assert_array_equal(ens.accepted, np.flatnonzero(inv.data_rmse_ <= threshold))
    assert ens.n_accepted == 3 and ens.models.shape == (3, H, W)
    assert ((ens.channel_probability >= 0) & (ens.channel_probability <= 1)).all()
    with pytest.warns(UserWarning, match="ensemble is empty"):
        empty = inv.ensemble(1e-12)
    assert empty.n_accepted == 0 and np.isnan(empty.mean).all()
    with pytest.raises(ValueError, match="threshold=-1"):
        inv.ensemble(-1)
    with pytest.raises(ValueError, match="threshold=True"):   # not 1.0 ns in disguise
        inv.ensemble(True)
    # a 0-d array is a number
    np.testing.assert_array_equal(inv.ensemble(np.asarray(threshold)).accepted, ens.accepted)


def test_predict_unseen_rays_and_score(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0, **FAST)
    with pytest.raises(NotFittedError):
        inv.predict(rays)
    inv.fit(rays[::2], data[2][::2])
    other = crosshole(grid, depths=[0.35, 1.75, 2.95])
    expected = StraightRay(grid).traveltimes(slowness(inv.model_), other)
    np.testing.assert_allclose(inv.predict(other), expected, rtol=1e-6)
    t = inv.predict(rays)
    assert inv.score(rays, t) == 1.0   # R², RegressorMixin's meaning
    assert inv.score(rays, t + 0.5) == pytest.approx(
        1 - len(t) * 0.25 / np.sum((t - t.mean()) ** 2))


def test_deterministic_and_independent_of_n_jobs(tiny_prior, survey, data):
    grid, rays = survey
    kw = dict(n_starts=4, chunk_size=2, random_state=3, **FAST)
    one = LatentInverter(tiny_prior, StraightRay(grid), n_jobs=1, **kw).fit(rays, data[2])
    again = LatentInverter(tiny_prior, StraightRay(grid), n_jobs=1, **kw).fit(rays, data[2])
    two = LatentInverter(tiny_prior, StraightRay(grid), n_jobs=2, **kw).fit(rays, data[2])
    for other in (again, two):
        np.testing.assert_array_equal(one.latents_, other.latents_)
        np.testing.assert_array_equal(one.models_, other.models_)
        np.testing.assert_array_equal(one.history_.batch_rmse, other.history_.batch_rmse)
    kw["random_state"] = 4
    different = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, data[2])
    assert not np.array_equal(one.latents_, different.latents_)


def test_shortest_path_forward_inside_the_loop(tiny_prior, bent_data):
    grid, rays, fwd, y = bent_data
    inv = LatentInverter(tiny_prior, fwd, n_starts=2, epochs=3, batch_size=4, lr=0.1,
                         lr_decay=0.8, reg_weight=5.0, reg_decay=0.99, track_every=2,
                         device="cpu", random_state=0).fit(rays, y)
    h = inv.history_
    assert h.n_iter == 12
    # full-data cost only every track_every iterations; batch RMSE every iteration
    np.testing.assert_array_equal(np.flatnonzero(np.isfinite(h["data_rmse"][0])),
                                  np.arange(0, 12, 2))
    assert np.isfinite(h["batch_rmse"]).all()
    assert (inv.kept_iteration_ % 2 == 0).all()
    assert (inv.data_rmse_ < h["data_rmse"][:, 0]).all()  # it improved on the start
    np.testing.assert_allclose(inv.predict(rays),
                               fwd.traveltimes(slowness(inv.model_), rays), rtol=1e-6)


def test_clone_keeps_the_fitted_prior_and_grid_search(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0,
                         **{**FAST, "epochs": 4})
    twin = clone(inv)
    # the clone holds the fitted prior frozen: shared, not refitted
    assert twin.prior.estimator is tiny_prior and twin.forward is not inv.forward
    assert clone(twin).prior is twin.prior
    assert twin.get_params()["forward"].grid == grid
    twin.set_params(forward__grid=grid, petrophysics=LinearVelocity())
    search = GridSearchCV(inv, {"lr_decay": [1e-3, 0.95], "reg_decay": [0.9, 0.99]},
                          cv=KFold(3, shuffle=True, random_state=0)).fit(rays, data[2])
    # a learning rate that collapses after one epoch predicts held-out rays worse
    assert search.best_params_["lr_decay"] == 0.95
    assert np.all(search.cv_results_["mean_test_score"] < 1)
    assert search.best_estimator_.prior.estimator is tiny_prior
    rmse = GridSearchCV(inv, {"lr_decay": [1e-3, 0.95]}, scoring="neg_root_mean_squared_error",
                        cv=KFold(3, shuffle=True, random_state=0)).fit(rays, data[2])
    assert rmse.best_params_["lr_decay"] == 0.95
    assert np.all(rmse.cv_results_["mean_test_score"] < 0)   # minus the RMSE in ns
    assert search.best_estimator_.predict(rays).shape == (len(rays),)


def test_sample_weight(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2].copy()
    kw = dict(n_starts=2, random_state=0, **FAST)
    plain = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y)
    ones = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, np.full(len(y), 4.0))
    np.testing.assert_allclose(plain.latents_, ones.latents_, rtol=1e-5, atol=1e-6)
    # a datum with zero weight does not matter at all: a wild value there changes nothing
    w = np.ones(len(y))
    w[5] = 0.0
    masked = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, w)
    y[5] += 50.0
    wild = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, w)
    np.testing.assert_array_equal(masked.latents_, wild.latents_)
    np.testing.assert_array_equal(masked.data_rmse_, wild.data_rmse_)
    unweighted = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y)
    assert np.all(unweighted.data_rmse_ > 2 * wild.data_rmse_)
    # weights are scale-free, up to the float64 maximum (whose sums would overflow)
    huge = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, w * 1e307)
    np.testing.assert_allclose(huge.latents_, wild.latents_, rtol=1e-5, atol=1e-6)
    assert huge.score(rays, y, w * 1e307) == pytest.approx(wild.score(rays, y, w))
    assert wild.score(rays, y, w) < 1.0


def test_adam_bfloat16_and_origin_run(tiny_prior, survey, data):
    grid, rays = survey
    for extra in (dict(optimizer="adam", lr=0.02), dict(precision="bfloat16"),
                  dict(reg="origin"), dict(reg=None, petrophysics=(0.08, 0.06))):
        inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0,
                             **{**FAST, **extra}).fit(rays, data[2])
        assert np.isfinite(inv.data_rmse_).all()
        assert (inv.data_rmse_ <= inv.history_["data_rmse"][:, 0]).all()


@needs_cxx
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_decoder_gives_the_same_inversion(tiny_prior, survey, data, device, no_tf32):
    grid, rays = survey
    # lr=0.01: SGD contracts, so differently rounded runs stay close (with lr=0.05 the
    # tiny problem's SGD oscillates and can amplify rounding differences)
    kw = dict(n_starts=3, random_state=5, **{**FAST, "lr": 0.01, "device": device})
    eager = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, data[2])
    compiled = LatentInverter(tiny_prior, StraightRay(grid), compile=True,
                              **kw).fit(rays, data[2])
    # same trajectories up to float32 rounding of a differently ordered computation
    np.testing.assert_allclose(compiled.history_.data_rmse, eager.history_.data_rmse,
                               rtol=1e-3)
    np.testing.assert_allclose(compiled.latents_, eager.latents_, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_divergence_is_flagged(tiny_prior, survey, data, device):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0,
                         **{**FAST, "lr": 10.0, "reg_weight": 10.0, "device": device})
    with pytest.warns(RuntimeWarning, match="diverged"):
        inv.fit(rays, data[2])
    assert inv.diverged_.all() and np.isfinite(inv.data_rmse_).all()


class InterruptingVelocity(LinearVelocity):
    """Reference petrophysics that raises KeyboardInterrupt at its n-th call."""

    def __init__(self, at=5):
        super().__init__()
        self.at = at
        self.calls = 0

    def __call__(self, m):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().__call__(m)


def test_keyboard_interrupt_keeps_results(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0,
                         petrophysics=InterruptingVelocity(5), **FAST).fit(rays, data[2])
    assert inv.interrupted_ and inv.n_iter_ == 4 and inv.history_.n_iter == 4
    assert np.isfinite(inv.data_rmse_).all()


def test_init_vectors(tiny_prior, survey, data):
    grid, rays = survey
    z = np.zeros(tiny_prior.latent_dim)
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=3, init=z, random_state=0,
                         **{**FAST, "epochs": 1}).fit(rays, data[2])
    assert inv.history_["z_norm"][:, 0] == pytest.approx(np.zeros(3))
    with pytest.raises(ValueError, match=r"init has shape \(2,\); expected"):
        LatentInverter(tiny_prior, StraightRay(grid), init=[0.0, 1.0], **FAST).fit(rays, data[2])


@pytest.mark.parametrize("case, error, match", [
    ("nan_y", ValueError, "NaN"),
    ("inf_y", ValueError, "infinity"),
    ("negative_y", ValueError, "non-positive traveltime"),
    ("length", ValueError, "inconsistent numbers of samples"),
    ("outside", ValueError, "outside the grid"),
    ("columns", ValueError, r"expected \(n_rays, 4\)"),
    ("batch_size", ValueError, r"batch_size=1000 is invalid; expected an int in \[1, n_rays=256\]"),
    ("shape", ValueError, r"image shape \(32, 16\) does not match .* grid shape \(16, 16\)"),
    ("unfitted", NotFittedError, "not fitted"),
    ("reg", InvalidParameterError, "'reg' parameter"),
    ("lr", InvalidParameterError, "'lr' parameter"),
    ("petrophysics", InvalidParameterError, "'petrophysics' parameter"),
    ("bad_velocity", ValueError, r"petrophysics=\(0.08, -1.0\)"),
    ("weights", ValueError, "Sample weights must contain at least one non-zero"),
    ("init", ValueError, "init contains NaN"),
    ("negative_slowness", ValueError,
     r"finite, positive slowness \(ns/m\); for facies 0 it returned -0.5"),
    ("nan_slowness", ValueError, "for facies 0 it returned nan"),
    ("slowness_shape", ValueError, r"returned shape \(3,\) .* same shape"),
    ("failing_petrophysics", ValueError, "failed on a batch of facies images.*boom"),
    ("complex_init", ValueError, "Complex data not supported: init must be real"),
    ("grad_init", ValueError, r"init could not be converted.*tensor.detach\(\)"),
    ("duck_forward", InvalidParameterError, "'forward' parameter .*ForwardOperator"),
    ("reg_decay", ValueError, r"reg_decay=2.0 makes the regularisation weight grow beyond "
                              r"the float32 range \(max 3.402823e\+38\) within the run's 24 "
                              r"iterations \(it would reach 1.677722e\+40\)"),
    ("lr_decay", ValueError, "lr_decay=1e\\+30 makes the learning rate grow"),
    # a start value beyond float32 is blamed itself, not its decay
    ("big_lr", ValueError, r"lr=1e\+39 is beyond the float32 range .*smaller lr"),
    ("big_reg_weight", ValueError, r"reg_weight=1e\+39 is beyond the float32 range"),
    ("big_init", ValueError, "init has values beyond the float32 range"),
])
def test_bad_inputs(tiny_prior, survey, data, case, error, match):
    grid, rays = survey
    y = data[2].copy()
    X = rays.copy()
    params = dict(n_starts=1, **FAST)
    prior, fwd, w = tiny_prior, StraightRay(grid), None
    if case == "nan_y":
        y[3] = np.nan
    elif case == "inf_y":
        y[3] = np.inf
    elif case == "negative_y":
        y[3] = -1.0
    elif case == "length":
        y = y[:-1]
    elif case == "outside":
        X[7, 2] = 10.0
    elif case == "columns":
        X = X[:, :3]
    elif case == "batch_size":
        params["batch_size"] = 1000
    elif case == "shape":
        grid16 = Grid2D((16, 16), spacing=0.1)
        fwd = StraightRay(grid16)
        X = crosshole(grid16, depths=[0.5, 1.0])
        y = np.full(len(X), 10.0)
        params["batch_size"] = 2
    elif case == "unfitted":
        prior = VAEPrior()
    elif case == "reg":
        params["reg"] = "box"
    elif case == "lr":
        params["lr"] = -1.0
    elif case == "petrophysics":
        params["petrophysics"] = "linear"
    elif case == "bad_velocity":
        params["petrophysics"] = (0.08, -1.0)
    elif case == "init":
        params["init"] = np.full(tiny_prior.latent_dim, np.nan)
    elif case == "negative_slowness":   # linear physics would accept it silently
        params["petrophysics"] = lambda m: m - 0.5
    elif case == "nan_slowness":
        params["petrophysics"] = lambda m: torch.where(m < 0.5, torch.nan, 10 + m)
    elif case == "slowness_shape":
        params["petrophysics"] = lambda m: 10 + m.sum(dim=(1, 2))
    elif case == "failing_petrophysics":
        params["petrophysics"] = _failing_petrophysics
    elif case == "weights":
        w = np.zeros(len(y))
    elif case == "complex_init":
        params["init"] = np.full(tiny_prior.latent_dim, 1 + 2j)
    elif case == "grad_init":
        params["init"] = torch.zeros(tiny_prior.latent_dim, requires_grad=True)
    elif case == "duck_forward":   # the methods, not the protocol's base class
        fwd = type("Duck", (), dict(is_linear=True, grid=grid,
                                    traveltimes=StraightRay(grid).traveltimes,
                                    jacobian=StraightRay(grid).jacobian,
                                    validate_rays=StraightRay(grid).validate_rays))()
    elif case == "reg_decay":   # 2 ** 24 * 1e33 overflows float32
        params.update(reg_decay=2.0, reg_weight=1e33)
    elif case == "lr_decay":
        params.update(lr_decay=1e30)
    elif case == "big_lr":
        params.update(lr=1e39)
    elif case == "big_reg_weight":
        params.update(reg_weight=1e39, reg_decay=1.0)
    elif case == "big_init":
        params["init"] = np.full(tiny_prior.latent_dim, 1e300)
    with pytest.raises(error, match=match):
        LatentInverter(prior, fwd, **params).fit(X, y, sample_weight=w)


def test_source_batching_with_shortest_path(tiny_prior, bent_data):
    """batching='source': every mini-batch is one source gather (one Dijkstra run)."""
    from skvaeinv.inverter import _batch_groups

    grid, rays, fwd, y = bent_data  # 4 sources x 4 receivers
    groups = _batch_groups(rays, "source")
    np.testing.assert_array_equal(groups, np.repeat(np.arange(4), 4))
    np.testing.assert_array_equal(_batch_groups(rays, "receiver"), np.tile(np.arange(4), 4))
    assert _batch_groups(rays, "random") is None
    inv = LatentInverter(tiny_prior, fwd, n_starts=2, epochs=3, batch_size=4, lr=0.1,
                         lr_decay=0.8, reg_weight=5.0, reg_decay=0.99, batching="source",
                         device="cpu", random_state=0).fit(rays, y)
    assert inv.n_iter_ == 12 and np.isfinite(inv.data_rmse_).all()
    assert (inv.data_rmse_ <= inv.history_["data_rmse"][:, 0]).all()
    with pytest.raises(InvalidParameterError, match="batching"):
        LatentInverter(tiny_prior, fwd, batching="shuffled").fit(rays, y)


def test_ring_radius_reaches_the_engine(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    # a strong, non-decaying ring dominates the data (lr * weight = 0.5: one step lands
    # on the ring): ||z|| ends at the chosen radius, whatever the tiny prior
    kw = dict(n_starts=3, epochs=2, batch_size=64, lr=5e-5, reg_weight=1e4, reg_decay=1.0,
              device="cpu", random_state=0)
    inv = LatentInverter(tiny_prior, StraightRay(grid), ring_radius=3.0, **kw).fit(rays, y)
    np.testing.assert_allclose(inv.history_.z_norm[:, -1], 3.0, atol=0.05)
    default = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y)
    np.testing.assert_allclose(default.history_.z_norm[:, -1],
                               chi_mean(tiny_prior.latent_dim), atol=0.05)
    with pytest.raises(ValueError, match="ring_radius"):
        LatentInverter(tiny_prior, StraightRay(grid), ring_radius=-1.0, **kw).fit(rays, y)


def test_reference_schedules(tiny_prior, survey):
    # the straight-ray schedule is the estimator's default
    defaults = LatentInverter().get_params()
    straight = reference_schedule("straight")
    assert straight == {k: defaults[k] for k in straight}
    # the study's bent-ray schedule: 750 iterations, ring step on the edge (lr * λ0 = 1)
    bent = reference_schedule("bent")
    assert bent["epochs"] * 625 // bent["batch_size"] == 750
    assert bent["lr"] * bent["reg_weight"] == pytest.approx(1.0)
    # the long one: 3,000 iterations, the same decay profile, a stable ring step
    long = reference_schedule("bent-long")
    assert long["epochs"] == 4 * bent["epochs"]
    assert long["lr"] * long["reg_weight"] < 1
    n_it = long["epochs"] * 25
    assert long["reg_decay"] ** n_it == pytest.approx(bent["reg_decay"] ** 750, rel=0.5)
    # each call returns a new dict, and every schedule is accepted by the estimator
    bent["epochs"] = 1
    assert reference_schedule("bent")["epochs"] == 30
    for name in ("straight", "bent", "bent-as-coded", "bent-long"):
        LatentInverter(tiny_prior, StraightRay(survey[0]),
                       **reference_schedule(name))._validate_params()


def test_bent_as_coded_takes_the_study_codes_bent_ray_step(survey):
    # The study's bent-ray code sets the image gradient to -J^T e; the true gradient of
    # the squared misfit through the reference petrophysics is 2 ds/dm times that,
    # ds/dm = 0.02 s^2 (3.125-5.56 ns/m). "bent-as-coded" scales the data step by a
    # factor inside that range and keeps the study's ring step.
    grid, rays = survey
    rng = np.random.default_rng(0)
    h = LinearVelocity()
    A = StraightRay(grid).jacobian(None, rays).toarray()
    d = A @ h(rng.uniform(0, 1, grid.shape)).ravel()
    m = torch.tensor(rng.uniform(0, 1, grid.shape).ravel(), requires_grad=True)
    s = 1.0 / (0.06 * m + 0.08 * (1 - m))
    e = torch.from_numpy(d) - torch.from_numpy(A) @ s
    (e ** 2).sum().backward()
    study = -(A.T @ e.detach().numpy())
    hit = np.abs(study) > 1e-9
    ratio = m.grad.numpy()[hit] / study[hit]
    np.testing.assert_allclose(ratio, 2 * 0.02 * s.detach().numpy()[hit] ** 2, rtol=1e-10)
    assert 2 * 3.125 - 1e-9 <= ratio.min() and ratio.max() <= 2 * 0.02 / 0.06 ** 2 + 1e-9
    bent, coded = reference_schedule("bent"), reference_schedule("bent-as-coded")
    assert 1 / ratio.max() <= coded["lr"] / bent["lr"] <= 1 / ratio.min()
    assert coded["lr"] * coded["reg_weight"] == pytest.approx(bent["lr"] * bent["reg_weight"])
    assert {k: v for k, v in coded.items() if k not in ("lr", "reg_weight")} == \
        {k: v for k, v in bent.items() if k not in ("lr", "reg_weight")}


def test_reference_schedule_unknown_name():
    with pytest.raises(ValueError, match="unknown schedule 'linear'.*bent-long"):
        reference_schedule("linear")


def test_score_validates_its_inputs(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, random_state=0,
                         **FAST).fit(rays, y)
    bad_y = y.copy()
    bad_y[2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        inv.score(rays, bad_y)
    with pytest.raises(ValueError, match="numeric|traveltimes"):
        inv.score(rays, np.array(["a"] * len(y)))
    for w, match in [(np.zeros(len(y)), "non-zero|not all zero"),
                     (np.r_[-np.ones(4), np.ones(len(y) - 4)], "Negative values"),
                     (np.ones(3), r"sample_weight.shape == \(3,\)")]:
        with pytest.raises(ValueError, match=match):
            inv.score(rays, y, sample_weight=w)
    # weights in the score: only the weighted rays count
    t = inv.predict(rays)
    w = np.zeros(len(y))
    w[:5] = 1.0
    assert inv.score(rays, np.r_[t[:5], t[5:] + 3.0], sample_weight=w) == 1.0


def test_prior_parameters_cannot_be_set_through_the_inverter(tiny_prior, survey):
    grid, _ = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1)
    deep = inv.get_params(deep=True)
    assert not any(k.startswith("prior__") for k in deep)
    assert deep["forward__grid"] == grid
    before = tiny_prior.get_params()
    with pytest.raises(ValueError, match="prior__latent_dim.*uses its fitted prior"):
        inv.set_params(prior__latent_dim=5)
    assert tiny_prior.get_params() == before
    inv.set_params(forward__grid=grid, n_starts=2)  # the others still work
    assert inv.n_starts == 2


def test_changed_prior_parameter_gives_a_clear_error(tiny_prior, survey, data):
    grid, rays = survey
    prior = clone(tiny_prior)  # clone: an unfitted copy; fit it and change it afterwards
    prior.__dict__.update({k: v for k, v in tiny_prior.__dict__.items() if k.endswith("_")})
    prior.latent_dim = tiny_prior.latent_dim + 1
    with pytest.raises(ValueError, match="latent_dim.*changed after fit"):
        LatentInverter(prior, StraightRay(grid), n_starts=1, **FAST).fit(rays, data[2])


def test_predict_uses_the_operator_it_was_fitted_with(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, random_state=0,
                         **FAST).fit(rays, data[2])
    before = inv.predict(rays)
    inv.set_params(forward=StraightRay(Grid2D(grid.shape[::-1], grid.spacing)))
    np.testing.assert_array_equal(inv.predict(rays), before)


def test_predict_uses_the_petrophysics_it_was_fitted_with(tiny_prior, survey, data):
    grid, rays = survey
    velocity = LinearVelocity()
    inv = LatentInverter(tiny_prior, StraightRay(grid), petrophysics=velocity, n_starts=1,
                         random_state=0, **FAST).fit(rays, data[2])
    before = inv.predict(rays)
    assert inv.petrophysics_ is not velocity
    inv.set_params(petrophysics__v_channel=0.03)   # for the next fit, not this one
    np.testing.assert_array_equal(inv.predict(rays), before)
    velocity.v_matrix = 0.1   # nor does editing the object passed in
    np.testing.assert_array_equal(inv.predict(rays), before)


def test_petrophysics_sees_one_form_everywhere(tiny_prior, survey, data):
    # a mapping that varies with depth, written for (n, H, W) images, with float32
    # constants: the check, the inversion and predict must all call it the same way
    grid, rays = survey
    H = grid.shape[0]
    depth_factor = torch.linspace(1.0, 1.5, H)[:, None]                  # (H, 1) float32
    v_matrix, v_channel = torch.tensor(0.08), torch.tensor(0.06)
    seen = []

    def h(m):
        seen.append((tuple(m.shape), m.dtype))
        return depth_factor / torch.lerp(v_matrix, v_channel, m)

    inv = LatentInverter(tiny_prior, StraightRay(grid), petrophysics=h, n_starts=3,
                         random_state=0, **FAST).fit(rays, data[2])
    shapes = {shape[1:] for shape, _ in seen}
    assert shapes == {grid.shape} and {dtype for _, dtype in seen} == {torch.float32}
    # the kept models' misfit, recomputed with the mapping applied by hand, is the
    # reported one (a mapping broadcast over starts would give other numbers)
    expected = depth_factor.numpy() / (0.08 - 0.02 * inv.models_.astype(np.float64))
    op = StraightRay(grid)
    rmse = [np.sqrt(np.mean((op.traveltimes(s, rays) - data[2]) ** 2)) for s in expected]
    np.testing.assert_allclose(inv.data_rmse_, rmse, rtol=1e-4)
    np.testing.assert_allclose(inv.predict(rays), op.traveltimes(expected[inv.best_index_],
                                                                 rays), rtol=1e-5)


def test_grid_search_over_fitted_priors(tiny_prior, tiny_images, survey, data):
    grid, rays = survey
    other = VAEPrior(epochs=1, random_state=1, latent_dim=3, base_channels=4,
                     hidden_units=16, device="cpu").fit(tiny_images[:50])
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0, **FAST)
    cv = KFold(2, shuffle=True, random_state=0)
    # GridSearchCV clones the grid's values: bare priors come back unfitted ...
    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        GridSearchCV(inv, {"prior": [tiny_prior, other]}, cv=cv,
                     error_score="raise").fit(rays, data[2])
    # ... frozen ones are used as they are; the data were made with tiny_prior
    search = GridSearchCV(inv, {"prior": [FrozenEstimator(other), FrozenEstimator(tiny_prior)]},
                          cv=cv, error_score="raise").fit(rays, data[2])
    assert search.best_params_["prior"].estimator is tiny_prior
    assert search.cv_results_["mean_test_score"][1] > search.cv_results_["mean_test_score"][0]


def test_failed_refit_keeps_the_previous_fit(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, random_state=0,
                         **FAST).fit(rays, data[2])
    before = inv.predict(rays), inv.models_.copy()
    with pytest.raises(ValueError):
        inv.fit(np.c_[rays, rays[:, 0]], data[2])  # five columns
    with pytest.raises(ValueError, match="non-positive"):
        inv.fit(rays, -data[2])
    with pytest.raises(InvalidParameterError, match="n_jobs"):
        inv.set_params(n_jobs=0).fit(rays, data[2])
    # every start's cost overflows from the first iteration: no model to keep
    with pytest.raises(FloatingPointError, match="no start produced a finite model"):
        inv.set_params(n_jobs=None, reg="origin", reg_weight=1e38).fit(rays, data[2])
    assert inv.n_features_in_ == 4
    np.testing.assert_array_equal(inv.predict(rays), before[0])
    np.testing.assert_array_equal(inv.models_, before[1])


def test_duck_typed_prior_and_read_only_inputs(tiny_prior, survey, data):
    grid, rays = survey

    class Decoded:  # no fit method: only what the docstring asks for
        latent_dim = tiny_prior.latent_dim
        image_shape_ = tiny_prior.image_shape_

        def get_decoder(self, device="cpu"):
            return tiny_prior.get_decoder(device)

    y = data[2].astype(np.float32)
    z0 = np.zeros((2, tiny_prior.latent_dim), np.float32)
    for a in (rays, y, z0):
        a.flags.writeable = False
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch's "NumPy array is not writable"
        duck = LatentInverter(Decoded(), StraightRay(grid), n_starts=2, init=z0,
                              random_state=0, **FAST).fit(rays, y)
    real = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, init=z0,
                          random_state=0, **FAST).fit(rays, y)
    np.testing.assert_array_equal(duck.latents_, real.latents_)

    class Unfitted(Decoded):
        image_shape_ = property(lambda self: (_ for _ in ()).throw(AttributeError()))
    with pytest.raises(NotFittedError, match="no image_shape_"):
        LatentInverter(Unfitted(), StraightRay(grid), **FAST).fit(rays, y)


def test_growing_schedules_within_range(tiny_prior, survey, data):
    # a decay factor above 1 is allowed while the schedule stays finite; a zero weight
    # stays zero however it is scaled (no overflow of 0 * 2 ** k)
    from skvaeinv.engine import learning_rate, reg_weight_at

    assert reg_weight_at(0.0, 2.0, 5000) == 0.0
    assert reg_weight_at(1.0, 2.0, 5000) == learning_rate(1.0, 2.0, 1, 5000) == np.inf
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, random_state=0,
                         **{**FAST, "epochs": 200, "reg_weight": 0.0, "reg_decay": 2.0})
    inv.fit(rays, data[2])   # 1600 iterations: 2 ** 1600 overflows a float
    assert np.all(inv.history_.reg_weight == 0.0)
    # without a regulariser its weight's schedule does not matter, not even in the costs
    # that select the kept iterates
    plain = clone(inv).set_params(reg=None, reg_weight=10.0, reg_decay=1.0, epochs=3)
    plain.fit(rays, data[2])
    for weight, decay in ((10.0, 1e9), (1e39, 1.0)):
        wild = clone(plain).set_params(reg_weight=weight, reg_decay=decay).fit(rays, data[2])
        np.testing.assert_array_equal(wild.kept_iteration_, plain.kept_iteration_)
        np.testing.assert_array_equal(wild.data_rmse_, plain.data_rmse_)
        assert np.all(wild.history_.reg_weight == 0) and np.isfinite(wild.history_.cost).all()


def test_empty_ensemble_warning_points_at_the_caller(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, random_state=0,
                         acceptance_threshold=1e-6, **FAST)
    with pytest.warns(UserWarning, match="the ensemble is empty") as record:
        inv.fit(rays, data[2])
    assert record[0].filename == __file__
    with pytest.warns(UserWarning, match="the ensemble is empty") as record:
        inv.ensemble(1e-6)
    assert record[0].filename == __file__


def test_lr_step_reaches_the_schedule(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, random_state=0,
                         **{**FAST, "epochs": 5, "lr_step": 2, "lr_decay": 0.5})
    inv.fit(rays, data[2])
    h = inv.history_
    np.testing.assert_array_equal(h.epoch, np.repeat(np.arange(5), len(rays) // 32))
    np.testing.assert_allclose(h.lr, FAST["lr"] * 0.5 ** (h.epoch // 2))


def test_decoder_check_passes_device_failures_through():
    from skvaeinv._latent_estimator import check_decoder as _check_decoder

    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

    def out_of_memory(z):
        raise oom_type("CUDA out of memory. Tried to allocate 2.00 GiB")

    def cuda_error(z):   # what torch < 2.8 raises for a failing kernel
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(oom_type, match="out of memory"):
        _check_decoder(out_of_memory, 4, (32, 16), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        _check_decoder(cuda_error, 4, (32, 16), torch.device("cpu"))

    def wrong_size(z):   # a shape error is still the prior's latent size
        return torch.nn.Linear(3, 512)(z)

    with pytest.raises(ValueError, match="latent_dim=4"):
        _check_decoder(wrong_size, 4, (32, 16), torch.device("cpu"))
