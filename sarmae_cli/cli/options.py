"""Options and choices shared by several commands, and the not-yet-implemented guard."""

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


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
JsonSummary = Annotated[bool, typer.Option("--json", help="Print a machine-readable JSON summary on stdout.")]
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
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Tiles per batch.")]
Tile = Annotated[int | None, typer.Option("--tile", min=1, help="Tile size in pixels.")]
Overlap = Annotated[int | None, typer.Option("--overlap", min=0, help="Overlap between tiles in pixels.")]
CreationOption = Annotated[
    list[str] | None,
    typer.Option("--co", metavar="NAME=VALUE", help="GDAL creation option (repeatable)."),
]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML or TOML config file; flags override it.")
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
InputScale = Annotated[
    str,
    typer.Option(
        "--input-scale",
        help="Input radiometry: auto, uint8, uint16, db, power or amplitude (auto says what it chose).",
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
