"""Tests of skvaeinv.LatentSampler: the estimator around the engine's MCMC kernels.

The kernels themselves (exactness, calibration, adaptation) are tested in
test_mcmc.py; here: the noise model reaches the posterior it should (a linear generator
gives a Gaussian posterior in closed form), determinism, starting points, summaries and
bad input.
"""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from skvaeinv import LatentInverter, LatentSampler
from skvaeinv.forward import StraightRay
from skvaeinv.survey import Grid2D, crosshole

from conftest import slowness

SHAPE = (8, 4)
SHIFT = 10.0


class LinearPrior:
    """A duck-typed fitted prior whose decoder is ``m = A z`` (facies, any real)."""

    latent_dim = 3
    image_shape_ = SHAPE

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.A = 0.05 * rng.normal(size=(SHAPE[0] * SHAPE[1], self.latent_dim))
        self.c = np.full(SHAPE[0] * SHAPE[1], SHIFT)   # the slowness of m = 0

    def get_decoder(self, device):
        A = torch.tensor(self.A, dtype=torch.float32, device=device)
        return lambda z: (z @ A.T).reshape(-1, *SHAPE)

    def inverse_transform(self, Z):
        return (np.asarray(Z) @ self.A.T).reshape(-1, *SHAPE)


def identity(m):
    """Slowness ``m + SHIFT``: linear, so the posterior is Gaussian."""
    return m + SHIFT


@pytest.fixture(scope="module")
def linear_problem():
    prior = LinearPrior()
    grid = Grid2D(SHAPE, spacing=0.1)
    rays = crosshole(grid, depths=[0.1, 0.3, 0.5, 0.7])
    K = StraightRay(grid).jacobian(None, rays).toarray()
    G = K @ prior.A                       # d = G z + K c + noise
    z_true = np.array([0.5, -1.0, 0.3])
    sigma = np.linspace(0.02, 0.05, len(rays))
    y = G @ z_true + K @ prior.c + sigma * np.random.default_rng(1).standard_normal(len(rays))
    return prior, grid, rays, G, K, y, sigma


def gaussian_posterior(G, K, c, y, sigma):
    """Mean and covariance of z | d for d = G z + K c + N(0, diag(sigma²)), z ~ N(0, I)."""
    W = np.diag(1 / sigma ** 2)
    cov = np.linalg.inv(G.T @ W @ G + np.eye(G.shape[1]))
    return cov @ G.T @ W @ (y - K @ c), cov


@pytest.mark.parametrize("per_ray", [False, True])
def test_linear_generator_gives_the_gaussian_posterior(linear_problem, per_ray):
    prior, grid, rays, G, K, y, sigma = linear_problem
    s = sigma if per_ray else np.full(len(y), 0.03)
    mean, cov = gaussian_posterior(G, K, prior.c, y, s)
    post = LatentSampler(prior, StraightRay(grid), petrophysics=identity, n_chains=4,
                         n_samples=1500, n_warmup=300, noise_std=0.03, device="cpu",
                         random_state=0)
    post.fit(rays, y, sigma=sigma if per_ray else None)
    draws = post.samples_.reshape(-1, 3)
    mcse = np.sqrt(np.diag(cov) / post.ess_bulk_)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * mcse), (draws.mean(0), mean, mcse)
    np.testing.assert_allclose(draws.var(0), np.diag(cov), rtol=0.15)
    assert np.all(post.rhat_ < 1.05) and np.all(post.ess_bulk_ > 200)
    # the pixel summaries are those of the decoded draws
    images = prior.inverse_transform(draws)
    np.testing.assert_allclose(post.posterior_mean_, images.mean(0), rtol=1e-9)
    np.testing.assert_allclose(post.posterior_std_, images.std(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_array_equal(post.channel_probability_, (images > 0.5).mean(0))
    assert post.n_gradient_evals_ == 4 * (1 + 300 + 1500)


def test_estimated_noise_covers_the_truth(linear_problem):
    prior, grid, rays, G, K, _, _ = linear_problem
    rng = np.random.default_rng(5)
    y = G @ np.array([0.2, 0.4, -0.6]) + K @ prior.c + 0.04 * rng.standard_normal(len(rays))
    post = LatentSampler(prior, StraightRay(grid), petrophysics=identity, n_chains=4,
                         n_samples=800, n_warmup=200, noise_std="estimate", device="cpu",
                         random_state=0).fit(rays, y)
    s = post.noise_std_.ravel()
    assert abs(s.mean() - 0.04) < 3 * s.std() + 0.004
    # per-ray relative errors: the sampled factor times sigma is the error in ns
    rel = np.linspace(1.0, 2.0, len(rays))
    y2 = (G @ np.array([0.2, 0.4, -0.6]) + K @ prior.c
          + 0.03 * rel * rng.standard_normal(len(rays)))
    post2 = clone(post).fit(rays, y2, sigma=rel)
    factor = post2.noise_std_.ravel()
    assert abs(factor.mean() - 0.03) < 3 * factor.std() + 0.004


@pytest.mark.filterwarnings("ignore:the chains have not mixed")   # short chains
def test_deterministic_and_independent_of_n_jobs(tiny_prior, survey, data):
    grid, rays = survey
    kw = dict(n_chains=4, chunk_size=2, n_samples=20, n_warmup=10, noise_std=0.5,
              device="cpu", random_state=3, petrophysics=None)
    one = LatentSampler(tiny_prior, StraightRay(grid), n_jobs=1, **kw).fit(rays, data[2])
    two = LatentSampler(tiny_prior, StraightRay(grid), n_jobs=2, **kw).fit(rays, data[2])
    again = LatentSampler(tiny_prior, StraightRay(grid), n_jobs=1, **kw).fit(rays, data[2])
    np.testing.assert_array_equal(one.samples_, two.samples_)
    np.testing.assert_array_equal(one.samples_, again.samples_)
    np.testing.assert_array_equal(one.log_posterior_, two.log_posterior_)
    assert one.samples_.shape == (4, 20, tiny_prior.latent_dim)
    other = LatentSampler(tiny_prior, StraightRay(grid), n_jobs=1,
                          **{**kw, "random_state": 4}).fit(rays, data[2])
    assert not np.array_equal(one.samples_, other.samples_)


def test_starts_from_an_inverter_and_summaries(tiny_prior, survey, data):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=3, epochs=3, batch_size=32,
                         lr=0.05, device="cpu", random_state=0).fit(rays, data[2])
    post = LatentSampler(tiny_prior, StraightRay(grid), sampler="pcn", n_chains=5,
                         n_samples=30, n_warmup=0, step_size=1e-6, noise_std=0.5,
                         init=inv, device="cpu", random_state=0)
    with pytest.warns(UserWarning, match="not mixed"):   # 5 chains from 3 places
        post.fit(rays, data[2])
    # a tiny pCN step stays where it starts: the inverter's latents, repeated
    expected = inv.latents_[np.arange(5) % 3]
    np.testing.assert_allclose(post.samples_[:, 0], expected, atol=1e-4)
    lower, upper = post.credible_interval(0.8, max_draws=50)
    assert lower.shape == upper.shape == tiny_prior.image_shape_
    assert np.all(lower <= upper + 1e-12)
    assert post.decode_samples(7).shape == (7, *tiny_prior.image_shape_)
    t = StraightRay(grid).traveltimes(slowness(post.posterior_mean_), rays)
    np.testing.assert_allclose(post.predict(rays), t, rtol=1e-6)


@pytest.mark.filterwarnings("ignore:the chains have not mixed")   # short chains
@pytest.mark.parametrize("sampler", ["mala", "hmc"])
def test_gradient_samplers_run_on_the_tiny_prior(tiny_prior, survey, data, sampler):
    grid, rays = survey
    post = LatentSampler(tiny_prior, StraightRay(grid), sampler=sampler, n_chains=2,
                         n_samples=15, n_warmup=10, n_leapfrog=3, noise_std=0.5,
                         init=data[0][0], device="cpu", random_state=0)
    post.fit(rays, data[2])
    assert np.isfinite(post.log_posterior_).all()
    assert post.n_gradient_evals_ > 0 and post.n_forward_evals_ >= post.n_gradient_evals_


def test_bad_input_is_refused_and_changes_nothing(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    post = LatentSampler(tiny_prior, StraightRay(grid), n_chains=2, n_samples=5,
                         n_warmup=0, noise_std=0.5, device="cpu", random_state=0)
    for sigma, match in [(np.zeros(len(y)), "sigma must be finite and > 0"),
                         (np.full(len(y), np.nan), "sigma must be finite and > 0"),
                         (np.ones(3), r"sigma has shape \(3,\)"),
                         (0.5, "one standard deviation per ray")]:
        with pytest.raises(ValueError, match=match):
            post.fit(rays, y, sigma=sigma)
    with pytest.raises(ValueError, match="non-positive"):
        post.fit(rays, -y)
    for params, match in [({"n_samples": 0}, "n_samples"), ({"noise_std": -1.0}, "noise_std"),
                          ({"noise_std": "guess"}, "noise_std")]:
        with pytest.raises(ValueError, match=match):
            clone(post).set_params(**params).fit(rays, y)
    with pytest.raises(NotFittedError, match="LatentInverter is not fitted"):
        clone(post).set_params(init=LatentInverter(tiny_prior, StraightRay(grid))).fit(rays, y)
    assert not hasattr(post, "samples_")   # nothing written by the failed fits
    with pytest.raises(NotFittedError):
        post.predict(rays)


@pytest.mark.filterwarnings("ignore:the chains have not mixed")   # short chains
def test_plot_posterior(tiny_prior, survey, data, tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from skvaeinv.plotting import plot_posterior

    grid, rays = survey
    post = LatentSampler(tiny_prior, StraightRay(grid), n_chains=2, n_samples=10,
                         n_warmup=0, noise_std=0.5, device="cpu", random_state=0)
    with pytest.raises(NotFittedError, match="fitted LatentSampler"):
        plot_posterior(post)
    post.fit(rays, data[2])
    fig = plot_posterior(post, truth=data[1], grid=grid)
    titles = [ax.get_title() for ax in fig.axes]
    assert {"truth", "posterior mean", "posterior std", "channel probability",
            "trace of z[0]", "R-hat per latent dimension"} <= set(titles)
    fig.savefig(tmp_path / "posterior.png")
    assert (tmp_path / "posterior.png").stat().st_size > 1000


@pytest.mark.filterwarnings("ignore:the chains have not mixed")   # short chains
def test_bent_rays_through_the_same_bridge(tiny_prior, bent_data, data):
    from skvaeinv.forward import ShortestPath

    grid, rays, op, y = bent_data
    post = LatentSampler(tiny_prior, op, n_chains=2, n_samples=6, n_warmup=2,
                         noise_std=0.2, init=data[0][0], device="cpu", random_state=0)
    post.fit(rays, y)
    assert np.isfinite(post.log_posterior_).all()
    # the exact bent-ray forward of every draw: the stored log-posterior of the last
    # draw is the Gaussian misfit of its decoded model's shortest-path times
    z = post.samples_[0, -1]
    model = tiny_prior.inverse_transform(z[None])[0]
    r = ShortestPath(grid, secondary_nodes=1).traveltimes(slowness(model), rays) - y
    expected = -0.5 * np.sum(r ** 2) / 0.2 ** 2 - 0.5 * z @ z
    assert post.log_posterior_[0, -1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.filterwarnings("ignore:the chains have not mixed")   # short chains
def test_latent_density_as_the_prior(tiny_prior, tiny_images, survey, data):
    import copy

    grid, rays = survey
    kw = dict(n_chains=2, n_samples=8, n_warmup=4, noise_std=0.5, device="cpu",
              random_state=0)
    with pytest.raises(NotFittedError, match="fit_latent_density"):
        LatentSampler(tiny_prior, StraightRay(grid), latent_prior="density",
                      **kw).fit(rays, data[2])
    prior = copy.deepcopy(tiny_prior)   # the shared fixture stays without a density
    prior.fit_latent_density(tiny_images[:250], n_components=3, random_state=0)
    post = LatentSampler(prior, StraightRay(grid), latent_prior="density", **kw)
    post.fit(rays, data[2])
    # the stored log-posterior holds the density's log p(z), not -½ |z|²
    z = post.samples_[1, -1]
    model = prior.inverse_transform(z[None])[0]
    r = StraightRay(grid).traveltimes(slowness(model), rays) - data[2]
    log_p = prior.latent_density_.score_samples(z[None])[0]
    expected = -0.5 * np.sum(r ** 2) / 0.5 ** 2 + log_p
    assert post.log_posterior_[1, -1] == pytest.approx(expected, rel=1e-4)
    assert abs(log_p + 0.5 * z @ z) > 1.0    # the two priors differ here
    # init=None: the chains start from draws of the density, one per chain's generator
    same = LatentSampler(prior, StraightRay(grid), latent_prior="density",
                         **kw).fit(rays, data[2])
    np.testing.assert_array_equal(post.samples_, same.samples_)
