"""Pixel size (`--gsd`): the scene's GSD from its geotransform, resampling to the model's GSD
before the model, outputs back on the input grid, and the refusals."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarmae_cli.data import raster
from sarmae_cli.data.geometry import parse_gsd, resolve_gsd
from sarmae_cli.data.preprocess import InputSpec, resample
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.api import Options, segment_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.resample import ToInputGrid
from sarmae_cli.model.checkpoint import convert_weights
from sarmae_cli.weights_file import parse_weights_gsd
from tests.infer.conftest import make_weights, write_scene


def test_parse_and_resolve():
    assert parse_gsd("auto") == "auto" and parse_gsd("native") == "native" and parse_gsd("2.5") == 2.5
    for bad in ("0", "-3", "ten"):
        with pytest.raises(UsageError, match="give auto, native or a pixel size in metres"):
            parse_gsd(bad)
    assert resolve_gsd((1.0, 1.0), None, "auto") == ((1.0, 1.0), "")  # weights without a size
    assert resolve_gsd((1.0, 1.0), 10.0, "native") == ((1.0, 1.0), "")
    factor, note = resolve_gsd((2.0, 2.0), 10.0, "auto")
    assert factor == pytest.approx((0.2, 0.2)) and "pixel size 2 x 2 m resampled to 10 m" in note
    assert resolve_gsd(None, 10.0, "auto")[1].startswith("pixel size unknown")
    assert resolve_gsd((10.05, 9.9), 10.0, "auto")[0] == (1.0, 1.0)  # within 2 %: native
    assert resolve_gsd((20.0, 20.0), None, 10.0)[0] == pytest.approx((2.0, 2.0))  # a target in metres
    assert resolve_gsd((9.93, 7.66), 10.0, "auto")[0] == pytest.approx((0.993, 0.766))  # degrees at 40 N
    with pytest.raises(UsageError, match="a ratio beyond 20x; give --gsd native"):
        resolve_gsd((0.3, 0.3), 10.0, "auto")


def test_pixel_size_in_metres(tmp_path):
    data = np.zeros((1, 10, 10), np.float32)
    utm = write_scene(tmp_path / "utm.tif", data)  # 10 m pixels, EPSG:32631
    assert raster.pixel_size(rasterio.open(utm)) == pytest.approx((10.0, 10.0))
    geo = write_scene(
        tmp_path / "geo.tif", data, crs="EPSG:4326", transform=from_origin(5.0, 60.0, 1.8e-4, 9e-5)
    )
    # 1.8e-4 degrees of longitude at 60 N is about 10 m; 9e-5 degrees of latitude about 10 m
    assert raster.pixel_size(rasterio.open(geo)) == pytest.approx((10.0, 10.0), rel=0.02)
    chip = write_scene(tmp_path / "chip.tif", data, crs=None)
    assert raster.pixel_size(rasterio.open(chip)) is None


def test_resample_averages_valid_pixels_and_refines_bilinearly():
    coarse = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    fine = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)  # 24 x 24, 4 x 4 blocks
    valid = np.ones((24, 24), bool)
    valid[:4, :4] = False  # one block wholly invalid
    valid[4, 4] = False  # one pixel of another: the block's mean of its valid pixels
    fine[:, 4, 4] = 0.0  # invalid pixels are 0 after the radiometric route
    x, ok = resample(fine, valid, 6, 6)
    assert not ok[0, 0] and ok[1:].all() and ok[0, 1:].all()
    np.testing.assert_allclose(x[0][ok], coarse[0][ok], rtol=1e-6)
    up, up_ok = resample(coarse, np.ones((6, 6), bool), 12, 12)
    assert up.shape == (1, 12, 12) and up_ok.all() and up.min() >= 0 and up.max() <= 35


def test_to_input_grid_streams_nearest_rows():
    class Rows:
        def __init__(self):
            self.rows = {}

        def write_rows(self, y0, values, valid):
            for i in range(values.shape[1]):
                self.rows[y0 + i] = (values[:, i].copy(), valid[i].copy())

    model = np.arange(4 * 5, dtype=np.float32).reshape(1, 4, 5)  # model grid 4 x 5
    sink = Rows()
    grid = ToInputGrid(sink, (0.5, 0.5), 8, 10)  # input grid 8 x 10, twice as fine
    for y0, y1 in ((0, 1), (1, 3), (3, 4)):  # rows arrive in bands of any size
        grid.write_rows(y0, model[:, y0:y1], np.ones((y1 - y0, 5), bool))
    out = np.stack([sink.rows[i][0] for i in range(8)], axis=1)  # [1, 8, 10]
    np.testing.assert_array_equal(out, np.repeat(np.repeat(model, 2, axis=1), 2, axis=2))


def test_a_fine_and_a_coarse_scene_of_the_same_water_give_the_same_map(tmp_path):
    """The same water body at 10 m and at 2 m (each 10 m pixel a 5 x 5 block): with weights
    trained at 10 m, --gsd auto runs both at 10 m and the maps agree up to resolution."""
    weights = make_weights(tmp_path / "w.safetensors", "segmentation", 2, ["land", "water"])
    at10 = convert_weights(weights, tmp_path / "w10.safetensors", gsd=10.0)
    assert at10.training["gsd"] == 10.0
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    water = (yy - 30) ** 2 + (xx - 34) ** 2 < 18**2
    db = np.where(water, -22.0, -9.0)[None] + rng.normal(0, 1.5, (2, 64, 64))  # [2, 64, 64]
    db = db.astype(np.float32)
    coarse = write_scene(tmp_path / "c.tif", db)  # 10 m
    at2m = from_origin(500000.0, 4_650_000.0, 2.0, 2.0)
    fine_db = np.repeat(np.repeat(db, 5, axis=1), 5, axis=2)  # each 10 m pixel a 5 x 5 block
    fine = write_scene(tmp_path / "f.tif", fine_db, transform=at2m)
    models = Models("segment", tmp_path / "w10.safetensors", device="cpu")
    opts = Options(progress=None)
    segment_scene(coarse, tmp_path / "c_out.tif", models, opts, probabilities=tmp_path / "c_p.tif")
    r_fine = segment_scene(fine, tmp_path / "f_out.tif", models, opts, probabilities=tmp_path / "f_p.tif")
    power = write_scene(tmp_path / "fp.tif", 10 ** (fine_db / 10), transform=at2m)
    segment_scene(power, tmp_path / "fp_out.tif", models, Options(input_scale="power"))
    with rasterio.open(tmp_path / "f_out.tif") as a, rasterio.open(tmp_path / "fp_out.tif") as b:
        assert (a.read(1) == b.read(1)).mean() > 0.999  # dB and power resample alike
    assert any("resampled to 10 m" in n for n in r_fine["notes"])
    with rasterio.open(tmp_path / "c_out.tif") as a, rasterio.open(tmp_path / "f_out.tif") as b:
        assert b.shape == (320, 320) and b.transform.a == 2.0  # written on the input grid
        up = np.repeat(np.repeat(a.read(1), 5, axis=0), 5, axis=1)
        agree = (up == b.read(1)).mean()
    assert agree > 0.99, agree
    with rasterio.open(tmp_path / "c_p.tif") as a, rasterio.open(tmp_path / "f_p.tif") as b:
        coarse_p, fine_p = a.read(2), b.read(2)  # P(water)
    assert coarse_p.std() > 1e-3  # the map varies: the comparison can fail
    np.testing.assert_allclose(np.repeat(np.repeat(coarse_p, 5, 0), 5, 1), fine_p, atol=1e-3)
    native = segment_scene(fine, tmp_path / "n_out.tif", models, Options(gsd="native"))
    assert not any("resampled" in n for n in native["notes"])


def test_to_input_grid_copes_with_reused_value_buffers():
    """The engine reuses the array it hands to a sink after each call (`DenseSink`): rows that
    `ToInputGrid` keeps for the next band must not change when the caller overwrites it."""

    class Rows:
        def __init__(self):
            self.rows = {}

        def write_rows(self, y0, values, valid):
            for i in range(values.shape[1]):
                self.rows[y0 + i] = values[:, i].copy()

    model = np.arange(6 * 4, dtype=np.float32).reshape(1, 6, 4)  # model grid 6 x 4
    sink = Rows()
    grid = ToInputGrid(sink, (2 / 3, 2 / 3), 9, 6)  # input grid 9 x 6, 1.5 times finer
    buf = np.empty((1, 6, 4), np.float32)  # the caller's reused buffer
    for y0, y1 in ((0, 2), (2, 5), (5, 6)):
        buf[:, : y1 - y0] = model[:, y0:y1]
        grid.write_rows(y0, buf[:, : y1 - y0], np.ones((y1 - y0, 4), bool))
        buf[:] = -1  # overwritten after the call
    out = np.stack([sink.rows[i] for i in range(9)], axis=1)  # [1, 9, 6]
    rows = np.minimum(((np.arange(9) + 0.5) * 2 / 3).astype(int), 5)
    cols = np.minimum(((np.arange(6) + 0.5) * 2 / 3).astype(int), 3)
    np.testing.assert_array_equal(out, model[:, rows][:, :, cols])


def test_a_recorded_range_resamples_only_scenes_outside_it(tmp_path):
    """Weights that record a range of pixel sizes (trained on mixed resolutions, e.g. the ship
    detector's 0.5-5 m) read a scene inside it as it is and bring one outside it to the nearer
    end; `weights convert --gsd LO:HI` records it, and bad ranges are usage errors."""
    assert parse_weights_gsd("0.5:5") == (0.5, 5.0) and parse_weights_gsd([0.5, 5]) == (0.5, 5.0)
    assert parse_weights_gsd("10") == 10.0 and parse_weights_gsd([3, 3]) == 3.0
    for bad in ("5:0.5", "0:5", "a:b", "1:2:3", "-1", [1]):
        with pytest.raises(UsageError, match="or a range LO:HI"):
            parse_weights_gsd(bad)
    rng = (0.5, 5.0)
    assert resolve_gsd((2.0, 2.0), rng, "auto")[0] == (1.0, 1.0)  # inside: native
    assert "native (the model's range is 0.5-5 m)" in resolve_gsd((2.0, 2.0), rng, "auto")[1]
    factor, note = resolve_gsd((10.0, 10.0), rng, "auto")  # Sentinel-1 GRD: up to 5 m
    assert factor == pytest.approx((2.0, 2.0)) and "resampled to 5 x 5 m" in note
    assert resolve_gsd((0.25, 0.25), rng, "auto")[0] == pytest.approx((0.5, 0.5))  # down to 0.5 m
    assert resolve_gsd((10.0, 4.0), rng, "auto")[0] == pytest.approx((2.0, 1.0))  # axis by axis
    assert resolve_gsd((10.0, 10.0), rng, 1.0)[0] == pytest.approx((10.0, 10.0))  # METRES wins
    assert resolve_gsd((10.0, 10.0), rng, "native")[0] == (1.0, 1.0)
    assert resolve_gsd(None, rng, "auto")[1].startswith("pixel size unknown")
    with pytest.raises(UsageError, match="0.5-5 m, a ratio beyond 20x"):
        resolve_gsd((200.0, 200.0), rng, "auto")
    weights = make_weights(tmp_path / "w.safetensors", "segmentation", 2, ["land", "water"])
    ranged = convert_weights(weights, tmp_path / "wr.safetensors", gsd=(0.5, 5.0))
    assert ranged.training["gsd"] == [0.5, 5.0]
    models = Models("segment", tmp_path / "wr.safetensors", device="cpu")
    assert InputSpec.from_meta(models.meta.to_dict()).gsd == (0.5, 5.0)
    db = np.random.default_rng(0).normal(-15, 3, (2, 40, 40)).astype(np.float32)
    scene = write_scene(tmp_path / "s10.tif", db)  # 10 m: resampled to 5 m, written back at 10 m
    out = segment_scene(scene, tmp_path / "s10_out.tif", models, Options(progress=None))
    assert any("resampled to 5 x 5 m" in n for n in out["notes"]), out["notes"]
    with rasterio.open(tmp_path / "s10_out.tif") as o:
        assert o.shape == (40, 40) and o.transform.a == 10.0
    at2 = write_scene(tmp_path / "s2.tif", db, transform=from_origin(500000.0, 4_650_000.0, 2.0, 2.0))
    out = segment_scene(at2, tmp_path / "s2_out.tif", models, Options(progress=None))
    assert not any("resampled" in n for n in out["notes"])
