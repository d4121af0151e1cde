"""How the inference engine calls a model: a small backend interface.

The engine never touches torch modules directly. It needs an object with

- `in_chans: int` -- input bands the model takes;
- `patch_size: int` -- tile sizes must be multiples of it;
- `out_channels: int` -- K, channels of the output (classes, or feature width);
- `out_stride: int | None` -- input pixels per output pixel for dense outputs
  (1 for segmentation probabilities, the patch size for per-patch features), or None when
  the model returns one vector per tile (classification probabilities, pooled embeddings);
- `device: str` -- where it runs, for summaries;
- `predict(batch) -> np.ndarray`: `batch` is float32 [B, C, T, T] (normalised model input,
  C = in_chans, T a multiple of patch_size); it returns float32 [B, K, T/out_stride,
  T/out_stride] for dense outputs or [B, K] for per-tile outputs. Segmentation and
  classification backends return *probabilities* (softmax applied), so that the engine can
  blend overlapping tiles by weighted averaging. The returned array belongs to the engine
  (it may be modified in place). A detector's backend (output "detections", K classes,
  `out_stride` None) returns its dense head outputs instead, a tuple of float32
  cls_logits [B, N, K], bbox_regression [B, N, 4] and centerness [B, N, 1] over the N points
  of all pyramid levels, which `infer/detect.py` decodes (`model.detector.decode`).

`TorchBackend` wraps a sarmae torch model; an onnxruntime backend only has to provide the
same attributes and `predict`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from sarmae_cli.errors import SarmaeError
from sarmae_cli.model.runtime import autocast

OUTPUTS = ("probabilities", "pooled", "patch_features", "detections")


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a model (see the module docstring)."""

    in_chans: int
    patch_size: int
    out_channels: int
    out_stride: int | None
    device: str

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """A sarmae torch model as a backend.

    `output`:
    - "probabilities": softmax of a `Classifier` ([B, K]) or `Segmenter` ([B, K, T, T]);
    - "pooled": the encoder's pooled embedding [B, d];
    - "patch_features": the encoder's final patch tokens as maps [B, d, T/p, T/p];
    - "detections": a `Detector`'s dense head outputs (a tuple, see the module docstring).
    Runs in inference mode, with autocast on CUDA (outputs are returned as float32).
    """

    def __init__(self, model: nn.Module, device: torch.device | str, output: str = "probabilities") -> None:
        if output not in OUTPUTS:
            raise ValueError(f"unknown backend output {output!r}; use one of {OUTPUTS}")
        self.device = str(device)
        self._device = torch.device(device)
        self.model = model.to(self._device).eval()
        self.output = output
        encoder = model.encoder
        cfg = encoder.cfg
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size
        self.encoder = encoder
        if output == "detections":
            self.out_channels, self.out_stride = model.num_classes, None
        elif output == "probabilities":
            head = model.head
            self.out_channels = (
                head.out_features if hasattr(head, "out_features") else head.classifier.out_channels
            )
            self.out_stride = None if hasattr(head, "out_features") else 1
        else:
            self.out_channels = cfg.embed_dim
            self.out_stride = None if output == "pooled" else cfg.patch_size

    def predict(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        try:
            return self._predict(batch)
        except torch.cuda.OutOfMemoryError as e:
            raise SarmaeError(
                f"out of GPU memory on a batch of {batch.shape[0]} tiles of {batch.shape[-1]} px; "
                "lower --batch-size or --tile"
            ) from e
        except RuntimeError as e:
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise SarmaeError(f"the model failed on tiles of shape {tuple(batch.shape[1:])}: {msg}") from e

    @torch.inference_mode()
    def _predict(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._device)  # [B, C, T, T]
        with autocast(self._device):
            if self.output == "detections":  # [B, N, K], [B, N, 4], [B, N, 1]
                return tuple(o.float().cpu().numpy() for o in self.model(x))
            if self.output == "probabilities":
                y = torch.softmax(self.model(x).float(), dim=1)  # [B, K] or [B, K, T, T]
            elif self.output == "pooled":
                y = self.encoder.pooled(x)  # [B, d]
            else:
                tokens = self.encoder.forward_features(x)  # [B, 1 + h*w, d]
                h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
                y = tokens[:, self.encoder.num_prefix_tokens :].transpose(1, 2)  # [B, d, h*w]
                y = y.reshape(x.shape[0], -1, h, w)  # [B, d, h, w]
        return y.float().cpu().numpy()
