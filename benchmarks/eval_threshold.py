"""Water IoU of the physical baseline, `sarmae segment --task water --method threshold`
(split-based tile thresholding of the speckle-filtered image, `sarmae_cli/infer/threshold.py`).

1. OMBRIA S1 (AFTER images + MASK, 8-bit renderings, 256 x 256): one threshold per image by
   the tile method on its grey values (dark = water), IoU accumulated over all pixels of the
   folder, as `benchmarks/eval_water.py` does for its per-image Otsu number (also printed here,
   plain Otsu on the unfiltered image, for reference).
2. Sen1Floods11 chip (VV, band 1, dB; `LabelHand` -1 and NaN pixels ignored): the library
   path of `sarmae segment --method threshold` on the same VV band written as dB, linear
   power, amplitude and uint16 amplitude DN.
3. Sentinel-1 GRD clip (`s1_scenes`, dB, 20 m, no labels): the water fraction found.

With `--method hybrid` every image and scene goes through `sarmae segment --method hybrid`'s
library path instead (`infer/threshold.hybrid_scene`: the threshold guided by the water weights,
`-w` or the shipped ones); the OMBRIA images are then read from their PNG files as `segment`
reads them.

    python benchmarks/eval_threshold.py                       # OMBRIA test, the method's defaults
    python benchmarks/eval_threshold.py --split train --rule ki --ombria-only   # tuning on train
    python benchmarks/eval_threshold.py --method hybrid       # the model-guided threshold

Needs the data in $SARMAE_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from sarmae_cli.data.bimodal import Params, otsu
from sarmae_cli.data.synthetic import as_mode
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.threshold import hybrid_scene, threshold_image, threshold_scene
from sarmae_cli.shipped import shipped_path
from sarmae_cli.train.metrics import confusion_matrix, segmentation_metrics

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RADIOMETRIES = ("db", "power", "amplitude", "uint16")


def water_iou(cm: np.ndarray) -> float:
    return float(segmentation_metrics(cm, ["land", "water"])["iou"]["water"])


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """2 x 2 confusion matrix of boolean water maps; truth -1 = ignore."""
    return confusion_matrix(pred.astype(np.int64), truth.astype(np.int64), 2, ignore_index=-1)


def plain_otsu(x: np.ndarray) -> np.ndarray:
    """Otsu on the unfiltered image (256 bins between its extremes): the reference number."""
    edges = np.linspace(x.min(), x.max(), 257)
    return x < edges[otsu(np.histogram(x, edges)[0]) + 1]


def scene_method(models: Models | None, params: Params):
    """The library path of `sarmae segment --method threshold` (models None) or `hybrid`:
    (input, output, input scale) -> summary."""

    def run(src: Path, out: Path, mode: str = "auto") -> dict:
        opts = Options(input_scale=mode, overwrite=True)
        if models is None:
            return threshold_scene(src, out, opts, params=params)
        return hybrid_scene(src, out, models, opts, params=params)

    return run


def ombria(
    split: str, params: Params, models: Models | None = None, tmp: Path | None = None
) -> dict[str, float]:
    root = DATA / "ombria_s1" / split
    cm_tiles, cm_otsu = np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)
    bimodal = fallback = n = 0
    for img in sorted((root / "AFTER").glob("*.png")):
        x = np.asarray(Image.open(img).convert("L"), np.float32)
        mask = np.asarray(Image.open(root / "MASK" / img.name.replace("after", "mask")).convert("L")) > 127
        if models is None:
            water, t = threshold_image(x, params)
            bimodal, fallback = bimodal + t.bimodal, fallback + t.fallback
        else:
            assert tmp is not None
            s = scene_method(models, params)(img, tmp / "ombria.tif")
            with rasterio.open(tmp / "ombria.tif") as ds:
                water = ds.read(1) == 1
            bimodal, fallback = bimodal + s["tiles_bimodal"], fallback + (s["tiles_bimodal"] == 0)
        cm_tiles += counts(water, mask)
        cm_otsu += counts(plain_otsu(x), mask)
        n += 1
    return {
        "images": n,
        "threshold_water_iou": water_iou(cm_tiles),
        "threshold_miou": float(segmentation_metrics(cm_tiles, ["land", "water"])["miou"]),
        "images_without_bimodal_tile": fallback,
        "mean_bimodal_tiles": bimodal / max(n, 1),
        "plain_otsu_water_iou": water_iou(cm_otsu),
    }


def sen1floods11(tmp: Path, params: Params, models: Models | None = None) -> dict[str, float]:
    s1 = next((DATA / "sen1floods11" / "S1").glob("*.tif"))
    label = next((DATA / "sen1floods11" / "Labels").glob("*.tif"))
    with rasterio.open(s1) as ds:
        vv_db, profile = ds.read(1), ds.profile
    with rasterio.open(label) as ds:
        truth = ds.read(1).astype(np.int64)
    valid = np.isfinite(vv_db)
    truth[~valid] = -1
    out = {"plain_otsu_db": water_iou(counts(plain_otsu(np.where(valid, vv_db, np.nanmedian(vv_db))), truth))}
    power = np.where(valid, 10 ** (vv_db / 10), np.nan).astype(np.float32)
    for mode in RADIOMETRIES:
        data = as_mode(np.nan_to_num(power, nan=1e-10), mode)  # [H, W]
        nodata = 0 if mode == "uint16" else -9999.0
        data = np.where(valid, data, nodata).astype(data.dtype)
        src = tmp / f"s1_{mode}.tif"
        with rasterio.open(
            src, "w", **{**profile, "count": 1, "dtype": data.dtype.name, "nodata": nodata}
        ) as ds:
            ds.write(data, 1)
        s = scene_method(models, params)(src, tmp / f"water_{mode}.tif", mode)
        with rasterio.open(tmp / f"water_{mode}.tif") as ds:
            pred = ds.read(1)
        out[f"threshold_{mode}"] = water_iou(counts((pred == 1) & valid, truth))
        out[f"threshold_value_{mode}"] = s["threshold"]
        out[f"bimodal_tiles_{mode}"] = f"{s['tiles_bimodal']} of {s['tiles']}"
    return out


def s1_scene(tmp: Path, params: Params, models: Models | None = None) -> dict[str, float]:
    src = next((DATA / "s1_scenes").glob("*.tif"))
    s = scene_method(models, params)(src, tmp / "s1_scene_water.tif")
    with rasterio.open(tmp / "s1_scene_water.tif") as ds:
        pred = ds.read(1)
    valid = pred != 255
    return {"water_fraction": float((pred[valid] == 1).mean()), "threshold_db": s["threshold"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="test", help="OMBRIA folder: test (default) or train")
    ap.add_argument("--rule", choices=("otsu", "ki"), default=Params.rule, help="pooled-tile threshold")
    ap.add_argument("--ombria-only", action="store_true", help="only the OMBRIA folder")
    ap.add_argument("--method", choices=("threshold", "hybrid"), default="threshold")
    ap.add_argument("-w", "--weights", type=Path, help="water weights of --method hybrid (default: shipped)")
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    if not (DATA / "ombria_s1").is_dir():
        sys.exit(f"error: no data in {DATA}; set SARMAE_DATA")
    params = Params(rule=args.rule)
    weights = args.weights or shipped_path("water")
    models = Models("segment", weights, device="cpu") if args.method == "hybrid" else None
    t0 = time.perf_counter()
    res: dict = {"params": params.__dict__, "method": args.method}
    with tempfile.TemporaryDirectory() as t:
        res[f"ombria_{args.split}"] = ombria(args.split, params, models, Path(t))
        if not args.ombria_only:
            res["sen1floods11"] = sen1floods11(Path(t), params, models)
            res["s1_scene"] = s1_scene(Path(t), params, models)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
