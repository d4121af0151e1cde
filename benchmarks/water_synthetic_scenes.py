"""Synthetic water scenes on real land (issue 32 item 5: synthetic scenes from real statistics).

Each scene is a real Sentinel-1 chip of `paired_s1s2` (8-bit VH rendering, 256 x 256; land
texture as the radar saw it) with water bodies painted in: smooth blobs (lakes, floodplains)
and meandering bands 3-15 px wide (rivers). A water pixel's grey level is the chip's land
median minus a contrast, plus a spatially correlated spread; each scene's (contrast, spread)
pair is drawn from the per-image statistics of an OMBRIA-style labelled folder (median of the
land pixels minus median of the water pixels, robust spread of the water pixels, images
with at least 5 % of each class), so the scenes are as dark and as noisy as real flood scenes
in the same kind of rendering. Labels: the painted water 255; elsewhere the weak optical land
label of `weak_water_labels.py` (0, land) or ignore (128).

    python benchmarks/water_synthetic_scenes.py WEAK STATS OUT [--count 125] [--seed 0] [--preview p.png]

WEAK is the output of `weak_water_labels.py` (`AFTER/`, `MASK/`); STATS the labelled folder
whose statistics the water is drawn from (e.g. the training images of a validation split, never
a test folder); OUT gets `AFTER/syn_NNNN.png` and `MASK/syn_NNNN.png`, which `sarmae finetune
--task segmentation` reads with `--set data.mask_values=[0,255] --set data.ignore_value=128`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, gaussian_filter

from sarmae_cli.data import labelled as L

LAND, IGNORE, WATER = 0, 128, 255


def water_statistics(folder: Path, min_share: float = 0.05) -> np.ndarray:
    """[N, 2] (contrast, spread) in grey levels: per image of an OMBRIA-style folder, the land
    median minus the water median and the water pixels' spread from their lower half, (median -
    first quartile) / 0.6745: a Gaussian's standard deviation that the brighter land inside coarse
    flood outlines, which lies in the upper tail, does not inflate."""
    stats = []
    for img, mpath in L.scan_segmentation(folder)[0]:
        grey = np.asarray(Image.open(img).convert("L"), np.float32)
        mask = np.asarray(Image.open(mpath).convert("L"))
        water, land = mask == 255, mask == 0
        if water.mean() >= min_share and land.mean() >= min_share:
            w = grey[water]
            median, q1 = np.percentile(w, [50, 25])
            stats.append((np.median(grey[land]) - median, (median - q1) / 0.6745))
    if not stats:
        raise SystemExit(f"error: no image of {folder} has {min_share:.0%} of both land and water")
    return np.asarray(stats, np.float32)


def water_shape(size: int, rng: np.random.Generator) -> np.ndarray:
    """[size, size] bool: smooth blobs covering 3-35 % of the scene, or a river, or both."""
    shape = np.zeros((size, size), bool)
    kind = rng.integers(3)  # 0 blobs, 1 river, 2 both
    if kind in (0, 2):
        field = gaussian_filter(rng.standard_normal((size, size)), sigma=size / rng.uniform(6, 16))
        shape |= field < np.quantile(field, rng.uniform(0.03, 0.35))
    if kind in (1, 2):
        # a meander: y = a smooth random walk across the scene, widened to 3-15 px
        walk = gaussian_filter(np.cumsum(rng.normal(0, 3, size)), sigma=size / 16)
        y = np.clip(walk - walk.mean() + rng.uniform(0.2, 0.8) * size, 0, size - 1).astype(int)
        centre = np.zeros((size, size), bool)
        centre[y, np.arange(size)] = True
        if rng.random() < 0.5:
            centre = centre.T
        shape |= binary_dilation(centre, iterations=int(rng.integers(1, 8)))
    return shape


def compose(
    grey: np.ndarray, land_label: np.ndarray, contrast: float, spread: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A real [H, W] uint8 chip and its weak label -> (scene with water painted in, its mask)."""
    h = grey.shape[0]
    water = water_shape(h, rng)
    land_median = float(np.median(grey[~water])) if (~water).any() else float(np.median(grey))
    noise = gaussian_filter(rng.standard_normal(grey.shape), sigma=1.0)  # speckle after multilooking
    noise *= spread / max(noise.std(), 1e-6)
    scene = np.where(water, land_median - contrast + noise, grey.astype(np.float32))
    mask = np.where(water, WATER, np.where(land_label == LAND, LAND, IGNORE)).astype(np.uint8)
    return np.clip(np.rint(scene), 0, 255).astype(np.uint8), mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weak", type=Path, help="weak_water_labels.py output (AFTER/, MASK/)")
    ap.add_argument("stats", type=Path, help="labelled OMBRIA-style folder to draw the water statistics from")
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--count", type=int, default=125, help="scenes (one per chip, a seeded draw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preview", type=Path, help="PNG of a few scenes beside their masks")
    args = ap.parse_args()
    stats = water_statistics(args.stats)
    chips = sorted((args.weak / "AFTER").glob("*.png"))
    random.Random(args.seed).shuffle(chips)  # a seeded draw of chips (seed 0: the W runs' 125)
    rng = np.random.default_rng(args.seed)
    for sub in ("AFTER", "MASK"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    views, water_share = [], []
    for i, chip in enumerate(sorted(chips[: args.count])):
        grey = np.asarray(Image.open(chip).convert("L"))
        land = np.asarray(Image.open(args.weak / "MASK" / chip.name).convert("L"))
        contrast, spread = stats[rng.integers(len(stats))]
        scene, mask = compose(grey, land, float(contrast), float(spread), rng)
        Image.fromarray(scene).save(args.out / "AFTER" / f"syn_{i:04d}.png")
        Image.fromarray(mask).save(args.out / "MASK" / f"syn_{i:04d}.png")
        water_share.append((mask == WATER).mean())
        if args.preview and len(views) < 6:
            views.append(np.concatenate([grey, scene, mask], 1))
    print(
        f"{len(water_share)} scenes -> {args.out}; water {np.mean(water_share):.3f} of the pixels; "
        f"contrast {np.median(stats[:, 0]):.1f} grey levels (median of {len(stats)} images), "
        f"spread {np.median(stats[:, 1]):.1f}"
    )
    if args.preview and views:
        Image.fromarray(np.concatenate(views, 0)).save(args.preview)
        print(f"preview -> {args.preview}")


if __name__ == "__main__":
    main()
