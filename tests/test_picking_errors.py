"""Picking errors (sigma, chi² per datum, chi² acceptance) and the fitted time shift."""

import numpy as np
import pytest

from skvaeinv import LatentInverter
from skvaeinv.forward import StraightRay

FAST = dict(epochs=3, batch_size=32, lr=0.05, reg_weight=5.0, reg_decay=0.99, device="cpu")


def test_sigma_weights_and_chi2(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    sigma = np.where(np.arange(len(y)) % 2, 0.5, 1.0)
    kw = dict(n_starts=3, random_state=0, **FAST)
    with_sigma = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, sigma=sigma)
    with_w = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, sigma ** -2.0)
    # sigma is the weights 1 / sigma² (same run) ...
    np.testing.assert_array_equal(with_sigma.latents_, with_w.latents_)
    assert with_w.chi2_ is None
    # ... and chi2_ is the chi² per datum of the kept models, recomputed independently
    for k in range(3):
        r = StraightRay(grid).traveltimes(1 / (0.06 + 0.02 * (1 - with_sigma.models_[k])),
                                          rays) - y
        assert with_sigma.chi2_[k] == pytest.approx(np.mean((r / sigma) ** 2), rel=1e-3)
    # one sigma for all: chi² = RMSE² / sigma²
    scalar = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y, sigma=0.5)
    np.testing.assert_allclose(scalar.chi2_, scalar.data_rmse_ ** 2 / 0.25, rtol=1e-12)


def test_chi2_acceptance(tiny_prior, survey, data):
    grid, rays = survey
    y = data[2]
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=4, random_state=0,
                         **FAST).fit(rays, y, sigma=0.2)
    cut = float(np.median(inv.chi2_))
    ens = inv.ensemble(chi2=cut)
    np.testing.assert_array_equal(ens.accepted, np.flatnonzero(inv.chi2_ <= cut))
    assert 0 < ens.n_accepted < 4 and ens.chi2 == cut
    fitted = LatentInverter(tiny_prior, StraightRay(grid), n_starts=4, random_state=0,
                            acceptance_chi2=cut, **FAST).fit(rays, y, sigma=0.2)
    np.testing.assert_array_equal(np.flatnonzero(fitted.accepted_), ens.accepted)
    # both thresholds: the stricter wins
    both = inv.ensemble(threshold=float(inv.data_rmse_.min()), chi2=cut)
    assert both.n_accepted == 1
    with pytest.raises(ValueError, match="sigma"):
        LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, acceptance_chi2=1.0,
                       **FAST).fit(rays, y)
    plain = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, **FAST).fit(rays, y)
    with pytest.raises(ValueError, match="picking errors"):
        plain.ensemble(chi2=1.0)


@pytest.mark.parametrize("bad, match", [(0.0, "finite and > 0"), (np.nan, "finite"),
                                        (np.ones(3), "one standard deviation per ray")])
def test_bad_sigma(tiny_prior, survey, data, bad, match):
    grid, rays = survey
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=2, **FAST)
    with pytest.raises(ValueError, match=match):
        inv.fit(rays, data[2], sigma=bad)
    assert not hasattr(inv, "models_")
    with pytest.raises(ValueError, match="not both"):
        inv.fit(rays, data[2], np.ones(len(rays)), sigma=1.0)


def test_time_shift_is_recovered(tiny_prior, survey, data):
    """A zero-time error of 7 ns: fitted with the code, it leaves the model unchanged."""
    grid, rays = survey
    y = data[2]
    kw = dict(n_starts=3, random_state=0, **FAST)
    base = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y)
    shifted = LatentInverter(tiny_prior, StraightRay(grid), time_shift=True,
                             **kw).fit(rays, y + 7.0)
    unshifted = LatentInverter(tiny_prior, StraightRay(grid), time_shift=True,
                               **kw).fit(rays, y)
    # the shift is profiled out exactly: adding a constant to the data changes nothing
    # but the fitted shift (float32 rounding of the larger times aside)
    np.testing.assert_allclose(shifted.latents_, unshifted.latents_, atol=2e-3)
    np.testing.assert_allclose(shifted.time_shift_ - unshifted.time_shift_, 7.0, atol=2e-3)
    # each shift is the weighted mean residual of its kept model (checked independently)
    for k in range(3):
        t = StraightRay(grid).traveltimes(1 / (0.06 + 0.02 * (1 - shifted.models_[k])), rays)
        assert shifted.time_shift_[k] == pytest.approx(np.mean(y + 7.0 - t), abs=2e-3)
    pred = shifted.predict(rays)
    assert np.sqrt(np.mean((pred - y - 7.0) ** 2)) == pytest.approx(
        shifted.data_rmse_[shifted.best_index_], rel=1e-3)
    # without the shift, the inversion cannot absorb 7 ns
    plain = LatentInverter(tiny_prior, StraightRay(grid), **kw).fit(rays, y + 7.0)
    assert plain.data_rmse_.min() > 3 * shifted.data_rmse_.min()
    assert base.time_shift_ is None
