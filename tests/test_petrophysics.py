"""Tests of skvaeinv.petrophysics."""

import numpy as np
import pytest
import torch

from skvaeinv.petrophysics import LinearVelocity, apply_numpy, check_petrophysics


def test_reference_values_numpy_and_torch():
    h = LinearVelocity()
    m = np.array([0.0, 0.5, 1.0])
    expected = 1.0 / (0.06 + 0.02 * (1 - m))  # the study's petrophysics
    np.testing.assert_allclose(h(m), expected)
    np.testing.assert_allclose(h(torch.tensor(m)).numpy(), expected)
    np.testing.assert_allclose(h.velocity(m), 0.06 + 0.02 * (1 - m))


def test_torch_gradient_matches_analytic():
    h = LinearVelocity(v_channel=0.05, v_matrix=0.09)
    m = torch.tensor([0.1, 0.7], dtype=torch.float64, requires_grad=True)
    h(m).sum().backward()
    v = 0.09 + (0.05 - 0.09) * m.detach()
    np.testing.assert_allclose(m.grad.numpy(), (0.04 / v**2).numpy())


def test_params_and_equality():
    h = LinearVelocity()
    assert h.get_params() == {"v_channel": 0.06, "v_matrix": 0.08}
    assert h.set_params(v_channel=0.07) is h and h.v_channel == 0.07
    assert LinearVelocity(0.07) == h
    with pytest.raises(ValueError, match="Invalid parameter 'speed'"):
        h.set_params(speed=1.0)
    assert "v_channel=0.07" in repr(h)


def test_parameters_go_through_sklearns_machinery():
    from sklearn.base import BaseEstimator, clone

    from skvaeinv import LatentInverter

    h = LinearVelocity(v_channel=0.05)
    assert isinstance(h, BaseEstimator)
    twin = clone(h)
    assert twin is not h and twin == h and twin.get_params(deep=True) == h.get_params()
    assert LinearVelocity(v_channel=-1).v_channel == -1   # stored raw, checked at use
    with pytest.raises(ValueError, match="v_channel=-1"):
        LinearVelocity(v_channel=-1)(0.5)
    inv = LatentInverter(petrophysics=LinearVelocity())
    assert inv.get_params(deep=True)["petrophysics__v_matrix"] == 0.08
    inv.set_params(petrophysics__v_channel=0.04)
    assert inv.petrophysics.v_channel == 0.04
    assert clone(inv).petrophysics == LinearVelocity(v_channel=0.04)
    assert LinearVelocity() != (0.08, 0.06) and LinearVelocity() != object()


def test_check_petrophysics():
    assert check_petrophysics(None) == LinearVelocity()
    h = check_petrophysics((0.1, 0.05))  # (matrix, channel)
    assert h == LinearVelocity(v_channel=0.05, v_matrix=0.1)

    def f(m):
        return 2.0 * m + 10.0

    assert check_petrophysics(f) is f
    np.testing.assert_allclose(apply_numpy(f, np.ones(3)), 12.0)
    with pytest.raises(ValueError, match="petrophysics="):
        check_petrophysics("linear")
    with pytest.raises(ValueError, match="velocity pair"):
        check_petrophysics((0.1, 0.0))
    with pytest.raises(ValueError, match="velocity pair"):
        check_petrophysics((0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="v_channel=-1"):
        check_petrophysics(LinearVelocity(v_channel=-1))


@pytest.mark.parametrize("mapping, returned", [
    (lambda m: (1.0 / (0.06 + 0.02 * (1.0 - m))).detach(), "a tensor without a gradient"),
    (lambda m: np.full(tuple(m.shape), 12.5), "a ndarray"),
    (lambda m: torch.full_like(m, 12.5), "a tensor without a gradient"),
])
def test_check_petrophysics_refuses_mappings_without_a_gradient(mapping, returned):
    # each passes the value checks (finite, positive slowness of the right shape), but
    # the inversion could not differentiate the data misfit through it
    with pytest.raises(ValueError, match=f"must be differentiable.*returned {returned}"):
        check_petrophysics(mapping, image_shape=(4, 3))
    check_petrophysics(lambda m: 1.0 / (0.06 + 0.02 * (1.0 - m)), image_shape=(4, 3))
    with torch.no_grad():   # the caller's context is not the mapping's fault
        check_petrophysics(lambda m: 1.0 / (0.06 + 0.02 * (1.0 - m)), image_shape=(4, 3))
    # a mapping that fails on facies requiring a gradient says so
    with pytest.raises(ValueError, match="failed on facies images that require a gradient"):
        check_petrophysics(lambda m: torch.from_numpy(1.0 / (0.08 - 0.02 * m.numpy())),
                           image_shape=(4, 3))


def test_apply_numpy_leaves_the_callers_array_alone():
    def in_place(m):
        return m.mul_(2.0).add_(10.0)   # a mapping that writes into its input

    m = np.full((1, 3, 2), 0.5, dtype=np.float32)
    np.testing.assert_allclose(apply_numpy(in_place, m), 11.0)
    np.testing.assert_array_equal(m, 0.5)


def test_check_on_another_device_names_a_tensor_left_on_the_cpu():
    """(torch's "meta" device stands in for a GPU: it mixes with CPU tensors no better.)"""
    field = torch.linspace(1.0, 2.0, 8)[:, None]   # a depth trend, left on the CPU

    def depth_trend(m):
        return (12.5 + 4.0 * m) * field

    check_petrophysics(depth_trend, (8, 4))                       # fine on the CPU
    check_petrophysics(depth_trend, (8, 4), device="cpu")
    with pytest.raises(ValueError, match=r"on meta .*move any tensor .*m\.device"):
        check_petrophysics(depth_trend, (8, 4), device="meta")

    def moved(m):
        return (12.5 + 4.0 * m) * field.to(m.device)

    check_petrophysics(moved, (8, 4), device="meta")

    def back_on_cpu(m):
        return (12.5 + 4.0 * m.cpu()) if m.device.type == "cpu" else torch.ones(m.shape)

    with pytest.raises(ValueError, match="returned its slowness on cpu for facies on meta"):
        check_petrophysics(back_on_cpu, (8, 4), device="meta")


def test_check_on_another_device_passes_device_failures_through():
    def out_of_memory(m):
        raise RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB")

    # on the CPU check it is the mapping's failure; on the device it is the device's
    with pytest.raises(RuntimeError, match="out of memory") as info:
        check_petrophysics(lambda m: out_of_memory(m) if m.device.type == "meta"
                           else 12.5 + 4.0 * m, (8, 4), device="meta")
    assert not isinstance(info.value, ValueError)
