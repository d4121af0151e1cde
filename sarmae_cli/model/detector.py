"""Object detector on the SARMAE encoder: a ViTDet-style simple feature pyramid from the last
block's patch tokens, optionally with pixel detail from a small CNN on the input (`SpatialPrior`),
and torchvision's FCOS head (anchor-free, no compiled ops).

    model = Detector(enc, num_classes=1, strides=(8, 16, 32))
    outputs = model(x)                                  # dense head outputs (what ONNX exports)
    dets = decode(outputs, x.shape[-2:], model.strides)  # per image: boxes, scores, labels
    losses = detection_loss(outputs, targets, x.shape[-2:], model.strides)

Target matching, the loss and the post-processing (score threshold, top-k, box decoding, NMS)
are torchvision's own FCOS code, called on the dense outputs; only the level layout (point
grids of `level_sizes`) is computed here, so the PyTorch and ONNX paths decode alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOS, FCOSHead

from sarmae_cli.model.config import ViTConfig
from sarmae_cli.model.encoder import SarViT

#: Dense head outputs: cls_logits [B, N, K], bbox_regression [B, N, 4], centerness [B, N, 1].
Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _check_strides(strides: Sequence[int], patch: int) -> list[int]:
    """Strides as a sorted list of powers of two times the patch (or fractions of it)."""
    out = sorted(int(s) for s in strides)
    for s in out:
        ratio = s / patch
        if s < 1 or abs(math.log2(ratio) - round(math.log2(ratio))) > 1e-9:
            raise ValueError(f"detector stride {s} must be the patch size {patch} times a power of 2")
    if len(set(out)) != len(out) or not out:
        raise ValueError(f"detector strides must be distinct and non-empty, got {list(strides)}")
    return out


class PyramidLevel(nn.Module):
    """One pyramid level from the stride-p token map: transposed convs up (s < p) or max-pooling
    down (s > p), then 1x1 and 3x3 convs to `channels` with norms (ViTDet)."""

    def __init__(self, dim: int, channels: int, scale: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = dim
        ups = round(math.log2(1 / scale)) if scale < 1 else 0
        for i in range(ups):
            layers.append(nn.ConvTranspose2d(c, c // 2, 2, stride=2))
            c //= 2
            if i < ups - 1:
                layers += [LayerNorm2d(c), nn.GELU()]
        for _ in range(round(math.log2(scale)) if scale > 1 else 0):
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        layers += [
            nn.Conv2d(c, channels, 1, bias=False),
            nn.GroupNorm(32, channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.GroupNorm(32, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # [B, d, h, w] -> [B, channels, h*p/s, w*p/s] (ceil)


class SpatialPrior(nn.Module):
    """Pixel detail for the pyramid (the spatial prior of ViT-Adapter, reduced): the ViT sees
    16-px patches, coarse for objects one or two patches long. Three 3x3 convs of stride 2 on
    the band mean of the input (one channel, whatever the number of bands) give a stride-8 map
    [B, width, H/8, W/8]; each pyramid level adds it, average-pooled to its grid (repeated for
    stride 4), through a 1x1 conv that starts at zero, so an untrained prior leaves the pyramid
    as it was."""

    def __init__(self, width: int, channels: int, strides: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for c in (width // 4, width // 2, width):
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), nn.GroupNorm(8, c), nn.GELU()]
            c_in = c
        self.body = nn.Sequential(*layers)
        self.resize = nn.ModuleList(
            nn.Upsample(scale_factor=8 // s)
            if s < 8
            else nn.AvgPool2d(s // 8, ceil_mode=True)
            if s > 8
            else nn.Identity()
            for s in strides
        )
        self.proj = nn.ModuleList(nn.Conv2d(width, channels, 1) for _ in strides)
        for conv in self.proj:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        prior = self.body(x.mean(1, keepdim=True))  # [B, width, H/8, W/8]
        return [
            f + proj(resize(prior))  # [B, ch, H/s, W/s]
            for f, resize, proj in zip(feats, self.resize, self.proj, strict=True)
        ]


class DetectionHead(nn.Module):
    """Simple feature pyramid (`neck`, one level per stride), with `prior` > 0 a `SpatialPrior` of
    that width added to it, + torchvision's FCOSHead (`fcos`)."""

    def __init__(
        self,
        dim: int,
        patch: int,
        num_classes: int,
        strides: Sequence[int],
        channels: int,
        num_convs: int,
        prior: int = 0,
    ) -> None:
        super().__init__()
        self.neck = nn.ModuleList(PyramidLevel(dim, channels, s / patch) for s in strides)
        self.prior = SpatialPrior(prior, channels, strides) if prior > 0 else None
        self.fcos = FCOSHead(channels, 1, num_classes, num_convs)

    def forward(self, tokens: torch.Tensor, x: torch.Tensor) -> Outputs:
        feats = [level(tokens) for level in self.neck]  # per level [B, ch, H/s, W/s]
        if self.prior is not None:
            feats = self.prior(x, feats)
        out = self.fcos(feats)
        return out["cls_logits"], out["bbox_regression"], out["bbox_ctrness"]


class Detector(nn.Module):
    """FCOS detector: [B, C, H, W] (H, W multiples of the patch size) -> dense outputs over all
    levels, concatenated level by level in row-major point order (see `level_sizes`)."""

    def __init__(
        self,
        enc: ViTConfig,
        num_classes: int,
        strides: Sequence[int] = (8, 16, 32),
        channels: int = 128,
        drop_path_rate: float = 0.0,
        num_convs: int = 4,
        prior: int = 0,
    ) -> None:
        super().__init__()
        if channels < 32 or channels % 32:
            raise ValueError(f"detector channels must be a multiple of 32 (GroupNorm), got {channels}")
        if prior < 0 or prior % 32:
            raise ValueError(f"detector prior width must be 0 or a multiple of 32 (GroupNorm), got {prior}")
        if num_classes < 1:
            raise ValueError(f"a detector needs at least one class, got {num_classes}")
        self.strides = _check_strides(strides, enc.patch_size)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.num_convs = int(num_convs)
        self.prior = int(prior)
        self.encoder = SarViT(enc, drop_path_rate)
        self.head = DetectionHead(
            enc.embed_dim, enc.patch_size, num_classes, self.strides, channels, num_convs, self.prior
        )

    def forward(self, x: torch.Tensor) -> Outputs:
        b, _, h, w = x.shape
        p = self.encoder.cfg.patch_size
        torch._assert(
            h % p == 0 and w % p == 0, "detector input height and width must be multiples of the patch"
        )
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens :]  # [B, h*w, d]
        tokens = tokens.transpose(1, 2).reshape(b, -1, h // p, w // p)  # [B, d, H/p, W/p]
        return self.head(tokens, x)  # [B, N, K], [B, N, 4], [B, N, 1]

    def config(self) -> dict[str, Any]:
        """The `head` metadata entry that rebuilds this detector (`factory.build_model`)."""
        return {
            "type": "detector",
            "num_classes": self.num_classes,
            "strides": list(self.strides),
            "channels": self.channels,
            "num_convs": self.num_convs,
            "prior": self.prior,
        }


# --------------------------------------------------------------------------- points, loss, decoding


def level_sizes(image_size: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Point grid (rows, cols) of each level for an input of `image_size` (H, W multiples of the
    patch): ceil(H / s) x ceil(W / s)."""
    h, w = int(image_size[0]), int(image_size[1])
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def points(
    image_size: Sequence[int], strides: Sequence[int], device: torch.device | None = None
) -> list[torch.Tensor]:
    """torchvision's FCOS anchors of each level: one stride-sized square per point, [n_l, 4] xyxy."""
    gen = AnchorGenerator(tuple((int(s),) for s in strides), ((1.0,),) * len(strides))
    gen.set_cell_anchors(torch.float32, device or torch.device("cpu"))
    dev = device or torch.device("cpu")
    stride_t = [[torch.tensor(int(s), device=dev), torch.tensor(int(s), device=dev)] for s in strides]
    return gen.grid_anchors([list(g) for g in level_sizes(image_size, strides)], stride_t)


class _HeadLoss:
    """FCOSHead.compute_loss (focal, GIoU and centerness losses) without the head's layers."""

    compute_loss = FCOSHead.compute_loss

    def __init__(self) -> None:
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)


class _FCOSRules:
    """The parameter-free parts of torchvision's FCOS, called as torchvision defines them:
    target matching + loss (`compute_loss`) and post-processing (`postprocess_detections`)."""

    compute_loss = FCOS.compute_loss
    postprocess_detections = FCOS.postprocess_detections

    def __init__(
        self,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
        center_sampling_radius: float = 1.5,
    ) -> None:
        self.head = _HeadLoss()
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.topk_candidates = topk_candidates
        self.center_sampling_radius = center_sampling_radius


def _check_outputs(outputs: Outputs, image_size: Sequence[int], strides: Sequence[int]) -> list[int]:
    """Points per level, checked against the outputs' length."""
    per_level = [r * c for r, c in level_sizes(image_size, strides)]
    n = outputs[0].shape[1]
    if n != sum(per_level):
        raise ValueError(
            f"detector outputs have {n} points, but an input of {tuple(image_size)} with strides "
            f"{list(strides)} has {sum(per_level)}"
        )
    return per_level


def detection_loss(
    outputs: Outputs,
    targets: list[dict[str, torch.Tensor]],
    image_size: Sequence[int],
    strides: Sequence[int],
    center_sampling_radius: float = 1.5,
) -> dict[str, torch.Tensor]:
    """torchvision's FCOS losses of a batch: `classification` (sigmoid focal), `bbox_regression`
    (GIoU), `bbox_ctrness` (BCE), each per foreground point. `targets`: per image `boxes` [M, 4]
    xyxy in input pixels (float) and `labels` [M] int64."""
    cls_logits, bbox_reg, ctr = outputs
    per_level = _check_outputs(outputs, image_size, strides)
    anchors = torch.cat(points(image_size, strides, cls_logits.device))  # [N, 4]
    head_outputs = {
        "cls_logits": cls_logits.float(),
        "bbox_regression": bbox_reg.float(),
        "bbox_ctrness": ctr.float(),
    }
    rules = _FCOSRules(center_sampling_radius=center_sampling_radius)
    return rules.compute_loss(targets, head_outputs, [anchors] * cls_logits.shape[0], per_level)


@torch.no_grad()
def decode(
    outputs: Outputs,
    image_size: tuple[int, int],
    strides: Sequence[int],
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    max_detections: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Boxes of dense outputs (torchvision's FCOS post-processing: score sqrt(sigmoid(cls) x
    sigmoid(centerness)) > `score_thresh`, top 1000 per level, class-wise NMS at `nms_thresh`,
    best `max_detections`). Per image: `boxes` [M, 4] float xyxy in input pixels (clipped to
    `image_size`), `scores` [M], `labels` [M] int64 (class index)."""
    cls_logits, bbox_reg, ctr = (torch.as_tensor(o).float() for o in outputs)
    per_level = _check_outputs((cls_logits, bbox_reg, ctr), image_size, strides)
    anchors = points(image_size, strides, cls_logits.device)
    head_outputs = {
        "cls_logits": list(cls_logits.split(per_level, dim=1)),
        "bbox_regression": list(bbox_reg.split(per_level, dim=1)),
        "bbox_ctrness": list(ctr.split(per_level, dim=1)),
    }
    rules = _FCOSRules(score_thresh, nms_thresh, max_detections)
    size = (int(image_size[0]), int(image_size[1]))
    return rules.postprocess_detections(
        head_outputs, [anchors] * cls_logits.shape[0], [size] * cls_logits.shape[0]
    )
