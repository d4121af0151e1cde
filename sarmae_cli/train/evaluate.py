"""Metrics of classifiers and segmenters: the validation pass of fine-tuning, and scoring a
weights file on a labelled set (`sarmae evaluate`) with the preprocessing stored in it.

    m, meta = evaluate_weights(Path("mstar.safetensors"), Path("mstar10/test"), torch.device("cpu"))
    write_report(m, meta.class_names, Path("mstar_test.json"))  # metrics JSON + confusion PNG
    print(headline(m))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sarmae_cli.data import labelled as L
from sarmae_cli.data.detection_labels import scan_detection, shorten
from sarmae_cli.data.preprocess import InputSpec, check_band_count
from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.model.factory import load_model
from sarmae_cli.model.runtime import autocast
from sarmae_cli.train import metrics
from sarmae_cli.train.detection_dataset import DetectionDataset, group_split, load_images
from sarmae_cli.train.detection_eval import evaluate_detection, headline_detection, save_pr_png

#: Tasks that have a head and metrics.
TASKS = ("classification", "segmentation", "detection")


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
    if "ap50" in m:
        return headline_detection(m)
    if "overall_accuracy" in m:
        per = " ".join(f"{n} {v * 100:.1f}" for n, v in m["per_class_accuracy"].items() if v is not None)
        oa, mca = m["overall_accuracy"] * 100, m["mean_class_accuracy"] * 100
        return f"overall accuracy {oa:.2f}%, mean class accuracy {mca:.2f}% ({per})"
    iou = " ".join(f"{n} {v * 100:.2f}" for n, v in m["iou"].items() if v is not None)
    return f"mIoU {m['miou'] * 100:.2f}% (IoU {iou}), pixel accuracy {m['pixel_accuracy'] * 100:.2f}%"


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
            f"{weights} is {meta.task!r} weights without a task head; evaluate classification, "
            "segmentation or detection weights made by `sarmae finetune`"
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
        check_band_count(raws[0].shape[0], meta.encoder_config.in_chans, meta.bands, f"the dataset {data}")
        val: Any = L.ChipDataset(raws, labels, spec)
        m = evaluate(model, val, meta.task, names, device, batch_size, tta=tta)
        m["tta"] = tta
    elif meta.task == "detection":
        m = _evaluate_detection_weights(
            model, meta, Path(data), device, o, batch_size, tta, holdout, split_seed
        )
        report.skipped += m.pop("label_skipped")
    else:
        if tta > 1:
            raise UsageError("--tta applies to classification weights; segmentation is scored in one pass")
        pairing = L.Pairing.parse(o["pairing"]) if o.get("pairing") else None
        pairs, _ = L.scan_segmentation(Path(data), pairing)
        if holdout:
            pairs = L.holdout_pairs(pairs, holdout, split_seed)[1]
        images, masks, _ = L.load_pairs(pairs, report)
        check_band_count(images[0].shape[0], meta.encoder_config.in_chans, meta.bands, f"the dataset {data}")
        values = o.get("mask_values") or meta.training.get("mask_values") or list(range(len(names)))
        ignore = o.get("ignore_value", meta.training.get("ignore_value", -1))
        coding = L.MaskCoding(tuple(values), ignore)
        if len(coding.values) != len(names):
            raise UsageError(f"{len(values)} mask values given for the model's {len(names)} classes {names}")
        labels = [coding.encode(mk, str(p[1])) for mk, p in zip(masks, pairs, strict=False)]
        val = L.SegmentationDataset(images, labels, spec)
        tile, overlap = spec.tiling(size)
        stride = o.get("eval_stride") or (tile - overlap) or tile
        m = evaluate(model, val, meta.task, names, device, batch_size, size, stride)
    m["skipped_files"] = report.num_skipped
    m["skipped"] = report.skipped[:20]
    m["weights"] = str(weights)
    m["data"] = f"{holdout:g} of {data} (split seed {split_seed})" if holdout else str(data)
    return m, meta


def _evaluate_detection_weights(
    model: nn.Module,
    meta: WeightsMeta,
    data: Path,
    device: torch.device,
    o: dict[str, Any],
    batch_size: int,
    tta: int,
    holdout: float | None,
    split_seed: int,
) -> dict[str, Any]:
    """Box metrics of detection weights on labelled images (COCO, YOLO or masks), by sliding
    window with the stored tile and overlap; the stored class names name the classes."""
    if tta > 1:
        raise UsageError("--tta applies to classification weights; detection is scored in one pass")
    spec = stored_spec(meta)
    names = list(meta.class_names or [])
    cfg = meta.training.get("config", {})
    det = meta.training.get("detection", {})
    pairing = L.Pairing.parse(o["pairing"]) if o.get("pairing") else None
    min_size = float(cfg.get("detection", {}).get("min_box_size", 1.0))
    index = scan_detection(data, names, min_size, pairing)
    samples = index.samples
    if holdout:
        from_cfg = cfg.get("data", {}).get("group_by")  # the split fine-tuning made
        samples = group_split(samples, holdout, split_seed, from_cfg)[1]
    report = L.LoadReport()
    raws, targets = load_images(samples, report)
    check_band_count(raws[0].shape[0], meta.encoder_config.in_chans, meta.bands, f"the dataset {data}")
    tile, overlap = spec.tiling()
    m = evaluate_detection(
        model, DetectionDataset(raws, targets, spec), names, device, tile, overlap,
        float(det.get("score_thresh", 0.05)), float(det.get("nms_thresh", 0.6)),
        int(det.get("max_detections", 100)), batch_size, float(det.get("zoom", 1.0)),
    )  # fmt: skip
    m["warnings"] = shorten(index.report.warnings)
    m["dropped_boxes"] = index.report.dropped_boxes
    m["label_skipped"] = index.report.skipped + report.skipped
    return m


def stored_spec(meta: WeightsMeta) -> InputSpec:
    """The input preprocessing a weights file was trained with, as stored in its metadata."""
    return InputSpec.from_meta(meta.to_dict())


def metrics_path(output: Path) -> Path:
    """mstar.safetensors -> mstar.metrics.json (next to the weights)."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".metrics.json")


def confusion_path(output: Path) -> Path:
    return output.with_name(output.name.removesuffix(".safetensors") + ".confusion.png")


def write_report(
    m: dict[str, Any],
    class_names: list[str],
    json_path: Path,
    overwrite: bool = False,
    png_path: Path | None = None,
    title: str = "",
) -> Path:
    """Write the metrics JSON and the confusion-matrix plot beside it (`png_path`, default:
    the JSON's name with .png). Returns the plot's path."""
    png = png_path or json_path.with_suffix(".png")
    metrics.write_json(m, json_path, overwrite=overwrite)
    if "pr_curve" in m:  # detection: the precision-recall curves
        save_pr_png(m, png, title=title or json_path.stem)
        return png
    metrics.save_confusion_png(
        np.array(m["confusion_matrix"]), class_names, png, title=title or json_path.stem
    )
    return png
