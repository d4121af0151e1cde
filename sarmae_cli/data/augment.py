"""Geometric augmentations for SAR chips: random resized crop, flips and 90-degree rotations.

One set of random parameters (`AugmentParams`, drawn by `Augment.sample`) is applied to every
image of a sample (SAR, its optical pair, a segmentation mask) so they stay aligned, each
at its own resolution: the crop box is relative (fractions of height and width).

    aug = Augment(scale=(0.2, 1.0))
    params = aug.sample(sample_rng())
    sar = aug.apply(sar, params, 224)                  # [C, 224, 224], bilinear
    mask = aug.apply(mask, params, 224, "nearest")     # labels stay labels

Randomness comes from a `numpy.random.Generator`; `sample_rng()` derives one from the global
torch generator, which the training loop seeds per sample (reproducible, resumable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def sample_rng() -> np.random.Generator:
    """A numpy generator seeded from the global torch generator (advancing it once)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ())))


@dataclass(frozen=True)
class AugmentParams:
    box: tuple[float, float, float, float]  # (top, left, height, width) as fractions of the image
    hflip: bool
    vflip: bool
    rot90: int  # quarter turns, counter-clockwise


@dataclass(frozen=True)
class Augment:
    """Random resized crop (area fraction `scale`, aspect ratio `ratio`), flips and rotations.
    `scale=(1, 1)` and all flags off gives a plain resize."""

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True

    def sample(self, rng: np.random.Generator) -> AugmentParams:
        """Draw crop box, flips and rotation (torchvision's RandomResizedCrop rule for the box)."""
        box = (0.0, 0.0, 1.0, 1.0)
        lo, hi = self.scale
        if (lo, hi) != (1.0, 1.0):
            log_r = (math.log(self.ratio[0]), math.log(self.ratio[1]))
            for _ in range(10):
                area = rng.uniform(lo, hi)
                ar = math.exp(rng.uniform(*log_r))
                h, w = math.sqrt(area / ar), math.sqrt(area * ar)
                if h <= 1.0 and w <= 1.0:
                    box = (rng.uniform(0, 1 - h), rng.uniform(0, 1 - w), h, w)
                    break
        return AugmentParams(
            box=box,
            hflip=bool(self.hflip and rng.random() < 0.5),
            vflip=bool(self.vflip and rng.random() < 0.5),
            rot90=int(rng.integers(0, 4)) if self.rot90 else 0,
        )

    def apply(
        self, x: torch.Tensor, params: AugmentParams, size: int | tuple[int, int], mode: str = "bilinear"
    ) -> torch.Tensor:
        """[C, H, W] -> [C, size, size]: crop the relative box, resize, flip, rotate."""
        return flip_rotate(crop_resize(x, params.box, size, mode), params.hflip, params.vflip, params.rot90)


def crop_resize(
    x: torch.Tensor,
    box: tuple[float, float, float, float],
    size: int | tuple[int, int],
    mode: str = "bilinear",
) -> torch.Tensor:
    """Crop the relative `box` (top, left, height, width fractions) of [C, H, W] and resize it
    to `size` (NaN-free input expected for bilinear; `nearest` keeps label values)."""
    _, h, w = x.shape
    top, left = int(round(box[0] * h)), int(round(box[1] * w))
    ch, cw = max(1, int(round(box[2] * h))), max(1, int(round(box[3] * w)))
    crop = x[:, top : top + ch, left : left + cw]  # [C, ch, cw]
    out_hw = (size, size) if isinstance(size, int) else size
    if tuple(crop.shape[1:]) == tuple(out_hw):
        return crop.clone()
    dtype = crop.dtype
    kw = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    out = F.interpolate(crop[None].float(), size=out_hw, mode=mode, **kw)[0]  # [C, *size]
    return out.to(dtype) if not dtype.is_floating_point else out


def flip_rotate(x: torch.Tensor, hflip: bool, vflip: bool, rot90: int) -> torch.Tensor:
    """Flip left-right / up-down, then rotate by `rot90` quarter turns. [C, H, W] -> [C, H', W']."""
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    if rot90 % 4:
        x = torch.rot90(x, rot90, dims=(-2, -1))
    return x
