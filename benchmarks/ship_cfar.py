"""A physical baseline ship detector for SAR: two-parameter (cell-averaging) CFAR on log intensity.

Each pixel x (in dB: 10 log10 of the linear backscatter, or the given values when already
log-scaled) is compared with the mean and standard deviation of the dB values in a square ring
around it: the background window (half-width `background`) less the guard window (half-width
`guard`), which keeps the ship's own pixels out of its background. A pixel is a detection when
(x - mean) / std > k; detected pixels are grouped into 8-connected components, components smaller
than `min_pixels` are dropped, and each kept component is one box (x1, y1, x2 + 1, y2 + 1) scored
by its peak statistic. This is the operational choice for ship detection in SAR (the
two-parameter CFAR on log intensity of e.g. Sentinel-1 maritime products and SUMO).

The ring statistics are box sums over integral images of the valid-pixel count, sum and sum of
squares, so invalid pixels (NaN; zero or negative linear values, whose dB is undefined) and the
area outside the image simply do not count; a pixel whose ring holds fewer than `min_ring_valid`
of its pixels, or no spread at all, is never detected. Vectorised numpy/scipy: an 800 x 800 image
takes about 0.1 s on one CPU core.

Parameters (`CfarParams`):
  * guard = 20 px, background = 40 px: for 1-3 m pixel ship imagery with ships 10-90 px long, a
    41 px guard window holds a typical ship (and half of the longest), and a 20 px thick ring
    (4880 pixels) gives stable sea statistics while staying local (literature values: guard
    half-width 15-20 px, background out to 30-40 px).
  * min_pixels = 10: the smallest ships (~10 x 3 px) light up at least this many pixels, while
    isolated speckle peaks are a few pixels.
  * k: the only parameter fitted to data. Chosen by `--sweep` on the training images of
    hrsid_mini in the ship detector's own split (`training_samples`:
    `ships_operating_point.split_samples` with the weights' stored `data.group_by` and split
    seed at `--val-fraction` 0.2, the images `sarmae evaluate DATA --val-fraction 0.2 -w W`
    does not score; with the shipped weights the held-out ones are the scenes P0001, P0004,
    P0005, which the sweep never runs on): the JPEG grey levels g read as linear amplitude
    (`grey_amplitude`: power ((g + 0.5) / 256)^2, first band), truth boxes those of the split's
    samples (`sarmae_cli.data.detection_labels.scan_detection`: the masks' 8-connected
    components), detections matched one-to-one to the truth at IoU >= 0.5, highest score first
    (`sarmae_cli.export.box_parity.match`, torchvision `box_iou`); the k of highest F1 of the
    counts summed over the images (ties to the lower k) is the default: k = 2.25, F1 0.383
    (precision 0.277, recall 0.620 on 50 ships; k = 2.0 gives 0.379, k = 2.5 0.333). A higher k
    keeps only parts of the ships: at k = 3 the detection overlapping a ship has a median 0.49
    of its box's area, too small for IoU >= 0.5.

    OMP_NUM_THREADS=1 python benchmarks/ship_cfar.py --sweep      # the table and the chosen k
    OMP_NUM_THREADS=1 python benchmarks/ship_cfar.py scene.tif    # boxes of some images (dB)

Needs the data in $SARMAE_DATA (default ../shared/data) and the ship detector's weights
(`-w`, default weights/sarmae_ships.safetensors: only its stored split is used) for the sweep.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/ is a folder of scripts
from siblings import load  # noqa: E402

if TYPE_CHECKING:
    from sarmae_cli.data.detection_labels import BoxSample

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SARMAE_DATA", ROOT.parent / "shared" / "data"))
#: The ship detector whose stored fine-tuning split gives the sweep its training images.
WEIGHTS = ROOT / "weights" / "sarmae_ships.safetensors"
#: The thresholds the sweep scores: 1.5, 1.75, ..., 6.0.
K_GRID = tuple(1.5 + 0.25 * i for i in range(19))
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class CfarParams:
    guard: int = 20  # half-width of the guard window, pixels
    background: int = 40  # half-width of the background window, pixels
    # threshold in background standard deviations (of dB values): chosen by `--sweep` as the
    # highest F1 of the grid 1.5..6 on the 26 hrsid_mini training images (50 ships): F1 0.383
    # (TP 31, FP 81, FN 19; precision 0.277, recall 0.620)
    k: float = 2.25
    min_pixels: int = 10  # smallest connected component kept
    min_ring_valid: float = 0.2  # least fraction of the ring's pixels that must be valid
    # (a pixel in an image corner keeps about a quarter of its ring)

    def __post_init__(self) -> None:
        if not 0 <= self.guard < self.background:
            raise ValueError(f"need 0 <= guard < background, got {self.guard}, {self.background}")
        if self.min_pixels < 1 or not 0 < self.min_ring_valid <= 1:
            raise ValueError("need min_pixels >= 1 and 0 < min_ring_valid <= 1")


def _box_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum of `a` [H, W] over the (2r+1)^2 window centred on each pixel, zero outside."""
    c = np.pad(a, ((r + 1, r), (r + 1, r))).cumsum(0).cumsum(1)
    n = 2 * r + 1
    return c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]


def cfar_statistic(image: np.ndarray, params: CfarParams = CfarParams(), log: bool = True) -> np.ndarray:
    """(x - mean_bg) / std_bg [H, W] float64 of each pixel against its ring (see `cfar_boxes`
    for `image` and `log`); NaN where the pixel is invalid or its ring unusable."""
    a = np.asarray(image, np.float64)
    if a.ndim != 2:
        raise ValueError(f"expected one band [H, W], got shape {a.shape}")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.where(a > 0, 10.0 * np.log10(np.where(a > 0, a, 1.0)), np.nan)
    else:
        x = a
    valid = np.isfinite(x)
    if not valid.any():
        return np.full(a.shape, np.nan)
    xc = np.where(valid, x - x[valid].mean(), 0.0)  # centred: keeps the sums of squares exact
    stats = []
    for q in (valid.astype(np.float64), xc, xc * xc):
        stats.append(_box_sum(q, params.background) - _box_sum(q, params.guard))
    n, s, ss = stats
    ring = (2 * params.background + 1) ** 2 - (2 * params.guard + 1) ** 2
    n = np.rint(n)  # counts: remove the cumsum's rounding
    usable = valid & (n >= params.min_ring_valid * ring)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s / n
        var = np.maximum(ss / n - mean * mean, 0.0)
        std = np.sqrt(var)
        usable &= std > 1e-9 * (1.0 + np.abs(mean))
        return np.where(usable, (xc - mean) / np.where(usable, std, 1.0), np.nan)


def boxes_from_statistic(stat: np.ndarray, k: float, min_pixels: int) -> dict[str, np.ndarray]:
    """The detections of a statistic map at threshold `k`: 8-connected components of
    stat > k of at least `min_pixels` pixels, boxes XYXY, scored by the peak statistic."""
    comp, count = ndimage.label(stat > k, _EIGHT)  # NaN > k is False: never detected
    sizes = np.bincount(comp.ravel(), minlength=count + 1)
    ids = np.flatnonzero(sizes >= min_pixels)
    ids = ids[ids > 0]
    if len(ids) == 0:
        return {
            "boxes": np.zeros((0, 4), np.float32),
            "scores": np.zeros(0, np.float32),
            "labels": np.zeros(0, np.int64),
        }
    slices = ndimage.find_objects(comp)
    boxes = np.array(
        [
            (slices[i - 1][1].start, slices[i - 1][0].start, slices[i - 1][1].stop, slices[i - 1][0].stop)
            for i in ids
        ],
        np.float32,
    )
    scores = np.asarray(ndimage.maximum(stat, comp, ids), np.float32).reshape(-1)
    return {"boxes": boxes, "scores": scores, "labels": np.zeros(len(ids), np.int64)}


def cfar_boxes(
    image: np.ndarray, params: CfarParams = CfarParams(), log: bool = True
) -> dict[str, np.ndarray]:
    """image [H, W]: one band of SAR backscatter, linear (power or amplitude) when log=True (the
    function takes 10*log10 itself), or already log-scaled / an 8-bit display rendering when log=False.
    NaN = invalid (ignored in the statistics, never detected).
    Returns {"boxes": float32 [N, 4] XYXY pixel boxes (x1, y1, x2+1, y2+1 of each 8-connected
    component of detected pixels), "scores": float32 [N] (the component's peak of (x - mean_bg) / std_bg),
    "labels": int64 [N] zeros}."""
    return boxes_from_statistic(cfar_statistic(image, params, log), params.k, params.min_pixels)


# --------------------------------------------------------------------------- the sweep


def training_samples(data: Path, weights: Path = WEIGHTS, val_fraction: float = 0.2) -> list["BoxSample"]:
    """The training images of a labelled ship set and their truth boxes: the training side of
    the split the detector `weights` were fine-tuned with (`ships_operating_point.split_samples`;
    the held-out side is what `sarmae evaluate DATA --val-fraction F -w W` and the operating
    point score, and is left out here)."""
    from sarmae_cli.infer.models import Models

    op = load("ships_operating_point")
    train, _ = op.split_samples(data, Models("detect", weights, "cpu"), val_fraction)
    return train


def grey_amplitude(grey: np.ndarray) -> np.ndarray:
    """An 8-bit display rendering taken as linear amplitude: (g + 0.5) / 256, in (0, 1) (the
    assumption `eval_robustness.py` writes its calibrated ship variants under, too)."""
    return ((np.asarray(grey, np.float32) + 0.5) / 256.0).astype(np.float32)


def read_power(path: Path) -> np.ndarray:
    """An 8-bit rendering's first band as linear power: `grey_amplitude` squared."""
    from PIL import Image

    g = np.asarray(Image.open(path))
    g = g if g.ndim == 2 else g[..., 0]
    return grey_amplitude(g).astype(np.float64) ** 2


def sweep(
    samples: Sequence["BoxSample"], params: CfarParams = CfarParams(), ks=K_GRID, iou: float = 0.5
) -> dict:
    """Counts, precision, recall and F1 per k over the images of `samples` (the training
    images, `training_samples`) against their boxes, and the chosen k."""
    from sarmae_cli.export.box_parity import match

    truth_of = load("ships_operating_point").truth_of

    if not samples:
        raise ValueError("no training images to sweep k on")
    counts = {k: [0, 0, 0] for k in ks}
    seconds = []
    n_truth = 0
    for s in samples:
        power = read_power(s.image)
        truth = truth_of([s])[0]
        n_truth += len(s.boxes)
        t0 = time.perf_counter()
        stat = cfar_statistic(power, params, log=True)
        boxes_from_statistic(stat, params.k, params.min_pixels)
        seconds.append(time.perf_counter() - t0)
        for k in ks:
            tp, fp, fn = match(boxes_from_statistic(stat, k, params.min_pixels), truth, iou)
            c = counts[k]
            c[0], c[1], c[2] = c[0] + tp, c[1] + fp, c[2] + fn
    rows = []
    for k in ks:
        tp, fp, fn = counts[k]
        rows.append(
            {
                "k": k,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": tp / (tp + fp) if tp + fp else None,
                "recall": tp / (tp + fn) if tp + fn else None,
                "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
            }
        )
    best = max(rows, key=lambda r: (r["f1"], -r["k"]))  # ties to the lower k
    return {
        "images": len(samples),
        "ships": n_truth,
        "params": {**params.__dict__, "k": best["k"]},
        "rows": rows,
        "chosen_k": best["k"],
        "chosen_f1": best["f1"],
        "seconds_per_image": {"median": float(np.median(seconds)), "max": float(np.max(seconds))},
    }


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="*", type=Path, help="images to detect on (one band, dB values)")
    ap.add_argument("--sweep", action="store_true", help="choose k on the hrsid_mini training images")
    ap.add_argument("--data", type=Path, default=DATA / "hrsid_mini", help="hrsid_mini folder")
    ap.add_argument(
        "-w", "--weights", type=Path, default=WEIGHTS, help="ship detector whose stored split --sweep uses"
    )
    ap.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction of that split")
    ap.add_argument("--linear", action="store_true", help="the images are linear backscatter (log=True)")
    ap.add_argument("--json", type=Path, help="write the sweep here too")
    args = ap.parse_args(argv)
    if args.sweep:
        out = sweep(training_samples(args.data, args.weights, args.val_fraction))
        print(f"{out['images']} training images, {out['ships']} ships; params {out['params']}")
        print("     k    TP    FP    FN   prec    rec     F1")
        for r in out["rows"]:
            print(
                f"{r['k']:6.2f} {r['tp']:5d} {r['fp']:5d} {r['fn']:5d} "
                f"{_fmt(r['precision'])} {_fmt(r['recall'])} {_fmt(r['f1'])}"
            )
        t = out["seconds_per_image"]
        print(f"chosen k = {out['chosen_k']:g} (F1 {out['chosen_f1']:.3f}); ", end="")
        print(f"{t['median'] * 1e3:.0f} ms per 800x800 image (median, max {t['max'] * 1e3:.0f} ms)")
        if args.json:
            split = {"data": str(args.data), "weights": str(args.weights), "val_fraction": args.val_fraction}
            args.json.write_text(json.dumps({**split, **out}, indent=1))
        return
    if not args.images:
        ap.error("give images to detect on, or --sweep")
    from sarmae_cli.data.raster import read_image

    for path in args.images:
        band = np.asarray(read_image(path), np.float64)
        band = band[0] if band.ndim == 3 else band
        found = cfar_boxes(band, log=args.linear)
        print(json.dumps({"image": str(path), **{k: v.tolist() for k, v in found.items()}}))


if __name__ == "__main__":
    sys.exit(main())
