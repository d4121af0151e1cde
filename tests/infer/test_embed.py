"""`sarmae embed`: GeoParquet tile embeddings, per-patch GeoTIFF, chips folders."""

import json

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import rasterio
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import box

from tests.infer.conftest import db_scene, write_scene


def test_geoparquet_round_trip_with_crs(invoke, weights_dir, tmp_path):
    data = db_scene(70, 100)
    data[:, :, 96:] = np.nan  # tiles of the last column hold no data: no rows
    src = write_scene(tmp_path / "s.tif", data)
    out, dense = tmp_path / "e.parquet", tmp_path / "d.tif"
    r = invoke(
        "embed", src, "-o", out, "--dense", dense, "-w", weights_dir / "enc.safetensors", "--json", "-q"
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["tiles_skipped"] == 3
    assert b"geo" in pq.read_schema(out).metadata  # GeoParquet metadata
    gdf = gpd.read_parquet(out)
    assert gdf.crs.to_epsg() == 32631 and len(gdf) == 3 * 3
    assert list(gdf.columns[:7]) == ["source", "row", "col", "x", "y", "size", "valid_fraction"]
    emb = np.stack(gdf["embedding"].to_numpy())
    assert emb.shape == (9, 48) and np.isfinite(emb).all()
    with rasterio.open(src) as s:
        t = s.transform
        first, last = gdf.iloc[0], gdf.iloc[-1]
        assert first.geometry.equals(box(*rasterio.windows.bounds(((0, 32), (0, 32)), t)))
        # tiles reaching past the scene are clipped to it
        assert last.geometry.equals(box(*rasterio.windows.bounds(((64, 70), (64, 96)), t)))
        assert last.valid_fraction == np.float32(6 * 32 / 32**2)
    assert cog_validate(dense)[0]
    with rasterio.open(dense) as d:
        assert d.count == 48 and d.shape == (5, 7)  # ceil(70/16), ceil(100/16)
        assert d.transform == t @ Affine.scale(16) and d.crs == s.crs
        f = d.read()
    assert np.isnan(f[:, :, 6:]).all() and np.isfinite(f[:, :, :6]).all()


def test_tile_embedding_is_the_model_output(weights_dir, tmp_path):
    """The engine feeds exactly the normalised tile: the stored vector equals the encoder's
    pooled output on the same window read by hand."""
    import torch

    from sarmae_cli.infer.api import Options, embed_scene
    from sarmae_cli.infer.models import Models

    src = write_scene(tmp_path / "s.tif", db_scene(64, 64))
    models = Models("embed", weights_dir / "enc.safetensors", "cpu")
    embed_scene(src, tmp_path / "e.parquet", models, Options(tile=32))
    gdf = gpd.read_parquet(tmp_path / "e.parquet")
    from sarmae_cli.infer.scene import open_scene

    with open_scene(src, models.meta) as sc:
        x, _ = sc.read(32, 0, 32, 32)
    with torch.no_grad():
        ref = models.backend(2, "pooled").encoder.pooled(torch.from_numpy(x)[None])[0].numpy()
    row = gdf[(gdf.row == 1) & (gdf.col == 0)].iloc[0]
    np.testing.assert_allclose(row.embedding, ref, atol=1e-5)


def test_chips_folder_one_row_per_file(invoke, weights_dir, data_dir, tmp_path):
    chips = sorted((data_dir / "bigearthnet_s1").glob("*/*_VV.tif"))
    assert len(chips) == 6
    folder = tmp_path / "chips"
    folder.mkdir()
    for c in chips:
        (folder / c.name).symlink_to(c)
    out = tmp_path / "c.parquet"
    r = invoke("embed", folder, "-o", out, "-w", weights_dir / "enc1.safetensors", "-q")
    assert r.exit_code == 0, r.stderr
    gdf = gpd.read_parquet(out)
    assert len(gdf) == 6 and gdf.path.tolist() == [str(folder / c.name) for c in chips]
    assert gdf.crs is not None and gdf.geometry.notna().all()
    assert np.stack(gdf.embedding.to_numpy()).shape == (6, 48)
    (folder / "zz_bad.tif").write_text("no image")  # one unreadable chip: the rest still written, exit 1
    r = invoke("embed", folder, "-o", out, "--overwrite", "-w", weights_dir / "enc1.safetensors", "-q")
    assert r.exit_code == 1 and len(gpd.read_parquet(out)) == 6, r.stderr
    assert r.stderr.splitlines()[-1].startswith("Error: 1 of 7 chip(s) failed: first: ")
    assert "Warning: skipped" in r.stderr and "zz_bad.tif" in r.stderr


def test_embed_errors(invoke, weights_dir, scene, tmp_path, monkeypatch):
    r = invoke("embed", scene, "-o", tmp_path / "d.parquet", "-w", weights_dir / "enc1.safetensors")
    assert r.exit_code == 0, r.stderr  # a dual-pol scene feeds a one-band encoder its co-pol band
    assert "bands: VV (band 1) as co-pol; VH (band 2) unused" in r.stderr
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(tmp_path))
    r = invoke("embed", scene, "-o", tmp_path / "e.parquet")
    assert r.exit_code == 1 and "sarmae_encoder.safetensors" in r.stderr and "--weights" in r.stderr
    assert not (tmp_path / "e.parquet").exists()
