"""The options of the commands, each name declared once (one name per concept: `--workers`,
`--chip-size`, `--fit`, `--input-scale`... mean the same in every command), their choices,
and the progress/summary `Reporter`.

Light on purpose: `sarmae --help` imports this and every command module, so nothing here
(or at the top of a command module) may import torch, timm, rasterio or onnx; commands
import the library inside their function."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sarmae_cli.errors import SarmaeError


class ModelPreset(StrEnum):
    tiny = "tiny"
    small = "small"
    base = "base"
    large = "large"


class Fit(StrEnum):
    resize = "resize"
    center_crop = "center_crop"


def output_option(help: str) -> Any:
    """`--output/-o`, the one name of every command's output; what it writes is the command's
    own help."""
    return typer.Option("--output", "-o", help=help)


# ----------------------------------------------------------------- every command that has it

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
JsonSummary = Annotated[
    bool, typer.Option("--json", help="Print the result (summary or metrics) as JSON on stdout.")
]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="auto (CUDA when there is one, the default), cpu, cuda or cuda:N."),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        "-b",
        min=1,
        help="Samples per batch: tiles or chips per forward pass; in training, per optimizer step "
        "and process (lowered to the training set when it is smaller).",
    ),
]
InputScale = Annotated[
    str | None,
    typer.Option(
        "--input-scale",
        help="Input radiometry: auto (the default: detected, and said what it chose), uint8, uint16, "
        "db, power or amplitude.",
    ),
]

Gsd = Annotated[
    str,
    typer.Option(
        "--gsd",
        help="Pixel size the model runs at: auto (the one the weights record; for a recorded range, "
        "native inside it and the nearer end outside it; native when they record none), native, or "
        "metres (e.g. 10). Outputs stay on the input grid.",
    ),
]

# ----------------------------------------------------------------- inference

WeightsPath = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        "-w",
        help="Weights (.safetensors) or an exported model (.onnx); default: the shipped ones.",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="onnxruntime threads for .onnx weights (default: all cores)."),
]
Tile = Annotated[int | None, typer.Option("--tile", min=1, help="Tile size in pixels.")]
Overlap = Annotated[int | None, typer.Option("--overlap", min=0, help="Overlap between tiles in pixels.")]
CreationOption = Annotated[
    list[str] | None,
    typer.Option("--co", metavar="NAME=VALUE", help="GDAL creation option (repeatable)."),
]
OutputDir = Annotated[
    Path | None,
    typer.Option("--output-dir", help="Folder for the outputs of many inputs (named after each input)."),
]
Bands = Annotated[
    str | None,
    typer.Option("--bands", help="Input bands by number or description, e.g. 1,2 or VV,VH (default: all)."),
]
Nodata = Annotated[
    float | None, typer.Option("--nodata", help="Input nodata value (default: the file's nodata or mask).")
]

# ----------------------------------------------------------------- detection

MinScore = Annotated[
    float | None,
    typer.Option(
        "--min-score",
        min=0.0,
        max=1.0,
        help="Keep objects scoring at least this (default: the cut stored in the weights, else 0.5).",
    ),
]
MaxDetections = Annotated[
    int | None,
    typer.Option("--max-detections", min=1, help="Keep at most this many objects per scene, best first."),
]
NmsIou = Annotated[
    float | None,
    typer.Option(
        "--nms-iou",
        min=0.0,
        max=1.0,
        help="Boxes of one class overlapping more than this IoU are one object (default: the weights').",
    ),
]

# ----------------------------------------------------------------- training and evaluation

ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", help="YAML or TOML config file; --set and the other options override it."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set one config key (repeatable): KEY a dotted path such as augment.speckle or "
        "loop.max_steps, VALUE read as YAML (0.5, true, [0.85,1.0]). Overrides --config; the "
        "other options override it.",
    ),
]
Init = Annotated[
    str | None,
    typer.Option(
        "--init",
        help="Weights to start from (.safetensors); finetune also takes 'default' (the shipped "
        "encoder, its default) or 'random' (a ViT-Base, or --set model.preset=NAME).",
    ),
]
Model = Annotated[ModelPreset | None, typer.Option("--model", help="Encoder size (default tiny).")]
Epochs = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Passes over the training data (default: the recipe's).")
]
MaxSteps = Annotated[int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")]
Lr = Annotated[
    float | None,
    typer.Option(
        "--lr", min=0.0, help="Peak learning rate, reached after the warm-up (default: the recipe's)."
    ),
]
ChipSize = Annotated[
    int | None,
    typer.Option(
        "--chip-size",
        min=16,
        help="Model input size in pixels (default: the encoder's; pretraining 224).",
    ),
]
FitOpt = Annotated[
    Fit | None,
    typer.Option(
        "--fit",
        help="Chips of another size: resize them whole (default) or center_crop their centre "
        "--chip-size pixels at native resolution.",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=0, help="Data-loading worker processes (default 0: the main process)."),
]
Seed = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
Seeds = Annotated[
    str, typer.Option("--seeds", help="Comma-separated seeds, one run each (mean ± std), e.g. 0,1,2.")
]
Resume = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
]
CkptEvery = Annotated[
    int | None,
    typer.Option("--ckpt-every", min=0, help="Steps between checkpoints (default 500; 0: epoch ends only)."),
]
CkptMinutes = Annotated[
    float | None,
    typer.Option(
        "--ckpt-minutes",
        min=0.0,
        help="Also write a checkpoint when this many minutes passed since the last (default 10; 0: off).",
    ),
]
ValFraction = Annotated[
    float | None,
    typer.Option(
        "--val-fraction",
        min=0.0,
        max=0.9,
        help="Share of each class held out by the stored split seed: finetune validates on it "
        "without --val (default 0.2); evaluate scores only that share.",
    ),
]


class Reporter:
    """Rich progress bars (only when stderr is a terminal) and notes on stderr (silent with
    -q), the summary table, and the `--json` summary on stdout."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.console = Console(stderr=True)
        self._progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if not self.quiet and self.console.is_terminal:  # a piped stderr gets no bar (nor its blank line)
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def progress(self, label: str) -> Callable[[int, int], None] | None:
        """A (done, total) callback for one input, or None when quiet."""
        if self._progress is None:
            return None
        task = self._progress.add_task(label, total=None)
        bar = self._progress

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return update

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        typer.echo(f"Warning: {text}", err=True)

    def results(self, command: str, results: list[dict[str, Any]], json_summary: bool) -> None:
        """Notes and warnings of each input, a summary (table for several inputs) and, with
        `json_summary`, the JSON document on stdout. Raises when any input failed."""
        for r in results:
            for n in r.get("notes", []):
                self.note(f"{Path(r['input']).name}: {n}")
            for w in r.get("warnings", []):
                self.warn(w)
        if len(results) == 1 and results[0]["status"] == "done":
            r = results[0]
            self.note(
                f"wrote {', '.join(r['outputs'])} ({r['tiles']} tiles, {r['tiles_skipped']} empty, "
                f"{r['seconds']:.1f} s on {r['device']})"
            )
        elif results:
            table = Table(title=f"sarmae {command}")
            for col in ("input", "status", "tiles", "seconds", "detail"):
                table.add_column(col)
            for r in results:
                detail = r.get("error") or r.get("reason") or ", ".join(r.get("outputs", []))
                table.add_row(
                    Path(r["input"]).name,
                    r["status"],
                    str(r.get("tiles", "")),
                    str(r.get("seconds", "")),
                    detail,
                )
            if not self.quiet:
                self.console.print(table)
        if json_summary:
            counts = {k: sum(r["status"] == k for r in results) for k in ("done", "skipped", "failed")}
            typer.echo(json.dumps({"command": command, **counts, "results": results}, indent=2, default=str))
        failed = [r for r in results if r["status"] == "failed"]
        if failed:
            raise SarmaeError(f"{len(failed)} of {len(results)} input(s) failed: first: {failed[0]['error']}")


def no_chip_done(verb: str, failures: list[dict[str, Any]]) -> SarmaeError:
    """One error line for a chip run in which every chip failed (no per-chip warnings first)."""
    first = failures[0]["error"]
    if len(failures) == 1:
        return SarmaeError(first)
    return SarmaeError(f"no chip could be {verb}: all {len(failures)} failed; first: {first}")


def some_chips_failed(failures: list[dict[str, Any]], total: int) -> SarmaeError:
    """The closing error of a chip run in which some chips failed (the others were written)."""
    return SarmaeError(f"{len(failures)} of {total} chip(s) failed: first: {failures[0]['error']}")
