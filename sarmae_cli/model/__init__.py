"""Core SARMAE model: encoder, masked autoencoder, configs and the weights format."""

from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    load_encoder,
    read_meta,
    read_weights,
    save_weights,
)
from sarmae_cli.model.config import PRESETS, DecoderConfig, ViTConfig, preset
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.mae import MAE, patchify, random_masking, unpatchify

__all__ = [
    "MAE",
    "PRESETS",
    "DecoderConfig",
    "SarViT",
    "ViTConfig",
    "WeightsMeta",
    "load_encoder",
    "patchify",
    "preset",
    "random_masking",
    "read_meta",
    "read_weights",
    "save_weights",
    "unpatchify",
]
