"""Robustness of every shipped model to the form of its input, beside the physical baseline.

Measurement only: nothing here is tuned or chosen on these test sets.

Water (`weights/sarmae_water.safetensors`, segmentation):
1. The Sen1Floods11 chip (`sen1floods11/S1`, 2-band VV/VH sigma0 in dB, 512 x 512, EPSG:4326,
   about 10 m; `Labels/*LabelHand*`, -1 ignored) is written, in a temp folder, as variants
   (`write_variant`):
   - radiometry, VV at x1: dB, linear power, amplitude, uint16 DN (DN = amplitude x 1000,
     rounded, clipped to 1..65535, nodata 0) and an 8-bit rendering (a fixed -25..0 dB stretch
     to 1..255, nodata 0);
   - polarisation, dB at x1: VV only, VH only, both (2 bands described VV, VH);
   - pixel size, VV in dB: the grid's pixel size x0.1 (about 1 m), x0.5, x1, x2 and x5, same
     origin and CRS. Coarser grids average linear power over each new pixel (GDAL `average`,
     i.e. multilooking) and take the majority label (`mode`); the finer grids are bilinear in
     linear power and nearest for the label, so they add no detail the chip does not have.
   Every file has band descriptions (VV / VH) and no radiometry tags, and is read with
   `--input-scale auto` (the default; `--declared-scale` passes the form it was written in):
   the table says when auto read a form as another one.
   Each variant is segmented by the library path of `sarmae segment` (`segment_scene`) with the
   shipped water weights at `--gsd auto` (the default: resampled to the 10 m they record) and at
   `--gsd native`, and by the physical baseline (`threshold_scene`, `sarmae segment --method
   threshold`); with `--hybrid`, also by `sarmae segment --method hybrid` (`hybrid_scene`, the
   baseline guided by the water weights at `--gsd auto`). Water IoU against the label on the
   variant's own grid (label -1 and nodata pixels ignored).
2. OMBRIA test (70 AFTER/MASK pairs, 8-bit PNG, no geotransform): the 8-bit form only, no
   pixel-size variants; `eval_water.ombria` (model, as `sarmae evaluate`) and
   `eval_threshold.ombria` (baseline), accumulated over all pixels.

MSTAR classifier (`weights/sarmae_mstar.safetensors`): overall accuracy on the SOC test chips
(15 deg) as shipped and re-rendered (`sarmae_cli.data.render.RENDERINGS`), scored by
`mstar_renderings.score_all` (`evaluate_weights`, the stored preprocessing). There is no
physical baseline for target classification here. `--skip-mstar` leaves it out;
`--mstar-json F` reads the renderings of an earlier `mstar_renderings.py --json F` run instead.

Ship detector (`weights/sarmae_ships.safetensors`, detection): the 10 images of hrsid_mini
that the weights' own split holds out (3 scenes, 19 ships; `ships_operating_point.split_samples`,
the images `sarmae evaluate --val-fraction 0.2` scores). HRSID gives 8-bit display renderings
only, so the calibrated forms are derived under one stated assumption: the grey level g is a
linear amplitude display, amplitude A = (g + 0.5) / 256 (`ship_amplitude`). Each image is written
as a GeoTIFF (EPSG:32633, 1 m pixels: HRSID's are 0.5-3 m; band described `VV`) in each form of
`ship_variants` (`write_ship_variant`): the JPEG as it is; A as dB, linear power, amplitude and
uint16 DN (A x 1000); an 8-bit rendering of the dB values between the image's 1st and 99.9th
percentiles (a log display, as GIS quicklooks of dB show it); a dual-pol file (VV, VH: VH is
VV's power 7 dB lower, i.e. synthetic, to check the band choice); and pixel sizes x0.5 (bilinear
in power) and x2 (power averaged over 2 x 2 pixels), boxes scaled alike. `sarmae detect`'s
library path (`detect_scene`, defaults, `--input-scale auto`) runs at a cut of 0.05; COCO AP50
and AP50:95 (torchmetrics, as `sarmae evaluate`, the best 100 boxes per image) and precision /
recall / F1 at IoU 0.5 of the boxes at or above the stored `--min-score` (filtered from the 0.05
run, which differs from a run at that cut only when a tile held more than 300 boxes). Baseline:
a two-parameter CFAR on the scene's dB values (8-bit renderings: on the grey levels as they
are), `ship_cfar.py`, its k chosen on the training scenes; AP50 from its scores, P / R / F1 of
all its boxes.

The encoder (`sarmae_encoder`) has no labelled task of its own; its MSTAR probe is
`benchmarks/probe_mstar_knn.py`.

    python benchmarks/eval_robustness.py --json robustness.json
    python benchmarks/eval_robustness.py --skip-mstar     # water and ships
    python benchmarks/eval_robustness.py --only ships --ships FILE   # another ship detector

Needs the data in $SARMAE_DATA (default ../shared/data) and scikit-image.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.transform import Affine
from rasterio.warp import reproject

from sarmae_cli.data.labelled import scan_classification
from sarmae_cli.data.raster import read_image
from sarmae_cli.data.render import RENDERINGS
from sarmae_cli.data.scaling import detect_mode, to_db
from sarmae_cli.demo import gpd_boxes
from sarmae_cli.infer.api import Options, segment_scene
from sarmae_cli.infer.detect import DetectOptions, detect_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.threshold import hybrid_scene, threshold_scene
from sarmae_cli.train.detection_eval import detection_metrics
from sarmae_cli.train.metrics import confusion_matrix, segmentation_metrics

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts
from siblings import load as _bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SARMAE_DATA", ROOT.parent / "shared" / "data"))
DN_PER_AMPLITUDE = 1000.0  # uint16 DN = amplitude x this constant
RENDER_DB = (-25.0, 0.0)  # the fixed stretch of the 8-bit rendering
FORMS = ("db", "power", "amplitude", "uint16", "uint8")
FORM_NAMES = {"db": "dB", "power": "power", "amplitude": "amplitude", "uint16": "uint16 DN", "uint8": "8-bit"}
POLS = {"VV": (0,), "VH": (1,), "VV+VH": (0, 1)}  # band indexes of the 2-band source (VV, VH)
LABEL_NODATA = -1


class Variant(NamedTuple):
    """One input form: radiometry (a key of FORM_NAMES), polarisation (a key of POLS) and the
    factor applied to the pixel size (2 = pixels twice as large, half as many per side)."""

    form: str = "db"
    pol: str = "VV"
    factor: float = 1.0

    @property
    def name(self) -> str:
        return f"{FORM_NAMES[self.form]} · {self.pol} · ×{self.factor:g}"


def variants() -> list[Variant]:
    """The grid: radiometry x {VV} at x1, polarisation x {dB} at x1, pixel size x {VV, dB}."""
    out = [Variant(form=f) for f in FORMS]
    out += [Variant(pol=p) for p in POLS if p != "VV"]
    out += [Variant(factor=f) for f in (0.1, 0.5, 2.0, 5.0)]
    return out


# --- writing the variants -------------------------------------------------------------------


def _encode(power: np.ndarray, valid: np.ndarray, form: str) -> tuple[np.ndarray, float]:
    """Linear power [C, H, W] (valid where `valid`) -> (array in `form`, its nodata value)."""
    p = np.where(valid, np.maximum(power, 1e-10), 1.0)
    if form == "power":
        return np.where(valid, p, np.nan).astype(np.float32), float("nan")
    if form == "db":
        return np.where(valid, 10 * np.log10(p), np.nan).astype(np.float32), float("nan")
    if form == "amplitude":
        return np.where(valid, np.sqrt(p), np.nan).astype(np.float32), float("nan")
    if form == "uint16":
        dn = np.clip(np.round(np.sqrt(p) * DN_PER_AMPLITUDE), 1, 65535)
        return np.where(valid, dn, 0).astype(np.uint16), 0.0
    if form == "uint8":
        lo, hi = RENDER_DB
        grey = np.clip(np.round((10 * np.log10(p) - lo) / (hi - lo) * 255), 1, 255)
        return np.where(valid, grey, 0).astype(np.uint8), 0.0
    raise ValueError(f"unknown form {form!r}")


def _grid(transform: Affine, height: int, width: int, factor: float) -> tuple[Affine, int, int]:
    """The same origin with pixels `factor` times as large; whole pixels only (a coarser grid
    drops the partial pixel at the right and bottom edges)."""
    t = transform @ Affine.scale(factor)
    return t, max(1, math.floor(height / factor + 1e-9)), max(1, math.floor(width / factor + 1e-9))


def write_variant(
    src: Path, label: Path, variant: Variant, folder: Path, stem: str = "chip"
) -> tuple[Path, Path]:
    """Write `src` (a dB GeoTIFF with bands VV, VH; NaN = nodata) and its `label` (int16, -1 =
    ignore) as `variant` into `folder` as STEM.tif and STEM_label.tif (a neutral stem: a file
    name saying "db" or "power" would tell `--input-scale auto` the answer). Returns their
    paths, both on the variant's grid (correct geotransform, same CRS); the label is -1
    wherever the scene is nodata."""
    with rasterio.open(src) as ds:
        db = ds.read(out_dtype=np.float32)  # [2, H, W]
        profile, crs, transform = ds.profile, ds.crs, ds.transform
        if ds.nodata is not None and not np.isnan(ds.nodata):
            db[db == ds.nodata] = np.nan
    with rasterio.open(label) as ds:
        truth = ds.read(1).astype(np.int16)  # [H, W]
    idx = list(POLS[variant.pol])
    power = (10 ** (db[idx] / 10)).astype(np.float32)  # [C, H, W], NaN where nodata
    truth[~np.isfinite(db[idx]).all(0)] = LABEL_NODATA
    h, w = truth.shape
    if variant.factor != 1:
        transform_out, h, w = _grid(transform, h, w, variant.factor)
        coarser = variant.factor > 1
        resampled = np.full((len(idx), h, w), np.nan, np.float32)
        reproject(
            power, resampled, src_transform=transform, src_crs=crs, dst_transform=transform_out,
            dst_crs=crs, src_nodata=np.nan, dst_nodata=np.nan,
            resampling=Resampling.average if coarser else Resampling.bilinear,
        )  # fmt: skip
        lab = np.full((h, w), LABEL_NODATA, np.int16)
        reproject(
            truth, lab, src_transform=transform, src_crs=crs, dst_transform=transform_out,
            dst_crs=crs, src_nodata=LABEL_NODATA, dst_nodata=LABEL_NODATA,
            resampling=Resampling.mode if coarser else Resampling.nearest,
        )  # fmt: skip
        power, truth, transform = resampled, lab, transform_out
    valid = np.isfinite(power).all(0) & (power > 0).all(0)  # [H, W]
    truth[~valid] = LABEL_NODATA
    data, nodata = _encode(power, np.broadcast_to(valid, power.shape), variant.form)
    drop = ("blockxsize", "blockysize", "tiled", "count", "dtype", "nodata")
    base = {k: v for k, v in profile.items() if k not in drop}
    common = {**base, "driver": "GTiff", "crs": crs, "transform": transform, "height": h, "width": w}
    scene, lab_path = folder / f"{stem}.tif", folder / f"{stem}_label.tif"
    bands = {"count": len(idx), "dtype": data.dtype.name, "nodata": nodata}
    with rasterio.open(scene, "w", **common, **bands) as ds:
        ds.write(data)
        for band, i in enumerate(idx, start=1):
            ds.set_band_description(band, ("VV", "VH")[i])
    with rasterio.open(lab_path, "w", **common, count=1, dtype="int16", nodata=LABEL_NODATA) as ds:
        ds.write(truth, 1)
    return scene, lab_path


# --- scoring --------------------------------------------------------------------------------


def _class_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def water_iou(class_map: np.ndarray, truth: np.ndarray) -> float:
    """Water IoU of a class map (1 = water, 255 = nodata) against a label (-1 = ignore)."""
    t = np.where(class_map == 255, LABEL_NODATA, truth).astype(np.int64)
    cm = confusion_matrix((class_map == 1).astype(np.int64), t, 2, ignore_index=LABEL_NODATA)
    return float(segmentation_metrics(cm, ["land", "water"])["iou"]["water"])


def sen1floods11(methods: dict[str, Any], work: Path, declared: bool) -> list[dict[str, Any]]:
    """Every variant of the Sen1Floods11 chip through every method. `methods`: name -> (Models
    or None for the threshold baseline, gsd); the name "hybrid": `--method hybrid` with those
    Models."""
    src = next((DATA / "sen1floods11" / "S1").glob("*.tif"))
    label = next((DATA / "sen1floods11" / "Labels").glob("*LabelHand*.tif"))
    rows = []
    for i, v in enumerate(variants()):
        scene, lab = write_variant(src, label, v, work, stem=f"chip{i:02d}")
        truth = _class_map(lab).astype(np.int64)
        with rasterio.open(scene) as ds:
            shape = f"{ds.width}×{ds.height}"
        row: dict[str, Any] = {"set": "Sen1Floods11 chip", "variant": v.name, "pixels": shape, "methods": {}}
        scale = v.form if declared else "auto"
        for name, (models, gsd) in methods.items():
            out = work / f"chip{i:02d}_{name}.tif"
            opts = Options(input_scale=scale, overwrite=True, gsd=gsd)
            t0 = time.perf_counter()
            if models is None or name == "hybrid":
                s = (
                    threshold_scene(scene, out, opts)
                    if models is None
                    else hybrid_scene(scene, out, models, opts)
                )
                extra = {"threshold": s.get("threshold")}
            else:
                s = segment_scene(scene, out, models, opts)
                extra = {}
            row["methods"][name] = {
                "water_iou": water_iou(_class_map(out), truth),
                "input_scale": s.get("input_scale"),
                "notes": s.get("notes", []),
                "seconds": round(time.perf_counter() - t0, 1),
                **extra,
            }
        read_as = {m["input_scale"] for m in row["methods"].values()}
        row["read_as"] = sorted(x for x in read_as if x)
        rows.append(row)
        ious = "  ".join(f"{k} {m['water_iou']:.3f}" for k, m in row["methods"].items())
        print(f"Sen1Floods11 {v.name} ({shape}): {ious}", file=sys.stderr, flush=True)
    return rows


def ombria(weights: dict[str, Path], hybrid: Any = None, work: Path | None = None) -> dict[str, Any]:
    """OMBRIA test, its 8-bit renderings as they are (no geotransform: every `--gsd` runs
    native): each weights file, as `sarmae evaluate`, and the baseline, as `eval_threshold.py`
    (one threshold per image, IoU over all pixels); with `hybrid` (Models), `--method hybrid` too."""
    ew, et = _bench("eval_water"), _bench("eval_threshold")
    row: dict[str, Any] = {"set": "OMBRIA test (70)", "variant": "8-bit · one band · no transform"}
    row["methods"] = m = {}
    for name, w in weights.items():
        t0 = time.perf_counter()
        r = ew.ombria(w)
        m[name] = {"water_iou": r["model_water_iou"], "seconds": round(time.perf_counter() - t0, 1)}
        row["otsu_water_iou"] = r["otsu_water_iou"]
    t0 = time.perf_counter()
    r = et.ombria("test", et.Params())
    m["baseline"] = {"water_iou": r["threshold_water_iou"], "seconds": round(time.perf_counter() - t0, 1)}
    if hybrid is not None:
        t0 = time.perf_counter()
        r = et.ombria("test", et.Params(), hybrid, work)
        m["hybrid"] = {"water_iou": r["threshold_water_iou"], "seconds": round(time.perf_counter() - t0, 1)}
    print("OMBRIA: " + "  ".join(f"{k} {v['water_iou']:.3f}" for k, v in m.items()), file=sys.stderr)
    return row


def mstar(weights: Path, cached: Path | None, work: Path) -> dict[str, Any]:
    """Overall accuracy of the classifier on the test chips in every rendering of
    `render.RENDERINGS` (scored now, or read from an earlier `mstar_renderings.py --json`)."""
    if cached is not None:
        d = json.loads(cached.read_text())
        return {"source": f"read from {cached}", "weights": d["weights"], "renderings": d["renderings"]}
    mr = _bench("mstar_renderings")
    test = DATA / "mstar10" / "test"
    chips = [(s.path, s.path.parent.name, read_image(s.path)) for s in scan_classification(test).samples]
    res = mr.score_all(weights, chips, RENDERINGS, work)
    return {"source": "scored by this run", "weights": str(weights), "renderings": res}


# --- ship detector --------------------------------------------------------------------------

SHIP_FORMS = {
    "jpeg": "8-bit JPEG as given",
    "db": "dB",
    "power": "power",
    "amplitude": "amplitude",
    "uint16": "uint16 DN",
    "uint8log": "8-bit log rendering",
}
SHIP_CRS = "EPSG:32633"
SHIP_PIXEL_M = 1.0  # written pixel size (HRSID: 0.5-3 m)
SHIP_LOW_CUT = 0.05
SYNTHETIC_VH_DB = -7.0  # the dual-pol variant's VH: VV's power this many dB lower


class ShipVariant(NamedTuple):
    """One input form of a ship image: a key of SHIP_FORMS, "VV" or "VV+VH", pixel-size factor."""

    form: str = "db"
    pol: str = "VV"
    factor: float = 1.0

    @property
    def name(self) -> str:
        pol = "VV+VH (VH synthetic)" if self.pol == "VV+VH" else self.pol
        return f"{SHIP_FORMS[self.form]} · {pol} · ×{self.factor:g}"


def ship_variants() -> list[ShipVariant]:
    """Radiometry at x1 (single band), a dual-pol file in dB, pixel size x0.5 and x2 in dB."""
    out = [ShipVariant(form=f) for f in SHIP_FORMS]
    out.append(ShipVariant(pol="VV+VH"))
    out += [ShipVariant(factor=f) for f in (0.5, 2.0)]
    return out


def ship_amplitude(grey: np.ndarray) -> np.ndarray:
    """An 8-bit display rendering [H, W] taken as linear amplitude, as the CFAR baseline takes it
    (`ship_cfar.grey_amplitude`: (g + 0.5) / 256)."""
    return _bench("ship_cfar").grey_amplitude(grey)


def write_ship_variant(
    grey: np.ndarray, boxes: np.ndarray, variant: ShipVariant, path: Path
) -> tuple[Path, np.ndarray]:
    """Write the 8-bit image `grey` [H, W] as `variant` to `path` (a GeoTIFF; the "jpeg" form is
    the caller's file, not written). Returns (path, the boxes [N, 4] XYXY on the variant's grid)."""
    power = ship_amplitude(grey)[None] ** 2  # [1, H, W]
    h, w = grey.shape
    transform = Affine(SHIP_PIXEL_M, 0, 500000.0, 0, -SHIP_PIXEL_M, 5000000.0)
    if variant.factor != 1:
        transform_out, h, w = _grid(transform, h, w, variant.factor)
        resampled = np.zeros((1, h, w), np.float32)
        reproject(
            power, resampled, src_transform=transform, src_crs=SHIP_CRS, dst_transform=transform_out,
            dst_crs=SHIP_CRS, resampling=Resampling.average if variant.factor > 1 else Resampling.bilinear,
        )  # fmt: skip
        power, transform = resampled, transform_out
        boxes = boxes / variant.factor
    if variant.pol == "VV+VH":
        power = np.concatenate([power, power * 10 ** (SYNTHETIC_VH_DB / 10)])  # [2, H, W]
    valid = np.ones(power.shape, bool)
    if variant.form == "uint8log":
        db = 10 * np.log10(power)
        lo, hi = np.percentile(db[0], [1.0, 99.9])
        data = np.clip(np.round(1 + (db - lo) / (hi - lo) * 254), 1, 255).astype(np.uint8)
        nodata = 0.0
    else:
        data, nodata = _encode(power, valid, variant.form)
    count = data.shape[0]
    profile = {"driver": "GTiff", "crs": SHIP_CRS, "transform": transform, "height": h, "width": w}
    with rasterio.open(path, "w", **profile, count=count, dtype=data.dtype.name, nodata=nodata) as ds:
        ds.write(data)
        for band in range(count):
            ds.set_band_description(band + 1, ("VV", "VH")[band])
    return path, boxes


def ship_scores(found: list[dict[str, np.ndarray]], truth: list[dict[str, np.ndarray]], cut: float) -> dict:
    """AP50 and AP50:95 (the best 100 boxes per image) and P / R / F1 at IoU 0.5 of the boxes
    scoring at least `cut`."""
    op = _bench("ships_operating_point")
    tensors = [{k: torch.as_tensor(np.asarray(v)) for k, v in t.items()} for t in truth]
    ap = detection_metrics([op.best_k(f) for f in found], tensors, ["ship"])
    kept = [{k: np.asarray(v)[np.asarray(f["scores"]) >= cut] for k, v in f.items()} for f in found]
    return {"ap50": ap["ap50"], "ap50_95": ap["ap50_95"], "cut": cut, **op.score_cut(kept, truth)}


def cfar_on(path: Path, cfar: ModuleType) -> dict[str, np.ndarray]:
    """The CFAR baseline on a scene's first band: dB from the detected radiometry (an 8-bit
    rendering: its grey levels as they are)."""
    with rasterio.open(path) as ds:
        band = ds.read(1, out_dtype=np.float32) if ds.dtypes[0] != "uint8" else ds.read(1)
        nodata, dtype = ds.nodata, ds.dtypes[0]
        hints = f"{path.name} {ds.descriptions[0] or ''}"
    sample = band[np.isfinite(band)][::97]
    mode, _ = detect_mode(dtype, sample, hints)
    db = to_db(band, mode)  # [H, W]
    if nodata is not None and not np.isnan(nodata):
        db[band == nodata] = np.nan
    return cfar.cfar_boxes(db, log=False)


def ships(weights: Path, work: Path, gsd: str | float = "auto") -> list[dict[str, Any]]:
    """Every ship variant of the held-out hrsid_mini images through the detector (at `--gsd gsd`;
    the JPEGs have no transform and always run native) and the CFAR."""
    from PIL import Image

    op, cfar = _bench("ships_operating_point"), _bench("ship_cfar")
    models = Models("detect", weights, device="cpu")
    cut = float(models.meta.training.get("detection", {}).get("min_score", 0.5))
    _, held_out = op.split_samples(DATA / "hrsid_mini", models, 0.2)
    greys = [np.asarray(Image.open(s.image).convert("L")) for s in held_out]  # [H, W] uint8 each
    rows = []
    for v in ship_variants():
        found, base, truth, read_as, bands = [], [], [], set(), set()
        t0 = time.perf_counter()
        for i, (s, grey) in enumerate(zip(held_out, greys, strict=True)):
            if v.form == "jpeg":
                scene, boxes = s.image, s.boxes
            else:
                scene, boxes = write_ship_variant(grey, s.boxes, v, work / f"ship{i:02d}.tif")
            truth.append({"boxes": np.asarray(boxes, np.float32), "scores": np.ones(len(boxes)),
                          "labels": np.asarray(s.labels, np.int64)})  # fmt: skip
            out = work / f"ship{i:02d}.gpkg"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary = detect_scene(
                    scene,
                    out,
                    models,
                    Options(overwrite=True, gsd=gsd),
                    DetectOptions(min_score=SHIP_LOW_CUT),
                )
            read_as.add(summary.get("input_scale"))
            bands.add(",".join(map(str, summary.get("bands") or [])))
            found.append(gpd_boxes(out).as_dict())
            base.append(cfar_on(Path(scene), cfar))
        model = ship_scores(found, truth, cut)
        baseline = ship_scores(base, truth, 0.0)
        row = {
            "set": f"hrsid_mini held out ({len(held_out)})",
            "variant": v.name,
            "pixels": f"{round(greys[0].shape[1] / v.factor)}² px",
            "methods": {"model": model, "baseline": baseline},
            "read_as": sorted(x for x in read_as if x),
            "bands": sorted(bands),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(
            f"ships {v.name}: model AP50 {model['ap50']:.3f} F1 {model['f1']:.3f}  "
            f"CFAR AP50 {baseline['ap50']:.3f} F1 {baseline['f1']:.3f}  (read as {row['read_as']})",
            file=sys.stderr,
            flush=True,
        )
    return rows


# --- tables ---------------------------------------------------------------------------------


def _f(x: float | None, sign: bool = False) -> str:
    """Three decimals; a difference with its sign (a true minus, as the docs write it)."""
    return "—" if x is None else (f"{x:+.3f}".replace("-", "−") if sign else f"{x:.3f}")


def water_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per set / variant; the shipped model at `--gsd auto` (the default) and
    at `--gsd native`, the baseline, and model − baseline."""
    head = ["set", "variant", "pixels", "model IoU (`--gsd auto`, default)", "model IoU (`--gsd native`)"]
    head += ["baseline IoU (`--method threshold`)", "model − baseline"]
    hybrid = any("hybrid" in r["methods"] for r in rows)
    head += ["hybrid IoU (`--method hybrid`)"] if hybrid else []
    head += ["read as"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        m = {k: v["water_iou"] for k, v in r["methods"].items()}
        b = m.get("baseline")
        cells = [r["set"], r["variant"], r.get("pixels", "256×256 each"), _f(m.get("model"))]
        cells += [_f(m.get("native", m.get("model"))), _f(b), _f(m["model"] - b, sign=True)]
        cells += [_f(m.get("hybrid"))] if hybrid else []
        cells += [", ".join(r.get("read_as", [])) or "uint8"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ship_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per variant; the detector (AP50, AP50:95, P / R / F1 at its stored cut)
    beside the CFAR baseline (AP50, F1) and model − baseline in AP50."""
    head = ["set", "variant", "model AP50", "model AP50:95", "model P / R / F1 at its cut"]
    head += ["CFAR AP50", "CFAR F1", "AP50 model − CFAR", "read as"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        m, b = r["methods"]["model"], r["methods"]["baseline"]
        prf = " / ".join(_f(m[k]) for k in ("precision", "recall", "f1"))
        cells = [r["set"], r["variant"], _f(m["ap50"]), _f(m["ap50_95"]), prf, _f(b["ap50"]), _f(b["f1"])]
        cells += [_f(m["ap50"] - b["ap50"], sign=True), ", ".join(r["read_as"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mstar_table(res: dict[str, Any]) -> str:
    rend = res["renderings"]
    base = rend["standard"]["overall_accuracy"]
    head = ["set", "rendering", "model accuracy", "drop vs standard (points)", "baseline"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in rend.items():
        a = r["overall_accuracy"]
        drop = "—" if name == "standard" else f"{base - a:.2f}"
        lines.append(f"| MSTAR SOC test (15°, {r['chips']}) | {name} | {a:.2f} % | {drop} | none |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--water", type=Path, default=ROOT / "weights" / "sarmae_water.safetensors")
    ap.add_argument("--mstar", type=Path, default=ROOT / "weights" / "sarmae_mstar.safetensors")
    ap.add_argument("--ships", type=Path, default=ROOT / "weights" / "sarmae_ships.safetensors")
    ap.add_argument("--ships-gsd", default="auto", help="--gsd of the ship detector: auto, native or metres")
    ap.add_argument("--skip-water", action="store_true", help="leave the water head out")
    ap.add_argument("--skip-mstar", action="store_true", help="leave the MSTAR classifier out")
    ap.add_argument("--skip-ships", action="store_true", help="leave the ship detector out")
    ap.add_argument("--mstar-json", type=Path, help="renderings from an earlier mstar_renderings.py --json")
    ap.add_argument("--declared-scale", action="store_true", help="--input-scale = the form written")
    ap.add_argument("--hybrid", action="store_true", help="water: also `--method hybrid` (a column)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if not (DATA / "sen1floods11").is_dir():
        sys.exit(f"error: no data in {DATA}; set SARMAE_DATA")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    weights = {"model": args.water}
    res: dict[str, Any] = {"weights": {k: str(v) for k, v in weights.items()}, "data": str(DATA)}
    with tempfile.TemporaryDirectory(prefix="eval_robustness_") as tmp:
        work = Path(tmp)
        if not args.skip_water:
            water = Models("segment", args.water, device="cpu")
            methods: dict[str, Any] = {
                "model": (water, "auto"),
                "native": (water, "native"),
                "baseline": (None, "native"),
            }
            if args.hybrid:
                methods["hybrid"] = (water, "auto")
            hybrid = water if args.hybrid else None
            res["water"] = [
                *sen1floods11(methods, work, args.declared_scale),
                ombria(weights, hybrid, work),
            ]
        if not args.skip_ships:
            (work / "ships").mkdir()
            gsd = args.ships_gsd if args.ships_gsd in ("auto", "native") else float(args.ships_gsd)
            res["ships"] = {
                "weights": str(args.ships),
                "gsd": gsd,
                "rows": ships(args.ships, work / "ships", gsd),
            }
        if not args.skip_mstar:
            (work / "mstar").mkdir()
            res["mstar"] = mstar(args.mstar, args.mstar_json, work / "mstar")
    seconds = time.perf_counter() - t0
    if "water" in res:
        print(f"\n### `{args.water.name}` (water IoU)\n")
        print(water_table(res["water"]))
    if "ships" in res:
        print(f"\n### `{args.ships.name}` (boxes at IoU 0.5; AP from a 0.05 cut)\n")
        print(ship_table(res["ships"]["rows"]))
    if "mstar" in res:
        print(f"\n### `{args.mstar.name}` (overall accuracy; {res['mstar']['source']})\n")
        print(mstar_table(res["mstar"]))
    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    res["command"], res["seconds"] = cmd, round(seconds, 1)
    print(f"\n`{cmd}`: {seconds:.0f} s wall, {args.threads} thread(s)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
