"""Class-map outputs of `segment` (model or threshold method): the class-map COG, the
optional probabilities (or scores) COG, class polygons (GeoPackage / GeoJSON) and the
quicklook PNG, each written atomically."""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import shapes

from sarmae_cli.data import raster
from sarmae_cli.data.scaling import to_db, to_unit
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.scene import Scene
from sarmae_cli.infer.writers import (
    CLASS_NODATA,
    PALETTE,
    CogSink,
    RasterSpec,
    Tee,
    encode_classes,
    encode_float,
    temp_beside,
    through_gcps,
)
from sarmae_cli.outputs import atomic_output, check_extension, check_output

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


def check_class_outputs(
    path: Any,
    output: Path,
    probabilities: Path | None,
    vector: Path | None,
    preview: Path | None,
    overwrite: bool,
) -> list[Path]:
    """The outputs of one segmented scene, checked before any work: distinct, none over the
    input `path` or an existing file (without `overwrite`), polygons in a vector format."""
    outputs = [Path(output), *(p for p in (probabilities, vector, preview) if p is not None)]
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise UsageError("output paths must differ from each other")
    for p in outputs:
        check_output(p, overwrite, inputs=[path])
    if vector is not None:
        check_extension(vector, "vector", "--vector", "a GeoPackage or GeoJSON of class polygons")
    return outputs


def class_tags(names: list[str], **extra: str) -> dict[str, str]:
    """GeoTIFF tags of a class map: each class's name, the list, the nodata class, and `extra`
    (the weights or the method)."""
    tags = {f"CLASS_{i}": n for i, n in enumerate(names)}
    tags.update({"CLASS_NAMES": json.dumps(names), "NODATA_CLASS": str(CLASS_NODATA)})
    return {**tags, **extra}


@dataclass
class ClassOutputs:
    """Where a class map goes, with its optional probabilities (or scores), polygons, quicklook."""

    output: Path
    spec: RasterSpec
    probabilities: Path | None = None
    prob_spec: RasterSpec | None = None
    vector: Path | None = None
    preview: Path | None = None


def write_class_outputs(
    scene: Scene, to: ClassOutputs, names: list[str], opts: Any, stack: contextlib.ExitStack, run: Any
) -> Any:
    """Stream `run(sink)` (rows of class probabilities or scores) into the class-map COG and the
    optional probabilities COG, then write polygons and the quicklook from the class map; every
    file atomic (nothing at a destination if anything fails). `opts`: the inference options
    (`overwrite`, creation options `co`). Returns what `run` returns."""
    tmp_out = stack.enter_context(atomic_output(to.output, opts.overwrite))
    sinks = [CogSink(stack.enter_context(temp_beside(to.output)), to.spec, encode_classes, opts.co)]
    if to.probabilities is not None and to.prob_spec is not None:
        tmp_prob = stack.enter_context(atomic_output(to.probabilities, opts.overwrite))
        sinks.append(
            CogSink(stack.enter_context(temp_beside(to.probabilities)), to.prob_spec, encode_float, opts.co)
        )
    try:
        result = run(Tee(*sinks))
    except BaseException:
        for s in sinks:
            s.abort()
        raise
    sinks[0].finish(tmp_out)
    if len(sinks) > 1:
        sinks[1].finish(tmp_prob)
    if to.vector is not None:
        tmp_vec = stack.enter_context(atomic_output(to.vector, opts.overwrite))
        write_polygons(tmp_out, tmp_vec, VECTOR_DRIVERS[to.vector.suffix.lower()], names)
    if to.preview is not None:
        write_preview(scene, tmp_out, stack.enter_context(atomic_output(to.preview, opts.overwrite)))
    return result


def write_polygons(class_map: Path, dst: Path, driver: str, names: list[str]) -> int:
    """Polygons of every class of a class map (in its CRS; a GCP-only class map's polygons
    are traced in pixels and taken through its GCPs into their CRS) -> GeoPackage / GeoJSON.
    Reads the whole class map (one byte per pixel). Returns the number of polygons."""
    import geopandas as gpd
    from shapely.geometry import shape

    with raster.open_raster(class_map) as src:
        cls = src.read(1)  # [H, W] uint8
        transform, crs = src.transform, src.crs
        gcps, gcp_crs = raster.read_gcps(src)
    geoms, values = [], []
    for geom, value in shapes(cls, mask=cls != CLASS_NODATA, transform=transform):
        geoms.append(shape(geom))
        values.append(int(value))
    if gcps:
        geoms, crs = through_gcps(geoms, gcps, "the class map", max_segment=16), gcp_crs
    gdf = gpd.GeoDataFrame(
        {
            "class": np.array(values, np.int32),
            "name": [names[v] if v < len(names) else str(v) for v in values],
        },
        geometry=geoms,
        crs=crs,
    )
    Path(dst).unlink(missing_ok=True)  # the GPKG driver wants to create the file itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        gdf.to_file(dst, driver=driver, layer="classes" if driver == "GPKG" else None)
    return len(gdf)


def write_preview(scene: Scene, class_map: Path, dst: Path, max_side: int = 1024) -> None:
    """Quicklook PNG: the first band as grey (per-scene stretch) with classes >= 1 overlaid."""
    x = raster.read_decimated(scene.src, scene.indexes[:1], scene.nodata, max_side)  # [1, h, w]
    grey = to_unit(to_db(x, scene.scaling.mode), scene.ranges[:1])[0]  # [h, w] in [0, 1]
    h, w = grey.shape
    with raster.open_raster(class_map) as src:
        cls = src.read(1, out_shape=(h, w), resampling=rasterio.enums.Resampling.nearest)  # [h, w]
    rgb = np.repeat(np.nan_to_num(grey * 255)[None], 3, axis=0)  # [3, h, w]
    for k in np.unique(cls):
        if k in (0, CLASS_NODATA):
            continue
        colour = np.array(PALETTE[int(k) % len(PALETTE)][:3], np.float32).reshape(3, 1)
        m = cls == k
        rgb[:, m] = 0.45 * rgb[:, m] + 0.55 * colour
    rgb[:, cls == CLASS_NODATA] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(dst, "w", driver="PNG", width=w, height=h, count=3, dtype="uint8") as out:
            out.write(np.clip(rgb, 0, 255).astype(np.uint8))
    Path(str(dst) + ".aux.xml").unlink(missing_ok=True)
