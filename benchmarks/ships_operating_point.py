"""The operating point of the ship detector: precision, recall and F1 at IoU >= 0.5 of
`sarmae detect` for a range of `--min-score` cut-offs, and the cut that maximises F1.

Data: the images of a labelled detection set (hrsid_mini: images/ + masks/) that the weights'
own split holds out (`--val-fraction`, the stored `data.group_by` and split seed: the images
`sarmae evaluate DATA --val-fraction 0.2 -w W` scores); `--train-scenes` also scores the rest
as a second view, which takes no part in the choice.

Detections: `sarmae detect`'s library path (`infer/detect.py: detect_scene`, the stored tile,
overlap and NMS IoU), one run per cut and image, so each row is what `sarmae detect
--min-score T` returns (a run at a low cut filtered afterwards is not the same: each tile keeps
at most 300 boxes). Matching: one-to-one, highest score first, at IoU >= 0.5 (torchvision
`box_iou`, `export/box_parity.py: match`), counts summed over the images; F1 = 2 TP / (2 TP +
FP + FN). The chosen cut has the highest held-out F1; of equal F1, the lowest cut.

As a check that the detect path reads these images as `sarmae evaluate` does, AP50 (torchmetrics,
as `sarmae evaluate`) of the boxes at the lowest cut, the best 100 per image, is printed too.

    OMP_NUM_THREADS=1 python benchmarks/ships_operating_point.py --train-scenes --json op.json

Needs the data in $SARMAE_DATA (default ../shared/data). Never give it a test folder.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarmae_cli.data.detection_labels import BoxSample, scan_detection
from sarmae_cli.demo import gpd_boxes
from sarmae_cli.export.box_parity import Dets, match
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.detect import DetectOptions, detect_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.train.detection_dataset import group_split, image_group
from sarmae_cli.train.detection_eval import detection_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SARMAE_DATA", ROOT.parent / "shared" / "data"))
WEIGHTS = ROOT / "weights" / "sarmae_ships.safetensors"
#: The cut-offs scored: 0.05, 0.10, ..., 0.95.
CUTS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def score_cut(found: Sequence[Dets], truth: Sequence[Dets], iou: float = 0.5) -> dict[str, Any]:
    """Counts over images (`found[i]` against `truth[i]`, matched one-to-one at IoU >= `iou`)
    and precision (None without detections), recall (None without objects) and F1."""
    tp = fp = fn = 0
    for f, t in zip(found, truth, strict=True):
        a, b, c = match(f, t, iou)
        tp, fp, fn = tp + a, fp + b, fn + c
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
    }


def sweep(
    found_at: Mapping[float, Sequence[Dets]], truth: Sequence[Dets], iou: float = 0.5
) -> list[dict[str, Any]]:
    """One row per cut (`found_at[cut]`: the detections at that cut, per image), lowest first."""
    return [{"cut": cut, **score_cut(found_at[cut], truth, iou)} for cut in sorted(found_at)]


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The row with the highest F1; of equal F1 (from the same counts), the lowest cut."""
    scored = [r for r in rows if r["f1"] is not None]
    if not scored:
        raise ValueError("no cut has an F1: the images hold no objects and no detections")
    best = max(r["f1"] for r in scored)
    return min((r for r in scored if abs(r["f1"] - best) < 1e-12), key=lambda r: r["cut"])


def split_samples(data: Path, models: Models, val_fraction: float) -> tuple[list[BoxSample], list[BoxSample]]:
    """(training, held-out) labelled images of `data`, split as the weights' fine-tuning split
    them (`sarmae evaluate --val-fraction` picks the held-out ones the same way)."""
    cfg = models.meta.training.get("config", {})
    names = list(models.meta.class_names or [])
    min_size = float(cfg.get("detection", {}).get("min_box_size", 1.0))
    index = scan_detection(data, names, min_size)
    seed = int(cfg.get("data", {}).get("split_seed") or 0)
    return group_split(index.samples, val_fraction, seed, cfg.get("data", {}).get("group_by"))


def truth_of(samples: Sequence[BoxSample]) -> list[Dets]:
    """The true boxes of each image as a detection set (score 1)."""
    return [{"boxes": s.boxes, "scores": np.ones(len(s.boxes)), "labels": s.labels} for s in samples]


def detect_at(models: Models, images: Sequence[Path], cut: float, workdir: Path) -> list[Dets]:
    """`sarmae detect --min-score cut` on each image (GeoPackages in `workdir`, read back)."""
    found = []
    for image in images:
        out = workdir / f"{image.stem}.gpkg"
        with warnings.catch_warnings():  # plain images: no CRS, said once per file otherwise
            warnings.simplefilter("ignore")
            detect_scene(image, out, models, Options(overwrite=True), DetectOptions(min_score=cut))
        found.append(gpd_boxes(out).as_dict())
    return found


def best_k(d: Dets, k: int = 100) -> dict[str, torch.Tensor]:
    """The `k` highest-scoring boxes of `d` as tensors (what `sarmae evaluate` keeps per image)."""
    order = np.argsort(-np.asarray(d["scores"]), kind="stable")[:k]
    return {
        "boxes": torch.as_tensor(np.asarray(d["boxes"], np.float32)[order]).reshape(-1, 4),
        "scores": torch.as_tensor(np.asarray(d["scores"], np.float32)[order]),
        "labels": torch.as_tensor(np.asarray(d["labels"], np.int64)[order]),
    }


def scenes_view(
    models: Models,
    samples: Sequence[BoxSample],
    cuts: Sequence[float],
    iou: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The rows of one set of images, the chosen row and the AP50 check at the lowest cut."""
    group_by = models.meta.training.get("config", {}).get("data", {}).get("group_by")
    images, truth = [s.image for s in samples], truth_of(samples)
    found_at: dict[float, list[Dets]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for cut in sorted(cuts):
            found_at[cut] = detect_at(models, images, cut, Path(tmp))
            say(f"  cut {cut:g}: {sum(len(f['boxes']) for f in found_at[cut])} boxes")
    rows = sweep(found_at, truth, iou)
    low = min(cuts)
    tensors = [{k: torch.as_tensor(np.asarray(v)) for k, v in t.items()} for t in truth]
    ap = detection_metrics([best_k(f) for f in found_at[low]], tensors, list(models.class_names))
    return {
        "images": len(images),
        "groups": sorted({image_group(s.image, group_by) for s in samples}),
        "objects": int(sum(len(t["boxes"]) for t in truth)),
        "rows": rows,
        "chosen": choose(rows),
        "ap50_at_lowest_cut": ap["ap50"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def table(view: dict[str, Any]) -> str:
    """A Markdown table of one view's rows, the chosen one in bold."""

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["| cut | boxes | TP | FP | FN | precision | recall | F1 |", "| --- " * 8 + "|"]
    for r in view["rows"]:
        cells = [f"{r['cut']:g}", str(r["tp"] + r["fp"]), str(r["tp"]), str(r["fp"]), str(r["fn"])]
        cells += [f(r["precision"]), f(r["recall"]), f(r["f1"])]
        if r["cut"] == view["chosen"]["cut"]:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", type=Path, default=DATA / "hrsid_mini", help="labelled detection set")
    ap.add_argument("-w", "--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--cuts", default=",".join(f"{c:g}" for c in CUTS), help="comma-separated cut-offs")
    ap.add_argument("--iou", type=float, default=0.5)
    ap.add_argument("--train-scenes", action="store_true", help="also score the training images")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="write the rows and choices here")
    args = ap.parse_args()
    if "test" in args.data.parts:
        ap.error(f"{args.data} is a test folder: the operating point is never chosen on test data")
    cuts = sorted({float(c) for c in args.cuts.split(",") if c.strip()})
    models = Models("detect", args.weights, args.device)
    train, held_out = split_samples(args.data, models, args.val_fraction)

    def say(msg: str) -> None:
        print(msg, flush=True)

    doc: dict[str, Any] = {"weights": str(args.weights), "data": str(args.data), "iou": args.iou}
    doc["command"] = shlex.join(["python", "benchmarks/ships_operating_point.py", *sys.argv[1:]])
    say(f"held-out images ({len(held_out)}):")
    doc["held_out"] = scenes_view(models, held_out, cuts, args.iou, say)
    if args.train_scenes:
        say(f"training images ({len(train)}):")
        doc["training"] = scenes_view(models, train, cuts, args.iou, say)
    for key in ("held_out", "training"):
        if key not in doc:
            continue
        v = doc[key]
        say(
            f"\n{key.replace('_', '-')}: {v['images']} images of {', '.join(v['groups'])}, {v['objects']} "
            f"objects; AP50 of the boxes at cut {min(cuts):g} (best 100 per image): "
            f"{v['ap50_at_lowest_cut']:.3f}"
        )
        say(table(v))
        c = v["chosen"]
        say(f"highest F1: {c['f1']:.3f} at cut {c['cut']:g} ({v['seconds']:.0f} s)")
    say(f"\nchosen operating point (held-out F1): --min-score {doc['held_out']['chosen']['cut']:g}")
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
