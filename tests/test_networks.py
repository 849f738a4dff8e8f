"""The fusable forms of the VAE layers equal the eager layers (skvaeinv._networks).

The compiled path (``torch.compile``) rewrites instance norm + ReLU and the decoder's
one-channel transposed convolution; these tests check the rewritten functions against
torch's own layers directly (no compiler needed), and one test compiles for real.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import skvaeinv._networks as networks
from skvaeinv._networks import (Decoder, Encoder, conv_transpose_one_channel,
                                instance_norm_relu, run_layers)

from conftest import needs_cxx


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_instance_norm_relu_matches_torch(channels_last, dtype, tol):
    gen = torch.Generator().manual_seed(0)
    x = (3.0 * torch.randn(4, 6, 9, 5, generator=gen, dtype=dtype) + 1.5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    ref = F.relu(F.instance_norm(x, eps=1e-5))
    out = instance_norm_relu(x, eps=1e-5)
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    g = torch.randn(ref.shape, generator=gen, dtype=dtype)
    (g_ref,) = torch.autograd.grad(ref, x, g)
    (g_out,) = torch.autograd.grad(out, x, g)
    torch.testing.assert_close(g_out, g_ref, rtol=10 * tol, atol=tol)


def test_instance_norm_relu_keeps_bfloat16_and_float32_statistics():
    gen = torch.Generator().manual_seed(1)
    # a large common offset: statistics in bfloat16 would lose the variation
    x32 = 200.0 + torch.randn(2, 3, 16, 8, generator=gen)
    x16 = x32.to(torch.bfloat16)
    out = instance_norm_relu(x16)
    assert out.dtype == torch.bfloat16
    ref = F.relu(F.instance_norm(x16.float()))
    # only the final rounding to bfloat16 separates the two
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kernel, bias", [(5, True), (4, False), (3, True)])
def test_conv_transpose_one_channel_matches_torch(kernel, bias):
    torch.manual_seed(2)
    conv = nn.ConvTranspose2d(7, 1, kernel, stride=2, bias=bias)
    x = torch.randn(3, 7, 11, 6, requires_grad=True)
    ref = conv(x)
    out = conv_transpose_one_channel(x, conv)
    assert out.shape == ref.shape == (3, 1, 2 * 10 + kernel, 2 * 5 + kernel)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn(ref.shape)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    grads_ref = torch.autograd.grad(ref, params, g)
    grads_out = torch.autograd.grad(out, params, g)
    for a, b in zip(grads_out, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(129, 65), (40, 20)])
def test_fused_path_equals_eager_networks(shape, monkeypatch):
    """run_layers' compiled form, executed eagerly, gives the eager networks' outputs."""
    torch.manual_seed(3)
    enc = Encoder(shape, latent_dim=4, base_channels=4, hidden_units=16).eval()
    dec = Decoder(shape, latent_dim=4, base_channels=4, hidden_units=16).eval()
    x = torch.rand(5, *shape)
    z = torch.randn(5, 4, requires_grad=True)
    mean_ref, logvar_ref = enc(x)
    img_ref = dec(z)
    (gz_ref,) = torch.autograd.grad(img_ref.sum(), z)
    monkeypatch.setattr(networks, "_is_compiling", lambda: True)
    mean, logvar = enc(x)
    img = dec(z)
    (gz,) = torch.autograd.grad(img.sum(), z)
    torch.testing.assert_close(mean, mean_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logvar, logvar_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(img, img_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gz, gz_ref, rtol=1e-4, atol=1e-5)


def test_compiling_check_works_before_torch_2_3(monkeypatch):
    # torch.compiler.is_compiling arrived in torch 2.3; 2.1-2.2 have torch._dynamo's
    import torch._dynamo

    native = getattr(torch.compiler, "is_compiling", None)   # None on torch 2.1-2.2
    assert networks._compiling_check() is (native or torch._dynamo.is_compiling)
    monkeypatch.delattr(torch.compiler, "is_compiling", raising=False)
    assert networks._compiling_check() is torch._dynamo.is_compiling


def test_run_layers_eager_is_the_sequential():
    layers = nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2), nn.ReLU())
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(run_layers(layers, x), layers(x), rtol=0, atol=0)


@needs_cxx
def test_compiled_decoder_matches_eager():
    torch.manual_seed(4)
    dec = Decoder((40, 20), latent_dim=4, base_channels=4, hidden_units=16).eval()
    z = torch.randn(6, 4, requires_grad=True)
    ref = dec(z)
    (g_ref,) = torch.autograd.grad(ref.sum(), z)
    compiled = torch.compile(dec)
    out = compiled(z)
    (g,) = torch.autograd.grad(out.sum(), z)
    np.testing.assert_allclose(out.detach().numpy(), ref.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(g.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-5)
