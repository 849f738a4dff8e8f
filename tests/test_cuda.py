"""The CUDA paths: prior training and decoding, latent SGD with starts batched on a GPU.

Run only where CUDA is available (CI has no GPU: every test here is skipped there; the
CPU versions of the same checks run everywhere). cuDNN's TF32 convolutions are switched
off where a GPU result is compared with a CPU one, so the comparison is of float32 with
float32; the quality checks use the criteria of the CPU tests.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from skvaeinv import LatentInverter, VAEPrior
from skvaeinv._device import resolve_device
from skvaeinv.forward import ShortestPath, StraightRay, TorchForward
from skvaeinv.survey import Grid2D, crosshole

from conftest import TINY_PRIOR_KW, TINY_SHAPE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA_KW = {**TINY_PRIOR_KW, "device": "cuda"}
FAST = dict(epochs=3, batch_size=32, lr=0.05, reg_weight=5.0, reg_decay=0.99)
# a small learning rate, where SGD contracts: runs that round differently (CPU vs GPU,
# eager vs compiled) stay close; with lr=0.05 the tiny problem's SGD oscillates and
# amplifies 1e-7 differences to 1e-2 within 20 iterations
SAME = {**FAST, "lr": 0.01}
# decoded images on CUDA agree between calls to float32 rounding, not bit for bit
ROUNDING = dict(rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def cuda_prior(tiny_images):
    return VAEPrior(epochs=30, random_state=0, **CUDA_KW).fit(tiny_images[:250])


def test_auto_device_is_cuda(tiny_images):
    assert resolve_device("auto").type == "cuda"
    p = VAEPrior(epochs=1, random_state=0, **{**TINY_PRIOR_KW, "device": "auto"})
    p.fit(tiny_images[:32])
    assert p.device_.type == "cuda" and next(p.decoder_.parameters()).is_cuda
    with pytest.raises(ValueError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_prior_trains_on_cuda(cuda_prior, tiny_images):
    assert next(cuda_prior.encoder_.parameters()).is_cuda
    curve = cuda_prior.loss_curve_
    assert curve[-1] < 0.75 * curve[0]
    held_out = tiny_images[250:]
    err_vae = cuda_prior.reconstruction_error(held_out).mean()
    err_mean = ((held_out - tiny_images[:250].mean(axis=0)) ** 2).sum(axis=(1, 2)).mean()
    assert err_vae < 0.85 * err_mean   # as the CPU test
    Z = cuda_prior.transform(held_out[:5])
    R = cuda_prior.inverse_transform(Z)
    assert isinstance(Z, np.ndarray) and Z.shape == (5, 4)
    assert R.shape == (5, *TINY_SHAPE) and 0 <= R.min() and R.max() <= 1
    S = cuda_prior.sample(4, random_state=1)
    np.testing.assert_allclose(S, cuda_prior.sample(4, random_state=1), **ROUNDING)
    assert np.abs(S - cuda_prior.sample(4, random_state=2)).max() > 0.1


def test_bfloat16_training_on_cuda(tiny_images):
    p = VAEPrior(epochs=3, precision="bfloat16", random_state=0, **CUDA_KW)
    p.fit(tiny_images[:64])
    assert np.all(np.isfinite(p.loss_curve_)) and p.loss_curve_[-1] < p.loss_curve_[0]


def test_cuda_prior_persists_and_moves_to_the_cpu(cuda_prior, tmp_path, no_tf32):
    Z = np.random.default_rng(0).standard_normal((6, 4))
    expected = cuda_prior.inverse_transform(Z)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(cuda_prior)).inverse_transform(Z),
                               expected, **ROUNDING)
    cuda_prior.save(tmp_path / "p.skv")
    again = VAEPrior.load(tmp_path / "p.skv")
    assert again.device_.type == "cuda"
    np.testing.assert_allclose(again.inverse_transform(Z), expected, **ROUNDING)
    on_cpu = VAEPrior.load(tmp_path / "p.skv", device="cpu")
    assert on_cpu.device_.type == "cpu"
    np.testing.assert_allclose(on_cpu.inverse_transform(Z), expected, atol=1e-5)
    # a CPU copy of the decoder from the CUDA prior, and a CUDA copy of a CPU prior
    dec = cuda_prior.get_decoder("cpu")
    out = dec(torch.as_tensor(Z, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_cpu_prior_file_resumes_training_on_cuda(tiny_images, tmp_path, no_tf32):
    """A prior file saved on the CPU goes on training on the GPU (what
    benchmarks/device_train.sh does with the reference prior) as it would on the CPU."""
    from conftest import TINY_PRIOR_FILE

    seen = VAEPrior.load(TINY_PRIOR_FILE).n_images_seen_
    runs = {}
    for device in ("cpu", "cuda"):
        p = VAEPrior.load(TINY_PRIOR_FILE, device=device)
        p.set_params(precision="float32", lr=1e-4)
        p.partial_fit(tiny_images[:64])
        p.save(tmp_path / f"{device}.skv")
        runs[device] = p
    gpu, cpu = runs["cuda"], runs["cpu"]
    assert gpu.device_.type == "cuda" and next(gpu.decoder_.parameters()).is_cuda
    assert gpu.n_images_seen_ == cpu.n_images_seen_ == seen + 64
    np.testing.assert_allclose(gpu.loss_curve_[-1], cpu.loss_curve_[-1], rtol=1e-4)
    Z = np.random.default_rng(0).standard_normal((6, gpu.latent_dim))
    np.testing.assert_allclose(VAEPrior.load(tmp_path / "cuda.skv", device="cpu")
                               .inverse_transform(Z), cpu.inverse_transform(Z), atol=1e-4)


def test_float32_on_cuda_is_not_tf32(tiny_prior, survey, data, tmp_path):
    """With torch's default (TF32 convolutions allowed), float32 stays float32."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        tiny_prior.save(tmp_path / "p.skv")
        on_gpu = VAEPrior.load(tmp_path / "p.skv", device="cuda")
        Z = np.random.default_rng(0).standard_normal((64, 4))
        np.testing.assert_allclose(on_gpu.inverse_transform(Z), tiny_prior.inverse_transform(Z),
                                   atol=1e-5)
        grid, rays = survey
        kw = dict(n_starts=6, random_state=2, **SAME)
        cpu = LatentInverter(tiny_prior, StraightRay(grid), device="cpu", **kw).fit(rays,
                                                                                    data[2])
        gpu = LatentInverter(tiny_prior, StraightRay(grid), device="cuda", **kw).fit(rays,
                                                                                     data[2])
        np.testing.assert_allclose(gpu.history_.data_rmse, cpu.history_.data_rmse, rtol=1e-3)
        assert torch.backends.cudnn.allow_tf32 is True   # the user's setting, restored
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def test_inversion_on_cuda_follows_the_cpu_one(tiny_prior, survey, data, no_tf32):
    grid, rays = survey
    kw = dict(n_starts=6, random_state=2, **SAME)
    cpu = LatentInverter(tiny_prior, StraightRay(grid), device="cpu", **kw).fit(rays, data[2])
    gpu = LatentInverter(tiny_prior, StraightRay(grid), device="cuda", **kw).fit(rays, data[2])
    # same per-start mini-batch orders and start vectors; float32 on both devices
    np.testing.assert_allclose(gpu.history_.data_rmse, cpu.history_.data_rmse, rtol=1e-3)
    np.testing.assert_allclose(gpu.latents_, cpu.latents_, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(gpu.kept_iteration_, cpu.kept_iteration_)
    # one process whatever n_jobs: the same result
    two = LatentInverter(tiny_prior, StraightRay(grid), device="cuda", n_jobs=2,
                         **kw).fit(rays, data[2])
    np.testing.assert_allclose(two.latents_, gpu.latents_, rtol=1e-4, atol=1e-5)


def test_random_starts_reach_the_level_of_the_true_code_on_cuda(tiny_prior, survey, data):
    grid, rays = survey
    z_true, truth, y = data
    kw = dict(epochs=100, batch_size=32, lr=0.05, lr_decay=0.97, reg="ring", reg_weight=5.0,
              reg_decay=0.99, device="cuda", random_state=0)
    ref_rmse = LatentInverter(tiny_prior, StraightRay(grid), n_starts=1, init=z_true,
                              **kw).fit(rays, y).data_rmse_[0]
    for precision in ("float32", "bfloat16"):
        inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=16, precision=precision,
                             **kw).fit(rays, y)
        tol = 1.1 if precision == "float32" else 1.5  # bfloat16 decoder: coarser images
        assert np.mean(inv.data_rmse_ <= tol * ref_rmse) >= 0.8, precision
        assert np.sqrt(np.mean((inv.model_ - truth) ** 2)) < 0.1, precision


def test_shortest_path_in_the_loop_on_cuda(tiny_prior, bent_data, no_tf32):
    grid, rays, fwd, y = bent_data
    kw = dict(n_starts=3, epochs=3, batch_size=4, lr=0.1, lr_decay=0.8, reg_weight=5.0,
              reg_decay=0.99, track_every=2, random_state=0)
    cpu = LatentInverter(tiny_prior, fwd, device="cpu", **kw).fit(rays, y)
    gpu = LatentInverter(tiny_prior, fwd, device="cuda", **kw).fit(rays, y)
    np.testing.assert_allclose(gpu.history_.batch_rmse, cpu.history_.batch_rmse, rtol=1e-3)
    np.testing.assert_allclose(gpu.latents_, cpu.latents_, rtol=1e-3, atol=1e-4)
    assert (gpu.data_rmse_ < gpu.history_["data_rmse"][:, 0]).all()


def test_torch_forward_gradients_on_cuda_equal_the_cpu_ones():
    grid = Grid2D((12, 8), spacing=0.25)
    rays = crosshole(grid, depths=[0.3, 1.4, 2.6])
    S = torch.from_numpy(1.0 / (0.06 + 0.02 * np.random.default_rng(0).random((4, 96))))
    idx = torch.tensor([[0, 4, 8]] * 4)
    for op in (StraightRay(grid), ShortestPath(grid, secondary_nodes=2)):
        grads = []
        for dev in ("cpu", "cuda"):
            s = S.detach().to(dev).clone().requires_grad_(True)
            fwd = TorchForward(op, rays, device=dev, dtype=torch.float64)
            (fwd(s, idx.to(dev)) ** 2).sum().backward()
            grads.append(s.grad.cpu().numpy())
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-12, atol=0)
