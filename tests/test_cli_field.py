"""The field path of the command line: simulate -> survey file -> invert -> result folder."""

import csv
import json

import numpy as np
import pytest

from skvaeinv import cli
from skvaeinv.io import read_sgt, read_survey
from skvaeinv.workflow import RESULT_FILES

FAST = ["--starts", "3", "--epochs", "3", "--batch-size", "20"]


@pytest.fixture()
def field(tmp_path, tiny_prior):
    truth = tiny_prior.sample(1, random_state=4)[0]
    np.save(tmp_path / "truth.npy", truth)
    tiny_prior.save(tmp_path / "prior.skv")
    return tmp_path


def test_simulate_writes_a_pygimli_file(field, capsys):
    sgt = field / "s.sgt"
    assert cli.main(["simulate", str(field / "truth.npy"), "--out", str(sgt), "--depths",
                     "0.15", "3.05", "0.3", "--noise-absolute", "0.2", "--noise-relative",
                     "0.01"]) == 0
    text = sgt.read_text().splitlines()
    assert text[1] == "# x y" and float(text[2].split()[1]) < 0    # pyGIMLi: depth < 0
    data = read_sgt(sgt)
    assert data.n_sensors == 22 and data.n_picks == 121
    assert data.sensors[:, 1].min() == pytest.approx(0.15)
    # errors are the noise model's sigma = 0.2 + 0.01 t (of the exact times)
    assert np.all(np.abs(data.errors - (0.2 + 0.01 * data.traveltimes)) < 0.01 * 5 * data.errors)


def test_invert_survey_file_writes_the_result_folder(field, capsys):
    sgt = field / "s.sgt"
    cli.main(["simulate", str(field / "truth.npy"), "--out", str(sgt), "--depths", "0.15",
              "3.05", "0.3", "--noise-absolute", "0.3", "--seed", "2"])
    out = field / "res"
    assert cli.main(["invert", str(sgt), "--prior", str(field / "prior.skv"), "--out",
                     str(out), "--time-shift", *FAST]) == 0
    assert "chi2 per datum" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(RESULT_FILES)   # no leftovers
    report = json.loads((out / "report.json").read_text())
    res = np.load(out / "result.npz")
    best = int(res["best_index"])
    # chi² per datum from the arrays themselves: residuals over sigma
    chi2 = np.mean(((res["predicted"] - res["observed"]) / res["sigma"]) ** 2)
    assert report["fit"]["chi2_per_datum_best"] == pytest.approx(chi2, rel=1e-3)
    assert report["fit"]["chi2_per_datum_best"] == pytest.approx(res["chi2"][best])
    assert report["survey"] == {"n_picks": 121, "n_sensors": 22, "errors": "file",
                                "sigma_ns_median": pytest.approx(0.3)}
    assert report["command_line"].startswith("skvaeinv invert")
    assert report["accepted"]["n"] == len(res["accepted"]) >= 1
    assert "time_shift_ns_best" in report["fit"] and res["time_shift"].shape == (3,)
    # the grid is centred on the sensors (depths 0.15-2.95 m in a 3.2 m panel)
    assert report["grid"]["origin_m"] == [0.0, pytest.approx(0.05)]
    with open(out / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 32 * 16 and list(rows[0]) == ["x", "z", "facies", "velocity",
                                                      "channel_share"]
    v = np.array([float(r["velocity"]) for r in rows])
    np.testing.assert_allclose(v, (1 / res["slowness"]).ravel(), rtol=1e-5)
    assert float(rows[17]["x"]) == pytest.approx(0.15) and float(rows[17]["z"]) == \
        pytest.approx(0.2)


def test_invert_csv_survey_with_an_error_model(field, capsys):
    picks = field / "p.csv"
    cli.main(["simulate", str(field / "truth.npy"), "--out", str(picks), "--depths", "0.15",
              "3.05", "0.6"])
    assert (field / "p_sensors.csv").is_file()
    out = field / "res"
    assert cli.main(["invert", str(picks), "--prior", str(field / "prior.skv"), "--out",
                     str(out), "--error-absolute", "0.5", "--error-relative", "0.02",
                     "--chi2", "1e9", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["survey"]["errors"] == "error model 0.5 ns + 0.02 x t"
    assert report["accepted"] == {"n": 3, "of": 3, "starts": [0, 1, 2],
                                  "rule": "chi2 <= 1e+09 (given)"}
    data = read_survey(picks)
    np.testing.assert_allclose(np.load(out / "result.npz")["sigma"],
                               0.5 + 0.02 * data.traveltimes)


def test_bad_survey_file_writes_nothing(field, capsys):
    bad = field / "bad.sgt"
    bad.write_text("2\n# x y\n0 -1\n1.6 -1\n2\n# s g t\n1 2 1e-8\n1 2 1.1e-8\n")
    out = field / "res"
    assert cli.main(["invert", str(bad), "--prior", str(field / "prior.skv"), "--out",
                     str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "bad.sgt: line 8 repeats the source-receiver pair of line 7" in err
    assert not out.exists() or not any(out.iterdir())
    # sensors the prior's grid cannot cover: the extent and the fix are named
    bad.write_text("2\n# x y\n0 -1\n9 -1\n1\n# s g t\n1 2 1e-7\n")
    assert cli.main(["invert", str(bad), "--prior", str(field / "prior.skv"), "--out",
                     str(out), *FAST]) == 2
    assert "cells of at least" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    # a file where the folder should go; both kinds of input at once
    (field / "f").write_text("x")
    assert cli.main(["invert", str(bad), "--prior", str(field / "prior.skv"), "--out",
                     str(field / "f"), *FAST]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["invert", str(bad), "--rays", "r.csv", "--prior",
                     str(field / "prior.skv"), "--out", str(out)]) == 2
    assert "not both" in capsys.readouterr().err


def test_irregular_survey_through_the_files(field, capsys):
    """A deviated borehole, sensors between nodes and one at the surface, picks missing."""
    sensors = [[0.02 + 0.05 * k, 0.13 + 0.37 * k] for k in range(8)] + \
        [[1.57, 0.21 + 0.41 * k] for k in range(7)] + [[0.8, 0.0]]
    pairs = [(s, g) for s in list(range(8)) + [15] for g in range(8, 15) if (s + g) % 5]
    with open(field / "g_sensors.csv", "w") as fh:
        fh.write("x,z\n" + "".join(f"{x},{z}\n" for x, z in sensors))
    with open(field / "g.csv", "w") as fh:
        fh.write("source,receiver,time\n" + "".join(f"{s + 1},{g + 1},50\n" for s, g in pairs))
    sgt = field / "irregular.sgt"
    assert cli.main(["simulate", str(field / "truth.npy"), "--out", str(sgt), "--geometry",
                     str(field / "g.csv"), "--nonlinear", "--secondary-nodes", "2"]) == 0
    data = read_sgt(sgt)
    assert data.n_picks == len(pairs)
    np.testing.assert_allclose(data.sensors, sensors, atol=1e-9)
    out = field / "res"
    assert cli.main(["invert", str(sgt), "--prior", str(field / "prior.skv"), "--out",
                     str(out), "--nonlinear", "--secondary-nodes", "2", *FAST]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["forward"] == "ShortestPath" and report["survey"]["n_picks"] == len(pairs)
    # sample reads the same file (its errors as sigma)
    post = field / "post.npz"
    assert cli.main(["sample", str(sgt), "--prior", str(field / "prior.skv"), "--out",
                     str(post), "--chains", "2", "--samples", "8", "--warmup", "0",
                     "--noise-std", "1.0"]) == 0
    assert np.load(post)["samples"].shape == (2, 8, 4)


def test_invert_survey_inverter_accepts_what_the_rule_accepts(field, tiny_prior):
    """The inverter handed back follows the workflow's acceptance rule, so a sampler
    started from it (``LatentSampler(init=result.inverter)``) starts from accepted starts
    only, not from every start."""
    from skvaeinv.sampler import _inverter_latents
    from skvaeinv.workflow import acceptance_rule, invert_survey

    sgt = field / "s.sgt"
    cli.main(["simulate", str(field / "truth.npy"), "--out", str(sgt), "--depths", "0.15",
              "3.05", "0.3", "--noise-absolute", "0.3", "--seed", "2"])
    data = read_sgt(sgt)
    res = invert_survey(data, tiny_prior, spacing=0.1, sigma=data.sigma(),
                        n_starts=6, epochs=2, batch_size=20, random_state=0)
    inv, ens = res.inverter, res.ensemble
    rule = acceptance_rule(inv, data.n_picks)
    assert inv.acceptance_chi2 == rule["chi2"] and inv.acceptance_threshold is None
    assert 1 <= ens.n_accepted < 6           # the rule (1.1 x best chi2) rejects some
    np.testing.assert_array_equal(np.flatnonzero(inv.accepted_), ens.accepted)
    np.testing.assert_allclose(inv.ensemble_mean_, ens.mean)
    np.testing.assert_allclose(inv.channel_probability_, ens.channel_probability)
    starts = _inverter_latents(inv, 8)
    accepted = inv.latents_[ens.accepted]
    assert all(np.any(np.all(z == accepted, axis=1)) for z in starts)


def test_invert_survey_warns_once_of_an_empty_ensemble(field, capsys):
    sgt = field / "s.sgt"
    cli.main(["simulate", str(field / "truth.npy"), "--out", str(sgt), "--depths", "0.15",
              "3.05", "0.6"])
    with pytest.warns(UserWarning, match="ensemble is empty") as record:
        assert cli.main(["invert", str(sgt), "--prior", str(field / "prior.skv"), "--out",
                         str(field / "res"), "--chi2", "1e-9", *FAST]) == 0
    assert len([w for w in record if "ensemble is empty" in str(w.message)]) == 1
    assert "accepted 0" in capsys.readouterr().out
