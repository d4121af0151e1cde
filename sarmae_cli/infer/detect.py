"""Object (ship) detection over whole scenes: the library behind `sarmae detect`.

The scene is cut into overlapping tiles (`edge` layout of `infer/tiling.py`: the last tile of a
row or column ends at the scene edge) and read one band of tile rows at a time, as the dense
engine does. Each batch of tiles goes through the backend's dense head outputs and the
detector's own decoding (`model.detector.decode`: score threshold, top-k, box decoding,
class-wise NMS), the same for PyTorch and onnxruntime. Of each tile's boxes, those that reach
an inner tile edge are dropped: with an overlap at least the longest object, the neighbouring
tile sees that object whole. The remaining boxes are shifted to scene pixels and duplicates
across tiles (an object inside the overlap of two tiles) removed by class-wise NMS as the
scene streams past (`infer.boxes.BoxMerger`), so memory grows with the scene width and the
number of objects, never with its height.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarmae_cli.errors import UsageError
from sarmae_cli.infer.api import Options, gdal_env, open_input, run_summary, tile_settings
from sarmae_cli.infer.backend import Backend
from sarmae_cli.infer.boxes import Boxes, BoxMerger, trusted
from sarmae_cli.infer.engine import Progress, RunStats, auto_prefetch, prefetch
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.scene import Scene
from sarmae_cli.infer.tiling import Grid, check_tiling
from sarmae_cli.infer.vectors import (
    check_detect_outputs,
    detections_frame,
    write_box_preview,
    write_points,
    write_vector,
)
from sarmae_cli.model.detector import decode
from sarmae_cli.outputs import atomic_output

#: Boxes a detector keeps per tile (before the scene-wide `max_detections`).
TILE_MAX_DETECTIONS = 300
#: A box reaching within this many pixels of an inner tile edge is left to the neighbour tile.
EDGE_MARGIN = 3
#: Defaults when the weights record none (`training.detection.min_score`, `.nms_thresh`). The
#: training's `score_thresh` (0.05) is the cut-off of the AP evaluation, not an operating point.
DEFAULT_MIN_SCORE = 0.5
DEFAULT_NMS_IOU = 0.6

#: Dense detector outputs of a batch -> per tile, its boxes in tile pixels.
Decoder = Callable[[tuple[np.ndarray, ...], int], list[Boxes]]


@dataclass
class DetectOptions:
    """What `detect` keeps: boxes scoring at least `min_score`, at most `max_detections` per
    scene (the highest scores; None: all), duplicates above `nms_iou` removed. None: the
    weights' values (else the defaults above)."""

    min_score: float | None = None
    max_detections: int | None = None
    nms_iou: float | None = None

    def resolved(self, recorded: dict[str, Any]) -> tuple[float, int | None, float]:
        """(min score, max detections, NMS IoU), each checked; `recorded`: the weights'
        `training.detection` entry."""
        score = (
            self.min_score
            if self.min_score is not None
            else float(recorded.get("min_score", DEFAULT_MIN_SCORE))
        )
        iou = self.nms_iou if self.nms_iou is not None else float(recorded.get("nms_thresh", DEFAULT_NMS_IOU))
        if not 0.0 <= score < 1.0:
            raise UsageError(f"--min-score {score} must be in [0, 1)")
        if not 0.0 < iou <= 1.0:
            raise UsageError(f"--nms-iou {iou} must be in (0, 1]")
        if self.max_detections is not None and self.max_detections < 1:
            raise UsageError(f"--max-detections {self.max_detections} must be at least 1")
        return score, self.max_detections, iou


def detector_decoder(strides: list[int], min_score: float, nms_iou: float) -> Decoder:
    """Decode dense outputs ([B, N, K], [B, N, 4], [B, N, 1]) of `tile` x `tile` inputs with
    the detector's own post-processing (`model.detector.decode`)."""

    def run(outputs: tuple[np.ndarray, ...], tile: int) -> list[Boxes]:
        tensors = tuple(torch.from_numpy(np.asarray(o, np.float32)) for o in outputs)
        dets = decode(tensors, (tile, tile), strides, min_score, nms_iou, TILE_MAX_DETECTIONS)
        return [Boxes(d["boxes"].numpy(), d["scores"].numpy(), d["labels"].numpy()) for d in dets]

    return run


@dataclass
class _Tile:
    row: int
    col: int
    x: np.ndarray  # [C, T, T] model input
    valid: np.ndarray  # [T, T]


def predict_boxes(
    scene: Scene,
    backend: Backend,
    decoder: Decoder,
    merger: BoxMerger,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: Progress | None = None,
    margin: float = EDGE_MARGIN,
) -> RunStats:
    """Boxes of the whole scene (on the grid the model runs on), streamed into `merger`.
    `tile` and `overlap` are model-grid pixels; tiles without valid pixels are skipped."""
    check_tiling(tile, overlap, backend.patch_size)
    grid = Grid(scene.height, scene.width, tile, overlap, "edge")
    row_y, col_x = grid.rows, grid.cols  # tile origins
    n_rows, n_cols = len(row_y), len(col_x)
    stats = RunStats(tiles=len(grid), extra={"boxes_in_tiles": 0, "boxes_cut_by_tiles": 0})

    def rows() -> Iterator[list[_Tile]]:
        for r, y in enumerate(row_y):
            x, valid = scene.read(y, 0, tile, max(grid.width, tile))  # [C, T, W'], [T, W']
            yield [
                _Tile(r, c, x[:, :, x0 : x0 + tile], valid[:, x0 : x0 + tile])
                for c, x0 in enumerate(col_x)
                if valid[:, x0 : x0 + tile].any()
            ]

    pending: list[_Tile] = []
    done = 0

    def run_batch() -> None:
        nonlocal done
        t0 = time.perf_counter()
        outputs = backend.predict(np.stack([t.x for t in pending]))  # 3 x [B, N, .]
        stats.model_seconds += time.perf_counter() - t0
        stats.batches += 1
        for t, b in zip(pending, decoder(outputs, tile), strict=True):
            inner = (t.col > 0, t.row > 0, t.col < n_cols - 1, t.row < n_rows - 1)
            keep = trusted(b.boxes, tile, inner, margin, t.valid)
            stats.extra["boxes_in_tiles"] += len(b)
            stats.extra["boxes_cut_by_tiles"] += int((~keep).sum())
            b = b.take(keep)
            b.boxes += np.array([col_x[t.col], row_y[t.row]] * 2, np.float32)  # to scene pixels
            merger.add(b)
        merger.settle(row_y[pending[-1].row])  # no later tile starts above this row's top
        done += len(pending)
        pending.clear()
        if progress:
            progress(done + stats.skipped, stats.tiles)

    for tiles in prefetch(rows(), auto_prefetch(backend, None, 2)):
        stats.skipped += n_cols - len(tiles)
        for t in tiles:
            pending.append(t)
            if len(pending) >= batch_size:
                run_batch()
        if progress and not tiles:
            progress(done + stats.skipped, stats.tiles)
    if pending:
        run_batch()
    return stats


def overlap_warnings(overlap: int, longest: float | None) -> list[str]:
    """A warning when the tile overlap (model-grid pixels) is too short for the longest object
    the weights were trained on (`longest`, pixels): such an object straddling two
    tiles is cut in both and may be missed."""
    if not longest:
        return []
    need = math.ceil(float(longest) + 2 * EDGE_MARGIN)
    if overlap >= need:
        return []
    return [
        f"--overlap {overlap} is shorter than the longest object in the training data "
        f"({float(longest):g} px) plus {2 * EDGE_MARGIN} px: such objects may be missed where tiles "
        f"meet; use --overlap {need} or more"
    ]


def to_input_grid(b: Boxes, scene: Scene) -> Boxes:
    """Boxes on the model's grid -> on the input's (the model may run at another pixel size)."""
    fy, fx = scene.scale
    if (fy, fx) == (1.0, 1.0):
        return b
    return Boxes(b.boxes / np.array([fx, fy, fx, fy], np.float32), b.scores, b.labels)


def zoom_scene(scene: Scene, zoom: float) -> None:
    """Run the model on the scene resized by `zoom` (a detector trained on zoomed images,
    `detection.zoom`), on top of any pixel-size resampling; boxes come back to the input grid."""
    if zoom == 1.0:
        return
    fy, fx = scene.scale
    scene.scale = (fy * zoom, fx * zoom)
    note = f"zoomed x{zoom:g} for the detector"
    scene.gsd_note = f"{scene.gsd_note}; {note}" if scene.gsd_note else note


def detect_scene(
    path: Path,
    output: Path,
    models: Models,
    opts: Options,
    dopts: DetectOptions | None = None,
    points: Path | None = None,
    preview: Path | None = None,
) -> dict[str, Any]:
    """One polygon per detected object of a scene -> GeoPackage (scene CRS) or GeoJSON
    (EPSG:4326), with score, class, length/width in metres, centroid lon/lat and the pixel box;
    optionally a points CSV and a quicklook PNG with the boxes. Every file is written
    atomically once the whole scene is done; a scene without detections gives an empty layer."""
    t0 = time.perf_counter()
    outputs = check_detect_outputs(path, output, points, preview, opts.overwrite)
    dopts = dopts or DetectOptions()
    head = models.meta.head or {}
    recorded = (models.meta.training or {}).get("detection") or {}
    min_score, max_det, nms_iou = dopts.resolved(recorded)
    zoom = float(recorded.get("zoom", 1.0))  # a detector trained on enlarged images
    with gdal_env(), open_input(path, models, opts, opts.gsd) as scene, contextlib.ExitStack() as stack:
        zoom_scene(scene, zoom)
        if scene.scale != (1.0, 1.0):
            scene.gsd_note += "; boxes on the input grid"
        backend = models.backend(len(scene.indexes), "detections")
        tile, overlap = tile_settings(models, opts, dense=True)
        decoder = detector_decoder([int(s) for s in head["strides"]], min_score, nms_iou)
        merger = BoxMerger(nms_iou, max_det)
        stats = predict_boxes(scene, backend, decoder, merger, tile, overlap, opts.batch_size, opts.progress)
        found = to_input_grid(merger.finish(), scene)
        names = models.class_names
        gdf = detections_frame(scene, found, names)
        write_vector(gdf, stack.enter_context(atomic_output(Path(output), opts.overwrite)), Path(output))
        if points is not None:
            write_points(gdf, stack.enter_context(atomic_output(Path(points), opts.overwrite)))
        if preview is not None:
            tmp = stack.enter_context(atomic_output(Path(preview), opts.overwrite))
            write_box_preview(scene, found, tmp)
        summary = run_summary(Path(path), scene, backend, stats, t0, outputs)
    longest = recorded.get("longest_object")
    summary["warnings"] += overlap_warnings(overlap, None if longest is None else float(longest) * zoom)
    counts = {n: int((found.labels == i).sum()) for i, n in enumerate(names)}
    summary["notes"].append(
        f"{len(found)} object(s) detected (min score {min_score:g}; tile {tile}, overlap {overlap})"
    )
    summary.update(
        detections=len(found), by_class=counts, classes=names, min_score=min_score, tile=tile, overlap=overlap
    )
    summary.update(stats.extra)  # boxes the tiles gave, and those left to a neighbour tile
    return summary
