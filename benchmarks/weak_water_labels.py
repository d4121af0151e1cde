"""Weak land labels for the SAR chips of `paired_s1s2` from their optical halves (issue 32 item 5).

Each Sentinel-1 VH chip has a co-registered Sentinel-2 true-colour chip. A pixel is labelled
land (0) when the optical pixel is bright, or clearly vegetated or bare (green or red above
blue by a margin), whatever the SAR looks like, so dark SAR land (radar shadow, smooth
surfaces, the urban streets the physical threshold takes for water) becomes a hard negative;
every other pixel is ignored (128). No pixel is labelled water: with `--water` the rule "dark,
blue-dominant optical pixel that the SAR threshold (`infer/threshold.threshold_image`) also
calls water" was tried first, and on the 31 chips where it fired it marked mountain shadows (dark
blue in true colour, dark in SAR), not water (`--preview`): these scenes (Los Angeles, Texas,
India) hold almost no open water, and true colour cannot tell it from terrain shadow.

The rule was fixed by looking at a handful of chips, not at any evaluation set. It writes a
training folder `OUT/{AFTER,MASK}/<id>.png` that `sarmae finetune --task segmentation` reads with
`--set data.mask_values=[0,255] --set data.ignore_value=128` (OMBRIA's masks are 0/255 too):

    python benchmarks/weak_water_labels.py /work/runs/weak --preview weak.png
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image

from sarmae_cli.infer.threshold import threshold_image

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def optical_classes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[H, W, 3] uint8 true colour -> (water, land) bool maps; neither = ambiguous."""
    r, g, b = (rgb[..., i].astype(np.int16) for i in range(3))
    bright = rgb.max(axis=-1)
    water = (bright < 90) & (b >= r) & (g <= b + 10)
    land = (bright > 130) | (g > b + 12) | (r > b + 15)
    return water & ~land, land


def weak_label(sar: np.ndarray, rgb: np.ndarray, water: bool = False) -> np.ndarray:
    """[H, W] uint8 SAR + [H, W, 3] optical -> [H, W] uint8 mask: 0 land, 128 ignore (and 255
    water with `water`, the rejected rule)."""
    sar_water, _ = threshold_image(sar.astype(np.float32))
    opt_water, opt_land = optical_classes(rgb)
    mask = np.full(sar.shape, 128, np.uint8)
    mask[opt_land] = 0
    if water:
        mask[opt_water & sar_water] = 255
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder (gets AFTER/ and MASK/)")
    ap.add_argument("--data", type=Path, default=DATA / "paired_s1s2")
    ap.add_argument("--preview", type=Path, help="PNG of a few chips: SAR, optical, weak mask")
    ap.add_argument("--water", action="store_true", help="also label water (the rejected rule)")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.data / "pairs.csv")))
    (args.out / "AFTER").mkdir(parents=True, exist_ok=True)
    (args.out / "MASK").mkdir(parents=True, exist_ok=True)
    shares, views = [], []
    for row in rows:
        sar = np.asarray(Image.open(args.data / row["sar"]).convert("L"))
        rgb = np.asarray(Image.open(args.data / row["opt"]).convert("RGB"))
        mask = weak_label(sar, rgb, args.water)
        Image.fromarray(sar).save(args.out / "AFTER" / f"{row['id']}.png")
        Image.fromarray(mask).save(args.out / "MASK" / f"{row['id']}.png")
        shares.append([(mask == v).mean() for v in (0, 255, 128)])
        if (
            args.preview
            and (mask != 128).mean() > 0.01
            and (not args.water or (mask == 255).mean() > 0.01)
            and len(views) < 6
        ):
            views.append(np.concatenate([np.stack([sar] * 3, -1), rgb, np.stack([mask] * 3, -1)], 1))
    s = np.array(shares)
    print(
        f"{len(rows)} chips: land {s[:, 0].mean():.3f}, water {s[:, 1].mean():.3f}, "
        f"ignored {s[:, 2].mean():.3f} of the pixels; {int((s[:, 1] > 0.01).sum())} chips with > 1 % water"
    )
    if args.preview and views:
        Image.fromarray(np.concatenate(views, 0)).save(args.preview)


if __name__ == "__main__":
    main()
