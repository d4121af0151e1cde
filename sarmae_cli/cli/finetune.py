"""`sarmae finetune`: classification and segmentation fine-tuning."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import ConfigFile, ModelPreset, not_implemented


class Task(StrEnum):
    classification = "classification"
    segmentation = "segmentation"


def finetune(
    train: Annotated[Path, typer.Argument(help="Training set: class folders, image/mask folders or a CSV.")],
    task: Annotated[Task, typer.Option("--task", help="What to train.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output weights (.safetensors).")],
    val: Annotated[Path | None, typer.Option("--val", help="Validation set.")] = None,
    init: Annotated[str, typer.Option("--init", help="Weights file to start from, or 'random'.")] = "default",
    model: Annotated[ModelPreset | None, typer.Option("--model", help="Encoder size.")] = None,
    shots: Annotated[int | None, typer.Option("--shots", min=1, help="K chips per class.")] = None,
    fraction: Annotated[
        float | None, typer.Option("--fraction", min=0.0, max=1.0, help="Fraction per class.")
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1)] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds, e.g. 0,1,2.")] = "0",
    config: ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
) -> None:
    """Fine-tune SARMAE for classification or segmentation with the paper's protocols.

    $ sarmae finetune --task classification mstar10/train --val mstar10/test --shots 40 -o mstar.safetensors
    """
    not_implemented("finetune", 5)
