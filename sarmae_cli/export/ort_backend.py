"""Run an exported sarmae ONNX model with onnxruntime, as a scene-engine backend
(same attributes and `predict` as `sarmae_cli.infer.backend.TorchBackend`).

onnxruntime is imported when an ONNX model runs, not with this module: `infer/models.py`
imports this module for every command, and a PyTorch run would otherwise carry onnxruntime's
18 MB of peak memory (docs/benchmarks.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sarmae_cli.errors import UsageError
from sarmae_cli.model.checkpoint import WeightsMeta, read_onnx_meta

#: backend output -> ONNX output name (see `onnx_export` for the output contract)
ONNX_OUTPUTS = {
    "probabilities": "logits",
    "pooled": "embedding",
    "patch_features": "patch_features",
    "detections": "cls_logits",  # with bbox_regression and centerness: DETECTION_OUTPUTS
}
#: A detector's dense head outputs, returned together (decoded outside the graph).
DETECTION_OUTPUTS = ["cls_logits", "bbox_regression", "centerness"]


def providers(device: str = "auto") -> list[str]:
    """CUDA first when onnxruntime-gpu sees a GPU and the device allows it; CPU always."""
    import onnxruntime as ort  # an optional import (module docstring)

    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
        raise UsageError(
            f"device {device} requested but onnxruntime has no CUDA provider; "
            "install sarmae[gpu] (onnxruntime-gpu) or use --device cpu"
        )
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxBackend:
    """An exported model: `predict(batch [B, C, T, T]) -> [B, K]` or `[B, K, h, w]`.

    Classification and segmentation return softmax probabilities, like `TorchBackend`; a
    detector (output "detections") its three dense head outputs, as a tuple.
    The tile size T is fixed by the export (`self.tile`); the batch size is free.
    """

    def __init__(
        self, path: Path, output: str = "probabilities", device: str = "auto", threads: int | None = None
    ) -> None:
        self.path = Path(path)
        self.meta: WeightsMeta
        self.meta, self.export_info = read_onnx_meta(self.path)
        if output not in ONNX_OUTPUTS:
            raise ValueError(f"unknown backend output {output!r}")
        import onnxruntime as ort  # an optional import (module docstring)

        opts = ort.SessionOptions()
        # No CPU arena by default: it grows in powers of two and keeps its peak; without it the
        # process stays under the engine's 1.5 GB on an 8k scene, at some cost in speed
        # (docs/benchmarks.md). SARMAE_ORT_ARENA=1 turns it back on.
        opts.enable_cpu_mem_arena = os.environ.get("SARMAE_ORT_ARENA", "0") == "1"
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=providers(device))
        names = [o.name for o in self.session.get_outputs()]
        self.output_name = ONNX_OUTPUTS[output]
        if self.output_name not in names:
            raise UsageError(f"{self.path} has no {self.output_name!r} output (outputs: {names})")
        self.output = output
        self.device = "cuda" if self.session.get_providers()[0].startswith("CUDA") else "cpu"
        cfg = self.meta.encoder_config
        self.in_chans = cfg.in_chans
        self.patch_size = cfg.patch_size
        self.tile = int(self.export_info.get("tile", cfg.img_size))
        shape = next(o.shape for o in self.session.get_outputs() if o.name == self.output_name)
        self.out_channels = int(shape[-1] if output == "detections" else shape[1])
        self.out_stride = None if len(shape) == 2 or output == "detections" else self.tile // int(shape[2])

    def check_tile(self, tile: int) -> None:
        """The engine must use the tile size the model was exported for."""
        if tile != self.tile:
            raise UsageError(
                f"{self.path} was exported for {self.tile}-px tiles; use --tile {self.tile} "
                f"(or re-export with `sarmae export --tile {tile}`)"
            )

    def predict(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        x = np.ascontiguousarray(batch, dtype=np.float32)  # [B, C, T, T]
        if x.shape[1] != self.in_chans:
            raise UsageError(f"{self.path} takes {self.in_chans} bands, got {x.shape[1]}")
        self.check_tile(x.shape[-1])
        if self.output == "detections":  # [B, N, K], [B, N, 4], [B, N, 1]
            return tuple(y.astype(np.float32) for y in self.session.run(DETECTION_OUTPUTS, {"input": x}))
        (y,) = self.session.run([self.output_name], {"input": x})
        y = y.astype(np.float32)
        if self.output == "probabilities":
            y = np.exp(y - y.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
        return y
