"""`sarmae embed`: per-tile (GeoParquet) and per-patch (GeoTIFF) embeddings of SAR scenes."""

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


def embed(
    inputs: Annotated[list[Path], typer.Argument(help="GeoTIFF scenes or a folder of chips.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="GeoParquet of tile embeddings.")],
    dense: Annotated[
        Path | None, typer.Option("--dense", help="Also write per-patch features as a GeoTIFF.")
    ] = None,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSize = 16,
    tile: Tile = None,
    overlap: Overlap = None,
    co: CreationOption = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Embed SAR scenes with the SARMAE encoder.

    $ sarmae embed scene.tif -o emb.parquet --dense emb.tif
    """
    not_implemented("embed", 4)
