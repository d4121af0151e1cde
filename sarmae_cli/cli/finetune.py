"""`sarmae finetune`: classification, segmentation and detection fine-tuning."""

import json
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import (
    BatchSize,
    ChipSize,
    CkptMinutes,
    ConfigFile,
    DeviceOpt,
    Epochs,
    FitOpt,
    Init,
    InputScale,
    JsonSummary,
    Lr,
    MaxSteps,
    Overwrite,
    Quiet,
    Resume,
    Seeds,
    SetOption,
    ValFraction,
    Workers,
    output_option,
)
from sarmae_cli.errors import UsageError
from sarmae_cli.outputs import check_extension, check_output
from sarmae_cli.paths import require_dataset, require_path


class Task(StrEnum):
    classification = "classification"
    segmentation = "segmentation"
    detection = "detection"


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise UsageError(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}") from e
    if not seeds:
        raise UsageError("--seeds is empty; give e.g. 0,1,2")
    return seeds


def _names(text: str | None) -> list[str] | None:
    """--class-names a,b,c -> ["a", "b", "c"] (None when not given)."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"--class-names must be distinct comma-separated names, got {text!r}")
    return names


def finetune(
    train: Annotated[
        Path,
        typer.Argument(
            help="Training set: class folders, a path,label CSV, image/mask folders, or (detection) "
            "a COCO JSON, images/ + labels/ (YOLO txt) or images/ + masks/."
        ),
    ],
    task: Annotated[
        Task | None,
        typer.Option(
            "--task",
            help="What to train: a classification (one class per chip), segmentation or "
            "detection (boxes) model.",
        ),
    ] = None,
    output: Annotated[Path | None, output_option("Output weights (.safetensors).")] = None,
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Validation set (default: --val-fraction of TRAIN held out per class)."),
    ] = None,
    val_fraction: ValFraction = None,
    init: Init = None,
    shots: Annotated[int | None, typer.Option("--shots", min=1, help="K training chips per class.")] = None,
    fraction: Annotated[
        float | None,
        typer.Option("--fraction", min=0.0, max=1.0, help="Fraction of training chips per class."),
    ] = None,
    class_names: Annotated[
        str | None,
        typer.Option(
            "--class-names",
            help="Comma-separated class names (segmentation: per class id; detection: replaces "
            "the names in the labels, in their order).",
        ),
    ] = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    chip_size: ChipSize = None,
    fit: FitOpt = None,
    input_scale: InputScale = None,
    seeds: Seeds = "0",
    config: ConfigFile = None,
    set_: SetOption = None,
    resume: Resume = False,
    device: DeviceOpt = None,
    workers: Workers = None,
    ckpt_minutes: CkptMinutes = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
    json_out: JsonSummary = False,
) -> None:
    """Fine-tune SARMAE for classification, segmentation or detection with the paper's protocols.

    Settings: the task's recipe, then --config FILE (YAML/TOML: data, model, augment, loop...),
    then each --set KEY=VALUE, then the options. Rarely used settings have no option of their
    own: e.g. --set model.decoder=fpn, --set data.stretch=percentile, --set data.balance=true,
    --set augment.speckle=0.5 (docs/finetuning.md lists them).

    Writes OUTPUT, its metrics (.metrics.json) and confusion matrix (.confusion.png; detection:
    precision-recall curves, .pr.png) beside it, and checkpoints to OUTPUT without suffix +
    .run/. Score weights on other data with `sarmae evaluate`.

    $ sarmae finetune --task classification mstar10/train --val mstar10/test --shots 40 -o mstar.safetensors

    $ sarmae finetune --task segmentation ombria_s1/train --val ombria_s1/test -o water.safetensors

    $ sarmae finetune --task detection hrsid_mini --set data.group_by=^[^_]+ -o ships.safetensors
    """
    if task is None:
        raise UsageError("--task is required: classification, segmentation or detection")
    if output is None:
        raise UsageError("--output/-o is required: the weights file to write")
    check_extension(output, "safetensors", "-o", "the fine-tuned weights file")
    _seeds(seeds)
    require_dataset(train)
    if val is not None:
        require_dataset(val, "validation set")
    if config is not None:
        require_path(config, "config file")
    check_output(output, overwrite or resume, inputs=[p for p in (train, val) if p is not None])

    from sarmae_cli.train import finetune as ft
    from sarmae_cli.train.config import load_config_file, set_layer
    from sarmae_cli.train.evaluate import metrics_path
    from sarmae_cli.train.finetune_config import FinetuneConfig, resolve_config
    from sarmae_cli.train.metrics import format_pm

    options = {
        "data": {
            "train": str(train),
            "val": str(val) if val else None,
            "val_fraction": val_fraction,
            "shots": shots,
            "fraction": fraction,
            "chip_size": chip_size,
            "fit": fit.value if fit else None,
            "scaling": input_scale,
            "class_names": _names(class_names),
        },
        "model": {"init": init},
        "lr": lr,
        "loop": {
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "num_workers": workers,
            "device": device,
            "ckpt_minutes": ckpt_minutes,
            "progress": False if quiet else None,
        },
    }
    layers = load_config_file(config), set_layer(set_, FinetuneConfig), options
    cfg = resolve_config(task.value, *layers)
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    doc = ft.finetune(
        cfg, output, _seeds(seeds), resume, overwrite, command=shlex.join(["sarmae", *sys.argv[1:]]), log=say
    )
    if not doc:
        return  # a non-zero rank under torchrun
    if json_out:
        typer.echo(json.dumps(doc["summary"], indent=2))
        return
    for name, stat in doc["summary"].items():
        if isinstance(stat, dict) and "mean" in stat:
            typer.echo(f"{name}: {format_pm(stat)} (n={stat['n']})")
    typer.echo(f"weights: {output}; metrics: {metrics_path(output)}")
