"""Task models on the SARMAE encoder: image classifier and UperNet/FPN/linear segmenter.

Every task model has `encoder` (SarViT) and `head` sub-modules, so its state dict is the
weights file's `encoder.*` + `head.*` tensors as-is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from sarmae_cli.model.config import ViTConfig
from sarmae_cli.model.detector import Detector
from sarmae_cli.model.encoder import SarViT

SEG_DECODERS = ("upernet", "fpn", "linear")


class Classifier(nn.Module):
    """Global average pooling of the final patch tokens + a linear layer. [B, C, H, W] -> [B, K]."""

    def __init__(self, enc: ViTConfig, num_classes: int, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.encoder = SarViT(enc, drop_path_rate)
        self.head = nn.Linear(enc.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.pooled(x))  # [B, K]


def default_layers(depth: int) -> list[int]:
    """Four evenly spaced blocks, ending with the last (e.g. 2, 5, 8, 11 for depth 12; blocks
    repeat for depths below 4: 0, 0, 1, 1 for depth 2)."""
    step = depth / 4
    return [max(0, round(step * (i + 1)) - 1) for i in range(4)]


class SimpleFeaturePyramid(nn.Module):
    """ViTDet-style pyramid: four stride-16 maps -> strides 4, 8, 16, 32 (same width d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
            nn.BatchNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.down2 = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        a, b, c, d = maps  # each [B, d, H/16, W/16]
        return [self.up4(a), self.up2(b), c, self.down2(d)]  # strides 4, 8, 16, 32


class PixelRefiner(nn.Module):
    """Full-resolution residual correction of upsampled logits from the input pixels.

    The ViT sees 16-px patches, so its maps are coarse; this small conv stack looks at the
    band mean (one guide channel, whatever the number of bands) beside the logits and adds a
    correction. Dilations 1, 2, 4 give a 15-px receptive field. The last conv starts at zero,
    so an untrained refiner returns the logits unchanged.
    """

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1 + num_classes
        for dilation in (1, 2, 4):
            layers += [
                nn.Conv2d(c_in, width, 3, padding=dilation, dilation=dilation, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            c_in = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, num_classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        guide = x.mean(1, keepdim=True)  # [B, 1, H, W]
        return logits + self.out(self.body(torch.cat([guide, logits], 1)))  # [B, K, H, W]


class SegmentationHead(nn.Module):
    """Feature pyramid + an smp decoder (UperNet or FPN) + 1x1 classifier, at stride 4, or
    (`linear`) only a 1x1 classifier on the last map's patch tokens, at the patch stride; and,
    with `refine` > 0, a `PixelRefiner` of that width that `Segmenter` applies at full size."""

    def __init__(
        self, dim: int, num_classes: int, decoder: str = "upernet", channels: int = 256, refine: int = 0
    ) -> None:
        super().__init__()
        if decoder not in SEG_DECODERS:
            raise ValueError(f"unknown segmentation decoder {decoder!r}; use {SEG_DECODERS}")
        self.neck: nn.Module | None = None
        self.decoder: nn.Module | None = None
        enc_channels = [1, 1, dim, dim, dim, dim]  # smp layout: strides 1, 2 (unused), 4..32
        if decoder == "linear":
            out = dim
        elif decoder == "upernet":
            self.neck = SimpleFeaturePyramid(dim)
            self.decoder = UPerNetDecoder(enc_channels, encoder_depth=5, decoder_channels=channels)
            out = channels
        else:
            self.neck = SimpleFeaturePyramid(dim)
            self.decoder = FPNDecoder(enc_channels, encoder_depth=5, pyramid_channels=channels)
            out = self.decoder.out_channels
        self.classifier = nn.Conv2d(out, num_classes, 1)
        self.refiner = PixelRefiner(num_classes, refine) if refine > 0 else None

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        if self.decoder is None:  # linear
            return self.classifier(maps[-1])  # [B, K, H/p, W/p]
        pyramid = self.neck(maps)
        stub = pyramid[0][:, :1]  # placeholders for the unused stride-1/2 slots
        return self.classifier(self.decoder([stub, stub, *pyramid]))  # [B, K, H/4, W/4]


class Segmenter(nn.Module):
    """Dense classifier: [B, C, H, W] -> logits [B, K, H, W] (H, W multiples of the patch).

    `refine` > 0 adds a `PixelRefiner` of that width after the upsampling (0: none).
    """

    def __init__(
        self,
        enc: ViTConfig,
        num_classes: int,
        decoder: str = "upernet",
        channels: int = 256,
        layers: list[int] | None = None,
        drop_path_rate: float = 0.0,
        refine: int = 0,
    ) -> None:
        super().__init__()
        self.encoder = SarViT(enc, drop_path_rate)
        self.layers = list(layers or default_layers(enc.depth))
        self.head = SegmentationHead(enc.embed_dim, num_classes, decoder, channels, refine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unique = sorted(set(self.layers))
        by_block = dict(zip(unique, self.encoder.intermediate_layers(x, unique), strict=True))
        maps = [by_block[i] for i in self.layers]  # 4 x [B, d, H/16, W/16]
        logits = self.head(maps)  # [B, K, H/4, W/4] (linear: [B, K, H/p, W/p])
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.head.refiner is not None:
            logits = self.head.refiner(x, logits)  # [B, K, H, W]
        return logits


def head_config(model: nn.Module) -> dict[str, Any]:
    """The `head` metadata entry that rebuilds `model` (see `factory.build_model`)."""
    if isinstance(model, Classifier):
        return {"type": "classifier", "num_classes": model.head.out_features}
    if isinstance(model, Segmenter):
        dec = model.head.decoder
        return {
            "type": "segmenter",
            "num_classes": model.head.classifier.out_channels,
            "decoder": "linear" if dec is None else "upernet" if isinstance(dec, UPerNetDecoder) else "fpn",
            "channels": dec.p5.out_channels
            if isinstance(dec, FPNDecoder)
            else model.head.classifier.in_channels,
            "layers": model.layers,
            "refine": model.head.refiner.out.in_channels if model.head.refiner is not None else 0,
        }
    if isinstance(model, Detector):
        return model.config()
    raise TypeError(f"no head config for {type(model).__name__}")


def layer_id(name: str, depth: int) -> int:
    """Depth of a parameter for layer-wise lr decay (BEiT / MAE fine-tuning): 0 for the patch
    embedding, CLS token and position embedding, i + 1 for `blocks.i`, depth + 1 for the
    final norm and every head parameter."""
    if name.startswith("encoder."):
        name = name[len("encoder.") :]
        if name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups_lrd(
    model: nn.Module, weight_decay: float = 0.05, layer_decay: float = 0.75
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay: each group carries `lr_scale`
    = layer_decay ** (depth + 1 - layer_id) (1 for the head) and no weight decay on biases,
    norms and tokens. Frozen parameters (requires_grad False) are left out."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(("cls_token", "pos_embed", "reg_token"))
        lid = layer_id(name, depth)
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": layer_decay ** (depth + 1 - lid),
                "name": f"layer{lid}_{'no_decay' if no_decay else 'decay'}",
            }
        groups[key]["params"].append(p)
    return [groups[k] for k in sorted(groups)]


def freeze_encoder(model: nn.Module) -> None:
    """Linear probe: the encoder's parameters get no gradients (only `head` trains)."""
    for p in model.encoder.parameters():
        p.requires_grad_(False)


class SegmentationLoss(nn.Module):
    """Cross-entropy (optionally class-weighted, `weight` [K]) + `dice_weight` x multi-class
    Dice (the paper: 0.5), both ignoring `ignore_index` pixels. logits [B, K, H, W], target
    [B, H, W] int64."""

    def __init__(
        self, ignore_index: int = -1, dice_weight: float = 0.5, weight: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight, ignore_index=ignore_index)
        self.dice = DiceLoss("multiclass", from_logits=True, ignore_index=ignore_index)
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits, target)
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        return loss
