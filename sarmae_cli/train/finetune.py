"""Fine-tuning and evaluation of SARMAE classifiers and segmenters with the paper's protocols.

    cfg = resolve_config("classification", file_layer, {"data": {"train": "mstar10/train",
                         "val": "mstar10/test", "shots": 40}, "model": {"init": "random"}})
    summary = finetune(cfg, Path("mstar.safetensors"), seeds=[0, 1, 2])

One seed = one run of the shared loop (`train/loop.py`) in RUN_DIR/seed<N> (resumable), then
an evaluation of the final model on the validation set (never used for model selection).
The weights of the first seed are written to OUT with everything inference needs (task,
class names, input scaling, normalisation, chip fit, tile defaults, metrics, the resolved
training config and provenance); OUT's metrics JSON holds every seed and mean ± std.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.layers import resample_abs_pos_embed
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import Dataset, Subset

from sarmae_cli.data import labelled as L
from sarmae_cli.data.augment import Augment, sample_rng
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.data.speckle import SpeckleConfig, inject
from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    adapt_in_chans,
    load_state_strict,
    provenance,
    read_weights,
    shipped_weights_dir,
    sub_state,
)
from sarmae_cli.model.config import ViTConfig, preset
from sarmae_cli.model.factory import load_model, save_model
from sarmae_cli.model.heads import (
    Classifier,
    SegmentationLoss,
    Segmenter,
    freeze_encoder,
    param_groups_lrd,
)
from sarmae_cli.model.runtime import autocast, resolve_device
from sarmae_cli.outputs import check_output
from sarmae_cli.train import distributed, metrics, pseudo
from sarmae_cli.train.config import from_dict, merge_config, to_dict
from sarmae_cli.train.loop import CHECKPOINT, EPOCH_LOG, LOG, LoopConfig, TrainTask, train

TASKS = ("classification", "segmentation")


# --------------------------------------------------------------------------- configuration


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
    scaling: str | None = None  # input scaling mode; default: detected from the data
    stretch: str = "fixed"  # "fixed" range, or per-image/scene "percentile" (radiometry-robust)
    balance: bool = False  # oversample classes to equal counts (imbalanced sets)
    class_names: list[str] | None = None  # segmentation class names (index = class id)
    pairing: str | None = None  # IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN]
    mask_values: list[int] | None = None  # mask value of each class; default: detected
    ignore_value: int | None = -1  # mask value excluded from loss and metrics
    eval_stride: int | None = None  # sliding-window stride; default 3/4 of the chip
    unlabelled: str | None = None  # self-training chips: "rest" (TRAIN's unchosen chips) or a folder
    teacher: str | None = None  # classification weights that pseudo-label the unlabelled chips
    pseudo_threshold: float = 0.9  # keep pseudo-labels with at least this softmax confidence


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
    mixup: float = 0.0  # mixup alpha (classification; 0: off), timm.data.Mixup
    cutmix: float = 0.0  # cutmix alpha (classification; 0: off); with both, each batch takes one


@dataclass
class FinetuneConfig:
    task: str = "classification"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
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
        raise UsageError(f"unknown task {task!r}; use classification or segmentation")
    loop = {"epochs": 30, "batch_size": 64, "warmup_epochs": 5, "weight_decay": 0.05, "betas": [0.9, 0.999]}
    if task == "classification":
        return {"task": task, "loop": loop}
    return {"task": task, "lr": 6e-5, "model": {"layer_decay": 0.9}, "loop": {**loop, "batch_size": 8}}


def resolve_config(task: str, *layers: dict[str, Any]) -> FinetuneConfig:
    """Task defaults, then each layer (config file, then command-line flags) on top."""
    merged = merge_config(task_defaults(task), *(_drop_none(layer) for layer in layers))
    merged["task"] = task
    return from_dict(FinetuneConfig, merged)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """A config layer without its None values (at any depth): None means 'not given'."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


# --------------------------------------------------------------------------- starting points


def resolve_init(init: str) -> Path | None:
    """The weights file to start from (None for random initialisation)."""
    if init == "random":
        return None
    if init == "default":
        from sarmae_cli.infer.models import RESTORE_HINT, SHIPPED

        path = shipped_weights_dir() / SHIPPED["encoder"]
        if not path.is_file():
            raise WeightsError(
                f"the shipped encoder is missing: {path}; {RESTORE_HINT}, or pass --init WEIGHTS "
                "or --init random"
            )
        return path
    path = Path(init)
    if not path.is_file():
        raise UsageError(f"--init {init}: no such weights file (or use 'random' / 'default')")
    return path


@dataclass
class Start:
    """The encoder architecture and tensors to start from, with the init's metadata."""

    enc: ViTConfig
    tensors: dict[str, torch.Tensor] | None
    meta: WeightsMeta | None
    source: str


def load_start(cfg: FinetuneConfig, in_chans: int) -> Start:
    """Encoder config and weights of `cfg.model.init`, adapted to `in_chans` bands."""
    path = resolve_init(cfg.model.init)
    size = cfg.data.chip_size or 224
    if path is None:
        extra = {"depth": cfg.model.depth} if cfg.model.depth else {}
        enc = preset(cfg.model.preset or "base", in_chans=in_chans, img_size=size, **extra)
        return Start(enc, None, None, "random")
    tensors, meta = read_weights(path)
    if not any(k.startswith("encoder.") for k in tensors):
        raise WeightsError(f"{path} holds no encoder weights (task {meta.task}); give encoder weights")
    tensors, meta = adapt_in_chans(tensors, meta, in_chans)
    enc = meta.encoder_config
    if cfg.data.chip_size and cfg.data.chip_size != enc.img_size:  # the grid inference will use
        enc = replace(enc, img_size=cfg.data.chip_size)
        tensors = dict(tensors)
        grid = [enc.grid_size, enc.grid_size]
        tensors["encoder.pos_embed"] = resample_abs_pos_embed(tensors["encoder.pos_embed"].float(), grid)
    if cfg.model.preset:
        want = preset(cfg.model.preset)
        if (want.embed_dim, want.depth, want.num_heads) != (enc.embed_dim, enc.depth, enc.num_heads):
            raise UsageError(
                f"--model {cfg.model.preset} does not match the --init weights {path} "
                f"(width {enc.embed_dim}, depth {enc.depth}); drop --model or use other weights"
            )
    return Start(enc, sub_state(tensors, "encoder."), meta, str(path))


def build_model(cfg: FinetuneConfig, start: Start, num_classes: int) -> nn.Module:
    """Classifier or segmenter on the start encoder (drop path, optional frozen encoder)."""
    dpr = 0.0 if cfg.model.freeze_encoder else cfg.model.drop_path
    if cfg.task == "classification":
        model: nn.Module = Classifier(start.enc, num_classes, dpr)
    else:
        model = Segmenter(
            start.enc,
            num_classes,
            cfg.model.decoder,
            cfg.model.channels,
            drop_path_rate=dpr,
            refine=cfg.model.refine,
        )
    if start.tensors is not None:
        load_state_strict(model.encoder, {k: v.float() for k, v in start.tensors.items()}, where=start.source)
    if cfg.model.freeze_encoder:
        freeze_encoder(model)
    return model


# --------------------------------------------------------------------------- data


@dataclass
class Prepared:
    """Training dataset and validation data of one seed, with what describes them."""

    train: Dataset
    val: Any  # ChipDataset (classification) or SegmentationDataset with crop=None
    spec: L.InputSpec
    class_names: list[str]
    in_chans: int
    info: dict[str, Any]  # counts, skipped files, protocol: goes into metrics and provenance
    coding: L.MaskCoding | None = None


def _spec(cfg: FinetuneConfig, raws: list[np.ndarray], start: Start | None, size: int) -> L.InputSpec:
    """Scaling (given or detected) and normalisation (the init's, else the training data's)."""
    scaling = Scaling(mode=cfg.data.scaling) if cfg.data.scaling else L.detect_scaling(raws[0])
    scaling = replace(scaling, stretch=cfg.data.stretch)
    if start is not None and start.meta is not None and start.meta.normalization.get("mean"):
        mean, std = start.meta.normalization["mean"], start.meta.normalization["std"]
    else:
        mean, std = L.band_stats(raws, scaling)
    return L.InputSpec(scaling, list(mean), list(std), size, cfg.data.fit, cfg.data.crop)


def _check_range(name: str, value: Any, upper: float | None, hint: str) -> None:
    """Refuse a [low, high] config pair that is not two numbers with 0 < low <= high (<= upper)."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be two numbers [low, high] ({hint}), got {value!r}") from None
    if not (0 < lo <= hi and (upper is None or hi <= upper)):
        bound = f" <= {upper:g}" if upper is not None else ""
        raise UsageError(f"{name} must satisfy 0 < low <= high{bound} ({hint}), got {value!r}")


def _augmenter(cfg: AugmentConfig, spec: L.InputSpec, crop_scale: tuple[float, float]) -> SarAugment | None:
    changes_values = cfg.speckle > 0 or cfg.intensity > 0
    moves = cfg.flips or cfg.rot90 or cfg.shift > 0 or tuple(crop_scale) != (1.0, 1.0)
    if not (moves or changes_values):
        return None
    return SarAugment(cfg, spec, tuple(crop_scale))


class SarAugment:
    """Training augmentation (`data/augment.py`, `data/speckle.py`): a random shift (a
    chip-size window cut from a chip prepared with a margin, see `InputSpec.chip`), random
    resized crop, flips and 90° rotations, applied alike to an image [C, S, S] and its labels [S, S], then
    optional SARE-style speckle and an optional radiometric change (contrast, brightness and
    gamma; it makes heads robust to other calibrations and display renderings) on the image, in
    the [0, 1] domain before normalisation. Randomness comes from the global torch generator,
    which the loop seeds per sample."""

    def __init__(self, cfg: AugmentConfig, spec: L.InputSpec, crop_scale: tuple[float, float]) -> None:
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
        if self.speckle is not None or self.cfg.intensity > 0:
            unit = (x * self.std + self.mean).clamp(0, 1)  # back to [0, 1]
            if self.speckle is not None:
                unit, _ = inject(unit, self.speckle, rng, self.db_span)
            if rng.random() < self.cfg.intensity:
                unit = radiometric_jitter(unit, rng, self.cfg)
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


def _check_disjoint(train: list[Path], val: list[Path]) -> None:
    """Refuse validation files that are also training files (same file after resolving links)."""
    overlap = {p.resolve() for p in train} & {p.resolve() for p in val}
    if overlap:
        raise L.DatasetError(
            f"{len(overlap)} validation images are also training images (e.g. {sorted(overlap)[0]}); "
            "give disjoint sets"
        )


def prepare_classification(cfg: FinetuneConfig, seed: int, start: Start | None) -> Prepared:
    """Index, protocol selection (seeded by `seed`), decoding and the chip pipeline."""
    d = cfg.data
    index = L.scan_classification(Path(d.train))
    if d.val:
        pool = index.samples
        val_index = L.scan_classification(Path(d.val), index.class_names)
        val_samples = val_index.samples
        _check_disjoint([s.path for s in pool], [s.path for s in val_samples])
    else:
        pool, val_samples = L.holdout_split(index.samples, d.val_fraction, d.split_seed)
    chosen = L.select_protocol(index, pool, d.shots, d.fraction, seed)
    report = L.LoadReport()
    raws, labels = L.load_chips(chosen, report)
    n_labelled = len(labels)
    pseudo_info = None
    if d.unlabelled:
        assert d.teacher is not None  # _check_pseudo
        device = resolve_device(cfg.loop.device)
        extra = pseudo.pseudo_label(
            d.unlabelled, Path(d.teacher), d.pseudo_threshold, pool, chosen, val_samples,
            index.class_names, device, report,
        )  # fmt: skip
        raws, labels, pseudo_info = raws + extra.raws, labels + extra.labels, extra.info
    val_raws, val_labels = L.load_chips(val_samples, report)
    if val_raws[0].shape[0] != raws[0].shape[0]:
        raise L.DatasetError(
            f"validation chips have {val_raws[0].shape[0]} band(s), training chips {raws[0].shape[0]}"
        )
    size = d.chip_size or (start.enc.img_size if start else 224)
    spec = _spec(cfg, raws, start, size)
    augment = _augmenter(cfg.augment, spec, cfg.augment.crop_scale)  # not None when shift > 0
    train_ds: Dataset = L.ChipDataset(raws, labels, spec, augment, cfg.augment.shift)
    if d.balance:
        train_ds = Subset(train_ds, L.balanced_indices(labels, seed))
    k = len(index.class_names)
    info = {
        "protocol": {"shots": d.shots, "fraction": d.fraction, "seed": seed},
        "train": d.train,
        "val": d.val or f"{d.val_fraction:g} of {d.train} per class (split seed {d.split_seed})",
        "train_counts": dict(zip(index.class_names, np.bincount(labels, minlength=k).tolist(), strict=True)),
        **({"labelled_count": n_labelled, "pseudo": pseudo_info} if pseudo_info else {}),
        "val_count": len(val_labels),
        "skipped_files": report.num_skipped,
        "skipped": report.skipped[:20],
    }
    val = L.ChipDataset(val_raws, val_labels, spec)
    return Prepared(train_ds, val, spec, index.class_names, raws[0].shape[0], info)


def prepare_segmentation(cfg: FinetuneConfig, seed: int, start: Start | None) -> Prepared:
    """Image/mask pairs, mask coding, random training crops and whole validation images."""
    d = cfg.data
    pairing = L.Pairing.parse(d.pairing) if d.pairing else None
    pairs, pairing = L.scan_segmentation(Path(d.train), pairing)
    if d.val:
        val_pairs, _ = L.scan_segmentation(Path(d.val), pairing)
        _check_disjoint([p[0] for p in pairs], [p[0] for p in val_pairs])
    else:
        pairs, val_pairs = L.holdout_pairs(pairs, d.val_fraction, d.split_seed)
    if d.fraction is not None:
        rng = np.random.default_rng(seed)
        n = max(1, round(d.fraction * len(pairs)))
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), n, replace=False))]
    if d.shots is not None:
        raise UsageError("--shots applies to classification; use --fraction for segmentation")
    report = L.LoadReport()
    images, masks, _ = L.load_pairs(pairs, report)
    val_images, val_masks, _ = L.load_pairs(val_pairs, report)
    if d.mask_values:
        coding = L.MaskCoding(tuple(d.mask_values), d.ignore_value)
    else:
        coding = L.detect_coding(masks, d.ignore_value)
    labels = [coding.encode(m, str(p[1])) for m, p in zip(masks, pairs, strict=False)]
    val_labels = [coding.encode(m, "validation mask") for m in val_masks]
    k = len(coding.values)
    names = d.class_names or (["background", "water"] if k == 2 else [f"class_{i}" for i in range(k)])
    if len(names) != k:
        values = list(coding.values)
        raise UsageError(f"{len(names)} class names given for {k} classes (mask values {values})")
    size = d.chip_size or (start.enc.img_size if start else 224)
    spec = _spec(cfg, images, start, size)
    train_ds = L.SegmentationDataset(
        images, labels, spec, crop=size, augment=_augmenter(cfg.augment, spec, (1.0, 1.0))
    )
    val = L.SegmentationDataset(val_images, val_labels, spec)
    info = {
        "protocol": {"fraction": d.fraction, "seed": seed},
        "train": d.train,
        "val": d.val or f"{d.val_fraction:g} of {d.train} (split seed {d.split_seed})",
        "pairing": to_dict(pairing),
        "mask_values": list(coding.values),
        "ignore_value": coding.ignore_value,
        "train_count": len(images),
        "val_count": len(val_images),
        "skipped_files": report.num_skipped,
        "skipped": report.skipped[:20],
    }
    return Prepared(train_ds, val, spec, names, images[0].shape[0], info, coding)


def _peek_bands(cfg: FinetuneConfig) -> int:
    """Band count of the first training image (to adapt the init before building datasets)."""
    root = Path(cfg.data.train)
    if cfg.task == "classification":
        first = L.scan_classification(root).samples
    else:
        pairs, _ = L.scan_segmentation(root, L.Pairing.parse(cfg.data.pairing) if cfg.data.pairing else None)
        first = [L.Sample(p[0], 0) for p in pairs]
    raws, _ = L.load_chips(first[:5], L.LoadReport())
    return raws[0].shape[0]


# --------------------------------------------------------------------------- training tasks


def _check_mixing(cfg: FinetuneConfig) -> None:
    a = cfg.augment
    if a.mixup < 0 or a.cutmix < 0:
        raise UsageError(f"augment.mixup and augment.cutmix are alphas >= 0, got {a.mixup} and {a.cutmix}")
    if not (a.mixup or a.cutmix):
        return
    if cfg.task != "classification":
        raise UsageError("augment.mixup / augment.cutmix apply to classification; set them to 0")
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
        raise UsageError("--unlabelled/--teacher (self-training) apply to classification")
    if not d.unlabelled or not d.teacher:
        raise UsageError("self-training needs both --unlabelled (rest or a folder) and --teacher WEIGHTS")
    if not Path(d.teacher).is_file():
        raise UsageError(f"--teacher {d.teacher} not found; give a classification weights file")
    if d.unlabelled != pseudo.REST and not Path(d.unlabelled).exists():
        raise UsageError(f"--unlabelled {d.unlabelled} not found; give a folder of chips or 'rest'")


def class_weight_tensor(weights: list[float] | None, num_classes: int) -> torch.Tensor | None:
    """The cross-entropy class weights [K], checked against the class count (None: equal)."""
    if weights is None:
        return None
    if len(weights) != num_classes or any(not w > 0 for w in weights):
        raise UsageError(
            f"class_weights {list(weights)} must give one positive weight per class ({num_classes} classes)"
        )
    return torch.tensor(weights, dtype=torch.float32)


class FinetuneTask(TrainTask):
    """One fine-tuning job for the shared loop: loss, layer-wise lr decay groups."""

    def __init__(self, model: nn.Module, cfg: FinetuneConfig, num_classes: int) -> None:
        self.model = model
        self.cfg = cfg
        weight = class_weight_tensor(cfg.class_weights, num_classes)
        self.mixup: Mixup | None = None
        a = cfg.augment
        if cfg.task == "classification" and (a.mixup or a.cutmix):
            # mixed soft targets with the label smoothing folded in (the DeiT / MAE fine-tuning recipe)
            self.mixup = Mixup(
                a.mixup, a.cutmix, label_smoothing=cfg.label_smoothing, num_classes=num_classes
            )
            self.loss: nn.Module = SoftTargetCrossEntropy()
        elif cfg.task == "classification":
            self.loss = nn.CrossEntropyLoss(weight, label_smoothing=cfg.label_smoothing)
        else:
            self.loss = SegmentationLoss(L.IGNORE_INDEX, cfg.dice_weight, weight)

    def param_groups(self, cfg: LoopConfig) -> list[dict[str, Any]]:
        return param_groups_lrd(self.model, cfg.weight_decay, self.cfg.model.layer_decay)

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch  # [B, C, S, S], [B] or [B, S, S]
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)  # mixed chips, soft targets [B, K]
        logits = model(x)  # [B, K] or [B, K, S, S]
        loss = self.loss.to(logits.device)(logits.float(), target)
        if self.mixup is not None:
            y = target.argmax(1)  # the larger component of each mixed chip
        valid = y != L.IGNORE_INDEX
        acc = ((logits.argmax(1) == y) & valid).sum() / valid.sum().clamp_min(1)
        return loss, {"acc": float(acc)}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    val: Any,
    task: str,
    class_names: list[str],
    device: torch.device,
    batch_size: int = 32,
    tile: int | None = None,
    stride: int | None = None,
    tta: int = 1,
) -> dict[str, Any]:
    """Metrics of `model` on validation data: classification chips in batches (averaged over
    `tta` crop views, `metrics.multicrop_tta`); segmentation images whole, by sliding window
    (`tile`, `stride`)."""
    model = model.to(device).eval()
    k = len(class_names)
    cm = np.zeros((k, k), np.int64)
    with autocast(device):
        if task == "classification":
            forward = metrics.multicrop_tta(model, tta) if tta > 1 else model
            for i in range(0, len(val), batch_size):
                items = [val[j] for j in range(i, min(i + batch_size, len(val)))]
                x = torch.stack([it[0] for it in items]).to(device)  # [B, C, S, S]
                y = torch.stack([it[1] for it in items])  # [B]
                cm += metrics.confusion_matrix(forward(x).argmax(1), y, k)
            return metrics.classification_metrics(cm, class_names)
        assert tile is not None
        for i in range(len(val)):
            x, y = val[i]  # [C, H, W], [H, W]
            logits = metrics.sliding_window_logits(model, x.to(device), k, tile, stride or tile)
            cm += metrics.confusion_matrix(logits.argmax(0), y, k, L.IGNORE_INDEX)
    return metrics.segmentation_metrics(cm, class_names)


def headline(m: dict[str, Any]) -> str:
    """One line of the main metrics (percent)."""
    if "overall_accuracy" in m:
        per = " ".join(f"{n} {v * 100:.1f}" for n, v in m["per_class_accuracy"].items() if v is not None)
        oa, mca = m["overall_accuracy"] * 100, m["mean_class_accuracy"] * 100
        return f"overall accuracy {oa:.2f}%, mean class accuracy {mca:.2f}% ({per})"
    iou = " ".join(f"{n} {v * 100:.2f}" for n, v in m["iou"].items() if v is not None)
    return f"mIoU {m['miou'] * 100:.2f}% (IoU {iou}), pixel accuracy {m['pixel_accuracy'] * 100:.2f}%"


# --------------------------------------------------------------------------- the job


def metrics_path(output: Path) -> Path:
    """mstar.safetensors -> mstar.metrics.json (next to the weights)."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".metrics.json")


def confusion_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".safetensors") + ".confusion.png")


def default_run_dir(output: Path) -> Path:
    """mstar.safetensors -> mstar.run/ (holds seed<N>/checkpoint.pt, log.csv)."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".run")


def _total_lr(cfg: FinetuneConfig, world: int) -> float:
    if cfg.lr is not None:
        return cfg.lr
    return cfg.blr * cfg.loop.batch_size * cfg.loop.accum_steps * world / 256


def finetune(
    cfg: FinetuneConfig,
    output: Path,
    seeds: list[int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    run_dir: Path | None = None,
    command: str | None = None,
    log: Any = None,
) -> dict[str, Any]:
    """Fine-tune once per seed, evaluate each on the validation set, save the first seed's
    model to `output` and every seed's metrics (with mean ± std) next to it. Returns the
    metrics document."""
    output = Path(output)
    seeds = seeds or [cfg.loop.seed]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds has duplicates: {seeds}")
    if not cfg.data.train:
        raise UsageError("no training set given")
    if cfg.model.refine < 0:
        raise UsageError(f"model.refine must be >= 0 (0: no pixel refiner), got {cfg.model.refine}")
    if cfg.augment.shift < 0:
        raise UsageError(f"augment.shift must be >= 0 pixels, got {cfg.augment.shift}")
    _check_range("augment.crop_scale", cfg.augment.crop_scale, upper=1.0, hint="area fractions in (0, 1]")
    _check_range("augment.crop_ratio", cfg.augment.crop_ratio, upper=None, hint="width / height, e.g. [1, 1]")
    if cfg.augment.shift and cfg.task == "segmentation":
        raise UsageError("augment.shift applies to classification; segmentation already cuts random crops")
    _check_mixing(cfg)
    _check_pseudo(cfg)
    env = distributed.setup(cfg.loop.device)
    if env.is_main:
        check_output(output, overwrite or resume)
        check_output(metrics_path(output), overwrite or resume)
    run_root = Path(run_dir) if run_dir else default_run_dir(output)
    say = log or (lambda msg: None)

    if resume and not any((run_root / f"seed{s}" / CHECKPOINT).is_file() for s in seeds):
        raise UsageError(f"cannot resume: no checkpoint in {run_root}/seed*; run without --resume")
    start = load_start(cfg, _peek_bands(cfg))
    runs, first = [], None
    for n, seed in enumerate(seeds):
        seed_cfg = replace(cfg, loop=replace(cfg.loop, seed=seed, lr=_total_lr(cfg, env.world_size)))
        prepared = (prepare_classification if cfg.task == "classification" else prepare_segmentation)(
            seed_cfg, seed, start
        )
        torch.manual_seed(seed)  # head (and random encoder) initialisation
        model = build_model(seed_cfg, start, len(prepared.class_names))
        task = FinetuneTask(model, seed_cfg, len(prepared.class_names))  # checks class_weights
        seed_dir = run_root / f"seed{seed}"
        if overwrite and not resume and env.is_main:
            for name in (CHECKPOINT, LOG, EPOCH_LOG):
                (seed_dir / name).unlink(missing_ok=True)
            shutil.rmtree(seed_dir / "tb", ignore_errors=True)
        say(f"seed {seed}: {len(prepared.train)} training samples, {len(prepared.val)} validation samples")
        resume_seed = resume and (seed_dir / CHECKPOINT).is_file()  # later seeds may not have started
        result = train(
            task,
            prepared.train,
            seed_cfg.loop,
            seed_dir,
            resume_seed,
            to_dict(seed_cfg),
            to_dict(FinetuneConfig()),
        )
        if not env.is_main:
            continue
        tile = prepared.spec.chip_size
        stride = cfg.data.eval_stride or max(1, tile * 3 // 4)
        names = prepared.class_names
        m = evaluate(model, prepared.val, cfg.task, names, env.device, cfg.eval_batch_size, tile, stride)
        say(f"seed {seed}: {headline(m)}")
        runs.append({"seed": seed, "steps": result.step, "final_train": result.metrics, **m})
        runs[-1]["data"] = prepared.info
        if n == 0:
            first = (model, prepared, seed_cfg, stride)
    if not env.is_main or first is None:
        return {}
    doc = _metrics_doc(cfg, runs, start, output)
    model, prepared, seed_cfg, stride = first
    meta = _output_meta(seed_cfg, prepared, start, doc, stride, command)
    save_model(output, model.cpu(), meta, overwrite=overwrite or resume)
    metrics.write_json(doc, metrics_path(output), overwrite=True)
    title = f"{output.name} (seed {runs[0]['seed']})"
    cm = np.array(runs[0]["confusion_matrix"])
    metrics.save_confusion_png(cm, prepared.class_names, confusion_path(output), title=title)
    return doc


def _metrics_doc(
    cfg: FinetuneConfig, runs: list[dict[str, Any]], start: Start, output: Path
) -> dict[str, Any]:
    """The metrics JSON: every seed's metrics and their mean ± std."""
    drop = ("seed", "steps", "data", "final_train", "confusion_matrix")
    scalar = [{k: v for k, v in r.items() if k not in drop} for r in runs]
    return {
        "task": cfg.task,
        "weights": str(output),
        "init": start.source,
        "seeds": [r["seed"] for r in runs],
        "summary": metrics.summarize_seeds(scalar),
        "runs": runs,
    }


def _output_meta(
    cfg: FinetuneConfig, p: Prepared, start: Start, doc: dict[str, Any], stride: int, command: str | None
) -> WeightsMeta:
    """Self-describing metadata of the fine-tuned weights."""
    run = doc["runs"][0]
    keep = ("overall_accuracy", "mean_class_accuracy", "per_class_accuracy", "miou", "iou", "pixel_accuracy")
    if start.meta is not None and len(start.meta.bands) == p.in_chans:
        bands = list(start.meta.bands)
    else:
        bands = ["SAR"] if p.in_chans == 1 else [f"band{i + 1}" for i in range(p.in_chans)]
    size = p.spec.chip_size
    training: dict[str, Any] = {
        "config": to_dict(cfg),
        "preprocess": p.spec.preprocess_meta(),
        "seed": run["seed"],
        "steps": run["steps"],
    }
    if p.coding is not None:
        training["mask_values"] = list(p.coding.values)
        training["ignore_value"] = p.coding.ignore_value
    return WeightsMeta(
        task=cfg.task,
        encoder=start.enc.to_dict(),
        bands=bands,
        input_scaling=p.spec.scaling.to_dict(),
        normalization={"mean": list(p.spec.mean), "std": list(p.spec.std)},
        class_names=list(p.class_names),
        tile={"size": size, "overlap": size - stride if cfg.task == "segmentation" else 0},
        channel_adaptation=start.meta.channel_adaptation if start.meta else None,
        training=training,
        metrics={
            "validation": {k: run[k] for k in keep if k in run},
            "seeds": doc["summary"],
            "num_seeds": len(doc["runs"]),
        },
        provenance=provenance(command, init=start.source, data=p.info),
    )


# --------------------------------------------------------------------------- evaluation only


def stored_spec(meta: WeightsMeta) -> L.InputSpec:
    """The input preprocessing a fine-tuned weights file was trained with (scaling,
    normalisation, chip size and fit), as stored in its metadata."""
    pre = meta.training.get("preprocess", {})
    size = int(pre.get("chip_size", meta.tile.get("size", meta.encoder_config.img_size)))
    return L.InputSpec(
        Scaling.from_dict(meta.input_scaling),
        meta.normalization["mean"],
        meta.normalization["std"],
        size,
        *L.preprocess_fit(meta.training),
    )


def evaluate_weights(
    weights: Path,
    data: Path,
    device: torch.device,
    overrides: dict[str, Any] | None = None,
    batch_size: int = 32,
    tta: int = 1,
    holdout: float | None = None,
) -> tuple[dict[str, Any], WeightsMeta]:
    """Metrics of a fine-tuned weights file on a labelled set, with the preprocessing, classes
    and mask coding stored in the weights (`overrides`: pairing, mask_values, ignore_value,
    eval_stride; `tta`: crop views averaged per chip, classification only). With `holdout`,
    only the share of `data` that `--val-fraction holdout` held out is scored (the split seed
    stored in the weights, else 0)."""
    o = overrides or {}
    model, meta = load_model(Path(weights))
    split_seed = int(meta.training.get("config", {}).get("data", {}).get("split_seed") or 0)
    if meta.task not in TASKS or not meta.class_names:
        raise WeightsError(
            f"{weights} is {meta.task!r} weights without a task head; evaluate classification or "
            "segmentation weights made by `sarmae finetune`"
        )
    spec = stored_spec(meta)
    size = spec.chip_size
    report = L.LoadReport()
    names = list(meta.class_names)
    if meta.task == "classification":
        index = L.scan_classification(Path(data), names)
        samples = index.samples
        if holdout:
            samples = L.holdout_split(samples, holdout, split_seed)[1]
        raws, labels = L.load_chips(samples, report)
        _check_bands(raws[0].shape[0], meta, weights)
        val: Any = L.ChipDataset(raws, labels, spec)
        m = evaluate(model, val, meta.task, names, device, batch_size, tta=tta)
        m["tta"] = tta
    else:
        if tta > 1:
            raise UsageError("--tta applies to classification weights; segmentation is scored in one pass")
        pairing = L.Pairing.parse(o["pairing"]) if o.get("pairing") else None
        pairs, _ = L.scan_segmentation(Path(data), pairing)
        if holdout:
            pairs = L.holdout_pairs(pairs, holdout, split_seed)[1]
        images, masks, _ = L.load_pairs(pairs, report)
        _check_bands(images[0].shape[0], meta, weights)
        values = o.get("mask_values") or meta.training.get("mask_values") or list(range(len(names)))
        ignore = o.get("ignore_value", meta.training.get("ignore_value", -1))
        coding = L.MaskCoding(tuple(values), ignore)
        if len(coding.values) != len(names):
            raise UsageError(f"{len(values)} mask values given for the model's {len(names)} classes {names}")
        labels = [coding.encode(mk, str(p[1])) for mk, p in zip(masks, pairs, strict=False)]
        val = L.SegmentationDataset(images, labels, spec)
        stride = o.get("eval_stride") or (size - int(meta.tile.get("overlap", size // 4))) or size
        m = evaluate(model, val, meta.task, names, device, batch_size, size, stride)
    m["skipped_files"] = report.num_skipped
    m["skipped"] = report.skipped[:20]
    m["weights"] = str(weights)
    m["data"] = f"{holdout:g} of {data} (split seed {split_seed})" if holdout else str(data)
    return m, meta


def _check_bands(n: int, meta: WeightsMeta, weights: Path) -> None:
    if n != meta.encoder_config.in_chans:
        raise WeightsError(
            f"{weights} expects {meta.encoder_config.in_chans} band(s) ({', '.join(meta.bands)}) but the "
            f"dataset has {n}; evaluate weights trained on {n}-band data"
        )
