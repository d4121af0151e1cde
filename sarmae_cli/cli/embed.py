"""`sarmae embed`: per-tile (GeoParquet) and per-patch (GeoTIFF) embeddings of SAR scenes."""

import json
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
    no_chip_done,
    output_option,
    some_chips_failed,
)
from sarmae_cli.data.geometry import parse_gsd
from sarmae_cli.data.stack import stack_inputs
from sarmae_cli.errors import UsageError
from sarmae_cli.outputs import check_extension, check_output, parse_creation_options, plan_outputs
from sarmae_cli.paths import expand_paths, list_images
from sarmae_cli.shipped import resolve_weights


def embed(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="GeoTIFF scenes (files, globs; x_VV.tif x_VH.tif are one scene) or a folder of chips."
        ),
    ],
    output: Annotated[
        Path | None, output_option("GeoParquet of tile embeddings; '{stem}' = input name.")
    ] = None,
    output_dir: OutputDir = None,
    dense: Annotated[
        Path | None, typer.Option("--dense", help="Also write per-patch features as a GeoTIFF COG.")
    ] = None,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    threads: Threads = None,
    batch_size: BatchSize = 16,
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
    """Embed SAR scenes with the SARMAE encoder.

    A scene gives one pooled embedding per tile (default: the weights' tile size, no overlap)
    as GeoParquet rows with the tile's footprint in the scene CRS; a folder of chips gives one
    row per chip file.

    $ sarmae embed scene.tif -o emb.parquet --dense emb.tif

    $ sarmae embed chips/ -o chips.parquet
    """
    if output is None and output_dir is None:
        raise UsageError("give the output with -o FILE (or --output-dir DIR for several inputs)")
    target_gsd = parse_gsd(gsd)
    chips = len(inputs) == 1 and Path(inputs[0]).is_dir()
    if chips:  # a folder of chips: one GeoParquet
        if output is None or dense is not None:
            raise UsageError("a folder of chips gives one GeoParquet: use -o FILE (no --dense)")
        check_extension(output, "parquet", "-o", "a GeoParquet of chip embeddings")
        chip_files = list_images(inputs)
        check_output(output, overwrite, inputs=chip_files)
    else:
        specs = [
            ("-o", output, output_dir, "parquet", "a GeoParquet of tile embeddings"),
            ("--dense", dense, None, "geotiff", "a GeoTIFF of patch features"),
        ]
        planned = plan_outputs(stack_inputs(expand_paths(inputs)), specs, overwrite)
    weights_file = resolve_weights("embed", weights, None)
    creation = parse_creation_options(co)

    from sarmae_cli.data.vrt import check_stacks
    from sarmae_cli.infer.api import Options, embed_chips, embed_scene, list_chips
    from sarmae_cli.infer.batch import run_many, shard
    from sarmae_cli.infer.models import Models

    models = Models("embed", weights_file, device, threads)
    opts = Options(batch_size, tile, overlap, bands, nodata, input_scale, creation, overwrite, gsd=target_gsd)
    if chips:
        with Reporter(quiet) as rep:
            opts.progress = rep.progress(Path(inputs[0]).name)
            summary = embed_chips(list_chips(inputs), output, models, opts)
        if not summary["embedded"]:
            raise no_chip_done("embedded", summary["failed"])
        for f in summary["failed"]:
            rep.warn(f"skipped {f['input']}: {f['error']}")
        if json_summary:
            typer.echo(json.dumps({"command": "embed", **summary}, indent=2, default=str))
        rep.note(f"wrote {output} ({summary['embedded']} of {summary['inputs']} chips)")
        if summary["failed"]:  # the file holds the others; the exit status says not all went well
            raise some_chips_failed(summary["failed"], summary["inputs"])
        return
    mine = set(shard([p for p, _ in planned]))
    jobs = {p: outs for p, outs in planned if p in mine}
    check_stacks(list(jobs))  # files of one scene on one grid, before any work
    with Reporter(quiet) as rep:

        def run(src: Path) -> dict:
            out, dense_out = jobs[src]
            opts.progress = rep.progress(src.name)
            return embed_scene(src, out, models, opts, dense_out)

        results = run_many([(p, [o for o in outs if o]) for p, outs in jobs.items()], run, overwrite)
    rep.results("embed", results, json_summary)
