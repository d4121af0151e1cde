"""The fine-tuning configuration: its fields, the paper's recipe per task as defaults, and
the checks that run before any data is read.

    cfg = resolve_config("classification", file_layer, {"data": {"train": "mstar10/train"}})
    check_config(cfg)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sarmae_cli.data.augment import AugmentConfig
from sarmae_cli.data.preprocess import INPUT_SCALES
from sarmae_cli.errors import UsageError
from sarmae_cli.train.config import from_dict, merge_config
from sarmae_cli.train.detection_dataset import DetectionConfig
from sarmae_cli.train.evaluate import TASKS
from sarmae_cli.train.loop import LoopConfig
from sarmae_cli.train.pseudo import REST


@dataclass
class DataConfig:
    """What to train on and how chips become model input."""

    train: str = ""
    val: str | None = None  # validation set; without it `val_fraction` of TRAIN is held out
    val_fraction: float = 0.2  # per class, seeded by `split_seed`, disjoint from training
    split_seed: int = 0
    shots: int | None = None  # K training chips per class (classification)
    fraction: float | None = None  # a fraction of the training chips per class
    chip_size: int | None = None  # model input side; default: the encoder's img_size
    fit: str = "resize"  # chips of other sizes: "resize" or "center_crop"
    crop: int | None = None  # centre-crop N pixels first, then resize to chip_size (zoom)
    scaling: str | None = None  # input scaling mode; None or "auto": detected from the data
    stretch: str = "fixed"  # "fixed" range, per-image/scene "percentile" or "equalize" (radiometry-robust)
    gsd: float | None = None  # pixel size of the training data (metres), recorded for --gsd auto
    balance: bool = False  # oversample classes to equal counts (imbalanced sets)
    class_names: list[str] | None = None  # segmentation class names (index = class id)
    pairing: str | None = None  # IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN]
    mask_values: list[int] | None = None  # mask value of each class; default: detected
    ignore_value: int | None = -1  # mask value excluded from loss and metrics
    eval_stride: int | None = None  # sliding-window stride; default 3/4 of the chip
    unlabelled: str | None = None  # self-training chips: "rest" (TRAIN's unchosen chips) or a folder
    teacher: str | None = None  # classification weights that pseudo-label the unlabelled chips
    pseudo_threshold: float = 0.9  # keep pseudo-labels with at least this softmax confidence
    group_by: str | None = None  # regex on image file stems: equal matches stay on one side of the split


@dataclass
class ModelConfig:
    """Starting point and head."""

    init: str = "default"  # a weights file, "default" (the shipped encoder) or "random"
    preset: str | None = None  # architecture for --init random (default base)
    depth: int | None = None  # fewer blocks than the preset (--init random; small tests)
    decoder: str = "upernet"  # segmentation decoder: upernet (the paper) or fpn (smp)
    channels: int = 256  # segmentation decoder width
    refine: int = 0  # width of a full-resolution refiner of the segmentation logits (0: none)
    drop_path: float = 0.1
    layer_decay: float = 0.75
    freeze_encoder: bool = False  # linear probe: only the head trains


@dataclass
class FinetuneConfig:
    task: str = "classification"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    blr: float = 1e-3  # base lr: lr = blr x total batch / 256 (unless `lr` is set)
    lr: float | None = None
    label_smoothing: float = 0.1
    dice_weight: float = 0.5
    class_weights: list[float] | None = None  # cross-entropy weight of each class (default: equal)
    eval_batch_size: int = 32
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(epochs=30))


def task_defaults(task: str) -> dict[str, Any]:
    """The paper's recipe for `task` (SARMAE_METHOD.md §4) as a config layer."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; use classification, segmentation or detection")
    loop = {"epochs": 30, "batch_size": 64, "warmup_epochs": 5, "weight_decay": 0.05, "betas": [0.9, 0.999]}
    if task == "classification":
        return {"task": task, "loop": loop}
    if task == "detection":  # ViTDet-style: AdamW, layer decay, crops of 384 px
        return {
            "task": task,
            "lr": 2e-4,
            "data": {"chip_size": 384},
            "model": {"layer_decay": 0.8},
            "loop": {**loop, "epochs": 50, "batch_size": 8, "warmup_epochs": 2},
        }
    return {"task": task, "lr": 6e-5, "model": {"layer_decay": 0.9}, "loop": {**loop, "batch_size": 8}}


def resolve_config(task: str, *layers: dict[str, Any]) -> FinetuneConfig:
    """Task defaults, then each layer (config file, then command-line flags) on top."""
    merged = merge_config(task_defaults(task), *(_drop_none(layer) for layer in layers))
    merged["task"] = task
    return from_dict(FinetuneConfig, merged)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """A config layer without its None values (at any depth): None means 'not given'."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def _check_mixing(cfg: FinetuneConfig) -> None:
    a = cfg.augment
    if not (a.mixup or a.cutmix):
        return
    if cfg.class_weights:
        raise UsageError("class_weights cannot be combined with augment.mixup / augment.cutmix; drop one")
    if cfg.loop.batch_size % 2:
        raise UsageError(
            "mixup and cutmix pair the chips of a batch: give an even --batch-size, "
            f"not {cfg.loop.batch_size}"
        )


def _check_pseudo(cfg: FinetuneConfig) -> None:
    """Self-training needs both the unlabelled chips and a teacher, for classification only."""
    d = cfg.data
    if not d.unlabelled and not d.teacher:
        return
    if cfg.task != "classification":
        raise UsageError("data.unlabelled / data.teacher (self-training) apply to classification")
    if not d.unlabelled or not d.teacher:
        raise UsageError(
            "self-training needs both --set data.unlabelled=rest|FOLDER and --set data.teacher=WEIGHTS"
        )
    if not Path(d.teacher).is_file():
        raise UsageError(f"data.teacher {d.teacher} not found; give a classification weights file")
    if d.unlabelled != REST and not Path(d.unlabelled).exists():
        raise UsageError(f"data.unlabelled {d.unlabelled} not found; give a folder of chips or 'rest'")


def _check_detection(cfg: FinetuneConfig) -> None:
    """Detection settings no detector can use (usage errors naming the key)."""
    d = cfg.detection
    if d.channels < 32 or d.channels % 32:
        raise UsageError(f"detection.channels must be a multiple of 32, got {d.channels}")
    if (
        not d.strides
        or any(s not in (4, 8, 16, 32, 64) for s in d.strides)
        or len(set(d.strides)) != len(d.strides)
    ):
        raise UsageError(f"detection.strides must be distinct values of 4, 8, 16, 32, 64, got {d.strides}")
    for key in ("object_crop", "min_visible", "copy_paste"):
        if not 0.0 <= getattr(d, key) <= 1.0:
            raise UsageError(f"detection.{key} is a fraction in [0, 1], got {getattr(d, key)}")
    if not (0 < d.scale[0] <= d.scale[1]):
        raise UsageError(f"detection.scale must be [low, high] with 0 < low <= high, got {list(d.scale)}")
    if not (0.25 <= d.zoom <= 8):
        raise UsageError(f"detection.zoom (model pixels per image pixel) must be in [0.25, 8], got {d.zoom}")
    if d.num_convs < 1 or d.max_detections < 1 or d.min_box_size < 0:
        raise UsageError("detection.num_convs and detection.max_detections must be >= 1, min_box_size >= 0")
    if d.prior < 0 or d.prior % 32:
        raise UsageError(f"detection.prior (pixel CNN width) must be 0 or a multiple of 32, got {d.prior}")
    if d.paste_max < 1:
        raise UsageError(f"detection.paste_max (objects pasted per crop) must be >= 1, got {d.paste_max}")
    if cfg.task == "detection" and cfg.data.chip_size and cfg.data.chip_size % 16:
        raise UsageError(
            f"detection crops must be a multiple of 16 pixels, got --chip-size {cfg.data.chip_size}"
        )
    if cfg.data.group_by:
        try:
            re.compile(cfg.data.group_by)
        except re.error as e:
            raise UsageError(f"data.group_by {cfg.data.group_by!r} is not a regular expression ({e})") from e


def check_config(cfg: FinetuneConfig) -> None:
    """Refuse a configuration that cannot train (usage errors naming the key or flag)."""
    if not cfg.data.train:
        raise UsageError("no training set given")
    if cfg.model.refine < 0:
        raise UsageError(f"model.refine must be >= 0 (0: no pixel refiner), got {cfg.model.refine}")
    if cfg.data.gsd is not None and not cfg.data.gsd > 0:
        raise UsageError(f"data.gsd must be a pixel size in metres > 0, got {cfg.data.gsd}")
    if cfg.data.scaling not in (None, *INPUT_SCALES):
        raise UsageError(f"unknown input scale {cfg.data.scaling!r}; use one of {', '.join(INPUT_SCALES)}")
    cfg.augment.check(cfg.task)
    _check_detection(cfg)
    _check_mixing(cfg)
    _check_pseudo(cfg)
