"""Which weights a command uses, and the backends built from them (cached per band count)."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch

from sarmae_cli.errors import UsageError, WeightsError, WrongWeightsError
from sarmae_cli.export.ort_backend import OnnxBackend
from sarmae_cli.infer.backend import Backend, TorchBackend
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    load_encoder,
    read_meta,
    read_onnx_meta,
)
from sarmae_cli.model.factory import EncoderModel, load_model
from sarmae_cli.model.runtime import resolve_device
from sarmae_cli.shipped import COMMAND_TASKS, RESTORE_HINT, missing_shipped, shipped_task


@contextlib.contextmanager
def shipped_errors(path: Path) -> Iterator[None]:
    """Re-raise any `WeightsError` about a shipped weights file (missing, unreadable, truncated,
    checksum mismatch, wrong content) as one that names the file and says how to restore it.
    Errors about other files pass through unchanged, as does a shipped file of the wrong task
    for the command (`WrongWeightsError`: the file is fine, the command line chose it)."""
    try:
        yield
    except WrongWeightsError:
        raise
    except WeightsError as e:
        task = shipped_task(path)
        if task is None:
            raise
        if not Path(path).is_file():
            raise missing_shipped(task, path) from e
        what = re.split(r"; (?![^(]*\))", str(e))[0]  # the problem, without the library's own advice
        what = what if str(path) in what else f"{path}: {what}"
        raise WeightsError(
            f"shipped weights for task {task!r} are damaged: {what}; {RESTORE_HINT}, or pass --weights FILE"
        ) from e


def check_task(command: str, path: Path, meta: WeightsMeta) -> None:
    """A weights file of the wrong task for the command is an error that says what it holds."""
    allowed = COMMAND_TASKS[command]
    if meta.task not in allowed:
        raise WrongWeightsError(
            f"{path} holds {meta.task} weights but `sarmae {command}` needs {' or '.join(allowed)} "
            f"weights; use a file made by `sarmae finetune --task {allowed[0]}`"
        )
    if command == "segment" and not meta.class_names and not (meta.head or {}).get("num_classes"):
        raise WeightsError(f"{path} has no class list in its metadata")


class Models:
    """Loads the weights once per input band count and wraps them as backends. Problems with
    shipped weights files are reported with the way to restore them (`shipped_errors`).

    `output` is the `TorchBackend` output: "probabilities" for segment/classify, "pooled" or
    "patch_features" for embed, "detections" for detect."""

    def __init__(self, command: str, path: Path, device: str = "auto", threads: int | None = None) -> None:
        self.command, self.path = command, Path(path)
        self.onnx = self.path.suffix.lower() == ".onnx"  # an exported model: onnxruntime backend
        self.threads = threads
        with shipped_errors(self.path):
            self.meta = read_onnx_meta(self.path)[0] if self.onnx else read_meta(self.path)
            check_task(command, self.path, self.meta)
        local_rank = os.environ.get("LOCAL_RANK")
        if device == "auto" and local_rank is not None and torch.cuda.is_available():
            device = f"cuda:{int(local_rank) % torch.cuda.device_count()}"  # one GPU per torchrun rank
        self.device = resolve_device(device)
        self._cache: dict[tuple[int, str], Backend] = {}

    @property
    def class_names(self) -> list[str]:
        n = int((self.meta.head or {}).get("num_classes", len(self.meta.class_names or [])))
        names = list(self.meta.class_names or [])
        return names + [f"class {i}" for i in range(len(names), n)]

    def use(self, backend: Backend, output: str = "probabilities") -> None:
        """Run `output` for `backend.in_chans` bands with another backend (e.g. onnxruntime)."""
        self._cache[(backend.in_chans, output)] = backend

    @property
    def fixed_tile(self) -> int | None:
        """The tile size an exported ONNX graph was built for (None: any multiple of the patch)."""
        return int(self.meta.tile["size"]) if self.onnx else None

    def backend(self, in_chans: int, output: str = "probabilities") -> Backend:
        key = (in_chans, output)
        if key not in self._cache and self.onnx:
            if in_chans != self.meta.encoder_config.in_chans:
                raise UsageError(
                    f"{self.path} takes {self.meta.encoder_config.in_chans} band(s) but the input gives "
                    f"{in_chans}; select bands with --bands or export weights made for {in_chans}"
                )
            device = "cpu" if self.device.type == "cpu" else str(self.device)
            self._cache[key] = OnnxBackend(self.path, output, device, self.threads)
        if key not in self._cache:
            adapt = None if in_chans == self.meta.encoder_config.in_chans else in_chans
            with shipped_errors(self.path):
                if output in ("probabilities", "detections"):
                    model, _ = load_model(self.path, in_chans=adapt)
                else:
                    encoder, _ = load_encoder(self.path, in_chans=adapt)
                    model = EncoderModel(encoder)
            self._cache[key] = TorchBackend(model, self.device, output)
        return self._cache[key]
