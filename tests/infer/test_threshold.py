"""The physical baseline: `sarmae segment --task water --method threshold` (infer/threshold.py)."""

import json

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from sarmae_cli.data.bimodal import find_threshold, kittler_illingworth, otsu
from sarmae_cli.data.synthetic import as_mode
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.threshold import threshold_image, threshold_scene
from tests.infer.conftest import make_weights, write_scene

LAND_DB, WATER_DB = -10.0, -22.0


def speckled_db(
    h: int = 192, w: int = 256, water: bool = True, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """dB backscatter [H, W] (land -10 dB, water -22 dB, 4-look gamma speckle) and its truth."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), bool)
    if water:
        yy, xx = np.mgrid[:h, :w]
        truth = ((yy - h * 0.45) ** 2 / (h * 0.3) ** 2 + (xx - w * 0.4) ** 2 / (w * 0.25) ** 2) < 1
        truth[:, int(w * 0.8) : int(w * 0.9)] = True  # a river
    level = np.where(truth, WATER_DB, LAND_DB)
    db = level + 10 * np.log10(rng.gamma(4.0, 0.25, (h, w)))
    return db.astype(np.float32), truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_histogram_thresholds_split_two_modes():
    counts = np.zeros(256)
    counts[40:60] = 5  # dark mode
    counts[150:200] = 3  # bright, wider and larger
    assert 59 <= otsu(counts) < 150 and 59 <= kittler_illingworth(counts) < 150
    one_bin = np.zeros(256)
    one_bin[7] = 100
    assert otsu(one_bin) == 7  # a constant tile: everything in the lower class, no crash


def test_synthetic_scene_water_map_and_threshold():
    db, truth = speckled_db()
    water, t = threshold_image(db)
    assert not t.fallback and t.bimodal >= 1
    assert WATER_DB + 3 < t.value < LAND_DB - 3  # between the two levels
    assert iou(water, truth) > 0.9


def test_unimodal_scene_falls_back_with_a_warning(tmp_path):
    db, _ = speckled_db(water=False)
    assert find_threshold(db).fallback
    src = write_scene(tmp_path / "land.tif", db[None], nodata=-9999.0)
    s = threshold_scene(src, tmp_path / "w.tif", Options())
    assert s["fallback"] and s["tiles_bimodal"] == 0
    assert any("no tile of the scene is bimodal" in w for w in s["warnings"])
    db, _ = speckled_db()
    src = write_scene(tmp_path / "mixed.tif", db[None], nodata=-9999.0)
    s = threshold_scene(src, tmp_path / "w2.tif", Options())
    assert not s["fallback"] and not any("bimodal" in w for w in s["warnings"])


@pytest.mark.parametrize("mode", ["power", "amplitude"])
def test_same_map_from_db_power_and_amplitude(tmp_path, mode):
    db, truth = speckled_db(seed=1)
    db[:8, :30] = np.nan  # nodata corner
    power = np.where(np.isfinite(db), 10 ** (db / 10), np.nan)
    maps = {}
    for m in ("db", mode):
        data = as_mode(np.nan_to_num(power, nan=1e-10), m)
        data = np.where(np.isfinite(db), data, -9999.0).astype(np.float32)
        src = write_scene(tmp_path / f"s_{m}.tif", data[None], nodata=-9999.0)
        s = threshold_scene(src, tmp_path / f"w_{m}.tif", Options(input_scale=m))
        assert s["threshold_units"] == "dB"
        with rasterio.open(tmp_path / f"w_{m}.tif") as ds:
            maps[m] = ds.read(1)
    np.testing.assert_array_equal(maps["db"], maps[mode])
    assert (maps["db"][:8, :30] == 255).all()
    assert iou(maps["db"] == 1, truth & np.isfinite(db)) > 0.9


def test_streamed_windows_match_the_whole_image(tmp_path, monkeypatch):
    """Row bands with a halo give the map of the whole image at once."""
    import sarmae_cli.infer.threshold as T

    db, _ = speckled_db(200, 150, seed=2)
    whole, t = threshold_image(db)
    monkeypatch.setattr(T, "BAND_PIXELS", 150 * 16)  # 16-row bands
    src = write_scene(tmp_path / "s.tif", db[None])
    s = threshold_scene(src, tmp_path / "w.tif", Options())
    assert s["threshold"] == pytest.approx(t.value, abs=1e-4)
    with rasterio.open(tmp_path / "w.tif") as ds:
        np.testing.assert_array_equal(ds.read(1) == 1, whole)


def test_cli_threshold_outputs_and_class_tags(invoke, tmp_path):
    db, _ = speckled_db(96, 128)
    db[:6, :10] = np.nan
    src = write_scene(tmp_path / "s.tif", db[None], nodata=-9999.0)
    out, probs, png, vec = (tmp_path / n for n in ("w.tif", "p.tif", "w.png", "w.geojson"))
    r = invoke("segment", "--task", "water", "--method", "threshold", src, "-o", out,
               "--probabilities", probs, "--preview", png, "--vector", vec, "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)["results"][0]
    assert summary["method"] == "threshold" and summary["threshold_units"] == "dB"
    assert -19 < summary["threshold"] < -13 and summary["tiles_bimodal"] >= 1
    assert cog_validate(out)[0] and cog_validate(probs)[0] and png.is_file() and vec.is_file()
    with rasterio.open(out) as o, rasterio.open(probs) as p:
        cls, tags, cmap = o.read(1), o.tags(), o.colormap(1)
        assert o.dtypes[0] == "uint8" and o.nodata == 255 and o.crs.to_epsg() == 32631
        assert (cls[:6, :10] == 255).all() and set(np.unique(cls)) == {0, 1, 255}
        assert tags["METHOD"] == "threshold" and float(tags["THRESHOLD"]) == pytest.approx(
            summary["threshold"]
        )
        score = p.read()
        assert p.count == 2 and np.isnan(score[:, :6, :10]).all()
        np.testing.assert_array_equal((score[1] > 0.5)[6:], cls[6:] == 1)
    # the model path writes the same class tags and colours (weights with the same classes)
    weights = make_weights(tmp_path / "lw.safetensors", "segmentation", in_chans=1, classes=["land", "water"])
    r = invoke("segment", "-w", weights, src, "-o", tmp_path / "m.tif", "-q")
    assert r.exit_code == 0, r.stderr
    with rasterio.open(tmp_path / "m.tif") as m:
        model_tags, model_cmap = m.tags(), m.colormap(1)
    keys = ("CLASS_0", "CLASS_1", "CLASS_NAMES", "NODATA_CLASS")
    assert {k: tags[k] for k in keys} == {k: model_tags[k] for k in keys} and cmap == model_cmap


def test_cli_threshold_refuses_weights(invoke, tmp_path):
    db, _ = speckled_db(64, 64)
    src = write_scene(tmp_path / "s.tif", db[None])
    weights = tmp_path / "any.safetensors"
    weights.write_bytes(b"not read")
    r = invoke("segment", "--method", "threshold", "-w", weights, src, "-o", tmp_path / "w.tif")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--method threshold" in r.stderr
    assert not (tmp_path / "w.tif").exists()


def test_guided_threshold_keeps_water_near_the_models_water(tmp_path):
    """`threshold_scene(guide=...)` (the core of `--method hybrid`): of two dark regions only the
    one the model calls water is water; with a guide that calls nothing water there is no
    threshold and the model's (empty) map is written."""
    db, truth = speckled_db()  # a lake (left) and a river (right)
    lake = truth.copy()
    lake[:, int(256 * 0.7) :] = False
    src = write_scene(tmp_path / "s.tif", db[None], nodata=-9999.0)
    guide = write_scene(tmp_path / "g.tif", lake[None].astype(np.uint8), nodata=255)  # the lake only
    s = threshold_scene(src, tmp_path / "h.tif", Options(), guide=guide)
    assert s["method"] == "hybrid" and s["tiles_bimodal"] >= 1 and WATER_DB + 3 < s["threshold"] < LAND_DB - 3
    with rasterio.open(tmp_path / "h.tif") as o:
        water = o.read(1) == 1
        assert o.tags()["METHOD"] == "hybrid"
    assert iou(water, lake) > 0.9  # the lake, not the river 40 px away
    assert not water[:, int(256 * 0.8) : int(256 * 0.9)].any()
    threshold_scene(src, tmp_path / "h80.tif", Options(), guide=guide, near=80)  # the river is near
    with rasterio.open(tmp_path / "h80.tif") as o:
        assert iou(o.read(1) == 1, truth) > 0.9
    land = write_scene(tmp_path / "g0.tif", np.zeros((1, *db.shape), np.uint8), nodata=255)
    s = threshold_scene(src, tmp_path / "h0.tif", Options(), guide=land)
    assert s["tiles_bimodal"] == 0 and s["threshold"] is None and "the model's map" in s["notes"][-1]
    with rasterio.open(tmp_path / "h0.tif") as o:
        assert not (o.read(1) == 1).any()
    assert find_threshold(db, guide=np.zeros(db.shape, np.float32)).bimodal == 0
    assert find_threshold(db, guide=lake.astype(np.float32)).bimodal >= 1


def test_cli_hybrid_runs_the_water_weights_and_refuses_other_tasks(invoke, tmp_path):
    """`--method hybrid` with weights: the model's map guides the threshold (its notes and the
    weights in the summary); another task is a usage error before any work."""
    db, truth = speckled_db(96, 128)
    src = write_scene(tmp_path / "s.tif", db[None], nodata=-9999.0)
    weights = make_weights(tmp_path / "lw.safetensors", "segmentation", in_chans=1, classes=["land", "water"])
    r = invoke("segment", "-w", weights, "--method", "hybrid", src, "-o", tmp_path / "h.tif", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)["results"][0]
    assert summary["method"] == "hybrid" and summary["weights"].endswith("lw.safetensors")
    assert any("the model's map from lw.safetensors" in n for n in summary["notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.tif", "lw.safetensors", "s.tif"]  # no temp left
    r = invoke("segment", "--task", "mstar", "--method", "hybrid", src, "-o", tmp_path / "x.tif")
    assert (
        r.exit_code == 2
        and "--method hybrid maps water only" in r.stderr
        and not (tmp_path / "x.tif").exists()
    )
    r = invoke("segment", "--method", "nope", src, "-o", tmp_path / "x.tif")
    assert r.exit_code == 2 and "model, threshold or hybrid" in r.stderr
    crops = make_weights(
        tmp_path / "c.safetensors", "segmentation", in_chans=1, classes=["soil", "crop", "urban"]
    )
    r = invoke("segment", "-w", crops, "--method", "hybrid", src, "-o", tmp_path / "x.tif")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "classes soil, crop, urban" in r.stderr
    assert not (tmp_path / "x.tif").exists()


def test_hybrid_distance_is_one_patch_of_the_models_grid(invoke, tmp_path, monkeypatch):
    """`hybrid_scene` allows water within one encoder patch of the model's grid: 16 input pixels
    when the scene has the weights' pixel size, 160 for a 1 m scene and 10 m weights (the first
    implementation used 16 input pixels whatever the scale)."""
    from rasterio.transform import from_origin

    from sarmae_cli.infer import threshold as th
    from sarmae_cli.infer.models import Models

    weights = make_weights(tmp_path / "w.safetensors", "segmentation", in_chans=1, classes=["land", "water"])
    r = invoke("weights", "convert", weights, "--gsd", "10", "-o", tmp_path / "w10.safetensors")
    assert r.exit_code == 0, r.stderr
    seen = []
    monkeypatch.setattr(
        th, "threshold_scene", lambda *a, **k: seen.append(a[8]) or {"notes": [], "warnings": []}
    )
    models = Models("segment", tmp_path / "w10.safetensors", "cpu")
    db, _ = speckled_db(320, 320)
    for metres in (10.0, 1.0):
        src = write_scene(
            tmp_path / f"s{metres:g}.tif", db[None], transform=from_origin(600000, 5800000, metres, metres)
        )
        th.hybrid_scene(src, tmp_path / f"h{metres:g}.tif", models, Options())
    assert seen == [16, 160]
