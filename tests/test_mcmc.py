"""Tests of skvaeinv.engine.mcmc: latent-space Markov chains on toy decoders.

As in test_engine.py, the decoders and forwards are small torch callables: a linear
generator with a dense linear forward (a Gaussian posterior in closed form), a tanh
decoder for simulation-based calibration, a squared decoder for a bimodal posterior.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skvaeinv.engine import LatentObjective
from skvaeinv.engine.mcmc import (
    ChainState,
    GaussianMixturePrior,
    KernelParams,
    LatentPosterior,
    Metric,
    SamplerConfig,
    convergence_diagnostics,
    estimate_metric,
    init_state,
    make_kernel,
    noise_step,
    run_chains,
    sample_latent,
)
from skvaeinv.engine.mcmc.adaptation import DualAveraging, mass_windows

from conftest import DEVICES


class DenseForward:
    """Linear forward ``t = s K^T`` following the TorchForward call contract."""

    def __init__(self, K):
        self.K = torch.as_tensor(K, dtype=torch.float32)

    def __call__(self, s, idx=None):
        t = s @ self.K.T
        return t if idx is None else t.gather(1, idx)


class RowwiseForward(DenseForward):
    """The same map with each row reduced on its own: bit-identical whatever the batch."""

    def __call__(self, s, idx=None):
        t = (s[:, None, :] * self.K).sum(-1)
        return t if idx is None else t.gather(1, idx)


class BlockForward(DenseForward):
    """Chain ``b`` of a batch of ``R`` sees data block ``b`` only: the other blocks
    return the data themselves (zero residual), so one run holds ``R`` replications."""

    def __init__(self, K, y_blocks):
        super().__init__(K)
        n_rep, m = y_blocks.shape
        self.y = torch.as_tensor(y_blocks.reshape(-1), dtype=torch.float32)
        self.mask = torch.block_diag(*[torch.ones(1, m, dtype=torch.bool)] * n_rep)
        self.n_rep = n_rep

    def __call__(self, s, idx=None):
        return torch.where(self.mask, (s @ self.K.T).repeat(1, self.n_rep), self.y)


def linear_decoder(A, c):
    A = torch.as_tensor(A, dtype=torch.float32)
    c = torch.as_tensor(c, dtype=torch.float32)
    return lambda z: z @ A.T + c


def rowwise_linear_decoder(A, c):
    A = torch.as_tensor(A, dtype=torch.float32)
    c = torch.as_tensor(c, dtype=torch.float32)
    return lambda z: (z[:, None, :] * A).sum(-1) + c


def seeds(n, seed=0):
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def objective(decoder, forward, y, w=None):
    return LatentObjective(decoder, forward, y, torch.device("cpu"), sample_weight=w)


@pytest.fixture(scope="module")
def gaussian():
    """Linear generator, dense forward, relative weights: the posterior in float64."""
    rng = np.random.default_rng(0)
    n_pix, n_rays, d, s2 = 12, 30, 3, 0.25
    A = rng.normal(size=(n_pix, d)) / np.sqrt(n_pix)
    c = np.full(n_pix, 2.0)
    K = rng.normal(size=(n_rays, n_pix)) / np.sqrt(n_pix)
    w = rng.uniform(0.5, 2.0, size=n_rays)
    z_true = rng.normal(size=d)
    y = K @ (A @ z_true + c) + np.sqrt(s2 / w) * rng.normal(size=n_rays)
    G = K @ A
    cov = np.linalg.inv(np.eye(d) + G.T @ (w[:, None] * G) / s2)
    mean = cov @ G.T @ (w * (y - K @ c)) / s2
    return dict(A=A, c=c, K=K, w=w, y=y, d=d, s2=s2, cov=cov, mean=mean)


# --------------------------------------------------------------------------- config

@pytest.mark.parametrize("kwargs, name", [
    (dict(sampler="nuts"), "sampler"),
    (dict(n_samples=0), "n_samples"),
    (dict(n_samples=2.0), "n_samples"),
    (dict(n_warmup=-1), "n_warmup"),
    (dict(thin=0), "thin"),
    (dict(step_size=0.0), "step_size"),
    (dict(step_size=math.inf), "step_size"),
    (dict(sampler="pcn", step_size=1.5), "step_size"),
    (dict(target_accept=1.0), "target_accept"),
    (dict(target_accept=0.0), "target_accept"),
    (dict(n_leapfrog=0), "n_leapfrog"),
    (dict(step_jitter=1.0), "step_jitter"),
    (dict(mass="full"), "mass"),
    (dict(sampler="pcn", mass="diag"), "mass"),
    (dict(mass_init="dense"), "mass_init"),
    (dict(sampler="pcn", mass_init="gauss-newton"), "mass_init"),
    (dict(step_size_adaptation="global"), "step_size_adaptation"),
    (dict(noise_var=0.0), "noise_var"),
    (dict(noise_var=math.nan), "noise_var"),
    (dict(noise_var=math.inf), "noise_var"),
    (dict(noise_var="fit"), "noise_var"),
    (dict(temperatures=(2.0, 4.0)), "temperatures"),
    (dict(temperatures=(1.0, 4.0, 3.0)), "temperatures"),
    (dict(temperatures=()), "temperatures"),
    (dict(precision="auto"), "precision"),
    (dict(progress="yes"), "progress"),
])
def test_config_rejects_bad_values(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}="):
        SamplerConfig(**kwargs)


def test_config_resolves_defaults():
    assert SamplerConfig(sampler="mala").target_accept == pytest.approx(0.574)
    assert SamplerConfig(sampler="hmc").target_accept == 0.8
    pcn = SamplerConfig(sampler="pcn", temperatures=[1, 2])
    assert (pcn.mass, pcn.target_accept, pcn.temperatures) == ("identity", 0.3, (1.0, 2.0))
    assert SamplerConfig(sampler="hmc").mass == "diag"
    cfg = SamplerConfig(n_warmup=10, n_samples=5, thin=3, noise_var="estimate")
    assert cfg.n_iter == 25 and cfg.estimate_noise and cfg.uses_gradient


def test_run_rejects_mismatched_inputs(gaussian):
    g = gaussian
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"])
    cfg = SamplerConfig(n_warmup=0, n_samples=1)
    with pytest.raises(ValueError, match="z0 must have shape"):
        run_chains(obj, np.zeros(3), seeds(1), cfg)
    with pytest.raises(ValueError, match="non-finite"):
        run_chains(obj, np.full((1, 3), np.nan), seeds(1), cfg)
    with pytest.raises(ValueError, match="generators must be 2"):
        run_chains(obj, np.zeros((2, 3)), seeds(1), cfg)
    with pytest.raises(ValueError, match="not a multiple of the 2 temperatures"):
        run_chains(obj, np.zeros((3, 3)), seeds(3),
                   SamplerConfig(n_warmup=0, n_samples=1, temperatures=(1.0, 2.0)))
    with pytest.raises(ValueError, match="precision"):
        run_chains(obj, np.zeros((1, 3)), seeds(1),
                   SamplerConfig(n_warmup=0, n_samples=1, precision="bfloat16"))


# --------------------------------------------------------------------------- pieces

def test_metric_algebra():
    rng = np.random.default_rng(1)
    B = rng.normal(size=(2, 3, 3))
    C = torch.tensor(B @ B.transpose(0, 2, 1) + np.eye(3))
    xi = torch.tensor(rng.normal(size=(2, 3)))
    for metric in (Metric("dense", C), Metric("diag", torch.diagonal(C, dim1=1, dim2=2)),
                   Metric("identity")):
        # L ξ has Mahalanobis norm |ξ|², a momentum L⁻ᵀ ξ has kinetic energy |ξ|²/2
        np.testing.assert_allclose(metric.mahalanobis(metric.scaled_noise(xi)),
                                   (xi ** 2).sum(1), rtol=1e-10)
        np.testing.assert_allclose(metric.kinetic_energy(metric.momentum(xi)),
                                   0.5 * (xi ** 2).sum(1), rtol=1e-10)
    np.testing.assert_allclose(Metric("dense", C).velocity(xi),
                               torch.einsum("bij,bj->bi", C, xi), rtol=1e-12)


def test_metric_estimate_is_pooled_and_regularised_like_stan():
    rng = np.random.default_rng(2)
    draws = torch.tensor(rng.normal(size=(50, 4, 2)) * [1.0, 3.0])
    groups = torch.tensor([0, 0, 1, 1])
    dense = estimate_metric(draws, "dense", groups)
    for chains in ([0, 1], [2, 3]):
        x = draws[:, chains].reshape(-1, 2).numpy()
        n = len(x)
        expected = n / (n + 5) * np.cov(x.T) + 1e-3 * 5 / (n + 5) * np.eye(2)
        np.testing.assert_allclose(dense.inv_mass[chains[0]], expected, rtol=1e-10)
        np.testing.assert_allclose(dense.inv_mass[chains[1]], expected, rtol=1e-10)
    diag = estimate_metric(draws, "diag", groups)
    np.testing.assert_allclose(diag.inv_mass, torch.diagonal(dense.inv_mass, dim1=1, dim2=2))
    assert mass_windows(200, True) == [(30, 80), (80, 180)]
    assert mass_windows(99, True) == [] and mass_windows(500, False) == []


def test_dual_averaging_reaches_the_target_per_chain_or_shared():
    # acceptance exp(-ε / a) reaches 0.5 at ε = a log 2
    a = torch.tensor([1.0, 4.0], dtype=torch.float64)
    per_chain = DualAveraging(torch.ones(2, dtype=torch.float64), 0.5)
    shared = DualAveraging(torch.ones(2, dtype=torch.float64), 0.5,
                           groups=torch.tensor([0, 0]))
    capped = DualAveraging(torch.full((2,), 0.5, dtype=torch.float64), 0.1,
                           max_step_size=1.0)
    for _ in range(2000):
        per_chain.update(torch.exp(-per_chain.step_size / a))
        shared.update(torch.exp(-shared.step_size / a))
        capped.update(torch.ones(2, dtype=torch.float64))
    np.testing.assert_allclose(per_chain.final_step_size, a * math.log(2), rtol=0.05)
    assert shared.final_step_size[0] == shared.final_step_size[1]
    assert torch.all(capped.final_step_size <= 1.0)


def test_state_gradients_match_the_closed_form(gaussian):
    g = gaussian
    target = LatentPosterior(objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]),
                                       g["y"], g["w"]))
    z = torch.tensor(np.random.default_rng(3).normal(size=(4, 3)))
    state = init_state(target, z, torch.full((4,), 0.5, dtype=torch.float64),
                       with_grad=True)
    G, zn = g["K"] @ g["A"], z.numpy()
    r = zn @ G.T + g["K"] @ g["c"] - g["y"]
    np.testing.assert_allclose(state.sse, (g["w"] * r ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(state.log_likelihood, -(g["w"] * r ** 2).sum(1), rtol=1e-5)
    np.testing.assert_allclose(state.grad_log_likelihood, -2 * (g["w"] * r) @ G,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state.grad_log_density(torch.ones(4, dtype=torch.float64)),
                               -2 * (g["w"] * r) @ G - zn, rtol=1e-4, atol=1e-5)


def test_noise_step_draws_the_inverse_gamma_and_rescales(gaussian):
    g = gaussian
    target = LatentPosterior(objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]),
                                       g["y"], g["w"]))
    n = 4000
    z = torch.tensor(np.random.default_rng(4).normal(size=3)).expand(n, 3)
    state = init_state(target, z, torch.ones(n, dtype=torch.float64), with_grad=True)
    new = noise_step(state, seeds(n, 5), target.n_data, torch.ones(n, dtype=torch.float64))
    sse = float(state.sse[0])
    law = stats.invgamma(target.n_data / 2, scale=sse / 2)
    assert stats.kstest(new.noise_var.numpy(), law.cdf).pvalue > 1e-3
    # the rescaled log-likelihood and gradient are those of a fresh evaluation (of the
    # same batch: the float32 model rounds its sums differently for other batch sizes
    # on some CPUs, 2.5e-8 relative on an AMD Zen 4)
    fresh = target.state(z, new.noise_var, with_grad=True)
    np.testing.assert_allclose(new.log_likelihood, fresh.log_likelihood, rtol=1e-12)
    np.testing.assert_allclose(new.grad_log_likelihood, fresh.grad_log_likelihood,
                               rtol=1e-12)


def test_kernels_reject_non_finite_proposals(gaussian):
    # the decoder gives NaN where z_0 > 0.5: such proposals are rejected, chains go on
    g = gaussian
    base = linear_decoder(g["A"], g["c"])

    def decoder(z):
        x = base(z)
        return torch.where(z[:, :1] > 0.5, torch.full_like(x, math.nan), x)

    obj = objective(decoder, DenseForward(g["K"]), g["y"], g["w"])
    for sampler in ("pcn", "mala", "hmc"):
        res = run_chains(obj, np.zeros((4, 3)), seeds(4, 6), SamplerConfig(
            sampler=sampler, n_warmup=50, n_samples=100, noise_var=g["s2"], n_leapfrog=3,
            step_size=0.5))
        assert np.isfinite(res.samples).all() and (res.samples[..., 0] <= 0.5).all()
        assert res.n_divergent.sum() > 0 and (res.acceptance_rate > 0).all()


# --------------------------------------------------------------------------- runs

@pytest.mark.parametrize("sampler, mass, n_chains, n_warmup, n_samples, extra", [
    ("pcn", "identity", 16, 500, 1500, {}),
    ("mala", "diag", 8, 300, 1000, {}),
    ("hmc", "dense", 8, 300, 500, dict(n_leapfrog=5, step_jitter=0.2)),
    ("mala", "gauss-newton", 8, 100, 600, {}),
    ("hmc", "gauss-newton", 8, 100, 300, dict(n_leapfrog=5, step_jitter=0.2)),
    ("hmc", "dense", 8, 120, 400, dict(n_leapfrog=5, step_jitter=0.2, mass_init="gauss-newton")),
])
def test_linear_gaussian_posterior(gaussian, sampler, mass, n_chains, n_warmup, n_samples,
                                   extra):
    pytest.importorskip("arviz_stats")
    g = gaussian
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], g["w"])
    z0 = np.random.default_rng(7).normal(size=(n_chains, g["d"]))
    res = run_chains(obj, z0, seeds(n_chains, 8), SamplerConfig(
        sampler=sampler, mass=mass, n_warmup=n_warmup, n_samples=n_samples,
        noise_var=g["s2"], **extra))
    diag = convergence_diagnostics(res.samples)
    flat = res.samples.reshape(-1, g["d"])
    sd = np.sqrt(np.diag(g["cov"]))
    mcse = sd / np.sqrt(diag.ess_bulk)
    assert np.all(np.abs(flat.mean(0) - g["mean"]) < 4 * mcse), (flat.mean(0), g["mean"], mcse)
    np.testing.assert_allclose(flat.var(0), sd ** 2, rtol=0.15)
    assert np.all(diag.rhat < 1.05)
    # log_posterior is -½ Σ w r² / s² - ½ |z|² of each draw
    r = flat @ (g["K"] @ g["A"]).T + g["K"] @ g["c"] - g["y"]
    expected = -0.5 * (g["w"] * r ** 2).sum(1) / g["s2"] - 0.5 * (flat ** 2).sum(1)
    np.testing.assert_allclose(res.log_posterior.reshape(-1), expected, rtol=1e-4, atol=1e-3)
    if mass == "dense":   # the metric estimates the posterior covariance
        np.testing.assert_allclose(res.inverse_mass[0], g["cov"], rtol=0.5,
                                   atol=0.2 * sd.min() ** 2)
    if mass == "gauss-newton":   # a linear model: the Laplace covariance is the posterior's
        np.testing.assert_allclose(res.inverse_mass, np.broadcast_to(
            g["cov"], res.inverse_mass.shape), rtol=1e-3, atol=1e-4)
    per_step = {"pcn": (1, 0), "mala": (1, 1), "hmc": (5, 5)}[sampler]
    n_iter = n_warmup + n_samples
    # the Gauss-Newton metric: 2 d evaluations at the start (and at the 2 window ends)
    metric_evals = {"gauss-newton": 3 * 2 * g["d"]}.get(
        mass, 2 * g["d"] if extra.get("mass_init") == "gauss-newton" else 0)
    assert res.n_forward_evals == n_chains * (1 + metric_evals + n_iter * per_step[0])
    assert res.n_gradient_evals == n_chains * ((sampler != "pcn") + n_iter * per_step[1])


def test_gauss_newton_precision_is_the_hessian(gaussian):
    # linear model: -log π has the constant Hessian JᵀWJ / s² + I, tempered by β; a
    # nonlinear decoder: central differences agree with the autograd Jacobian
    g = gaussian
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], g["w"])
    target = LatentPosterior(obj)
    z = torch.as_tensor(np.random.default_rng(3).normal(size=(5, g["d"])))
    beta = torch.tensor([1.0, 1.0, 0.5, 0.25, 1.0], dtype=torch.float64)
    s2 = torch.tensor([g["s2"]] * 4 + [4 * g["s2"]], dtype=torch.float64)
    h = target.gauss_newton(z, s2, beta).numpy()
    G = g["K"] @ g["A"]
    gtwg = G.T @ (g["w"][:, None] * G)
    for b in range(5):
        expected = float(beta[b] / s2[b]) * gtwg + np.eye(g["d"])
        np.testing.assert_allclose(h[b], expected, rtol=1e-3, atol=1e-3)
    # float32 model: differences round at ~1e-4 relative
    np.testing.assert_allclose(np.linalg.inv(h[0]), g["cov"], rtol=1e-3, atol=1e-4)

    A = torch.as_tensor(g["A"], dtype=torch.float32)
    tanh_obj = objective(lambda v: torch.tanh(v @ A.T), DenseForward(g["K"]), g["y"], g["w"])
    z1 = z[:1].to(torch.float32).requires_grad_(True)
    jac = torch.autograd.functional.jacobian(
        lambda v: tanh_obj.residuals(tanh_obj.decode(v).slowness)[0], z1)[:, 0].double()
    expected = jac.T @ (torch.as_tensor(g["w"])[:, None] * jac) / g["s2"] + torch.eye(g["d"])
    got = LatentPosterior(tanh_obj).gauss_newton(z[:1], s2[:1], beta[:1])[0]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2e-3, atol=2e-3)


def test_estimated_noise_covers_the_truth(gaussian):
    g = gaussian
    rng = np.random.default_rng(9)
    s_true = 0.7
    z_true = rng.normal(size=3)
    y = g["K"] @ (g["A"] @ z_true + g["c"]) + s_true / np.sqrt(g["w"]) * rng.normal(
        size=len(g["w"]))
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), y, g["w"])
    res = run_chains(obj, rng.normal(size=(4, 3)), seeds(4, 10), SamplerConfig(
        sampler="mala", n_warmup=200, n_samples=1000, noise_var="estimate"))
    s = res.noise_std.reshape(-1)
    assert res.noise_std.shape == (4, 1000)
    assert abs(s.mean() - s_true) < 3 * s.std(), (s.mean(), s.std())
    # the recorded log-posterior is the marginal one, -N/2 log Σ w r² - ½ |z|²
    z = res.samples[0, -1]
    r = g["K"] @ (g["A"] @ z + g["c"]) - y
    assert res.log_posterior[0, -1] == pytest.approx(
        -len(y) / 2 * np.log((g["w"] * r ** 2).sum()) - 0.5 * z @ z, rel=1e-5)


def _sbc_problem(n_rep=200, seed=11):
    rng = np.random.default_rng(seed)
    d, n_pix, m, s = 2, 4, 3, 0.2
    A = torch.tensor(rng.normal(size=(n_pix, d)), dtype=torch.float32)
    c = torch.tensor(0.5 * rng.normal(size=n_pix), dtype=torch.float32)
    K = rng.normal(size=(m, n_pix)) / np.sqrt(n_pix)
    z_true = rng.normal(size=(n_rep, d))
    x = np.tanh(z_true @ A.numpy().T.astype(np.float64) + c.numpy())
    y = x @ K.T + s * rng.normal(size=(n_rep, m))
    obj = objective(lambda z: torch.tanh(z @ A.T + c), BlockForward(K, y), y.reshape(-1))
    return obj, z_true, s ** 2


@pytest.mark.parametrize("sampler, thin, extra", [
    ("pcn", 20, {}), ("mala", 10, {}), ("hmc", 4, dict(n_leapfrog=5, step_jitter=0.2)),
])
def test_simulation_based_calibration(sampler, thin, extra):
    # Talts et al. (2018): z* ~ prior, d ~ p(d | z*); the rank of z* among L thinned
    # posterior draws is uniform on 0..L. 200 replications, one chain each, in one batch.
    obj, z_true, s2 = _sbc_problem()
    n_rep, n_draws = z_true.shape[0], 9
    res = run_chains(obj, np.random.default_rng(12).normal(size=z_true.shape),
                     seeds(n_rep, 13), SamplerConfig(
                         sampler=sampler, n_warmup=150, n_samples=n_draws, thin=thin,
                         noise_var=s2, **extra))
    ranks = (res.samples < z_true[:, None, :]).sum(1)
    for j in range(z_true.shape[1]):
        counts = np.bincount(ranks[:, j], minlength=n_draws + 1)
        assert stats.chisquare(counts).pvalue >= 1e-3, counts


def test_replica_exchange_visits_both_modes():
    # y_0 = z_0² with little noise: modes at z_0 = ±1.22, of equal mass, that a single
    # chain does not leave; the temperature-1 slots of a ladder visit both
    obj = objective(lambda z: torch.stack([z[:, 0] ** 2, z[:, 1]], 1), lambda s, i=None: s,
                    np.array([1.5, 0.3]))
    z0 = np.random.default_rng(14).normal(size=(40, 2))
    plain = run_chains(obj, z0[:8], seeds(8, 15), SamplerConfig(
        n_warmup=100, n_samples=300, noise_var=0.01))
    assert np.all(np.isin((plain.samples[..., 0] > 0).mean(1), (0.0, 1.0)))
    res = run_chains(obj, z0, seeds(40, 15), SamplerConfig(
        n_warmup=300, n_samples=1000, noise_var=0.01,
        temperatures=(1.0, 4.0, 16.0, 64.0, 256.0)))
    post = res.posterior_chains
    assert post.shape == (8, 1000, 2)
    np.testing.assert_array_equal(res.inv_temperature[:5], [1, 1 / 4, 1 / 16, 1 / 64, 1 / 256])
    assert 0.4 < (post[..., 0] > 0).mean() < 0.6
    assert np.all((post[..., 0] > 0).mean(1) > 0.1) and np.all((post[..., 0] > 0).mean(1) < 0.9)
    assert res.swap_rate.shape == (4,) and np.all(res.swap_rate > 0.1)
    np.testing.assert_allclose(np.abs(post[..., 0]).mean(), math.sqrt(1.5), rtol=0.02)


def test_replica_exchange_with_estimated_noise_runs(gaussian):
    g = gaussian
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], g["w"])
    res = run_chains(obj, np.zeros((4, 3)), seeds(4, 16), SamplerConfig(
        sampler="pcn", n_warmup=20, n_samples=30, noise_var="estimate",
        temperatures=(1.0, 3.0)))
    assert np.isfinite(res.samples).all() and np.isfinite(res.noise_std).all()
    assert res.swap_rate.shape == (1,) and 0 <= res.swap_rate[0] <= 1


@pytest.mark.parametrize("sampler", ["pcn", "mala", "hmc"])
def test_determinism_and_independence_of_the_batch(gaussian, sampler):
    # with a decoder and forward whose rows are computed independently (bit-identical
    # whatever the batch), a chain's draws do not depend on the other chains
    g = gaussian
    obj = objective(rowwise_linear_decoder(g["A"], g["c"]), RowwiseForward(g["K"]), g["y"],
                    g["w"])
    cfg = SamplerConfig(sampler=sampler, n_warmup=60, n_samples=60, noise_var="estimate",
                        mass="identity", n_leapfrog=3,
                        step_jitter=0.1 if sampler == "hmc" else 0.0)
    z0 = np.random.default_rng(17).normal(size=(4, 3))
    first = run_chains(obj, z0, seeds(4, 18), cfg)
    again = run_chains(obj, z0, seeds(4, 18), cfg)
    np.testing.assert_array_equal(first.samples, again.samples)
    np.testing.assert_array_equal(first.noise_std, again.noise_std)
    alone = run_chains(obj, z0[2:3], seeds(4, 18)[2:3], cfg)
    np.testing.assert_array_equal(alone.samples[0], first.samples[2])
    np.testing.assert_array_equal(alone.step_size[0], first.step_size[2])


def test_batched_matmul_chain_agrees_to_float32_rounding(gaussian):
    # with a batched matrix product the rows round differently with the batch size;
    # without adaptation (which would amplify it) the draws agree to that rounding
    g = gaussian
    z0 = np.random.default_rng(19).normal(size=(4, 3))
    cfg = SamplerConfig(sampler="mala", n_warmup=0, n_samples=40, step_size=0.3,
                        noise_var=g["s2"], mass="identity")
    kw = dict(sample_weight=g["w"])
    batch = sample_latent(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], z0,
                          seeds(4, 20), cfg, **kw)
    alone = sample_latent(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"],
                          z0[1:2], seeds(4, 20)[1:2], cfg, **kw)
    np.testing.assert_allclose(alone.samples[0], batch.samples[1], rtol=1e-4, atol=1e-5)


def test_shared_step_size_and_kernel_api(gaussian):
    g = gaussian
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], g["w"])
    res = run_chains(obj, np.zeros((4, 3)), seeds(4, 21), SamplerConfig(
        n_warmup=100, n_samples=5, noise_var=g["s2"], step_size_adaptation="shared"))
    assert np.all(res.step_size == res.step_size[0]) and res.inverse_mass.shape == (4, 3)
    # a kernel used by hand: state in, state and info out
    kernel = make_kernel("mala", LatentPosterior(obj))
    state = kernel.init(torch.zeros(3, 3, dtype=torch.float64),
                        torch.full((3,), g["s2"], dtype=torch.float64))
    assert isinstance(state, ChainState)
    params = KernelParams(torch.full((3,), 0.3, dtype=torch.float64), Metric("identity"),
                          torch.ones(3, dtype=torch.float64))
    new, info = kernel.step(state, seeds(3, 22), params)
    moved = (new.position != state.position).any(1)
    np.testing.assert_array_equal(moved, info.accepted)
    assert torch.all((info.acceptance_prob >= 0) & (info.acceptance_prob <= 1))


def test_diagnostics_flag_disagreeing_chains():
    pytest.importorskip("arviz_stats")
    rng = np.random.default_rng(23)
    good = convergence_diagnostics(rng.normal(size=(4, 400, 2)))
    assert good.rhat.shape == good.ess_bulk.shape == (2,)
    assert np.all(good.rhat < 1.02) and np.all(good.ess_bulk > 1000)
    stuck = rng.normal(size=(4, 400, 2)) + np.arange(4)[:, None, None]
    assert np.all(convergence_diagnostics(stuck).rhat > 1.2)
    with pytest.raises(ValueError, match="samples must have shape"):
        convergence_diagnostics(np.zeros((4, 10)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_runs_on_the_objectives_device(gaussian, device, precision, no_tf32):
    g = gaussian
    forward = DenseForward(g["K"])
    forward.K = forward.K.to(device)
    A, c = (torch.as_tensor(g[k], dtype=torch.float32, device=device) for k in ("A", "c"))
    obj = LatentObjective(lambda z: z @ A.T + c, forward, g["y"], torch.device(device),
                          sample_weight=g["w"], precision=precision)
    for sampler, mass in (("pcn", "identity"), ("mala", "dense"), ("hmc", "diag")):
        res = run_chains(obj, np.zeros((4, 3)), seeds(4, 24), SamplerConfig(
            sampler=sampler, mass=mass, n_warmup=40, n_samples=20, n_leapfrog=3,
            noise_var="estimate", temperatures=(1.0, 2.0), precision=precision))
        assert res.samples.shape == (4, 20, 3) and np.isfinite(res.samples).all()
        assert np.isfinite(res.log_posterior).all() and np.isfinite(res.noise_std).all()


# --------------------------------------------------------------------------- latent priors

def _gaussian_prior_posterior(g, mu, cov_prior):
    """The linear model's posterior under the prior N(mu, cov_prior)."""
    G = g["K"] @ g["A"]
    prec_prior = np.linalg.inv(cov_prior)
    prec = prec_prior + G.T @ (g["w"][:, None] * G) / g["s2"]
    cov = np.linalg.inv(prec)
    mean = cov @ (prec_prior @ mu + G.T @ (g["w"] * (g["y"] - g["K"] @ g["c"])) / g["s2"])
    return mean, cov


def test_mixture_prior_matches_sklearn_and_its_gradient():
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(4)
    codes = np.concatenate([rng.normal(-1, 0.5, size=(200, 3)), rng.normal(1, 0.8, (200, 3))])
    z = torch.as_tensor(rng.normal(size=(6, 3)))
    for kind in ("full", "tied"):
        gm = GaussianMixture(2, covariance_type=kind, random_state=0).fit(codes)
        prior = GaussianMixturePrior.from_mixture(gm)
        lp, grad = prior.log_prob(z)
        np.testing.assert_allclose(lp.numpy(), gm.score_samples(z.numpy()), rtol=1e-10)
        h = 1e-5
        fd = np.stack([(gm.score_samples(z.numpy() + h * e) - gm.score_samples(z.numpy() - h * e))
                       / (2 * h) for e in np.eye(3)], 1)
        np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-5, atol=1e-7)
        curv = prior.curvature(z).numpy()
        assert np.all(np.linalg.eigvalsh(curv) > 0)
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixturePrior.from_mixture(GaussianMixture(1, covariance_type="diag").fit(codes))


@pytest.mark.parametrize("sampler, mass, n_warmup, n_samples, thin", [
    ("pcn", "identity", 500, 1500, 1),    # the prior correction of pCN's ratio
    ("mala", "gauss-newton", 150, 1500, 1),
])
def test_gaussian_prior_posterior(gaussian, sampler, mass, n_warmup, n_samples, thin):
    # the target's prior a (one-component) Gaussian mixture N(mu, S): the posterior of
    # the linear model is Gaussian with known mean and covariance
    pytest.importorskip("arviz_stats")
    g = gaussian
    mu = np.array([0.5, -0.3, 0.2])
    S = np.array([[0.5, 0.1, 0.0], [0.1, 0.3, 0.05], [0.0, 0.05, 0.8]])
    prior = GaussianMixturePrior(np.ones(1), mu[None], np.linalg.cholesky(np.linalg.inv(S)))
    mean, cov = _gaussian_prior_posterior(g, mu, S)
    obj = objective(linear_decoder(g["A"], g["c"]), DenseForward(g["K"]), g["y"], g["w"])
    n_chains = 16
    z0 = np.random.default_rng(7).normal(size=(n_chains, g["d"]))
    res = run_chains(obj, z0, seeds(n_chains, 8), SamplerConfig(
        sampler=sampler, mass=mass, n_warmup=n_warmup, n_samples=n_samples, thin=thin,
        noise_var=g["s2"]), prior=prior)
    diag = convergence_diagnostics(res.samples)
    flat = res.samples.reshape(-1, g["d"])
    sd = np.sqrt(np.diag(cov))
    mcse = sd / np.sqrt(diag.ess_bulk)
    assert np.all(np.abs(flat.mean(0) - mean) < 4 * mcse), (flat.mean(0), mean, mcse)
    np.testing.assert_allclose(flat.var(0), sd ** 2, rtol=0.15)
    # the standard-normal posterior is elsewhere: the test can tell the priors apart
    assert np.max(np.abs(mean - g["mean"]) / sd) > 8 * np.max(mcse / sd)
    if mass == "gauss-newton":   # the Laplace covariance with the prior's precision
        np.testing.assert_allclose(res.inverse_mass[0], cov, rtol=1e-3, atol=1e-4)
