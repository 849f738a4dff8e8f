"""Pattern statistics (skvaeinv.metrics) against brute force and analytic cases."""

import itertools

import numpy as np
import pytest

from skvaeinv.datasets import make_channels
from skvaeinv.metrics import (compare_pattern_statistics, indicator_variogram,
                              pattern_statistics, two_point_probability)


def brute_force(images, max_lag, axis, pair):
    """Mean of ``pair(a, b)`` over every pixel pair at each lag, one pair at a time."""
    n, H, W = images.shape
    out = []
    for h in range(max_lag + 1):
        values = []
        for k, r, c in itertools.product(range(n), range(H), range(W)):
            r2, c2 = (r + h, c) if axis == "z" else (r, c + h)
            if r2 < H and c2 < W:
                values.append(pair(images[k, r, c], images[k, r2, c2]))
        out.append(sum(values) / len(values))
    return np.array(out)


@pytest.mark.parametrize("axis", ["z", "x"])
def test_curves_match_brute_force(axis):
    rng = np.random.default_rng(0)
    X = rng.random((3, 9, 6))
    b = (X >= 0.5).astype(float)
    both = brute_force(b, 4, axis, lambda u, v: u * v)
    half_sq = brute_force(b, 4, axis, lambda u, v: 0.5 * (u - v) ** 2)
    np.testing.assert_allclose(two_point_probability(X, 4, axis=axis), both, rtol=1e-12)
    np.testing.assert_allclose(indicator_variogram(X, 4, axis=axis), half_sq, rtol=1e-12)
    # the values themselves, without thresholding
    np.testing.assert_allclose(two_point_probability(X, 4, axis=axis, threshold=None),
                               brute_force(X, 4, axis, lambda u, v: u * v), rtol=1e-12)
    np.testing.assert_allclose(indicator_variogram(X, 4, axis=axis, threshold=None),
                               brute_force(X, 4, axis, lambda u, v: 0.5 * (u - v) ** 2),
                               rtol=1e-12)
    # another threshold is the indicator of X >= it
    np.testing.assert_allclose(two_point_probability(X, 4, axis=axis, threshold=0.8),
                               two_point_probability((X >= 0.8) * 1.0, 4, axis=axis,
                                                     threshold=None))


def test_horizontal_stripes():
    # channel rows 0, 4, 8, ..., 36 of 40: along z both ends are channel only at lags
    # that are multiples of 4, with probability 1/4; along x every pair is alike
    image = np.zeros((40, 7))
    image[::4] = 1.0
    tp_z = two_point_probability(image, 12, axis="z")
    np.testing.assert_allclose(tp_z[[0, 4, 8, 12]], 0.25, rtol=1e-12)
    assert np.all(tp_z[[1, 2, 3, 5, 6, 7]] == 0)
    np.testing.assert_allclose(two_point_probability(image, 6, axis="x"), 0.25, rtol=1e-12)
    np.testing.assert_array_equal(indicator_variogram(image, 6, axis="x"), 0.0)
    # lag 2: 10 channel rows r in [0, 38) have r + 2 matrix, 9 matrix rows r = 2, 6, ...,
    # 34 have r + 2 channel: 19 of 38 pairs differ
    gamma = indicator_variogram(image, 4, axis="z")
    np.testing.assert_allclose(gamma[[0, 2, 4]], [0.0, 0.5 * 19 / 38, 0.0], atol=1e-15)


def test_pattern_statistics_are_consistent():
    X = make_channels(20, shape=(33, 17), random_state=0) * 0.9 + 0.05   # some blur
    X[:, 0, :3] = 0.5
    s = pattern_statistics(X, 8)
    b = X >= 0.5
    assert s["proportion"] == pytest.approx(b.mean())
    assert s["mean"] == pytest.approx(X.mean())
    assert s["undecided_fraction"] == pytest.approx(((X > 0.1) & (X < 0.9)).mean())
    for axis, ax in (("z", 1), ("x", 2)):
        tp, gamma = s[f"two_point_{axis}"], s[f"variogram_{axis}"]
        assert tp.shape == gamma.shape == (9,)
        assert tp[0] == pytest.approx(s["proportion"]) and gamma[0] == 0
        np.testing.assert_array_equal(tp, two_point_probability(X, 8, axis=axis))
        # binary indicators: 0.5 E[(a - b)^2] = 0.5 (E[a] + E[b]) - E[ab]
        n = X.shape[ax]
        for h in (1, 5):
            head = np.take(b, np.arange(n - h), axis=ax).mean()
            tail = np.take(b, np.arange(h, n), axis=ax).mean()
            assert gamma[h] == pytest.approx(0.5 * (head + tail) - tp[h], abs=1e-12)
    # one image as (H, W) is a stack of one
    one = pattern_statistics(X[0], 8)
    np.testing.assert_array_equal(one["two_point_z"], pattern_statistics(X[:1], 8)["two_point_z"])


def test_compare_pattern_statistics():
    ref = pattern_statistics(make_channels(30, shape=(33, 17), random_state=0), 8)
    same = compare_pattern_statistics(ref, ref)
    assert len(same) == 9 and all(v == 0 for v in same.values())
    # curves 10 % high everywhere: 10 % at every lag and as a whole curve
    high = {k: v * 1.1 for k, v in ref.items()}
    err = compare_pattern_statistics(high, ref)
    for key, value in err.items():
        assert value == pytest.approx(0.1), key
    # one lag off: the per-lag reading sees it whole, the curve reading diluted
    bumped = dict(ref, two_point_z=ref["two_point_z"].copy())
    bumped["two_point_z"][6] *= 1.3
    err = compare_pattern_statistics(bumped, ref)
    assert err["two_point_z_max_rel_error"] == pytest.approx(0.3)
    assert 0 < err["two_point_z_curve_rel_error"] < 0.3
    assert compare_pattern_statistics(bumped, ref, max_lag=5)["two_point_z_max_rel_error"] == 0
    # the variogram is compared from lag 1 (it is 0 at lag 0)
    assert np.isfinite(err["variogram_z_max_rel_error"])


@pytest.mark.parametrize("images, kw, match", [
    (np.full((2, 8, 8), np.nan), {}, "NaN or inf"),
    (np.full((2, 8, 8), 1.5), {}, r"values in \[0, 1\]"),
    (np.full((2, 8, 8), -0.1), {}, r"values in \[0, 1\]"),
    (np.zeros((2, 2, 8, 8)), {}, "one image"),
    (np.zeros(8), {}, "one image"),
    (np.zeros((0, 8, 8)), {}, "one image"),
    (np.zeros((2, 8, 8)), dict(max_lag=8), r"max_lag must be an integer in \[0, 7\]"),
    (np.zeros((2, 8, 8)), dict(max_lag=-1), "max_lag must be"),
    (np.zeros((2, 8, 8)), dict(max_lag=2.0), "max_lag must be"),
    (np.zeros((2, 8, 8)), dict(max_lag=True), "max_lag must be"),
    (np.zeros((2, 8, 8)), dict(max_lag=3, axis=1), "axis must be 'z'"),
    (np.zeros((2, 8, 8)), dict(max_lag=3, threshold=0), "threshold must be"),
    (np.zeros((2, 8, 8)), dict(max_lag=3, threshold=1.5), "threshold must be"),
    (np.zeros((2, 8, 8)), dict(max_lag=3, threshold=True), "threshold must be"),
    (np.zeros((2, 8, 8), dtype=complex), dict(max_lag=3), "Complex data"),
    ([["a"]], dict(max_lag=0), "could not be converted"),
])
def test_bad_input(images, kw, match):
    for fn in (two_point_probability, indicator_variogram):
        with pytest.raises(ValueError, match=match):
            fn(images, **kw)
    if "axis" not in kw:
        with pytest.raises(ValueError, match=match):
            pattern_statistics(images, **kw)


def test_compare_bad_input():
    ref = pattern_statistics(make_channels(10, shape=(33, 17), random_state=0), 8)
    with pytest.raises(ValueError, match="missing statistics"):
        compare_pattern_statistics({"proportion": 0.2}, ref)
    with pytest.raises(ValueError, match="same max_lag"):
        compare_pattern_statistics(
            pattern_statistics(make_channels(10, shape=(33, 17), random_state=1), 5), ref)
    for lag in (-3, 0, 2.5, True):
        with pytest.raises(ValueError, match="max_lag must be None or an integer >= 1"):
            compare_pattern_statistics(ref, ref, max_lag=lag)
    with pytest.raises(ValueError, match="no channel pixels"):
        compare_pattern_statistics(ref, dict(ref, proportion=0.0))
    with pytest.raises(ValueError, match="zero at some lag"):
        compare_pattern_statistics(ref, pattern_statistics(np.zeros((2, 33, 17)) + 0.0, 8)
                                   | {"proportion": 0.5})
