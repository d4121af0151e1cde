"""Water segmentation accuracy of a weights file, beside a per-image Otsu threshold.

1. OMBRIA S1 test (70 AFTER/MASK pairs, 8-bit renderings): water IoU of the weights (the
   evaluation of `sarmae evaluate`) and of a per-image Otsu threshold (dark =
   water), both accumulated over all test pixels; and, as an upper bound for thresholding,
   the best threshold of each image chosen with its own mask (`oracle_threshold_water_iou`).
2. Sen1Floods11 chip (calibrated VV in dB, 512 x 512, EPSG:4326, hand labels): `sarmae
   segment --bands 1 --input-scale MODE` on the same VV band written as dB, linear power,
   amplitude and uint16 amplitude DN, to show the water head is robust to radiometry; IoU against `LabelHand`
   (-1 and NaN pixels ignored), beside Otsu on the dB values and the best single dB threshold
   chosen with the labels (raw and 5 x 5 median-filtered; an upper bound for thresholding).
3. Sentinel-1 GRD clip (`s1_scenes`, dB, 20 m, no labels): the water fraction found.

    python benchmarks/eval_water.py                       # the shipped water weights
    python benchmarks/eval_water.py -w runs/water.safetensors --json out.json

Needs the data in $SARMAE_DATA (default ../shared/data) and scikit-image (Otsu).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from scipy.ndimage import median_filter
from skimage.filters import threshold_otsu

from sarmae_cli.data.synthetic import as_mode
from sarmae_cli.shipped import SHIPPED, shipped_weights_dir
from sarmae_cli.train.evaluate import evaluate_weights
from sarmae_cli.train.metrics import confusion_matrix, segmentation_metrics

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RADIOMETRIES = ("db", "power", "amplitude", "uint16")


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Water IoU of boolean maps over the valid pixels (truth -1 = ignore)."""
    cm = confusion_matrix(pred.astype(np.int64), truth.astype(np.int64), 2, ignore_index=-1)
    return float(segmentation_metrics(cm, ["land", "water"])["iou"]["water"])


def otsu_water(x: np.ndarray) -> np.ndarray:
    """Dark pixels below the image's Otsu threshold are water."""
    valid = np.isfinite(x)
    return valid & (x < threshold_otsu(x[valid]))


def oracle_counts(x: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """Intersection and union of the dark-pixel threshold (steps of 4 grey levels) that gives
    this image the best water IoU against its own mask: an upper bound for any single
    threshold per image, not a method (it looks at the truth)."""
    best = (0.0, 0, int(mask.sum()))
    for t in range(0, 257, 4):
        water = x < t
        inter, union = int((water & mask).sum()), int((water | mask).sum())
        if union and inter / union > best[0]:
            best = (inter / union, inter, union)
    return best[1], best[2]


def ombria(weights: Path) -> dict[str, float]:
    root = DATA / "ombria_s1" / "test"
    cm = np.zeros((2, 2), np.int64)
    inter = union = 0
    for img in sorted((root / "AFTER").glob("*.png")):
        x = np.asarray(Image.open(img).convert("L"), np.float32)
        mask = np.asarray(Image.open(root / "MASK" / img.name.replace("after", "mask")).convert("L")) > 127
        cm += confusion_matrix(otsu_water(x).astype(np.int64), mask.astype(np.int64), 2)
        i, u = oracle_counts(x, mask)
        inter, union = inter + i, union + u
    otsu = segmentation_metrics(cm, ["land", "water"])["iou"]["water"]
    metrics, _ = evaluate_weights(weights, root, torch.device("cpu"))
    return {
        "model_water_iou": metrics["iou"]["water"],
        "model_miou": metrics["miou"],
        "otsu_water_iou": otsu,
        "oracle_threshold_water_iou": inter / max(union, 1),
    }


def segment(weights: Path, src: Path, dst: Path, scale: str = "auto") -> np.ndarray:
    """`sarmae segment` as a user runs it; returns the class map (255 = nodata)."""
    cmd = ["sarmae", "segment", "-w", str(weights), "--bands", "1", str(src), "-o", str(dst), "-q"]
    cmd += ["--input-scale", scale]
    subprocess.run(cmd, check=True)
    with rasterio.open(dst) as ds:
        return ds.read(1)


def chip_oracle(db: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The best single dB threshold of the chip (steps of 0.25 dB), chosen with its own labels,
    on the raw dB values and after the 5 x 5 median filter of `--method threshold`: an upper
    bound for any one-threshold rule on this chip, not a method (it looks at the truth)."""
    out = {}
    for name, x in (("db", db), ("db_median5", median_filter(np.nan_to_num(db, nan=0.0), 5))):
        scores = [(iou(np.isfinite(db) & (x < t), truth), float(t)) for t in np.arange(-30.0, 0.0, 0.25)]
        best, at = max(scores)
        out[f"oracle_threshold_{name}"], out[f"oracle_threshold_{name}_at"] = best, at
    return out


def sen1floods11(weights: Path, tmp: Path) -> dict[str, float]:
    s1 = next((DATA / "sen1floods11" / "S1").glob("*.tif"))
    label = next((DATA / "sen1floods11" / "Labels").glob("*.tif"))
    with rasterio.open(s1) as ds:
        vv_db, profile = ds.read(1), ds.profile
    with rasterio.open(label) as ds:
        truth = ds.read(1).astype(np.int64)
    valid = np.isfinite(vv_db)
    truth[~valid] = -1
    out = {"otsu_db": iou(otsu_water(np.where(valid, vv_db, np.nan)), truth)}
    out.update(chip_oracle(np.where(valid, vv_db, np.nan), truth))
    power = np.where(valid, 10 ** (vv_db / 10), np.nan).astype(np.float32)
    for mode in RADIOMETRIES:
        data = as_mode(np.nan_to_num(power, nan=1e-10), mode)  # [H, W]
        nodata = 0 if mode == "uint16" else -9999.0
        data = np.where(valid, data, nodata).astype(data.dtype)
        src = tmp / f"s1_{mode}.tif"
        p = {**profile, "count": 1, "dtype": data.dtype.name, "nodata": nodata}
        with rasterio.open(src, "w", **p) as ds:
            ds.write(data, 1)
            if mode == "db":
                ds.update_tags(1, units="dB")
        # amplitude floats below 1 look like power to auto-detection: say what the product is
        pred = segment(weights, src, tmp / f"water_{mode}.tif", mode)
        out[f"model_{mode}"] = iou((pred == 1) & valid, truth)
    return out


def s1_scene(weights: Path, tmp: Path) -> dict[str, float]:
    src = next((DATA / "s1_scenes").glob("*.tif"))
    pred = segment(weights, src, tmp / "s1_scene_water.tif")
    valid = pred != 255
    return {"water_fraction": float((pred[valid] == 1).mean()), "valid_pixels": int(valid.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--weights", type=Path, default=shipped_weights_dir() / SHIPPED["water"])
    ap.add_argument("--json", type=Path, help="Also write the results here.")
    args = ap.parse_args()
    if not (DATA / "ombria_s1").is_dir():
        sys.exit(f"error: no data in {DATA}; set SARMAE_DATA")
    with tempfile.TemporaryDirectory() as t:
        res = {
            "weights": str(args.weights),
            "ombria_test": ombria(args.weights),
            "sen1floods11": sen1floods11(args.weights, Path(t)),
            "s1_scene": s1_scene(args.weights, Path(t)),
        }
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
