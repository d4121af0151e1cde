"""`sarmae demo` end to end with tiny stand-ins for the shipped weights (in $SARMAE_WEIGHTS_DIR)."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from sarmae_cli.demo import SCENE_CRS, demo_outputs, run_demo, synthetic_scene
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
    out, d = r.stdout, outdir
    for text in (
        f"$ sarmae segment --task water {d}/scene.tif -o {d}/water.tif --preview {d}/water.png --device cpu",
        f"$ sarmae embed {d}/scene.tif -o {d}/embeddings.parquet --device cpu",
        f"$ sarmae classify {d}/chips/ --top-k 1 --device cpu",
        "water IoU against the synthetic truth: ",
        "physical baseline (threshold ",
        f"the baseline alone: sarmae segment --task water --method threshold {d}/scene.tif "
        f"-o {d}/water_threshold.tif",
        "MSTAR",
        "only shows the interface",
        "chip_4.tif",
    ):
        assert text in out, (text, out)
    assert out.count("top class ") == 4
    # a second run refuses to overwrite, then replaces everything with --overwrite
    r = invoke("demo", outdir, "--size", "256", "-q")
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr
    r = invoke("demo", outdir, "--size", "256", "--seed", "3", "--device", "cpu", "-q", "--overwrite")
    assert r.exit_code == 0, r.stderr
    assert "--overwrite" in r.stdout


def test_demo_library_two_band_water_weights(good_shipped, tmp_path, monkeypatch):
    """Water weights for VV+VH give a two-band scene; the 1-band encoder and classifier get --bands 1."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for name in (SHIPPED["encoder"], SHIPPED["mstar"]):
        (folder / name).symlink_to(good_shipped / name)
    make_weights(folder / SHIPPED["water"], "segmentation", in_chans=2, classes=["not water", "water"])
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(folder))
    seen = []
    result = run_demo(tmp_path / "d", size=256, device="cpu", report=seen.append)
    assert [s.number for s in seen] == [1, 2, 3, 4] and result.steps == seen
    assert 0.0 <= result.water_iou <= 1.0 and len(result.chips) == 4
    assert result.baseline_iou > 0.9  # the threshold baseline on the synthetic scene (VV: co-pol)
    with rasterio.open(tmp_path / "d" / "scene.tif") as src:
        assert src.descriptions == ("VV", "VH")
    assert "--bands" not in seen[1].command
    assert "--bands 1" in seen[2].command and "--bands 1" in seen[3].command


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
        flip_byte(folder / SHIPPED["mstar"])  # the header reads fine; the checksum does not match
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
