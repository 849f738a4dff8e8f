"""precision="auto" and the warning for bfloat16 where a device only emulates it."""

from __future__ import annotations

import platform
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import skvaeinv._utils as utils
from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.engine import run_latent_sgd
from skvaeinv.forward import StraightRay
from skvaeinv.runtime import SlowPrecisionWarning, has_native_bfloat16

from conftest import TINY_PRIOR_KW, slowness

CPU = torch.device("cpu")


@pytest.fixture
def native(monkeypatch):
    """Set what ``has_native_bfloat16`` answers (for every device)."""
    def set_answer(value: bool) -> None:
        monkeypatch.setattr(utils, "has_native_bfloat16", lambda device="cpu": value)
    return set_answer


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64")
                    or not Path("/proc/cpuinfo").is_file(),
                    reason="the check reads the x86 flags of /proc/cpuinfo")
def test_native_bfloat16_follows_the_cpu_flags(monkeypatch):
    # oneDNN's bfloat16 kernels need AVX-512 (avx512_core: F, BW, VL, DQ); AVX2-only
    # processors (e.g. AMD Zen 3) get torch's slow reference kernels
    flags = _cpu_flags()
    assert has_native_bfloat16("cpu") == ("avx512bw" in flags)
    assert has_native_bfloat16(CPU) == has_native_bfloat16("cpu")
    # the package's own device values work; bad ones say what is wrong
    with monkeypatch.context() as m:   # "auto" is the CPU where there is no GPU
        m.setattr(torch.cuda, "is_available", lambda: False)
        assert has_native_bfloat16("auto") == has_native_bfloat16(None) == ("avx512bw" in flags)
    with pytest.raises(ValueError, match="not a valid torch device"):
        has_native_bfloat16("gpu-please")


@pytest.mark.parametrize("answer, auto", [(True, "bfloat16"), (False, "float32")])
def test_resolve_precision(native, answer, auto):
    native(answer)
    assert utils.resolve_precision("auto", CPU) == auto
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert utils.resolve_precision("float32", CPU) == "float32"
        if answer:
            assert utils.resolve_precision("bfloat16", CPU) == "bfloat16"
    if not answer:
        with pytest.warns(SlowPrecisionWarning, match="no native bfloat16.*precision='auto'"):
            assert utils.resolve_precision("bfloat16", CPU) == "bfloat16"
    with pytest.raises(ValueError, match="'float32', 'bfloat16' or 'auto'"):
        utils.resolve_precision("float16", CPU)


def test_slow_precision_warning_is_a_user_warning():
    assert issubclass(SlowPrecisionWarning, UserWarning)


@pytest.mark.parametrize("answer, same_as", [(False, "float32"), (True, "bfloat16")])
def test_prior_auto_trains_as_the_resolved_precision(native, tiny_images, answer, same_as):
    native(answer)
    kw = dict(epochs=1, random_state=0, **TINY_PRIOR_KW)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SlowPrecisionWarning)
        auto = VAEPrior(precision="auto", **kw).fit(tiny_images[:64])
        explicit = VAEPrior(precision=same_as, **kw).fit(tiny_images[:64])
        other = VAEPrior(precision={"float32": "bfloat16", "bfloat16": "float32"}[same_as],
                         **kw).fit(tiny_images[:64])
    z = np.random.default_rng(0).standard_normal((3, TINY_PRIOR_KW["latent_dim"]))
    a, b, c = (p.inverse_transform(z) for p in (auto, explicit, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the two precisions do train differently
    assert auto.get_params()["precision"] == "auto"  # the parameter is kept as given


def test_prior_warns_at_the_callers_line(native, tiny_images):
    native(False)
    prior = VAEPrior(precision="bfloat16", epochs=1, random_state=0, **TINY_PRIOR_KW)
    with pytest.warns(SlowPrecisionWarning) as record:
        prior.fit(tiny_images[:32])
    assert Path(record[0].filename).name == "test_precision.py"
    with pytest.warns(SlowPrecisionWarning) as record:
        prior.partial_fit(tiny_images[:32])
    assert Path(record[0].filename).name == "test_precision.py"
    with warnings.catch_warnings():  # float32 never warns
        warnings.simplefilter("error")
        prior.set_params(precision="float32").partial_fit(tiny_images[:32])


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_inverter_warns_once_and_auto_matches(native, tiny_prior, survey, data, n_jobs):
    grid, rays = survey
    y = data[2]
    kw = dict(n_starts=4, chunk_size=2, epochs=2, batch_size=64, lr=1e-2, n_jobs=n_jobs,
              random_state=0)
    native(False)
    with pytest.warns(SlowPrecisionWarning) as record:
        LatentInverter(tiny_prior, StraightRay(grid), precision="bfloat16", **kw).fit(rays, y)
    slow = [w for w in record if issubclass(w.category, SlowPrecisionWarning)]
    assert len(slow) == 1 and Path(slow[0].filename).name == "test_precision.py"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        auto = LatentInverter(tiny_prior, StraightRay(grid), precision="auto", **kw)
        auto.fit(rays, y)
        f32 = LatentInverter(tiny_prior, StraightRay(grid), precision="float32", **kw)
        f32.fit(rays, y)
    np.testing.assert_array_equal(auto.latents_, f32.latents_)


@pytest.mark.parametrize("answer, same_as", [(False, "float32"), (True, "bfloat16")])
def test_engine_takes_auto(native, tiny_prior, survey, data, answer, same_as):
    from skvaeinv.forward import TorchForward

    grid, rays = survey
    native(answer)
    decoder = tiny_prior.get_decoder("cpu")
    forward = TorchForward(StraightRay(grid), rays)
    z0 = np.random.default_rng(3).standard_normal((2, tiny_prior.latent_dim))
    runs = {}
    for precision in ("auto", "float32", "bfloat16"):
        rngs = [np.random.default_rng(i) for i in range(2)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SlowPrecisionWarning)
            runs[precision] = run_latent_sgd(decoder, forward, data[2], z0, rngs,
                                             petrophysics=slowness, epochs=2,
                                             batch_size=64, precision=precision)
    np.testing.assert_array_equal(runs["auto"].final_latents, runs[same_as].final_latents)
    assert not np.array_equal(runs["float32"].final_latents, runs["bfloat16"].final_latents)
    with pytest.raises(ValueError, match="'auto'"):
        run_latent_sgd(decoder, forward, data[2], z0, [np.random.default_rng(0)] * 2,
                       petrophysics=slowness, epochs=1, batch_size=64, precision="half")
