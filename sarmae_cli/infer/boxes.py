"""Boxes of a sliding-window detection: which boxes of a tile to trust, and duplicates across
tiles removed as the scene streams past (torchvision's class-wise NMS). Comparing boxes with
others (the truth, or the same model on another runtime): `export/box_parity.py`.

Boxes are float xyxy in pixels: x = column, y = row, pixel corners on integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import batched_nms


@dataclass
class Boxes:
    """Detections: `boxes` [M, 4] xyxy, `scores` [M], `labels` [M] (class indexes)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: list[Boxes]) -> Boxes:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False),
            np.concatenate([p.labels for p in parts]).astype(np.int64, copy=False),
        )

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, idx: np.ndarray) -> Boxes:
        return Boxes(self.boxes[idx], self.scores[idx], self.labels[idx])

    def as_dict(self) -> dict[str, np.ndarray]:
        """As `model.detector.decode` gives them: `boxes`, `scores`, `labels`."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}

    def by_score(self) -> Boxes:
        """Highest score first (stable)."""
        return self.take(np.argsort(-self.scores, kind="stable"))


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A float32 tensor copy of `x` (which may be read-only)."""
    return torch.from_numpy(np.array(x, np.float32))


def trusted(
    boxes: np.ndarray, tile: int, inner: tuple[bool, bool, bool, bool], margin: float, valid: np.ndarray
) -> np.ndarray:
    """Which boxes [M, 4] (tile pixels) of a `tile` x `tile` window to keep [M] bool: none of
    zero area, none that reaches within `margin` pixels of an inner tile edge (`inner`: whether
    the left, top, right, bottom edge has a neighbour tile; such a box may be a cut object,
    which the neighbour, overlapping by more than the object, sees whole), and none whose
    centre lies on invalid pixels (`valid` [T, T])."""
    left, top, right, bottom = inner
    x0, y0, x1, y1 = boxes.T
    keep = (x1 > x0) & (y1 > y0)  # a box clipped to nothing at the tile edge
    if left:
        keep &= x0 >= margin
    if top:
        keep &= y0 >= margin
    if right:
        keep &= x1 <= tile - margin
    if bottom:
        keep &= y1 <= tile - margin
    cx = np.clip(((x0 + x1) / 2).astype(np.int64), 0, valid.shape[1] - 1)
    cy = np.clip(((y0 + y1) / 2).astype(np.int64), 0, valid.shape[0] - 1)
    return keep & valid[cy, cx]


def nms(b: Boxes, iou: float) -> Boxes:
    """Class-wise non-maximum suppression (torchvision `batched_nms`), highest score first."""
    if len(b) == 0:
        return b
    keep = batched_nms(
        _tensor(b.boxes), _tensor(b.scores), torch.from_numpy(np.array(b.labels, np.int64)), iou
    )
    return b.take(keep.numpy())


class BoxMerger:
    """Removes duplicates across tiles while the scene streams past, with memory bounded by the
    scene width: boxes wait in `pending` until no later tile can reach them, then become
    final. `settle(y)` runs NMS over the pending boxes and finalises those that end above row
    `y` (every later tile starts at or below it). At most `max_detections` final boxes are
    kept (the highest scores; None: all)."""

    def __init__(self, iou: float, max_detections: int | None = None) -> None:
        self.iou, self.max_detections = iou, max_detections
        self.pending: list[Boxes] = []
        self.final: list[Boxes] = []
        self.n_final = 0

    def add(self, b: Boxes) -> None:
        if len(b):
            self.pending.append(b)

    def settle(self, y: float) -> None:
        """NMS over the pending boxes; those ending at or above row `y` become final."""
        merged = nms(Boxes.concat(self.pending), self.iou)
        done = merged.boxes[:, 3] <= y
        self.pending = [merged.take(~done)] if (~done).any() else []
        if done.any():
            self.final.append(merged.take(done))
            self.n_final += int(done.sum())
        if self.max_detections is not None and self.n_final > 2 * self.max_detections:
            self.final = [self._best(Boxes.concat(self.final))]
            self.n_final = len(self.final[0])

    def _best(self, b: Boxes) -> Boxes:
        b = b.by_score()
        return b if self.max_detections is None else b.take(np.arange(min(len(b), self.max_detections)))

    def finish(self) -> Boxes:
        """Every final box, highest score first."""
        self.settle(float("inf"))
        return self._best(Boxes.concat(self.final))
