"""The library behind `sarmae demo`: the shipped weights on a synthetic Sentinel-1-like scene.

`run_demo` generates a speckled backscatter scene in dB with dark water bodies
(`data.synthetic.speckled_scene`, VV, plus VH only if the shipped weights want two bands),
georeferenced in UTM zone 31N (EPSG:32631) with 10 m pixels. Its upper-left corner is at
E 645600 m, N 5830000 m, about 52.60° N 5.15° E on the Markermeer east of Amsterdam (the
Netherlands), so the files land on a real map. A slanted strip along the left edge is
nodata, like the edge of a Sentinel-1 swath. It then runs the library functions behind
`sarmae segment --task water`, `sarmae embed` and `sarmae classify` with the shipped weights
and reports, for each step, the shell command that does the same, the files written and,
for the water map, the IoU against the synthetic truth, beside that of the physical baseline
(`sarmae segment --method threshold`, no weights).

All three shipped weights files are loaded and checked before anything is written.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import Affine, from_origin

from sarmae_cli.data import raster
from sarmae_cli.data.preprocess import adaptable
from sarmae_cli.data.synthetic import as_mode, speckled_scene
from sarmae_cli.errors import OutputExistsError, SarmaeError, UsageError
from sarmae_cli.infer.api import Options, classify_chips, embed_scene, segment_scene
from sarmae_cli.infer.engine import Progress
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.threshold import threshold_scene
from sarmae_cli.infer.writers import CLASS_NODATA
from sarmae_cli.outputs import atomic_output, check_output_folder
from sarmae_cli.shipped import resolve_weights

SCENE_CRS = "EPSG:32631"  # WGS 84 / UTM zone 31N
ORIGIN = (645_600.0, 5_830_000.0)  # upper-left corner: ~52.60 N, 5.15 E (Markermeer, NL)
PIXEL_M = 10.0  # Sentinel-1 GRD pixel spacing
NODATA = -9999.0  # scene nodata (dB); the truth mask uses 255
BAND_NAMES = ("VV", "VH")
CHIP = 128  # classify chips, pixels (a 2 x 2 grid of them)
MIN_SIZE = 2 * CHIP
STEPS = 4


@dataclass
class Step:
    """One step of the demo as reported to the user."""

    number: int
    title: str
    command: str | None  # the shell command that does the same on the user's data
    outputs: list[Path]
    results: list[str] = field(default_factory=list)


@dataclass
class DemoResult:
    """What the demo did: its steps, the water IoU against the truth (None when the water
    weights have no class named 'water'), the top class of each chip and the water IoU of the
    threshold baseline."""

    steps: list[Step]
    water_iou: float | None
    chips: list[dict[str, Any]]
    baseline_iou: float | None = None


@dataclass
class _Job:
    """Shipped weights for one command, loaded, and the bands of the demo scene they take."""

    models: Models
    bands: str | None  # --bands; None: all bands of the scene


def demo_outputs(outdir: Path) -> dict[str, Path]:
    """Every file the demo writes under `outdir`."""
    out = {
        "scene": outdir / "scene.tif",
        "truth": outdir / "scene_truth.tif",
        "water": outdir / "water.tif",
        "preview": outdir / "water.png",
        "water_threshold": outdir / "water_threshold.tif",
        "embeddings": outdir / "embeddings.parquet",
    }
    out.update({f"chip_{i}": outdir / "chips" / f"chip_{i}.tif" for i in range(1, 5)})  # chip_offsets
    return out


def synthetic_scene(size: int, seed: int, bands: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """dB backscatter [bands, size, size] float32 (NODATA outside the swath) and the water truth
    [size, size] uint8 (1 water, 0 land, 255 nodata)."""
    power, water = speckled_scene(size, size, bands=bands, seed=seed)
    db = as_mode(power, "db")  # [bands, H, W]
    rows = np.arange(size)[:, None] / size
    outside = np.arange(size)[None, :] < size * (0.02 + 0.06 * (1 - rows))  # [H, W] swath edge
    db[:, outside] = NODATA
    truth = water.astype(np.uint8)
    truth[outside] = 255
    return db, truth


def scene_transform() -> Affine:
    return from_origin(*ORIGIN, PIXEL_M, PIXEL_M)


def write_geotiff(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    nodata: float,
    descriptions: list[str],
    tags: dict[str, str],
    overwrite: bool,
) -> None:
    """A tiled, DEFLATE-compressed GeoTIFF of `data` [C, H, W] in SCENE_CRS, written atomically."""
    c, h, w = data.shape
    block = min(256, w, h) // 16 * 16
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, nodata=nodata,
        crs=SCENE_CRS, transform=transform, tiled=True, blockxsize=block, blockysize=block,
        compress="DEFLATE",
    )  # fmt: skip
    with atomic_output(path, overwrite) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)
        dst.update_tags(**tags)


def chip_offsets(size: int) -> list[tuple[int, int]]:
    """(row, col) of the four CHIP x CHIP chips, centred at 1/4 and 3/4 of the scene."""
    starts = [min(max(size * k // 4 - CHIP // 2, 0), size - CHIP) for k in (1, 3)]
    return [(r, c) for r in starts for c in starts]


def water_iou(class_map: Path, truth: np.ndarray, water_class: int) -> float:
    """IoU of `water_class` in a class-map raster against the truth mask, over pixels valid
    in both."""
    with raster.open_raster(class_map) as src:
        pred = src.read(1)  # [H, W] uint8
    valid = (pred != CLASS_NODATA) & (truth != 255)
    p, t = (pred == water_class) & valid, (truth == 1) & valid
    union = int((p | t).sum())
    return float((p & t).sum() / union) if union else 1.0


def _load(command: str, task: str | None, device: str) -> Models:
    return Models(command, resolve_weights(command, None, task), device)


def _jobs(device: str) -> tuple[dict[str, _Job], int]:
    """Load the three shipped weights (this fails on a missing or damaged file) and choose the
    scene's band count: the most any of them needs (1 for weights of one repeated band)."""
    loaded = {
        "segment": (_load("segment", "water", device), "probabilities"),
        "embed": (_load("embed", None, device), "pooled"),
        "classify": (_load("classify", None, device), "probabilities"),
    }
    need = {
        k: 1 if adaptable(m.meta.bands, 1) else m.meta.encoder_config.in_chans for k, (m, _) in loaded.items()
    }
    n = max(need.values())
    if n > len(BAND_NAMES):
        worst = max(need, key=need.get)
        raise UsageError(
            f"the demo scene has {len(BAND_NAMES)} bands at most ({', '.join(BAND_NAMES)}) but "
            f"{loaded[worst][0].path} takes {n}"
        )
    jobs = {}
    for k, (models, output) in loaded.items():
        models.backend(need[k], output)  # loads and checks the tensors now, before any output
        bands = None if need[k] == n else ",".join(str(i) for i in range(1, need[k] + 1))
        jobs[k] = _Job(models, bands)
    return jobs, n


def _check_outputs(outdir: Path, outputs: dict[str, Path], overwrite: bool) -> None:
    check_output_folder(outdir, "the demo's outputs")
    for p in outputs.values():
        if p.exists() and not overwrite:
            raise OutputExistsError(f"output {p} exists; pass --overwrite to replace it")


@dataclass
class _Run:
    """One demo run: where it writes and the options every step shares."""

    out: dict[str, Path]
    device: str
    overwrite: bool
    progress: Callable[[str], Progress | None] | None

    def options(self, job: _Job, label: str) -> Options:
        return Options(
            bands=job.bands, overwrite=self.overwrite, progress=self.progress and self.progress(label)
        )

    def command(self, *args: Any, job: _Job, overwrite: bool = True) -> str:
        """The `sarmae` command line a user would type for this step."""
        argv = ["sarmae", *(str(a) for a in args)]
        argv += ["--bands", job.bands] if job.bands else []
        argv += ["--device", self.device] * (self.device != "auto")
        return shlex.join(argv + ["--overwrite"] * (overwrite and self.overwrite))


def _scene_step(run: _Run, size: int, seed: int, n_bands: int) -> tuple[Step, np.ndarray, np.ndarray]:
    """Write the scene and its truth mask. Returns the step, the dB data and the truth."""
    out = run.out
    db, truth = synthetic_scene(size, seed, n_bands)
    names = list(BAND_NAMES[:n_bands])
    tags = {"UNITS": "dB", "SOURCE": f"sarmae demo: synthetic speckled scene, seed {seed}"}
    write_geotiff(out["scene"], db, scene_transform(), NODATA, names, tags, run.overwrite)
    truth_tags = {"CLASS_0": "land", "CLASS_1": "water", "SOURCE": tags["SOURCE"]}
    write_geotiff(
        out["truth"], truth[None], scene_transform(), 255, ["water (truth)"], truth_tags, run.overwrite
    )
    valid = truth != 255
    lines = [
        f"{size} x {size} px, {'+'.join(names)} backscatter in dB, {SCENE_CRS} (UTM 31N), {PIXEL_M:g} m "
        f"pixels, upper-left corner E {ORIGIN[0]:.0f} N {ORIGIN[1]:.0f} (about 52.60 N, 5.15 E: the "
        "Markermeer, the Netherlands)",
        f"{(truth[valid] == 1).mean():.1%} water; {(~valid).mean():.1%} nodata ({NODATA:g}) along the "
        "left edge, like a swath border",
        f"inspect it with: rio info {shlex.quote(str(out['scene']))}",
    ]
    return Step(1, "Synthetic Sentinel-1-like scene", None, [out["scene"], out["truth"]], lines), db, truth


def _segment_step(run: _Run, job: _Job, truth: np.ndarray) -> tuple[Step, float | None, float]:
    """`sarmae segment --task water` with a quicklook, then `--method threshold` (the physical
    baseline); the IoUs of their water classes."""
    out = run.out
    t0 = time.perf_counter()
    opts = run.options(job, "segment")
    s = segment_scene(out["scene"], out["water"], job.models, opts, preview=out["preview"])
    lines = [f"{s['tiles']} tiles in {time.perf_counter() - t0:.1f} s on {s['device']}"]
    names = job.models.class_names
    lowered = [n.strip().lower() for n in names]
    water = lowered.index("water") if "water" in lowered else None
    iou = None if water is None else water_iou(out["water"], truth, water)
    if iou is None:
        lines.append(f"no class named 'water' in {job.models.path.name} ({', '.join(names)}): no IoU")
    else:
        lines.append(f"water IoU against the synthetic truth: {iou:.3f}")
    base = threshold_scene(out["scene"], out["water_threshold"], Options(overwrite=run.overwrite))
    baseline = water_iou(out["water_threshold"], truth, 1)
    lines.append(
        f"physical baseline (threshold {base['threshold']:.1f} dB, no weights): water IoU {baseline:.3f}"
    )
    argv = ["sarmae", "segment", "--task", "water", "--method", "threshold", out["scene"]]
    argv += ["-o", out["water_threshold"], *["--overwrite"] * run.overwrite]
    lines.append(f"the baseline alone: {shlex.join(str(a) for a in argv)}")
    lines.append(f"open {out['preview']} for the water map over the scene")
    cmd = run.command(
        "segment", "--task", "water", out["scene"], "-o", out["water"], "--preview", out["preview"], job=job
    )
    written = [out["water"], out["preview"], out["water_threshold"]]
    return Step(2, "Water segmentation (shipped water weights)", cmd, written, lines), iou, baseline


def _embed_step(run: _Run, job: _Job) -> Step:
    """`sarmae embed`: one embedding per tile as GeoParquet."""
    out = run.out
    t0 = time.perf_counter()
    s = embed_scene(out["scene"], out["embeddings"], job.models, run.options(job, "embed"))
    lines = [
        f"{s['tiles']} tiles -> {s['embedding_dim']}-dim embeddings with footprints in {SCENE_CRS}, "
        f"{time.perf_counter() - t0:.1f} s on {s['device']}",
        f"read them in Python with geopandas.read_parquet({str(out['embeddings'])!r})",
    ]
    cmd = run.command("embed", out["scene"], "-o", out["embeddings"], job=job)
    return Step(3, "Tile embeddings (shipped encoder)", cmd, [out["embeddings"]], lines)


def _classify_step(
    run: _Run, job: _Job, db: np.ndarray, truth: np.ndarray, names: list[str]
) -> tuple[Step, list[dict[str, Any]]]:
    """Cut four chips from the scene and `sarmae classify` them (top class of each)."""
    size = truth.shape[0]
    offsets = chip_offsets(size)
    paths = [run.out[f"chip_{i}"] for i in range(1, len(offsets) + 1)]
    tags = {"UNITS": "dB", "SOURCE": "sarmae demo: chip of the synthetic scene"}
    for path, (r, c) in zip(paths, offsets, strict=True):
        chip = np.ascontiguousarray(db[:, r : r + CHIP, c : c + CHIP])  # [C, CHIP, CHIP]
        transform = scene_transform() @ Affine.translation(c, r)
        write_geotiff(path, chip, transform, NODATA, names, tags, run.overwrite)
    rows, failures = classify_chips(paths, job.models, run.options(job, "classify"), top_k=1)
    if failures:
        raise SarmaeError(f"classify failed on {failures[0]['input']}: {failures[0]['error']}")
    chips, lines = [], []
    for (r, c), row in zip(offsets, rows, strict=True):
        t = truth[r : r + CHIP, c : c + CHIP]
        frac = float((t == 1).sum() / max((t != 255).sum(), 1))
        cls, p = row["top"][0]
        chips.append({"path": row["path"], "water_fraction": frac, "class": cls, "probability": p})
        lines.append(f"{Path(row['path']).name} ({frac:.0%} water): top class {cls} (p={p:.2f})")
    lines.append(
        "note: the shipped classifier recognises military vehicles in MSTAR chips; these chips hold "
        "land and water, not vehicles, so this step only shows the interface"
    )
    cmd = run.command("classify", f"{paths[0].parent}/", "--top-k", "1", job=job, overwrite=False)
    title = f"Chip classification (shipped MSTAR classifier), {CHIP} x {CHIP} chips"
    return Step(4, title, cmd, paths, lines), chips


def run_demo(
    outdir: Path = Path("sarmae-demo"),
    size: int = 1024,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], Progress | None] | None = None,
    report: Callable[[Step], None] | None = None,
) -> DemoResult:
    """Generate the synthetic scene in `outdir` and run segment (water), embed and classify on
    it with the shipped weights. `progress(label)` gives a (done, total) callback per step;
    `report(step)` is called as each step finishes. Nothing is written when the shipped
    weights are missing or damaged, or an output exists without `overwrite`."""
    if size < MIN_SIZE:
        raise UsageError(f"--size {size} is too small; use {MIN_SIZE} or more")
    outdir = Path(outdir)
    run = _Run(demo_outputs(outdir), device, overwrite, progress)
    _check_outputs(outdir, run.out, overwrite)
    jobs, n_bands = _jobs(device)
    run.out["chip_1"].parent.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []

    def done(step: Step) -> None:
        steps.append(step)
        if report is not None:
            report(step)

    step, db, truth = _scene_step(run, size, seed, n_bands)
    done(step)
    step, iou, baseline = _segment_step(run, jobs["segment"], truth)
    done(step)
    done(_embed_step(run, jobs["embed"]))
    step, chips = _classify_step(run, jobs["classify"], db, truth, list(BAND_NAMES[:n_bands]))
    done(step)
    return DemoResult(steps, iou, chips, baseline)
