"""Water IoU of a segmentation weights file against the threshold on its water probability.

    python benchmarks/water_threshold.py sel_w12.safetensors holdout   # 20 % of OMBRIA train held out
    python benchmarks/water_threshold.py weights/sarmae_water.safetensors test
    python benchmarks/water_threshold.py sel_w12.safetensors holdout --tta 8   # + flips/rotations

`holdout` is the validation split that `sarmae finetune --val-fraction 0.2` holds out of
ombria_s1/train (split seed 0), so a threshold can be chosen without the test folder; any
other name is a folder of ombria_s1. Windows, preprocessing and mask coding are those stored
in the weights (as `sarmae evaluate`); IoU is accumulated over all pixels.
`--tta N` averages the probabilities of each window over N of its flips and quarter turns
(2: identity and left-right flip; 4: also the half turn and its flip; 8: all eight), each
mapped back before averaging (test-time augmentation).
Needs the data in $SARMAE_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

import sarmae_cli.data.labelled as L
from sarmae_cli.model.factory import load_model
from sarmae_cli.train import metrics
from sarmae_cli.train.evaluate import stored_spec

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("split", help="'holdout' (of ombria_s1/train) or a folder name of ombria_s1, e.g. test")
    ap.add_argument("--water-class", type=int, default=1)
    ap.add_argument("--tta", type=int, choices=(1, 2, 4, 8), default=1, help="flips/turns averaged")
    args = ap.parse_args()
    root = DATA / "ombria_s1"
    if not root.is_dir():
        sys.exit(f"error: no OMBRIA data in {root}; set SARMAE_DATA")
    model, meta = load_model(args.weights)
    spec = stored_spec(meta)
    size = spec.chip_size
    pairs = L.scan_segmentation(root / ("train" if args.split == "holdout" else args.split))[0]
    if args.split == "holdout":  # what `sarmae finetune --val-fraction 0.2` holds out (split seed 0)
        pairs = L.holdout_pairs(pairs, 0.2, 0)[1]
    images, masks, _ = L.load_pairs(pairs, L.LoadReport())
    coding = L.MaskCoding(tuple(meta.training["mask_values"]), meta.training.get("ignore_value", -1))
    ds = L.SegmentationDataset(images, [coding.encode(m, "mask") for m in masks], spec)
    stride = size - int(meta.tile.get("overlap", size // 4))
    k = len(meta.class_names)
    thresholds = np.round(np.arange(0.05, 0.96, 0.05), 2)
    inter, union = np.zeros(len(thresholds)), np.zeros(len(thresholds))
    predict = metrics.dihedral_tta(model, args.tta)  # the model itself when --tta 1
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]  # [C, H, W], [H, W]
            logits = metrics.sliding_window_logits(predict, x, k, size, stride)  # [K, H, W]
            p = logits.softmax(0)[args.water_class]  # [H, W]
            valid = y != L.IGNORE_INDEX
            truth = (y == args.water_class) & valid
            for j, t in enumerate(thresholds):
                pred = (p >= t) & valid
                inter[j] += (pred & truth).sum().item()
                union[j] += (pred | truth).sum().item()
    iou = inter / np.maximum(union, 1)
    tta = f", test-time augmentation x{args.tta}" if args.tta > 1 else ""
    print(f"{args.weights} on {args.split} ({len(ds)} images{tta}), water IoU by threshold:")
    for t, v in zip(thresholds, iou, strict=True):
        print(f"  {t:.2f}: {v:.4f}{'   <- best' if v == iou.max() else ''}")


if __name__ == "__main__":
    main()
