"""Options and choices shared by several commands, and the not-yet-implemented guard."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.errors import UsageError


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
    typer.Option("--weights", "-w", help="Weights file (.safetensors); default: the shipped ones."),
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


class NotImplementedYet(UsageError):
    """A command whose capability belongs to a later issue."""


def not_implemented(command: str, issue: int) -> None:
    """Refuse to run a command that is not built yet (exit 2, one line, no fake output)."""
    raise NotImplementedYet(f"sarmae {command}: not implemented yet (planned in issue #{issue})")
