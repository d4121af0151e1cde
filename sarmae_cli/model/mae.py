"""The SAR branch of SARMAE: a masked autoencoder around `SarViT`.

Method names follow the MAE reference (`patchify`, `random_masking`, `forward_encoder`,
`forward_decoder`, `forward_loss`); nothing here assumes 3 input channels.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

from sarmae_cli.model.config import DecoderConfig, ViTConfig
from sarmae_cli.model.encoder import SarViT, sincos_pos_embed


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, p*p*C], patches in row-major order, channels last per patch."""
    n, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    gh, gw = h // p, w // p
    x = imgs.reshape(n, c, gh, p, gw, p)  # [N, C, gh, p, gw, p]
    x = x.permute(0, 2, 4, 3, 5, 1)  # [N, gh, gw, p, p, C]
    return x.reshape(n, gh * gw, p * p * c)  # [N, L, p*p*C]


def unpatchify(x: torch.Tensor, p: int, c: int, grid_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """[N, L, p*p*C] -> [N, C, H, W]; the inverse of `patchify` (square grid unless given)."""
    n, length, _ = x.shape
    gh, gw = grid_hw or (int(round(length**0.5)),) * 2
    if gh * gw != length:
        raise ValueError(f"{length} patches do not form a {gh}x{gw} grid")
    x = x.reshape(n, gh, gw, p, p, c)  # [N, gh, gw, p, p, C]
    x = x.permute(0, 5, 1, 3, 2, 4)  # [N, C, gh, p, gw, p]
    return x.reshape(n, c, gh * p, gw * p)


def random_masking(
    x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by shuffling tokens with uniform noise.

    x: [N, L, D]. Returns (x_visible [N, K, D], mask [N, L] with 1 = masked,
    ids_restore [N, L] that un-shuffles, ids_keep [N, K] indices of the visible tokens).
    """
    n, length, d = x.shape
    len_keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, device=x.device, generator=generator)  # [N, L]
    ids_shuffle = torch.argsort(noise, dim=1)  # [N, L] ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # [N, L]
    ids_keep = ids_shuffle[:, :len_keep]  # [N, K]
    x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # [N, K, D]
    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # [N, L] in the original patch order
    return x_visible, mask, ids_restore, ids_keep


def _init_weights(m: nn.Module) -> None:
    """MAE initialisation: Xavier-uniform linear layers, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class EncoderOutput(NamedTuple):
    latent: torch.Tensor  # [N, 1 + K, d] CLS + visible tokens after the final norm
    mask: torch.Tensor  # [N, L] 1 = masked
    ids_restore: torch.Tensor  # [N, L]
    ids_keep: torch.Tensor  # [N, K] patch index of each visible token
    grid_hw: tuple[int, int]


class MAEOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    pred: torch.Tensor  # [N, L, p*p*C]
    mask: torch.Tensor  # [N, L]
    encoded: EncoderOutput


class MAEDecoder(nn.Module):
    """Lightweight MAE decoder; parameter names map 1:1 to the official `decoder_*` keys."""

    def __init__(self, enc: ViTConfig, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_size = enc.patch_size
        self.embed = nn.Linear(enc.embed_dim, cfg.embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        pos = sincos_pos_embed(enc.grid_size, cfg.embed_dim)  # [1, 1 + L, dd]
        self.pos_embed = nn.Parameter(pos, requires_grad=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, qkv_bias=True, norm_layer=norm)
            for _ in range(cfg.depth)
        )
        self.norm = norm(cfg.embed_dim)
        self.pred = nn.Linear(cfg.embed_dim, enc.patch_size**2 * enc.in_chans)
        self.apply(_init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, enc_out: EncoderOutput) -> torch.Tensor:
        """Visible latents -> per-patch pixel predictions [N, L, p*p*C]."""
        x = self.embed(enc_out.latent)  # [N, 1 + K, dd]
        n, length = enc_out.ids_restore.shape
        n_mask = length + 1 - x.shape[1]
        mask_tokens = self.mask_token.expand(n, n_mask, -1)  # [N, L - K, dd]
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [N, L, dd] shuffled order
        index = enc_out.ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2])
        x_ = torch.gather(x_, 1, index)  # [N, L, dd] original order
        x = torch.cat([x[:, :1], x_], dim=1)  # [N, 1 + L, dd]
        pos = self.pos_embed
        if pos.shape[1] != length + 1:
            pos = resample_abs_pos_embed(pos, new_size=list(enc_out.grid_hw), num_prefix_tokens=1)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return self.pred(x)[:, 1:]  # [N, L, p*p*C]


class MAE(nn.Module):
    """Masked autoencoder: `encoder` (SarViT) + `decoder` (MAEDecoder).

    `forward(imgs, target)` encodes a masked `imgs` and reconstructs `target` (SARE passes
    the speckled image as `imgs` and the clean one as `target`).
    """

    def __init__(
        self,
        enc: ViTConfig,
        dec: DecoderConfig | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.encoder = SarViT(enc)
        self.decoder = MAEDecoder(enc, dec or DecoderConfig())
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

    @property
    def patch_size(self) -> int:
        return self.encoder.cfg.patch_size

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        return patchify(imgs, self.patch_size)

    def unpatchify(self, x: torch.Tensor, grid_hw: tuple[int, int] | None = None) -> torch.Tensor:
        return unpatchify(x, self.patch_size, self.encoder.cfg.in_chans, grid_hw)

    def forward_encoder(
        self,
        imgs: torch.Tensor,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> EncoderOutput:
        """[N, C, H, W] -> visible-token latents, mask and the shuffle indices."""
        enc = self.encoder
        x = enc.patch_embed(imgs)  # [N, gh, gw, d]
        grid_hw = (x.shape[1], x.shape[2])
        x = x.flatten(1, 2)  # [N, L, d]
        pos = enc.pos_embed_for(grid_hw)  # [1, 1 + L, d]
        x = x + pos[:, 1:]
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        x, mask, ids_restore, ids_keep = random_masking(x, ratio, generator)  # x: [N, K, d]
        cls = (enc.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)  # [N, 1, d]
        x = torch.cat([cls, x], dim=1)  # [N, 1 + K, d]
        x = enc.norm_pre(x)
        for blk in enc.blocks:
            x = blk(x)
        x = enc.norm(x)
        return EncoderOutput(x, mask, ids_restore, ids_keep, grid_hw)

    def forward_decoder(self, enc_out: EncoderOutput) -> torch.Tensor:
        return self.decoder(enc_out)

    def forward_loss(self, target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error on masked patches only. target [N, C, H, W], pred [N, L, p*p*C]."""
        t = self.patchify(target)  # [N, L, p*p*C]
        if self.norm_pix_loss:
            mean = t.mean(dim=-1, keepdim=True)
            var = t.var(dim=-1, keepdim=True)
            t = (t - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - t.float()) ** 2).mean(dim=-1)  # [N, L]
        return (per_patch * mask).sum() / mask.sum().clamp(min=1)

    def forward(
        self,
        imgs: torch.Tensor,
        target: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        generator: torch.Generator | None = None,
    ) -> MAEOutput:
        enc_out = self.forward_encoder(imgs, mask_ratio, generator)
        pred = self.forward_decoder(enc_out)  # [N, L, p*p*C]
        loss = self.forward_loss(imgs if target is None else target, pred, enc_out.mask)
        return MAEOutput(loss, pred, enc_out.mask, enc_out)
