"""`sarmae segment`: class-map COGs (e.g. water) from SAR scenes."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    Bands,
    BatchSize,
    CreationOption,
    DeviceOpt,
    Gsd,
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
from sarmae_cli.data.geometry import parse_gsd
from sarmae_cli.data.stack import stack_inputs
from sarmae_cli.errors import UsageError
from sarmae_cli.outputs import parse_creation_options, plan_outputs
from sarmae_cli.paths import expand_paths
from sarmae_cli.shipped import resolve_weights


def segment(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="GeoTIFF SAR scenes, folders of them or globs; files of one scene per polarisation "
            "(x_VV.tif x_VH.tif) are one scene."
        ),
    ],
    output: Annotated[Path | None, output_option("Class-map COG (uint8); '{stem}' = input name.")] = None,
    output_dir: OutputDir = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="Which shipped segmentation weights to use (without -w): water."),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="model: the weights (default); threshold: the physical water baseline, no weights "
            "(one scene threshold of the speckle-filtered dB from its bimodal tiles; dark = water); "
            "hybrid: that threshold guided by the water weights (tiles where the model sees land "
            "and water; water only near the model's water).",
        ),
    ] = "model",
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
    gsd: Gsd = "auto",
    co: CreationOption = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Segment SAR scenes with sliding-window inference.

    Writes a uint8 class-map COG (class indexes of the weights' class list, nodata 255, with a
    colormap) in the scene's CRS and grid.

    $ sarmae segment --task water scene.tif -o water.tif --preview water.png

    $ sarmae segment --task water scene_VV.tif scene_VH.tif -o water.tif

    $ sarmae segment -w my_water.safetensors scenes/ --output-dir out/ --vector 'out/{stem}.gpkg'

    $ sarmae segment --task water --method threshold scene.tif -o water_threshold.tif

    $ sarmae segment --task water --method hybrid scene.tif -o water_hybrid.tif
    """
    if output is None and output_dir is None:
        raise UsageError("give the output with -o FILE (or --output-dir DIR for several inputs)")
    if method not in ("model", "threshold", "hybrid"):
        raise UsageError(f"unknown --method {method!r}; use model, threshold or hybrid")
    if method == "threshold" and weights is not None:
        raise UsageError("--method threshold uses no weights: drop -w/--weights, or use --method model")
    if method != "model" and task not in (None, "water"):
        raise UsageError(f"--method {method} maps water only; use --task water, not {task!r}")
    if method == "hybrid" and weights is None:
        task = "water"
    target_gsd = parse_gsd(gsd)
    paths = stack_inputs(expand_paths(inputs))  # every check of the command line before the library loads
    specs = [
        ("-o", output, output_dir, "geotiff", "a class-map GeoTIFF"),
        ("--probabilities", probabilities, None, "geotiff", "a probabilities GeoTIFF"),
        ("--vector", vector, None, "vector", "a GeoPackage or GeoJSON of class polygons"),
        ("--preview", preview, None, "png", "a PNG quicklook"),
    ]
    planned = plan_outputs(paths, specs, overwrite)
    weights_file = resolve_weights("segment", weights, task) if method != "threshold" else None
    creation = parse_creation_options(co)

    from sarmae_cli.data.vrt import check_stacks
    from sarmae_cli.infer.api import Options, segment_scene
    from sarmae_cli.infer.batch import run_many, shard
    from sarmae_cli.infer.models import Models
    from sarmae_cli.infer.threshold import hybrid_scene, hybrid_water_class, threshold_scene

    mine = set(shard([p for p, _ in planned]))
    jobs = [(p, outs) for p, outs in planned if p in mine]
    check_stacks([p for p, _ in jobs])  # files of one scene on one grid, before any work
    models = Models("segment", weights_file, device, threads) if weights_file else None
    if method == "hybrid":
        hybrid_water_class(models)  # a usage error before any work when the weights map no water
    opts = Options(batch_size, tile, overlap, bands, nodata, input_scale, creation, overwrite, gsd=target_gsd)
    outputs = dict(jobs)
    with Reporter(quiet) as rep:

        def run(src: Path) -> dict:
            out, probs, vec, png = outputs[src]
            opts.progress = rep.progress(src.name)
            if models is None:  # --method threshold
                return threshold_scene(src, out, opts, probs, vec, png)
            if method == "hybrid":
                return hybrid_scene(src, out, models, opts, probs, vec, png)
            return segment_scene(src, out, models, opts, probs, vec, png)

        results = run_many([(p, [o for o in outs if o]) for p, outs in jobs], run, overwrite)
    rep.results("segment", results, json_summary)
