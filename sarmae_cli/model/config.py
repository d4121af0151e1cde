"""Architecture configuration of the SARMAE encoder and MAE decoder, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from sarmae_cli.errors import UsageError


def _known_fields(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    """`d` if all its keys are fields of the dataclass `cls`, else a UsageError naming them."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise UsageError(f"unknown {what} config keys {unknown}; known: {sorted(known)}")
    return d


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a ViT encoder. `base` and `large` are exactly the SARMAE / timm shapes."""

    patch_size: int = 16
    img_size: int = 224
    in_chans: int = 1
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        """Patches per side at `img_size`."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Build from a dict, refusing unknown keys so that typos do not pass silently."""
        return cls(**_known_fields(cls, d, "encoder"))


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the MAE decoder (the SARMAE default: 512 wide, 8 blocks, 16 heads)."""

    embed_dim: int = 512
    depth: int = 8
    num_heads: int = 16
    mlp_ratio: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecoderConfig:
        return cls(**_known_fields(cls, d, "decoder"))


PRESETS: dict[str, ViTConfig] = {
    "tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    "small": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "base": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "large": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
}


def preset(name: str, **overrides: Any) -> ViTConfig:
    """The named preset (`tiny`, `small`, `base`, `large`) with field overrides."""
    if name not in PRESETS:
        raise UsageError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def preset_name(cfg: ViTConfig) -> str | None:
    """Name of the preset whose width, depth and heads match `cfg`, if any."""
    for name, p in PRESETS.items():
        if (p.embed_dim, p.depth, p.num_heads) == (cfg.embed_dim, cfg.depth, cfg.num_heads):
            return name
    return None
