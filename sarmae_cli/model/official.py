"""Import of the published SARMAE checkpoints (ViT-B/L) into the sarmae weights format.

Layout (SARMAE_METHOD.md §5): a pickled dict whose ``model`` entry holds
``sar_encoder.*`` (timm ViT keys plus the MAE decoder keys), ``optical_encoder.*`` and
``sar_alignment_ffn.*``. The encoder maps 1:1 onto timm ``vit_{base,large}_patch16_224``.
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path
from typing import Any

import torch

from sarmae_cli.errors import ArchitectureError, WeightsError
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    adapt_in_chans,
    is_safetensors,
    load_pickled_checkpoint,
    provenance,
    save_weights,
)
from sarmae_cli.model.config import DecoderConfig, ViTConfig
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.mae import MAEDecoder
from sarmae_cli.outputs import check_output

ENCODER_PREFIXES = ("sar_encoder.",)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: official decoder key prefix -> our `decoder.` sub-module name
DECODER_KEYS = {
    "mask_token": "mask_token",
    "decoder_embed.": "embed.",
    "decoder_pos_embed": "pos_embed",
    "decoder_blocks.": "blocks.",
    "decoder_norm.": "norm.",
    "decoder_pred.": "pred.",
}
#: How the reference code feeds SAR: 8-bit tiles, 3 identical channels, (x/255 - 0.5) / 0.5.
REFERENCE_INPUT = {
    "bands": ["SAR", "SAR", "SAR"],
    "input_scaling": {
        "mode": "uint8",
        "description": "8-bit SAR image scaled to [0, 1], replicated to 3 channels",
    },
    "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def _state_dict_of(obj: Any, src: Path) -> dict[str, torch.Tensor]:
    """The model state dict inside a loaded checkpoint (``model``/``state_dict`` or bare)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ArchitectureError(f"{src} holds no model state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ArchitectureError(f"{src} holds no tensors under 'model' (keys: {list(obj)[:5]})")
    for wrapper in WRAPPER_PREFIXES:
        if all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper) :]: v for k, v in state.items()}
    return state


def _split(state: dict[str, torch.Tensor], src: Path) -> tuple[dict, dict, str]:
    """Split into (encoder keys, decoder keys) with the SARMAE prefix removed."""
    prefix = next((p for p in ENCODER_PREFIXES if any(k.startswith(p) for k in state)), None)
    if prefix is None:
        if "patch_embed.proj.weight" in state:  # a bare MAE / timm ViT state dict
            prefix = ""
        else:
            raise ArchitectureError(
                f"{src} is not a SARMAE checkpoint: no 'sar_encoder.*' keys "
                f"(first key: {next(iter(state))!r})"
            )
    encoder, decoder = {}, {}
    for k, v in state.items():
        if not k.startswith(prefix):
            continue  # optical_encoder.*, sar_alignment_ffn.*: not part of the SAR model
        name = k[len(prefix) :]
        dec = next((d for d in DECODER_KEYS if name.startswith(d)), None)
        if dec is not None:
            decoder[DECODER_KEYS[dec] + name[len(dec) :]] = v
        else:
            encoder[name] = v
    return encoder, decoder, prefix


def _require(state: dict, key: str, where: str) -> torch.Tensor:
    if key not in state:
        raise ArchitectureError(f"{where}: missing key {key!r}")
    return state[key]


def infer_encoder_config(enc: dict[str, torch.Tensor], prefix: str = "") -> ViTConfig:
    """Encoder shape from tensor shapes. Heads are width / 64 (true for every ViT preset)."""
    w = _require(enc, "patch_embed.proj.weight", f"encoder key {prefix}patch_embed.proj.weight")
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise ArchitectureError(
            f"key {prefix}patch_embed.proj.weight has shape {tuple(w.shape)}, expected [d, C, p, p]"
        )
    dim, in_chans, p = w.shape[0], w.shape[1], w.shape[2]
    pos = _require(enc, "pos_embed", f"encoder key {prefix}pos_embed")
    grid = round((pos.shape[1] - 1) ** 0.5)
    depth = 1 + max((int(m.group(1)) for k in enc if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    fc1 = _require(enc, "blocks.0.mlp.fc1.weight", f"encoder key {prefix}blocks.0.mlp.fc1.weight")
    if dim % 64:
        raise ArchitectureError(f"encoder width {dim} is not a multiple of 64 (heads of 64)")
    return ViTConfig(
        patch_size=p,
        img_size=grid * p,
        in_chans=in_chans,
        embed_dim=dim,
        depth=depth,
        num_heads=dim // 64,
        mlp_ratio=fc1.shape[0] / dim,
    )


def infer_decoder_config(dec: dict[str, torch.Tensor]) -> DecoderConfig:
    """Decoder shape from tensor shapes (heads: 16 at width 512 as in SARMAE, else width/32)."""
    emb = _require(dec, "embed.weight", "decoder key decoder_embed.weight")
    dim = emb.shape[0]
    depth = 1 + max((int(m.group(1)) for k in dec if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1)
    fc1 = _require(dec, "blocks.0.mlp.fc1.weight", "decoder key decoder_blocks.0.mlp.fc1.weight")
    return DecoderConfig(embed_dim=dim, depth=depth, num_heads=dim // 32, mlp_ratio=fc1.shape[0] / dim)


def _check_strict(module: torch.nn.Module, state: dict, names: dict[str, str]) -> None:
    """Every key of `module` present with the right shape, and no unexpected key.

    `names` maps our key to the checkpoint's key, for error messages."""
    expected = module.state_dict()
    for k in state:  # checkpoint order: the first offending key is named
        if k not in expected:
            raise ArchitectureError(f"unexpected key {names.get(k, k)!r} in the checkpoint")
        if tuple(state[k].shape) != tuple(expected[k].shape):
            raise ArchitectureError(
                f"key {names.get(k, k)!r} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(expected[k].shape)}"
            )
    for k in expected:
        if k not in state:
            raise ArchitectureError(f"missing key {names.get(k, k)!r} in the checkpoint")
    module.load_state_dict(state, strict=True)


def convert_official(
    src: Path, keep_decoder: bool = False, in_chans: int | None = None
) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """Convert an official SARMAE checkpoint into (tensors, metadata) of the sarmae format."""
    src = Path(src)
    if is_safetensors(src):
        raise WeightsError(
            f"{src} is a safetensors file; `weights import` converts pickled SARMAE "
            "checkpoints (.pth); use safetensors weights directly"
        )
    obj = load_pickled_checkpoint(src)
    enc, dec, prefix = _split(_state_dict_of(obj, src), src)
    cfg = infer_encoder_config(enc, prefix)
    encoder = SarViT(cfg)
    _check_strict(
        encoder,
        {k: v.float() for k, v in enc.items()},
        {k: prefix + k for k in enc} | {k: prefix + k for k in encoder.state_dict()},
    )
    tensors = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    dec_cfg = None
    if keep_decoder:
        if not dec:
            raise ArchitectureError(f"{src} has no MAE decoder keys; drop --keep-decoder")
        dec_cfg = infer_decoder_config(dec)
        decoder = MAEDecoder(cfg, dec_cfg)
        official = {v: k for k, v in DECODER_KEYS.items()}
        names = {k: prefix + _official_decoder_name(k, official) for k in decoder.state_dict()}
        _check_strict(decoder, {k: v.float() for k, v in dec.items()}, names)
        tensors |= {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    args = obj.get("args") if isinstance(obj, dict) else None
    meta = WeightsMeta(
        task="pretrain" if keep_decoder else "encoder",
        encoder=cfg.to_dict(),
        decoder=dec_cfg.to_dict() if dec_cfg else None,
        **REFERENCE_INPUT if cfg.in_chans == 3 else _generic_input(cfg.in_chans),
        training={"source_args": _jsonable(vars(args))} if isinstance(args, argparse.Namespace) else {},
        provenance=provenance(
            source="official SARMAE checkpoint",
            source_file=src.name,
            source_sha256=_file_sha256(src),
            source_epoch=obj.get("epoch") if isinstance(obj, dict) else None,
        ),
    )
    if in_chans is not None:
        tensors, meta = adapt_in_chans(tensors, meta, in_chans)
    return tensors, meta


def import_official(
    src: Path,
    dst: Path,
    keep_decoder: bool = False,
    in_chans: int | None = None,
    overwrite: bool = False,
    command: str | None = None,
) -> WeightsMeta:
    """Convert `src` and write it to `dst` (atomically); returns the written metadata."""
    check_output(Path(dst), overwrite)  # fail before the (slow) conversion
    tensors, meta = convert_official(src, keep_decoder, in_chans)
    meta.provenance["command"] = command
    return save_weights(Path(dst), tensors, meta, overwrite=overwrite)


def _official_decoder_name(ours: str, official: dict[str, str]) -> str:
    for o, off in official.items():
        if ours.startswith(o):
            return off + ours[len(o) :]
    return ours


def _generic_input(in_chans: int) -> dict[str, Any]:
    return {
        "bands": [f"band{i + 1}" for i in range(in_chans)],
        "input_scaling": {"mode": "uint8"},
        "normalization": {"mean": [0.5] * in_chans, "std": [0.5] * in_chans},
    }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out[k] = v if isinstance(v, (str, int, float, bool, type(None), list, tuple)) else str(v)
    return out


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
