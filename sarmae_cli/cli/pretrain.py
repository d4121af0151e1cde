"""`sarmae pretrain`: SARMAE pretraining (MAE + SARE speckle + SARC optical anchoring)."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import ConfigFile, ModelPreset, not_implemented


def pretrain(
    sources: Annotated[
        list[Path],
        typer.Argument(help="Folders of SAR chips, GeoTIFF scenes or CSV/TXT manifests."),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder.")],
    paired: Annotated[
        Path | None,
        typer.Option("--paired", help="CSV of SAR-optical pairs (columns sar,opt) for SARC."),
    ] = None,
    model: Annotated[ModelPreset, typer.Option("--model", help="Encoder size.")] = ModelPreset.tiny,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from these weights (continued pretraining)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1)] = 64,
    sare: Annotated[bool, typer.Option("--sare/--no-sare", help="Speckle injection (SARE).")] = True,
    sarc: Annotated[bool, typer.Option("--sarc/--no-sarc", help="Optical semantic anchoring (SARC).")] = True,
    teacher: Annotated[
        str, typer.Option("--teacher", help="Optical teacher: dinov2-s or a checkpoint path.")
    ] = "dinov2-s",
    config: ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT.")] = False,
) -> None:
    """Pretrain a SARMAE encoder on unlabelled SAR (and paired optical) imagery.

    $ sarmae pretrain chips/ scenes/ --paired pairs.csv --model tiny --epochs 20 -o runs/tiny
    """
    not_implemented("pretrain", 3)
