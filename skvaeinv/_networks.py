"""Plain torch modules of the variational autoencoder (no scikit-learn here).

The architecture is the one of the reference study (Lopez-Alvis et al., 2021) for
129 x 65 images: four strided convolutions with instance normalisation and ReLU, a
fully connected bottleneck and a mirrored decoder ending in a sigmoid.

Other image shapes are handled by a documented generalisation: the encoder's valid
input sizes along each axis are ``16 k + 33`` (65, 81, 97, 113, 129, ...; ``k >= 2`` so
that the last instance normalisation sees at least two values along each axis).
Images are zero-padded at the bottom/right up to the next valid size (at least 65),
and the decoder's output is cropped back to the image shape. For 129 x 65 no padding
happens and the network is exactly the reference one.

Under :func:`torch.compile` the same layers run in a form the compiler fuses (see
:func:`run_layers`): channels-last activations, instance normalisation + ReLU as one
reduction and one pointwise pass, and the decoder's last (one-channel) transposed
convolution as a matrix product and a ``fold``. The function is the same. Run
eagerly, the rewritten form would be slower than torch's layers, so it is used only
under the compiler.
"""

from __future__ import annotations

import importlib
import math

import torch
from torch import nn

__all__ = ["Encoder", "Decoder", "padded_size", "MIN_SIZE", "instance_norm_relu",
           "conv_transpose_one_channel", "run_layers"]

#: Smallest image side the four-layer encoder accepts (after padding).
MIN_SIZE = 65

# (kernel, stride) of the encoder's convolutions, first to last.
_KERNELS = (5, 5, 4, 4)

# _NORM_RELU: the ReLU after an InstanceNorm2d is not in place. instance_norm returns a
# view of a reshaped batch_norm output, and an in-place op on a view makes autograd
# rebuild the whole base in the backward pass (a zero fill and a copy per layer), for
# the same results (the relu_inplace study of benchmarks/ measured it).


def padded_size(n: int) -> int:
    """Smallest valid encoder input size ``16 k + 33 >= max(n, 65)``."""
    k = max(2, math.ceil((n - 33) / 16))
    return 16 * k + 33


def _bottleneck_size(n: int) -> int:
    for k in _KERNELS:
        n = (n - k) // 2 + 1
    return n


def instance_norm_relu(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``relu(instance_norm(x))`` without affine parameters, as one fusable expression.

    Statistics and normalisation are computed in at least float32 precision (float32
    for bfloat16/float16 input); the result has the dtype of ``x``. Equal to
    ``F.relu(F.instance_norm(x, eps=eps))`` up to rounding.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, H, W)
    eps : float, default=1e-5
        Added to the variance, as in :class:`torch.nn.InstanceNorm2d`.

    Returns
    -------
    torch.Tensor of shape (B, C, H, W)
    """
    b, c, h, w = x.shape
    acc = torch.promote_types(x.dtype, torch.float32)
    # (B, H*W, C): a view when x is channels-last, the layout the compiled path uses
    flat = x.permute(0, 2, 3, 1).reshape(b, h * w, c).to(acc)
    var, mean = torch.var_mean(flat, dim=1, keepdim=True, correction=0)
    scale = torch.rsqrt(var + eps).view(b, c, 1, 1)
    return torch.relu((x.to(acc) - mean.view(b, c, 1, 1)) * scale).to(x.dtype)


def conv_transpose_one_channel(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """Apply a one-output-channel ``conv`` (no padding) as a matrix product and a fold.

    Each input pixel's contribution to its ``kh x kw`` output window is one row of
    ``x @ weight``; :func:`torch.nn.functional.fold` adds the overlapping windows (in
    at least float32). oneDNN's transposed convolution is slow for one output channel;
    this form is a single GEMM plus a scatter-add.

    Parameters
    ----------
    x : torch.Tensor of shape (B, C, h, w)
    conv : torch.nn.ConvTranspose2d
        With ``out_channels == 1``, zero padding and no dilation.

    Returns
    -------
    torch.Tensor of shape (B, 1, (h - 1) * sh + kh, (w - 1) * sw + kw)
        float32 (float64 for float64 input).
    """
    b, c, h, w = x.shape
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    weight = conv.weight.reshape(c, kh * kw).to(x.dtype)
    cols = x.permute(0, 2, 3, 1).reshape(b, h * w, c) @ weight          # (B, h*w, kh*kw)
    acc = torch.promote_types(x.dtype, torch.float32)
    out = nn.functional.fold(cols.transpose(1, 2).to(acc),
                             ((h - 1) * sh + kh, (w - 1) * sw + kw), (kh, kw), stride=(sh, sw))
    if conv.bias is not None:
        out = out + conv.bias.to(acc).view(1, -1, 1, 1)
    return out


def _compiling_check():
    """``torch.compiler.is_compiling`` (torch >= 2.3), or its older home in torch._dynamo."""
    check = getattr(torch.compiler, "is_compiling", None)
    if check is None:  # torch 2.1-2.2
        check = importlib.import_module("torch._dynamo").is_compiling
    return check


_is_compiling = _compiling_check()


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run ``layers`` on ``x``, in the fusable form when :func:`torch.compile` traces it.

    Eagerly this is ``layers(x)``. While compiling, the activations are channels-last,
    each ``InstanceNorm2d`` + ``ReLU`` pair is :func:`instance_norm_relu` and a
    one-output-channel ``ConvTranspose2d`` is :func:`conv_transpose_one_channel`: the
    same function, in a form the compiler turns into a few fused loops around the
    oneDNN convolutions.

    Parameters
    ----------
    layers : torch.nn.Sequential
    x : torch.Tensor of shape (B, C, H, W)

    Returns
    -------
    torch.Tensor
    """
    if not _is_compiling():
        return layers(x)
    x = x.contiguous(memory_format=torch.channels_last)
    mods = list(layers)
    i = 0
    while i < len(mods):
        layer = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(layer, nn.InstanceNorm2d) and isinstance(nxt, nn.ReLU) \
                and not layer.affine and not layer.track_running_stats:
            x = instance_norm_relu(x, layer.eps)
            i += 2
            continue
        if isinstance(layer, nn.ConvTranspose2d) and layer.out_channels == 1 \
                and layer.padding == (0, 0) and layer.dilation == (1, 1) \
                and layer.output_padding == (0, 0) and layer.groups == 1:
            x = conv_transpose_one_channel(x, layer)
        else:
            x = layer(x)
        i += 1
    return x


class Encoder(nn.Module):
    """Convolutional encoder mapping images to the posterior mean and log-variance.

    Parameters
    ----------
    image_shape : tuple of int
        (H, W) of the images.
    latent_dim : int
        Number of latent dimensions.
    base_channels : int
        Channels of the first convolution (doubling at each of the four layers).
    hidden_units : int
        Width of the fully connected layer.
    """

    def __init__(self, image_shape: tuple[int, int], latent_dim: int = 20,
                 base_channels: int = 32, hidden_units: int = 512) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.padded_shape = tuple(padded_size(s) for s in self.image_shape)
        ch = [1] + [base_channels * 2**i for i in range(4)]
        layers: list[nn.Module] = []
        for i, k in enumerate(_KERNELS):
            layers += [nn.Conv2d(ch[i], ch[i + 1], k, stride=2, bias=False),
                       nn.InstanceNorm2d(ch[i + 1]), nn.ReLU()]   # see _NORM_RELU
        self.conv = nn.Sequential(*layers)
        self.bottleneck = (ch[-1], *(_bottleneck_size(s) for s in self.padded_shape))
        n_flat = math.prod(self.bottleneck)
        self.fc = nn.Sequential(nn.Linear(n_flat, hidden_units), nn.ReLU(inplace=True))
        self.mean = nn.Linear(hidden_units, latent_dim)
        self.logvar = nn.Linear(hidden_units, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map images ``(B, H, W)`` to ``(mean, logvar)``, each ``(B, latent_dim)``."""
        x = x.unsqueeze(1)
        ph, pw = self.padded_shape
        h, w = self.image_shape
        if (ph, pw) != (h, w):
            x = nn.functional.pad(x, (0, pw - w, 0, ph - h))
        h = self.fc(run_layers(self.conv, x).flatten(1))
        return self.mean(h), self.logvar(h)


class Decoder(nn.Module):
    """Decoder (generator) mapping latent vectors ``(B, latent_dim)`` to images ``(B, H, W)``.

    Mirrors :class:`Encoder`; output values lie in [0, 1] (sigmoid).
    """

    def __init__(self, image_shape: tuple[int, int], latent_dim: int = 20,
                 base_channels: int = 32, hidden_units: int = 512) -> None:
        super().__init__()
        self.image_shape = tuple(int(s) for s in image_shape)
        self.padded_shape = tuple(padded_size(s) for s in self.image_shape)
        #: The size parameters this network was built with.
        self.architecture = dict(latent_dim=int(latent_dim), base_channels=int(base_channels),
                                 hidden_units=int(hidden_units))
        ch = [base_channels * 2**i for i in range(4)][::-1] + [1]
        self.bottleneck = (ch[0], *(_bottleneck_size(s) for s in self.padded_shape))
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, hidden_units),
            nn.Linear(hidden_units, math.prod(self.bottleneck)), nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i, k in enumerate(_KERNELS[::-1]):
            layers.append(nn.ConvTranspose2d(ch[i], ch[i + 1], k, stride=2, bias=(i == 3)))
            if i < 3:
                layers += [nn.InstanceNorm2d(ch[i + 1]), nn.ReLU()]   # see _NORM_RELU
        layers.append(nn.Sigmoid())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``(B, latent_dim)`` latent vectors to ``(B, H, W)`` images in [0, 1]."""
        x = self.fc(z).view(z.shape[0], *self.bottleneck)
        x = run_layers(self.deconv, x)
        h, w = self.image_shape
        return x[:, 0, :h, :w]
