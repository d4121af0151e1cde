"""`sarmae pretrain`: SARMAE pretraining (MAE + SARE speckle + SARC optical anchoring)."""

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from sarmae_cli.cli.options import (
    BatchSize,
    ChipSize,
    CkptEvery,
    CkptMinutes,
    ConfigFile,
    DeviceOpt,
    Epochs,
    FitOpt,
    Init,
    InputScale,
    Lr,
    MaxSteps,
    Model,
    Quiet,
    Resume,
    Seed,
    SetOption,
    Workers,
    output_option,
)
from sarmae_cli.errors import WeightsNotFoundError
from sarmae_cli.outputs import check_run_folder
from sarmae_cli.paths import require_path, require_source


def _csv(text: str | None, cast: Any = str) -> list | None:
    return [cast(t.strip()) for t in text.split(",") if t.strip()] if text else None


def pretrain(
    output: Annotated[Path, output_option("Run folder: checkpoint, logs, previews and the final weights.")],
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
    model: Model = None,
    init: Init = None,
    epochs: Epochs = None,
    max_steps: MaxSteps = None,
    batch_size: BatchSize = None,
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
    set_: SetOption = None,
    resume: Resume = False,
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
    chip_size: ChipSize = None,
    fit: FitOpt = None,
    bands: Annotated[
        str | None,
        typer.Option("--bands", help="Band names, one per input channel, e.g. VV,VH (default SAR)."),
    ] = None,
    input_scale: InputScale = None,
    lr: Lr = None,
    accum_steps: Annotated[
        int | None, typer.Option("--accum-steps", min=1, help="Gradient accumulation.")
    ] = None,
    workers: Workers = None,
    device: DeviceOpt = None,
    seed: Seed = None,
    ckpt_every: CkptEvery = None,
    ckpt_minutes: CkptMinutes = None,
    log_every: Annotated[
        int | None, typer.Option("--log-every", min=1, help="Steps between log rows (default 10).")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Pretrain a SARMAE encoder on unlabelled SAR (and paired optical) imagery.

    OUTPUT gets checkpoint.pt, log.csv, previews/*.png and the final encoder.safetensors.

    Settings: defaults, then --config FILE (YAML/TOML: model, data, sare, sarc, loop), then each
    --set KEY=VALUE (e.g. --set loop.warmup_epochs=2), then the options.

    Several processes or GPUs: torchrun --nproc_per_node N -m sarmae_cli pretrain ...

    $ sarmae pretrain chips/ scenes/ --paired pairs.csv --model tiny --epochs 20 -o runs/tiny
    """
    for src in sources or []:
        require_source(src)
    for path, what in ((paired, "paired manifest"), (config, "config file")):
        if path is not None:
            require_path(path, what)
    if init is not None:
        require_path(init, "--init weights file", WeightsNotFoundError)
    check_run_folder(output, resume)

    from sarmae_cli.train import distributed
    from sarmae_cli.train.config import from_dict, load_config_file, merge_config, set_layer
    from sarmae_cli.train.pretrain import PretrainConfig, run_pretrain

    options = {
        "sources": [str(s) for s in sources] if sources else None,
        "paired": str(paired) if paired else None,
        "model": {
            "preset": model.value if model else None,
            "init": init,
            "img_size": chip_size,
            "bands": _csv(bands),
        },
        "data": {
            "scaling": input_scale,
            "paired_fraction": paired_fraction,
            "zip_members": zip_member,
            "chip_fit": fit.value if fit else None,
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
            "num_workers": workers,
            "device": device,
            "seed": seed,
            "ckpt_every": ckpt_every,
            "ckpt_minutes": ckpt_minutes,
            "log_every": log_every,
            "progress": False if quiet else None,
        },
    }
    layers = load_config_file(config), set_layer(set_, PretrainConfig), options
    cfg = from_dict(PretrainConfig, merge_config(*layers))
    command = "sarmae " + shlex.join(sys.argv[1:])
    try:
        result = run_pretrain(cfg, output, resume=resume, command=command)
    finally:
        distributed.cleanup()
    if result.weights is not None and not quiet:
        typer.echo(f"wrote {result.weights} after {result.train.step} steps", err=True)
