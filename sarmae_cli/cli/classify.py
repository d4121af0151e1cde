"""`sarmae classify`: top-k classes of SAR chips, or a per-tile class map of a scene."""

import csv
import io
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
from sarmae_cli.outputs import (
    atomic_output,
    check_extension,
    check_output,
    parse_creation_options,
    plan_outputs,
)
from sarmae_cli.paths import expand_paths, list_images
from sarmae_cli.shipped import resolve_weights

FORMATS = ("csv", "jsonl")
#: What `-o` may name: the chips' classes as CSV or JSON lines, or a scene's per-tile class map.
OUTPUT_KINDS = ("csv", "jsonl", "geotiff")


def format_rows(rows: list[dict], fmt: str, top_k: int) -> str:
    """CSV (header `path,class,probability,class_2,probability_2,...`) or JSON lines."""
    if fmt == "jsonl":
        return "".join(
            json.dumps(
                {"path": r["path"], "top": [{"class": c, "probability": round(p, 6)} for c, p in r["top"]]}
            )
            + "\n"
            for r in rows
        )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    k = max((len(r["top"]) for r in rows), default=top_k)
    header = ["path", "class", "probability"]
    for i in range(2, k + 1):
        header += [f"class_{i}", f"probability_{i}"]
    writer.writerow(header)
    for r in rows:
        cells = [r["path"]]
        for c, p in r["top"]:
            cells += [c, f"{p:.6f}"]
        writer.writerow(cells)
    return buf.getvalue()


def classify(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Chips, folders of chips, or scenes (with -o X.tif; x_VV.tif x_VH.tif are one scene)."
        ),
    ],
    output: Annotated[
        Path | None,
        output_option("CSV/JSONL file (default: stdout), or a .tif for a per-tile class map."),
    ] = None,
    output_dir: OutputDir = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: from -o, else csv).")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Classes reported per chip.")] = 3,
    weights: WeightsPath = None,
    device: DeviceOpt = "auto",
    threads: Threads = None,
    batch_size: BatchSize = 64,
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
    """Classify SAR chips (CSV to stdout by default) with a fine-tuned classifier.

    Each chip is resized to the weights' input size and gets one row with its top-k classes.
    With -o FILE.tif (or --output-dir), each scene gets a per-tile class map instead: one pixel
    per tile, georeferenced, uint8 with nodata 255.

    $ sarmae classify chips/ > classes.csv

    $ sarmae classify scene.tif -o classes.tif --tile 128
    """
    kind = None if output is None else check_extension(output, OUTPUT_KINDS, "-o", "classify's output")
    target_gsd = parse_gsd(gsd)
    scene_mode = output_dir is not None or kind == "geotiff"
    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; use csv or jsonl")
    if scene_mode:
        if fmt is not None:
            raise UsageError("--format is for the classes of chips; a scene's class map is a GeoTIFF")
        what = "a per-tile class-map GeoTIFF"
        scenes = stack_inputs(expand_paths(inputs))
        planned = plan_outputs(scenes, [("-o", output, output_dir, "geotiff", what)], overwrite)
    else:
        fmt = fmt or kind or "csv"
        if output is not None:
            check_extension(output, fmt, "-o", f"--format {fmt} output")
        if json_summary and output is None:
            raise UsageError("--json needs -o FILE: the results themselves go to stdout otherwise")
        chip_files = list_images(inputs)
        if output is not None:  # before the work; never over a chip
            check_output(output, overwrite, inputs=chip_files)
    weights_file = resolve_weights("classify", weights, None)
    creation = parse_creation_options(co)

    from sarmae_cli.data.vrt import check_stacks
    from sarmae_cli.infer.api import Options, classify_chips, classify_scene, list_chips
    from sarmae_cli.infer.batch import run_many, shard
    from sarmae_cli.infer.models import Models

    models = Models("classify", weights_file, device, threads)
    opts = Options(batch_size, tile, overlap, bands, nodata, input_scale, creation, overwrite, gsd=target_gsd)
    if scene_mode:
        mine = set(shard([p for p, _ in planned]))
        jobs = {p: outs[0] for p, outs in planned if p in mine}
        check_stacks(list(jobs))  # files of one scene on one grid, before any work
        with Reporter(quiet) as rep:

            def run(src: Path) -> dict:
                opts.progress = rep.progress(src.name)
                return classify_scene(src, jobs[src], models, opts)

            results = run_many([(p, [o]) for p, o in jobs.items()], run, overwrite)
        rep.results("classify", results, json_summary)
        return
    paths = list_chips(chip_files)
    with Reporter(quiet) as rep:
        opts.progress = rep.progress("chips")
        rows, failures = classify_chips(paths, models, opts, top_k)
    if not rows:
        raise no_chip_done("classified", failures)
    for f in failures:
        rep.warn(f"skipped {f['input']}: {f['error']}")
    text = format_rows(rows, fmt, top_k)
    if output is None:
        typer.echo(text, nl=False)
    else:
        with atomic_output(output, overwrite) as tmp:
            tmp.write_text(text)
        rep.note(f"wrote {output} ({len(rows)} chips)")
    if json_summary:
        summary = {"command": "classify", "inputs": len(paths), "classified": len(rows), "failed": failures}
        typer.echo(json.dumps({**summary, "outputs": [str(output)], "device": str(models.device)}, indent=2))
    if failures:
        raise some_chips_failed(failures, len(paths))
