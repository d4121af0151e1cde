"""Self-training for classification: unlabelled chips labelled by a fine-tuned teacher.

A teacher (classification weights from `sarmae finetune`) predicts each unlabelled chip; the
chips whose top probability reaches a threshold join the training set with the teacher's
class. The unlabelled chips are either the training chips a protocol left out (`rest`: their
labels are not used for training, only to report how right the kept pseudo-labels are) or any
folder of chips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sarmae_cli.data import labelled as L
from sarmae_cli.data.unlabelled import find_images
from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.factory import load_model
from sarmae_cli.model.runtime import autocast
from sarmae_cli.train.evaluate import stored_spec

REST = "rest"


@dataclass
class PseudoSet:
    """Kept unlabelled chips with their teacher labels, and a description for the metrics."""

    raws: list[np.ndarray]
    labels: list[int]
    info: dict[str, Any]


def unlabelled_samples(
    source: str, pool: list[L.Sample], chosen: list[L.Sample], val: list[L.Sample]
) -> list[L.Sample]:
    """The unlabelled chips: `rest` (training chips of `pool` not in `chosen`, true labels kept
    for the diagnostic only) or the images of a folder / manifest (label -1). Refuses chips that
    are also training or validation chips."""
    if source == REST:
        taken = {s.path.resolve() for s in chosen}
        rest = [s for s in pool if s.path.resolve() not in taken]
        if not rest:
            raise UsageError(
                "data.unlabelled rest: the protocol already uses every training chip; give --shots or "
                "--fraction, or a folder of unlabelled chips"
            )
        return rest
    files = find_images([Path(source)])
    clash = {p.resolve() for p in files} & {s.path.resolve() for s in [*chosen, *val]}
    if clash:
        raise UsageError(
            f"{len(clash)} unlabelled chips are also labelled training or validation chips (e.g. "
            f"{sorted(clash)[0]}); give a folder of other chips, or 'rest'"
        )
    return [L.Sample(p, -1) for p in files]


@torch.no_grad()
def teacher_predict(
    teacher: Path, raws: list[np.ndarray], class_names: list[str], device: torch.device, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Top class and its softmax probability for each raw chip, with the teacher's own
    preprocessing. Returns (labels [N] int64, confidence [N] float32)."""
    model, meta = load_model(Path(teacher))
    if meta.task != "classification":
        raise WeightsError(
            f"data.teacher {teacher} is {meta.task!r} weights; "
            "give classification weights from `sarmae finetune`"
        )
    if list(meta.class_names) != list(class_names):
        raise WeightsError(
            f"data.teacher {teacher} has classes {', '.join(meta.class_names)} but the training set has "
            f"{', '.join(class_names)}; give a teacher trained on these classes"
        )
    if raws[0].shape[0] != meta.encoder_config.in_chans:
        raise WeightsError(
            f"data.teacher {teacher} expects {meta.encoder_config.in_chans} band(s), "
            f"the chips have {raws[0].shape[0]}"
        )
    spec = stored_spec(meta)
    model = model.to(device).eval()
    labels, conf = [], []
    with autocast(device):
        for i in range(0, len(raws), batch_size):
            x = torch.stack([spec.chip(r) for r in raws[i : i + batch_size]]).to(device)  # [B, C, S, S]
            p = model(x).float().softmax(1)  # [B, K]
            c, k = p.max(1)
            labels.append(k.cpu())
            conf.append(c.cpu())
    return torch.cat(labels).numpy(), torch.cat(conf).numpy()


def pseudo_label(
    source: str,
    teacher: Path,
    threshold: float,
    pool: list[L.Sample],
    chosen: list[L.Sample],
    val: list[L.Sample],
    class_names: list[str],
    device: torch.device,
    report: L.LoadReport,
) -> PseudoSet:
    """Teacher-labelled unlabelled chips at or above `threshold` confidence."""
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"data.pseudo_threshold must be in (0, 1), got {threshold}")
    samples = unlabelled_samples(source, pool, chosen, val)
    raws, truth = L.load_chips(samples, report)
    pred, conf = teacher_predict(teacher, raws, class_names, device)
    keep = np.flatnonzero(conf >= threshold)
    if keep.size == 0:
        raise UsageError(
            f"no unlabelled chip reached data.pseudo_threshold {threshold} (highest {conf.max():.3f}); "
            "lower the threshold or give a better teacher"
        )
    k = len(class_names)
    info: dict[str, Any] = {
        "source": source,
        "teacher": str(teacher),
        "threshold": threshold,
        "candidates": len(raws),
        "kept": int(keep.size),
        "kept_per_class": dict(zip(class_names, np.bincount(pred[keep], minlength=k).tolist(), strict=True)),
    }
    truth_arr = np.asarray(truth)
    if source == REST:  # diagnostic only: the hidden labels never reach the training
        info["kept_accuracy"] = float(np.mean(pred[keep] == truth_arr[keep]))
        info["candidates_accuracy"] = float(np.mean(pred == truth_arr))
    return PseudoSet([raws[i] for i in keep], pred[keep].tolist(), info)
