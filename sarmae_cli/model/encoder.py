"""The SARMAE encoder: a timm Vision Transformer with any input channel count and fixed
2-D sin-cos position embeddings that are interpolated to other input sizes."""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import build_sincos2d_pos_embed, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sarmae_cli.model.config import ViTConfig


def sincos_pos_embed(grid_size: int, dim: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, [1, (1 +) grid*grid, dim], zeros at the CLS slot."""
    pos = build_sincos2d_pos_embed((grid_size, grid_size), dim)  # [g*g, dim]
    if cls_token:
        pos = torch.cat([torch.zeros(1, dim), pos], dim=0)  # [1 + g*g, dim]
    return pos.unsqueeze(0)


class SarViT(VisionTransformer):
    """ViT encoder with timm's state-dict layout (`patch_embed.proj`, `cls_token`,
    `pos_embed`, `blocks.N.*`, `norm`), so official SARMAE and timm weights load 1:1.

    Inputs of other sizes than `cfg.img_size` work: the position grid is resampled.
    """

    def __init__(self, cfg: ViTConfig, drop_path_rate: float = 0.0) -> None:
        super().__init__(
            img_size=cfg.img_size,
            patch_size=cfg.patch_size,
            in_chans=cfg.in_chans,
            num_classes=0,
            global_pool="avg",
            fc_norm=False,
            embed_dim=cfg.embed_dim,
            depth=cfg.depth,
            num_heads=cfg.num_heads,
            mlp_ratio=cfg.mlp_ratio,
            qkv_bias=True,
            dynamic_img_size=True,
            drop_path_rate=drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        self.cfg = cfg
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed(cfg.grid_size, cfg.embed_dim))
        self.pos_embed.requires_grad_(False)

    def pos_embed_for(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a patch grid of `grid_hw`, [1, 1 + h*w, d] (interpolated)."""
        return resample_abs_pos_embed(self.pos_embed, new_size=list(grid_hw), num_prefix_tokens=1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Image embedding: mean of the final normalised patch tokens. [B, C, H, W] -> [B, d]."""
        return self.forward_head(self.forward_features(x), pre_logits=True)

    def intermediate_layers(self, x: torch.Tensor, indices: int | list[int] = 4) -> list[torch.Tensor]:
        """Patch-token maps of the given blocks (or the last n) for dense heads,
        each [B, d, H/p, W/p]."""
        return self.forward_intermediates(x, indices=indices, output_fmt="NCHW", intermediates_only=True)
