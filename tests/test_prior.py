"""VAEPrior, the facade: the scikit-learn contract, input checks, encoding, decoding
and sampling (skvaeinv/prior/_estimator.py)."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvaeinv import VAEPrior

from conftest import TINY_PRIOR_KW


_TABULAR = ("sklearn's generic checks feed tabular data (n_samples, n_features) of "
            "arbitrary real values; VAEPrior takes images in [0, 1] and, for flat input, "
            "needs image_shape, so it rejects that data with a ValueError by design")
#: Each check that cannot run on images, and the test of this file that checks the same
#: property on images instead.
_ON_IMAGES = {
    "check_fit_score_takes_y": "test_sklearn_invariants_on_images (score(X, y=None))",
    "check_estimators_overwrite_params": "test_sklearn_invariants_on_images",
    "check_dont_overwrite_parameters": "test_sklearn_invariants_on_images",
    "check_estimators_fit_returns_self": "test_sklearn_invariants_on_images",
    "check_readonly_memmap_input": "test_prior_training.py::"
                                   "test_read_only_input_and_lr_change_between_partial_fits",
    "check_n_features_in_after_fitting": "test_unfitted_and_mismatched_input (images of "
                                         "another shape are refused; image_shape_ plays "
                                         "the part of n_features_in_)",
    "check_n_features_in": "as check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit": "test_fit_bad_input (values outside [0, 1])",
    "check_estimators_dtypes": "test_sklearn_invariants_on_images (dtypes)",
    "check_dtype_object": "test_sklearn_invariants_on_images (dtypes)",
    "check_transformer_preserve_dtypes": "test_sklearn_invariants_on_images (dtypes: "
                                         "float64 out, sklearn's default)",
    "check_pipeline_consistency": "test_params_clone_pipeline",
    "check_estimators_pickle": "test_prior_persistence.py::test_persistence_round_trips",
    "check_f_contiguous_array_estimator": "test_sklearn_invariants_on_images",
    "check_transformer_data_not_an_array": "test_sklearn_invariants_on_images (lists)",
    "check_transformer_general": "test_transform_inverse_sample_shapes_and_ranges",
    "check_methods_sample_order_invariance": "test_sklearn_invariants_on_images",
    "check_methods_subset_invariance": "test_sklearn_invariants_on_images",
    "check_dict_unchanged": "test_sklearn_invariants_on_images",
    "check_fit_idempotent": "test_sklearn_invariants_on_images",
    "check_fit_check_is_fitted": "test_unfitted_and_mismatched_input",
    "check_fit2d_predict1d": "test_fit_bad_input (1-D input)",
    "check_estimators_nan_inf": "test_fit_bad_input (NaN, inf)",
    "check_fit2d_1sample": "test_fit_bad_input (one image)",
    "check_fit2d_1feature": "test_fit_bad_input (images too small)",
}
EXPECTED_FAILED_CHECKS = {name: f"{_TABULAR}; on images: {test}"
                          for name, test in _ON_IMAGES.items()}
EXPECTED_FAILED_CHECKS.update({
    "check_estimators_empty_data_messages": "0-feature input is rejected by the image "
                                            "check with its own wording",
    "check_estimator_sparse_tag": "images are dense; scipy.sparse input is rejected by "
                                  "numpy conversion with a TypeError/ValueError of numpy's "
                                  "wording",
    "check_estimator_sparse_array": "as check_estimator_sparse_tag",
    "check_estimator_sparse_matrix": "as check_estimator_sparse_tag",
})


@parametrize_with_checks(
    [VAEPrior(latent_dim=2, epochs=1, batch_size=16, base_channels=2, hidden_units=8,
              device="cpu", random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_params_clone_pipeline(tiny_images):
    prior = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW)
    assert prior.get_params()["latent_dim"] == 4
    prior.set_params(beta=10.0)
    assert prior.beta == 10.0
    c = clone(prior)
    assert c.get_params() == prior.get_params() and not hasattr(c, "encoder_")
    flat = tiny_images[:64].reshape(64, -1)
    pipe = Pipeline([("clip", FunctionTransformer(lambda x: np.clip(x, 0, 1))),
                     ("vae", VAEPrior(epochs=1, image_shape=(32, 16), random_state=0,
                                      **TINY_PRIOR_KW))])
    Z = pipe.fit(flat).transform(flat)
    assert Z.shape == (64, 4) and np.all(np.isfinite(Z))
    assert pipe.named_steps["vae"].image_shape_ == (32, 16)


def test_transform_inverse_sample_shapes_and_ranges(tiny_prior, tiny_images):
    Z = tiny_prior.transform(tiny_images[:7])
    assert Z.shape == (7, 4)
    R = tiny_prior.inverse_transform(Z)
    assert R.shape == (7, 32, 16) and R.min() >= 0 and R.max() <= 1
    S = tiny_prior.sample(5, random_state=1)
    assert S.shape == (5, 32, 16)
    np.testing.assert_array_equal(S, tiny_prior.sample(5, random_state=1))
    assert not np.array_equal(S, tiny_prior.sample(5, random_state=2))
    assert np.isfinite(tiny_prior.score(tiny_images[250:]))
    # binary noise with the channel proportion (same pixel values, no channels) is less
    # likely than channel images (uniform noise in [0, 1] is not a clear enough contrast:
    # its score is within a few % of the channels' for some seeds and CPUs)
    noise = np.random.default_rng(0).random((50, 32, 16)) < tiny_images.mean()
    assert tiny_prior.score(tiny_images[250:]) > tiny_prior.score(noise.astype(float)) + 20
    assert list(tiny_prior.get_feature_names_out()) == ["z0", "z1", "z2", "z3"]


def test_batched_outputs_equal_per_image_outputs(tiny_prior, tiny_images):
    from skvaeinv.prior import _estimator

    # more rows than one CPU batch: the batches join in order, each row as alone
    n = _estimator._CPU_ROWS + 9
    X = tiny_images[:n]
    Z = tiny_prior.transform(X)
    single = np.concatenate([tiny_prior.transform(X[i:i + 1]) for i in range(n)])
    np.testing.assert_allclose(Z, single, rtol=1e-5, atol=1e-6)
    R = tiny_prior.inverse_transform(Z)
    single = np.concatenate([tiny_prior.inverse_transform(Z[i:i + 1]) for i in range(n)])
    np.testing.assert_allclose(R, single, atol=1e-6)
    scores = tiny_prior.score_samples(X)
    np.testing.assert_allclose(
        scores, [tiny_prior.score_samples(X[i:i + 1])[0] for i in range(n)], rtol=1e-5)


def test_sample_draws_codes_from_the_standard_normal(tiny_prior):
    z = tiny_prior._sample_latents(20000, np.random.RandomState(0), "normal")
    d = tiny_prior.latent_dim
    assert z.shape == (20000, d)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=0.03)
    np.testing.assert_allclose(np.cov(z.T), np.eye(d), atol=0.04)
    # and sample() decodes exactly such draws
    np.testing.assert_array_equal(
        tiny_prior.sample(3, random_state=5),
        tiny_prior.inverse_transform(tiny_prior._sample_latents(3, np.random.RandomState(5),
                                                                "normal")))


def test_score_samples_is_minus_the_deterministic_loss(tiny_prior, tiny_images):
    import copy

    X = tiny_images[:6]
    with torch.no_grad():
        mean, logvar = (t.double().numpy() for t in tiny_prior.encoder_(
            torch.tensor(X, dtype=torch.float32)))
    kl = np.mean(0.5 * (mean**2 + np.exp(logvar) - 1 - logvar), axis=1)   # per image
    expected = -(tiny_prior.reconstruction_error(X) + tiny_prior.beta * kl)
    np.testing.assert_allclose(tiny_prior.score_samples(X), expected, rtol=1e-5)
    other = copy.deepcopy(tiny_prior).set_params(beta=tiny_prior.beta + 10.0)
    np.testing.assert_allclose(tiny_prior.score_samples(X) - other.score_samples(X), 10 * kl,
                               rtol=1e-4)
    assert tiny_prior.score(X) == pytest.approx(np.mean(expected), rel=1e-5)


def test_get_decoder_is_frozen_and_differentiable(tiny_prior):
    dec = tiny_prior.get_decoder("cpu")
    assert all(not q.requires_grad for q in dec.parameters()) and not dec.training
    z = torch.zeros(3, 4, requires_grad=True)
    out = dec(z)
    assert out.shape == (3, 32, 16)
    out.sum().backward()
    assert z.grad is not None and torch.all(torch.isfinite(z.grad))
    assert z.grad.abs().sum() > 0
    # the estimator's own weights are untouched by the copy
    assert all(q.grad is None for q in tiny_prior.decoder_.parameters())
    np.testing.assert_allclose(out.detach().numpy(),
                               tiny_prior.inverse_transform(np.zeros((3, 4))), atol=1e-6)
    pickle.loads(pickle.dumps(dec))


@pytest.mark.parametrize("X, match", [
    (np.full((10, 32, 16), np.nan), "NaN"),
    (np.full((10, 32, 16), np.inf), "NaN or infinite"),
    (np.full((10, 32, 16), 2.0), r"\[0, 1\]"),
    (np.full((10, 32, 16), -0.5), r"\[0, 1\]"),
    (np.zeros((10, 2, 3, 4, 5)), "dimension"),
    (np.zeros(10), "dimension"),
    (np.zeros((10, 3, 3)), "too small"),
    (np.zeros((1, 32, 16)), "at least 2"),
    (np.zeros((0, 32, 16)), "0 images"),
    (np.zeros((10, 512)), "image_shape"),
    (np.full((10, 32, 16), 0.5 + 0.1j), "Complex data not supported"),
])
def test_fit_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        VAEPrior(epochs=1, **TINY_PRIOR_KW).fit(X)


def test_bad_parameters_and_device(monkeypatch):
    X = np.zeros((4, 32, 16))
    with pytest.raises(ValueError, match="latent_dim"):
        VAEPrior(latent_dim=0).fit(X)
    with pytest.raises(ValueError, match="precision"):
        VAEPrior(precision="float16").fit(X)
    with monkeypatch.context() as m:   # a machine without a GPU, also on one with
        m.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="CUDA is not available"):
            VAEPrior(device="cuda", **{k: v for k, v in TINY_PRIOR_KW.items()
                                       if k != "device"}).fit(X)
    with pytest.raises(ValueError, match="not a valid torch device"):
        VAEPrior(device="gpu-please").fit(X)


def test_unfitted_and_mismatched_input(tiny_prior):
    p = VAEPrior()
    for call in (lambda: p.transform(np.zeros((2, 32, 16))),
                 lambda: p.inverse_transform(np.zeros((2, 20))),
                 lambda: p.sample(2), lambda: p.get_decoder()):
        with pytest.raises(NotFittedError):
            call()
    with pytest.raises(ValueError, match="fitted on images of shape"):
        tiny_prior.transform(np.zeros((2, 30, 16)))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 4\)"):
        tiny_prior.inverse_transform(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="n_samples"):
        tiny_prior.sample(0)


def test_more_bad_input_messages(tiny_prior, tiny_images):
    d = tiny_prior.latent_dim
    for Z, match in [(np.zeros((0, d)), "n_samples >= 1"),
                     (np.zeros((2, d)) + 1j, "Complex"),
                     (np.full((2, d), "a"), "float array"),
                     (np.full((2, d), 1e39), "float32 range")]:
        with pytest.raises(ValueError, match=match):
            tiny_prior.inverse_transform(Z)
    with pytest.raises(ValueError, match=r"single image: pass X\[None\]"):
        VAEPrior(image_shape=(32, 16)).fit(tiny_images[0])
    for shape in [(512,), (32, 16, 1), (-32, -16), (32.5, 16)]:
        with pytest.raises(ValueError, match="image_shape"):
            VAEPrior(image_shape=shape, epochs=1, **TINY_PRIOR_KW).fit(
                tiny_images[:4].reshape(4, -1))


@pytest.mark.parametrize("param", ["latent_dim", "base_channels", "hidden_units"])
def test_network_size_changed_after_fit(tiny_prior, tiny_images, tmp_path, param):
    import copy

    p = copy.deepcopy(tiny_prior)
    p.set_params(**{param: getattr(p, param) + 1})
    match = f"{param}=.* changed after fit.*call fit again"
    for call in (lambda: p.sample(2), lambda: p.transform(tiny_images[:2]),
                 lambda: p.partial_fit(tiny_images[:8]), lambda: p.get_decoder(),
                 lambda: p.save(tmp_path / "p.skv")):
        with pytest.raises(ValueError, match=match):
            call()
    assert not (tmp_path / "p.skv").exists()   # no file that load would reject
    p.set_params(**{param: getattr(tiny_prior, param)})   # set back: usable again
    np.testing.assert_array_equal(p.sample(2, random_state=0),
                                  tiny_prior.sample(2, random_state=0))


def test_sklearn_invariants_on_images(tiny_images):
    """What sklearn's tabular checks (see EXPECTED_FAILED_CHECKS) test, on images."""
    import copy

    X = tiny_images[:48]
    prior = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW)
    params = copy.deepcopy(prior.get_params())
    assert prior.fit(X) is prior                               # fit returns self
    assert prior.get_params() == params                        # parameters untouched
    assert not any(k.endswith("_") for k in vars(VAEPrior(**params)))
    Z = prior.transform(X)
    state = {k: copy.deepcopy(v) for k, v in vars(prior).items()
             if isinstance(v, (int, float, str, tuple, list, np.ndarray))}
    prior.inverse_transform(Z), prior.score(X, None), prior.sample(3, random_state=0)
    for k, v in state.items():                                 # dict unchanged
        np.testing.assert_equal(getattr(prior, k), v)
    # images are encoded one by one: order and subsets do not change the codes
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(prior.transform(X[perm]), Z[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prior.transform(X[5:9]), Z[5:9], rtol=1e-5, atol=1e-6)
    # fitting again from scratch gives the same prior (idempotent)
    np.testing.assert_array_equal(prior.fit(X).transform(X), Z)
    # dtypes, memory order, lists: the same images give the same prior
    for other in (X.astype(np.float64), X.astype(np.uint8), X.astype(bool),
                  np.asfortranarray(X), X.astype(object), X.tolist()):
        fitted = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW).fit(other)
        np.testing.assert_array_equal(fitted.transform(X), Z)
    # float64 out whatever the input dtype (sklearn's default: preserves_dtype float64)
    assert Z.dtype == np.float64
    assert prior.inverse_transform(Z.astype(np.float32)).dtype == np.float64
