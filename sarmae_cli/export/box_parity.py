"""Comparing detections: boxes against the truth (`match`: true and false positives, misses)
and against the same model on another runtime or precision (`pair_up`, `box_parity`,
`box_agreement`), on a detector's decoded outputs (`model.detector.decode`).

A set of detections is a mapping with `boxes` [M, 4] (xyxy pixels), `scores` [M] and
`labels` [M] (numpy arrays or torch tensors), as `decode` returns per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.ops import box_area, box_iou, clip_boxes_to_image

from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.model.detector import decode, level_sizes, points

Dets = Mapping[str, Any]
#: Detector parity: every point's box (of points scoring PARITY_SCORE or more), and every
#: decoded box scoring FINAL_SCORE or more, the same in both runtimes: IoU >= BOX_IOU, scores
#: within BOX_SCORE.
PARITY_SCORE, FINAL_SCORE, BOX_IOU, BOX_SCORE = 0.05, 0.3, 0.99, 1e-3
#: Boxes whose corners agree to this many pixels are the same box (zero-area boxes too).
SAME_BOX_PX = 1e-3
#: Candidates `decode` keeps per pyramid level before NMS (torchvision FCOS's topk_candidates).
TOPK_CANDIDATES = 1000


def _arrays(d: Dets, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [M, 4] float32, scores [M] float32, labels [M] int64), rows `keep` if given."""
    b = np.asarray(d["boxes"], np.float32).reshape(-1, 4)
    s = np.asarray(d["scores"], np.float32).reshape(-1)
    lab = np.asarray(d["labels"], np.int64).reshape(-1)
    return (b, s, lab) if keep is None else (b[keep], s[keep], lab[keep])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU [Ma, Mb] (torchvision), 1 for boxes that are the same to SAME_BOX_PX (zero-area ones
    have no IoU), 0 otherwise where undefined."""
    ious = np.nan_to_num(box_iou(torch.from_numpy(a.copy()), torch.from_numpy(b.copy())).numpy())
    ious[np.abs(a[:, None] - b[None]).max(-1) <= SAME_BOX_PX] = 1.0
    return ious


def matched_truth(pred: Dets, truth: Dets, iou: float = 0.5) -> np.ndarray:
    """Greedy one-to-one matching of `pred` (highest score first) to `truth` boxes of the same
    class at IoU >= `iou`: which truth boxes were matched, [M] bool."""
    pb, ps, pl = _arrays(pred)
    tb, _, tl = _arrays(truth)
    used = np.zeros(len(tb), bool)
    if len(pb) == 0 or len(tb) == 0:
        return used
    order = np.argsort(-ps, kind="stable")
    ious = _iou(pb[order], tb)
    ious[pl[order][:, None] != tl[None, :]] = 0.0
    for row in ious:
        cand = np.where(~used & (row >= iou))[0]
        if len(cand):
            used[cand[np.argmax(row[cand])]] = True
    return used


def match(pred: Dets, truth: Dets, iou: float = 0.5) -> tuple[int, int, int]:
    """`matched_truth`'s counts: (true positives, false positives, false negatives)."""
    tp = int(matched_truth(pred, truth, iou).sum())
    return tp, len(_arrays(pred)[0]) - tp, len(_arrays(truth)[0]) - tp


def _closest(a: tuple, b: tuple) -> tuple[float, float]:
    """(lowest IoU, largest score difference) of each box of `a` with the box of the same class
    of `b` it overlaps most, of those the one closest in score ((0, 1) when some box of `a` has
    no partner)."""
    (ab, as_, al), (bb, bs, bl) = a, b
    if len(ab) == 0:
        return 1.0, 0.0
    if len(bb) == 0:
        return 0.0, 1.0
    ious = _iou(ab, bb)
    ious[al[:, None] != bl[None, :]] = 0.0
    top = ious.max(1)  # [Ma]
    diff = np.abs(as_[:, None] - bs[None, :])  # [Ma, Mb]
    diff[ious < top[:, None] - 1e-6] = np.inf  # among the best-overlapping partners, the closest score
    return float(top.min()), float(diff.min(1).max())


def pair_up(ref: Dets, other: Dets, skip_below: float = 0.0) -> dict[str, float | int]:
    """How closely `other` reproduces `ref` (e.g. onnxruntime against PyTorch), both ways: each
    box paired with the box of the same class it overlaps most in the other set. Boxes scoring
    below `skip_below` (within rounding of a score cut-off, where a box may fall on either side)
    need no partner but may be one. Returns the box counts, the lowest IoU and the largest
    score difference of the pairs."""
    ra, oa = _arrays(ref), _arrays(other)
    a, b = _arrays(ref, ra[1] >= skip_below), _arrays(other, oa[1] >= skip_below)
    iou_ab, diff_ab = _closest(a, oa)
    iou_ba, diff_ba = _closest(b, ra)
    return {
        "boxes": len(a[0]),
        "boxes_other": len(b[0]),
        "min_iou": min(iou_ab, iou_ba),
        "max_score_diff": max(diff_ab, diff_ba),
    }


def decoded(outputs: list[np.ndarray], meta: WeightsMeta, tile: int, score: float) -> list[Dets]:
    """Decoded boxes of each image of a detector's dense outputs (`model.detector.decode`, the
    weights' strides and NMS threshold; every box that survives NMS, however many)."""
    head = meta.head or {}
    nms = float(((meta.training or {}).get("detection") or {}).get("nms_thresh", 0.6))
    tensors = tuple(torch.as_tensor(np.asarray(o, np.float32)) for o in outputs)
    every = tensors[0].shape[1] * tensors[0].shape[2]
    return decode(tensors, (tile, tile), head["strides"], score, nms, every)


def point_boxes(outputs: list[np.ndarray], meta: WeightsMeta, tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The box of every point [B, N, 4] (decoded and clipped to the tile as `decode` does, with
    torchvision's FCOS box coder, before any score cut, top-k or NMS) and its class scores
    [B, N, K] (FCOS's sqrt(sigmoid(class) x sigmoid(centerness)))."""
    cls, reg, ctr = (torch.as_tensor(np.asarray(o, np.float32)) for o in outputs)
    anchors = torch.cat(points((tile, tile), (meta.head or {})["strides"]))  # [N, 4]
    coder = BoxLinearCoder(normalize_by_size=True)
    boxes = torch.stack([clip_boxes_to_image(coder.decode(r, anchors), (tile, tile)) for r in reg])
    return boxes, torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr))


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of box a[i] with box b[i] [M]; 1 for boxes the same to SAME_BOX_PX (zero-area too)."""
    inter = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    iou = inter / (box_area(a) + box_area(b) - inter)
    same = (a - b).abs().amax(1) <= SAME_BOX_PX
    return torch.where(same, torch.ones_like(iou), torch.nan_to_num(iou))


def point_parity(ref: list[np.ndarray], got: list[np.ndarray], meta: WeightsMeta, tile: int) -> dict:
    """Every point's box and scores from PyTorch's (`ref`) and onnxruntime's (`got`) dense
    outputs, point by point, over the points that score PARITY_SCORE or more in either: the
    count, the lowest IoU and the largest score difference. Decoding is the same code after
    this; only its cuts (score threshold, top-k, NMS at an IoU of exactly its threshold) could
    turn a rounding difference into another box."""
    rb, rs = point_boxes(ref, meta, tile)
    gb, gs = point_boxes(got, meta, tile)
    live = (rs.amax(-1) >= PARITY_SCORE) | (gs.amax(-1) >= PARITY_SCORE)  # [B, N]
    n = int(live.sum())
    return {
        "batch": len(rs),
        "output": "points",
        "points": n,
        "min_iou": float(_pairwise_iou(rb[live], gb[live]).min()) if n else 1.0,
        "max_score_diff": float((rs - gs).abs()[live].max()) if n else 0.0,
    }


def box_parity(
    ref: list[np.ndarray], got: list[np.ndarray], meta: WeightsMeta, tile: int, score: float = FINAL_SCORE
) -> dict:
    """The decoded boxes (score >= `score`) of PyTorch's and onnxruntime's dense outputs of the
    same images, paired up (`pair_up`); boxes within BOX_SCORE of a score at which decoding
    cuts (`cut_offs`, in either runtime) need no partner. The boxes compared, the lowest IoU
    and the largest score difference over all images."""
    cuts = np.maximum(cut_offs(ref, meta, tile, score), cut_offs(got, meta, tile, score))
    pairs = zip(decoded(ref, meta, tile, score), decoded(got, meta, tile, score), strict=True)
    rows = [pair_up(a, b, skip_below=float(c) + BOX_SCORE) for (a, b), c in zip(pairs, cuts, strict=True)]
    return {
        "batch": len(rows),
        "output": "boxes",
        "boxes": sum(int(r["boxes"]) for r in rows),
        "min_iou": min(float(r["min_iou"]) for r in rows),
        "max_score_diff": max(float(r["max_score_diff"]) for r in rows),
    }


def cut_offs(outputs: list[np.ndarray], meta: WeightsMeta, tile: int, score: float) -> np.ndarray:
    """Per image [B], the highest score at which `decode` cuts candidates: `score`, or, on a
    level with more candidates above it than TOPK_CANDIDATES, the score of the last one kept.
    A box near a cut-off may fall on either side by rounding alone."""
    _, scores = point_boxes(outputs, meta, tile)  # [B, N, K]
    cuts = np.full(len(scores), score, np.float32)
    per_level = [r * c for r, c in level_sizes((tile, tile), (meta.head or {})["strides"])]
    for level in scores.split(per_level, dim=1):
        for i, row in enumerate(level.flatten(1)):  # [n * K]
            if int((row > score).sum()) > TOPK_CANDIDATES:
                cuts[i] = max(cuts[i], float(row.topk(TOPK_CANDIDATES).values[-1]))
    return cuts


def box_agreement(ref: list[np.ndarray], new: list[np.ndarray], meta: WeightsMeta, tile: int) -> dict:
    """Recall and precision of a reduced-precision detector's boxes against fp32's (IoU 0.5,
    boxes scoring 0.3 or more in either)."""
    tp = fp = fn = 0
    for a, b in zip(decoded(ref, meta, tile, 0.3), decoded(new, meta, tile, 0.3), strict=True):
        t, f, n = match(b, a, 0.5)
        tp, fp, fn = tp + t, fp + f, fn + n
    return {
        "boxes_fp32": tp + fn,
        "box_recall_vs_fp32": tp / (tp + fn) if tp + fn else 1.0,
        "box_precision_vs_fp32": tp / (tp + fp) if tp + fp else 1.0,
    }
