"""`sarmae classify`: top-k classes of SAR chips, or a per-tile class map of a scene."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    BatchSize,
    DeviceOpt,
    JsonSummary,
    Overwrite,
    Quiet,
    WeightsPath,
    not_implemented,
)


def classify(
    inputs: Annotated[list[Path], typer.Argument(help="Chips, a folder of chips, or a scene.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="CSV/JSONL file or class-map GeoTIFF.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes reported per chip.")] = 3,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 64,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Classify SAR chips (CSV to stdout by default) with a fine-tuned classifier.

    $ sarmae classify chips/ > classes.csv
    """
    not_implemented("classify", 4)
