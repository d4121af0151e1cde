"""Scenes georeferenced only by GCPs (Sentinel-1 GRD measurement TIFFs, many L1 products):
raster outputs carry the same GCPs (pixel/line scaled for coarser grids) and GCP CRS, vector
outputs and footprints are mapped through the GCPs into their CRS, and the warning says so."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import Polygon

from sarmae_cli.data import raster
from sarmae_cli.errors import SarmaeError
from sarmae_cli.infer.api import Options, embed_scene
from sarmae_cli.infer.models import Models
from tests.infer.conftest import db_scene, write_scene

H, W = 70, 100
#: The ground position of pixel corner (col, row): a rotated, sheared lon/lat grid, like a
#: descending Sentinel-1 GRD scene. The GCPs below lie on it exactly, so GDAL's first-order
#: GCP polynomial reproduces it.
GROUND = Affine(0.01, -0.002, 10.0, 0.001, -0.01, 45.4)
GCP_PIXELS = [(0, 0), (0, W), (H, 0), (H, W), (H / 2, W / 2)]  # (row, col)


def _gcps() -> list[GroundControlPoint]:
    return [GroundControlPoint(r, c, *(GROUND @ (c, r))) for r, c in GCP_PIXELS]


def write_gcp_scene(path, data, gcps=None):
    """A GeoTIFF georeferenced only by GCPs in EPSG:4326 (no geotransform, no CRS)."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name)
    with rasterio.open(path, "w", **profile, gcps=gcps or _gcps(), crs=CRS.from_epsg(4326)) as dst:
        dst.write(data)
        dst.descriptions = ("VV", "VH")
    return path


def _points(gcps) -> list[tuple[float, float, float, float]]:
    return [(g.row, g.col, g.x, g.y) for g in gcps]


def _assert_gcps(path, scale: float = 1) -> None:
    """`path` carries the scene's GCPs (pixel/line divided by `scale`) in EPSG:4326 and no
    geotransform."""
    with rasterio.open(path) as o:
        gcps, crs = o.gcps
        assert crs == CRS.from_epsg(4326) and o.crs is None and o.transform.is_identity
    want = [(r / scale, c / scale, x, y) for r, c, x, y in _points(_gcps())]
    np.testing.assert_allclose(_points(gcps), want, rtol=0, atol=1e-9)


def _ground_polygon(col0, row0, col1, row1) -> Polygon:
    return Polygon([GROUND @ xy for xy in ((col0, row0), (col1, row0), (col1, row1), (col0, row1))])


def _lonlat_extent():
    xs, ys = zip(*(GROUND @ (c, r) for r, c in GCP_PIXELS), strict=True)
    return min(xs), min(ys), max(xs), max(ys)


def test_read_gcps_only_for_gcp_scenes(tmp_path):
    with rasterio.open(write_gcp_scene(tmp_path / "g.tif", db_scene(H, W))) as src:
        gcps, crs = raster.read_gcps(src)
        assert _points(gcps) == _points(_gcps()) and crs.to_epsg() == 4326
        assert _points(raster.scale_gcps(gcps, 16))[1] == (0.0, W / 16, *(GROUND @ (W, 0)))
    with rasterio.open(write_scene(tmp_path / "a.tif", db_scene(H, W))) as src:
        assert raster.read_gcps(src) == ([], None)


def test_segment_carries_gcps_and_maps_polygons(invoke, weights_dir, tmp_path):
    data = db_scene(H, W)
    data[:, :10, :20] = np.nan
    src = write_gcp_scene(tmp_path / "g.tif", data)
    out, probs, vec = tmp_path / "w.tif", tmp_path / "p.tif", tmp_path / "w.gpkg"
    r = invoke(
        "segment", src, "-o", out, "--probabilities", probs, "--vector", vec,
        "-w", weights_dir / "seg.safetensors", "-q", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    msg = "g.tif is georeferenced by 5 GCPs (EPSG:4326), not a geotransform: outputs carry the same GCPs"
    assert f"Warning: {msg}" in r.stderr and "has no CRS" not in r.stderr
    assert json.loads(r.stdout)["results"][0]["warnings"][0].startswith(msg)
    for p in (out, probs):
        assert cog_validate(p)[0]
        _assert_gcps(p)
    with rasterio.open(out) as o:
        assert o.shape == (H, W) and o.read(1)[0, 0] == 255
    # the same pixels on an equivalent geotransform give the same polygons, to rounding
    ref = write_scene(tmp_path / "a.tif", data, crs="EPSG:4326", transform=GROUND)
    ref_vec = tmp_path / "a.gpkg"
    r = invoke(
        "segment", ref, "-o", tmp_path / "a_w.tif", "--vector", ref_vec, "-w", weights_dir / "seg.safetensors"
    )
    assert r.exit_code == 0, r.stderr
    got, want = gpd.read_file(vec), gpd.read_file(ref_vec)
    assert got.crs.to_epsg() == 4326 and len(got) == len(want) > 1
    assert got["class"].tolist() == want["class"].tolist()
    for a, b in zip(got.geometry, want.geometry, strict=True):
        assert a.is_valid and a.symmetric_difference(b).area < 1e-12 * b.area + 1e-15
    west, south, east, north = _lonlat_extent()
    gw, gs, ge, gn = got.total_bounds
    assert west - 1e-9 <= gw and gs >= south - 1e-9 and ge <= east + 1e-9 and gn <= north + 1e-9


def test_embed_footprints_through_gcps(invoke, weights_dir, tmp_path):
    src = write_gcp_scene(tmp_path / "g.tif", db_scene(H, W))
    out, dense = tmp_path / "e.parquet", tmp_path / "d.tif"
    r = invoke("embed", src, "-o", out, "--dense", dense, "-w", weights_dir / "enc.safetensors", "-q")
    assert r.exit_code == 0, r.stderr
    assert "Warning: g.tif is georeferenced by 5 GCPs (EPSG:4326)" in r.stderr
    gdf = gpd.read_parquet(out)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 3 * 4
    west, south, east, north = _lonlat_extent()
    for t in gdf.itertuples():
        assert t.geometry.geom_type == "Polygon" and t.geometry.is_valid
        want = _ground_polygon(t.x, t.y, min(t.x + t.size, W), min(t.y + t.size, H))
        assert t.geometry.symmetric_difference(want).area < 1e-12
        gw, gs, ge, gn = t.geometry.bounds
        assert west - 1e-9 <= gw and gs >= south - 1e-9 and ge <= east + 1e-9 and gn <= north + 1e-9
    assert cog_validate(dense)[0]
    with rasterio.open(dense) as d:
        assert d.count == 48 and d.shape == (5, 7)  # ceil(70/16), ceil(100/16)
    _assert_gcps(dense, scale=16)


def test_classify_scene_carries_scaled_gcps(invoke, weights_dir, tmp_path):
    src = write_gcp_scene(tmp_path / "g.tif", db_scene(H, W))
    out = tmp_path / "c.tif"
    r = invoke("classify", src, "-o", out, "-w", weights_dir / "cls.safetensors", "-q")
    assert r.exit_code == 0, r.stderr
    with rasterio.open(out) as o:
        assert o.shape == (3, 4)  # 32-px tiles, no overlap
    _assert_gcps(out, scale=32)


def test_too_few_gcps_for_footprints(weights_dir, tmp_path):
    src = write_gcp_scene(tmp_path / "g2.tif", db_scene(H, W), gcps=_gcps()[:2])
    models = Models("embed", weights_dir / "enc.safetensors", "cpu")
    with pytest.raises(SarmaeError, match="through its 2 GCPs .*warp the scene first with gdalwarp"):
        embed_scene(src, tmp_path / "e.parquet", models, Options())
    assert not (tmp_path / "e.parquet").exists()
