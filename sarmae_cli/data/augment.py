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

Fine-tuning augmentation (`AugmentConfig`, `make_augment` -> `SarAugment`) combines these
with a random shift, SARE-style speckle (`data/speckle.py`), a radiometric change, and the
product variations of issue 32: more looks (speckle averaged down), a coarser resolution, a
log / linear display-curve mismatch, and (on raw 8-bit chips, `rerender`) a random display
rendering (`data/render.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sarmae_cli.data.preprocess import InputSpec
from sarmae_cli.data.render import random_display
from sarmae_cli.data.speckle import SpeckleConfig, inject
from sarmae_cli.errors import UsageError


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


# --------------------------------------------------------------------------- fine-tuning


@dataclass
class AugmentConfig:
    """SAR augmentations applied to training chips (and their masks)."""

    flips: bool = True
    vflip: bool = True  # with flips: up-down too (off: left-right only, shadows keep their side)
    rot90: bool = True
    crop_scale: tuple[float, float] = (0.5, 1.0)  # random resized crop area (classification)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # its aspect-ratio range ([1, 1]: square crops)
    shift: int = 0  # random translation of up to N input pixels, real context (classification)
    speckle: float = 0.0  # probability of extra multiplicative speckle (SARE-style, gamma looks 1-10)
    intensity: float = 0.0  # probability of a random radiometric change (gain, offset, gamma)
    gain: tuple[float, float] = (0.75, 1.3)  # contrast factor about the chip mean, in [0, 1] units
    offset: tuple[float, float] = (-0.12, 0.12)  # brightness shift, in [0, 1] units (~ +-4 dB)
    gamma: tuple[float, float] = (0.7, 1.4)  # power-law exponent
    looks: float = 0.0  # probability of more looks: a 2-4 px box average (a multilooked product)
    resolution: float = 0.0  # probability of coarser pixels: area-averaged by 1.5-4x, resized back
    tone: float = 0.0  # probability of a log <-> linear display-curve mismatch, re-stretched 2-98 %
    render: float = 0.0  # probability of re-rendering a raw 8-bit chip (data/render.random_display)
    mixup: float = 0.0  # mixup alpha (classification; 0: off), timm.data.Mixup
    cutmix: float = 0.0  # cutmix alpha (classification; 0: off); with both, each batch takes one

    def check(self, task: str) -> None:
        """Refuse values no augmentation can use (usage errors naming the config key)."""
        if self.shift < 0:
            raise UsageError(f"augment.shift must be >= 0 pixels, got {self.shift}")
        check_range("augment.crop_scale", self.crop_scale, upper=1.0, hint="area fractions in (0, 1]")
        check_range("augment.crop_ratio", self.crop_ratio, upper=None, hint="width / height, e.g. [1, 1]")
        if self.shift and task == "segmentation":
            raise UsageError(
                "augment.shift applies to classification; segmentation already cuts random crops"
            )
        if self.mixup < 0 or self.cutmix < 0:
            raise UsageError(
                f"augment.mixup and augment.cutmix are alphas >= 0, got {self.mixup} and {self.cutmix}"
            )
        if (self.mixup or self.cutmix) and task != "classification":
            raise UsageError("augment.mixup / augment.cutmix apply to classification; set them to 0")
        for key in ("speckle", "intensity", "looks", "resolution", "tone", "render"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"augment.{key} is a probability in [0, 1], got {value}")


def check_range(name: str, value: Any, upper: float | None, hint: str) -> None:
    """Refuse a [low, high] config pair that is not two numbers with 0 < low <= high (<= upper)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be two numbers [low, high] ({hint}), got {value!r}") from None
    if not (0 < lo <= hi and (upper is None or hi <= upper)):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise UsageError(f"{name} must satisfy 0 < low <= high{bound} ({hint}), got {value!r}")


def make_augment(cfg: AugmentConfig, spec: InputSpec, crop_scale: tuple[float, float]) -> SarAugment | None:
    """The training augmentation of `cfg` (None when it changes nothing)."""
    changes_values = any(p > 0 for p in (cfg.speckle, cfg.intensity, cfg.looks, cfg.resolution, cfg.tone))
    moves = cfg.flips or cfg.rot90 or cfg.shift > 0 or tuple(crop_scale) != (1.0, 1.0)
    if not (moves or changes_values):
        return None
    return SarAugment(cfg, spec, tuple(crop_scale))


class SarAugment:
    """Training augmentation (`data/augment.py`, `data/speckle.py`): a random shift (a
    chip-size window cut from a chip prepared with a margin, see `preprocess.InputSpec.chip`), random
    resized crop, flips and 90° rotations, applied alike to an image [C, S, S] and its labels [S, S], then
    optional SARE-style speckle and an optional radiometric change (contrast, brightness and
    gamma; it makes heads robust to other calibrations and display renderings) on the image, in
    the [0, 1] domain before normalisation. Randomness comes from the global torch generator,
    which the loop seeds per sample."""

    def __init__(self, cfg: AugmentConfig, spec: InputSpec, crop_scale: tuple[float, float]) -> None:
        vflip = cfg.flips and cfg.vflip
        ratio = (float(cfg.crop_ratio[0]), float(cfg.crop_ratio[1]))
        self.geometry = Augment(scale=crop_scale, ratio=ratio, hflip=cfg.flips, vflip=vflip, rot90=cfg.rot90)
        self.size = spec.chip_size if cfg.shift > 0 else None  # output size when chips have a margin
        self.speckle = SpeckleConfig(fraction=cfg.speckle) if cfg.speckle > 0 else None
        self.cfg = cfg
        self.mean = torch.tensor(spec.mean).view(-1, 1, 1)  # [C, 1, 1]
        self.std = torch.tensor(spec.std).view(-1, 1, 1)
        sc = spec.scaling
        self.db_span = None if sc.mode == "uint8" else float(sc.db_range[1] - sc.db_range[0])

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        rng = sample_rng()
        size = self.size or x.shape[-1]
        if x.shape[-1] > size:  # a chip with a margin: cut a randomly placed size x size window
            top, left = (int(rng.integers(0, d - size + 1)) for d in x.shape[-2:])
            x = x[..., top : top + size, left : left + size]  # [C, S, S]
        params = self.geometry.sample(rng)
        x = self.geometry.apply(x, params, size)  # [C, S, S]
        c = self.cfg
        if self.speckle is not None or any(p > 0 for p in (c.intensity, c.looks, c.resolution, c.tone)):
            unit = (x * self.std + self.mean).clamp(0, 1)  # back to [0, 1]
            if rng.random() < c.resolution:
                unit = coarser(unit, float(rng.uniform(1.5, 4.0)))
            if rng.random() < c.looks:
                unit = multilook(unit, int(rng.integers(2, 5)))
            if self.speckle is not None:
                unit, _ = inject(unit, self.speckle, rng, self.db_span)
            if rng.random() < c.tone:
                unit = tone_curve(unit, bool(rng.random() < 0.5), float(rng.uniform(10.0, 40.0)))
            if rng.random() < c.intensity:
                unit = radiometric_jitter(unit, rng, c)
            x = (unit - self.mean) / self.std
        if y is None:
            return x
        y = self.geometry.apply(y[None], params, size, "nearest")[0]  # [S, S]
        return x, y


def radiometric_jitter(unit: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """A random contrast (about the chip mean), brightness and gamma change of a [C, S, S]
    chip in [0, 1]; the result stays in [0, 1]."""
    gain, offset, gamma = (float(rng.uniform(*r)) for r in (cfg.gain, cfg.offset, cfg.gamma))
    mean = unit.mean(dim=(-2, -1), keepdim=True)  # [C, 1, 1]
    out = ((unit - mean) * gain + mean + offset).clamp(0, 1)
    return out.pow(gamma)


def coarser(unit: torch.Tensor, factor: float) -> torch.Tensor:
    """[C, S, S] -> [C, S, S] as seen by a sensor with `factor` x larger pixels, resampled back
    to the model's grid: area average (in the displayed domain), then bilinear up."""
    size = unit.shape[-2:]
    small = [max(1, round(n / factor)) for n in size]
    down = F.interpolate(unit[None], size=small, mode="area")  # [1, C, s, s]
    return F.interpolate(down, size=size, mode="bilinear", align_corners=False)[0].clamp(0, 1)


def multilook(unit: torch.Tensor, k: int) -> torch.Tensor:
    """A k x k moving average (same size, edges replicated): speckle averaged over more looks."""
    pad = (k // 2, k - 1 - k // 2, k // 2, k - 1 - k // 2)
    padded = F.pad(unit[None], pad, mode="replicate")  # [1, C, S + k - 1, S + k - 1]
    return F.avg_pool2d(padded, k, stride=1)[0]


def tone_curve(unit: torch.Tensor, to_log: bool, range_db: float) -> torch.Tensor:
    """The display-curve mismatch between products: values taken as linear magnitude and shown
    in dB over `range_db` (`to_log`), or the inverse (dB shown as linear magnitude); then each
    band is re-stretched between its 2nd and 98th percentiles as the input route does."""
    eps = 10 ** (-range_db / 20)
    if to_log:
        out = 1 + torch.log10(unit.clamp_min(eps)) * (20 / range_db)
    else:
        out = 10 ** ((unit - 1) * (range_db / 20))
    flat = out.flatten(1)  # [C, S*S]
    lo = flat.quantile(0.02, dim=1).view(-1, 1, 1)
    hi = flat.quantile(0.98, dim=1).view(-1, 1, 1)
    return ((out - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)


def rerender(probability: float) -> Callable[[np.ndarray], np.ndarray] | None:
    """A raw-chip augmentation: with `probability`, a uint8 chip [C, H, W] is re-rendered by
    `render.random_display` (drawn from the global torch generator); other dtypes pass as they are."""
    if probability <= 0:
        return None

    def apply(raw: np.ndarray) -> np.ndarray:
        rng = sample_rng()
        if raw.dtype != np.uint8 or rng.random() >= probability:
            return raw
        return random_display(raw, rng)

    return apply
