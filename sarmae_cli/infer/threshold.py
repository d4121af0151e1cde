"""The physical baseline of `sarmae segment --task water --method threshold`: no weights; one
scene threshold (dark = water) from the bimodal tiles of the scene, split-based as in
operational Sentinel-1 flood mapping (Martinis et al. 2009, NHESS 9:303, and 2015, ISPRS J.
104:203; Chini et al. 2017, IEEE TGRS 55:6975):

1. one decimated read of the whole scene (at most 1024 px a side) in dB (`data/scaling.to_db`
   in the scene's detected or given radiometric mode; 8-bit renderings have no dB and their
   grey values are thresholded as they are; uint16 DN give dB up to a calibration constant),
   speckle-filtered with a `filter_size` median filter (`scipy.ndimage.median_filter`);
2. the sample is cut into `tile` x `tile` tiles; a tile is bimodal when a two-Gaussian fit of
   its histogram (EM, started from its Otsu split) has both components >= `min_share` of the
   tile and Ashman's D = sqrt(2) |m1 - m2| / sqrt(s1^2 + s2^2) > `min_ashman` (Chini et al.);
   the histograms of the bimodal tiles are pooled and thresholded with Otsu's method (1979)
   or Kittler and Illingworth's minimum-error method (1986); without a bimodal tile, Otsu
   on the whole scene, with a warning;
3. the full-resolution scene is classified in row bands: a pixel is water when most valid
   pixels of its `filter_size` window are below the threshold, which is the median filter
   followed by the threshold, with nodata left out of the window. The same map comes out of
   the scene as dB, power or amplitude (only comparisons with the threshold are used).

Outputs are those of `api.segment_scene` (class-map COG: 0 land, 1 water, 255 nodata; polygons,
quicklook); `--probabilities` gets the share of each pixel's window on each side of the
threshold (a score, not a probability).

`--method hybrid` (`hybrid_scene`) is the threshold guided by a water model: the model maps the
scene first; in step 2 a bimodal tile is pooled only where the model calls between `min_share`
and 1 - `min_share` of it water (a land/water boundary by both the histogram and the model), and
in step 3 a pixel below the threshold is water only within one encoder patch (`NEAR` pixels of
the grid the model ran on, converted to input pixels) of the model's water.
Without such a tile the model's own map is written. The model decides where water can be (and
whether the scene holds any); the threshold draws its edge from the scene's own backscatter.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from scipy.ndimage import maximum_filter, uniform_filter

from sarmae_cli.data import raster
from sarmae_cli.data.bimodal import Params, Threshold, find_threshold
from sarmae_cli.data.scaling import to_db
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.api import Options, gdal_env, segment_scene
from sarmae_cli.infer.classmap import ClassOutputs, check_class_outputs, class_tags, write_class_outputs
from sarmae_cli.infer.scene import model_scale, open_scene
from sarmae_cli.infer.writers import (
    CLASS_NODATA,
    RasterSpec,
    Tee,
    colormap,
    temp_beside,
)
from sarmae_cli.model.checkpoint import WeightsMeta

CLASS_NAMES = ["land", "water"]  # those of the shipped water weights
NEAR = 16  # hybrid: water only within this many model pixels of the model's water (one encoder patch)
BAND_PIXELS = 1 << 22  # pixels per row band of step 3 (16 to 1024 rows)
#: The threshold method described as weights are, so that it opens a scene as the model path
#: does (`open_scene`: one co-pol band chosen by polarisation, radiometry detected, nodata).
META = WeightsMeta(
    task="segmentation",
    encoder={"in_chans": 1},
    bands=["VV"],
    input_scaling={"mode": "db", "stretch": "percentile"},
    normalization={"mean": [0.0], "std": [1.0]},
    class_names=CLASS_NAMES,
)


def water_score(db: np.ndarray, valid: np.ndarray, threshold: float, size: int) -> np.ndarray:
    """Share of the valid pixels of each pixel's `size` x `size` window that are below the
    threshold, [H, W] float32 (0 where no pixel of the window is valid)."""
    below = (valid & (db < threshold)).astype(np.float64)
    area = size * size
    n_below = np.rint(uniform_filter(below, size, mode="constant") * area)
    n_valid = np.rint(uniform_filter(valid.astype(np.float64), size, mode="constant") * area)
    return (n_below / np.maximum(n_valid, 1)).astype(np.float32)


def threshold_image(db: np.ndarray, params: Params = Params()) -> tuple[np.ndarray, Threshold]:
    """A whole image in memory ([H, W], dB or grey levels, NaN where invalid) -> (water map
    [H, W] bool, its threshold): what `threshold_scene` writes, for images that fit in memory
    (at most 1024 px a side, or the threshold comes from the full image, not a decimated one)."""
    t, valid = find_threshold(db, params), np.isfinite(db)
    return (water_score(db, valid, t.value, params.filter_size) > 0.5) & valid, t


def _units(mode: str) -> str:
    return {"uint8": "grey level", "uint16": "dB (uncalibrated DN)"}.get(mode, "dB")


def _explain(t: Threshold, units: str, rule: str, name: str) -> tuple[str, list[str]]:
    """The note saying how the threshold was found, and the warning of a fallback."""
    how = "Kittler-Illingworth" if rule == "ki" else "Otsu"
    if not t.fallback:
        return f"threshold {t.value:.2f} {units}: {how} on {t.bimodal} bimodal tiles of {t.tiles}", []
    warning = (
        f"{name}: no tile of the scene is bimodal (land and water side by side), so the threshold "
        "is Otsu's on the whole scene: the water map is unreliable"
    )
    return f"threshold {t.value:.2f} {units}: Otsu on the whole scene (no bimodal tile of {t.tiles})", [
        warning
    ]


def threshold_scene(
    path: Path,
    output: Path,
    opts: Options,
    probabilities: Path | None = None,
    vector: Path | None = None,
    preview: Path | None = None,
    params: Params = Params(),
    guide: Path | None = None,
    near: int = NEAR,
    guide_class: int = 1,
) -> dict[str, Any]:
    """`segment_scene`'s outputs by the threshold method (no weights): class-map COG (uint8,
    0 land, 1 water, 255 nodata), optional scores COG (float32: share of the window above /
    below the threshold), polygons and quicklook. Returns a summary with the threshold.
    `guide`: a water model's class map of the same scene (`guide_class`: its water class), for
    `hybrid_scene`; `near`: water only within this many input pixels of the guide's water."""
    t0 = time.perf_counter()
    outputs = check_class_outputs(path, output, probabilities, vector, preview, opts.overwrite)
    with contextlib.ExitStack() as files:
        files.enter_context(gdal_env())
        scene = files.enter_context(open_scene(path, META, opts.bands, opts.nodata, opts.input_scale))
        model = files.enter_context(rasterio.open(guide)) if guide is not None else None
        mode, units = scene.scaling.mode, _units(scene.scaling.mode)
        if scene.empty:  # no valid pixel: nothing to threshold, every output pixel is nodata
            t, note, warnings = Threshold(float("nan"), 0, 0, False), "no threshold: no valid pixels", []
        else:
            sample = raster.read_decimated(scene.src, scene.indexes, scene.nodata, 1024)[0]  # [h, w]
            water = None
            if model is not None:
                water = _water(raster.read_decimated(model, [1], CLASS_NODATA, 1024)[0], guide_class)
            if not np.isfinite(sample).any():  # valid pixels only between the sampled ones
                sample, water = raster.read_valid(scene.src, scene.indexes, scene.nodata)[0], None  # [1, n]
            t = find_threshold(to_db(sample, mode), params, water)
            if model is not None and not t.bimodal:
                note, warnings = "the model's map: no tile where it and the histogram see land and water", []
            else:
                note, warnings = _explain(t, units, params.rule, Path(str(path)).name)
        method = "threshold" if model is None else "hybrid"
        tags = class_tags(CLASS_NAMES, METHOD=method, THRESHOLD=f"{t.value:.4f}", THRESHOLD_UNITS=units)
        k, common = params.filter_size, scene.georef()
        spec = RasterSpec(
            scene.width, scene.height, 1, "uint8", CLASS_NODATA, **common,
            descriptions=["class"], tags=tags, colormap=colormap(2), resampling="mode",
        )  # fmt: skip
        pspec = None
        if probabilities is not None:
            names = [f"share of the {k}x{k} window {s} the threshold" for s in ("above", "below")]
            pspec = RasterSpec(
                scene.width, scene.height, 2, "float32", float("nan"), **common, tags=tags,
                descriptions=names, resampling="average",
            )  # fmt: skip
        targets = ClassOutputs(Path(output), spec, probabilities, pspec, vector, preview)
        with contextlib.ExitStack() as stack:
            write_class_outputs(
                scene,
                targets,
                CLASS_NAMES,
                opts,
                stack,
                lambda sink: _classify(scene, mode, t.value, k, sink, opts, model, near, guide_class),
            )
        return {
            "input": str(path), "outputs": [str(p) for p in outputs], "method": method,
            "threshold": None if scene.empty or not np.isfinite(t.value) else round(t.value, 4),
            "threshold_units": units,
            "fallback": t.fallback,
            "tiles": t.tiles, "tiles_bimodal": t.bimodal, "tiles_skipped": 0,
            "seconds": round(time.perf_counter() - t0, 3), "device": "cpu", "input_scale": mode,
            "bands": scene.band_names, "notes": [*scene.notes, note],
            "warnings": [*scene.warnings, *warnings], "classes": CLASS_NAMES,
        }  # fmt: skip


def _water(classes: np.ndarray, water: int = 1) -> np.ndarray:
    """A class map read as float (NaN nodata) -> 1.0 where class `water`, 0.0 elsewhere, NaN
    nodata; [h, w]."""
    return np.where(np.isfinite(classes), classes == water, np.nan).astype(np.float32)


def _classify(
    scene: Any,
    mode: str,
    threshold: float,
    size: int,
    sink: Tee,
    opts: Options,
    model: Any = None,
    near: int = NEAR,
    guide_class: int = 1,
) -> None:
    """Step 3: row bands of the full-resolution scene (with a halo of the window's radius) ->
    [land score, water score] rows to `sink`. With a `model` class map: water only within
    `near` pixels of its water, or its own map where there is no threshold (NaN)."""
    r, w = (max(size // 2, near) if model is not None else size // 2), scene.width
    rows = int(np.clip(BAND_PIXELS // max(w, 1), 16, 1024))
    for y in range(0, scene.height, rows):
        n = min(rows, scene.height - y)
        x, valid = raster.read_window(scene.src, scene.indexes, y - r, -r, n + 2 * r, w + 2 * r, scene.nodata)
        db = to_db(x[0], mode)
        valid &= np.isfinite(db)
        if model is None:
            score = water_score(db, valid, threshold, size)
        else:
            m, _ = raster.read_window(model, [1], y - r, -r, n + 2 * r, w + 2 * r, CLASS_NODATA)
            water = np.nan_to_num(_water(m[0], guide_class)) > 0  # [n + 2r, W + 2r]: the model's water
            if np.isfinite(threshold):
                score = water_score(db, valid, threshold, size) * maximum_filter(water, 2 * near + 1)
            else:
                score = water.astype(np.float32)
        score = score[r : r + n, r : r + w]  # [n, W]
        sink.write_rows(y, np.stack([1.0 - score, score]), valid[r : r + n, r : r + w])
        if opts.progress:
            opts.progress(y + n, scene.height)


def hybrid_water_class(models: Any) -> int:
    """The index of the `water` class of the weights of `--method hybrid` (usage error without)."""
    names = [n.lower() for n in models.class_names]
    if "water" not in names:
        raise UsageError(
            f"--method hybrid needs water weights (a class named 'water'); {models.path.name} has "
            f"classes {', '.join(models.class_names)}: use --task water or other weights"
        )
    return names.index("water")


def hybrid_scene(
    path: Path,
    output: Path,
    models: Any,
    opts: Options,
    probabilities: Path | None = None,
    vector: Path | None = None,
    preview: Path | None = None,
    params: Params = Params(),
) -> dict[str, Any]:
    """`--method hybrid`: the water model's map of the scene (a temporary file beside the
    output), then `threshold_scene` guided by it (module docstring). Same outputs and summary
    as `threshold_scene`, with the model's notes and warnings added."""
    t0 = time.perf_counter()
    check_class_outputs(path, output, probabilities, vector, preview, opts.overwrite)
    water = hybrid_water_class(models)
    with gdal_env():
        scale = model_scale(path, models.meta, opts.gsd)
    near = max(1, round(NEAR / min(scale)))  # one patch of the model's grid, in input pixels
    with temp_beside(Path(output)) as guide:
        m = segment_scene(path, guide, models, replace(opts, overwrite=True))
        s = threshold_scene(path, output, opts, probabilities, vector, preview, params, guide, near, water)
    notes = [f"the model's map from {models.path.name}", *m["notes"], *s["notes"]]
    s.update(
        weights=str(models.path),
        notes=list(dict.fromkeys(notes)),
        warnings=list(dict.fromkeys([*m["warnings"], *s["warnings"]])),
        seconds=round(time.perf_counter() - t0, 3),
        device=m["device"],
    )
    return s
