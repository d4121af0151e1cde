"""Detections as geodata: one polygon per object in the scene's CRS (or, for a GCP-only scene,
the GCPs' CRS through GDAL's GCP transformer), with its measures; written as a GeoPackage
layer or an RFC 7946 GeoJSON (EPSG:4326), a points CSV, and a quicklook PNG with the boxes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import torch
from pyproj import CRS, Geod, Transformer
from rasterio.errors import NotGeoreferencedWarning
from torchvision.utils import draw_bounding_boxes

from sarmae_cli.data import raster
from sarmae_cli.data.scaling import to_db, to_unit
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.boxes import Boxes
from sarmae_cli.infer.scene import Scene
from sarmae_cli.infer.writers import PALETTE, through_gcps
from sarmae_cli.outputs import check_extension, check_output

#: Attribute columns of a detection layer, in order (the geometry comes last).
COLUMNS = {
    "class": "object",  # class name
    "class_id": "int32",
    "score": "float32",
    "length_m": "float64",  # longer side of the box on the ground (geodesic), NaN without a CRS
    "width_m": "float64",
    "lon": "float64",  # box centre, EPSG:4326
    "lat": "float64",
    "col_min": "float32",  # the box in input pixels (x = column, y = row, corners on integers)
    "row_min": "float32",
    "col_max": "float32",
    "row_max": "float32",
}
#: The points CSV: one row per object.
POINT_COLUMNS = ["lon", "lat", "class", "score", "length_m", "width_m", "col", "row"]
LAYER = "detections"
GEOD = Geod(ellps="WGS84")


def check_detect_outputs(
    path: Any, output: Path, points: Path | None, preview: Path | None, overwrite: bool
) -> list[Path]:
    """The outputs of one scene, checked before any work: distinct, of the right kind, none over
    the input or an existing file (without `overwrite`)."""
    outputs = [Path(output), *(p for p in (points, preview) if p is not None)]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise UsageError("output paths must differ from each other")
    check_extension(output, "vector", "-o", "a GeoPackage or GeoJSON of detections")
    if points is not None:
        check_extension(points, "csv", "--points", "a CSV of detection points")
    if preview is not None:
        check_extension(preview, "png", "--preview", "a PNG quicklook")
    for p in outputs:
        check_output(p, overwrite, inputs=[path])
    return outputs


def _to_ground(scene: Scene, geoms: np.ndarray) -> tuple[list, Any]:
    """Geometries in input pixels -> (geometries in the scene's CRS, that CRS); a GCP-only scene
    through its GCPs into their CRS; a scene without georeferencing stays in pixels (CRS None)."""
    import shapely

    gcps, gcp_crs = scene.gcps
    if gcps:
        return through_gcps(list(geoms), gcps, scene.path.name, 64), gcp_crs
    if scene.crs is None:
        return list(geoms), None
    t = scene.transform

    def affine(xy: np.ndarray) -> np.ndarray:  # [N, 2] (col, row) -> [N, 2] (x, y)
        return np.column_stack(t @ (xy[:, 0], xy[:, 1]))

    return list(shapely.transform(geoms, affine)), scene.crs


def _lonlat(coords: np.ndarray, crs: Any) -> np.ndarray:
    """[N, 2] coordinates in `crs` -> [N, 2] lon/lat (NaN without a CRS or a way to EPSG:4326)."""
    if crs is None or len(coords) == 0:
        return np.full(coords.shape, np.nan)
    try:
        tr = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    except Exception:  # an engineering CRS, or one pyproj cannot relate to WGS 84
        return np.full(coords.shape, np.nan)
    lon, lat = tr.transform(coords[:, 0], coords[:, 1])
    return np.column_stack([lon, lat])


def detections_frame(scene: Scene, found: Boxes, names: list[str]) -> Any:
    """A GeoDataFrame of the detections (`found`, input pixels): columns `COLUMNS` and a box
    polygon per object in the scene's CRS."""
    import geopandas as gpd
    import shapely

    b = found.boxes.astype(np.float64)  # [M, 4]
    x0, y0, x1, y1 = b.T
    geoms, crs = _to_ground(scene, shapely.box(x0, y0, x1, y1))
    corners = np.stack([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [(x0 + x1) / 2, (y0 + y1) / 2]])  # [5, 2, M]
    pts, _ = _to_ground(scene, shapely.points(corners.transpose(0, 2, 1).reshape(-1, 2)))
    xy = shapely.get_coordinates(np.asarray(pts, dtype=object)).reshape(5, len(b), 2)  # [5, M, 2]
    ll = _lonlat(xy.reshape(-1, 2), crs).reshape(5, len(b), 2)

    def dist(i: int, j: int) -> np.ndarray:
        if len(b) == 0 or np.isnan(ll).all():
            return np.full(len(b), np.nan)
        return np.asarray(GEOD.inv(ll[i, :, 0], ll[i, :, 1], ll[j, :, 0], ll[j, :, 1])[2])

    along_cols = (dist(0, 1) + dist(3, 2)) / 2  # metres along the box's top and bottom
    along_rows = (dist(1, 2) + dist(0, 3)) / 2
    data = {
        "class": [names[i] if i < len(names) else str(i) for i in found.labels],
        "class_id": found.labels,
        "score": found.scores,
        "length_m": np.maximum(along_cols, along_rows),
        "width_m": np.minimum(along_cols, along_rows),
        "lon": ll[4, :, 0],
        "lat": ll[4, :, 1],
        "col_min": x0,
        "row_min": y0,
        "col_max": x1,
        "row_max": y1,
    }
    frame = pd.DataFrame({k: pd.Series(v, dtype=COLUMNS[k]) for k, v in data.items()})
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=crs), crs=crs)


def write_vector(gdf: Any, tmp: Path, dst: Path) -> None:
    """The detections layer to `tmp` in the format of `dst`'s name: GeoPackage (layer
    `detections`, scene CRS) or GeoJSON (RFC 7946: EPSG:4326, as the format requires). An empty
    GeoPackage layer keeps every column and the Polygon geometry type."""
    tmp.unlink(missing_ok=True)  # the drivers want to create the file themselves
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if dst.suffix.lower() == ".gpkg":
            gdf.to_file(tmp, driver="GPKG", layer=LAYER, geometry_type="Polygon")
            return
        if gdf.crs is not None:
            gdf = gdf.to_crs("EPSG:4326")
        gdf.to_file(tmp, driver="GeoJSON", geometry_type="Polygon", RFC7946="YES")


def write_points(gdf: Any, tmp: Path) -> None:
    """One CSV row per object: centre lon/lat, class, score, size in metres and centre pixel."""
    table = pd.DataFrame(
        {
            "lon": gdf["lon"],
            "lat": gdf["lat"],
            "class": gdf["class"],
            "score": gdf["score"].round(4),
            "length_m": gdf["length_m"].round(2),
            "width_m": gdf["width_m"].round(2),
            "col": ((gdf["col_min"] + gdf["col_max"]) / 2).round(2),
            "row": ((gdf["row_min"] + gdf["row_max"]) / 2).round(2),
        },
        columns=POINT_COLUMNS,
    )
    table.to_csv(tmp, index=False, float_format="%.7g")


def write_box_preview(scene: Scene, found: Boxes, dst: Path, max_side: int = 1024) -> None:
    """Quicklook PNG: the first band in grey (per-scene stretch), nodata black, each box (input
    pixels) drawn in its class colour (class 0 red)."""
    x = raster.read_decimated(scene.src, scene.indexes[:1], scene.nodata, max_side)  # [1, h, w]
    grey = to_unit(to_db(x, scene.scaling.mode), scene.ranges[:1])[0]  # [h, w] in [0, 1], NaN invalid
    h, w = grey.shape
    img = torch.from_numpy(
        np.repeat(np.nan_to_num(grey * 255)[None], 3, axis=0).astype(np.uint8)
    )  # [3, h, w]
    if len(found):
        f = np.array([w / scene.input_width, h / scene.input_height] * 2, np.float32)
        boxes = torch.from_numpy(found.boxes * f)  # [M, 4] quicklook pixels
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)  # visible when tiny
        colours = [PALETTE[(2 + int(k)) % len(PALETTE)][:3] for k in found.labels]
        img = draw_bounding_boxes(img, boxes, colors=colours, width=max(1, round(max(h, w) / 512)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(dst, "w", driver="PNG", width=w, height=h, count=3, dtype="uint8") as out:
            out.write(img.numpy())
    Path(str(dst) + ".aux.xml").unlink(missing_ok=True)
