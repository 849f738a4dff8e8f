import warnings

import numpy as np
import pytest
from PIL import Image

from skvaeinv.datasets import extract_patches, load_training_image, make_channels


def test_make_channels_shape_binary_deterministic():
    a = make_channels(20, shape=(40, 24), random_state=3)
    b = make_channels(20, shape=(40, 24), random_state=3)
    c = make_channels(20, shape=(40, 24), random_state=4)
    assert a.shape == (20, 40, 24) and a.dtype == np.float32
    assert set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("target", [0.15, 0.3, 0.45])
def test_make_channels_proportion_control(target):
    X = make_channels(200, shape=(64, 32), proportion=target, random_state=0)
    per_image = X.mean(axis=(1, 2))
    assert abs(per_image.mean() - target) < 0.03
    assert np.median(np.abs(per_image - target)) < 0.05


def test_make_channels_count_and_width():
    none = make_channels(5, shape=(30, 30), proportion=None, n_channels=0, random_state=0)
    assert none.sum() == 0
    thin = make_channels(100, shape=(64, 64), proportion=None, n_channels=2, width=2,
                         random_state=0).mean()
    thick = make_channels(100, shape=(64, 64), proportion=None, n_channels=2, width=8,
                          random_state=0).mean()
    assert thick > 2.5 * thin


def test_make_channels_orientation():
    """Horizontal channels vary along z; vertical ones along x."""
    h = make_channels(50, shape=(64, 64), sinuosity=0, orientation=0, orientation_spread=0,
                      random_state=0)
    v = make_channels(50, shape=(64, 64), sinuosity=0, orientation=90,
                      orientation_spread=0, random_state=0)
    # straight horizontal channels: every row is constant
    assert np.all(h.std(axis=2) == 0) and h.std(axis=1).mean() > 0.1
    assert np.all(v.std(axis=1) == 0) and v.std(axis=2).mean() > 0.1


def test_make_channels_fast():
    X = make_channels(500, random_state=0)
    assert X.shape == (500, 129, 65)
    assert 0.2 < X.mean() < 0.34


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_samples=0), "n_samples"),
    (dict(shape=(0, 5)), "shape"),
    (dict(proportion=1.5), "proportion"),
    (dict(proportion="0.2"), "proportion must be a number"),
    (dict(width=(5, 2)), "width"),
    (dict(sinuosity=-1), "sinuosity"),
    (dict(proportion=0.3, n_channels=2), "not both"),
    (dict(n_channels=2.5), "n_channels"),
    (dict(n_channels=(3,)), "n_channels"),
    (dict(shape=(2.7, 8)), "shape"),
    (dict(n_samples=True), "n_samples"),
    (dict(orientation=np.nan), "orientation"),
    (dict(orientation_spread=np.inf), "orientation_spread"),
    (dict(sinuosity="a"), "sinuosity"),
])
def test_make_channels_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_channels(**{"n_samples": 2, **kwargs})


def test_load_training_image_png_and_npy(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).convert("1").save(tmp_path / "b.png")
    np.save(tmp_path / "c.npy", arr / 255.0)
    np.save(tmp_path / "d.npy", arr)
    for name in ("a.png", "b.png", "c.npy", "d.npy"):
        img = load_training_image(tmp_path / name)
        assert img.shape == (20, 30) and img.dtype == np.float32
        np.testing.assert_array_equal(img, arr / 255.0)
    # colour arrays: scaled, then averaged over colours (a fractional mean is fine)
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[1:3, 1:3] = (255, 200, 0)
    np.save(tmp_path / "rgb.npy", rgb)
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[1:3, 1:3] = np.float32((255 + 200) / 255 / 3)
    np.testing.assert_allclose(load_training_image(tmp_path / "rgb.npy"), expected, rtol=1e-6)
    # 16-bit arrays scale as 16-bit pictures do
    np.save(tmp_path / "u16.npy", (arr.astype(np.uint16) // 255) * np.uint16(65535))
    Image.fromarray((arr.astype(np.uint16) // 255) * np.uint16(65535)).save(tmp_path / "u16.png")
    for name in ("u16.npy", "u16.png"):
        np.testing.assert_array_equal(load_training_image(tmp_path / name), arr / 255.0)


def test_load_training_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_training_image(tmp_path / "missing.png")
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_training_image(tmp_path / "x.png")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="plain numeric"):
        load_training_image(tmp_path / "obj.npy")
    np.save(tmp_path / "nan.npy", np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="NaN"):
        load_training_image(tmp_path / "nan.npy")
    for name, values in (("str.npy", np.full((4, 4), "1")),
                         ("date.npy", np.zeros((4, 4), dtype="datetime64[s]"))):
        np.save(tmp_path / name, values)
        with pytest.raises(ValueError, match="plain numeric .npy array: its dtype is"):
            load_training_image(tmp_path / name)


def test_load_reference_training_image(shared_data):
    ti = load_training_image(shared_data / "ti.png")
    assert ti.shape == (2500, 2500)
    assert set(np.unique(ti)) == {0.0, 1.0}
    mc2 = np.load(shared_data / "truth" / "mc2.npy")
    np.testing.assert_array_equal(ti[1502:1502 + 129, 1958:1958 + 65], mc2)


def test_extract_patches_band_and_exclusion():
    rng = np.random.default_rng(0)
    image = rng.random((200, 100))
    windows = [(50, 20, 40, 30), (120, 60, 30, 30)]
    patches, pos = extract_patches(image, (20, 10), 500, rows=(10, 190), exclude=windows,
                                   random_state=0, return_positions=True)
    assert patches.shape == (500, 20, 10)
    assert pos[:, 0].min() >= 10 and (pos[:, 0] + 20).max() <= 190
    for r, c, h, w in windows:
        overlap = ((pos[:, 0] < r + h) & (r < pos[:, 0] + 20)
                   & (pos[:, 1] < c + w) & (c < pos[:, 1] + 10))
        assert not overlap.any()
    # the crops hold the image content at their positions
    for k in range(0, 500, 97):
        r, c = pos[k]
        np.testing.assert_array_equal(patches[k], image[r:r + 20, c:c + 10].astype(np.float32))
    again = extract_patches(image, (20, 10), 500, rows=(10, 190), exclude=windows,
                            random_state=0)
    np.testing.assert_array_equal(again, patches)


def test_extract_patches_reference_setup(shared_data):
    """The benchmark's training crops never touch the truth windows nor the validation band."""
    ti = load_training_image(shared_data / "ti.png")
    windows = [(1135, 1658, 129, 65), (1502, 1958, 129, 65), (582, 503, 129, 65)]
    patches, pos = extract_patches(ti, (129, 65), 3000, rows=(0, 1900), exclude=windows,
                                   random_state=1, return_positions=True)
    assert (pos[:, 0] + 129).max() <= 1900
    for r, c, h, w in windows:
        assert not ((pos[:, 0] < r + h) & (r < pos[:, 0] + 129)
                    & (pos[:, 1] < c + w) & (c < pos[:, 1] + 65)).any()


def test_extract_patches_takes_an_array_of_windows():
    image = np.random.default_rng(0).random((200, 100))
    windows = [(10, 0, 9, 5), (50, 50, 10, 10)]
    for exclude in (windows, np.array(windows), np.array(windows[:1]), None, ()):
        crops, pos = extract_patches(image, (20, 10), 30, exclude=exclude, random_state=0,
                                     return_positions=True)
        for r, c, h, w in ([] if exclude is None else np.asarray(exclude).tolist()):
            assert not np.any((pos[:, 0] < r + h) & (pos[:, 0] + 20 > r)
                              & (pos[:, 1] < c + w) & (pos[:, 1] + 10 > c))


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch_shape=(300, 10)), "does not fit"),
    (dict(rows=(50, 40)), "rows"),
    (dict(n_patches=0), "n_patches"),
    (dict(exclude=[(0, 0, 200, 100)]), "avoids the excluded windows"),
    (dict(rows=(0, 50, 99)), "rows"),
    (dict(rows=50), "rows"),
    (dict(patch_shape=(2.5, 3)), "patch_shape"),
    (dict(max_tries=-1), "max_tries"),
    (dict(exclude=[(0, 0, -1, 5)]), "non-positive"),
    (dict(exclude=[(10.9, 0, 9.9, 5)]), r"four integers \(row, col, height, width\)"),
    (dict(exclude=[(10, 0, 9)]), "four integers"),
    (dict(exclude=[(True, 0, 9, 5)]), "four integers"),
])
def test_extract_patches_errors(kwargs, match):
    image = np.zeros((200, 100))
    args = {"patch_shape": (20, 10), "n_patches": 5, **kwargs}
    with pytest.raises(ValueError, match=match):
        extract_patches(image, args.pop("patch_shape"), args.pop("n_patches"), **args)


def test_make_channels_count_is_honoured():
    # n_channels alone selects the count mode (the default proportion no longer wins)
    one = make_channels(30, shape=(64, 64), n_channels=1, random_state=0)
    many = make_channels(30, shape=(64, 64), n_channels=8, random_state=0)
    assert one.mean() < 0.5 * many.mean()
    default = make_channels(30, shape=(64, 64), random_state=0)
    np.testing.assert_array_equal(
        default, make_channels(30, shape=(64, 64), proportion=0.27, random_state=0))


def test_make_channels_does_not_depend_on_chunking(monkeypatch):
    import skvaeinv.datasets as ds
    kw = [dict(shape=(40, 24), random_state=5),
          dict(shape=(30, 50), n_channels=(0, 3), orientation=60, random_state=6)]
    whole = [make_channels(25, **k) for k in kw]
    monkeypatch.setattr(ds, "_CHUNK_PIXELS", 3 * 40 * 24)  # chunks of 3 (or 1) images
    for k, expected in zip(kw, whole):
        np.testing.assert_array_equal(make_channels(25, **k), expected)


def test_extract_patches_finds_rare_valid_positions():
    image = np.random.default_rng(0).random((100, 80))
    # only the corners (40, 35) and (41, 35) leave a 10 x 10 crop clear of the windows
    windows = [(0, 0, 100, 35), (0, 45, 100, 35), (0, 35, 40, 10), (51, 35, 49, 10)]
    _, pos = extract_patches(image, (10, 10), 20, exclude=windows, random_state=0,
                             return_positions=True)
    assert set(map(tuple, pos.tolist())) <= {(40, 35), (41, 35)}
    # ~7 % of the corners are valid: rejection alone would leave some crops unplaced
    _, pos = extract_patches(image, (10, 10), 500, exclude=[(0, 0, 85, 80)], max_tries=3,
                             random_state=0, return_positions=True)
    assert pos[:, 0].min() >= 85 and (pos[:, 0] + 10).max() <= 100
    with pytest.raises(ValueError, match="values must lie in"):
        extract_patches(image * 255, (10, 10), 2)


def test_load_training_image_scales_by_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    binary = (rng.random((12, 9)) > 0.5)
    grey = rng.integers(0, 65536, (12, 9))
    Image.fromarray(binary.astype(np.uint8)).save(tmp_path / "01.png")       # 0/1 in 8 bits
    Image.fromarray(binary.astype(np.uint8)).convert("P").save(tmp_path / "p.png")
    Image.fromarray(grey.astype(np.uint16)).save(tmp_path / "16.png")       # 16-bit
    Image.fromarray(binary.astype(np.float32)).save(tmp_path / "f.tiff")    # float 0/1
    for name in ("01.png", "p.png", "f.tiff"):
        np.testing.assert_array_equal(load_training_image(tmp_path / name), binary)
    img16 = load_training_image(tmp_path / "16.png")
    np.testing.assert_allclose(img16, grey / 65535.0, rtol=1e-6)
    np.save(tmp_path / "two.npy", 2 * binary.astype(float) + 0.5)   # neither [0, 1] nor 0..255
    np.save(tmp_path / "c.npy", binary + 0j)
    np.save(tmp_path / "empty.npy", np.zeros((0, 5)))
    for name, match in [("two.npy", "whole numbers"), ("c.npy", "Complex"),
                        ("empty.npy", "non-empty")]:
        with pytest.raises(ValueError, match=match):
            load_training_image(tmp_path / name)
    (tmp_path / "cut.png").write_bytes((tmp_path / "16.png").read_bytes()[:60])
    with pytest.raises(ValueError, match="could not be read"):
        load_training_image(tmp_path / "cut.png")
    for bad in (np.nan, "a", 2.0):
        with pytest.raises(ValueError, match="threshold"):
            load_training_image(tmp_path / "01.png", threshold=bad)


def test_make_channels_warns_when_the_proportion_is_out_of_reach():
    # max_channels caps the count: too few channels for a large image or a high
    # target must not silently give a much lower proportion
    for kwargs in (dict(n_samples=1, shape=(600, 600)), dict(n_samples=5, proportion=0.8)):
        with pytest.warns(UserWarning, match="short of proportion=.*max_channels=24") as rec:
            images = make_channels(random_state=0, **kwargs)
        assert rec[0].filename == __file__
        assert images.mean() < kwargs.get("proportion", 0.27) - 0.02
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_channels(1, shape=(600, 600), max_channels=200, random_state=0)   # reachable
        make_channels(50, random_state=0)   # the default target on the default shape
