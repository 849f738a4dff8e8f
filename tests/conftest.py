"""Shared fixtures: tiny images, a tiny prior, the path to ../shared/data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from skvaeinv.datasets import make_channels

#: ../shared/data beside the repository root (read-only reference data).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
#: Set (``.ci/run`` does) to make missing reference data an error rather than a skip.
REQUIRE_SHARED_DATA = os.environ.get("SKVAEINV_REQUIRE_SHARED_DATA", "") not in ("", "0")

TINY_SHAPE = (32, 16)
TINY_PRIOR_KW = dict(latent_dim=4, beta=50.0, batch_size=32, lr=3e-3, base_channels=4,
                     hidden_units=32, device="cpu")


#: Marks a test that runs torch.compile on the CPU, which needs a C++ compiler.
needs_cxx = pytest.mark.skipif(
    (shutil.which("g++") is None and shutil.which("c++") is None)
    or not torch._dynamo.is_dynamo_supported(),
    reason="torch.compile on the CPU needs a C++ compiler and a Python that this torch's "
           "Dynamo supports")

#: Devices to parametrize a test over; "cuda" is skipped where there is no GPU (CI).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.fixture
def no_tf32():
    """float32 convolutions and matrix products on a GPU (no TF32), restored after.

    For tests comparing GPU results with CPU ones (or with each other at float32
    tolerances); a no-op on the CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to the shared reference data (present in CI beside the clone).

    Tests that compare with it are skipped, with the reason, on a machine without it,
    unless ``SKVAEINV_REQUIRE_SHARED_DATA`` is set: then its absence is an error, so
    that CI cannot pass them by skipping.
    """
    if not SHARED_DATA.is_dir():
        msg = (f"the reference data is not at {SHARED_DATA} (the project's shared/data "
               "folder, beside the repository)")
        if REQUIRE_SHARED_DATA:
            pytest.fail(msg + "; SKVAEINV_REQUIRE_SHARED_DATA is set")
        pytest.skip(msg)
    return SHARED_DATA


def make_tiny_images() -> np.ndarray:
    """300 procedural 32 x 16 channel images (train 0-249, held out 250-299)."""
    return make_channels(300, shape=TINY_SHAPE, width=(3, 5), wavelength=(20, 60),
                         random_state=0)


@pytest.fixture(scope="session")
def tiny_images() -> np.ndarray:
    """300 procedural 32 x 16 channel images (train 0-249, held out 250-299)."""
    return make_tiny_images()


#: The tiny prior the inversion tests share, as trained by :func:`train_tiny_prior` on
#: the project's machine (AMD Zen 3, torch 2.13 CPU) and saved with ``VAEPrior.save``:
#: ``python tests/data/make_tiny_prior.py`` writes it again. Training is chaotic (a
#: 1e-7 change in the arithmetic trains a visibly different network), so a prior
#: trained on another platform would move every threshold calibrated on this one.
TINY_PRIOR_FILE = Path(__file__).resolve().parent / "data" / "tiny_prior.skv"


def train_tiny_prior(images: np.ndarray):
    """The tiny prior's recipe: 30 epochs on the first 250 ``tiny_images``."""
    from skvaeinv import VAEPrior

    return VAEPrior(epochs=30, random_state=0, **TINY_PRIOR_KW).fit(images[:250])


@pytest.fixture(scope="session")
def tiny_prior():
    """The shared tiny VAEPrior (``TINY_PRIOR_FILE``), the same on every platform."""
    from skvaeinv import VAEPrior

    return VAEPrior.load(TINY_PRIOR_FILE)


@pytest.fixture(scope="session")
def trained_tiny_prior(tiny_images):
    """The tiny prior trained here and now, for the tests of training itself."""
    return train_tiny_prior(tiny_images)


def slowness(m):
    """The study's petrophysics: facies m (1 = channel) -> slowness (ns/m)."""
    return 1.0 / (0.06 + 0.02 * (1.0 - m))


@pytest.fixture(scope="session")
def survey():
    """A tiny crosshole survey: grid of TINY_SHAPE cells of 0.1 m, 16 x 16 = 256 rays."""
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D(TINY_SHAPE, spacing=0.1)
    rays = crosshole(grid, depths=np.arange(0.1, 3.2, 0.2))
    return grid, rays


@pytest.fixture(scope="session")
def bent_data(data):
    """``(grid, rays, op, y)``: 4 sources x 4 receivers, a one-secondary-node
    :class:`~skvaeinv.forward.ShortestPath` and its noise-free data of the ``data`` truth."""
    from skvaeinv.forward import ShortestPath
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D(TINY_SHAPE, spacing=0.1)
    rays = crosshole(grid, depths=[0.3, 1.1, 1.9, 2.7])  # 16 rays
    op = ShortestPath(grid, secondary_nodes=1)
    return grid, rays, op, op.traveltimes(slowness(data[1]), rays)


@pytest.fixture(scope="session")
def data(tiny_prior, survey):
    """Noise-free straight-ray data ``(z_true, truth, y)`` of a truth drawn from the prior."""
    from skvaeinv.forward import StraightRay

    grid, rays = survey
    z_true = np.random.default_rng(8).standard_normal((1, tiny_prior.latent_dim))
    truth = tiny_prior.inverse_transform(z_true)[0]
    y = StraightRay(grid).traveltimes(slowness(truth), rays)
    return z_true, truth, y


def run_latent_sgd(decoder, forward, y, z0, rngs, *, petrophysics=None, sample_weight=None,
                   batch_groups=None, device="cpu", log_prefix="", **config):
    """:func:`skvaeinv.engine.run_latent_sgd` with its configuration given as keywords."""
    from skvaeinv import engine

    return engine.run_latent_sgd(decoder, forward, y, z0, rngs,
                                 engine.SGDConfig(n_rays=len(y), **config),
                                 petrophysics=petrophysics, sample_weight=sample_weight,
                                 batch_groups=batch_groups, device=device,
                                 log_prefix=log_prefix)


def pytest_configure(config):
    # Tiny networks run fastest on one thread, and tests must not oversubscribe a
    # 2-core machine when several run at once (joblib workers set their own count).
    torch.set_num_threads(1)
