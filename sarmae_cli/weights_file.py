"""The safetensors container of sarmae weights, read with the standard library: the JSON
header (tensor names, dtypes, shapes, byte ranges and `__metadata__`). `model/checkpoint.py`
reads metadata and tensors through it; `sarmae weights list` reads headers without torch.
Also the one check of the pixel size that weights record (`training.gsd`), shared by the input
route (`data/preprocess.py`) and `weights convert --gsd` (`model/checkpoint.py`)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from sarmae_cli.errors import UsageError, WeightsError, WeightsNotFoundError

#: The header metadata key that holds the sarmae JSON document.
META_KEY = "sarmae"

#: What weights record (`training.gsd`): one pixel size in metres, or a (finest, coarsest) range
#: of pixel sizes the model reads as they are (detectors trained on a mix of resolutions).
WeightsGsd = float | tuple[float, float]


def parse_weights_gsd(value: object, what: str = "--gsd") -> WeightsGsd:
    """A recorded or given training pixel size -> metres, or a (finest, coarsest) range from
    a two-number list or "LO:HI" text; anything else is a usage error."""
    try:
        if isinstance(value, str) and ":" in value:
            value = value.split(":")
        if isinstance(value, list | tuple):
            lo, hi = (float(v) for v in value)
            if 0 < lo <= hi:
                return (lo, hi) if lo < hi else lo
        elif float(value) > 0:
            return float(value)
    except (TypeError, ValueError):
        pass
    raise UsageError(
        f"{what} {value!r}: give the training pixel size in metres, e.g. 10, or a range LO:HI such as 0.5:5"
    )


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; a file shorter or longer than the tensors it
    lists is refused (truncated or corrupted)."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a weights file")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 0 < n <= size - 8:
                raise ValueError(f"header length {n} does not fit the file")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
    except FileNotFoundError as e:
        raise WeightsNotFoundError(f"weights file not found: {path}") from e
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError) as e:
        raise WeightsError(f"{path} is not a readable safetensors file ({e})") from e
    if 8 + n + end != size:
        raise WeightsError(
            f"{path} is truncated or corrupted: its tensors need {8 + n + end} bytes, it has {size}"
        )
    return header


def header_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file ({} when it has none)."""
    return dict(read_header(path).get("__metadata__") or {})


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Names and shapes of the tensors of a safetensors file, from its header."""
    return {k: list(t["shape"]) for k, t in read_header(path).items() if k != "__metadata__"}
