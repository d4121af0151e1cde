"""`sarmae pretrain`: SARMAE pretraining (MAE + SARE speckle + SARC optical anchoring)."""

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from sarmae_cli.cli.options import ConfigFile, ModelPreset, Quiet
from sarmae_cli.train import distributed
from sarmae_cli.train.config import from_dict, load_config_file, merge_config
from sarmae_cli.train.pretrain import PretrainConfig, run_pretrain


def _csv(text: str | None, cast: Any = str) -> list | None:
    return [cast(t.strip()) for t in text.split(",") if t.strip()] if text else None


def pretrain(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder.")],
    sources: Annotated[
        list[Path] | None,
        typer.Argument(help="Folders of SAR chips, GeoTIFF scenes, ZIP archives or CSV/TXT manifests."),
    ] = None,
    zip_member: Annotated[
        str | None,
        typer.Option(
            "--zip-member",
            help="Glob over paths inside ZIP sources, e.g. '*/Patch_Cal/*' (default: every image).",
        ),
    ] = None,
    paired: Annotated[
        Path | None,
        typer.Option(
            "--paired",
            help="CSV of SAR-optical pairs (columns sar,opt) or a folder with sar/ and opt/, for SARC.",
        ),
    ] = None,
    model: Annotated[ModelPreset | None, typer.Option("--model", help="Encoder size (default tiny).")] = None,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Start from these sarmae weights (continued pretraining)."),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1)] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Stop after N optimizer steps.")
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", "-b", min=1, help="Chips per step and process (default 64)."),
    ] = None,
    sare: Annotated[
        bool | None, typer.Option("--sare/--no-sare", help="Speckle injection (SARE) (default on).")
    ] = None,
    sarc: Annotated[
        bool | None, typer.Option("--sarc/--no-sarc", help="Optical semantic anchoring (SARC) (default on).")
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher", help="Optical teacher: dinov2-s (offline default), an .onnx or a checkpoint."
        ),
    ] = None,
    config: ConfigFile = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT.")] = False,
    teacher_arch: Annotated[
        str | None, typer.Option("--teacher-arch", help="timm architecture of a checkpoint teacher.")
    ] = None,
    teacher_patch_embed_only: Annotated[
        bool | None,
        typer.Option("--teacher-patch-embed-only", help="Use only the teacher's patch embedding + norm."),
    ] = None,
    cache_teacher: Annotated[
        bool | None,
        typer.Option(
            "--cache-teacher/--no-cache-teacher", help="Compute teacher features once and cache them."
        ),
    ] = None,
    sarc_weight: Annotated[
        float | None, typer.Option("--sarc-weight", min=0.0, help="lambda of L_SARC (default 0.1).")
    ] = None,
    sare_mode: Annotated[
        str | None, typer.Option("--sare-mode", help="gamma (default), lognormal or reference.")
    ] = None,
    sare_fraction: Annotated[
        float | None,
        typer.Option("--sare-fraction", min=0.0, max=1.0, help="Share of noisy samples (default 0.5)."),
    ] = None,
    paired_fraction: Annotated[
        float | None,
        typer.Option(
            "--paired-fraction", min=0.0, max=1.0, help="Share of paired samples per epoch (default 0.7)."
        ),
    ] = None,
    img_size: Annotated[
        int | None, typer.Option("--img-size", min=16, help="Training crop size (default 224).")
    ] = None,
    chip_fit: Annotated[
        str | None,
        typer.Option(
            "--chip-fit",
            help="resize (default): each chip whole at --img-size; center_crop: its centre "
            "--img-size pixels at native resolution (as finetune --fit center_crop).",
        ),
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option("--bands", help="Band names, one per input channel, e.g. VV,VH (default SAR)."),
    ] = None,
    input_scale: Annotated[
        str | None,
        typer.Option("--input-scale", help="auto (default), uint8, uint16, db, power or amplitude."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="Peak learning rate (default 1.5e-4).")
    ] = None,
    accum_steps: Annotated[
        int | None, typer.Option("--accum-steps", min=1, help="Gradient accumulation.")
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", min=0, help="Data loader workers.")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    ckpt_every: Annotated[
        int | None, typer.Option("--ckpt-every", min=0, help="Steps between checkpoints (default 500).")
    ] = None,
    log_every: Annotated[
        int | None, typer.Option("--log-every", min=1, help="Steps between log rows (default 10).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Pretrain a SARMAE encoder on unlabelled SAR (and paired optical) imagery.

    OUTPUT gets checkpoint.pt, log.csv, previews/*.png and the final encoder.safetensors.

    Settings: defaults, then --config FILE (YAML/TOML: model, data, sare, sarc, loop), then flags.

    Several processes or GPUs: torchrun --nproc_per_node N -m sarmae_cli pretrain ...

    $ sarmae pretrain chips/ scenes/ --paired pairs.csv --model tiny --epochs 20 -o runs/tiny
    """
    flags = {
        "sources": [str(s) for s in sources] if sources else None,
        "paired": str(paired) if paired else None,
        "model": {
            "preset": model.value if model else None,
            "init": str(init) if init else None,
            "img_size": img_size,
            "bands": _csv(bands),
        },
        "data": {
            "scaling": input_scale,
            "paired_fraction": paired_fraction,
            "zip_members": zip_member,
            "chip_fit": chip_fit,
        },
        "sare": {"enabled": sare, "mode": sare_mode, "fraction": sare_fraction},
        "sarc": {
            "enabled": sarc,
            "teacher": teacher,
            "arch": teacher_arch,
            "patch_embed_only": teacher_patch_embed_only,
            "weight": sarc_weight,
            "cache": cache_teacher,
        },
        "loop": {
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "accum_steps": accum_steps,
            "num_workers": num_workers,
            "device": device,
            "seed": seed,
            "ckpt_every": ckpt_every,
            "log_every": log_every,
            "progress": False if quiet else None,
        },
    }
    cfg = from_dict(PretrainConfig, merge_config(load_config_file(config), flags))
    command = "sarmae " + shlex.join(sys.argv[1:])
    try:
        result = run_pretrain(cfg, output, resume=resume, command=command)
    finally:
        distributed.cleanup()
    if result.weights is not None and not quiet:
        Console(stderr=True).print(f"wrote {result.weights} after {result.train.step} steps", highlight=False)
