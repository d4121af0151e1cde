"""Detection metrics: boxes of whole images by sliding window, COCO average precision
(torchmetrics' MeanAveragePrecision, pycocotools backend) and a precision-recall plot.

    preds = [detect_image(model, x, tile=384, overlap=96) for x, _ in val]
    m = detection_metrics(preds, [t for _, t in val], ["ship"])
    m["ap50"], m["ap50_95"], m["ap_small"]
    save_pr_png(m, Path("ships.pr.png"))

Windows overlap by at least the longest object; each window keeps only the boxes whose centre
lies in its share of the image (the overlaps split at their middle), so an object is found
whole, once, by the window that holds it; class-wise NMS then removes what is left over.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import batched_nms

from sarmae_cli.model.detector import Detector, decode
from sarmae_cli.outputs import atomic_output
from sarmae_cli.train.metrics import window_starts

Target = dict[str, torch.Tensor]


def _shares(starts: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    """The part [lo, hi) of [0, length) each window owns: overlaps split at their middle."""
    out = []
    for i, s in enumerate(starts):
        lo = 0.0 if i == 0 else (s + starts[i - 1] + tile) / 2
        hi = float(length) if i == len(starts) - 1 else (starts[i + 1] + s + tile) / 2
        out.append((lo, hi))
    return out


@torch.no_grad()
def detect_image(
    model: Detector,
    image: torch.Tensor,
    tile: int,
    overlap: int,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    batch_size: int = 8,
    zoom: float = 1.0,
) -> Target:
    """Boxes of a whole prepared image [C, H, W] (see the module doc): `boxes` [M, 4] xyxy in
    image pixels, `scores` [M], `labels` [M]. The model sees the image resized by `zoom`
    (bilinear, as `detect` resamples; `tile` and `overlap` are on that grid); images smaller
    than `tile` are zero-padded."""
    _, h, w = image.shape
    if zoom != 1.0:
        hz, wz = max(1, round(h * zoom)), max(1, round(w * zoom))
        image = F.interpolate(image[None], size=(hz, wz), mode="bilinear", align_corners=False)[0]
    c, hz, wz = image.shape  # [C, H*zoom, W*zoom]
    size = tile
    x = F.pad(image, (0, max(size - wz, 0), 0, max(size - hz, 0)))  # [C, H', W']
    hh, ww = x.shape[1:]
    stride = max(1, size - overlap)
    ys, xs = window_starts(hh, size, stride), window_starts(ww, size, stride)
    own_y, own_x = _shares(ys, size, hh), _shares(xs, size, ww)
    windows = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    boxes, scores, labels = [], [], []
    device = next(model.parameters()).device
    for k in range(0, len(windows), batch_size):
        chunk = windows[k : k + batch_size]
        tiles = torch.stack(
            [x[:, ys[i] : ys[i] + size, xs[j] : xs[j] + size] for i, j in chunk]
        )  # [b, C, t, t]
        dets = decode(model(tiles.to(device)), (size, size), model.strides, score_thresh, nms_thresh, 1000)
        for (i, j), d in zip(chunk, dets, strict=True):
            b = d["boxes"].cpu() + torch.tensor([xs[j], ys[i], xs[j], ys[i]], dtype=torch.float32)
            cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
            mine = (cx >= own_x[j][0]) & (cx < own_x[j][1]) & (cy >= own_y[i][0]) & (cy < own_y[i][1])
            boxes.append(b[mine])
            scores.append(d["scores"].cpu()[mine])
            labels.append(d["labels"].cpu()[mine])
    b, s, lab = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    b = b * torch.tensor([w / wz, h / hz, w / wz, h / hz], dtype=torch.float32)  # back to image pixels
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    keep = batched_nms(b, s, lab, nms_thresh)[:max_detections]
    return {"boxes": b[keep], "scores": s[keep], "labels": lab[keep]}


def _none(v: torch.Tensor) -> float | None:
    """A COCO summary number, or None where it is undefined (-1: no objects of that kind)."""
    f = float(v)
    return None if f < 0 else f


def detection_metrics(
    preds: list[Target], targets: list[Target], class_names: Sequence[str]
) -> dict[str, Any]:
    """COCO box metrics: AP50, AP50:95, AP75, AP by object size (small < 32², medium < 96²,
    large), AR@100, AP50:95 and AP50 per class, and the precision-recall curve at IoU 0.5."""
    mean_ap = MeanAveragePrecision(
        box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True, backend="pycocotools"
    )
    mean_ap.update(
        [{k: v.detach().cpu() for k, v in p.items()} for p in preds],
        [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu()} for t in targets],
    )
    r = mean_ap.compute()
    precision = r["precision"]  # [T iou, R recall, K classes, A areas, M max-dets]; -1 where undefined
    classes = [int(c) for c in torch.atleast_1d(r["classes"])]
    per_ap = torch.atleast_1d(r["map_per_class"])
    per_class: dict[str, float | None] = {n: None for n in class_names}
    per_class50: dict[str, float | None] = {n: None for n in class_names}
    curves: dict[str, list[float]] = {}
    for k, c in enumerate(classes):
        if c >= len(class_names):
            continue
        pr = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
        ap50 = float(pr[pr >= 0].mean()) if (pr >= 0).any() else None
        per_class[class_names[c]] = _none(per_ap[k]) if len(per_ap) > k else None
        per_class50[class_names[c]] = ap50
        curves[class_names[c]] = [max(float(v), 0.0) for v in pr]
    return {
        "ap50": _none(r["map_50"]),
        "ap50_95": _none(r["map"]),
        "ap75": _none(r["map_75"]),
        "ap_small": _none(r["map_small"]),
        "ap_medium": _none(r["map_medium"]),
        "ap_large": _none(r["map_large"]),
        "ar100": _none(r["mar_100"]),
        "per_class_ap50_95": per_class,
        "per_class_ap50": per_class50,
        "num_images": len(targets),
        "num_objects": int(sum(len(t["boxes"]) for t in targets)),
        "num_detections": int(sum(len(p["boxes"]) for p in preds)),
        "class_names": list(class_names),
        "pr_curve": {"iou": 0.5, "recall": np.linspace(0, 1, 101).round(2).tolist(), "precision": curves},
    }


def evaluate_detection(
    model: Detector,
    val: Any,
    class_names: Sequence[str],
    device: torch.device,
    tile: int,
    overlap: int,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
    batch_size: int = 8,
    zoom: float = 1.0,
) -> dict[str, Any]:
    """Metrics of `model` on whole images `val` (items (x [C, H, W], target)) by sliding window
    (the images resized by `zoom` for the model, the boxes scored on the images)."""
    model = model.to(device).eval()
    preds, targets = [], []
    for i in range(len(val)):
        x, t = val[i]
        preds.append(
            detect_image(model, x, tile, overlap, score_thresh, nms_thresh, max_detections, batch_size, zoom)
        )
        targets.append(t)
    m = detection_metrics(preds, targets, class_names)
    m["tile"] = {"size": tile, "overlap": overlap, **({"zoom": zoom} if zoom != 1.0 else {})}
    return m


def headline_detection(m: dict[str, Any]) -> str:
    """One line of the main detection metrics (percent)."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v * 100:.2f}"

    sizes = ", ".join(f"{k} {pct(m[f'ap_{k}'])}" for k in ("small", "medium", "large"))
    return (
        f"AP50 {pct(m['ap50'])}%, AP50:95 {pct(m['ap50_95'])}% (AP by size: {sizes}), "
        f"{m['num_objects']} objects in {m['num_images']} images"
    )


def pr_path(output: Path) -> Path:
    """ships.safetensors -> ships.pr.png (next to the weights)."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".pr.png")


def save_pr_png(m: dict[str, Any], path: Path, title: str = "") -> None:
    """Precision-recall curves at IoU 0.5, one per class, written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = m["pr_curve"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, precision in curve["precision"].items():
        ap = m["per_class_ap50"].get(name)
        label = f"{name} (AP50 {ap * 100:.1f})" if ap is not None else name
        ax.plot(curve["recall"], precision, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or f"precision-recall at IoU {curve['iou']}")
    if curve["precision"]:
        ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(Path(path), overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
