"""`sarmae demo`: the shipped weights on generated SAR scenes, in one command."""

from pathlib import Path
from typing import Annotated, Any

import typer

from sarmae_cli.cli.options import DeviceOpt, Overwrite, Quiet, Reporter, Seed
from sarmae_cli.outputs import check_output_folder


def _print_step(step: Any, steps: int) -> None:
    typer.echo(f"\n[{step.number}/{steps}] {step.title}")
    if step.command:
        typer.echo(f"  $ {step.command}")
    for p in step.outputs:
        typer.echo(f"  wrote {p}")
    for line in step.results:
        typer.echo(f"  {line}")


def demo(
    outdir: Annotated[Path, typer.Argument(help="Folder for the demo's files (created if needed).")] = Path(
        "sarmae-demo"
    ),
    size: Annotated[
        int,
        typer.Option(
            "--size",
            max=16384,
            help="Width and height of each scene in pixels (too small a scene is refused).",
        ),
    ] = 1024,
    seed: Seed = 0,
    device: DeviceOpt = "auto",
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Try the shipped weights on synthetic SAR scenes.

    Generates a speckled VV scene in dB with water bodies (VV+VH if the weights take two bands;
    GeoTIFF, EPSG:32631, 10 m pixels, with its truth mask) and runs water segmentation (COG + PNG
    quicklook) and tile embeddings (GeoParquet) on it; then a sea scene of the same size with
    ship-like targets (2 m pixels, with the true boxes) and runs ship detection on it (GeoPackage,
    points CSV, quicklook with the boxes). For each step it prints the command that does the same
    on your own data; the water map is scored (IoU) against the truth beside the threshold
    baseline (--method threshold, no weights), the ships by recall and precision at IoU 0.5.
    --seed picks the scenes. Fails before writing anything if the shipped weights are missing or
    damaged.

    $ sarmae demo

    $ sarmae demo my-demo --size 512 --seed 7 --overwrite
    """
    check_output_folder(outdir, "the demo's outputs")

    from sarmae_cli.demo import STEPS, run_demo

    with Reporter(quiet) as rep:
        result = run_demo(
            outdir, size, seed, device, overwrite, rep.progress, lambda s: _print_step(s, STEPS)
        )
    iou = "" if result.water_iou is None else f"; water IoU {result.water_iou:.3f}"
    iou += "" if result.baseline_iou is None else f" (threshold baseline {result.baseline_iou:.3f})"
    ships = result.ships
    iou += f"; ships: recall {ships['recall']:.2f}, precision {ships['precision']:.2f}"
    typer.echo(f"\nDone: {len(result.steps)} steps, outputs in {outdir}/{iou}")
