"""Detection fine-tuning data of one seed: labels (`data/detection_labels.py`), the split
(`--val`, or whole `data.group_by` groups held out), decoding and the training crops
(`train/detection_dataset.py`).

    prepared = prepare_detection(cfg, seed=0, size=384)
    x, target = prepared.train[0]  # [C, S, S], {"boxes": [M, 4] xyxy, "labels": [M]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sarmae_cli.data import labelled as L
from sarmae_cli.data.detection_labels import DetectionIndex, scan_detection, shorten
from sarmae_cli.errors import UsageError
from sarmae_cli.train.detection_dataset import (
    DetectionDataset,
    class_counts,
    group_split,
    image_group,
    load_images,
    longest_side,
)
from sarmae_cli.train.finetune_config import FinetuneConfig
from sarmae_cli.train.finetune_data import Prepared, check_disjoint, input_spec


def _scan(cfg: FinetuneConfig, root: str, names: list[str] | None) -> DetectionIndex:
    pairing = L.Pairing.parse(cfg.data.pairing) if cfg.data.pairing else None
    return scan_detection(Path(root), names, cfg.detection.min_box_size, pairing)


def prepare_detection(
    cfg: FinetuneConfig, seed: int, size: int = 384, init_norm: dict[str, Any] | None = None
) -> Prepared:
    """Labels, split (by `data.group_by` groups), decoding, and the training crops."""
    d = cfg.data
    if d.shots is not None:
        raise UsageError("--shots applies to classification; use --fraction for detection")
    index = _scan(cfg, d.train, d.class_names)
    names = index.class_names
    warnings = list(index.report.warnings)
    if d.val:
        val_index = _scan(cfg, d.val, names)
        warnings += val_index.report.warnings
        pool, val_samples = index.samples, val_index.samples
        check_disjoint([s.image for s in pool], [s.image for s in val_samples])
    else:
        pool, val_samples = group_split(index.samples, d.val_fraction, d.split_seed, d.group_by)
    if d.fraction is not None:
        rng = np.random.default_rng(seed)
        n = max(1, round(d.fraction * len(pool)))
        pool = [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
    if not any(len(s.boxes) for s in pool):
        raise UsageError(f"the training set {d.train} has no boxes left; check the labels and the warnings")
    report = L.LoadReport()
    raws, targets = load_images(pool, report)
    val_raws, val_targets = load_images(val_samples, report)
    if val_raws[0].shape[0] != raws[0].shape[0]:
        raise L.DatasetError(
            f"validation images have {val_raws[0].shape[0]} band(s), training images {raws[0].shape[0]}"
        )
    size = d.chip_size or size
    spec = input_spec(cfg, raws, init_norm, size)
    train_ds = DetectionDataset(raws, targets, spec, size, cfg.detection, cfg.augment)
    val = DetectionDataset(val_raws, val_targets, spec)
    groups = sorted({image_group(s.image, d.group_by) for s in val_samples})
    k = len(names)
    info = {
        "protocol": {"fraction": d.fraction, "seed": seed},
        "train": d.train,
        "val": d.val
        or f"{d.val_fraction:g} of {d.train} by group ({d.group_by!r}, split seed {d.split_seed})",
        "label_format": index.format,
        "val_groups": groups,
        "train_count": len(raws),
        "val_count": len(val_raws),
        "train_boxes": dict(zip(names, class_counts(targets, k), strict=True)),
        "val_boxes": int(sum(len(t["boxes"]) for t in val_targets)),
        "longest_object": longest_side(targets),
        "skipped_files": report.num_skipped + index.report.num_skipped,
        "dropped_boxes": index.report.dropped_boxes,
        "skipped": (report.skipped + index.report.skipped)[:20],
        "warnings": shorten(warnings),
    }
    return Prepared(train_ds, val, spec, names, raws[0].shape[0], info)


def peek_detection_bands(cfg: FinetuneConfig) -> int:
    """Band count of the first training images (grey RGB counts as one band)."""
    index = _scan(cfg, cfg.data.train, cfg.data.class_names)
    raws, _ = load_images(index.samples[:3], L.LoadReport())
    return raws[0].shape[0]
