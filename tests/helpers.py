"""Builders of synthetic test inputs, independent of the sarmae model code."""

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import timm
import torch
from timm.models.vision_transformer import Block


def official_state_dict(timm_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """`model` entry of an official SARMAE checkpoint: timm ViT keys under `sar_encoder.`
    plus MAE decoder keys, the optical encoder and the alignment FFN, random values."""
    g = torch.Generator().manual_seed(seed)
    vit = timm.create_model(timm_name, pretrained=False, num_classes=0)
    d = vit.embed_dim
    p = vit.patch_embed.patch_size[0]
    n_tok = vit.pos_embed.shape[1]
    sd = {f"sar_encoder.{k}": v for k, v in vit.state_dict().items()}
    sd["sar_encoder.mask_token"] = torch.zeros(1, 1, 512)
    sd["sar_encoder.decoder_embed.weight"] = torch.zeros(512, d)
    sd["sar_encoder.decoder_embed.bias"] = torch.zeros(512)
    sd["sar_encoder.decoder_pos_embed"] = torch.zeros(1, n_tok, 512)
    for i in range(8):
        for k, v in Block(512, 16, 4.0, qkv_bias=True).state_dict().items():
            sd[f"sar_encoder.decoder_blocks.{i}.{k}"] = v
    sd["sar_encoder.decoder_norm.weight"] = torch.ones(512)
    sd["sar_encoder.decoder_norm.bias"] = torch.zeros(512)
    sd["sar_encoder.decoder_pred.weight"] = torch.zeros(p * p * 3, 512)
    sd["sar_encoder.decoder_pred.bias"] = torch.zeros(p * p * 3)
    sd["optical_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    sd["optical_encoder.norm.weight"] = torch.ones(768)
    sd["sar_alignment_ffn.0.weight"] = torch.zeros(d, d)
    sd["sar_alignment_ffn.2.weight"] = torch.zeros(768, d)
    # random values everywhere, so a mis-mapped key cannot go unnoticed
    return {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in sd.items()}


def official_checkpoint(path: Path, timm_name: str, with_extras: bool = True) -> Path:
    """Write a checkpoint shaped like the published SARMAE ones (pickled dict)."""
    sd = official_state_dict(timm_name)
    ckpt: dict = {"model": sd}
    if with_extras:
        first = next(iter(sd.values()))
        ckpt["optimizer"] = {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(first)}},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "weight_decay": 0.05, "params": [0]}],
        }
        ckpt["epoch"] = 299
        ckpt["args"] = argparse.Namespace(
            model="mae_vit_base_patch16",
            mask_ratio=0.75,
            lr=1e-4,
            batch_size=64,
            input_size=224,
            norm_pix_loss=False,
            data_path="/data/SAR-1M",
        )
        ckpt["scaler"] = {"scale": 65536.0, "growth_factor": 2.0}
    torch.save(ckpt, path)
    return path


def timm_encoder(timm_name: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """timm's own ViT loaded strictly with the stripped `sar_encoder.` weights."""
    vit = timm.create_model(timm_name, pretrained=False, num_classes=0)
    stripped = {
        k[len("sar_encoder.") :]: v
        for k, v in state.items()
        if k.startswith("sar_encoder.") and not k[len("sar_encoder.") :].startswith(("decoder", "mask_token"))
    }
    vit.load_state_dict(stripped, strict=True)
    return vit.eval()


def load_benchmark(name: str) -> ModuleType:
    """`benchmarks/NAME.py` (a folder of scripts, not a package) as a module, registered in
    `sys.modules` (where dataclasses look their module up)."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
