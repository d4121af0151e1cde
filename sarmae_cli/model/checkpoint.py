"""The one place that reads and writes weights.

A sarmae weights file is a safetensors file whose header metadata holds one JSON
document under the key ``sarmae`` (see `WeightsMeta`). Tensor names are prefixed by
component: ``encoder.*`` (timm ViT layout), ``decoder.*`` (MAE decoder), ``head.*``
(task head). Nothing in this module ever unpickles code: pickled PyTorch checkpoints
are read with ``torch.load(weights_only=True)`` and an explicit allow-list.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import re
import struct
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from timm.models import adapt_input_conv

from sarmae_cli import __version__
from sarmae_cli.errors import (
    UnsafeCheckpointError,
    UsageError,
    WeightsError,
    WeightsNotFoundError,
    WrongWeightsError,
)
from sarmae_cli.model.config import DecoderConfig, ViTConfig
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.outputs import atomic_output
from sarmae_cli.weights_file import META_KEY, WeightsGsd, header_metadata, parse_weights_gsd

FORMAT = "sarmae-weights"
FORMAT_VERSION = 1
TASKS = ("encoder", "pretrain", "classification", "segmentation", "detection")

#: Python objects a pickled checkpoint may contain beside tensors and plain containers.
PICKLE_ALLOWLIST: list[Any] = [argparse.Namespace]


@dataclass
class WeightsMeta:
    """Everything needed to use a weights file without further flags."""

    task: str
    encoder: dict[str, Any]  # ViTConfig fields
    bands: list[str]
    input_scaling: dict[str, Any]  # {"mode": "uint8" | "uint16" | "db" | "power" | ...}
    normalization: dict[str, list[float]]  # {"mean": [...], "std": [...]} per band
    decoder: dict[str, Any] | None = None  # DecoderConfig fields when an MAE decoder is kept
    head: dict[str, Any] | None = None  # task-head config (classifier / segmenter)
    class_names: list[str] | None = None
    tile: dict[str, int] = field(default_factory=lambda: {"size": 224, "overlap": 32})
    channel_adaptation: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    tensors_sha256: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise WeightsError(f"unknown task {self.task!r} in weights metadata; known: {TASKS}")

    @property
    def encoder_config(self) -> ViTConfig:
        return ViTConfig.from_dict(self.encoder)

    @property
    def decoder_config(self) -> DecoderConfig | None:
        return DecoderConfig.from_dict(self.decoder) if self.decoder else None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WeightsMeta:
        if d.get("format") != FORMAT:
            raise WeightsError(f"metadata format is {d.get('format')!r}, expected {FORMAT!r}")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise WeightsError(
                f"weights format version {d['format_version']} is newer than this sarmae "
                f"({FORMAT_VERSION}); upgrade sarmae"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def provenance(command: str | None = None, **extra: Any) -> dict[str, Any]:
    """Standard provenance record: sarmae version, UTC date, command line, plus `extra`."""
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    return {"sarmae_version": __version__, "created": now, "command": command, **extra}


def tensors_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """Checksum over names, dtypes, shapes and bytes of all tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: WeightsMeta,
    overwrite: bool = False,
    half: bool = False,
) -> WeightsMeta:
    """Write `tensors` and `meta` to `path` atomically. `half` stores floats as fp16.

    Returns the metadata as written (with its checksum filled in).
    """
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if half and t.is_floating_point():
            t = t.half()
        out[name] = t.contiguous().clone()
    meta.tensors_sha256 = tensors_sha256(out)
    header = {META_KEY: json.dumps(meta.to_dict(), sort_keys=True, default=str)}
    with atomic_output(Path(path), overwrite) as tmp:
        save_file(out, str(tmp), metadata=header)
    return meta


def read_meta(path: Path) -> WeightsMeta:
    """Read only the metadata of a sarmae weights file (fast: the header, no tensors)."""
    path = Path(path)
    header = header_metadata(path)
    if META_KEY not in header:
        raise WeightsError(
            f"{path} is a safetensors file without sarmae metadata; convert a checkpoint "
            "with `sarmae weights import`"
        )
    try:
        return WeightsMeta.from_dict(json.loads(header[META_KEY]))
    except (json.JSONDecodeError, TypeError) as e:
        raise WeightsError(f"{path} has unreadable sarmae metadata ({_first_line(e)})") from e


def read_weights(path: Path, verify: bool = True) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """Read tensors and metadata; with `verify`, check the checksum against the tensors."""
    path = Path(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is truncated or corrupted ({_first_line(e)})") from e
    if verify and meta.tensors_sha256 and tensors_sha256(tensors) != meta.tensors_sha256:
        raise WeightsError(
            f"{path} is corrupted: its tensors do not match the checksum in its metadata; "
            "restore the file from its source"
        )
    return tensors, meta


def convert_weights(
    src: Path,
    dst: Path,
    half: bool = False,
    drop_mae_decoder: bool = False,
    overwrite: bool = False,
    command: str | None = None,
    tile: dict[str, int] | None = None,
    gsd: WeightsGsd | None = None,
    min_score: float | None = None,
) -> WeightsMeta:
    """Copy `src` to `dst` (checksum verified), optionally storing floats as fp16, dropping
    the MAE decoder of pretraining weights (what `embed` and fine-tuning need is the encoder),
    setting the default inference `tile` ({"size", "overlap"}), recording the pixel size
    the weights were trained at (`gsd`, metres, or a (finest, coarsest) range of pixel sizes
    read as they are: `training.gsd`) and, for detectors, the default
    score cut-off of `sarmae detect` (`min_score`: `training.detection.min_score`). The
    original provenance is kept under `provenance.converted_from`."""
    src, dst = Path(src), Path(dst)
    tensors, meta = read_weights(src)
    if min_score is not None:
        if meta.task != "detection":
            raise WrongWeightsError(
                f"--min-score is the default score cut-off of detectors; {src} holds {meta.task} weights"
            )
        if not 0.0 <= min_score < 1.0:
            raise UsageError(f"--min-score {min_score:g} must be in [0, 1)")
        detection = {**meta.training.get("detection", {}), "min_score": float(min_score)}
        meta.training = {**meta.training, "detection": detection}
    if gsd is not None:
        size = parse_weights_gsd(gsd)
        meta.training = {**meta.training, "gsd": list(size) if isinstance(size, tuple) else size}
    if tile:
        patch = meta.encoder_config.patch_size
        size, overlap = (
            int(tile.get("size", meta.tile["size"])),
            int(tile.get("overlap", meta.tile["overlap"])),
        )
        if size % patch or not 0 <= overlap < size:
            raise WeightsError(
                f"tile {size} / overlap {overlap}: the size must be a multiple of the patch size "
                f"({patch}) and the overlap smaller than the size"
            )
        meta.tile = {"size": size, "overlap": overlap}
    if drop_mae_decoder:
        if meta.decoder is None:
            raise WeightsError(f"{src} holds no MAE decoder (task {meta.task}); drop --drop-mae-decoder")
        tensors = {k: v for k, v in tensors.items() if not k.startswith("decoder.")}
        meta.decoder = None
        if meta.task == "pretrain":
            meta.task = "encoder"
    old = dict(meta.provenance)
    meta.provenance = provenance(command, converted_from={"file": src.name, **old}, fp16=half)
    return save_weights(dst, tensors, meta, overwrite=overwrite, half=half)


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under `prefix` (e.g. 'encoder.') with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def adapt_in_chans(
    tensors: dict[str, torch.Tensor], meta: WeightsMeta, in_chans: int
) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """Adapt the patch embedding to `in_chans` input bands the way timm does (sum of the
    kernels for 1 band, repeat and rescale otherwise) and record it in the metadata."""
    cfg = meta.encoder_config
    if in_chans == cfg.in_chans:
        return tensors, meta
    if in_chans < 1:
        raise WeightsError(f"in_chans must be >= 1, got {in_chans}")
    key = "encoder.patch_embed.proj.weight"
    w = tensors[key]  # [d, C, p, p]
    tensors = dict(tensors)
    tensors[key] = adapt_input_conv(in_chans, w.float(), base_chans=w.shape[1]).to(
        w.dtype
    )  # [d, in_chans, p, p]
    d = asdict(meta)
    d["encoder"] = {**meta.encoder, "in_chans": in_chans}
    d["bands"] = _resize_list(meta.bands, in_chans)
    d["normalization"] = {k: _resize_list(v, in_chans) for k, v in meta.normalization.items()}
    d["channel_adaptation"] = {
        "from_in_chans": cfg.in_chans,
        "to_in_chans": in_chans,
        "method": "timm adapt_input_conv: sum over input kernels for 1 band, "
        "repeat and rescale by from/to otherwise",
    }
    return tensors, WeightsMeta(**d)


def _resize_list(values: list, n: int) -> list:
    """Per-band list resized to `n` bands by cycling (identical bands stay identical)."""
    return [values[i % len(values)] for i in range(n)] if values else values


def load_encoder(path: Path, in_chans: int | None = None, verify: bool = True) -> tuple[SarViT, WeightsMeta]:
    """Build the encoder stored in a weights file, loaded strictly (fp32, eval mode)."""
    tensors, meta = read_weights(path, verify)
    if in_chans is not None:
        tensors, meta = adapt_in_chans(tensors, meta, in_chans)
    model = SarViT(meta.encoder_config)
    state = {k: v.float() for k, v in sub_state(tensors, "encoder.").items()}
    load_state_strict(model, state, where=str(path))
    return model.eval(), meta


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load `state` into `module`, naming the first missing, unexpected or mis-shaped key."""
    expected = module.state_dict()
    for k, v in expected.items():
        if k not in state:
            raise WeightsError(f"{where}: missing key {k!r}")
        if tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(
                f"{where}: key {k!r} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    for k in state:
        if k not in expected:
            raise WeightsError(f"{where}: unexpected key {k!r}")
    module.load_state_dict(state, strict=True)


def load_pickled_checkpoint(path: Path) -> Any:
    """Load a pickled PyTorch checkpoint without executing code.

    Only tensors, plain containers, numbers, strings and the classes in
    `PICKLE_ALLOWLIST` are accepted; anything else is refused before it is built.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a checkpoint file")
    try:
        with torch.serialization.safe_globals(PICKLE_ALLOWLIST), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes; errors still raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds; classify by message
        msg = str(e)
        m = re.search(r"unsupported (?:global:? )?GLOBAL ([\w.]+)", msg, re.IGNORECASE)
        if m or ("Weights only load failed" in msg and "global" in msg.lower()):
            name = m.group(1) if m else "a Python object"
            raise UnsafeCheckpointError(
                f"refused to load {path}: it asks for {name}, which is not on the allow-list "
                "of safe types; nothing in it was executed"
            ) from e
        if _is_truncated(path, msg):
            raise WeightsError(f"{path} is truncated or corrupted ({_first_line(e)})") from e
        raise _not_a_checkpoint(path) from e


def _is_truncated(path: Path, msg: str) -> bool:
    """Whether a load failure looks like a cut-off zip checkpoint rather than another file."""
    with open(path, "rb") as f:
        magic = f.read(4)
    return magic == b"PK\x03\x04" or "central directory" in msg or "EOF" in msg


def _not_a_checkpoint(path: Path) -> WeightsError:
    """The error for a file the safe loader cannot read: a pickle (one written by `pickle`, not
    `torch.save`, or one that needs what the loader refuses), or no checkpoint at all."""
    with open(path, "rb") as f:
        pickled = f.read(1) == b"\x80"  # the PROTO opcode every pickle since protocol 2 starts with
    if pickled:
        return UnsafeCheckpointError(
            f"{path} is not a PyTorch checkpoint sarmae can read safely: it is a pickle that "
            "torch.save did not write, or one that needs what the safe loader refuses; nothing "
            "in it was executed. Give the official SARMAE .pth checkpoint, or re-save the weights "
            "with torch.save(state_dict, path) from a source you trust"
        )
    return WeightsError(
        f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a pickle); "
        "give the official SARMAE .pth checkpoint"
    )


def _first_line(e: BaseException) -> str:
    """The gist of a load error. For torch's weights-only refusals that is the unpickler's own
    complaint, not torch's preamble (which suggests `weights_only=False`, i.e. running code)."""
    msg = str(e)
    if "WeightsUnpickler error:" in msg:
        detail = [ln.strip() for ln in msg.split("WeightsUnpickler error:", 1)[1].splitlines() if ln.strip()]
        return f"unpickling refused: {detail[0][:200]}" if detail else "unpickling refused"
    text = msg.strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def is_safetensors(path: Path) -> bool:
    """Cheap sniff: 8-byte little-endian header length followed by a JSON object."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            return 0 < n < 100_000_000 and f.read(1) == b"{"
    except (OSError, struct.error):
        return False


#: metadata_props keys of an exported ONNX model (flat copies for tools that read one key).
ONNX_FLAT_KEYS = ("task", "bands", "input_scaling", "normalization", "tile", "class_names")


def onnx_metadata(meta: WeightsMeta, export_info: dict[str, Any]) -> dict[str, str]:
    """The `metadata_props` of an exported ONNX model: the full weights metadata under
    `sarmae`, export details under `sarmae_export`, and flat copies of the main fields."""
    props = {
        META_KEY: json.dumps(meta.to_dict(), sort_keys=True, default=str),
        "sarmae_export": json.dumps(export_info, sort_keys=True, default=str),
        "sarmae_version": __version__,
    }
    d = meta.to_dict()
    for k in ONNX_FLAT_KEYS:
        props[k] = json.dumps(d[k], default=str)
    return props


def read_onnx_meta(path: Path) -> tuple[WeightsMeta, dict[str, Any]]:
    """Metadata of an ONNX model exported by sarmae: (weights metadata, export details).
    Reads the graph without its weights."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise WeightsNotFoundError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(f"{path} is not a readable ONNX model ({_first_line(e)})") from e
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise WeightsError(
            f"{path} has no sarmae metadata (not exported by `sarmae export`); pass the input "
            "scaling, bands and task explicitly or re-export it"
        )
    try:
        meta = WeightsMeta.from_dict(json.loads(props[META_KEY]))
        info = json.loads(props.get("sarmae_export", "{}"))
    except (json.JSONDecodeError, TypeError) as e:
        raise WeightsError(f"{path} has unreadable sarmae metadata ({_first_line(e)})") from e
    return meta, info
