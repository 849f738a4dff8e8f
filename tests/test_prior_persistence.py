"""The prior's safe file format and pickling (skvaeinv/prior/_persistence.py)."""

import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from skvaeinv import VAEPrior
from skvaeinv.prior._persistence import FORMAT_VERSION, prior_state

from conftest import TINY_PRIOR_KW


def test_persistence_round_trips(tiny_prior, tmp_path):
    Z = np.random.default_rng(0).standard_normal((6, 4))
    expected = tiny_prior.inverse_transform(Z)
    p2 = pickle.loads(pickle.dumps(tiny_prior))
    np.testing.assert_array_equal(p2.inverse_transform(Z), expected)
    joblib.dump(tiny_prior, tmp_path / "p.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "p.joblib").inverse_transform(Z),
                                  expected)
    tiny_prior.save(tmp_path / "p.skv")
    # the file is loadable by torch's safe loader (no pickled code)
    raw = torch.load(tmp_path / "p.skv", weights_only=True)
    assert raw["format"] == "skvaeinv.VAEPrior"
    p3 = VAEPrior.load(tmp_path / "p.skv")
    np.testing.assert_array_equal(p3.inverse_transform(Z), expected)
    assert p3.get_params() == tiny_prior.get_params()
    assert p3.loss_curve_ == tiny_prior.loss_curve_
    p3.partial_fit(np.zeros((8, 32, 16)))   # a loaded prior can keep training


@pytest.mark.parametrize("param, value", [("random_state", np.int64(0)),
                                          ("beta", np.float64(10.0)),
                                          ("latent_dim", np.int64(3)),
                                          ("lr", np.float32(1e-3)),
                                          ("compile", np.bool_(False)),
                                          ("image_shape", (np.int64(32), np.int64(16)))])
def test_save_numpy_scalar_parameters(tiny_images, tmp_path, param, value):
    # numpy scalars pass the parameter checks (np.arange grids, GridSearchCV's
    # best_params_ give them); the safe format stores them as plain numbers
    kw = {**TINY_PRIOR_KW, "epochs": 1, "random_state": 0, param: value}
    p = VAEPrior(**kw).fit(tiny_images[:16])
    p.save(tmp_path / "p.skv")
    q = VAEPrior.load(tmp_path / "p.skv")
    Z = np.zeros((2, p.latent_dim))
    np.testing.assert_array_equal(q.inverse_transform(Z), p.inverse_transform(Z))
    loaded = q.get_params()[param]
    assert loaded == (tuple(int(v) for v in value) if param == "image_shape" else value)


def test_save_refuses_parameters_it_cannot_store(tiny_prior, tmp_path):
    import copy
    from fractions import Fraction

    p = copy.deepcopy(tiny_prior)
    p.set_params(beta=Fraction(1, 2))   # a Real, so the parameter checks accept it
    with pytest.raises(ValueError, match=r"beta=Fraction\(1, 2\) cannot be saved"):
        p.save(tmp_path / "p.skv")
    assert not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="the folder .*nodir' does not exist"):
        tiny_prior.save(tmp_path / "nodir" / "p.skv")
    # a folder (or no name) as destination: refused up front, nothing written
    (tmp_path / "folder").mkdir()
    for dest in (tmp_path / "folder", ""):
        with pytest.raises(IsADirectoryError, match="is a folder"):
            tiny_prior.save(dest)
    assert [f.name for f in tmp_path.iterdir()] == ["folder"]


def test_failed_save_leaves_no_file(tiny_prior, tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc] . open file failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="cannot write .*p.skv.*open file failed"):
        tiny_prior.save(tmp_path / "p.skv")
    assert not list(tmp_path.iterdir())


def test_pickle_after_network_size_change(tiny_prior):
    import copy

    p = copy.deepcopy(tiny_prior)
    p.set_params(latent_dim=tiny_prior.latent_dim + 1)
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        # the fitted networks come back at their fitted size; the changed parameter
        # still asks for a refit, as on the original
        with pytest.raises(ValueError, match="changed after fit.*call fit again"):
            q.sample(2)
        q.set_params(latent_dim=tiny_prior.latent_dim)
        np.testing.assert_array_equal(q.sample(2, random_state=0),
                                      tiny_prior.sample(2, random_state=0))


def test_load_detects_changed_bytes(tiny_prior, tmp_path):
    import struct
    import zipfile

    tiny_prior.save(tmp_path / "p.skv")
    raw = bytearray((tmp_path / "p.skv").read_bytes())
    # flip one byte in the middle of the largest tensor's data: torch's reader does not
    # check the archive's CRCs, so only the file's own checksum sees it
    with zipfile.ZipFile(tmp_path / "p.skv") as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:
                                                   info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0xFF
    (tmp_path / "flipped.skv").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged prior file: its contents do not match"):
        VAEPrior.load(tmp_path / "flipped.skv")
    # without the checksum (files from before it) the change would pass unseen
    state = torch.load(tmp_path / "flipped.skv", weights_only=True)
    del state["checksum"]
    torch.save(state, tmp_path / "unchecked.skv")
    a, b = (prior_state(VAEPrior.load(tmp_path / f)) for f in ("p.skv", "unchecked.skv"))
    assert any(not torch.equal(a[net][k], b[net][k])
               for net in ("encoder", "decoder") for k in a[net])


def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        VAEPrior.load(tmp_path / "nope.skv")
    (tmp_path / "empty.skv").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty, not a prior file"):
        VAEPrior.load(tmp_path / "empty.skv")
    (tmp_path / "junk.skv").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable skvaeinv prior .*not an archive "
                                         "written by torch.save"):
        VAEPrior.load(tmp_path / "junk.skv")
    torch.save({"hello": 1}, tmp_path / "other.skv")
    with pytest.raises(ValueError, match="not a skvaeinv prior"):
        VAEPrior.load(tmp_path / "other.skv")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(tmp_path / "evil.skv", "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(ValueError):
        VAEPrior.load(tmp_path / "evil.skv")


def test_load_device_override_and_damaged_files(tiny_prior, tmp_path, monkeypatch):
    tiny_prior.save(tmp_path / "p.skv")
    with pytest.raises(ValueError, match="not a valid torch device"):
        VAEPrior.load(tmp_path / "p.skv", device="gpu-please")
    with monkeypatch.context() as m:   # a machine without a GPU, also on one with
        m.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.raises(ValueError, match="CUDA is not available"):
            VAEPrior.load(tmp_path / "p.skv", device="cuda")
        # the saved parameter names a GPU: the prior loads on the CPU, with a warning
        state = torch.load(tmp_path / "p.skv", weights_only=True)
        del state["checksum"]   # an edited file (or one from before checksums)
        state["params"]["device"] = "cuda"
        torch.save(state, tmp_path / "gpu.skv")
        with pytest.warns(RuntimeWarning, match="device='cuda' is not available") as rec:
            p = VAEPrior.load(tmp_path / "gpu.skv")
        assert Path(rec[0].filename).name == "test_prior_persistence.py"
        # the parameter stays as saved: only the networks (fitted state) are on the CPU
        assert p.device == "cuda" and p.device_.type == "cpu"
    state = torch.load(tmp_path / "p.skv", weights_only=True)
    # structural damage of files without a checksum (before it existed, or edited)
    state.pop("checksum")
    for damage in ("missing", "latent_dim", "unknown", "architecture", "density",
                   "density kind", "density shape"):
        bad = dict(state, params=dict(state["params"]))
        if damage == "missing":
            del bad["decoder"]
        elif damage == "latent_dim":
            bad["params"]["latent_dim"] = 7
        elif damage == "architecture":
            bad["architecture"] = "small"
        elif damage == "density":   # covariances that are not positive definite
            d = tiny_prior.latent_dim
            bad["latent_density"] = {"weights": torch.ones(1, dtype=torch.float64),
                                     "means": torch.zeros(1, d, dtype=torch.float64),
                                     "covariances": -torch.eye(d, dtype=torch.float64)[None]}
        elif damage == "density shape":   # a kernel density of another latent size
            d = tiny_prior.latent_dim
            bad["latent_density"] = {"covariance_type": "tied",
                                     "means": torch.zeros(3, d + 3),
                                     "covariances": torch.eye(d + 3, dtype=torch.float64)}
        elif damage == "density kind":
            d = tiny_prior.latent_dim
            bad["latent_density"] = {"covariance_type": "spherical",
                                     "means": torch.zeros(2, d), "covariances": torch.ones(2)}
        else:
            bad["params"]["no_such_parameter"] = 1
        torch.save(bad, tmp_path / "bad.skv")
        with pytest.raises(ValueError, match="damaged or incompatible prior file"):
            VAEPrior.load(tmp_path / "bad.skv")
    torch.save(dict(state, format_version="2"), tmp_path / "bad.skv")
    with pytest.raises(ValueError, match="format_version is '2', not an integer"):
        VAEPrior.load(tmp_path / "bad.skv")
    torch.save(dict(state, format_version=FORMAT_VERSION + 1), tmp_path / "new.skv")
    with pytest.raises(ValueError, match="written by a newer skvaeinv"):
        VAEPrior.load(tmp_path / "new.skv")


def test_load_keeps_the_saved_parameters(tiny_prior, tiny_images, tmp_path):
    """Loading restores fitted state beside the saved parameters; device= only chooses
    where the networks live (device_), and never rewrites the device parameter."""
    import copy

    saved = copy.deepcopy(tiny_prior).set_params(device="auto")
    saved.save(tmp_path / "p.skv")
    for device in (None, "cpu"):
        loaded = VAEPrior.load(tmp_path / "p.skv", device=device)
        assert loaded.get_params() == saved.get_params()
        assert loaded.get_params()["device"] == "auto"
        Z = np.random.default_rng(0).standard_normal((3, 4))
        np.testing.assert_array_equal(loaded.inverse_transform(Z), saved.inverse_transform(Z))
    assert loaded.device_.type == "cpu"
    loaded.partial_fit(tiny_images[:32])   # goes on training where the networks are
    assert loaded.device_.type == "cpu" and loaded.get_params() == saved.get_params()
    # saving again writes the same parameters
    loaded.save(tmp_path / "q.skv")
    assert torch.load(tmp_path / "q.skv", weights_only=True)["params"] == \
        torch.load(tmp_path / "p.skv", weights_only=True)["params"]
