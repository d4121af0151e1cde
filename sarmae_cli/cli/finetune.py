"""`sarmae finetune`: classification and segmentation fine-tuning, and evaluation of weights."""

import json
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from sarmae_cli.cli.options import ConfigFile, ModelPreset
from sarmae_cli.errors import UsageError
from sarmae_cli.model.runtime import resolve_device
from sarmae_cli.outputs import check_output
from sarmae_cli.train import finetune as ft
from sarmae_cli.train import metrics
from sarmae_cli.train.config import load_config_file


class Task(StrEnum):
    classification = "classification"
    segmentation = "segmentation"


class Fit(StrEnum):
    resize = "resize"
    center_crop = "center_crop"


class Decoder(StrEnum):
    upernet = "upernet"
    fpn = "fpn"


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as e:
        raise UsageError(f"--seeds must be comma-separated integers like 0,1,2, got {text!r}") from e
    if not seeds:
        raise UsageError("--seeds is empty; give e.g. 0,1,2")
    return seeds


def _ints(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise UsageError(f"{name} must be comma-separated integers, got {text!r}") from e


def finetune(
    train: Annotated[
        Path,
        typer.Argument(
            help="Training set (or, with --eval-only, the set to evaluate): class folders, a "
            "path,label CSV, or image/mask folders."
        ),
    ],
    task: Annotated[Task | None, typer.Option("--task", help="What to train.")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output weights (.safetensors); with --eval-only a metrics .json."
        ),
    ] = None,
    val: Annotated[
        Path | None,
        typer.Option("--val", help="Validation set (default: --val-fraction of TRAIN held out per class)."),
    ] = None,
    init: Annotated[
        str | None, typer.Option("--init", help="Weights file to start from, 'default' or 'random'.")
    ] = None,
    model: Annotated[
        ModelPreset | None, typer.Option("--model", help="Encoder size for --init random.")
    ] = None,
    shots: Annotated[int | None, typer.Option("--shots", min=1, help="K chips per class.")] = None,
    fraction: Annotated[
        float | None, typer.Option("--fraction", min=0.0, max=1.0, help="Fraction per class.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Epochs (default 30).")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")
    ] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = "0",
    config: ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    eval_only: Annotated[
        bool, typer.Option("--eval-only", help="Evaluate --weights on TRAIN (a labelled set); no training.")
    ] = False,
    weights: Annotated[
        Path | None, typer.Option("--weights", "-w", help="Weights to evaluate (--eval-only).")
    ] = None,
    tta: Annotated[
        int,
        typer.Option(
            "--tta",
            min=1,
            max=6,
            help="With --eval-only, classification: average 1-6 crop views per chip (the chip, its "
            "centre and four corners at 85 % of the area; default 1 = one pass).",
        ),
    ] = 1,
    batch_size: Annotated[int | None, typer.Option("--batch-size", "-b", min=1, help="Batch size.")] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Peak learning rate (default blr x batch / 256).")
    ] = None,
    blr: Annotated[float | None, typer.Option("--blr", help="Base learning rate (default 1e-3).")] = None,
    chip_size: Annotated[
        int | None,
        typer.Option("--chip-size", min=16, help="Model input / crop size (default: the encoder's)."),
    ] = None,
    fit: Annotated[
        Fit | None, typer.Option("--fit", help="Chips of other sizes: resize or centre-crop.")
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(
            "--crop",
            min=1,
            help="Centre-crop N pixels first, then resize to --chip-size (zoom on centred targets).",
        ),
    ] = None,
    decoder: Annotated[Decoder | None, typer.Option("--decoder", help="Segmentation decoder.")] = None,
    linear_probe: Annotated[
        bool, typer.Option("--linear-probe", help="Freeze the encoder; train only the head.")
    ] = False,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            "--val-fraction",
            min=0.0,
            max=0.9,
            help="Held-out share without --val (with --eval-only: score only that share).",
        ),
    ] = None,
    balance: Annotated[bool, typer.Option("--balance", help="Oversample classes to equal counts.")] = False,
    unlabelled: Annotated[
        str | None,
        typer.Option(
            "--unlabelled",
            help="Self-training: chips without labels, 'rest' (the training chips --shots/--fraction "
            "left out) or a folder; --teacher labels them.",
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option("--teacher", help="Classification weights that pseudo-label --unlabelled chips."),
    ] = None,
    pseudo_threshold: Annotated[
        float | None,
        typer.Option(
            "--pseudo-threshold", help="Keep pseudo-labels whose teacher confidence is at least this (0.9)."
        ),
    ] = None,
    speckle: Annotated[
        float | None, typer.Option("--speckle", min=0.0, max=1.0, help="Probability of speckle augmentation.")
    ] = None,
    intensity: Annotated[
        float | None,
        typer.Option(
            "--intensity",
            min=0.0,
            max=1.0,
            help="Probability of a random contrast/brightness/gamma change (radiometric robustness).",
        ),
    ] = None,
    no_augment: Annotated[
        bool, typer.Option("--no-augment", help="No flips, rotations, crops or shifts.")
    ] = False,
    pairing: Annotated[
        str | None,
        typer.Option("--pairing", help="Image/mask pairing IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN]."),
    ] = None,
    mask_values: Annotated[
        str | None, typer.Option("--mask-values", help="Mask value of each class, e.g. 0,255.")
    ] = None,
    ignore_value: Annotated[
        int | None, typer.Option("--ignore-value", help="Mask value to ignore (default -1).")
    ] = None,
    class_names: Annotated[
        str | None, typer.Option("--class-names", help="Segmentation class names, e.g. land,water.")
    ] = None,
    scaling: Annotated[
        str | None,
        typer.Option("--scaling", help="Input scaling uint8|uint16|db|power|amplitude (default: detected)."),
    ] = None,
    stretch: Annotated[
        str | None,
        typer.Option(
            "--stretch",
            help="fixed (default) or percentile: per-image 2-98 % stretch, robust to radiometry.",
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    workers: Annotated[
        int | None, typer.Option("--workers", min=0, help="Data-loading worker processes.")
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Checkpoints and logs (default: OUT without suffix + .run)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the outputs if they exist.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON on stdout.")] = False,
) -> None:
    """Fine-tune SARMAE for classification or segmentation with the paper's protocols.

    $ sarmae finetune --task classification mstar10/train --val mstar10/test --shots 40 -o mstar.safetensors

    $ sarmae finetune --task segmentation ombria_s1/train --val ombria_s1/test -o water.safetensors

    $ sarmae finetune --eval-only mstar10/test --weights mstar.safetensors

    $ sarmae finetune --eval-only mstar10/test --weights mstar.safetensors --tta 6

    $ sarmae finetune --eval-only mstar10/train --val-fraction 0.2 --weights sel.safetensors
    """
    dev = resolve_device(device)
    if eval_only:
        _evaluate(
            train,
            weights,
            output,
            dev,
            pairing,
            mask_values,
            ignore_value,
            batch_size,
            overwrite,
            json_out,
            tta=tta,
            holdout=val_fraction,
        )
        return
    if tta > 1:
        raise UsageError("--tta applies to --eval-only; evaluate the trained weights with it afterwards")
    if task is None:
        raise UsageError("--task is required to train: classification or segmentation")
    if output is None:
        raise UsageError("--output/-o is required: the weights file to write")
    if not output.name.endswith(".safetensors"):
        raise UsageError(f"--output {output} must end in .safetensors")
    flags: dict[str, Any] = {
        "data": {
            "train": str(train),
            "val": str(val) if val else None,
            "shots": shots,
            "fraction": fraction,
            "chip_size": chip_size,
            "fit": fit.value if fit else None,
            "crop": crop,
            "val_fraction": val_fraction,
            "balance": balance or None,
            "unlabelled": unlabelled,
            "teacher": str(teacher) if teacher else None,
            "pseudo_threshold": pseudo_threshold,
            "pairing": pairing,
            "mask_values": _ints(mask_values, "--mask-values"),
            "ignore_value": ignore_value,
            "class_names": [c.strip() for c in class_names.split(",")] if class_names else None,
            "scaling": scaling,
            "stretch": stretch,
        },
        "model": {
            "init": init,
            "preset": model.value if model else None,
            "decoder": decoder.value if decoder else None,
            "freeze_encoder": linear_probe or None,
        },
        "augment": {
            "speckle": speckle,
            "intensity": intensity,
            **({"flips": False, "rot90": False, "crop_scale": [1.0, 1.0], "shift": 0} if no_augment else {}),
        },
        "lr": lr,
        "blr": blr,
        "loop": {
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "num_workers": workers,
            "device": device,
            "progress": False if quiet else None,
        },
    }
    cfg = ft.resolve_config(task.value, load_config_file(config), flags)
    say = (lambda msg: None) if quiet else (lambda msg: typer.echo(msg, err=True))
    doc = ft.finetune(
        cfg,
        output,
        _seeds(seeds),
        resume=resume,
        overwrite=overwrite,
        run_dir=run_dir,
        command=shlex.join(["sarmae", *sys.argv[1:]]),
        log=say,
    )
    if not doc:
        return  # a non-zero rank under torchrun
    if json_out:
        typer.echo(json.dumps(doc["summary"], indent=2))
        return
    for name, stat in doc["summary"].items():
        if isinstance(stat, dict) and "mean" in stat:
            typer.echo(f"{name}: {metrics.format_pm(stat)} (n={stat['n']})")
    typer.echo(f"weights: {output}; metrics: {ft.metrics_path(output)}")


def _evaluate(
    data: Path,
    weights: Path | None,
    output: Path | None,
    device: Any,
    pairing: str | None,
    mask_values: str | None,
    ignore_value: int | None,
    batch_size: int | None,
    overwrite: bool,
    json_out: bool,
    tta: int = 1,
    holdout: float | None = None,
) -> None:
    if weights is None:
        raise UsageError("--eval-only needs --weights WEIGHTS (a fine-tuned .safetensors file)")
    if output is not None:
        if output.suffix != ".json":
            raise UsageError(f"with --eval-only, --output {output} must be a .json metrics file")
        check_output(output, overwrite)
    overrides = {
        "pairing": pairing,
        "mask_values": _ints(mask_values, "--mask-values"),
        "ignore_value": ignore_value,
    }
    m, meta = ft.evaluate_weights(
        weights,
        data,
        device,
        {k: v for k, v in overrides.items() if v is not None},
        batch_size or 32,
        tta,
        holdout,
    )
    if output is not None:
        metrics.write_json(m, output, overwrite)
        metrics.save_confusion_png(
            np.array(m["confusion_matrix"]), meta.class_names, output.with_suffix(".png"), title=output.stem
        )
    if json_out:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(ft.headline(m))
    if m.get("skipped_files"):
        typer.echo(f"skipped {m['skipped_files']} undecodable file(s)", err=True)
