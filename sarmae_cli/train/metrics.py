"""Evaluation metrics from confusion matrices (rows = true class, columns = predicted class):
accuracy and per-class accuracy for classification, IoU per class and mIoU for segmentation,
sliding-window prediction of whole images, confusion-matrix plots and mean ± std over seeds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sarmae_cli.outputs import atomic_output


def confusion_matrix(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int = -1,
) -> np.ndarray:
    """[K, K] int64 counts: cm[t, p] = number of items of true class t predicted as p.
    Targets equal to `ignore_index` are left out."""
    p = torch.as_tensor(pred).reshape(-1).long().cpu()
    t = torch.as_tensor(target).reshape(-1).long().cpu()
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.numel() and (t.min() < 0 or t.max() >= num_classes):
        raise ValueError(f"target class ids must be in [0, {num_classes}), got {t.min()}..{t.max()}")
    cm = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes).numpy().astype(np.int64)


def _ratio(a: float, b: float) -> float | None:
    """a / b, or None (JSON null) where b is 0: a class without items has no score."""
    return float(a) / float(b) if b else None


def classification_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy, per-class accuracy (recall), their mean, and the matrix itself."""
    cm = np.asarray(cm)
    per_class = {name: _ratio(cm[i, i], cm[i].sum()) for i, name in enumerate(class_names)}
    scored = [v for v in per_class.values() if v is not None]
    return {
        "overall_accuracy": _ratio(np.trace(cm), cm.sum()),
        "mean_class_accuracy": float(np.mean(scored)) if scored else None,
        "per_class_accuracy": per_class,
        "num_samples": int(cm.sum()),
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


def segmentation_metrics(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """IoU per class = TP / (TP + FP + FN), mIoU over classes present in prediction or truth,
    pixel accuracy, and the matrix. A class absent from both has IoU None."""
    cm = np.asarray(cm)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = {name: _ratio(tp[i], union[i]) for i, name in enumerate(class_names)}
    scored = [v for v in iou.values() if v is not None]
    return {
        "miou": float(np.mean(scored)) if scored else None,
        "iou": iou,
        "pixel_accuracy": _ratio(tp.sum(), cm.sum()),
        "num_pixels": int(cm.sum()),
        "class_names": list(class_names),
        "confusion_matrix": cm.tolist(),
    }


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of windows of `tile` every `stride` covering [0, length); the last window
    is shifted back to end at `length`. A length below `tile` gives [0] (the caller pads)."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


@torch.no_grad()
def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    num_classes: int,
    tile: int,
    stride: int,
    batch_size: int = 8,
) -> torch.Tensor:
    """Logits of a whole image [C, H, W] -> [K, H, W] by averaging `tile`-sized windows every
    `stride` pixels (the paper: 512 / 384). Images smaller than `tile` are zero-padded."""
    c, h, w = image.shape
    ph, pw = max(tile - h, 0), max(tile - w, 0)
    x = F.pad(image, (0, pw, 0, ph)) if ph or pw else image  # [C, H', W']
    hh, ww = x.shape[1:]
    boxes = [(y, x0) for y in window_starts(hh, tile, stride) for x0 in window_starts(ww, tile, stride)]
    total = torch.zeros(num_classes, hh, ww, device=image.device)
    count = torch.zeros(1, hh, ww, device=image.device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        tiles = torch.stack([x[:, y : y + tile, x0 : x0 + tile] for y, x0 in chunk])  # [b, C, t, t]
        out = model(tiles).float()  # [b, K, t, t]
        for (y, x0), logit in zip(chunk, out, strict=True):
            total[:, y : y + tile, x0 : x0 + tile] += logit
            count[:, y : y + tile, x0 : x0 + tile] += 1
    return (total / count)[:, :h, :w]  # [K, H, W]


#: (quarter turns, left-right flip) of the dihedral group, in the order `dihedral_tta` takes them.
DIHEDRAL = [(0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True)]


def dihedral_tta(
    model: Callable[[torch.Tensor], torch.Tensor], n: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` averaged over the first `n` dihedral transforms: tiles [B, C, T, T] -> log of the
    mean class probabilities [B, K, T, T] (usable as logits)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(())
        for k, flip in DIHEDRAL[:n]:
            xt = torch.rot90(x, k, (-2, -1))
            xt = xt.flip(-1) if flip else xt
            p = model(xt).float().softmax(1)  # [B, K, T, T] in the transformed frame
            p = p.flip(-1) if flip else p
            total = total + torch.rot90(p, -k, (-2, -1))
        return (total / n).clamp_min(1e-8).log()

    return run


#: Views of `multicrop_tta`: None is the whole chip; (row, col) the corner of a crop in units of
#: the free margin (0.5, 0.5 = centred). Identity first, then the centre, then the four corners.
MULTICROP = [None, (0.5, 0.5), (0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]


def multicrop_tta(
    model: Callable[[torch.Tensor], torch.Tensor], n: int, scale: float = 0.85
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`model` averaged over the first `n` views of `MULTICROP`: chips [B, C, S, S] -> log of the
    mean class probabilities [B, K] (usable as logits). Each crop keeps `scale` of the area
    (side round(sqrt(scale) * S)) and is resized back to S, like the training crops."""
    if not 1 <= n <= len(MULTICROP):
        raise ValueError(f"multicrop_tta takes 1 to {len(MULTICROP)} views, not {n}")

    def run(x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        c = round(scale**0.5 * s)
        total = torch.zeros(())
        for view in MULTICROP[:n]:
            if view is None:
                xv = x
            else:
                y0, x0 = int(view[0] * (s - c)), int(view[1] * (s - c))  # floored: 2 px in at 64
                crop = x[..., y0 : y0 + c, x0 : x0 + c]  # [B, C, c, c]
                xv = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False)
            total = total + model(xv).float().softmax(1)  # [B, K]
        return (total / n).clamp_min(1e-8).log()

    return run


def mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation (n-1; 0 for one value) of the non-None values."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "n": 0}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v)}


def summarize_seeds(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds of every scalar metric and of every per-class score."""
    out: dict[str, Any] = {}
    first = runs[0]
    for key, value in first.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            if key.startswith("num_"):
                continue
            out[key] = mean_std(r.get(key) for r in runs)
        elif isinstance(value, dict):
            out[key] = {k: mean_std(r[key].get(k) for r in runs) for k in value}
    return out


def format_pm(stat: dict[str, float | None], scale: float = 100.0) -> str:
    """'96.70 ± 0.41' (percent by default), or 'n/a'."""
    if stat.get("mean") is None:
        return "n/a"
    return f"{stat['mean'] * scale:.2f} ± {stat['std'] * scale:.2f}"


def save_confusion_png(cm: np.ndarray, class_names: Sequence[str], path: Path, title: str = "") -> None:
    """Row-normalised confusion matrix plot with counts, written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    k = len(class_names)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                color = "white" if norm[i, j] > 0.5 else "black"
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7, color=color)
    fig.tight_layout()
    with atomic_output(Path(path), overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_json(obj: Any, path: Path, overwrite: bool = False) -> None:
    """Write `obj` as indented JSON atomically (NaN-free: non-finite floats become null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    with atomic_output(Path(path), overwrite) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2) + "\n", encoding="utf-8")
