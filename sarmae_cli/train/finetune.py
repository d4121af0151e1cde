"""Fine-tuning of SARMAE classifiers and segmenters with the paper's protocols.

    cfg = resolve_config("classification", file_layer, {"data": {"train": "mstar10/train",
                         "val": "mstar10/test", "shots": 40}, "model": {"init": "random"}})
    summary = finetune(cfg, Path("mstar.safetensors"), seeds=[0, 1, 2])

One seed = one run of the shared loop (`train/loop.py`) in RUN_DIR/seed<N> (resumable), then
an evaluation of the final model on the validation set (never used for model selection).
The weights of the first seed are written to OUT with everything inference needs (task,
class names, input scaling, normalisation, chip fit, tile defaults, metrics, the resolved
training config and provenance); OUT's metrics JSON holds every seed and mean ± std.

The configuration is `train/finetune_config.py`, the data of a seed `train/finetune_data.py`,
the metrics `train/evaluate.py`; this module holds the starting point, the training task and
the job.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.data import Mixup
from timm.layers import resample_abs_pos_embed
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from sarmae_cli.data.labelled import IGNORE_INDEX
from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    adapt_in_chans,
    load_state_strict,
    provenance,
    read_weights,
    sub_state,
)
from sarmae_cli.model.config import ViTConfig, preset
from sarmae_cli.model.detector import Detector, detection_loss
from sarmae_cli.model.factory import save_model
from sarmae_cli.model.heads import (
    Classifier,
    SegmentationLoss,
    Segmenter,
    freeze_encoder,
    param_groups_lrd,
)
from sarmae_cli.outputs import check_output
from sarmae_cli.shipped import RESTORE_HINT, shipped_path
from sarmae_cli.train import distributed, metrics
from sarmae_cli.train.config import to_dict
from sarmae_cli.train.detection_data import peek_detection_bands, prepare_detection
from sarmae_cli.train.detection_dataset import collate, default_overlap
from sarmae_cli.train.detection_eval import evaluate_detection, pr_path, save_pr_png
from sarmae_cli.train.evaluate import confusion_path, evaluate, headline, metrics_path
from sarmae_cli.train.finetune_config import FinetuneConfig, check_config
from sarmae_cli.train.finetune_data import Prepared, peek_bands, prepare_classification, prepare_segmentation
from sarmae_cli.train.loop import CHECKPOINT, EPOCH_LOG, LOG, LoopConfig, TrainTask, fit_batch_size, train

# --------------------------------------------------------------------------- starting points


def resolve_init(init: str) -> Path | None:
    """The weights file to start from (None for random initialisation)."""
    if init == "random":
        return None
    if init == "default":
        path = shipped_path("encoder")
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
                f"model.preset {cfg.model.preset} does not match the --init weights {path} "
                f"(width {enc.embed_dim}, depth {enc.depth}); drop model.preset or use other weights"
            )
    return Start(enc, sub_state(tensors, "encoder."), meta, str(path))


def build_model(cfg: FinetuneConfig, start: Start, num_classes: int) -> nn.Module:
    """Classifier or segmenter on the start encoder (drop path, optional frozen encoder)."""
    dpr = 0.0 if cfg.model.freeze_encoder else cfg.model.drop_path
    det = cfg.detection
    if cfg.task == "classification":
        model: nn.Module = Classifier(start.enc, num_classes, dpr)
    elif cfg.task == "detection":
        model = Detector(start.enc, num_classes, det.strides, det.channels, dpr, det.num_convs, det.prior)
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
        elif cfg.task == "detection":
            self.collate_fn = collate  # images [B, C, S, S], one box target dict per image
        else:
            self.loss = SegmentationLoss(IGNORE_INDEX, cfg.dice_weight, weight)

    def param_groups(self, cfg: LoopConfig) -> list[dict[str, Any]]:
        return param_groups_lrd(self.model, cfg.weight_decay, self.cfg.model.layer_decay)

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.task == "detection":
            return self.detection_step(model, batch)
        x, y = batch  # [B, C, S, S], [B] or [B, S, S]
        target = y
        if self.mixup is not None:
            x, target = self.mixup(x, y)  # mixed chips, soft targets [B, K]
        logits = model(x)  # [B, K] or [B, K, S, S]
        loss = self.loss.to(logits.device)(logits.float(), target)
        if self.mixup is not None:
            y = target.argmax(1)  # the larger component of each mixed chip
        valid = y != IGNORE_INDEX
        acc = ((logits.argmax(1) == y) & valid).sum() / valid.sum().clamp_min(1)
        return loss, {"acc": float(acc)}

    def detection_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """torchvision's FCOS losses (focal, GIoU, centerness) of a batch of crops."""
        x, targets = batch  # [B, C, S, S], B x {"boxes", "labels"}
        assert isinstance(self.model, Detector)
        radius = self.cfg.detection.center_sampling_radius
        losses = detection_loss(model(x), targets, x.shape[-2:], self.model.strides, radius)
        parts = {"cls": "classification", "box": "bbox_regression", "ctr": "bbox_ctrness"}
        return sum(losses.values()), {k: float(losses[v].detach()) for k, v in parts.items()}


# --------------------------------------------------------------------------- the job


def default_run_dir(output: Path) -> Path:
    """mstar.safetensors -> mstar.run/ (holds seed<N>/checkpoint.pt, log.csv)."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".run")


def _seed_config(cfg: FinetuneConfig, seed: int, n_samples: int, world: int, say: Any) -> FinetuneConfig:
    """The config of one seed: its seed, a batch size lowered to the training set when the set
    is smaller (one notice), and the peak lr scaled from the batch actually used."""
    batch = fit_batch_size(cfg.loop, n_samples, world)
    if 0 < batch < cfg.loop.batch_size:
        say(f"note: batch size {cfg.loop.batch_size} does not fit the {n_samples} training samples; "
            f"training with batch size {batch}")  # fmt: skip
    else:
        batch = cfg.loop.batch_size  # 0: the loop refuses with its own message
    loop = replace(cfg.loop, seed=seed, batch_size=batch)
    lr = cfg.lr if cfg.lr is not None else cfg.blr * batch * loop.accum_steps * world / 256
    return replace(cfg, loop=replace(loop, lr=lr))


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
    check_config(cfg)
    env = distributed.setup(cfg.loop.device)
    if env.is_main:
        check_output(output, overwrite or resume)
        check_output(metrics_path(output), overwrite or resume)
    run_root = Path(run_dir) if run_dir else default_run_dir(output)
    say = log or (lambda msg: None)

    if resume and not any((run_root / f"seed{s}" / CHECKPOINT).is_file() for s in seeds):
        raise UsageError(f"cannot resume: no checkpoint in {run_root}/seed*; run without --resume")
    start = load_start(cfg, peek_detection_bands(cfg) if cfg.task == "detection" else peek_bands(cfg))
    prepare = {"classification": prepare_classification, "detection": prepare_detection}
    runs, first = [], None
    for n, seed in enumerate(seeds):
        prepared = prepare.get(cfg.task, prepare_segmentation)(
            cfg, seed, start.enc.img_size, start.meta.normalization if start.meta else None
        )
        for line in prepared.info.get("warnings", []):
            say(line)
        info = prepared.info
        if cfg.task == "detection" and (info["skipped_files"] or info["dropped_boxes"]):
            say(f"labels: {info['skipped_files']} image(s) skipped, {info['dropped_boxes']} box(es) dropped")
        seed_cfg = _seed_config(cfg, seed, len(prepared.train), env.world_size, say)
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
        if cfg.task == "detection":
            d = cfg.detection
            overlap = (
                d.tile_overlap
                if d.tile_overlap is not None
                else default_overlap(prepared.train.targets, tile, zoom=d.zoom)
            )
            stride = tile - overlap
            m = evaluate_detection(
                model, prepared.val, names, env.device, tile, overlap, d.score_thresh, d.nms_thresh,
                d.max_detections, cfg.eval_batch_size, d.zoom,
            )  # fmt: skip
        else:
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
    if cfg.task == "detection":
        save_pr_png(runs[0], pr_path(output), title=title)
        return doc
    cm = np.array(runs[0]["confusion_matrix"])
    metrics.save_confusion_png(cm, prepared.class_names, confusion_path(output), title=title)
    return doc


def _metrics_doc(
    cfg: FinetuneConfig, runs: list[dict[str, Any]], start: Start, output: Path
) -> dict[str, Any]:
    """The metrics JSON: every seed's metrics and their mean ± std."""
    drop = ("seed", "steps", "data", "final_train", "confusion_matrix", "pr_curve", "tile")
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
    keep += ("ap50", "ap50_95", "ap75", "ap_small", "ap_medium", "ap_large", "ar100", "per_class_ap50")
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
    if cfg.data.gsd:
        training["gsd"] = float(cfg.data.gsd)
    if cfg.task == "detection":  # what `decode` and the sliding window need
        d = cfg.detection
        training["detection"] = {
            "score_thresh": d.score_thresh,
            "nms_thresh": d.nms_thresh,
            "max_detections": d.max_detections,
            "longest_object": p.info["longest_object"],
        }
        if d.zoom != 1.0:  # `detect` resizes every scene by it (model pixels per input pixel)
            training["detection"]["zoom"] = d.zoom
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
        tile={"size": size, "overlap": size - stride if cfg.task in ("segmentation", "detection") else 0},
        channel_adaptation=start.meta.channel_adaptation if start.meta else None,
        training=training,
        metrics={
            "validation": {k: run[k] for k in keep if k in run},
            "seeds": doc["summary"],
            "num_seeds": len(doc["runs"]),
        },
        provenance=provenance(command, init=start.source, data=p.info),
    )
