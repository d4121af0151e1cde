"""Detection samples: labelled images in memory with box-preserving training crops, the
scene-grouped train/validation split, and batch collation.

    ds = DetectionDataset(raws, targets, spec, crop=384, det=DetectionConfig())
    x, target = ds[0]      # [C, S, S], {"boxes": [M, 4] xyxy pixels, "labels": [M] int64}
    batch = collate(items)  # ([B, C, S, S], [target, ...])

Training samples are random crops of whole images (rescaled by `zoom` times a random factor in
`scale`, cut so that a random object is inside with probability `object_crop`, flipped), done
by torchvision's box-aware transforms; boxes cut by the crop are kept when `min_visible` of them
stays inside. With `copy_paste`, objects of the training images (their box and a margin, turned
by 90° steps and flipped, rescaled as the crop) are pasted at free places of the crop with a
feathered edge (the simple copy-paste of Ghiasi et al., CVPR 2021, with boxes, not masks, so it
works for every label format). Without a crop an item is the whole prepared image
(sliding-window evaluation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms.v2 import functional as TF

from sarmae_cli.data import labelled as L
from sarmae_cli.data.augment import AugmentConfig, make_augment
from sarmae_cli.data.detection_labels import BoxSample
from sarmae_cli.data.preprocess import InputSpec
from sarmae_cli.errors import UsageError


@dataclass
class DetectionConfig:
    """Detector head, box labels, training crops and scoring (task detection)."""

    strides: list[int] = field(default_factory=lambda: [8, 16, 32])  # pyramid levels (4 to 64)
    channels: int = 128  # pyramid and FCOS head width (a multiple of 32)
    num_convs: int = 4  # conv layers of each FCOS head branch
    prior: int = 0  # width of the pixel CNN added to the pyramid (model.detector.SpatialPrior); 0: none
    min_box_size: float = 2.0  # boxes (and mask components) under this many pixels on a side are dropped
    object_crop: float = 0.7  # probability that a training crop holds a random object (else anywhere)
    scale: tuple[float, float] = (0.8, 1.25)  # random rescale of training images
    zoom: float = 1.0  # model pixels per image pixel: every image is resized by this first (small objects)
    min_visible: float = 0.4  # a box cut by a training crop is kept when this share of it is inside
    center_sampling_radius: float = 1.5  # FCOS positives within this many strides of a box centre
    score_thresh: float = 0.05  # evaluation: lowest detection score kept
    nms_thresh: float = 0.6  # evaluation: IoU of class-wise non-maximum suppression
    max_detections: int = 100  # evaluation: best detections kept per image
    tile_overlap: int | None = None  # sliding-window overlap; default: the longest object, in patches
    copy_paste: float = 0.0  # probability that a training crop gets training objects pasted into it
    paste_max: int = 3  # with copy_paste: 1 to this many objects pasted into the crop


Target = dict[str, torch.Tensor]


def image_group(path: Path, pattern: str | None) -> str:
    """The split group of an image: the first match of `pattern` in its file stem (group 1 when
    the pattern has a group), else the stem itself."""
    if pattern:
        m = re.search(pattern, path.stem)
        if m:
            return m.group(1) if m.groups() else m.group(0)
    return path.stem


def group_split(
    samples: list[BoxSample], fraction: float, seed: int, pattern: str | None
) -> tuple[list[BoxSample], list[BoxSample]]:
    """(train, val): whole groups (see `image_group`) drawn in a seeded order until about
    `fraction` of the images are held out; at least one group on each side."""
    groups: dict[str, list[BoxSample]] = {}
    for s in samples:
        groups.setdefault(image_group(s.image, pattern), []).append(s)
    if len(groups) < 2:
        raise UsageError(
            f"cannot hold out a validation share: all {len(samples)} images are in one group"
            + (f" of data.group_by {pattern!r}" if pattern else "")
            + "; give --val or another data.group_by"
        )
    names = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(names))
    want = max(1, round(fraction * len(samples)))
    val_names: set[str] = set()
    n_val = 0
    for i in order[: len(names) - 1]:
        if n_val >= want:
            break
        val_names.add(names[i])
        n_val += len(groups[names[i]])
    train = [s for s in samples if image_group(s.image, pattern) not in val_names]
    val = [s for s in samples if image_group(s.image, pattern) in val_names]
    return train, val


def load_images(samples: list[BoxSample], report: L.LoadReport) -> tuple[list[np.ndarray], list[Target]]:
    """Raw images [C, H, W] (a grey image stored as equal RGB bands becomes one band) and their
    targets; undecodable images are skipped and counted."""
    chips = [L.Sample(s.image, i) for i, s in enumerate(samples)]
    raws, kept = L.load_chips(chips, report)
    raws = [r[:1] if r.shape[0] == 3 and (r[1:] == r[:1]).all() else r for r in raws]
    bands = {r.shape[0] for r in raws}
    if len(bands) > 1:
        raise L.DatasetError(
            f"images have different band counts {sorted(bands)}; give images with one band count"
        )
    targets = [
        {
            "boxes": torch.from_numpy(samples[i].boxes).float(),
            "labels": torch.from_numpy(samples[i].labels).long(),
        }
        for i in kept
    ]
    return raws, targets


def longest_side(targets: list[Target]) -> float:
    """The longest box side over all targets (pixels; 0 without boxes)."""
    sides = [float((t["boxes"][:, 2:] - t["boxes"][:, :2]).max()) for t in targets if len(t["boxes"])]
    return max(sides, default=0.0)


def default_overlap(targets: list[Target], tile: int, patch: int = 16, zoom: float = 1.0) -> int:
    """Sliding-window overlap of at least the longest training object (in model pixels: image
    pixels x `zoom`), in whole patches, and at most half the tile."""
    need = int(np.ceil(longest_side(targets) * zoom / patch)) * patch
    return int(min(max(need, patch), tile // 2 // patch * patch))


class DetectionDataset(Dataset):
    """Images in memory: item -> (x [C, S, S] float32, target). With `crop` a random training
    sample (see the module doc), without it the whole prepared image."""

    def __init__(
        self,
        raws: list[np.ndarray],
        targets: list[Target],
        spec: InputSpec,
        crop: int | None = None,
        det: DetectionConfig | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.images = [torch.from_numpy(spec.prepare(r)) for r in raws]  # each [C, H, W]
        self.targets = targets
        self.crop = crop
        self.det = det or DetectionConfig()
        a = augment or AugmentConfig()
        self.hflip, self.vflip = a.flips, a.flips and a.vflip
        # the radiometric part of the SAR augmentations (speckle, intensity, ...), no geometry
        values = replace(a, flips=False, rot90=False, shift=0, mixup=0.0, cutmix=0.0)
        self.radiometric = make_augment(values, spec, (1.0, 1.0)) if crop else None
        self.bank = object_bank(self.images, targets, crop // 2) if crop and self.det.copy_paste else []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        x, t = self.images[i], self.targets[i]
        if self.crop is None:
            return x, t
        return self.random_sample(x, t)

    def random_sample(self, x: torch.Tensor, t: Target) -> tuple[torch.Tensor, Target]:
        """A rescaled, cropped, flipped training sample (torch RNG: the loop seeds it)."""
        assert self.crop is not None
        d, size = self.det, self.crop
        h, w = x.shape[-2:]
        img = tv_tensors.Image(x)
        boxes = tv_tensors.BoundingBoxes(t["boxes"], format="XYXY", canvas_size=(h, w))
        lo, hi = d.scale
        s = d.zoom * float(np.exp(np.log(lo) + torch.rand(()).item() * (np.log(hi) - np.log(lo))))
        if s != 1.0:
            h, w = max(1, round(h * s)), max(1, round(w * s))
            img, boxes = TF.resize(img, [h, w], antialias=True), TF.resize(boxes, [h, w])
        top, left = self._window(boxes, h, w)
        area = _area(boxes)
        img, boxes = TF.crop(img, top, left, size, size), TF.crop(boxes, top, left, size, size)  # pads
        keep = (_area(boxes) >= d.min_visible * area.clamp_min(1e-6)) & (_area(boxes) > 0)
        keep &= torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min(
            d.min_box_size, 1.0
        )
        boxes, labels = tv_tensors.wrap(boxes[keep], like=boxes), t["labels"][keep]  # indexing unwraps
        if self.hflip and torch.rand(()) < 0.5:
            img, boxes = TF.horizontal_flip(img), TF.horizontal_flip(boxes)
        if self.vflip and torch.rand(()) < 0.5:
            img, boxes = TF.vertical_flip(img), TF.vertical_flip(boxes)
        out = img.as_subclass(torch.Tensor).contiguous()  # [C, S, S]
        boxes = boxes.as_subclass(torch.Tensor).float()
        if self.bank and torch.rand(()) < d.copy_paste:
            out, boxes, labels = paste_objects(out, boxes, labels, self.bank, s, d.paste_max)
        if self.radiometric is not None:
            out = self.radiometric(out)
        return out, {"boxes": boxes, "labels": labels}

    def _window(self, boxes: torch.Tensor, h: int, w: int) -> tuple[int, int]:
        """Top-left corner of a crop: holding a random box (probability `object_crop`), else
        anywhere; negative or too large when the image is smaller than the crop (padding)."""
        size = self.crop
        assert size is not None
        r = torch.rand(3)
        if len(boxes) and r[0] < self.det.object_crop:
            b = boxes[int(torch.randint(len(boxes), ()))]
            cx, cy = float(b[0] + b[2]) / 2, float(b[1] + b[3]) / 2
            left = cx - float(r[1]) * size  # the centre lands anywhere in the window
            top = cy - float(r[2]) * size
        else:
            left, top = float(r[1]) * (w - size), float(r[2]) * (h - size)
        left = int(min(max(left, min(0, w - size)), max(0, w - size)))
        top = int(min(max(top, min(0, h - size)), max(0, h - size)))
        return top, left


@dataclass
class PasteObject:
    """An object to paste: its box with a margin cut from a prepared image, and where the box
    lies in that patch."""

    patch: torch.Tensor  # [C, h, w]
    core: torch.Tensor  # [1, h, w] float: 1 inside the object's box, 0 in the margin
    label: int


def object_bank(images: list[torch.Tensor], targets: list[Target], max_side: int) -> list[PasteObject]:
    """Every box of the images with a margin of 15 % of its longer side (at least 2 px), as
    pasteable patches; boxes longer than `max_side` are left out."""
    bank = []
    for x, t in zip(images, targets, strict=True):
        h, w = x.shape[-2:]
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 - x0 < 1 or y1 - y0 < 1 or max(x1 - x0, y1 - y0) > max_side:
                continue
            m = max(2, round(0.15 * max(x1 - x0, y1 - y0)))
            px0, py0, px1, py1 = max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, w), min(y1 + m, h)
            core = torch.zeros(1, py1 - py0, px1 - px0)
            core[:, y0 - py0 : y1 - py0, x0 - px0 : x1 - px0] = 1.0
            bank.append(PasteObject(x[:, py0:py1, px0:px1].clone(), core, int(label)))
    return bank


def paste_objects(
    x: torch.Tensor,
    boxes: torch.Tensor,
    labels: torch.Tensor,
    bank: list[PasteObject],
    scale: float,
    most: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Paste 1 to `most` random objects of `bank` into the sample x [C, S, S] where they touch
    no box (given or pasted); each turned by a random multiple of 90°, flipped at random,
    rescaled by `scale`, blended with an edge that fades over its margin. Returns the sample
    and its boxes [M', 4] and labels [M'] with the pasted ones appended."""
    x = x.clone()
    size = x.shape[-1]
    boxes, labels = boxes.clone(), labels.clone()
    for _ in range(int(torch.randint(1, most + 1, ()))):
        o = bank[int(torch.randint(len(bank), ()))]
        both = torch.cat([o.patch, o.core])  # [C + 1, h, w]
        both = torch.rot90(both, int(torch.randint(4, ())), dims=(1, 2))
        if torch.rand(()) < 0.5:
            both = both.flip(-1)
        h, w = (max(1, round(n * scale)) for n in both.shape[-2:])
        if h >= size or w >= size:
            continue
        both = TF.resize(both, [h, w], antialias=True)
        patch, core = both[:-1], (both[-1:] > 0.5).float()
        ys, xs = torch.nonzero(core[0], as_tuple=True)
        if len(ys) == 0:
            continue
        top, left = (int(v) for v in torch.randint(0, size - max(h, w) + 1, (2,)))
        x0, y0 = left + int(xs.min()), top + int(ys.min())
        box = torch.tensor([[x0, y0, left + int(xs.max()) + 1, top + int(ys.max()) + 1]], dtype=torch.float32)
        spot = torch.tensor([[left, top, left + w, top + h]]).float()
        if len(boxes) and bool((box_iou(spot, boxes) > 0).any()):
            continue  # would cover or touch an object
        k = 2 * max(1, round(max(h, w) * 0.115)) + 1  # fades to 0 about one margin outside the box
        blur = F.avg_pool2d(core[None], k, stride=1, padding=k // 2, count_include_pad=False)[0]  # [1, h, w]
        alpha = (2 * blur).clamp(0, 1)  # 1 on and inside the box edge, 0 a margin outside
        region = x[:, top : top + h, left : left + w]
        x[:, top : top + h, left : left + w] = alpha * patch + (1 - alpha) * region
        boxes = torch.cat([boxes, box])
        labels = torch.cat([labels, torch.tensor([o.label], dtype=labels.dtype)])
    return x, boxes, labels


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)


def class_counts(targets: list[Target], k: int) -> list[int]:
    return np.bincount(torch.cat([t["labels"] for t in targets]).numpy(), minlength=k).tolist()


def collate(items: list[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """A batch of equal-sized samples: ([B, C, S, S], one target dict per image)."""
    return torch.stack([x for x, _ in items]), [t for _, t in items]
