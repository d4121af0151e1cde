"""Export sarmae weights to ONNX, check the graph, check parity with onnxruntime, and
optionally store fp16 or dynamic-int8 weights with their accuracy change measured.

Output contract of an exported model (input `input`: [B, C, T, T] float32, already scaled
and normalised as the metadata says; the batch axis is dynamic, the tile size T fixed):
- encoder / pretrain weights: `embedding` [B, d] (mean patch token) and
  `patch_features` [B, d, T/p, T/p];
- classification: `logits` [B, K];
- segmentation: `logits` [B, K, T, T];
- detection: the dense head outputs `cls_logits` [B, N, K], `bbox_regression` [B, N, 4] and
  `centerness` [B, N, 1] over the N points of all pyramid levels; decoding and NMS stay
  outside the graph (`model.detector.decode`, shared with the PyTorch path), and the export
  checks that both runtimes give the same boxes (`export/box_parity.py`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from sarmae_cli import __version__
from sarmae_cli.data.preprocess import InputSpec, match_chip_bands
from sarmae_cli.data.raster import IMAGE_SUFFIXES, read_image
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.data.synthetic import as_mode, speckled_scene
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.export.box_parity import BOX_IOU, BOX_SCORE, box_agreement, box_parity, point_parity
from sarmae_cli.model.checkpoint import WeightsMeta, onnx_metadata
from sarmae_cli.model.factory import load_model
from sarmae_cli.outputs import check_extension, check_output

OUTPUT_NAMES = {
    "encoder": ["embedding", "patch_features"],
    "classification": ["logits"],
    "segmentation": ["logits"],
    "detection": ["cls_logits", "bbox_regression", "centerness"],
}
FP32_TOLERANCE = 1e-4  # max |onnx - torch| relative to max |torch|, per output


class ParityError(SarmaeError):
    """onnxruntime and PyTorch disagree beyond the tolerance."""


class ExportModule(nn.Module):
    """Gives every task the fixed output contract of the module docstring."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        if self.task != "encoder":
            return self.model(x)
        enc = self.model.encoder
        tokens = enc.forward_features(x)[:, enc.num_prefix_tokens :]  # [B, L, d]
        b, length, d = tokens.shape
        h = x.shape[-2] // enc.cfg.patch_size
        grid = tokens.transpose(1, 2).reshape(b, d, h, length // h)  # [B, d, h, w]
        return tokens.mean(dim=1), grid


@dataclass
class ExportReport:
    """What `export_onnx` did and measured; stored in the model's `sarmae_export` metadata."""

    output: str
    task: str
    tile: int
    opset: int
    precision: str
    outputs: list[str]
    parity: list[dict[str, Any]] = field(default_factory=list)
    accuracy_change: dict[str, Any] | None = None
    simplified: bool = False
    size_mb: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sample_inputs(meta: WeightsMeta, tile: int, n: int, seed: int = 0) -> np.ndarray:
    """Real-looking model input [n, C, T, T]: speckled synthetic scenes expressed in the
    weights' input scaling, then scaled and normalised exactly as inference does."""
    scaling = Scaling.from_dict(meta.input_scaling)
    c = meta.encoder_config.in_chans
    out = []
    for i in range(n):
        power, _ = speckled_scene(tile, tile, bands=c, seed=seed + i)
        raw = as_mode(power, scaling.mode)
        out.append(prep_chip(raw, meta, tile))
    return np.stack(out)


def prep_chip(raw: np.ndarray, meta: WeightsMeta, tile: int) -> np.ndarray:
    """One raw chip [C', H, W] -> model input [C, T, T] (bands matched, then the stored input
    route of `data/preprocess.py`)."""
    raw = match_chip_bands(raw, meta.encoder_config.in_chans)
    return InputSpec.from_meta(meta.to_dict()).chip(raw, size=tile).numpy()  # [C, T, T]


def holdout_set(path: Path, meta: WeightsMeta, tile: int, limit: int) -> tuple[np.ndarray, list]:
    """Up to `limit` chips under `path` as model input, and their labels when the parent
    folder names are class names of a classifier (else None)."""
    files = sorted(p for p in Path(path).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"no images (png/jpg/tif) found under hold-out folder {path}")
    rng = np.random.default_rng(0)
    files = [files[i] for i in sorted(rng.permutation(len(files))[:limit])]
    classes = meta.class_names or []
    labels = [classes.index(f.parent.name) if f.parent.name in classes else None for f in files]
    x = np.stack([prep_chip(read_image(f), meta, tile) for f in files])
    return x, labels if meta.task == "classification" and None not in labels else []


def _session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_batched(sess: ort.InferenceSession, x: np.ndarray, batch: int = 16) -> list[np.ndarray]:
    parts = [sess.run(None, {"input": x[i : i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def parity(sess: ort.InferenceSession, module: nn.Module, x: np.ndarray, names: list[str]) -> list[dict]:
    """Max abs difference between onnxruntime and PyTorch per output on `x`."""
    with torch.inference_mode():
        ref = module(torch.from_numpy(x))
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    got = sess.run(None, {"input": x})
    rows = []
    for name, r, g in zip(names, ref, got, strict=True):
        r = r.numpy()
        diff = float(np.abs(r - g).max())
        scale = float(np.abs(r).max()) or 1.0
        rows.append({"batch": len(x), "output": name, "max_abs_diff": diff, "relative": diff / scale})
    return rows


def accuracy_change(task: str, ref: list[np.ndarray], new: list[np.ndarray], labels: list) -> dict:
    """How far a reduced-precision model moves from fp32 on the same inputs."""
    if task == "encoder":
        a, b = ref[0], new[0]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
        return {"embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min())}
    pr, pn = ref[0].argmax(1), new[0].argmax(1)
    out: dict[str, Any] = {"prediction_agreement": float((pr == pn).mean())}
    if task == "segmentation":
        k = ref[0].shape[1]
        ious = []
        for c in range(k):
            inter, union = ((pr == c) & (pn == c)).sum(), ((pr == c) | (pn == c)).sum()
            if union:
                ious.append(inter / union)
        out["miou_vs_fp32"] = float(np.mean(ious))
    if labels:
        y = np.asarray(labels)
        out["accuracy_fp32"] = float((pr == y).mean())
        out["accuracy_reduced"] = float((pn == y).mean())
        out["accuracy_change"] = out["accuracy_reduced"] - out["accuracy_fp32"]
    return out


def export_onnx(
    weights: Path,
    output: Path,
    *,
    tile: int | None = None,
    opset: int = 18,
    fp16: bool = False,
    int8: bool = False,
    simplify: bool = False,
    holdout: Path | None = None,
    holdout_limit: int = 200,
    overwrite: bool = False,
) -> ExportReport:
    """Export `weights` to `output` (atomically); raises ParityError if fp32 parity fails."""
    output = Path(output)
    if fp16 and int8:
        raise UsageError("choose one of --fp16 and --int8")
    check_extension(output, "onnx", "-o")
    check_output(output, overwrite, inputs=[weights])
    model, meta = load_model(weights)
    task = "encoder" if meta.task in ("encoder", "pretrain") else meta.task
    if meta.task == "pretrain":
        meta.task = "encoder"  # the exported graph is the encoder only
    patch = meta.encoder_config.patch_size
    tile = tile or InputSpec.from_meta(meta.to_dict()).tiling()[0]
    if tile < patch or tile % patch:
        raise UsageError(f"tile {tile} must be a positive multiple of the patch size {patch}")
    module = ExportModule(model, task).eval()
    names = OUTPUT_NAMES[task]
    c = meta.encoder_config.in_chans
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    report = ExportReport(str(output), task, tile, opset, precision, names)

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".sarmae-export-") as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        _torch_export(module, c, tile, opset, names, fp32_path)
        if simplify:
            _simplify(fp32_path)
            report.simplified = True
        onnx.checker.check_model(str(fp32_path), full_check=True)
        sess = _session(fp32_path)
        for n in (1, 3):
            report.parity += parity(sess, module, sample_inputs(meta, tile, n, seed=10 * n), names)
        worst = max(r["relative"] for r in report.parity)
        if worst > FP32_TOLERANCE:
            raise ParityError(
                f"onnxruntime differs from PyTorch by {worst:.2e} of the output scale "
                f"(tolerance {FP32_TOLERANCE:.0e}); the ONNX file was not written"
            )
        if task == "detection":
            check_box_parity(report, sess, module, meta, tile)
        final = fp32_path
        if fp16 or int8:
            final = Path(tmp) / f"{precision}.onnx"
            _reduce_precision(fp32_path, final, precision)
            onnx.checker.check_model(str(final), full_check=True)
            if holdout is not None:
                x, labels = holdout_set(holdout, meta, tile, holdout_limit)
                source = str(holdout)
            else:
                x, labels = sample_inputs(meta, tile, 32, seed=1000), []
                source = "synthetic speckled scenes (no --holdout given)"
            ref = _run_batched(sess, x)
            new = _run_batched(_session(final), x)
            change = box_agreement(ref, new, meta, tile) if task == "detection" else None
            report.accuracy_change = {
                "holdout": source,
                "images": len(x),
                **(change or accuracy_change(task, ref, new, labels)),
            }
        proto = onnx.load(str(final))
        meta.tile = {**meta.tile, "size": tile}  # the graph's fixed tile is the default tile
        info = report.to_dict() | {"sarmae_version": __version__, "source_weights": str(weights)}
        info.pop("output")
        for key, value in onnx_metadata(meta, info).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "sarmae"
        proto.producer_version = __version__
        staged = Path(tmp) / "final.onnx"
        onnx.save(proto, str(staged))
        os.replace(staged, output)
    report.size_mb = round(output.stat().st_size / 1e6, 2)
    return report


def check_box_parity(
    report: ExportReport, sess: ort.InferenceSession, module: nn.Module, meta: WeightsMeta, tile: int
) -> None:
    """The same boxes from both runtimes on sample scenes, point by point and after decoding
    (`box_parity.point_parity`, `box_parity.box_parity`: IoU >= BOX_IOU, scores within
    BOX_SCORE), added to `report.parity`; a ParityError otherwise."""
    x = sample_inputs(meta, tile, 4, seed=40)
    with torch.inference_mode():
        ref = [o.numpy() for o in module(torch.from_numpy(x))]
    got = sess.run(None, {"input": x})
    for row in (point_parity(ref, got, meta, tile), box_parity(ref, got, meta, tile)):
        report.parity.append(row)
        if row["min_iou"] < BOX_IOU or row["max_score_diff"] > BOX_SCORE:
            raise ParityError(
                f"onnxruntime and PyTorch give different boxes ({row['output']}: lowest IoU "
                f"{row['min_iou']:.4f}, largest score difference {row['max_score_diff']:.1e}; need >= "
                f"{BOX_IOU} and <= {BOX_SCORE:.0e}); the ONNX file was not written"
            )


def _torch_export(module: nn.Module, c: int, tile: int, opset: int, names: list[str], path: Path) -> None:
    """torch.onnx (dynamo exporter) with a dynamic batch axis; its progress lines are muted."""
    x = torch.zeros(2, c, tile, tile)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter deprecation / tracer notes
        program = torch.onnx.export(
            module,
            (x,),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=names,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        program.save(str(path), external_data=False)


def _simplify(path: Path) -> None:
    try:
        import onnxsim
    except ImportError as e:
        raise UsageError("--simplify needs onnx-simplifier: pip install 'sarmae[simplify]'") from e
    model, ok = onnxsim.simplify(onnx.load(str(path)))
    if not ok:
        raise SarmaeError(
            "onnx-simplifier could not validate the simplified graph; export without --simplify"
        )
    onnx.save(model, str(path))


def _reduce_precision(src: Path, dst: Path, precision: str) -> None:
    """fp16 weights (onnxconverter-common) or dynamic int8 (onnxruntime), advice muted."""
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # onnxruntime.quantization logs pre-processing advice
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fp16 conversion warns for every tiny constant
            _convert(src, dst, precision)
    finally:
        quant_logger.setLevel(level)


def _convert(src: Path, dst: Path, precision: str) -> None:
    if precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # transformer linear layers only: dynamically quantized convolutions run slower than fp32
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
    else:
        from onnxconverter_common import float16

        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
