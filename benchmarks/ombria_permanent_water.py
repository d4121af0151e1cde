"""OMBRIA's masks with permanent water labelled water (or ignore) (issue 32 item 5: label sources).

OMBRIA's masks mark the flood extent in the AFTER image, so rivers and lakes that were water
before the flood are labelled land (e.g. `S1_mask_0453`: a river, dark in both images, land in
the mask). A head trained on them is taught that some open water is land. This script writes a
copy of an OMBRIA folder in which a pixel labelled land becomes water (255; with `--as ignore`,
ignore: 128) when the physical threshold (`infer/threshold.threshold_image`) calls it water in
both the BEFORE and the AFTER image. An image keeps its mask when either threshold is a fallback
(no bimodal tile) or when more than `--max-share` of it would change (a failing threshold). The
rule was fixed on the training folder, before any run (`runs/RULES.md`); `--as ignore` was tried
first, then `--as water`, each on the validation split; `--touching 3` (only dark regions that
touch the flood) after the `--as water` head was found to call dark fields on dry land water.

    python benchmarks/ombria_permanent_water.py OUT [--as water|ignore] [--touching K] [--split] \
        [--preview perm.png]

writes `OUT/all/{AFTER,MASK}` (images linked, masks rewritten) that `sarmae finetune --task
segmentation` reads with `--set data.mask_values=[0,255] --set data.ignore_value=128`; with
`--split`, also the validation split of `finetune --val-fraction 0.2` (seed 0) as
`OUT/{train,held}_{relabelled,original}/` (links), to compare runs on the same held-out images.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from sarmae_cli.data import labelled as L
from sarmae_cli.infer.threshold import threshold_image

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
IGNORE, WATER = 128, 255


def ambiguous(
    before: np.ndarray, after: np.ndarray, mask: np.ndarray, max_share: float, touching: int | None = None
) -> np.ndarray:
    """[H, W] grey BEFORE and AFTER images and 0/255 mask -> [H, W] bool: land in the mask, dark
    (water) in both images by the physical threshold; all False when the rule cannot be trusted.
    With `touching=k`, only the dark regions (8-connected) that touch the flood mask grown by k
    pixels: a river the flood spread from, not a dark field somewhere else in the image."""
    water_b, t_b = threshold_image(before.astype(np.float32))
    water_a, t_a = threshold_image(after.astype(np.float32))
    amb = water_b & water_a & (mask < 128)
    if t_b.fallback or t_a.fallback or amb.mean() > max_share:
        return np.zeros_like(amb)
    if touching is not None:
        regions, _ = ndimage.label(amb, structure=np.ones((3, 3)))
        flood = ndimage.binary_dilation(mask >= 128, iterations=touching) if touching else mask >= 128
        keep = np.unique(regions[flood & amb])
        amb = np.isin(regions, keep[keep > 0])
    return amb


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists():
        dst.symlink_to(src.resolve())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output folder")
    ap.add_argument("--data", type=Path, default=DATA / "ombria_s1" / "train")
    ap.add_argument("--max-share", type=float, default=0.5, help="leave an image unchanged above this share")
    ap.add_argument("--as", dest="label", choices=["water", "ignore"], default="water", help="new label")
    ap.add_argument(
        "--touching", type=int, metavar="K", help="only dark regions that touch the flood mask grown by K px"
    )
    ap.add_argument("--split", action="store_true", help="also write the 0.2 / seed 0 validation split")
    ap.add_argument("--preview", type=Path, help="PNG of a few images: BEFORE, AFTER, mask, new mask")
    args = ap.parse_args()
    pairs, _ = L.scan_segmentation(args.data)
    all_dir = args.out / "all"
    (all_dir / "MASK").mkdir(parents=True, exist_ok=True)
    changed, shares, views = 0, [], []
    new_masks = {}
    for img, mpath in pairs:
        before_path = args.data / "BEFORE" / img.name.replace("_after_", "_before_")
        after = np.asarray(Image.open(img).convert("L"))
        before = np.asarray(Image.open(before_path).convert("L"))
        mask = np.asarray(Image.open(mpath).convert("L"))
        amb = ambiguous(before, after, mask, args.max_share, args.touching)
        new = np.where(amb, WATER if args.label == "water" else IGNORE, mask).astype(np.uint8)
        changed += bool(amb.any())
        shares.append(amb.mean())
        _link(img, all_dir / "AFTER" / img.name)
        out_mask = all_dir / "MASK" / mpath.name
        Image.fromarray(new).save(out_mask)
        new_masks[img] = out_mask
        if args.preview and amb.mean() > 0.05 and len(views) < 6:
            views.append(np.concatenate([before, after, mask, new], 1))
    print(
        f"{len(pairs)} images, {changed} relabelled; share of all pixels made {args.label} "
        f"{np.mean(shares):.3f} (-> {all_dir})"
    )
    if args.split:
        train, held = L.holdout_pairs(pairs, 0.2, 0)
        for name, part in (("train", train), ("held", held)):
            for img, mpath in part:
                _link(img, args.out / f"{name}_relabelled" / "AFTER" / img.name)
                _link(new_masks[img], args.out / f"{name}_relabelled" / "MASK" / mpath.name)
                _link(img, args.out / f"{name}_original" / "AFTER" / img.name)
                _link(mpath, args.out / f"{name}_original" / "MASK" / mpath.name)
        print(f"split: {len(train)} train, {len(held)} held out")
    if args.preview and views:
        Image.fromarray(np.concatenate(views, 0)).save(args.preview)
        print(f"preview -> {args.preview}")


if __name__ == "__main__":
    main()
