"""scikit-learn's estimator checks on LatentInverter, with every expected failure named."""

import pickle

import joblib
import numpy as np
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.forward import StraightRay
from skvaeinv.survey import Grid2D

from conftest import TINY_PRIOR_FILE, TINY_SHAPE

_TABULAR = ("sklearn's generic checks feed tabular data: X of arbitrary shape and values, "
            "y with zeros and negative values. LatentInverter's X are rays (xs, zs, xr, "
            "zr) inside the forward operator's grid and its y are positive traveltimes "
            "(ns); it rejects other data with a ValueError by design")
#: Each check that cannot run on tabular data, and where tests/test_inverter.py checks
#: the same property on rays and traveltimes instead.
_ON_RAYS = {
    "check_fit_score_takes_y": "test_predict_unseen_rays_and_score",
    "check_estimators_overwrite_params": "test_parameters_are_not_changed_by_fit (below)",
    "check_dont_overwrite_parameters": "test_parameters_are_not_changed_by_fit (below)",
    "check_estimators_fit_returns_self": "test_fitted_attributes_and_ensemble",
    "check_readonly_memmap_input": "test_duck_typed_prior_and_read_only_inputs",
    "check_estimators_pickle": "test_pickle_round_trip (below)",
    "check_fit_idempotent": "test_deterministic_and_independent_of_n_jobs",
    "check_sample_weights_not_overwritten": "test_deterministic_and_independent_of_n_jobs",
    "check_all_zero_sample_weights_error": "test_score_validates_its_inputs",
    "check_sample_weights_shape": "test_score_validates_its_inputs",
    "check_estimators_nan_inf": "test_bad_inputs",
}
_OTHERS = [
    "check_dict_unchanged", "check_dtype_object", "check_estimators_dtypes",
    "check_f_contiguous_array_estimator", "check_fit2d_1feature", "check_fit2d_1sample",
    "check_fit2d_predict1d", "check_fit_check_is_fitted",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_n_features_in", "check_n_features_in_after_fitting",
    "check_pipeline_consistency", "check_positive_only_tag_during_fit",
    "check_regressor_data_not_an_array", "check_regressors_int",
    "check_regressors_no_decision_function", "check_regressors_train",
    "check_sample_weight_equivalence_on_dense_data", "check_sample_weights_list",
    "check_sample_weights_not_an_array", "check_supervised_y_2d",
]
EXPECTED_FAILED_CHECKS: dict[str, str] = {
    **{name: f"{_TABULAR}; checked on rays in {test}" for name, test in _ON_RAYS.items()},
    **{name: _TABULAR for name in _OTHERS},
}


def _inverter() -> LatentInverter:
    prior = VAEPrior.load(TINY_PRIOR_FILE)
    return LatentInverter(prior, StraightRay(Grid2D(TINY_SHAPE, spacing=0.1)), n_starts=1,
                          epochs=1, batch_size=1, device="cpu", random_state=0)


@parametrize_with_checks([_inverter()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_parameters_are_not_changed_by_fit(survey, data):
    grid, rays = survey
    inv = _inverter().set_params(epochs=2, batch_size=16)
    before = {k: joblib.hash(v) for k, v in inv.get_params(deep=False).items()}
    inv.fit(rays, data[2])
    after = {k: joblib.hash(v) for k, v in inv.get_params(deep=False).items()}
    assert after == before
    public = [k for k in vars(inv) if not k.startswith("_")]
    assert sorted(set(public) - set(before)) == sorted(
        k for k in public if k.endswith("_"))   # fit adds only fitted attributes


def test_pickle_round_trip(survey, data):
    grid, rays = survey
    inv = _inverter().set_params(epochs=2, batch_size=16).fit(rays, data[2])
    back = pickle.loads(pickle.dumps(inv))
    np.testing.assert_array_equal(back.predict(rays), inv.predict(rays))
    np.testing.assert_array_equal(back.latents_, inv.latents_)
    assert back.score(rays, data[2]) == inv.score(rays, data[2])
