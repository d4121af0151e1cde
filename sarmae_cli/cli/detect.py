"""`sarmae detect`: georeferenced boxes of objects (ships) in SAR scenes."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    Bands,
    BatchSize,
    DeviceOpt,
    Gsd,
    InputScale,
    JsonSummary,
    MaxDetections,
    MinScore,
    NmsIou,
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
from sarmae_cli.data.geometry import parse_gsd
from sarmae_cli.errors import UsageError
from sarmae_cli.outputs import plan_outputs
from sarmae_cli.paths import expand_paths
from sarmae_cli.shipped import resolve_weights


def detect(
    inputs: Annotated[list[str], typer.Argument(help="GeoTIFF SAR scenes, folders of them or globs.")],
    output: Annotated[
        Path | None,
        output_option("Detections: GeoPackage (scene CRS) or GeoJSON (EPSG:4326); '{stem}' = input name."),
    ] = None,
    output_dir: OutputDir = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task", help="Which shipped detection weights to use (without -w): ships (the default)."
        ),
    ] = None,
    points: Annotated[
        Path | None, typer.Option("--points", help="Also write one point per object (.csv: lon, lat, ...).")
    ] = None,
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Also write a quicklook PNG with the boxes.")
    ] = None,
    min_score: MinScore = None,
    max_detections: MaxDetections = None,
    nms_iou: NmsIou = None,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    threads: Threads = None,
    batch_size: BatchSize = 8,
    tile: Tile = None,
    overlap: Overlap = None,
    bands: Bands = None,
    nodata: Nodata = None,
    input_scale: InputScale = "auto",
    gsd: Gsd = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Detect objects (ships) in SAR scenes with sliding-window inference.

    Writes one box polygon per object with its class, score, length and width in metres,
    centre lon/lat and pixel box. Tiles overlap by at least the longest object (default from
    the weights), so every object is seen whole by one tile; duplicates across tiles are
    removed.

    $ sarmae detect --task ships scene.tif -o ships.gpkg --points ships.csv --preview ships.png

    $ sarmae detect -w ships.onnx scenes/ --output-dir out/ --min-score 0.6
    """
    if output is None and output_dir is None:
        raise UsageError("give the output with -o FILE (or --output-dir DIR for several inputs)")
    target_gsd = parse_gsd(gsd)
    paths = expand_paths(inputs)  # every check of the command line before the library loads
    specs = [
        ("-o", output, output_dir, "vector", "a GeoPackage or GeoJSON of detections"),
        ("--points", points, None, "csv", "a CSV of detection points"),
        ("--preview", preview, None, "png", "a PNG quicklook"),
    ]
    planned = plan_outputs(paths, specs, overwrite)
    weights_file = resolve_weights("detect", weights, task)

    from sarmae_cli.infer.api import Options
    from sarmae_cli.infer.batch import run_many, shard
    from sarmae_cli.infer.detect import DetectOptions, detect_scene
    from sarmae_cli.infer.models import Models

    mine = set(shard([p for p, _ in planned]))
    jobs = [(p, outs) for p, outs in planned if p in mine]
    models = Models("detect", weights_file, device, threads)
    opts = Options(batch_size, tile, overlap, bands, nodata, input_scale, overwrite=overwrite, gsd=target_gsd)
    dopts = DetectOptions(min_score, max_detections, nms_iou)
    outputs = dict(jobs)
    with Reporter(quiet) as rep:

        def run(src: Path) -> dict:
            out, pts, png = outputs[src]
            opts.progress = rep.progress(src.name)
            return detect_scene(src, out, models, opts, dopts, pts, png)

        results = run_many([(p, [o for o in outs if o]) for p, outs in jobs], run, overwrite)
    rep.results("detect", results, json_summary)
