"""`sarmae demo` end to end with tiny stand-ins for the shipped weights (in $SARMAE_WEIGHTS_DIR)."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from sarmae_cli.demo import SCENE_CRS, demo_outputs, run_demo, ship_scene, synthetic_scene
from sarmae_cli.shipped import SHIPPED
from tests.infer.conftest import flip_byte, make_shipped, make_weights


@pytest.fixture(scope="module")
def good_shipped(tmp_path_factory) -> Path:
    return make_shipped(tmp_path_factory.mktemp("shipped"))


@pytest.fixture
def shipped(good_shipped, monkeypatch) -> Path:
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(good_shipped))
    return good_shipped


def test_demo_end_to_end(invoke, shipped, tmp_path):
    outdir = tmp_path / "demo"
    r = invoke("demo", outdir, "--size", "256", "--seed", "3", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.stderr
    for path in demo_outputs(outdir).values():
        assert path.is_file(), path
    with rasterio.open(outdir / "scene.tif") as scene, rasterio.open(outdir / "water.tif") as water:
        assert scene.crs == rasterio.crs.CRS.from_string(SCENE_CRS) and scene.res == (10.0, 10.0)
        assert scene.nodata == -9999.0 and scene.descriptions == ("VV",) and scene.shape == (256, 256)
        assert water.crs == scene.crs and water.transform == scene.transform and water.shape == scene.shape
        cls = water.read(1)
    assert cog_validate(outdir / "water.tif")[0]
    with rasterio.open(outdir / "scene_truth.tif") as t:
        truth = t.read(1)
    assert ((cls == 255) == (truth == 255)).all()  # nodata where the scene has none
    gdf = gpd.read_parquet(outdir / "embeddings.parquet")
    assert gdf.crs.to_epsg() == 32631 and len(gdf) > 0
    ships = gpd.read_file(outdir / "ships.gpkg")
    with rasterio.open(outdir / "sea.tif") as sea:
        assert sea.crs == rasterio.crs.CRS.from_string(SCENE_CRS) and sea.res == (2.0, 2.0)
        assert sea.shape == (256, 256) and sea.nodata is None
    assert ships.crs.to_epsg() == 32631 and {"score", "class", "length_m", "lon", "lat"} <= set(ships.columns)
    assert len(pd.read_csv(outdir / "ships.csv")) == len(ships)
    truth = pd.read_csv(outdir / "sea_truth.csv")
    assert list(truth.columns) == ["col_min", "row_min", "col_max", "row_max"] and len(truth) >= 3
    out, d = r.stdout, outdir
    for text in (
        f"$ sarmae segment --task water {d}/scene.tif -o {d}/water.tif --preview {d}/water.png --device cpu",
        f"$ sarmae embed {d}/scene.tif -o {d}/embeddings.parquet --device cpu",
        f"$ sarmae detect --task ships {d}/sea.tif -o {d}/ships.gpkg --points {d}/ships.csv "
        f"--preview {d}/ships.png --device cpu",
        "water IoU against the synthetic truth: ",
        "physical baseline (threshold ",
        f"the baseline alone: sarmae segment --task water --method threshold {d}/scene.tif "
        f"-o {d}/water_threshold.tif",
        f"{len(truth)} ships 24-96 m long",
        "against the true boxes (IoU 0.5): recall ",
        "; ships: recall ",
    ):
        assert text in out, (text, out)
    assert "classify" not in out and "MSTAR" not in out
    # a second run refuses to overwrite, then replaces everything with --overwrite
    r = invoke("demo", outdir, "--size", "256", "-q")
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr
    r = invoke("demo", outdir, "--size", "256", "--seed", "3", "--device", "cpu", "-q", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert "--overwrite" in r.stdout


def test_demo_library_two_band_water_weights(good_shipped, tmp_path, monkeypatch):
    """Water weights for VV+VH give a two-band land scene; the 1-band encoder gets --bands 1; the
    1-band ship detector gets a one-band sea scene."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (SHIPPED["encoder"], SHIPPED["mstar"], SHIPPED["ships"]):
        (folder / name).symlink_to(good_shipped / name)
    make_weights(folder / SHIPPED["water"], "segmentation", in_chans=2, classes=["not water", "water"])
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(folder))
    seen = []
    result = run_demo(tmp_path / "d", size=256, device="cpu", report=seen.append)
    assert [s.number for s in seen] == [1, 2, 3, 4] and result.steps == seen
    assert 0.0 <= result.water_iou <= 1.0 and 0.0 <= result.ships["recall"] <= 1.0
    assert result.ships["ships"] == result.ships["true_positives"] + result.ships["missed"]
    assert result.baseline_iou > 0.9  # the threshold baseline on the synthetic scene (VV: co-pol)
    with rasterio.open(tmp_path / "d" / "scene.tif") as src:
        assert src.descriptions == ("VV", "VH")
    with rasterio.open(tmp_path / "d" / "sea.tif") as src:
        assert src.descriptions == ("VV",)
    assert "--bands" not in seen[1].command and "--bands" not in seen[3].command
    assert "--bands 1" in seen[2].command


def test_synthetic_scene_is_seeded():
    db, truth = synthetic_scene(256, seed=5)
    db2, truth2 = synthetic_scene(256, seed=5)
    assert db.shape == (1, 256, 256) and db.dtype == np.float32
    np.testing.assert_array_equal(db, db2)
    assert ((db[0] == -9999.0) == (truth == 255)).all() and (truth == 255).any()
    valid = truth != 255
    assert 0.1 < (truth[valid] == 1).mean() < 0.5 and (db[0][valid] < 10).all()


@pytest.mark.parametrize("problem", ["missing", "damaged"])
def test_demo_without_usable_weights_writes_nothing(invoke, good_shipped, tmp_path, monkeypatch, problem):
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in SHIPPED.values():
        (folder / name).write_bytes((good_shipped / name).read_bytes())
    if problem == "missing":
        (folder / SHIPPED["water"]).unlink()
    else:
        flip_byte(folder / SHIPPED["ships"])  # the header reads fine; the checksum does not match
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(folder))
    outdir = tmp_path / "demo"
    r = invoke("demo", outdir, "--size", "256", "-q")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"are {problem}: " in r.stderr and "restore them with `git checkout -- weights/`" in r.stderr
    assert not outdir.exists()


def test_demo_bad_size(invoke, shipped, tmp_path):
    r = invoke("demo", tmp_path / "d", "--size", "100")
    assert r.exit_code == 2 and "--size" in r.stderr
    assert not (tmp_path / "d").exists()


def test_ship_scene_is_seeded_with_ships_in_their_boxes():
    power, boxes = ship_scene(400, seed=2)
    power2, boxes2 = ship_scene(400, seed=2)
    np.testing.assert_array_equal(power, power2)
    np.testing.assert_array_equal(boxes, boxes2)
    assert power.shape == (1, 400, 400) and len(boxes) == 4
    sea = np.ones(power.shape[1:], bool)
    for x0, y0, x1, y1 in boxes.astype(int):
        sea[y0:y1, x0:x1] = False
    sea_db = 10 * np.log10(power[0][sea].mean())
    assert -28.5 < sea_db < -25.5
    for x0, y0, x1, y1 in boxes.astype(int):
        assert 12 <= max(x1 - x0, y1 - y0) <= 50 and min(x1 - x0, y1 - y0) >= 3
        assert 10 * np.log10(power[0, y0:y1, x0:x1].mean()) > sea_db + 15  # a bright hull in its box
        assert power[0, y0, x0:x1].max() > power[0, y0 - 1, x0:x1].max()  # the box is tight: hull on its edge
