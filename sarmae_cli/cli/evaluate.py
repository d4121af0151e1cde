"""`sarmae evaluate`: the metrics of fine-tuned weights on a labelled set."""

import json
from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    BatchSize,
    DeviceOpt,
    JsonSummary,
    Overwrite,
    Quiet,
    ValFraction,
    output_option,
)
from sarmae_cli.errors import UsageError, WeightsNotFoundError
from sarmae_cli.outputs import check_extension, check_output
from sarmae_cli.paths import require_dataset, require_path


def _ints(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise UsageError(f"{name} must be comma-separated integers, got {text!r}") from e


def evaluate(
    data: Annotated[
        Path,
        typer.Argument(
            help="Labelled set: class folders, a path,label CSV, image/mask folders, or (detection) "
            "a COCO JSON, images/ + labels/ (YOLO txt) or images/ + masks/."
        ),
    ],
    weights: Annotated[
        Path,
        typer.Option(
            "--weights", "-w", help="Fine-tuned weights to score (.safetensors from `sarmae finetune`)."
        ),
    ],
    output: Annotated[
        Path | None,
        output_option(
            "Metrics file to write (.json); the confusion-matrix plot (detection: precision-recall "
            "curves) goes beside it (.png)."
        ),
    ] = None,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            min=1,
            max=6,
            help="Classification: average 1-6 crop views per chip (the chip, its centre and four "
            "corners at 85 % of the area; default 1 = one pass).",
        ),
    ] = 1,
    val_fraction: ValFraction = None,
    pairing: Annotated[
        str | None,
        typer.Option(
            "--pairing",
            help="Segmentation and detection masks: image/mask pairing "
            "IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN].",
        ),
    ] = None,
    mask_values: Annotated[
        str | None,
        typer.Option(
            "--mask-values", help="Segmentation: mask value of each class, e.g. 0,255 (default: stored)."
        ),
    ] = None,
    ignore_value: Annotated[
        int | None,
        typer.Option("--ignore-value", help="Segmentation: mask value to ignore (default: stored)."),
    ] = None,
    batch_size: BatchSize = 32,
    device: DeviceOpt = "auto",
    json_out: JsonSummary = False,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Score fine-tuned weights on a labelled set, with the preprocessing, classes and mask
    coding (detection: tile, overlap and score threshold) stored in the weights.

    Prints one line of the main metrics (or, with --json, all of them); with -o, writes the
    metrics JSON and a confusion-matrix plot beside it.

    $ sarmae evaluate mstar10/test -w mstar.safetensors

    $ sarmae evaluate mstar10/test -w mstar.safetensors --tta 6 -o mstar_test.json

    $ sarmae evaluate mstar10/train --val-fraction 0.2 -w sel.safetensors

    $ sarmae evaluate hrsid_mini --val-fraction 0.2 -w weights/sarmae_ships.safetensors
    """
    require_dataset(data)
    require_path(weights, "weights file", WeightsNotFoundError)
    if output is not None:
        check_extension(output, "json", "-o", "a metrics JSON (the plot goes beside it)")
        check_output(output, overwrite, inputs=[data, weights])
        check_output(output.with_suffix(".png"), overwrite, inputs=[data, weights])
    overrides = {
        "pairing": pairing,
        "mask_values": _ints(mask_values, "--mask-values"),
        "ignore_value": ignore_value,
    }

    from sarmae_cli.model.runtime import resolve_device
    from sarmae_cli.train.evaluate import evaluate_weights, headline, write_report

    m, meta = evaluate_weights(
        weights,
        data,
        resolve_device(device or "auto"),
        {k: v for k, v in overrides.items() if v is not None},
        batch_size or 32,
        tta,
        val_fraction,
    )
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    for line in m.get("warnings", []):  # detection labels: one line per skipped image or box
        say(line)
    if m.get("skipped_files"):
        say(f"skipped {m['skipped_files']} undecodable or unlabelled file(s)")
    if output is not None:
        png = write_report(m, list(meta.class_names), output, overwrite)
        say(f"wrote {output} and {png}")
    typer.echo(json.dumps(m, indent=2) if json_out else headline(m))
