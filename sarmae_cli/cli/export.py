"""`sarmae export`: ONNX export with embedded metadata and parity checks."""

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sarmae_cli.cli.options import JsonSummary, Overwrite, Quiet, output_option
from sarmae_cli.errors import UsageError, WeightsNotFoundError
from sarmae_cli.outputs import check_extension, check_output
from sarmae_cli.paths import require_path


def export(
    weights: Annotated[
        Path,
        typer.Argument(help="Weights to export (.safetensors): encoder, classifier, segmenter or detector."),
    ],
    output: Annotated[Path, output_option("ONNX file to write.")],
    tile: Annotated[
        int | None,
        typer.Option("--tile", min=1, help="Fixed tile size of the graph (default: the weights' tile)."),
    ] = None,
    opset: Annotated[int, typer.Option("--opset", min=17, help="ONNX opset.")] = 18,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Store weights in float16 (I/O stays float32).")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="Dynamic int8 quantization of the weights (onnxruntime).")
    ] = False,
    holdout: Annotated[
        Path | None,
        typer.Option("--holdout", help="Folder of held-out chips to measure the fp16/int8 accuracy change."),
    ] = None,
    holdout_limit: Annotated[
        int, typer.Option("--holdout-limit", min=1, help="Chips used from --holdout.")
    ] = 200,
    simplify: Annotated[
        bool, typer.Option("--simplify", help="Simplify the graph with onnx-simplifier (sarmae[simplify]).")
    ] = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_summary: JsonSummary = False,
) -> None:
    """Export weights to ONNX (dynamic batch, fixed tile) and check parity with onnxruntime.

    $ sarmae export water.safetensors -o water.onnx --int8 --holdout ombria_s1/train/AFTER
    """
    require_path(weights, "weights file", WeightsNotFoundError)
    if holdout is not None:
        require_path(holdout, "hold-out folder")
    if fp16 and int8:
        raise UsageError("choose one of --fp16 and --int8")
    check_extension(output, "onnx", "-o")
    check_output(output, overwrite, inputs=[weights])

    from sarmae_cli.export.onnx_export import export_onnx

    console = Console(stderr=True, quiet=quiet)
    with console.status(f"exporting {weights} ..."):
        report = export_onnx(
            weights,
            output,
            tile=tile,
            opset=opset,
            fp16=fp16,
            int8=int8,
            simplify=simplify,
            holdout=holdout,
            holdout_limit=holdout_limit,
            overwrite=overwrite,
        )
    if json_summary:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    table = Table(title="onnxruntime vs PyTorch (fp32 graph)")
    for col in ("batch", "output", "max abs diff", "relative"):
        table.add_column(col)
    for row in report.parity:
        if "min_iou" in row:  # a detector's decoded boxes
            continue
        table.add_row(
            str(row["batch"]), row["output"], f"{row['max_abs_diff']:.2e}", f"{row['relative']:.2e}"
        )
    console.print(table)
    for row in (r for r in report.parity if "min_iou" in r):
        what = f"{row['points']} points" if "points" in row else f"{row['boxes']} decoded boxes"
        console.print(
            f"{row['output']} of {row['batch']} sample tiles: {what} compared, lowest IoU "
            f"{row['min_iou']:.4f}, largest score difference {row['max_score_diff']:.1e}"
        )
    if report.accuracy_change:
        console.print(f"{report.precision} vs fp32: {json.dumps(report.accuracy_change)}")
    console.print(
        f"wrote {output}: {report.task}, {report.precision}, tile {report.tile}, opset {report.opset}, "
        f"{report.size_mb} MB"
    )
