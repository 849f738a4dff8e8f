import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from skvaeinv import plotting  # noqa: E402
from skvaeinv.engine import SGDHistory  # noqa: E402
from skvaeinv.survey import Grid2D, crosshole  # noqa: E402


def _saved(fig, path):
    fig.savefig(path, dpi=50)
    plt.close(fig)
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 5, "the figure is blank"
    return img


def test_plot_survey(tmp_path):
    grid = Grid2D((20, 10), spacing=0.5)
    rays = crosshole(grid, depths=np.arange(1, 10, 2.0))
    fig = plotting.plot_survey(grid, rays, model=np.random.default_rng(0).random((20, 10)))
    ax = fig.axes[0]
    assert len(ax.lines) == len(rays) + 2          # rays, sources, receivers
    # the model lies under the survey in metres, depth downwards: extent x0, x1, z1, z0
    assert list(ax.images[0].get_extent()) == [0.0, 5.0, 10.0, 0.0]
    assert ax.get_ylim()[0] > ax.get_ylim()[1]     # depth grows downwards
    _saved(fig, tmp_path / "survey.png")
    # max_rays caps the ray lines, spread over the survey (first and last included)
    for max_rays in (1, 3, 7, 24, 25, 100):
        ax = plotting.plot_survey(grid, rays, max_rays=max_rays).axes[0]
        lines = ax.lines[:-2]
        assert len(lines) == min(max_rays, len(rays))
        if max_rays > 1:
            np.testing.assert_array_equal(lines[-1].get_xydata().ravel(),
                                          rays[-1])
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="n_rays, 4"):
        plotting.plot_survey(grid, np.zeros((3, 3)))


def test_plot_models(tmp_path):
    models = np.random.default_rng(0).random((5, 20, 10))
    fig = plotting.plot_models(models, titles=list("abcde"), ncols=3)
    assert len(fig.axes) == 6 and fig.axes[4].get_title() == "e"
    _saved(fig, tmp_path / "models.png")
    fig = plotting.plot_models(models, titles=np.array(list("abcde")))   # any sequence
    assert [ax.get_title() for ax in fig.axes[:5]] == list("abcde")
    plt.close(fig)
    with pytest.raises(ValueError, match="n, H, W"):
        plotting.plot_models(np.zeros((2, 3, 4, 5)))


def test_plot_history(tmp_path):
    n_it = 50
    rmse = np.exp(-np.linspace(0, 3, n_it))[None] * np.array([[1.0], [2.0], [3.0]])
    h = SGDHistory(data_rmse=rmse, batch_rmse=rmse, z_norm=np.ones((3, n_it)) * 4.4,
                   cost=rmse**2, lr=0.01 * 0.95 ** np.arange(n_it),
                   reg_weight=10 * 0.99 ** np.arange(n_it), epoch=np.arange(n_it))
    fig = plotting.plot_history(h, threshold=0.5)
    assert len(fig.axes) == 4
    assert len(fig.axes[0].lines) == 4               # 3 starts + threshold
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(), h.lr)
    _saved(fig, tmp_path / "history.png")
    fig = plotting.plot_history(h, starts=1)   # one start, as an int
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), rmse[1])
    assert len(fig.axes[0].lines) == 1
    plt.close(fig)
    with pytest.raises(TypeError, match="history_"):
        plotting.plot_history(object())


def test_plot_ensemble_and_inversion(tmp_path, tiny_prior):
    from skvaeinv import LatentInverter
    from skvaeinv.forward import StraightRay
    from skvaeinv.petrophysics import LinearVelocity

    grid = Grid2D((32, 16), spacing=0.1)
    rays = crosshole(grid, depths=np.arange(0.15, 3.2, 0.3))
    truth = tiny_prior.sample(1, random_state=3)[0]
    y = StraightRay(grid).traveltimes(LinearVelocity()(truth), rays)
    inv = LatentInverter(tiny_prior, StraightRay(grid), n_starts=3, epochs=3, batch_size=20,
                         device="cpu", random_state=0).fit(rays, y)
    ens = inv.ensemble(np.inf)
    fig = plotting.plot_ensemble(ens, grid=grid, truth=truth)
    assert [ax.get_title() for ax in fig.axes[:4:1] if ax.get_title()][0] == "truth"
    _saved(fig, tmp_path / "ensemble.png")
    # a fitted inverter stands for its ensemble at its own threshold; each panel shows
    # its own array, upright on the grid
    fig = plotting.plot_ensemble(inv, grid=grid)
    panels = [ax for ax in fig.axes if ax.images]
    for ax, expected in zip(panels, (inv.ensemble_mean_, inv.channel_probability_,
                                     inv.ensemble_std_)):
        np.testing.assert_array_equal(ax.images[0].get_array(), expected)
        assert list(ax.images[0].get_extent()) == [0.0, 1.6, 3.2, 0.0]
    assert len(panels) == 3
    plt.close(fig)
    fig = plotting.plot_inversion(inv, truth=truth, threshold=np.inf)
    titles = [ax.get_title() for ax in fig.axes]
    assert "truth" in titles and any(t.startswith("best model") for t in titles)
    _saved(fig, tmp_path / "inversion.png")
    with pytest.raises(ValueError, match="fitted"):
        plotting.plot_inversion(LatentInverter(tiny_prior, StraightRay(grid)))
    # a grid the models are not of is refused, not drawn over the wrong extent
    with pytest.raises(ValueError, match=r"the inverter's models have shape .* grid has "
                                         r"\(5, 5\) cells .* pass the grid of its forward"):
        plotting.plot_inversion(inv, grid=Grid2D((5, 5), 0.1))
    # the ensemble panel follows the inverter's own acceptance threshold by default
    strict = LatentInverter(tiny_prior, StraightRay(grid), n_starts=3, epochs=1,
                            batch_size=20, device="cpu", random_state=0,
                            acceptance_threshold=1e-12)
    with pytest.warns(UserWarning, match="ensemble is empty"):
        strict.fit(rays, y)
    with pytest.warns(UserWarning, match="ensemble is empty"):
        fig = plotting.plot_inversion(strict)
    assert any("0/3 accepted" in ax.get_title() for ax in fig.axes)
    plt.close(fig)


def test_plotting_bad_input():
    from sklearn.exceptions import NotFittedError

    from skvaeinv import LatentInverter

    grid = Grid2D((20, 10), spacing=0.5)
    rays = crosshole(grid, depths=np.arange(1, 10, 2.0))
    h = SGDHistory(data_rmse=np.ones((2, 5)), batch_rmse=np.ones((2, 5)),
                   z_norm=np.ones((2, 5)), cost=np.ones((2, 5)), lr=np.ones(5),
                   reg_weight=np.ones(5), epoch=np.arange(5))
    _, two = plt.subplots(1, 2)
    cases = [
        (lambda: plotting.plot_models(np.zeros((0, 5, 5))), ValueError, "non-empty"),
        (lambda: plotting.plot_models(np.zeros((3, 5, 5)), titles=["a"]), ValueError,
         "1 entries for 3"),
        (lambda: plotting.plot_models(np.zeros((3, 5, 5)), grid=grid), ValueError,
         "the grid has"),
        (lambda: plotting.plot_survey(grid, rays, max_rays=0), ValueError, "max_rays"),
        (lambda: plotting.plot_survey(None, rays), TypeError, "Grid2D"),
        (lambda: plotting.plot_survey(grid, rays, model=np.zeros((5, 5))), ValueError,
         "the grid has"),
        (lambda: plotting.plot_history(h, axes=two), ValueError, "needs 4 axes"),
        (lambda: plotting.plot_history(h, starts=[10]), ValueError, "outside"),
        (lambda: plotting.plot_history(LatentInverter()), NotFittedError, "not fitted"),
        (lambda: plotting.plot_ensemble(LatentInverter()), NotFittedError, "not fitted"),
        (lambda: plotting.plot_ensemble(h), TypeError, "LatentInverter.ensemble"),
        (lambda: plotting.plot_models(np.zeros((3, 5, 5)), ncols=0), ValueError, "ncols"),
        (lambda: plotting.plot_models(np.zeros((3, 5, 5)), ncols=2.5), ValueError, "ncols"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    plt.close("all")
