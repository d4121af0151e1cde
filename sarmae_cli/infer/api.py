"""Library API behind `sarmae segment`, `sarmae embed` and `sarmae classify`.

Each function takes one input and its output paths, writes every output atomically (a
temporary file beside the destination, renamed at the end) and returns a summary dict.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.warp import transform_bounds

from sarmae_cli.data import raster
from sarmae_cli.data.geometry import NATIVE
from sarmae_cli.data.preprocess import InputSpec
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.infer.classmap import ClassOutputs, check_class_outputs, class_tags, write_class_outputs
from sarmae_cli.infer.engine import Progress, predict_dense, predict_tiles
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.resample import ToInputGrid
from sarmae_cli.infer.scene import Scene, open_scene
from sarmae_cli.infer.writers import (
    CLASS_NODATA,
    CogSink,
    RasterSpec,
    RowBandWriter,
    colormap,
    encode_float,
    temp_beside,
    through_gcps,
    to_cog,
)
from sarmae_cli.outputs import atomic_output, check_output
from sarmae_cli.paths import VirtualPath, as_input, list_images

#: GDAL block cache of inference runs, in bytes (rasterio passes GDAL_CACHEMAX to GDAL as
#: bytes), unless $GDAL_CACHEMAX says otherwise: none. The engine then reads a block again for
#: each row of tiles that needs it (about 3 times with 512-row blocks and 224-px tiles) instead
#: of keeping two rows of blocks of the scene, which would cost about 100 MB at 12288 px wide
#: (2 float32 bands). On uncompressed scenes this costs nothing; on DEFLATE scenes decoding
#: again cost 2 CPU s per 512 tiles (engine alone, 5.3 s against 3.3 s with a 128 MB cache,
#: which raised the peak RSS from 920 to about 1070 MB; docs/benchmarks.md). GDAL's own
#: default (5 % of the RAM) would let the cache, not the engine, set the peak memory.
GDAL_CACHE_BYTES = 0


def gdal_env() -> rasterio.Env:
    """The GDAL environment of a run: no block cache (`GDAL_CACHE_BYTES`)."""
    if "GDAL_CACHEMAX" in os.environ:
        return rasterio.Env()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


@dataclass
class Options:
    """Options shared by the inference commands."""

    batch_size: int = 8
    tile: int | None = None  # input pixels; default: the weights' tile size
    overlap: int | None = None  # default: the weights' overlap (dense) or 0 (per tile)
    bands: str | None = None
    nodata: float | None = None
    input_scale: str = "auto"
    co: dict[str, str] = field(default_factory=dict)
    overwrite: bool = False
    progress: Progress | None = None
    gsd: str | float = "auto"  # scenes: the model's pixel size ("auto"), "native" or metres


def _spec(models: Models) -> InputSpec:
    """The input route stored in the weights (`data/preprocess.py`)."""
    return InputSpec.from_meta(models.meta.to_dict())


def tile_settings(models: Models, opts: Options, dense: bool) -> tuple[int, int]:
    """Tile size and overlap: the options, else the weights' defaults (dense or per-tile)."""
    tile, overlap = _spec(models).tiling(opts.tile, opts.overlap, dense)
    if models.fixed_tile and tile != models.fixed_tile:
        raise UsageError(
            f"{models.path} was exported for {models.fixed_tile}-px tiles; use --tile {models.fixed_tile} "
            f"(or re-export with `sarmae export --tile {tile}`)"
        )
    return tile, overlap


def open_input(path: Path, models: Models, opts: Options, gsd: str | float = "native") -> Scene:
    """Open one input (file, virtual path or per-polarisation stack) as the weights expect it."""
    return open_scene(path, models.meta, opts.bands, opts.nodata, opts.input_scale, gsd=gsd)


def run_summary(path: Path, scene: Scene, backend: Any, stats: Any, t0: float, outputs: list[Path]) -> dict:
    """The per-scene summary every scene command prints (and returns with --json)."""
    return {
        "input": str(path),
        "outputs": [str(p) for p in outputs],
        "tiles": stats.tiles,
        "tiles_skipped": stats.skipped,
        "seconds": round(time.perf_counter() - t0, 3),
        "model_seconds": round(stats.model_seconds, 3),
        "device": backend.device,
        "input_scale": scene.scaling.mode,
        "bands": scene.band_names,
        "notes": scene.notes,
        "warnings": scene.warnings,
    }


def segment_scene(
    path: Path,
    output: Path,
    models: Models,
    opts: Options,
    probabilities: Path | None = None,
    vector: Path | None = None,
    preview: Path | None = None,
) -> dict[str, Any]:
    """Class-map COG (uint8, colormap, nodata 255) of a scene, plus optional probabilities
    COG (float32, NaN nodata), class polygons (.gpkg/.geojson) and a quicklook PNG."""
    t0 = time.perf_counter()
    outputs = check_class_outputs(path, output, probabilities, vector, preview, opts.overwrite)
    with gdal_env(), open_input(path, models, opts, opts.gsd) as scene, contextlib.ExitStack() as stack:
        if scene.scale != NATIVE:
            scene.gsd_note += "; outputs on the input grid"
        backend = models.backend(len(scene.indexes), "probabilities")
        names = models.class_names
        tile, overlap = tile_settings(models, opts, dense=True)
        common = scene.georef()
        tags = class_tags(names, WEIGHTS=models.path.name)
        spec = RasterSpec(
            scene.input_width, scene.input_height, 1, "uint8", CLASS_NODATA, **common,
            descriptions=["class"], tags=tags, colormap=colormap(len(names)), resampling="mode",
        )  # fmt: skip
        if probabilities is not None:
            pspec = RasterSpec(
                scene.input_width, scene.input_height, len(names), "float32", float("nan"), **common,
                descriptions=[f"probability of {n}" for n in names], tags=tags, resampling="average",
            )  # fmt: skip
        targets = ClassOutputs(
            Path(output), spec, probabilities, pspec if probabilities else None, vector, preview
        )

        def run(sink: Any) -> Any:
            if scene.scale != NATIVE:  # the model ran at its pixel size; outputs go to the input grid
                sink = ToInputGrid(sink, scene.scale, scene.input_height, scene.input_width)
            return predict_dense(scene, backend, sink, tile, overlap, opts.batch_size, opts.progress)

        stats = write_class_outputs(scene, targets, names, opts, stack, run)
        summary = run_summary(Path(path), scene, backend, stats, t0, outputs)
    summary["classes"] = names
    return summary


def _footprints(scene: Scene, tiles: list) -> tuple[list, Any]:
    """Footprints of tiles (clipped to the scene) and their CRS: the scene's, or for a GCP-only
    scene the GCPs' (footprints mapped through the GCPs). Tiles are on the grid the model ran
    on; footprints are traced on the input grid."""
    import shapely

    gcps, gcp_crs = scene.gcps
    if not tiles:
        return [], gcp_crs if gcps else scene.crs
    x0, y0 = np.array([r.x for r in tiles]), np.array([r.y for r in tiles])
    x1 = np.minimum(x0 + np.array([r.size for r in tiles]), scene.width)
    y1 = np.minimum(y0 + np.array([r.size for r in tiles]), scene.height)
    (y0, x0), (y1, x1) = scene.to_input(y0, x0), scene.to_input(y1, x1)
    pixel_boxes = shapely.box(x0, y0, x1, y1)  # in input pixels: x = column, y = row
    if gcps:
        step = max(tiles[0].size / scene.scale[1] / 4, 1)
        return through_gcps(pixel_boxes, gcps, scene.path.name, step), gcp_crs
    t = scene.transform

    def to_map(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(t @ (xy[:, 0], xy[:, 1]))

    return list(shapely.transform(pixel_boxes, to_map)), scene.crs


def embed_scene(path: Path, output: Path, models: Models, opts: Options, dense: Path | None = None) -> dict:
    """One pooled embedding per tile of a regular grid -> GeoParquet (footprints in the scene
    CRS, tile row/col, pixel offsets, valid fraction, embedding); optionally per-patch features
    as a float32 GeoTIFF COG at the scene transform scaled by the patch size."""
    import geopandas as gpd

    t0 = time.perf_counter()
    outputs = [Path(output)] + ([Path(dense)] if dense else [])
    for p in outputs:
        check_output(p, opts.overwrite, inputs=[path])
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise UsageError("output paths must differ from each other")
    with gdal_env(), open_input(path, models, opts, opts.gsd) as scene, contextlib.ExitStack() as stack:
        backend = models.backend(len(scene.indexes), "pooled")
        tile, overlap = tile_settings(models, opts, dense=False)
        results, stats = predict_tiles(scene, backend, tile, overlap, opts.batch_size, opts.progress)
        rows = list(results)
        footprints, footprint_crs = _footprints(scene, rows)
        gdf = gpd.GeoDataFrame(
            {
                "source": [as_input(path).name] * len(rows),
                "row": np.array([r.row for r in rows], np.int32),
                "col": np.array([r.col for r in rows], np.int32),
                "x": np.array([r.x for r in rows], np.int32),
                "y": np.array([r.y for r in rows], np.int32),
                "size": np.array([r.size for r in rows], np.int32),
                "valid_fraction": np.array([r.valid_fraction for r in rows], np.float32),
                "embedding": [r.vector.astype(np.float32) for r in rows],
            },
            geometry=footprints,
            crs=footprint_crs,
        )
        tmp = stack.enter_context(atomic_output(Path(output), opts.overwrite))
        write_geoparquet(gdf, tmp)
        if dense is not None:
            fb = models.backend(len(scene.indexes), "patch_features")
            p = fb.patch_size
            spec = RasterSpec(
                -(-scene.width // p), -(-scene.height // p), fb.out_channels, "float32", float("nan"),
                **scene.georef(p),
                descriptions=[f"feature {i}" for i in range(fb.out_channels)],
                tags={"WEIGHTS": models.path.name, "PATCH_SIZE": str(p)}, resampling="average",
            )  # fmt: skip
            tmp_dense = stack.enter_context(atomic_output(Path(dense), opts.overwrite))
            sink = CogSink(stack.enter_context(temp_beside(Path(dense))), spec, encode_float, opts.co)
            dtile, doverlap = tile_settings(models, opts, dense=True)
            try:
                dstats = predict_dense(scene, fb, sink, dtile, doverlap // p * p, opts.batch_size)
            except BaseException:
                sink.abort()
                raise
            sink.finish(tmp_dense)
            stats.model_seconds += dstats.model_seconds
        summary = run_summary(Path(path), scene, backend, stats, t0, outputs)
    summary["embedding_dim"] = backend.out_channels
    return summary


def write_geoparquet(gdf: Any, dst: Path) -> None:
    """GeoParquet with the embedding as a list<float32> column."""
    gdf.to_parquet(dst, index=False)


def list_chips(inputs: list[str | Path]) -> list[Path | VirtualPath]:
    """Image files of the inputs (`paths.list_images`: folders listed, sorted, hidden files and
    folders left out; files kept in order; GDAL virtual paths kept verbatim and checked by
    GDAL). A named file that does not exist is refused before any chip is read."""
    out = list_images(inputs)
    for p in out:
        if isinstance(p, VirtualPath):
            raster.require_input(p)
    return out


def _chip_input(path: Path, models: Models, opts: Options, size: int) -> tuple[np.ndarray, Scene]:
    """A whole chip as model input [C, size, size] (its own per-chip statistics), resized or
    centre-cropped as the weights were trained (`training.preprocess.fit`)."""
    scene = open_input(path, models, opts)
    if scene.empty:
        scene.close()
        raise raster.RasterError(
            f"{path} has no valid pixels (all nodata, NaN or masked); check the file or --nodata"
        )
    x, _ = scene.read(0, 0, scene.height, scene.width)  # [C, h, w]
    return _spec(models).fit_to(torch.from_numpy(x), size).numpy(), scene


def chips_forward(
    paths: list[Path], models: Models, opts: Options, output: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run every chip through the model (resized to the weights' input size), in batches.
    Returns (per-chip results with the output vector, failures)."""
    size = models.fixed_tile or models.meta.encoder_config.img_size
    results, failures, batch = [], [], []

    def run() -> None:
        backend = models.backend(batch[0][1].shape[0], output)
        out = backend.predict(np.stack([b[1] for b in batch]))  # [B, K]
        for (info, _), v in zip(batch, out, strict=True):
            results.append({**info, "vector": v})
        batch.clear()

    for i, p in enumerate(paths):
        try:
            x, scene = _chip_input(p, models, opts, size)
        except SarmaeError as e:
            if len(paths) == 1:
                raise  # one chip: its own error and exit code, as for one scene
            failures.append({"input": str(p), "error": str(e)})
            continue
        info = {"path": str(p), "width": scene.width, "height": scene.height, "crs": scene.crs}
        info["bounds"] = scene.src.bounds if scene.crs else None
        scene.close()
        if batch and batch[0][1].shape[0] != x.shape[0]:
            run()
        batch.append((info, x))
        if len(batch) >= opts.batch_size:
            run()
        if opts.progress:
            opts.progress(i + 1, len(paths))
    if batch:
        run()
    return results, failures


def embed_chips(paths: list[Path], output: Path, models: Models, opts: Options) -> dict[str, Any]:
    """One embedding per chip file -> GeoParquet (footprint when the chip is georeferenced;
    chips in different CRSs are given in EPSG:4326)."""
    import geopandas as gpd
    from shapely.geometry import box

    t0 = time.perf_counter()
    check_output(Path(output), opts.overwrite, inputs=paths)
    results, failures = chips_forward(paths, models, opts, "pooled")
    crss = {r["crs"].to_string() for r in results if r["crs"]}
    crs = next(iter(crss)) if len(crss) == 1 else ("EPSG:4326" if crss else None)
    geoms = []
    for r in results:
        if not r["crs"]:
            geoms.append(None)
            continue
        b = r["bounds"] if len(crss) == 1 else transform_bounds(r["crs"], crs, *r["bounds"])
        geoms.append(box(*b))
    gdf = gpd.GeoDataFrame(
        {
            "path": [r["path"] for r in results],
            "width": np.array([r["width"] for r in results], np.int32),
            "height": np.array([r["height"] for r in results], np.int32),
            "embedding": [r["vector"].astype(np.float32) for r in results],
        },
        geometry=geoms,
        crs=crs,
    )
    if results:
        with atomic_output(Path(output), opts.overwrite) as tmp:
            write_geoparquet(gdf, tmp)
    return {
        "inputs": len(paths),
        "embedded": len(results),
        "failed": failures,
        "outputs": [str(output)] if results else [],
        "seconds": round(time.perf_counter() - t0, 3),
        "device": str(models.device),
    }


def classify_chips(
    paths: list[Path], models: Models, opts: Options, top_k: int
) -> tuple[list[dict], list[dict]]:
    """Top-k classes and probabilities of every chip: ([{path, top: [(class, p), ...]}], failures)."""
    names = models.class_names
    results, failures = chips_forward(paths, models, opts, "probabilities")
    rows = []
    for r in results:
        p = r["vector"]
        order = np.argsort(-p, kind="stable")[: min(top_k, len(names))]
        rows.append({"path": r["path"], "top": [(names[i], float(p[i])) for i in order]})
    return rows, failures


def classify_scene(path: Path, output: Path, models: Models, opts: Options) -> dict[str, Any]:
    """Per-tile class map of a scene: one pixel per tile of a regular grid (transform = scene
    transform scaled by the tile stride), uint8 with colormap, 255 for tiles without data."""
    t0 = time.perf_counter()
    check_output(Path(output), opts.overwrite, inputs=[path])
    with gdal_env(), open_input(path, models, opts, opts.gsd) as scene:
        backend = models.backend(len(scene.indexes), "probabilities")
        tile, overlap = tile_settings(models, opts, dense=False)
        results, stats = predict_tiles(scene, backend, tile, overlap, opts.batch_size, opts.progress)
        stride = tile - overlap
        n_rows = -(-max(scene.height - tile, 0) // stride) + 1
        n_cols = -(-max(scene.width - tile, 0) // stride) + 1
        cls = np.full((1, n_rows, n_cols), CLASS_NODATA, np.uint8)
        for r in results:
            cls[0, r.row, r.col] = int(np.argmax(r.vector))
        names = models.class_names
        spec = RasterSpec(
            n_cols, n_rows, 1, "uint8", CLASS_NODATA, **scene.georef(stride),
            descriptions=["class"], tags=class_tags(names, WEIGHTS=models.path.name, TILE=str(tile)),
            colormap=colormap(len(names)), resampling="mode",
        )  # fmt: skip
        with atomic_output(Path(output), opts.overwrite) as tmp, temp_beside(Path(output)) as tmp_tif:
            w = RowBandWriter(tmp_tif, spec)
            try:
                w.write(cls, cls[0] != CLASS_NODATA)
            finally:
                w.close()
            to_cog(tmp_tif, tmp, spec, opts.co)
        summary = run_summary(Path(path), scene, backend, stats, t0, [Path(output)])
    summary["classes"] = names
    return summary
