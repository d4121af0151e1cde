"""Build and load the model a weights file describes (encoder, MAE, classifier, segmenter,
detector)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sarmae_cli.errors import WeightsError
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    adapt_in_chans,
    load_state_strict,
    read_weights,
    save_weights,
)
from sarmae_cli.model.detector import Detector
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.heads import Classifier, Segmenter, head_config
from sarmae_cli.model.mae import MAE


class EncoderModel(nn.Module):
    """Wraps the encoder so that its state dict carries the `encoder.` prefix."""

    def __init__(self, encoder: SarViT) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.pooled(x)  # [B, d]


def build_model(meta: WeightsMeta, drop_path_rate: float = 0.0) -> nn.Module:
    """An untrained model of the architecture and task in `meta`."""
    enc = meta.encoder_config
    if meta.task == "encoder":
        return EncoderModel(SarViT(enc, drop_path_rate))
    if meta.task == "pretrain":
        return MAE(enc, meta.decoder_config)
    head = meta.head or {}
    if "num_classes" not in head:
        raise WeightsError(
            f"{meta.task} weights without a head description (head.num_classes) in their metadata"
        )
    if meta.task == "classification":
        return Classifier(enc, int(head["num_classes"]), drop_path_rate)
    if meta.task == "segmentation":
        return Segmenter(
            enc,
            int(head["num_classes"]),
            head.get("decoder", "upernet"),
            int(head.get("channels", 256)),
            head.get("layers"),
            drop_path_rate,
            int(head.get("refine", 0)),
        )
    if meta.task == "detection":
        return Detector(
            enc,
            int(head["num_classes"]),
            [int(s) for s in head.get("strides", (8, 16, 32))],
            int(head.get("channels", 128)),
            drop_path_rate,
            int(head.get("num_convs", 4)),
            int(head.get("prior", 0)),
        )
    raise WeightsError(f"cannot build a model for task {meta.task!r}")


def load_model(path: Path, in_chans: int | None = None, verify: bool = True) -> tuple[nn.Module, WeightsMeta]:
    """Load the full model of a weights file, strictly, in fp32 and eval mode."""
    tensors, meta = read_weights(path, verify)
    if in_chans is not None:
        tensors, meta = adapt_in_chans(tensors, meta, in_chans)
    model = build_model(meta)
    load_state_strict(model, {k: v.float() for k, v in tensors.items()}, where=str(path))
    return model.eval(), meta


def save_model(path: Path, model: nn.Module, meta: WeightsMeta, **kw) -> WeightsMeta:
    """Save a task model with its head config filled into `meta`."""
    if isinstance(model, (Classifier, Segmenter, Detector)):
        meta.head = head_config(model)
    return save_weights(path, model.state_dict(), meta, **kw)
