"""Tests of skvaeinv.demo (the ``demo`` command's options and output are in test_cli)."""

from pathlib import Path

from skvaeinv.demo import DEMO_PRIOR_FILE, run_demo
from skvaeinv.io import read_sgt


def test_demo_small_run_resembles_truth(tmp_path):
    """The demo's inversion (shipped prior, fewer starts and epochs) finds a model much
    closer to the held-out truth than the prior's mean image, and writes its figure."""
    assert DEMO_PRIOR_FILE.is_file(), "the demo prior must ship with the package"
    summary = run_demo(out_dir=tmp_path, starts=4, epochs=30, progress=False)
    assert summary["model_rmse_best"] < 0.8 * summary["model_rmse_prior_mean_image"]
    # the data are fitted about as well as the truth's own latent code fits them
    assert summary["data_rmse_best_ns"] <= 1.1 * summary["data_rmse_truth_code_ns"]
    assert Path(summary["figure"]).stat().st_size > 10_000
    # the data went through a pyGIMLi file, as a field survey would
    assert read_sgt(summary["survey_file"]).n_picks == 625


def test_demo_bent_rays_take_the_study_steps():
    """``demo --nonlinear`` inverts with shortest paths and the bent-ray schedule that
    ``skvaeinv invert --nonlinear`` uses (``"bent-as-coded"``), stretched to ``epochs``."""
    from skvaeinv.demo import _demo_inverter, _demo_survey, demo_prior
    from skvaeinv.forward import ShortestPath
    from skvaeinv.inverter import reference_schedule

    inv = _demo_inverter(demo_prior(progress=False), _demo_survey(False), nonlinear=True,
                         starts=2, epochs=7, seed=0, progress=False)
    params, coded = inv.get_params(), reference_schedule("bent-as-coded")
    assert isinstance(params["forward"], ShortestPath)
    assert params["epochs"] == 7
    for key in ("lr", "reg_weight", "lr_decay", "lr_step", "reg_decay"):
        assert params[key] == coded[key], key
