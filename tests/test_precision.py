"""precision="auto" and the warning for bfloat16 where a device only emulates it."""

from __future__ import annotations

import os
import platform
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import skvaeinv._device as utils
from skvaeinv import LatentInverter, VAEPrior
from skvaeinv.forward import StraightRay
from skvaeinv.runtime import SlowPrecisionWarning, has_native_bfloat16

from conftest import TINY_PRIOR_KW, run_latent_sgd, slowness

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
    # oneDNN's bfloat16 kernels need AVX-512 (avx512_core: BW, VL, DQ) or AVX2 with
    # AVX-NE-CONVERT; other AVX2-only processors (e.g. AMD Zen 3) get torch's slow
    # reference kernels
    if os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"):
        pytest.skip("oneDNN's instruction set is capped by the environment")
    flags = _cpu_flags()
    native = {"avx512bw", "avx512vl", "avx512dq"} <= flags or "avx_ne_convert" in flags
    assert has_native_bfloat16("cpu") == native
    assert has_native_bfloat16(CPU) == has_native_bfloat16("cpu")
    # the package's own device values work; bad ones say what is wrong
    with monkeypatch.context() as m:   # "auto" is the CPU where there is no GPU
        m.setattr(torch.cuda, "is_available", lambda: False)
        assert has_native_bfloat16("auto") == has_native_bfloat16(None) == native
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
    # on the CPU, where runs are bit-for-bit repeatable (two CUDA runs differ by rounding)
    kw = dict(n_starts=4, chunk_size=2, epochs=2, batch_size=64, lr=1e-2, n_jobs=n_jobs,
              random_state=0, device="cpu")
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
            # the engine takes a resolved precision: "auto" is resolved at the boundary
            resolved = utils.resolve_precision(precision, CPU)
            runs[precision] = run_latent_sgd(decoder, forward, data[2], z0, rngs,
                                             petrophysics=slowness, epochs=2,
                                             batch_size=64, precision=resolved)
    np.testing.assert_array_equal(runs["auto"].final_latents, runs[same_as].final_latents)
    assert not np.array_equal(runs["float32"].final_latents, runs["bfloat16"].final_latents)
    for unresolved in ("auto", "half"):
        with pytest.raises(ValueError, match=f"precision='{unresolved}' is invalid.*resolve"):
            run_latent_sgd(decoder, forward, data[2], z0, [np.random.default_rng(0)] * 2,
                           petrophysics=slowness, epochs=1, batch_size=64,
                           precision=unresolved)


# ---------------------------------------------------------------------- no TF32 on GPUs
def _cudnn_state() -> tuple:
    """Every form of torch's cuDNN float32 setting (the old flag can refuse to answer)."""
    cudnn = torch.backends.cudnn
    try:
        flag = cudnn.allow_tf32
    except RuntimeError:
        flag = "mixed"
    leaves = tuple(getattr(getattr(cudnn, name, None), "fp32_precision", None)
                   for name in ("conv", "rnn"))
    return flag, leaves, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture
def restore_cudnn():
    """Put torch's cuDNN and matmul settings back whatever a test does to them."""
    cudnn = torch.backends.cudnn
    holders = [h for h in (torch.backends, cudnn, getattr(cudnn, "conv", None),
                           getattr(cudnn, "rnn", None)) if hasattr(h, "fp32_precision")]
    saved = [h.fp32_precision for h in holders], cudnn.allow_tf32
    matmul_precision = torch.get_float32_matmul_precision()
    yield
    cudnn.allow_tf32 = saved[1]
    for holder, value in zip(holders, saved[0]):
        holder.fp32_precision = value
    torch.set_float32_matmul_precision(matmul_precision)


def _new_api(holder, value):
    def set_it():
        obj = eval(holder, {"torch": torch})
        if not hasattr(obj, "fp32_precision"):
            pytest.skip("this torch has no fp32_precision settings (torch < 2.9)")
        obj.fp32_precision = value
    return set_it


@pytest.mark.parametrize("user_setting", [
    lambda: None,                                                   # torch's default: TF32
    lambda: setattr(torch.backends.cudnn, "allow_tf32", False),     # the user's own choice
    lambda: torch.set_float32_matmul_precision("high"),             # TF32 matrix products
    _new_api("torch.backends.cudnn.conv", "ieee"),                  # torch >= 2.9's API
    _new_api("torch.backends.cudnn", "tf32"),                       # inherited by conv
], ids=["default", "user-off", "matmul-high", "new-api", "new-api-parent"])
def test_ieee_float32_switches_tf32_off_and_restores_everything(restore_cudnn, user_setting):
    user_setting()
    before = _cudnn_state()
    matmul_precision = torch.get_float32_matmul_precision()
    cuda = torch.device("cuda")   # only flags change: no GPU needed
    with utils.ieee_float32(cuda):
        assert utils._effective_conv_precision(torch.backends.cudnn) in (None, "ieee")
        assert torch.backends.cudnn.allow_tf32 is False
        # matrix products keep the user's setting, and torch can still report it
        assert torch.backends.cuda.matmul.allow_tf32 == before[2]
        assert torch.get_float32_matmul_precision() == matmul_precision
    assert _cudnn_state() == before
    with pytest.raises(KeyError):   # restored when the block raises too
        with utils.ieee_float32(cuda):
            raise KeyError("boom")
    assert _cudnn_state() == before


def test_ieee_float32_leaves_the_cpu_alone(restore_cudnn):
    torch.backends.cudnn.allow_tf32 = True
    with utils.ieee_float32(CPU):
        assert torch.backends.cudnn.allow_tf32 is True


def seeds_of(n):
    return [np.random.default_rng(i) for i in range(n)]


class _Recorder:
    """Stands in for ``ieee_float32``: records its devices and whether code runs inside."""

    def __init__(self):
        self.devices, self.depth = [], 0

    def __call__(self, device):
        import contextlib

        @contextlib.contextmanager
        def block():
            self.devices.append(device)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
        return block()


def test_engine_runs_decoder_and_gradients_inside_ieee_float32(monkeypatch, tiny_prior,
                                                                survey, data):
    import skvaeinv.engine.loop as engine
    from skvaeinv.forward import TorchForward

    rec = _Recorder()
    monkeypatch.setattr(engine, "ieee_float32", rec)
    seen = []

    class Probe(torch.autograd.Function):   # records forward and backward passes
        @staticmethod
        def forward(ctx, x):
            seen.append(("forward", rec.depth))
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            seen.append(("backward", rec.depth))
            return g

    decoder = tiny_prior.get_decoder("cpu")
    grid, rays = survey
    z0 = np.random.default_rng(3).standard_normal((2, tiny_prior.latent_dim))
    run_latent_sgd(lambda z: Probe.apply(decoder(z)), TorchForward(StraightRay(grid), rays),
                   data[2], z0, seeds_of(2), petrophysics=slowness, epochs=2, batch_size=64)
    assert rec.devices == [CPU]
    n_batches = -(-len(rays) // 64)
    assert seen.count(("backward", 1)) == 2 * n_batches
    assert ("forward", 1) in seen and ("backward", 0) not in seen
    # (only the shape probe after an interrupt decodes outside; there is none here)
    assert seen.count(("forward", 0)) == 0


def test_prior_runs_its_networks_inside_ieee_float32(monkeypatch, tiny_images):
    import skvaeinv.prior._estimator as prior_module

    rec = _Recorder()
    monkeypatch.setattr(prior_module, "ieee_float32", rec)
    prior = VAEPrior(epochs=1, random_state=0, **TINY_PRIOR_KW)
    depths = []

    def hook(module, args, output):
        depths.append(rec.depth)

    prior.fit(tiny_images[:40])
    assert rec.devices == [prior.device_] and rec.depth == 0
    prior.encoder_.register_forward_hook(hook)
    prior.decoder_.register_forward_hook(hook)
    prior.partial_fit(tiny_images[:40])
    Z = prior.transform(tiny_images[:3])
    prior.inverse_transform(Z)
    prior.score_samples(tiny_images[:3])
    prior.sample(2, random_state=0)
    assert len(depths) >= 8 and set(depths) == {1}
    assert len(rec.devices) == 6 and rec.depth == 0


def test_an_outer_autocast_does_not_reach_the_package(tiny_prior, survey, data):
    """float32 stays float32 inside a caller's ``torch.autocast`` region."""
    from skvaeinv.forward import TorchForward

    grid, rays = survey
    z0 = np.random.default_rng(3).standard_normal((2, tiny_prior.latent_dim))
    Z = np.random.default_rng(4).standard_normal((3, tiny_prior.latent_dim))
    runs = {}
    for outer in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=outer):
            images = tiny_prior.inverse_transform(Z)
            codes = tiny_prior.transform(images)
            fwd = TorchForward(StraightRay(grid), rays, kernel="dense")
            res = run_latent_sgd(tiny_prior.get_decoder("cpu"), fwd, data[2], z0, seeds_of(2),
                                 petrophysics=slowness, epochs=2, batch_size=64)
        runs[outer] = images, codes, res.final_latents, res.data_rmse
    for a, b in zip(runs[False], runs[True]):
        np.testing.assert_array_equal(a, b)


def test_ieee_float32_blocks_in_two_threads_restore_once_both_left(restore_cudnn):
    """A enters, B enters, A leaves (B still inside: float32), B leaves (restored)."""
    torch.backends.cudnn.allow_tf32 = True
    cuda = torch.device("cuda")
    a, b = utils.ieee_float32(cuda), utils.ieee_float32(cuda)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert torch.backends.cudnn.allow_tf32 is False
    b.__exit__(None, None, None)
    assert torch.backends.cudnn.allow_tf32 is True
    with utils.ieee_float32(cuda):   # and the next block starts afresh
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True


@pytest.mark.parametrize("major, native", [(7, False), (8, True), (9, True)])
def test_native_bfloat16_on_cuda_asks_that_gpu(monkeypatch, major, native):
    import types

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    def properties(device):
        asked.append(torch.device(device))
        return types.SimpleNamespace(major=major if torch.device(device).index == 1 else 9)

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    # torch's own answer counts emulation as support: it must not be what decides
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert has_native_bfloat16("cuda:1") is native
    assert asked == [torch.device("cuda", 1)]


def test_cuda_without_index_is_the_current_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert utils.resolve_device("cuda") == torch.device("cuda", 1)
    assert utils.resolve_device("auto") == torch.device("cuda", 1)
    assert utils.resolve_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert utils.resolve_device("cuda:0") == torch.device("cuda", 0)


def test_ieee_float32_changes_nothing_for_bfloat16_training_and_inversion(
        monkeypatch, tiny_images, tiny_prior, survey, data):
    """Without an outer autocast the block must be invisible, in bfloat16 too (an
    autocast region spanning the run kept torch's cast cache alive: stale bf16 weights
    in training, every iterate's cast kept in the inversion)."""
    import contextlib

    import skvaeinv.engine.loop as engine
    import skvaeinv.prior._estimator as prior_module
    from skvaeinv.forward import TorchForward

    grid, rays = survey
    z0 = np.random.default_rng(3).standard_normal((2, tiny_prior.latent_dim))
    runs = []
    for patched in (False, True):
        with monkeypatch.context() as m:
            if patched:
                for module in (engine, prior_module):
                    m.setattr(module, "ieee_float32", lambda dev: contextlib.nullcontext())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SlowPrecisionWarning)
                prior = VAEPrior(epochs=2, precision="bfloat16", random_state=0,
                                 **TINY_PRIOR_KW).fit(tiny_images[:64])
                res = run_latent_sgd(tiny_prior.get_decoder("cpu"),
                                     TorchForward(StraightRay(grid), rays), data[2], z0,
                                     seeds_of(2), petrophysics=slowness, epochs=2,
                                     batch_size=64, precision="bfloat16")
        runs.append((prior.loss_curve_, res.final_latents))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_ieee_float32_in_real_threads(restore_cudnn):
    """Two threads inside at once; the setting comes back only when both have left."""
    import threading

    torch.backends.cudnn.allow_tf32 = True
    cuda = torch.device("cuda")
    both_in, a_out = threading.Barrier(2), threading.Event()
    seen = {}

    def a():
        with utils.ieee_float32(cuda):
            both_in.wait(timeout=10)
        a_out.set()

    def b():
        with utils.ieee_float32(cuda):
            both_in.wait(timeout=10)
            a_out.wait(timeout=10)
            seen["b after a left"] = torch.backends.cudnn.allow_tf32

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert seen == {"b after a left": False}
    assert torch.backends.cudnn.allow_tf32 is True
