"""`sarmae segment`: class-map COGs (e.g. water) from SAR scenes."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    BatchSize,
    CreationOption,
    DeviceOpt,
    JsonSummary,
    Overlap,
    Overwrite,
    Quiet,
    Tile,
    WeightsPath,
    not_implemented,
)


def segment(
    inputs: Annotated[list[Path], typer.Argument(help="GeoTIFF SAR scenes.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Class-map COG (uint8).")],
    task: Annotated[
        str | None, typer.Option("--task", help="Shipped task weights to use, e.g. water.")
    ] = None,
    probabilities: Annotated[
        Path | None, typer.Option("--probabilities", help="Also write class probabilities.")
    ] = None,
    vector: Annotated[
        Path | None, typer.Option("--vector", help="Also write class polygons (.gpkg/.geojson).")
    ] = None,
    preview: Annotated[Path | None, typer.Option("--preview", help="Also write a quicklook PNG.")] = None,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 8,
    tile: Tile = None,
    overlap: Overlap = None,
    co: CreationOption = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Segment SAR scenes with sliding-window inference.

    $ sarmae segment --task water scene.tif -o water.tif --preview water.png
    """
    not_implemented("segment", 4)
