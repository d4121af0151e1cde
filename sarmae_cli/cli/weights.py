"""`sarmae weights`: list the shipped weights, show a file's metadata, import official ones."""

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sarmae_cli.cli.options import JsonSummary, Overwrite, output_option
from sarmae_cli.errors import WeightsError, WeightsNotFoundError
from sarmae_cli.outputs import check_extension, check_output
from sarmae_cli.paths import require_path
from sarmae_cli.shipped import RESTORE_HINT, SHIPPED, shipped_weights_dir
from sarmae_cli.weights_file import META_KEY, parse_weights_gsd, read_header, tensor_shapes

app = typer.Typer(help="List, inspect and import weights.", no_args_is_help=True)


def _arch(encoder: dict[str, Any]) -> str:
    from sarmae_cli.model.config import ViTConfig, preset_name

    cfg = ViTConfig.from_dict(encoder)
    name = preset_name(cfg) or "custom"
    return f"ViT-{name} p{cfg.patch_size} {cfg.img_size}px {cfg.in_chans}ch"


def _summary(path: Path) -> dict[str, Any]:
    """Metadata plus file facts of a weights file (.safetensors) or an exported model (.onnx)."""
    from sarmae_cli.model import checkpoint

    if path.suffix.lower() == ".onnx":
        meta, export_info = checkpoint.read_onnx_meta(path)
        return {
            "path": str(path),
            "size_mb": round(path.stat().st_size / 1e6, 2),
            "onnx": export_info,
            **meta.to_dict(),
        }
    meta = checkpoint.read_meta(path)
    shapes = tensor_shapes(path)
    return {
        "path": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 2),
        "tensors": len(shapes),
        "parameters": sum(_prod(s) for s in shapes.values()),
        **meta.to_dict(),
    }


def _prod(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _listed(path: Path) -> dict[str, Any]:
    """A shipped file's row of `weights list` from its header alone (fast): metadata, size,
    tensor and parameter counts; `--verify` then reads it with `checkpoint.read_weights`."""
    header = read_header(path)
    try:
        meta = json.loads((header.get("__metadata__") or {})[META_KEY])
        encoder = dict(meta["encoder"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{path} has no readable sarmae metadata ({e})") from e
    shapes = {k: t["shape"] for k, t in header.items() if k != "__metadata__"}
    enc_params = sum(_prod(s) for k, s in shapes.items() if k.startswith("encoder."))
    arch = f"ViT {enc_params / 1e6:.1f}M p{encoder.get('patch_size')} {encoder.get('img_size')}px"
    return {
        "path": str(path),
        "size_mb": round(path.stat().st_size / 1e6, 2),
        "tensors": len(shapes),
        "parameters": sum(_prod(s) for s in shapes.values()),
        "architecture": f"{arch} {encoder.get('in_chans')}ch",
        **meta,
    }


def _listing(path: Path, verify: bool) -> dict[str, Any]:
    """One row of `weights list`: the file's summary plus `status` (CORRUPTED when its header
    cannot be read; with `verify`, OK or CORRUPTED after checking its tensors against the
    checksum in its metadata) and `error`."""
    try:
        row = _listed(path)
    except WeightsError as e:
        return {"path": str(path), "status": "CORRUPTED", "error": str(e)}
    status, error = ("OK" if verify else None), None
    if verify:
        from sarmae_cli.model import checkpoint

        try:
            checkpoint.read_weights(path, verify=True)
        except WeightsError as e:
            status, error = "CORRUPTED", str(e)
    return {**row, "status": status, "error": error}


@app.command("list")
def list_weights(
    verify: Annotated[
        bool,
        typer.Option("--verify", help="Check every file against its checksum (and that none is missing)."),
    ] = False,
    json_out: JsonSummary = False,
) -> None:
    """List the shipped default weights and their tasks.

    With --verify, every file's tensors are checked against the checksum in its metadata and
    each file is reported OK, CORRUPTED or MISSING; the exit code is 1 unless all are OK.

    $ sarmae weights list --verify
    """
    folder = shipped_weights_dir()
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    rows = [_listing(p, verify) for p in files]
    if verify:
        present = {p.name for p in files}
        rows += [
            {"path": str(folder / name), "status": "MISSING", "error": f"{folder / name} is missing"}
            for name in SHIPPED.values()
            if name not in present
        ]
    bad = [r for r in rows if r["status"] in ("CORRUPTED", "MISSING")]
    if json_out:
        typer.echo(json.dumps({"folder": str(folder), "weights": rows}, indent=2))
    elif not rows:
        typer.echo(f"No shipped weights in {folder} yet.")
    else:
        table = Table(title=f"Shipped weights in {folder}")
        with_status = verify or bool(bad)
        columns = ["file", "task", "model", "bands", "classes", "MB"] + ["status"] * with_status
        for col in columns:
            table.add_column(col, no_wrap=col in ("file", "task", "status"))
        for r in rows:
            cells = [Path(r["path"]).name, "-", "-", "-", "-", "-"]
            if "task" in r:
                cells[1:] = [
                    r["task"],
                    r["architecture"],
                    ",".join(r["bands"]),
                    ",".join(r["class_names"] or []) or "-",
                    f"{r['size_mb']:.1f}",
                ]
            table.add_row(*cells, *[r["status"] or "-"] * with_status)
        Console(width=max(100, Console().width)).print(table)
    if bad:
        names = ", ".join(f"{Path(r['path']).name} ({r['status'].lower()})" for r in bad)
        raise WeightsError(
            f"{len(bad)} shipped weights file(s) in {folder} are not usable: {names}; {RESTORE_HINT}"
        )


@app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="A sarmae weights file (.safetensors) or exported .onnx.")],
    json_out: JsonSummary = False,
) -> None:
    """Show the metadata of a weights file.

    $ sarmae weights info weights/sarmae_tiny.safetensors --json
    """
    require_path(path, "weights file", WeightsNotFoundError)
    s = _summary(path)
    if json_out:
        typer.echo(json.dumps(s, indent=2, default=str))
        return
    table = Table(title=str(path), show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("task", s["task"])
    table.add_row("architecture", _arch(s["encoder"]))
    table.add_row("encoder", json.dumps(s["encoder"]))
    if s["decoder"]:
        table.add_row("MAE decoder", json.dumps(s["decoder"]))
    if s["head"]:
        table.add_row("head", json.dumps(s["head"]))
    if "onnx" in s:
        onnx_info = s["onnx"]
        table.add_row(
            "ONNX export",
            f"{onnx_info.get('precision')}, tile {onnx_info.get('tile')} px, opset {onnx_info.get('opset')}, "
            f"outputs {', '.join(onnx_info.get('outputs', []))}",
        )
        worst = max((r["relative"] for r in onnx_info.get("parity", [])), default=None)
        if worst is not None:
            table.add_row("parity (relative)", f"{worst:.2e}")
        if onnx_info.get("accuracy_change"):
            table.add_row("accuracy change", json.dumps(onnx_info["accuracy_change"]))
    else:
        table.add_row("parameters", f"{s['parameters']:,} in {s['tensors']} tensors")
    table.add_row("size", f"{s['size_mb']} MB")
    table.add_row("bands", ", ".join(s["bands"]))
    table.add_row("input scaling", json.dumps(s["input_scaling"]))
    table.add_row("normalization", json.dumps(s["normalization"]))
    table.add_row("classes", ", ".join(s["class_names"] or []) or "-")
    table.add_row("tile", f"{s['tile'].get('size')} px, overlap {s['tile'].get('overlap')} px")
    if s["task"] == "detection":
        from sarmae_cli.infer.detect import DEFAULT_MIN_SCORE

        stored = ((s["training"] or {}).get("detection") or {}).get("min_score")
        cut = f"{stored:g}" if stored is not None else f"{DEFAULT_MIN_SCORE:g} (none stored)"
        table.add_row("detect --min-score", cut)
    if s["channel_adaptation"]:
        table.add_row("channel adaptation", json.dumps(s["channel_adaptation"]))
    for k, v in s["provenance"].items():
        table.add_row(f"provenance.{k}", str(v))
    if s["metrics"]:
        table.add_row("metrics", json.dumps(s["metrics"]))
    if s["training"]:
        table.add_row("training", json.dumps(s["training"])[:300])
    table.add_row("checksum (sha256)", s["tensors_sha256"] or "-")
    Console(width=max(100, Console().width)).print(table)


@app.command("convert")
def convert(
    src: Annotated[Path, typer.Argument(help="sarmae weights (.safetensors).")],
    output: Annotated[Path, output_option("Destination .safetensors.")],
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Store floating-point tensors as fp16 (half size).")
    ] = False,
    drop_mae_decoder: Annotated[
        bool,
        typer.Option("--drop-mae-decoder", help="Keep only the encoder of pretraining weights."),
    ] = False,
    tile: Annotated[
        int | None, typer.Option("--tile", min=16, help="Default inference tile size stored in the weights.")
    ] = None,
    overlap: Annotated[
        int | None, typer.Option("--overlap", min=0, help="Default tile overlap stored in the weights.")
    ] = None,
    gsd: Annotated[
        str | None,
        typer.Option(
            "--gsd",
            help="Pixel size (metres) the weights were trained at, or a range LO:HI they read as they are "
            "(trained on mixed resolutions); --gsd auto uses it.",
        ),
    ] = None,
    min_score: Annotated[
        float | None,
        typer.Option(
            "--min-score",
            min=0.0,
            max=1.0,
            help="Detectors: the score cut-off `sarmae detect` uses without --min-score, in [0, 1).",
        ),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Copy weights as fp16 and/or without the MAE decoder (how the shipped files are made).

    Tensors are copied as they are unless --fp16 or --drop-mae-decoder is given; --tile,
    --overlap, --gsd and --min-score change only the metadata.

    $ sarmae weights convert runs/pt/encoder.safetensors --fp16 --drop-mae-decoder -o enc.safetensors

    $ sarmae weights convert ships.safetensors --min-score 0.55 -o ships_op.safetensors
    """
    require_path(src, "weights file", WeightsNotFoundError)
    training_gsd = parse_weights_gsd(gsd) if gsd is not None else None
    check_extension(output, "safetensors", "-o", "the converted weights file")
    check_output(output, overwrite, inputs=[src])
    argv = ["sarmae", "weights", "convert", str(src), "-o", str(output)]
    argv += ["--fp16"] * fp16 + ["--drop-mae-decoder"] * drop_mae_decoder
    argv += (["--tile", str(tile)] if tile else []) + (
        ["--overlap", str(overlap)] if overlap is not None else []
    )
    argv += ["--gsd", gsd] if gsd is not None else []
    argv += ["--min-score", f"{min_score:g}"] if min_score is not None else []
    from sarmae_cli.model import checkpoint

    tiles = {k: v for k, v in {"size": tile, "overlap": overlap}.items() if v is not None}
    meta = checkpoint.convert_weights(
        src, output, fp16, drop_mae_decoder, overwrite, shlex.join(argv), tiles or None, training_gsd,
        min_score,
    )  # fmt: skip
    size = output.stat().st_size / 1e6
    typer.echo(f"wrote {output}: {meta.task}, {_arch(meta.encoder)}, {size:.1f} MB", err=True)


@app.command("snapshot")
def snapshot(
    run: Annotated[Path, typer.Argument(help="A `sarmae pretrain` run folder (with checkpoint.pt).")],
    output: Annotated[Path, output_option("Destination .safetensors.")],
    overwrite: Overwrite = False,
) -> None:
    """Weights from a pretraining run's latest checkpoint, while it runs or after it stopped early.

    $ sarmae weights snapshot runs/pt_long -o pt_long_step2000.safetensors
    """
    require_path(run, "run folder")
    check_extension(output, "safetensors", "-o", "the weights file")
    check_output(output, overwrite)

    from sarmae_cli.train.pretrain import export_snapshot

    command = shlex.join(["sarmae", "weights", "snapshot", str(run), "-o", str(output)])
    meta = export_snapshot(run, output, command, overwrite)
    step = meta.provenance.get("snapshot_step")
    size = output.stat().st_size / 1e6
    typer.echo(f"wrote {output}: {meta.task} at step {step}, {_arch(meta.encoder)}, {size:.1f} MB", err=True)


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="Official SARMAE checkpoint (pickled .pth).")],
    output: Annotated[Path, output_option("Destination .safetensors.")],
    keep_decoder: Annotated[
        bool, typer.Option("--keep-decoder", help="Keep the MAE decoder (continued pretraining).")
    ] = False,
    in_chans: Annotated[
        int | None,
        typer.Option("--in-chans", min=1, help="Adapt the patch embedding to N input bands."),
    ] = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert an official SARMAE ViT-B/L checkpoint to sarmae weights (no pickled code runs).

    $ sarmae weights import SARMAE_vitb_checkpoint-last.pth -o sarmae_vitb.safetensors
    """
    require_path(src, "checkpoint", WeightsNotFoundError)
    check_extension(output, "safetensors", "-o", "the imported weights file")
    check_output(output, overwrite, inputs=[src])
    argv = ["sarmae", "weights", "import", str(src), "-o", str(output)]
    argv += ["--keep-decoder"] * keep_decoder + (["--in-chans", str(in_chans)] if in_chans else [])
    from sarmae_cli.model.official import import_official

    command = shlex.join(argv)
    meta = import_official(src, output, keep_decoder, in_chans, overwrite, command=command)
    typer.echo(f"wrote {output}: {meta.task}, {_arch(meta.encoder)}", err=True)
