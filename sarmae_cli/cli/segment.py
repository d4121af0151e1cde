"""`sarmae segment`: class-map COGs (e.g. water) from SAR scenes."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    Bands,
    BatchSize,
    CreationOption,
    DeviceOpt,
    InputScale,
    JsonSummary,
    Nodata,
    OutputDir,
    Overlap,
    Overwrite,
    Quiet,
    Reporter,
    Threads,
    Tile,
    WeightsPath,
    output_option,
)
from sarmae_cli.errors import UsageError


def segment(
    inputs: Annotated[list[str], typer.Argument(help="GeoTIFF SAR scenes, folders of them or globs.")],
    output: Annotated[Path | None, output_option("Class-map COG (uint8); '{stem}' = input name.")] = None,
    output_dir: OutputDir = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Which shipped segmentation weights to use (without -w): water."),
    ] = None,
    probabilities: Annotated[
        Path | None, typer.Option("--probabilities", help="Also write class probabilities (float32 COG).")
    ] = None,
    vector: Annotated[
        Path | None, typer.Option("--vector", help="Also write class polygons (.gpkg/.geojson).")
    ] = None,
    preview: Annotated[Path | None, typer.Option("--preview", help="Also write a quicklook PNG.")] = None,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    threads: Threads = None,
    batch_size: BatchSize = 8,
    tile: Tile = None,
    overlap: Overlap = None,
    bands: Bands = None,
    nodata: Nodata = None,
    input_scale: InputScale = "auto",
    co: CreationOption = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Segment SAR scenes with sliding-window inference.

    Writes a uint8 class-map COG (class indexes of the weights' class list, nodata 255, with a
    colormap) in the scene's CRS and grid.

    $ sarmae segment --task water scene.tif -o water.tif --preview water.png

    $ sarmae segment -w my_water.safetensors scenes/ --output-dir out/ --vector 'out/{stem}.gpkg'
    """
    from sarmae_cli.infer.api import Options, segment_scene
    from sarmae_cli.infer.batch import expand_inputs, output_for, run_many, shard
    from sarmae_cli.infer.models import Models, resolve_weights
    from sarmae_cli.infer.writers import parse_creation_options

    if output is None and output_dir is None:
        raise UsageError("give the output with -o FILE (or --output-dir DIR for several inputs)")
    paths = shard(expand_inputs(inputs))
    many = len(paths) > 1
    jobs = []
    for p in paths:
        outs = [
            output_for(p, output, output_dir, ".tif", many),
            output_for(p, probabilities, None, "", many, "--probabilities"),
            output_for(p, vector, None, "", many, "--vector"),
            output_for(p, preview, None, "", many, "--preview"),
        ]
        jobs.append((p, outs))
    models = Models("segment", resolve_weights("segment", weights, task), device, threads)
    creation = parse_creation_options(co)
    opts = Options(batch_size, tile, overlap, bands, nodata, input_scale, creation, overwrite)
    outputs = dict(jobs)
    with Reporter(quiet) as rep:

        def run(src: Path) -> dict:
            out, probs, vec, png = outputs[src]
            opts.progress = rep.progress(src.name)
            return segment_scene(src, out, models, opts, probs, vec, png)

        results = run_many([(p, [o for o in outs if o]) for p, outs in jobs], run, overwrite)
    rep.results("segment", results, json_summary)
