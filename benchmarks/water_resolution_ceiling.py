"""Water IoU a perfect map reaches at a coarser resolution: the ceiling a stride sets.

Each OMBRIA mask is averaged over S x S blocks, upsampled bilinearly back to full size and cut
at 0.5, then scored against itself (IoU over all pixels of the folder):

    python benchmarks/water_resolution_ceiling.py test --strides 4 8 16 32

Needs the data in $SARMAE_DATA (default ../shared/data).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("split", help="a folder of ombria_s1, e.g. test")
    ap.add_argument("--strides", type=int, nargs="+", default=[4, 8, 16, 32])
    args = ap.parse_args()
    masks = sorted((DATA / "ombria_s1" / args.split / "MASK").glob("*.png"))
    if not masks:
        raise SystemExit(f"error: no masks in {DATA / 'ombria_s1' / args.split / 'MASK'}; set SARMAE_DATA")
    truth = [torch.from_numpy(np.array(Image.open(m).convert("L")) > 127) for m in masks]
    for s in args.strides:
        inter = union = 0
        for t in truth:
            coarse = F.avg_pool2d(t[None, None].float(), s)  # [1, 1, H/s, W/s]
            up = F.interpolate(coarse, size=t.shape, mode="bilinear", align_corners=False)[0, 0] >= 0.5
            inter += int((up & t).sum())
            union += int((up | t).sum())
        print(f"stride {s:3d}: water IoU ceiling {inter / union:.3f} ({len(masks)} masks)")


if __name__ == "__main__":
    main()
