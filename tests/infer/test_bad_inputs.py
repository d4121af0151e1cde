"""The bad inputs of issue 32 end to end: an all-nodata scene (a valid all-nodata output and a
warning, exit 0, in every command), a colour picture given to a SAR model (one line naming what
was found and what is needed), a grey picture saved as colour (used), pixel size for `embed` and
`classify` (`--gsd`: resampled as for segment, unknown -> native with a note, beyond 20x refused)."""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarmae_cli.infer.api import Options, classify_scene, embed_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.model.checkpoint import convert_weights
from tests.infer.conftest import db_scene, write_scene

WARNING = "has no valid pixels (all nodata, NaN or masked): the outputs are all nodata"


@pytest.fixture
def empty_scene(tmp_path):
    return write_scene(tmp_path / "empty.tif", np.full((2, 40, 50), -99, np.float32), nodata=-99)


def _one_warning(stderr: str) -> None:
    lines = [line for line in stderr.splitlines() if line.startswith("Warning:")]
    assert len(lines) == 1 and WARNING in lines[0] and "Error" not in stderr, stderr


def test_all_nodata_scene_gives_nodata_outputs(invoke, weights_dir, empty_scene, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("segment", "--method", "threshold", empty_scene, "-o", out / "t.tif", "--probabilities",
               out / "tp.tif", "--vector", out / "t.gpkg", "--preview", out / "t.png", "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    _one_warning(r.stderr)
    assert '"threshold": null' in r.stdout
    with rasterio.open(out / "t.tif") as c, rasterio.open(out / "tp.tif") as p:
        assert (c.read(1) == 255).all() and c.shape == (40, 50) and np.isnan(p.read()).all()
    assert len(gpd.read_file(out / "t.gpkg")) == 0
    r = invoke("embed", "-w", weights_dir / "enc.safetensors", empty_scene, "-o", out / "e.parquet",
               "--dense", out / "d.tif")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    _one_warning(r.stderr)
    assert len(gpd.read_parquet(out / "e.parquet")) == 0
    with rasterio.open(out / "d.tif") as d:
        assert np.isnan(d.read()).all() and d.crs.to_epsg() == 32631
    r = invoke("classify", "-w", weights_dir / "cls.safetensors", empty_scene, "-o", out / "c.tif")
    assert r.exit_code == 0, r.stderr
    _one_warning(r.stderr)
    with rasterio.open(out / "c.tif") as c:
        assert (c.read(1) == 255).all()
    # a chip has no nodata form in a CSV row: it fails as an unreadable chip does
    r = invoke("classify", "-w", weights_dir / "cls.safetensors", empty_scene)
    assert r.exit_code == 1 and r.stderr.startswith("Error: ") and "has no valid pixels" in r.stderr


def test_valid_pixels_between_the_sampled_ones_are_found(weights_dir, tmp_path):
    """A large scene whose few valid pixels the decimated read misses is not taken for empty."""
    data = np.full((1, 2100, 300), np.nan, np.float32)
    data[0, 1001, 1:40] = -8.0  # one row, off the every-3rd-row sample
    data[0, 1001, 40:80] = -22.0
    src = write_scene(tmp_path / "sparse_VV.tif", data)
    models = Models("classify", weights_dir / "cls1.safetensors", device="cpu")
    r = classify_scene(src, tmp_path / "c.tif", models, Options(tile=32))
    assert not r["warnings"] and r["tiles"] - r["tiles_skipped"] == 3


def test_colour_picture_is_refused_and_grey_as_colour_is_used(invoke, weights_dir, tmp_path):
    rng = np.random.default_rng(0)
    rgb, grey = tmp_path / "rgb.png", tmp_path / "grey.png"
    colour = rng.integers(0, 255, (3, 48, 48), dtype=np.uint8)
    for path, data in ((rgb, colour), (grey, np.repeat(colour[:1], 3, axis=0))):
        with rasterio.open(path, "w", driver="PNG", width=48, height=48, count=3, dtype="uint8") as d:
            d.write(data)
    for cmd in (("segment", "-w", weights_dir / "seg1.safetensors", rgb, "-o", tmp_path / "o.tif"),
                ("segment", "--method", "threshold", rgb, "-o", tmp_path / "o.tif"),
                ("embed", "-w", weights_dir / "enc1.safetensors", rgb, "-o", tmp_path / "o.parquet"),
                ("classify", "-w", weights_dir / "cls1.safetensors", rgb)):  # fmt: skip
        r = invoke(*cmd)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"Error: {rgb}: 3 bands without polarisation names (band 1, band 2, "
                                   "band 3) for weights that take co-pol"), r.stderr  # fmt: skip
        assert "a colour picture, not a SAR product" in r.stderr
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.parquet").exists()
    r = invoke("classify", "-w", weights_dir / "cls1.safetensors", grey)
    assert r.exit_code == 0 and r.stdout.count("\n") == 2, r.stderr
    r = invoke("segment", "-w", weights_dir / "seg1.safetensors", grey, "-o", tmp_path / "g.tif")
    assert r.exit_code == 0 and "bands 1-3 hold the same values" in r.stderr, r.stderr


def test_embed_and_classify_run_at_the_weights_pixel_size(invoke, weights_dir, tmp_path):
    """A 2 m and a 10 m scene of the same ground, with weights that record 10 m: --gsd auto gives
    the same embeddings, footprints, per-tile classes and output grids; native does not."""
    enc = convert_weights(weights_dir / "enc.safetensors", tmp_path / "enc10.safetensors", gsd=10.0)
    cls = convert_weights(weights_dir / "cls.safetensors", tmp_path / "cls10.safetensors", gsd=10.0)
    assert enc.training["gsd"] == cls.training["gsd"] == 10.0
    db = db_scene(64, 64)
    coarse = write_scene(tmp_path / "coarse.tif", db)
    fine_t = from_origin(500000.0, 4_650_000.0, 2.0, 2.0)
    fine = write_scene(tmp_path / "fine.tif", np.repeat(np.repeat(db, 5, 1), 5, 2), transform=fine_t)
    emb_m = Models("embed", tmp_path / "enc10.safetensors", device="cpu")
    cls_m = Models("classify", tmp_path / "cls10.safetensors", device="cpu")
    got = {}
    for name, src in (("coarse", coarse), ("fine", fine)):
        r = embed_scene(src, tmp_path / f"{name}.parquet", emb_m, Options(), dense=tmp_path / f"{name}_d.tif")
        classify_scene(src, tmp_path / f"{name}_c.tif", cls_m, Options())
        got[name] = gpd.read_parquet(tmp_path / f"{name}.parquet")
    assert any("resampled to 10 m for the model" in n for n in r["notes"])
    a, b = got["coarse"], got["fine"]
    assert len(a) == len(b) == 4
    np.testing.assert_allclose(np.stack(a.embedding), np.stack(b.embedding), atol=1e-4)
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=1e-6).all()
    for suffix in ("_d.tif", "_c.tif"):
        with rasterio.open(tmp_path / f"coarse{suffix}") as x, rasterio.open(tmp_path / f"fine{suffix}") as y:
            assert x.shape == y.shape and x.transform.almost_equals(y.transform)
            np.testing.assert_allclose(x.read(), y.read(), atol=1e-4)
    native = embed_scene(fine, tmp_path / "n.parquet", emb_m, Options(gsd="native"))
    assert native["tiles"] == 100 and not any("resampled" in n for n in native["notes"])


def test_gsd_refusals_and_unknown_pixel_size(invoke, weights_dir, tmp_path):
    convert_weights(weights_dir / "cls.safetensors", tmp_path / "cls10.safetensors", gsd=10.0)
    fine = write_scene(tmp_path / "fine.tif", db_scene(40, 40), transform=from_origin(0.0, 0.0, 0.3, 0.3))
    for cmd in (("embed", fine, "-o", tmp_path / "e.parquet"), ("classify", fine, "-o", tmp_path / "c.tif")):
        r = invoke(*cmd, "-w", tmp_path / "cls10.safetensors")
        assert r.exit_code == 2 and "a ratio beyond 20x; give --gsd native" in r.stderr, r.stderr
        assert invoke(*cmd, "-w", tmp_path / "cls10.safetensors", "--gsd", "native", "-q").exit_code == 0
        r = invoke(*cmd, "--gsd", "fine", "-w", tmp_path / "cls10.safetensors")
        assert r.exit_code == 2 and "--gsd 'fine': give auto, native or a pixel size" in r.stderr
    chip = write_scene(tmp_path / "chip.tif", db_scene(40, 40), crs=None)
    r = invoke("classify", chip, "-o", tmp_path / "chip_c.tif", "-w", tmp_path / "cls10.safetensors")
    assert r.exit_code == 0 and "pixel size unknown (no geotransform): native resolution" in r.stderr
