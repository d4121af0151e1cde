"""Fine-tuning data: the training and validation sets of one seed, from the labelled folders
(`data/labelled.py`), the protocol (--shots/--fraction), optional pseudo-labelled chips, and
the input route of `data/preprocess.py`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from sarmae_cli.data import labelled as L
from sarmae_cli.data.augment import make_augment, rerender
from sarmae_cli.data.preprocess import InputSpec, band_stats, detect_scaling
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.errors import UsageError
from sarmae_cli.model.runtime import resolve_device
from sarmae_cli.train.config import to_dict
from sarmae_cli.train.finetune_config import FinetuneConfig
from sarmae_cli.train.pseudo import pseudo_label


@dataclass
class Prepared:
    """Training dataset and validation data of one seed, with what describes them."""

    train: Dataset
    val: Any  # ChipDataset (classification) or SegmentationDataset with crop=None
    spec: InputSpec
    class_names: list[str]
    in_chans: int
    info: dict[str, Any]  # counts, skipped files, protocol: goes into metrics and provenance
    coding: L.MaskCoding | None = None


def input_spec(
    cfg: FinetuneConfig, raws: list[np.ndarray], init_norm: dict[str, Any] | None, size: int
) -> InputSpec:
    """Scaling (given or detected) and normalisation (the init's, else the training data's)."""
    given = cfg.data.scaling not in (None, "auto")
    scaling = Scaling(mode=cfg.data.scaling) if given else detect_scaling(raws[0])
    scaling = replace(scaling, stretch=cfg.data.stretch)
    if init_norm and init_norm.get("mean"):
        mean, std = init_norm["mean"], init_norm["std"]
    else:
        mean, std = band_stats(raws, scaling)
    return InputSpec(scaling, list(mean), list(std), size, cfg.data.fit, cfg.data.crop)


def check_disjoint(train: list[Path], val: list[Path]) -> None:
    """Refuse validation files that are also training files (same file after resolving links)."""
    overlap = {p.resolve() for p in train} & {p.resolve() for p in val}
    if overlap:
        raise L.DatasetError(
            f"{len(overlap)} validation images are also training images (e.g. {sorted(overlap)[0]}); "
            "give disjoint sets"
        )


def check_classes(names: list[str], labels: list[int], where: str) -> None:
    """A classifier learns to tell classes apart: refuse a set with fewer than two of them."""
    present = sorted({names[i] for i in labels})
    if len(present) < 2:
        found = f"only class {present[0]!r}" if present else "no labelled chip"
        raise UsageError(
            f"the {where} has {found}; classification needs at least two classes "
            "(one folder per class, or two labels in the CSV)"
        )


def missing_classes(names: list[str], labels: list[np.ndarray], where: str) -> list[str]:
    """Segmentation classes absent from every mask: an error when fewer than two classes are
    present, else one warning line per missing class (returned)."""
    counts = sum(np.bincount(m[m >= 0].ravel(), minlength=len(names)) for m in labels)
    missing = [n for n, c in zip(names, counts, strict=True) if c == 0]
    if len(names) - len(missing) < 2:
        raise UsageError(
            f"the {where} masks contain no {' and no '.join(repr(n) for n in missing)} pixels; a segmenter "
            "needs at least two classes present (check --set data.mask_values or the masks)"
        )
    return [f"warning: no {n!r} pixels in the {where} masks; the model cannot learn it" for n in missing]


def prepare_classification(
    cfg: FinetuneConfig, seed: int, size: int = 224, init_norm: dict[str, Any] | None = None
) -> Prepared:
    """Index, protocol selection (seeded by `seed`), decoding and the chip pipeline."""
    d = cfg.data
    index = L.scan_classification(Path(d.train))
    if d.val:
        pool = index.samples
        val_index = L.scan_classification(Path(d.val), index.class_names)
        val_samples = val_index.samples
        check_disjoint([s.path for s in pool], [s.path for s in val_samples])
    else:
        pool, val_samples = L.holdout_split(index.samples, d.val_fraction, d.split_seed)
    check_classes(index.class_names, [s.label for s in pool], "training set")
    if d.val:
        check_classes(index.class_names, [s.label for s in val_samples], "validation set")
    chosen = L.select_protocol(index, pool, d.shots, d.fraction, seed)
    report = L.LoadReport()
    raws, labels = L.load_chips(chosen, report)
    n_labelled = len(labels)
    pseudo_info = None
    if d.unlabelled:
        assert d.teacher is not None  # _check_pseudo
        device = resolve_device(cfg.loop.device)
        extra = pseudo_label(
            d.unlabelled, Path(d.teacher), d.pseudo_threshold, pool, chosen, val_samples,
            index.class_names, device, report,
        )  # fmt: skip
        raws, labels, pseudo_info = raws + extra.raws, labels + extra.labels, extra.info
    val_raws, val_labels = L.load_chips(val_samples, report)
    if val_raws[0].shape[0] != raws[0].shape[0]:
        raise L.DatasetError(
            f"validation chips have {val_raws[0].shape[0]} band(s), training chips {raws[0].shape[0]}"
        )
    spec = input_spec(cfg, raws, init_norm, d.chip_size or size)
    augment = make_augment(cfg.augment, spec, cfg.augment.crop_scale)  # not None when shift > 0
    train_ds: Dataset = L.ChipDataset(
        raws, labels, spec, augment, cfg.augment.shift, rerender(cfg.augment.render)
    )
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


def prepare_segmentation(
    cfg: FinetuneConfig, seed: int, size: int = 224, init_norm: dict[str, Any] | None = None
) -> Prepared:
    """Image/mask pairs, mask coding, random training crops and whole validation images."""
    d = cfg.data
    pairing = L.Pairing.parse(d.pairing) if d.pairing else None
    pairs, pairing = L.scan_segmentation(Path(d.train), pairing)
    if d.val:
        val_pairs, _ = L.scan_segmentation(Path(d.val), pairing)
        check_disjoint([p[0] for p in pairs], [p[0] for p in val_pairs])
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
    warnings = missing_classes(names, labels, "training")
    size = d.chip_size or size
    spec = input_spec(cfg, images, init_norm, size)
    train_ds = L.SegmentationDataset(
        images, labels, spec, size, make_augment(cfg.augment, spec, (1.0, 1.0)), rerender(cfg.augment.render)
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
        "warnings": warnings,
    }
    return Prepared(train_ds, val, spec, names, images[0].shape[0], info, coding)


def peek_bands(cfg: FinetuneConfig) -> int:
    """Band count of the first training image (to adapt the init before building datasets)."""
    root = Path(cfg.data.train)
    if cfg.task == "classification":
        first = L.scan_classification(root).samples
    else:
        pairs, _ = L.scan_segmentation(root, L.Pairing.parse(cfg.data.pairing) if cfg.data.pairing else None)
        first = [L.Sample(p[0], 0) for p in pairs]
    raws, _ = L.load_chips(first[:5], L.LoadReport())
    return raws[0].shape[0]
