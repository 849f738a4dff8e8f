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
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Encoder", "Decoder", "padded_size", "MIN_SIZE"]

#: Smallest image side the four-layer encoder accepts (after padding).
MIN_SIZE = 65

# (kernel, stride) of the encoder's convolutions, first to last.
_KERNELS = (5, 5, 4, 4)


def padded_size(n: int) -> int:
    """Smallest valid encoder input size ``16 k + 33 >= max(n, 65)``."""
    k = max(2, math.ceil((n - 33) / 16))
    return 16 * k + 33


def _bottleneck_size(n: int) -> int:
    for k in _KERNELS:
        n = (n - k) // 2 + 1
    return n


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
                       nn.InstanceNorm2d(ch[i + 1]), nn.ReLU(inplace=True)]
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
        h = self.fc(self.conv(x).flatten(1))
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
                layers += [nn.InstanceNorm2d(ch[i + 1]), nn.ReLU(inplace=True)]
        layers.append(nn.Sigmoid())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``(B, latent_dim)`` latent vectors to ``(B, H, W)`` images in [0, 1]."""
        x = self.fc(z).view(z.shape[0], *self.bottleneck)
        x = self.deconv(x)
        h, w = self.image_shape
        return x[:, 0, :h, :w]
