"""Pixel size: the ground sample distance a model runs at (`--gsd auto|native|METRES`).

Pure arithmetic with no heavy imports, so the command line checks `--gsd` before loading
the library. The scene's own pixel size comes from `data/raster.pixel_size`; the model's from
the weights (`InputSpec.gsd`); `Scene.scale` is their ratio.
"""

from __future__ import annotations

from sarmae_cli.errors import UsageError
from sarmae_cli.weights_file import WeightsGsd

#: The largest resampling factor `--gsd` accepts (either way) without `--gsd native`.
MAX_GSD_RATIO = 20.0


def parse_gsd(text: str) -> str | float:
    """`--gsd auto|native|METRES` -> "auto", "native" or a positive number of metres."""
    if text in ("auto", "native"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"--gsd {text!r}: give auto, native or a pixel size in metres such as 10")
    return value


Scale = tuple[float, float]  # model pixels per scene pixel, (rows, columns)
NATIVE: Scale = (1.0, 1.0)


def _fmt(g: WeightsGsd) -> str:
    return f"{g[0]:g}-{g[1]:g}" if isinstance(g, tuple) else f"{g:g}"


def resolve_gsd(
    scene_gsd: tuple[float, float] | None, weights_gsd: WeightsGsd | None, gsd: str | float = "auto"
) -> tuple[Scale, str]:
    """The resampling factors of a scene, (rows, columns): model pixels per scene pixel, i.e.
    the scene's pixel size along each axis over the model's (the axes differ for grids in
    degrees away from the equator), and the line that says so. `gsd`: "auto" (the GSD the
    weights record; for a recorded range, a scene inside it runs native and one outside it is
    resampled to the nearer end), "native" (no resampling) or a target in metres. Unknown sizes
    run native, with a note; a factor beyond MAX_GSD_RATIO either way is a usage error."""
    if gsd == "native":
        return NATIVE, ""
    target = weights_gsd if gsd == "auto" else float(gsd)
    if target is None:
        return NATIVE, ""  # the weights record no pixel size: native, as trained
    if scene_gsd is None:
        return NATIVE, f"pixel size unknown (no geotransform): native resolution, not {_fmt(target)} m"
    size = " x ".join(f"{g:.3g}" for g in scene_gsd)
    lo, hi = target if isinstance(target, tuple) else (target, target)
    goal = [min(max(g, lo), hi) for g in scene_gsd]  # each axis into the model's size or range
    factors = (scene_gsd[0] / goal[0], scene_gsd[1] / goal[1])
    if max(max(f, 1 / f) for f in factors) > MAX_GSD_RATIO:
        raise UsageError(
            f"the scene's pixels are {size} m and the model's {_fmt(target)} m, a ratio beyond "
            f"{MAX_GSD_RATIO:g}x; give --gsd native to run it anyway"
        )
    model = f"the model's is {lo:g} m" if lo == hi else f"the model's range is {_fmt(target)} m"
    if all(abs(f - 1) < 0.02 for f in factors):
        return NATIVE, f"pixel size {size} m: native ({model})"
    if lo == hi:
        return factors, f"pixel size {size} m resampled to {lo:g} m for the model"
    to = " x ".join(f"{g:.3g}" for g in goal)
    return factors, f"pixel size {size} m resampled to {to} m for the model ({model})"
