"""Pseudo-labels for self-training the water head on unlabelled scenes (issue 32 item 5).

OMBRIA gives, for every labelled AFTER image, the BEFORE image of the same place: a real
Sentinel-1 scene without a mask. This script runs a teacher (water weights) on those BEFORE
images with the library path of `sarmae segment` (`segment_scene`, the teacher's own input
route and tiles) and keeps its confident pixels as labels: p(water) >= `--hi` becomes water
(255), p(water) <= `--lo` land (0), the rest ignore (128). With `--agree`, a pixel keeps its
label only where the physical threshold (`infer/threshold.threshold_image`, the baseline of
`sarmae segment --method threshold`) says the same; elsewhere it is ignored. It writes a training folder that
`sarmae finetune --task segmentation` reads with `--set data.mask_values=[0,255]
--set data.ignore_value=128`: the labelled images of LABELLED (links) plus the pseudo-labelled
BEFORE images, named `S1_after_bNNNN.png` / `S1_mask_bNNNN.png`.

    python benchmarks/water_self_training.py TEACHER LABELLED OUT [--hi 0.7 --lo 0.3] [--agree] \
        [--preview p.png]

LABELLED is an OMBRIA-style folder (`AFTER/`, `MASK/`), e.g. `ombria_permanent_water.py`'s
`all/` or its split's `train_relabelled/`: only the BEFORE images of the images in it are
used, so a split run never sees the BEFORE images of its held-out places.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image

from sarmae_cli.data import labelled as L
from sarmae_cli.infer.api import Options, segment_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.threshold import threshold_image

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts
from siblings import load  # noqa: E402

_link = load("ombria_permanent_water")._link  # a symlink, its folder made first

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
LAND, IGNORE, WATER = 0, 128, 255


def pseudo_mask(p_water: np.ndarray, lo: float, hi: float, physical: np.ndarray | None = None) -> np.ndarray:
    """[H, W] water probability (NaN = no data), optional [H, W] bool physical water map ->
    [H, W] uint8 mask: 255 water, 0 land, 128 ignore (unsure, or the two maps disagree)."""
    water, land = p_water >= hi, p_water <= lo  # NaN compares False: stays ignore
    if physical is not None:
        water, land = water & physical, land & ~physical
    mask = np.full(p_water.shape, IGNORE, np.uint8)
    mask[water] = WATER
    mask[land] = LAND
    return mask


def teacher_probability(models: Models, image: Path, tmp: Path, opts: Options) -> np.ndarray:
    """[H, W] float32 p(water) of one image, by the library path of `sarmae segment`."""
    out, prob = tmp / "class.tif", tmp / "prob.tif"
    segment_scene(image, out, models, opts, probabilities=prob)
    water = models.class_names.index("water")
    with rasterio.open(prob) as src:
        return src.read(water + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", type=Path, help="water weights (.safetensors) that label the BEFORE images")
    ap.add_argument("labelled", type=Path, help="OMBRIA-style folder (AFTER/, MASK/) of the labelled images")
    ap.add_argument("out", type=Path, help="output training folder")
    ap.add_argument("--before", type=Path, default=DATA / "ombria_s1" / "train" / "BEFORE")
    ap.add_argument("--hi", type=float, default=0.7, help="p(water) at or above: water")
    ap.add_argument("--lo", type=float, default=0.3, help="p(water) at or below: land")
    ap.add_argument(
        "--agree", action="store_true", help="keep a label only where the physical baseline agrees"
    )
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--preview", type=Path, help="PNG of a few BEFORE images beside their pseudo-labels")
    args = ap.parse_args()
    if not 0.0 <= args.lo < args.hi <= 1.0:
        ap.error(f"need 0 <= --lo < --hi <= 1, got {args.lo} and {args.hi}")
    pairs, _ = L.scan_segmentation(args.labelled)
    models = Models("segment", args.teacher, "cpu")
    opts = Options(tile=args.tile, overlap=args.overlap, overwrite=True, gsd="native")
    counts = np.zeros(3)
    views = []
    with tempfile.TemporaryDirectory() as tmp:
        for img, mpath in pairs:
            _link(img, args.out / "AFTER" / img.name)
            _link(mpath, args.out / "MASK" / mpath.name)
            before = args.before / img.name.replace("_after_", "_before_")
            if not before.exists():
                raise SystemExit(
                    f"error: no BEFORE image {before} for {img.name}; give their folder with --before"
                )
            grey = np.asarray(Image.open(before).convert("L"))
            physical = threshold_image(grey.astype(np.float32))[0] if args.agree else None
            p_water = teacher_probability(models, before, Path(tmp), opts)
            mask = pseudo_mask(p_water, args.lo, args.hi, physical)
            stem = img.name.replace("_after_", "_after_b")
            _link(before, args.out / "AFTER" / stem)
            Image.fromarray(mask).save(args.out / "MASK" / mpath.name.replace("_mask_", "_mask_b"))
            counts += [(mask == LAND).mean(), (mask == WATER).mean(), (mask == IGNORE).mean()]
            if args.preview and len(views) < 6 and (mask == WATER).mean() > 0.05:
                views.append(np.concatenate([grey, mask], 1))
    land, water, ignore = counts / max(len(pairs), 1)
    print(
        f"{len(pairs)} labelled + {len(pairs)} pseudo-labelled images -> {args.out}; "
        f"pseudo-label pixels: land {land:.3f}, water {water:.3f}, ignore {ignore:.3f}"
    )
    if args.preview and views:
        Image.fromarray(np.concatenate(views, 0)).save(args.preview)
        print(f"preview -> {args.preview}")


if __name__ == "__main__":
    main()
