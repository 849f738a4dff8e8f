"""Field files: .sgt and CSV reading and writing, error models, simulation."""

import logging

import numpy as np
import pytest

from skvaeinv._files import InputError
from skvaeinv.forward import StraightRay
from skvaeinv.io import (TraveltimeData, read_csv, read_sgt, read_survey, simulate,
                         write_csv, write_sgt)
from skvaeinv.survey import Grid2D, crosshole

SGT = """\
# a survey made by hand
4  # sensors
# comment line before the tokens
# z x
-1.0 0.0
-2.5 0.0
-1.25 6.5
-2.0 6.5

4 # data
# valid g s t err extra
1 3 1 9.0e-8 2.5e-10 7
1 4 1 1.0e-7 2.5e-10 7
0 3 2 1.0e-7 2.5e-10 7
1 3 2 8.5e-8 5.0e-10 7
"""


@pytest.fixture()
def sgt_file(tmp_path):
    path = tmp_path / "survey.sgt"
    path.write_text(SGT)
    return path


def test_read_sgt_any_column_order(sgt_file, caplog):
    with caplog.at_level(logging.INFO, logger="skvaeinv.io"):
        data = read_sgt(sgt_file)
    assert "dropped 1 pick(s) marked valid == 0" in caplog.text
    np.testing.assert_allclose(data.sensors, [[0, 1], [0, 2.5], [6.5, 1.25], [6.5, 2]])
    np.testing.assert_array_equal(data.source, [0, 0, 1])
    np.testing.assert_array_equal(data.receiver, [2, 3, 2])
    np.testing.assert_allclose(data.traveltimes, [90, 100, 85])
    np.testing.assert_allclose(data.errors, [0.25, 0.25, 0.5])
    np.testing.assert_allclose(data.rays[2], [0, 2.5, 6.5, 1.25])


def test_sgt_and_csv_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    sensors = np.column_stack([np.r_[np.zeros(5), np.full(5, 6.5)], rng.uniform(0, 12, 10)])
    src, rec = np.meshgrid(np.arange(5), np.arange(5, 10), indexing="ij")
    data = TraveltimeData(sensors, src.ravel(), rec.ravel(), rng.uniform(80, 200, 25),
                          rng.uniform(0.1, 1, 25))
    for unit, z_up in (("s", True), ("ns", False), ("ms", True)):
        write_sgt(tmp_path / "a.sgt", data, time_unit=unit, z_up=z_up)
        back = read_sgt(tmp_path / "a.sgt", time_unit=unit, z_up=z_up)
        for name in ("sensors", "source", "receiver", "traveltimes", "errors"):
            np.testing.assert_allclose(getattr(back, name), getattr(data, name), rtol=1e-9)
    write_csv(tmp_path / "p_sensors.csv", tmp_path / "p.csv", data)
    back = read_survey(tmp_path / "p.csv")
    np.testing.assert_allclose(back.rays, data.rays, rtol=1e-9)
    np.testing.assert_allclose(back.errors, data.errors, rtol=1e-9)
    # the depth sign: pyGIMLi's files hold negative depths
    text = (tmp_path / "a.sgt").read_text()
    assert "# x y" in text and "# s g t err valid" in text


def test_from_rays_rebuilds_the_survey():
    grid = Grid2D((20, 10), 0.5)
    rays = crosshole(grid, [1.0, 2.0, 3.0])
    data = TraveltimeData.from_rays(rays, np.full(9, 100.0))
    assert data.n_sensors == 6 and data.n_picks == 9
    np.testing.assert_array_equal(data.rays, rays)


def _write(tmp_path, text, name="bad.sgt"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, match", [
    ("2\n0 -1\n6 -1\n1\n# s g t\n1 2 1e-7\n", r"line 2: .*no token line.*'# x y'"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s t\n1 1e-7\n", r"lack 'g'"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 3 1e-7\n", r"line 7: sensor number 3 .* \(1 to 2\)"),
    ("2\n# x y\n0 -1\n6 -1\n2\n# s g t\n1 2 1e-7\n1 2 1.1e-7\n",
     r"line 8 repeats the source-receiver pair of line 7"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2 -1e-7\n", r"line 7: time .* finite and > 0"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2 nan\n", r"line 7: time nan"),
    ("2\n# x y\n0 -1\n6 -1\n2\n# s g t\n1 2 1e-7\n", r"announces 2 rows .* ends after 1"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2 abc\n", r"line 7: time 'abc' is not a number"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2\n", r"line 7: 2 values for the 3 columns"),
    ("2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 1 1e-7\n", r"same sensor \(1\)"),
    ("x\n", r"line 1: expected the number of sensor rows"),
])
def test_malformed_sgt(tmp_path, text, match):
    with pytest.raises(InputError, match=match) as err:
        read_sgt(_write(tmp_path, text))
    assert "bad.sgt" in str(err.value)


def test_wrong_time_unit_is_named(tmp_path):
    path = _write(tmp_path, "2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2 100\n")  # ns, read as s
    with pytest.raises(InputError, match=r"slower than sound .* in 'ns' they would be 6e\+07"):
        read_sgt(path)
    assert read_sgt(path, time_unit="ns").traveltimes[0] == 100.0
    path = _write(tmp_path, "2\n# x y\n0 -1\n6 -1\n1\n# s g t\n1 2 1e-7\n")  # s, read as ns
    with pytest.raises(InputError, match="faster than light"):
        read_sgt(path, time_unit="ns")


def test_malformed_csv(tmp_path):
    sensors = _write(tmp_path, "x,z\n0,1\n6,1\n", "s_sensors.csv")
    picks = _write(tmp_path, "1,2,100\n", "s.csv")
    with pytest.raises(InputError, match=r"s.csv, line 1: expected a header"):
        read_csv(sensors, picks)
    picks = _write(tmp_path, "receiver,time,source\n2,100,1\n2,90,1\n", "s.csv")
    with pytest.raises(InputError, match=r"s.csv: line 3 repeats .* line 2"):
        read_csv(sensors, picks)
    picks = _write(tmp_path, "receiver,time,source,note\n2,100,1,ok\n", "s.csv")
    assert read_survey(picks).traveltimes.tolist() == [100.0]
    with pytest.raises(InputError, match="sensor table beside it"):
        read_survey(_write(tmp_path, "source,receiver,time\n", "lonely.csv"))
    with pytest.raises(InputError, match="unknown survey format"):
        read_survey(tmp_path / "x.dat")


def test_error_model():
    data = TraveltimeData([[0, 0], [1, 0]], [0], [1], [100.0], errors=[0.3])
    assert data.sigma().tolist() == [0.3]
    assert data.sigma(absolute=0.2, relative=0.01).tolist() == [pytest.approx(1.2)]
    assert data.sigma(relative=0.01).tolist() == [pytest.approx(1.0)]
    with pytest.raises(ValueError, match="no picking errors"):
        TraveltimeData([[0, 0], [1, 0]], [0], [1], [100.0]).sigma()
    with pytest.raises(ValueError, match="sigma = 0"):
        data.sigma(absolute=0.0, relative=0.0)


def test_simulate_noise_level():
    grid = Grid2D((20, 10), 0.5)
    rays = crosshole(grid, np.arange(0.5, 9.6, 0.5))
    survey = TraveltimeData.from_rays(rays, np.ones(len(rays)))
    op = StraightRay(grid)
    s = np.full(grid.n_cells, 12.5)
    args = (op, s, survey.sensors, survey.source, survey.receiver)
    data = simulate(*args, absolute=0.3, relative=0.01, random_state=1)
    exact = op.traveltimes(s, rays)
    np.testing.assert_allclose(data.errors, 0.3 + 0.01 * exact)
    z = (data.traveltimes - exact) / data.errors
    assert abs(z.mean()) < 0.2 and 0.85 < z.std() < 1.15     # 361 standard normals
    again = simulate(*args, absolute=0.3, relative=0.01, random_state=1)
    np.testing.assert_array_equal(again.traveltimes, data.traveltimes)
    assert simulate(*args).errors is None


def test_pygimli_reads_our_file_the_same(tmp_path):
    """pyGIMLi's own reader finds the same sensors, pairs and times (where installed)."""
    tt = pytest.importorskip("pygimli.physics.traveltime")
    rng = np.random.default_rng(3)
    sensors = np.column_stack([np.r_[np.zeros(4), np.full(4, 6.5)], rng.uniform(0.2, 12, 8)])
    src, rec = np.meshgrid(np.arange(4), np.arange(4, 8), indexing="ij")
    data = TraveltimeData(sensors, src.ravel(), rec.ravel(), rng.uniform(80, 200, 16),
                          np.full(16, 0.25))
    write_sgt(tmp_path / "ours.sgt", data)
    theirs = tt.load(str(tmp_path / "ours.sgt"))
    pos = np.array(theirs.sensors())
    np.testing.assert_allclose(pos[:, 0], sensors[:, 0])
    np.testing.assert_allclose(-pos[:, 1], sensors[:, 1])      # pyGIMLi 2-D: y up
    np.testing.assert_array_equal(np.array(theirs["s"]), data.source)
    np.testing.assert_array_equal(np.array(theirs["g"]), data.receiver)
    np.testing.assert_allclose(np.array(theirs["t"]) * 1e9, data.traveltimes, rtol=1e-9)
    np.testing.assert_allclose(np.array(theirs["err"]) * 1e9, data.errors, rtol=1e-9)
    # and a file pyGIMLi writes reads back here the same
    theirs.save(str(tmp_path / "theirs.sgt"))
    back = read_sgt(tmp_path / "theirs.sgt")
    np.testing.assert_allclose(back.sensors, sensors, atol=1e-6)
    np.testing.assert_allclose(back.traveltimes, data.traveltimes, rtol=1e-6)
