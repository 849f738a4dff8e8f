"""The latent density: LatentDensity, its mixtures, its bandwidth choices, and
VAEPrior.fit_latent_density (skvaeinv/prior/density.py, _mixtures.py, _bandwidth.py)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from skvaeinv import VAEPrior

from conftest import TINY_PRIOR_KW


@pytest.fixture(scope="module")
def density_prior(tiny_prior, tiny_images):
    import copy

    return copy.deepcopy(tiny_prior).fit_latent_density(tiny_images[:250], n_components=4,
                                                       random_state=0)


def test_latent_density_follows_the_codes(density_prior, tiny_images):
    codes = density_prior.transform(tiny_images[:250])
    z = density_prior._sample_latents(20000, np.random.RandomState(0), "density")
    # the mixture reproduces the first two moments of the codes it was fitted to
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.05 * codes.std(0).max())
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T),
                               atol=0.1 * np.abs(np.cov(codes.T)).max())
    # ... and explains them better than N(0, I) does
    gmm = density_prior.latent_density_
    normal_ll = -0.5 * (codes**2).sum(1).mean() - codes.shape[1] / 2 * np.log(2 * np.pi)
    assert gmm.score(codes) > normal_ll


def test_density_samples_images_deterministic(density_prior):
    a = density_prior.sample(7, random_state=3, source="density")
    assert a.shape == (7, 32, 16) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, density_prior.sample(7, random_state=3,
                                                          source="density"))
    assert not np.array_equal(a, density_prior.sample(7, random_state=4, source="density"))
    assert not np.array_equal(a, density_prior.sample(7, random_state=3))


def test_latent_density_persists(density_prior, tiny_prior, tmp_path):
    expected = density_prior.sample(5, random_state=1, source="density")
    density_prior.save(tmp_path / "d.skv")
    loaded = VAEPrior.load(tmp_path / "d.skv")
    np.testing.assert_array_equal(loaded.sample(5, random_state=1, source="density"),
                                  expected)
    codes = density_prior.transform(np.zeros((3, 32, 16)))
    np.testing.assert_allclose(loaded.latent_density_.score_samples(codes),
                               density_prior.latent_density_.score_samples(codes))
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(density_prior)).sample(5, random_state=1,
                                                         source="density"), expected)
    # a file of format version 1 (before kernel densities) holds a full mixture
    state = torch.load(tmp_path / "d.skv", weights_only=True)
    del state["checksum"]                            # as version 1 files had none
    assert "weights" in state["latent_density"]      # unequal weights are stored
    del state["latent_density"]["covariance_type"]
    state["format_version"] = 1
    torch.save(state, tmp_path / "v1.skv")
    np.testing.assert_array_equal(
        VAEPrior.load(tmp_path / "v1.skv").sample(5, random_state=1, source="density"),
        expected)
    tiny_prior.save(tmp_path / "n.skv")     # without a density: none after loading
    assert not hasattr(VAEPrior.load(tmp_path / "n.skv"), "latent_density_")


def test_latent_density_bad_input(tiny_prior, tiny_images):
    with pytest.raises(NotFittedError, match="fit_latent_density"):
        tiny_prior.sample(2, source="density")
    with pytest.raises(ValueError, match="source must be"):
        tiny_prior.sample(2, source="posterior")
    with pytest.raises(ValueError, match="n_components"):
        tiny_prior.fit_latent_density(tiny_images[:20], n_components=0)
    with pytest.raises(ValueError, match="at least n_components=30"):
        tiny_prior.fit_latent_density(tiny_images[:20], n_components=30)
    with pytest.raises(NotFittedError):
        VAEPrior().fit_latent_density(tiny_images[:20])
    assert not hasattr(tiny_prior, "latent_density_")   # failed calls left it unchanged


@pytest.fixture(scope="module")
def kernel_prior(tiny_prior, tiny_images):
    import copy

    return copy.deepcopy(tiny_prior).fit_latent_density(tiny_images[:250], kind="kernel",
                                                       bandwidth=0.3)


def test_kernel_density_is_the_codes_with_scaled_covariance(kernel_prior, tiny_images):
    codes = kernel_prior.transform(tiny_images[:250])
    assert kernel_prior.latent_density_.kind == "kernel"
    kde = kernel_prior.latent_density_.mixture_
    assert kde.covariance_type == "tied" and kde.n_components == 250
    assert kernel_prior.latent_bandwidth_ == 0.3
    np.testing.assert_allclose(kde.means_, codes, rtol=1e-6)
    np.testing.assert_allclose(kde.weights_, 1 / 250)
    np.testing.assert_allclose(kde.covariances_, 0.09 * np.cov(codes.T), rtol=1e-6)
    # draws: a random code plus kernel noise, so their covariance is the codes' (biased)
    # covariance plus the kernel's, and their mean the codes' mean
    z = kernel_prior._sample_latents(40000, np.random.RandomState(0), "density")
    scale = np.abs(np.cov(codes.T)).max()
    np.testing.assert_allclose(z.mean(0), codes.mean(0), atol=0.03 * np.sqrt(scale))
    np.testing.assert_allclose(np.cov(z.T), np.cov(codes.T, bias=True) * 1.09,
                               atol=0.04 * scale)
    # the density's score is the kernel density's: at a code, mostly its own kernel
    own = (-0.5 * codes.shape[1] * np.log(2 * np.pi)
           - 0.5 * np.linalg.slogdet(kde.covariances_)[1] - np.log(250))
    assert np.all(kde.score_samples(codes) >= own - 1e-9)


def test_kernel_density_likelihood_and_cv_bandwidth_match_sklearn():
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    from skvaeinv.prior import _bandwidth, _mixtures

    rng = np.random.RandomState(0)
    Z = np.concatenate([0.5 * rng.standard_normal((300, 3)) + c
                        for c in ([0, 0, 0], [3, 1, 0], [0, 3, 2])])
    fit, held = Z[:700], Z[700:]
    chol = np.linalg.cholesky(np.cov(fit.T))
    white = lambda a: np.linalg.solve(chol, a.T).T  # noqa: E731
    ref = [KernelDensity(bandwidth=h).fit(white(fit)).score_samples(white(held)).mean()
           - np.log(np.diag(chol)).sum() for h in (0.2, 0.5)]
    np.testing.assert_allclose(
        _bandwidth.log_likelihoods([_bandwidth.Fold(fit, held)], [0.2, 0.5]), ref, rtol=1e-10)
    # ... which is the log-density of the kernel density that gets built
    np.testing.assert_allclose(_mixtures.kernel_density(fit, 0.5).score(held), ref[1],
                               rtol=1e-7)
    h = _bandwidth.cv_bandwidth(Z, np.random.RandomState(0))
    assert h == _bandwidth.cv_bandwidth(Z, np.random.RandomState(0))
    # the search finds the maximum of the cross-validated likelihood (a fine grid's)
    folds = _bandwidth.cv_folds(Z, np.random.RandomState(0))
    grid = np.geomspace(0.05, 2.0, 400)
    cv = _bandwidth.log_likelihoods(folds, grid)
    assert abs(np.log(grid[np.argmax(cv)] / h)) < 2 * np.log(grid[1] / grid[0])
    assert _bandwidth.log_likelihoods(folds, h)[0] >= cv.max() - 1e-6
    # sklearn's 5-fold grid search over the same kernel (whitened once, other folds)
    allchol = np.linalg.cholesky(np.cov(Z.T))
    gs = GridSearchCV(KernelDensity(), {"bandwidth": np.geomspace(0.05, 1.5, 200)}, cv=5)
    ref_h = gs.fit(np.linalg.solve(allchol, Z.T).T).best_params_["bandwidth"]
    assert abs(h / ref_h - 1) < 0.15, (h, ref_h)


def test_tied_mixture_scores_as_sklearn():
    from scipy.special import logsumexp
    from sklearn.mixture import GaussianMixture

    from skvaeinv.prior import _mixtures

    rng = np.random.RandomState(0)
    X = np.concatenate([0.5 * rng.standard_normal((200, 3)) + c
                        for c in ([0, 0, 0], [3, 1, 0], [0, 3, 2])])
    ref = GaussianMixture(3, covariance_type="tied", random_state=0).fit(X)
    assert not np.allclose(ref.weights_, 1 / 3)        # unequal weights are used
    tied = _mixtures.TiedMixture(3, covariance_type="tied")
    _mixtures.set_fitted(tied, ref.weights_, ref.means_, ref.covariances_)
    # held-out points, near and very far (log-densities of about -1e6 stay finite)
    Y = np.concatenate([rng.standard_normal((50, 3)) * 2, [[1e3, -1e3, 5e2]]])
    np.testing.assert_allclose(tied.score_samples(Y), ref.score_samples(Y), rtol=1e-10)
    assert np.isfinite(tied.score_samples(Y)).all()
    assert tied.score(Y) == pytest.approx(ref.score(Y), rel=1e-10)
    # many components: more than one block of (rows x components), against sklearn's
    # own scoring of the same object (component by component)
    centres = rng.standard_normal((3000, 3))
    kde = _mixtures.kernel_density(centres, 0.3)
    assert isinstance(kde, _mixtures.TiedMixture)
    rows = 2 * _mixtures.BLOCK // 3000 + 7
    Y = rng.standard_normal((rows, 3))
    np.testing.assert_allclose(kde.score_samples(Y), GaussianMixture.score_samples(kde, Y),
                               rtol=1e-10)
    # other covariance types are sklearn's own
    full = _mixtures.TiedMixture(2, covariance_type="full", random_state=0).fit(X)
    np.testing.assert_array_equal(full.score_samples(Y),
                                  GaussianMixture.score_samples(full, Y))
    # bad input
    with pytest.raises(ValueError, match="3 features"):
        kde.score_samples(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        kde.score_samples(np.full((2, 3), np.nan))
    with pytest.raises(NotFittedError):
        _mixtures.TiedMixture(2, covariance_type="tied").score_samples(Y)
    # the row-wise log-sum-exp, including rows of -inf and of huge values
    a = np.concatenate([rng.standard_normal((4, 50)) * 300,
                        np.full((1, 50), -np.inf), [[1e308, 1e308] + [-np.inf] * 48]])
    expected = logsumexp(a, axis=1)
    np.testing.assert_allclose(_mixtures.logsumexp_rows(a.copy()), expected, rtol=1e-12)


def test_cv_bandwidth_warns_at_the_edge_of_its_range():
    from skvaeinv.prior import _bandwidth

    # codes that repeat: held-out codes sit on fitting codes, and the likelihood grows
    # without bound as the bandwidth shrinks
    rng = np.random.RandomState(0)
    Z = np.repeat(rng.standard_normal((4, 2)), 15, axis=0)
    with pytest.warns(RuntimeWarning, match="edge of the search range"):
        h = _bandwidth.cv_bandwidth(Z, rng)
    assert h < 0.021


def test_cv_kernel_density_on_the_prior(tiny_prior, tiny_images, tmp_path):
    import copy

    from skvaeinv.prior import _bandwidth, _mixtures

    prior = copy.deepcopy(tiny_prior).fit_latent_density(tiny_images[:250], kind="kernel",
                                                        random_state=0)
    # the factor maximises the likelihood of the folds random_state=0 makes
    folds = _bandwidth.cv_folds(prior.transform(tiny_images[:250]), np.random.RandomState(0))
    grid = np.geomspace(0.05, 2.0, 200)
    best = grid[np.argmax(_bandwidth.log_likelihoods(folds, grid))]
    assert abs(np.log(best / prior.latent_bandwidth_)) < 2 * np.log(grid[1] / grid[0])
    codes = prior.transform(tiny_images[250:])
    mixture = copy.deepcopy(tiny_prior).fit_latent_density(tiny_images[:250], n_components=4,
                                                          random_state=0)
    # better than N(0, I) at explaining held-out codes
    normal_ll = -0.5 * (codes**2).sum(1).mean() - codes.shape[1] / 2 * np.log(2 * np.pi)
    assert prior.latent_density_.score(codes) > normal_ll
    assert mixture.latent_density_.mixture_.covariance_type == "full"
    assert not hasattr(mixture, "latent_bandwidth_")
    # persistence: the same draws, scores and bandwidth after save/load and pickle
    expected = prior.sample(5, random_state=1, source="density")
    prior.save(tmp_path / "k.skv")
    loaded = VAEPrior.load(tmp_path / "k.skv")
    assert loaded.latent_bandwidth_ == prior.latent_bandwidth_
    assert isinstance(loaded.latent_density_.mixture_, _mixtures.TiedMixture)
    saved = torch.load(tmp_path / "k.skv", weights_only=True)
    # compact: the codes as float32 (lossless, they are float32 values), no weights; the
    # format version is 2 for a kernel density only (older releases read the others)
    assert saved["latent_density"]["means"].dtype == torch.float32
    assert "weights" not in saved["latent_density"] and saved["format_version"] == 2
    mixture.save(tmp_path / "m.skv")
    assert torch.load(tmp_path / "m.skv", weights_only=True)["format_version"] == 1
    np.testing.assert_array_equal(loaded.sample(5, random_state=1, source="density"),
                                  expected)
    np.testing.assert_array_equal(loaded.latent_density_.score_samples(codes),
                                  prior.latent_density_.score_samples(codes))
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(prior)).sample(5, random_state=1, source="density"),
        expected)
    # a pickle carries the density once, as the fitted scikit-learn object itself
    bare = copy.deepcopy(prior)
    del bare.latent_density_
    assert not hasattr(bare, "latent_bandwidth_")
    extra = len(pickle.dumps(prior)) - len(pickle.dumps(bare))
    assert extra < 1.2 * prior.latent_density_.mixture_.means_.nbytes + 4096
    copied = pickle.loads(pickle.dumps(prior)).latent_density_
    assert copied.get_params() == prior.latent_density_.get_params()
    assert copied.mixture_.get_params() == prior.latent_density_.mixture_.get_params()
    np.testing.assert_array_equal(copied.mixture_.means_, prior.latent_density_.mixture_.means_)
    # a kernel density replaced by a mixture drops the bandwidth; a refit drops both
    prior.fit_latent_density(tiny_images[:250], n_components=2, random_state=0)
    assert not hasattr(prior, "latent_bandwidth_")


def test_select_bandwidth_finds_a_known_factor_with_common_draws():
    import warnings

    from skvaeinv.prior import _bandwidth

    rng = np.random.RandomState(0)
    Z = rng.standard_normal((3000, 3)) * [1.0, 2.0, 0.5]
    seen = []

    def loss(z):
        # kernel draws have covariance (1 + h**2) cov(Z): 1.25 cov(Z) for h = 0.5
        seen.append(z)
        return float(np.abs(np.var(z, axis=0) / np.var(Z, axis=0) - 1.25).max())

    factors = (0.3, 0.4, 0.5, 0.6, 0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")    # an inner choice: no warning
        h, losses = _bandwidth.select_bandwidth([(Z, loss)], factors,
                                                np.random.RandomState(1), 20_000)
    assert h == 0.5 and losses.shape == (5,) and np.argmin(losses) == 2
    assert losses[2] < 0.05 < min(losses[1], losses[3])
    # the same centres and offsets for every factor, scaled by it: the centres are the
    # (float32-rounded) codes themselves
    offsets = (seen[4] - seen[0]) / (0.7 - 0.3)
    centres = seen[0] - 0.3 * offsets
    for f, z in zip(factors, seen):
        np.testing.assert_allclose(z, centres + f * offsets, atol=1e-10)
    Z32 = Z.astype(np.float32).astype(np.float64)
    gap = np.abs(centres[:200, None, :] - Z32[None]).max(axis=2).min(axis=1)
    assert gap.max() < 1e-9
    # reproducible
    assert _bandwidth.select_bandwidth([(Z, loss)], factors, np.random.RandomState(1),
                                       20_000)[0] == h
    # several splits: each its own codes and draws, a factor's loss is their mean
    calls = {"a": [], "b": []}
    splits = [(Z[:1500], lambda z: calls["a"].append(z) or len(calls["a"]) * 1.0),
              (Z[1500:], lambda z: calls["b"].append(z) or 10.0 - 2 * len(calls["b"]))]
    with pytest.warns(RuntimeWarning, match="largest of the factors tried"):
        h2, losses2 = _bandwidth.select_bandwidth(splits, factors, np.random.RandomState(1), 50)
    np.testing.assert_array_equal(losses2, [4.5, 4.0, 3.5, 3.0, 2.5])
    assert h2 == 0.7
    for name, rows in (("a", Z[:1500]), ("b", Z[1500:])):
        c = calls[name][0] - 0.3 * (calls[name][4] - calls[name][0]) / 0.4
        gap = np.abs(c[:, None, :] - rows.astype(np.float32)[None]).max(axis=2).min(axis=1)
        assert gap.max() < 1e-9    # each split draws around its own codes
    # a non-finite loss never wins, also in one split only; ties go to the first factor;
    # a choice at either end of the factors is warned about
    nan_first = iter([np.nan, 2.0, 1.0])
    with pytest.warns(RuntimeWarning, match="largest of the factors tried"):
        assert _bandwidth.select_bandwidth([(Z, lambda z: next(nan_first))], (0.1, 0.2, 0.3),
                                           np.random.RandomState(0), 10)[0] == 0.3
    inf_first = iter([np.inf, 2.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _bandwidth.select_bandwidth([(Z[:1500], lambda z: 1.0),
                                            (Z[1500:], lambda z: next(inf_first))],
                                           (0.1, 0.2, 0.3), np.random.RandomState(0),
                                           10)[0] == 0.2
    with pytest.warns(RuntimeWarning, match=r"smallest of the factors tried \(0.1-0.3\)"):
        assert _bandwidth.select_bandwidth([(Z, lambda z: 1.0)], (0.1, 0.2, 0.3),
                                           np.random.RandomState(0), 10)[0] == 0.1
    with pytest.raises(ValueError, match="no bandwidth factor"):
        _bandwidth.select_bandwidth([(Z, lambda z: np.inf)], (0.1, 0.2),
                                    np.random.RandomState(0), 10)


def test_pattern_bandwidth_on_the_prior(tiny_prior, tiny_images, monkeypatch, capsys):
    import copy
    import warnings

    from skvaeinv.prior import _bandwidth
    from skvaeinv.metrics import compare_pattern_statistics, pattern_statistics

    X = tiny_images[:250]
    calls = []
    select = _bandwidth.select_bandwidth

    def spy(splits, factors, rng, n_draws, verbose):
        out = select(splits, factors, rng, n_draws, verbose)
        calls.append((splits, factors, n_draws, out))
        return out

    monkeypatch.setattr(_bandwidth, "select_bandwidth", spy)
    monkeypatch.setattr(_bandwidth, "PATTERN_FACTORS", (0.1, 0.3, 1.0))
    monkeypatch.setattr(_bandwidth, "PATTERN_DRAWS", 200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prior = copy.deepcopy(tiny_prior).fit_latent_density(
            X, kind="kernel", bandwidth="pattern", random_state=0)
    (splits, factors, n_draws, (h, losses)), = calls
    # warned exactly when the choice is the smallest or largest factor
    edge = [w for w in caught if "of the factors tried" in str(w.message)]
    assert len(edge) == (h in (0.1, 1.0))
    assert factors == (0.1, 0.3, 1.0) and n_draws == 200
    # the factor with the smallest loss serves the density on the codes of all images
    assert prior.latent_bandwidth_ == h == factors[int(np.argmin(losses))]
    assert np.all(np.isfinite(losses)) and len(set(losses)) == 3
    codes = prior.transform(X)
    np.testing.assert_array_equal(prior.latent_density_.mixture_.means_,
                                  codes.astype(np.float32).astype(np.float64))
    # five splits: each holds out one fifth of the images (each image once) and fits
    # the kernel to the codes of the rest; its loss is the worst-lag error of the
    # two-point curves along z and x against the held-out fifth (lags 0-8 here: half the
    # 16-pixel width)
    rows = {r.tobytes(): i for i, r in enumerate(codes)}
    held_out = np.zeros(len(X), int)
    assert len(splits) == 5
    for Z_fit, loss in splits:
        fit = np.zeros(len(X), bool)
        fit[[rows[r.tobytes()] for r in Z_fit]] = True
        assert fit.sum() == 200
        held_out += ~fit
        z = codes[fit][:60] + 0.1
        expected = compare_pattern_statistics(
            pattern_statistics(prior.inverse_transform(z), 8), pattern_statistics(X[~fit], 8))
        assert loss(z) == max(expected["two_point_z_max_rel_error"],
                              expected["two_point_x_max_rel_error"])
    assert np.all(held_out == 1)
    # the same random_state makes the same choice with the same draws; verbose shows a
    # progress bar
    calls.clear()
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        again = copy.deepcopy(tiny_prior).set_params(verbose=1).fit_latent_density(
            X, kind="kernel", bandwidth="pattern", random_state=0)
    np.testing.assert_array_equal(calls[0][3][1], losses)
    assert again.latent_bandwidth_ == h
    assert "bandwidth" in capsys.readouterr().err


def test_pattern_bandwidth_bad_input(kernel_prior, tiny_images, monkeypatch):
    import copy

    from skvaeinv.prior import _bandwidth

    monkeypatch.setattr(_bandwidth, "PATTERN_DRAWS", 200)

    prior = copy.deepcopy(kernel_prior)
    before = prior.latent_density_
    with pytest.raises(ValueError, match=r"bandwidth='pattern' needs more than 4 codes"):
        prior.fit_latent_density(tiny_images[:6], kind="kernel", bandwidth="pattern")
    with pytest.raises(ValueError, match="zero at some lag"):
        prior.fit_latent_density(np.zeros((30, 32, 16)), kind="kernel", bandwidth="pattern")
    stripes = np.zeros((30, 32, 16))
    stripes[:, ::2] = 1.0     # channel rows 2 apart: no channel pair at odd lags along z
    with pytest.raises(ValueError, match="zero at some lag"):
        prior.fit_latent_density(stripes, kind="kernel", bandwidth="pattern")
    assert prior.latent_density_ is before and prior.latent_bandwidth_ == 0.3
    # images that are channel throughout (variograms zero) are compared by their two-point
    # curves alone; this prior decodes no such image, so every factor ties at a relative
    # error of 1 and the smallest is kept, with a warning
    rng = np.random.RandomState(0)
    with pytest.warns(RuntimeWarning, match=r"smallest of the factors tried.*0.1: 1, 0.15: 1"):
        prior.fit_latent_density(0.6 + 0.4 * rng.rand(30, 32, 16), kind="kernel",
                                 bandwidth="pattern", random_state=0)
    assert prior.latent_bandwidth_ == 0.1


@pytest.mark.parametrize("kw, match", [
    (dict(kind="gmm"), "kind must be"),
    (dict(kind=np.array(["kernel"])), "kind must be"),
    (dict(kind="kernel", bandwidth=0), "bandwidth must be"),
    (dict(kind="kernel", bandwidth=-0.5), "bandwidth must be"),
    (dict(kind="kernel", bandwidth=float("nan")), "bandwidth must be"),
    (dict(kind="kernel", bandwidth=10**400), "bandwidth must be"),
    (dict(kind="kernel", bandwidth=True), "bandwidth must be"),
    # finite, but the kernel covariance under- or overflows float64
    (dict(kind="kernel", bandwidth=1e-300), "out of the range of float64"),
    (dict(kind="kernel", bandwidth=1e200), "out of the range of float64"),
    (dict(kind="kernel", bandwidth="silverman"), "bandwidth must be"),
    (dict(kind="mixture", bandwidth=-1), "bandwidth must be"),   # ignored, but checked
    (dict(kind="kernel", n_components=-3), "n_components"),
])
def test_kernel_density_bad_parameters(kernel_prior, tiny_images, kw, match):
    import copy

    prior = copy.deepcopy(kernel_prior)
    before = prior.latent_density_
    with pytest.raises(ValueError, match=match):
        prior.fit_latent_density(tiny_images[:20], **kw)
    assert prior.latent_density_ is before and prior.latent_bandwidth_ == 0.3


def test_kernel_density_bad_images_and_numeric_types(kernel_prior, tiny_images):
    import copy
    import warnings
    from fractions import Fraction

    prior = copy.deepcopy(kernel_prior)
    before = prior.latent_density_
    d = prior.latent_dim     # 4: cv folds of 4/5 of the codes need 5 codes, so 7 images
    with pytest.raises(ValueError, match=r"more than 4 codes \(latent_dim\).*at least 7"):
        prior.fit_latent_density(tiny_images[:6], kind="kernel")
    with pytest.raises(ValueError, match="more images than latent_dim=4"):
        prior.fit_latent_density(tiny_images[:d], kind="kernel", bandwidth=0.5)
    with pytest.raises(ValueError, match="singular"):
        prior.fit_latent_density(np.repeat(tiny_images[:1], 12, axis=0), kind="kernel",
                                 bandwidth=0.5)
    assert prior.latent_density_ is before and prior.latent_bandwidth_ == 0.3
    with warnings.catch_warnings():   # 7 codes in 4 dimensions: the widest factor wins
        warnings.simplefilter("ignore", RuntimeWarning)
        prior.fit_latent_density(tiny_images[:7], kind="kernel", random_state=0)  # enough
    for h in (np.float32(0.25), 1, Fraction(1, 2)):
        prior.fit_latent_density(tiny_images[:20], kind="kernel", bandwidth=h)
        assert prior.latent_bandwidth_ == float(h)
        assert isinstance(prior.latent_bandwidth_, float)


def test_refit_drops_the_latent_density(tiny_images):
    X = tiny_images[:40]
    p = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW).fit(X)
    p.fit_latent_density(X, n_components=2, random_state=0)
    # the mixture follows the codes of the network it was fitted with: a new network
    # (here also of another latent size) must not sample from it
    p.set_params(latent_dim=3).fit(X)
    assert not hasattr(p, "latent_density_")
    p.fit_latent_density(X, kind="kernel", bandwidth=0.5)
    p.fit(X)
    assert not hasattr(p, "latent_density_") and not hasattr(p, "latent_bandwidth_")
    with pytest.raises(NotFittedError, match="fit_latent_density"):
        p.sample(2, source="density")
    q = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW)
    q.partial_fit(X)
    q.fit_latent_density(X, kind="kernel", bandwidth=0.5)
    codes = q.transform(X)
    # more training moves the codes the density was fitted to: it goes too
    q.partial_fit(X)
    assert not np.allclose(q.transform(X), codes, atol=1e-3)
    assert not hasattr(q, "latent_density_") and not hasattr(q, "latent_bandwidth_")


def test_latent_density_on_its_own(tiny_prior, tiny_images, density_prior, kernel_prior,
                                   tmp_path):
    """LatentDensity fitted to the codes is what fit_latent_density keeps."""
    from sklearn.base import clone

    from skvaeinv.prior import LatentDensity

    codes = tiny_prior.transform(tiny_images[:250])
    kernel = LatentDensity("kernel", bandwidth=0.3).fit(codes)
    assert kernel.bandwidth_ == 0.3 == kernel_prior.latent_bandwidth_
    assert kernel.n_features_in_ == 4
    np.testing.assert_array_equal(kernel.mixture_.means_,
                                  kernel_prior.latent_density_.mixture_.means_)
    np.testing.assert_array_equal(
        kernel.sample(5, random_state=1),
        kernel_prior._sample_latents(5, np.random.RandomState(1), "density"))
    assert kernel.score(codes) == pytest.approx(kernel.score_samples(codes).mean())
    mixture = LatentDensity(n_components=4, random_state=0).fit(codes)
    np.testing.assert_array_equal(mixture.mixture_.means_,
                                  density_prior.latent_density_.mixture_.means_)
    assert not hasattr(mixture, "bandwidth_")
    copy = clone(kernel)
    assert copy.get_params() == kernel.get_params() and not hasattr(copy, "mixture_")
    # refitted as a mixture: no bandwidth any more
    kernel.set_params(kind="mixture", n_components=2, random_state=0).fit(codes)
    assert not hasattr(kernel, "bandwidth_")
    # a loaded density has the parameters of what it holds
    kernel_prior.save(tmp_path / "k.skv")
    loaded = VAEPrior.load(tmp_path / "k.skv").latent_density_
    assert (loaded.kind, loaded.bandwidth, loaded.bandwidth_) == ("kernel", 0.3, 0.3)
    density_prior.save(tmp_path / "m.skv")
    loaded = VAEPrior.load(tmp_path / "m.skv").latent_density_
    assert (loaded.kind, loaded.n_components) == ("mixture", 4)
    # bad use
    with pytest.raises(ValueError, match=r"pass fit\(Z, images=..., decode=...\)"):
        LatentDensity("kernel", bandwidth="pattern").fit(codes)
    with pytest.raises(ValueError, match="row for row"):
        LatentDensity("kernel", bandwidth="pattern").fit(
            codes, images=tiny_images[:10], decode=tiny_prior.inverse_transform)
    with pytest.raises(NotFittedError):
        LatentDensity().sample(2)
    with pytest.raises(ValueError, match="n_samples"):
        mixture.sample(0)
    with pytest.raises(ValueError, match="kind must be"):
        LatentDensity("gmm").fit(codes)
