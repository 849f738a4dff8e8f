import os
import subprocess
import sys

import numpy as np
import pytest

from skvaeinv import cli
from skvaeinv.prior._training import chunk_seed
from skvaeinv._files import save_prior
from skvaeinv.demo import demo_prior


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "skvaeinv", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_help_version_and_usage_errors():
    r = run("--help")
    assert r.returncode == 0 and "train-prior" in r.stdout and "invert" in r.stdout
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("skvaeinv ")
    assert run().returncode == 2
    r = run("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run("invert", "--help")
    assert r.returncode == 0 and "xs,zs,xr,zr" in r.stdout


def test_train_prior_command(tmp_path):
    from skvaeinv import VAEPrior

    image = (np.random.default_rng(0).random((80, 60)) > 0.7).astype(float)
    np.save(tmp_path / "ti.npy", image)
    out = tmp_path / "p.skv"
    r = run("train-prior", str(tmp_path / "ti.npy"), "--shape", "20", "12", "--out", str(out),
            "--rows", "0:60", "--exclude", "60,0,20,60", "--n-images", "64", "--chunk", "32",
            "--latent-dim", "3", "--base-channels", "2", "--hidden-units", "8",
            "--device", "cpu", "--precision", "float32")
    assert r.returncode == 0, r.stderr
    prior = VAEPrior.load(out)
    assert prior.image_shape_ == (20, 12) and prior.latent_dim == 3
    assert prior.n_images_seen_ == 64
    # malformed arguments: exit code 2, clear message, no file
    bad = tmp_path / "bad.skv"
    r = run("train-prior", str(tmp_path / "ti.npy"), "--out", str(bad), "--rows", "abc")
    assert r.returncode == 2 and "START:STOP" in r.stderr and not bad.exists()
    r = run("train-prior", str(tmp_path / "missing.png"), "--out", str(bad))
    assert r.returncode == 2 and "no training image" in r.stderr and not bad.exists()


@pytest.mark.parametrize("command", ["demo", "train-prior", "invert"])
@pytest.mark.parametrize("seed", ["-1", str(2**32), "x"])
def test_seed_outside_numpys_range_is_a_usage_error(command, seed, capsys):
    with pytest.raises(SystemExit) as exc:   # argparse's own usage error
        cli.main([command, "--seed", seed])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --seed: " in err
    assert ("outside [0, 2**32 - 1]" if seed != "x" else "invalid int value: 'x'") in err


def test_train_prior_options_reach_the_prior_and_the_crops(tmp_path, monkeypatch):
    import skvaeinv.datasets

    calls = []
    real = skvaeinv.datasets.extract_patches

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(skvaeinv.datasets, "extract_patches", recording)
    np.save(tmp_path / "ti.npy", (np.random.default_rng(0).random((80, 60)) > 0.7) * 1.0)
    out = tmp_path / "p.skv"
    assert cli.main(["train-prior", str(tmp_path / "ti.npy"), "--out", str(out), "--shape",
                     "20", "12", "--rows", "5:70", "--exclude", "30,10,15,20",
                     "--exclude=-5,0,10,10", "--n-images", "12", "--chunk", "6",
                     "--beta", "7.5", "--batch-size", "3", "--lr", "0.002",
                     "--latent-dim", "2", "--base-channels", "2", "--hidden-units", "4",
                     "--device", "cpu", "--precision", "float32", "--seed", "3"]) == 0
    assert [c["rows"] for c in calls] == [(5, 70)] * 2
    assert [list(map(tuple, c["exclude"])) for c in calls] == \
        [[(30, 10, 15, 20), (-5, 0, 10, 10)]] * 2
    assert [c["random_state"] for c in calls] == [chunk_seed(3, k) for k in range(2)]
    from skvaeinv import VAEPrior

    params = VAEPrior.load(out).get_params()
    assert (params["beta"], params["batch_size"], params["lr"], params["random_state"]) == \
        (7.5, 3, 0.002, 3)
    assert VAEPrior.load(out).n_batches_ == 4   # 12 crops in batches of 3


def test_train_prior_lr_final_anneals_chunk_by_chunk(tmp_path, monkeypatch, capsys):
    from skvaeinv import VAEPrior
    from skvaeinv.prior._training import cosine_lr

    rates = []
    real = VAEPrior.partial_fit

    def recording(self, X, y=None):
        rates.append(self.lr)
        return real(self, X, y)

    monkeypatch.setattr(VAEPrior, "partial_fit", recording)
    np.save(tmp_path / "ti.npy", (np.random.default_rng(0).random((80, 60)) > 0.7) * 1.0)
    args = ["train-prior", str(tmp_path / "ti.npy"), "--out", str(tmp_path / "p.skv"),
            "--shape", "20", "12", "--n-images", "12", "--chunk", "4", "--batch-size", "4",
            "--lr", "0.002", "--latent-dim", "2", "--base-channels", "2",
            "--hidden-units", "4", "--device", "cpu", "--precision", "float32"]
    assert cli.main(args + ["--lr-final", "0.0002"]) == 0
    schedule = cosine_lr(0.002, 0.0002, 0, 12)
    assert rates == [schedule(0), schedule(4), schedule(8)] and rates[0] > rates[-1]
    assert VAEPrior.load(tmp_path / "p.skv").lr == schedule(8)
    assert cli.main(args + ["--lr-final", "0.01"]) == 2   # above --lr
    assert "--lr-final 0.01" in capsys.readouterr().err


def test_large_seeds_and_saving_into_new_folders(tmp_path, tiny_prior):
    # every seed numpy takes works (seed * 1_000_003 + chunk overflowed 2**32 before)
    for seed in (0, 4295, 2**32 - 1):
        assert 0 <= chunk_seed(seed, 7) < 2**32
    assert chunk_seed(3, 2) == 3 * 1_000_003 + 2   # the committed priors' seeds
    assert chunk_seed(3, 2, stride=7919) == 3 * 7919 + 2   # the shipped demo prior's
    prior = demo_prior(True, n_images=4, seed=2**32 - 1)   # overflowed from 542,353
    assert prior.n_images_seen_ == 4
    np.save(tmp_path / "ti.npy", (np.random.default_rng(0).random((40, 30)) > 0.7) * 1.0)
    out = tmp_path / "new" / "folder" / "p.skv"
    assert cli.main(["train-prior", str(tmp_path / "ti.npy"), "--out", str(out), "--shape",
                     "20", "12", "--n-images", "8", "--chunk", "8", "--latent-dim", "2",
                     "--base-channels", "2", "--hidden-units", "4", "--device", "cpu",
                     "--seed", "4295"]) == 0
    assert out.is_file()
    # demo --save-prior saves the same way (it made no folder and raised a traceback)
    target = tmp_path / "nodir" / "prior.skv"
    save_prior(tiny_prior, target)
    Z = np.zeros((1, tiny_prior.latent_dim))
    np.testing.assert_array_equal(type(tiny_prior).load(target).inverse_transform(Z),
                                  tiny_prior.inverse_transform(Z))
    assert [p.name for p in target.parent.iterdir()] == ["prior.skv"]   # no temporary left


@pytest.fixture
def survey_files(tmp_path, tiny_prior):
    from skvaeinv.forward import StraightRay
    from skvaeinv.petrophysics import LinearVelocity
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D((32, 16), spacing=0.1)
    rays = crosshole(grid, depths=np.arange(0.15, 3.2, 0.3))
    truth = tiny_prior.sample(1, random_state=4)[0]
    tt = StraightRay(grid).traveltimes(LinearVelocity()(truth), rays)
    tiny_prior.save(tmp_path / "prior.skv")
    np.savetxt(tmp_path / "rays.csv", rays, delimiter=",", header="xs,zs,xr,zr",
               comments="")
    np.savetxt(tmp_path / "tt.csv", tt, header="traveltime_ns", comments="")
    np.save(tmp_path / "tt.npy", tt)
    return tmp_path, rays, tt


def test_invert_command(survey_files):
    d, rays, tt = survey_files
    out, fig = d / "res.npz", d / "fig.png"
    r = run("invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(out), "--figure", str(fig),
            "--starts", "3", "--epochs", "3", "--batch-size", "20", "--threshold", "100")
    assert r.returncode == 0, r.stderr
    assert "best data RMSE" in r.stdout
    res = np.load(out)
    assert res["models"].shape == (3, 32, 16) and res["predicted"].shape == tt.shape
    assert res["data_rmse"][res["best_index"]] == res["data_rmse"].min()
    assert fig.stat().st_size > 1000
    assert np.ravel(res["history_lr"])[0] == pytest.approx(1e-2)  # the straight schedule
    # .npy traveltimes work too; --schedule picks another reference schedule; bfloat16
    r = run("invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.npy"), "--out", str(d / "res2.npz"),
            "--starts", "2", "--epochs", "1", "--batch-size", "20", "--schedule", "bent-long",
            "--precision", "bfloat16")
    assert r.returncode == 0, r.stderr
    assert np.ravel(np.load(d / "res2.npz")["history_lr"])[0] == pytest.approx(0.05)



def test_invert_schedule_sets_every_setting_it_names(survey_files):
    # "bent-as-coded" (the default with --nonlinear) differs from the others in its ring
    # weight (80): the command must take it (and the batch size) from the schedule
    # unless the flag is given
    d, rays, tt = survey_files
    common = ["invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
              "--traveltimes", str(d / "tt.npy"), "--starts", "1", "--epochs", "1",
              "--n-jobs", "1"]
    assert cli.main([*common, "--out", str(d / "a.npz"), "--nonlinear",
                     "--secondary-nodes", "1"]) == 0
    res = np.load(d / "a.npz")
    assert np.ravel(res["history_lr"])[0] == pytest.approx(0.0125)
    assert np.ravel(res["history_reg_weight"])[0] == pytest.approx(80.0)
    assert len(np.ravel(res["history_lr"])) == -(-len(rays) // 25)   # its batches of 25
    assert cli.main([*common, "--out", str(d / "b.npz"), "--schedule", "bent-as-coded",
                     "--reg-weight", "3", "--batch-size", "50"]) == 0
    res = np.load(d / "b.npz")
    assert np.ravel(res["history_reg_weight"])[0] == pytest.approx(3.0)
    assert len(np.ravel(res["history_lr"])) == -(-len(rays) // 50)

def test_invert_physics_and_schedule_options(tmp_path, tiny_prior):
    # --nonlinear, --secondary-nodes, --spacing, --origin and the schedule flags reach
    # the inversion: predictions are the bent-ray times of the saved model on that grid
    from skvaeinv.forward import ShortestPath, StraightRay
    from skvaeinv.petrophysics import LinearVelocity
    from skvaeinv.survey import Grid2D, crosshole

    grid = Grid2D((32, 16), spacing=0.2, origin=(1.0, 2.0))
    rays = crosshole(grid, depths=2.0 + np.arange(0.3, 6.4, 0.6))
    bent = ShortestPath(grid, secondary_nodes=1)
    truth = tiny_prior.sample(1, random_state=4)[0]
    np.save(tmp_path / "rays.npy", rays)
    np.save(tmp_path / "tt.npy", bent.traveltimes(LinearVelocity()(truth), rays))
    tiny_prior.save(tmp_path / "prior.skv")
    out = tmp_path / "res.npz"
    assert cli.main(["invert", "--prior", str(tmp_path / "prior.skv"), "--rays",
                     str(tmp_path / "rays.npy"), "--traveltimes", str(tmp_path / "tt.npy"),
                     "--out", str(out), "--nonlinear", "--secondary-nodes", "1",
                     "--spacing", "0.2", "--origin", "1", "2", "--starts", "2",
                     "--epochs", "4", "--batch-size", "25", "--lr", "0.02",
                     "--lr-decay", "0.5", "--lr-step", "2", "--reg", "origin",
                     "--reg-weight", "5", "--reg-decay", "0.9", "--n-jobs", "1"]) == 0
    res = np.load(out)
    slowness = LinearVelocity()(res["model"].astype(np.float64))
    np.testing.assert_allclose(res["predicted"], bent.traveltimes(slowness, rays), rtol=1e-6)
    assert not np.allclose(res["predicted"], StraightRay(grid).traveltimes(slowness, rays),
                           rtol=1e-3)
    per_epoch = -(-len(rays) // 25)
    epoch = np.repeat(np.arange(4), per_epoch)
    np.testing.assert_allclose(res["history_lr"], 0.02 * 0.5 ** (epoch // 2))
    np.testing.assert_allclose(res["history_reg_weight"],
                               5.0 * 0.9 ** np.arange(4 * per_epoch), rtol=1e-6)


@pytest.mark.parametrize("content, message", [
    ("xs,zs,xr,zr\n0,0.5,1.6,0.5\n0,abc,1.6,0.7\n", "line 3"),
    ("0,0.5,1.6,0.5\n0,0.5,1.6\n", "line 2: expected 4 column"),
    ("0,0.5,1.6,0.5\n0,nan,1.6,0.5\n", "line 2: NaN"),
    ("# only a comment\n", "no data rows"),
])
def test_invert_malformed_rays(survey_files, content, message):
    d, rays, tt = survey_files
    (d / "bad.csv").write_text(content)
    out = d / "never.npz"
    r = run("invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "bad.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(out))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert not out.exists() and not list(d.glob(".never*"))


def test_invert_input_errors(survey_files):
    d, rays, tt = survey_files
    out = d / "never.npz"
    np.savetxt(d / "short.csv", tt[:-1])
    r = run("invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "short.csv"), "--out", str(out))
    assert r.returncode == 2 and "one row per ray" in r.stderr
    outside = rays.copy()
    outside[2, 2] = 99.0
    np.savetxt(d / "outside.csv", outside, delimiter=",")
    r = run("invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "outside.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(out))
    assert r.returncode == 2 and "outside" in r.stderr
    r = run("invert", "--prior", str(d / "nope.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(out))
    assert r.returncode == 2 and "--prior" in r.stderr
    assert not out.exists()


def test_demo_command_output(tmp_path):
    r = run("demo", "--starts", "2", "--epochs", "2", "--quiet", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for key in ("data RMSE", "model RMSE", "accepted starts", "time"):
        assert key in r.stdout
    assert (tmp_path / "skvaeinv_demo.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--latent-dim", "0"], "latent_dim"),
    (["--lr", "-1"], "'lr' parameter"),
    (["--shape", "2", "2"], "at least"),
    (["--device", "no-such-device"], "device"),
    (["--n-images", "0"], "--n-images 0"),
    (["--chunk", "0"], "--chunk 0"),
    (["--lr", "1e10", "--batch-size", "2"], "diverged"),
    (["--out", ""], "--out is empty"),
])
def test_train_prior_bad_parameters_are_usage_errors(tmp_path, capsys, extra, message):
    np.save(tmp_path / "ti.npy", (np.random.default_rng(0).random((40, 30)) > 0.7) * 1.0)
    out = tmp_path / "p.skv"
    args = ["train-prior", str(tmp_path / "ti.npy"), "--out", str(out), "--shape", "20",
            "12", "--n-images", "8", "--chunk", "8", "--base-channels", "2",
            "--hidden-units", "4", "--device", "cpu", *extra]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "skvaeinv train-prior: error:" in err and message in err
    assert "Traceback" not in err and not out.exists()


def _invert_args(d, out, *extra, tt="tt.csv"):
    return ["invert", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / tt), "--out", str(out), "--starts", "2", "--epochs",
            "1", "--batch-size", "20", *extra]


def test_console_warnings_are_one_line(survey_files):
    # the console script shows a warning as a message, not as the library's source line
    d, rays, tt = survey_files
    r = run(*_invert_args(d, d / "w.npz", "--threshold", "1e-9"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "warning" in ln.lower()]
    assert lines and all(ln.startswith("skvaeinv: warning: ") for ln in lines), r.stderr
    assert "the ensemble is empty. (UserWarning)" in r.stderr
    assert ".py:" not in r.stderr and "inv.fit(" not in r.stderr


def test_invert_threshold_reaches_the_result_and_figure(survey_files, capsys):
    d, rays, tt = survey_files
    out, fig = d / "res.npz", d / "fig.png"
    with pytest.warns(UserWarning, match="ensemble is empty") as record:
        assert cli.main(_invert_args(d, out, "--threshold", "1e-9", "--figure",
                                     str(fig))) == 0
    assert len([w for w in record if "ensemble is empty" in str(w.message)]) == 1   # once
    assert "accepted 0" in capsys.readouterr().out
    res = np.load(out)
    assert res["accepted"].size == 0 and np.isnan(res["ensemble_mean"]).all()
    assert fig.stat().st_size > 1000
    import stat
    umask = os.umask(0)
    os.umask(umask)
    for path in (out, fig):  # the permissions of a plain new file, not owner-only
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_invert_refuses_bad_outputs_before_running(survey_files, capsys, monkeypatch):
    d, rays, tt = survey_files
    import skvaeinv

    def never(*args, **kwargs):
        raise AssertionError("the inversion ran")
    monkeypatch.setattr(skvaeinv.LatentInverter, "fit", never)
    (d / "folder.npz").mkdir()
    rays_text = (d / "rays.csv").read_text()
    cases = [
        (_invert_args(d, d / "rays.csv"), "is an input file"),
        (_invert_args(d, d / "rays.csv" / "o.npz"), "is a file, not a folder"),
        (_invert_args(d, d / "folder.npz"), "is a folder"),
        (_invert_args(d, d / "o.npz", "--figure", str(d / "o.npz")), "also the --out"),
        (_invert_args(d, d / "o.npz", "--figure", str(d / "f.xyz")), "cannot write '.xyz'"),
        (_invert_args(d, d / "o.npz", "--spacing", "0"), "--spacing"),
        (_invert_args(d, ""), "--out is empty"),
        (_invert_args(d, d / "o.npz", "--figure", " "), "--figure is empty"),
        (_invert_args(d, d / "o.npz", "--origin", "nan", "0"), "--origin"),
    ]
    for args, message in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert (d / "rays.csv").read_text() == rays_text
    assert not (d / "o.npz").exists()


def test_invert_non_positive_traveltime_names_the_row(survey_files, capsys):
    d, rays, tt = survey_files
    bad = tt.copy()
    bad[4] = -1.0
    np.savetxt(d / "neg.csv", bad)
    assert cli.main(_invert_args(d, d / "o.npz", tt="neg.csv")) == 2
    assert "first in data row 5 (-1 ns)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "0"], "epochs must be a positive integer"),
    (["--starts", "0"], "starts must be a positive integer"),
    (["--retrain", "--n-images", "0"], "n_images must be a positive integer"),
    (["--save-prior", ""], "--save-prior is empty"),
])
def test_demo_bad_arguments(tmp_path, capsys, extra, message):
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err


def test_demo_refuses_a_file_as_output_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli.main(["demo", "--out", str(tmp_path / "file"), "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_verbose_flag_after_the_command(tmp_path):
    args = cli.build_parser().parse_args(["demo", "-v", "--out", str(tmp_path)])
    assert args.verbose == 1
    assert cli.build_parser().parse_args(["-v", "demo"]).verbose == 1


def test_sample_command(survey_files):
    d, rays, tt = survey_files
    out, fig = d / "post.npz", d / "post.png"
    np.savetxt(d / "sigma.csv", np.full(len(tt), 0.5))
    r = run("sample", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(out), "--figure", str(fig),
            "--chains", "2", "--samples", "12", "--warmup", "4", "--sigma",
            str(d / "sigma.csv"), "--noise-std", "1.0", "--level", "0.8")
    assert r.returncode == 0, r.stderr
    assert "max R-hat" in r.stdout
    res = np.load(out)
    assert res["samples"].shape == (2, 12, 4) and res["rhat"].shape == (4,)
    assert res["posterior_mean"].shape == res["credible_lower"].shape == (32, 16)
    assert np.all(res["credible_lower"] <= res["credible_upper"])
    assert res["predicted"].shape == tt.shape and "noise_std" not in res
    assert fig.stat().st_size > 1000
    # with the noise estimated, its draws are in the file
    r = run("sample", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(d / "est.npz"), "--chains", "2",
            "--samples", "5", "--warmup", "0", "--sampler", "pcn")
    assert r.returncode == 0, r.stderr
    assert np.load(d / "est.npz")["noise_std"].shape == (2, 5)
    # the Gauss-Newton metric: 2 x 4 model evaluations per chain before the first step
    r = run("sample", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
            "--traveltimes", str(d / "tt.csv"), "--out", str(d / "gn.npz"), "--chains", "2",
            "--samples", "5", "--warmup", "3", "--mass", "gauss-newton")
    assert r.returncode == 0, r.stderr
    gn = np.load(d / "gn.npz")
    assert int(gn["n_forward_evals"]) == 2 * (1 + 2 * 4 + 8)


def test_sample_bad_input_writes_nothing(survey_files):
    d, rays, tt = survey_files
    np.savetxt(d / "short.csv", np.full(3, 0.5))
    common = ["sample", "--prior", str(d / "prior.skv"), "--rays", str(d / "rays.csv"),
              "--traveltimes", str(d / "tt.csv"), "--chains", "2", "--samples", "3",
              "--warmup", "0"]
    for extra, message in [(["--noise-std", "-1"], "positive number"),
                           (["--noise-std", "loud"], "neither a number"),
                           (["--sigma", str(d / "short.csv")], "sigma has shape"),
                           (["--level", "1.5"], "--level"),
                           (["--latent-prior", "density"], "fit_latent_density")]:
        out = d / "bad.npz"
        r = run(*common, "--out", str(out), *extra)
        assert r.returncode == 2 and message in r.stderr, (extra, r.stderr)
        assert not out.exists()
