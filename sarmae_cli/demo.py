"""The library behind `sarmae demo`: the shipped weights on synthetic SAR scenes.

`run_demo` generates a speckled backscatter scene in dB with dark water bodies
(`data.synthetic.speckled_scene`, VV, plus VH only if the shipped weights want two bands),
georeferenced in UTM zone 31N (EPSG:32631) with 10 m pixels. Its upper-left corner is at
E 645600 m, N 5830000 m, about 52.60° N 5.15° E on the Markermeer east of Amsterdam (the
Netherlands), so the files land on a real map. A slanted strip along the left edge is
nodata, like the edge of a Sentinel-1 swath. It then runs the library functions behind
`sarmae segment --task water` and `sarmae embed` with the shipped weights. Then it
generates a sea scene with ship-like targets (bright elongated hulls on speckled sea
clutter, `ship_scene`, 2 m pixels, on the North Sea approach to Rotterdam) and runs
`sarmae detect --task ships` on it. For each step it reports the shell command that does
the same and the files written; the water map is scored (IoU) against the synthetic truth
beside the physical baseline (`sarmae segment --method threshold`, no weights), the ship
boxes (recall and precision at IoU 0.5) against the true ones.

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
from scipy.ndimage import gaussian_filter

from sarmae_cli.data import raster
from sarmae_cli.data.preprocess import adaptable
from sarmae_cli.data.synthetic import as_mode, speckled_scene
from sarmae_cli.errors import OutputExistsError, UsageError
from sarmae_cli.export.box_parity import match
from sarmae_cli.infer.api import Options, embed_scene, segment_scene
from sarmae_cli.infer.boxes import Boxes
from sarmae_cli.infer.detect import detect_scene
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
MIN_SIZE = 256
STEPS = 4
SHIP_ORIGIN = (560_000.0, 5_770_000.0)  # upper-left corner: ~52.07 N, 3.88 E (North Sea, off Rotterdam)
SHIP_PIXEL_M = 2.0  # a high-resolution product (HRSID's are 0.5-3 m)
SEA_DB = -27.0  # calm sea; hulls -8 to -2 dB with point scatterers 12 dB brighter


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
    weights have no class named 'water'), the ship boxes against the true ones (`ships`: true
    and false positives, misses, recall, precision at IoU 0.5) and the water IoU of the
    threshold baseline."""

    steps: list[Step]
    water_iou: float | None
    ships: dict[str, Any]
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
        "sea": outdir / "sea.tif",
        "sea_truth": outdir / "sea_truth.csv",
        "ships": outdir / "ships.gpkg",
        "ships_points": outdir / "ships.csv",
        "ships_preview": outdir / "ships.png",
    }
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
    nodata: float | None,
    descriptions: list[str],
    tags: dict[str, str],
    overwrite: bool,
) -> None:
    """A tiled, DEFLATE-compressed GeoTIFF of `data` [C, H, W] in SCENE_CRS, written atomically
    (`nodata` None: every pixel valid)."""
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


def ship_scene(size: int, seed: int, bands: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Linear-power sea clutter [bands, size, size] float32 with ship-like targets, and the
    ships' true boxes [M, 4] (x0, y0, x1, y1 pixel corners). The sea: SEA_DB with a slow
    swell of about 1.5 dB; ships: elongated hulls 12-48 px long, 3-12 px wide, any heading,
    about 20 dB above the sea with a few point scatterers 12 dB above that; everything
    multiplied by 2-look Gamma speckle (the cross-pol band, if any, 6 dB darker). About one ship per
    200 x 200 px, none closer than a hull length to the scene edge or another."""
    rng = np.random.default_rng(seed)
    swell = gaussian_filter(rng.standard_normal((size, size)), sigma=size / 8)
    db = SEA_DB + swell * (1.5 / max(float(swell.std()), 1e-9))  # [H, W] dB
    taken = np.zeros((size, size), bool)
    boxes: list[tuple[int, int, int, int]] = []
    want = max(3, round(size * size / 40_000))
    for _ in range(50 * want):
        if len(boxes) == want:
            break
        length = rng.uniform(12, 48)
        width = min(max(3.0, length / rng.uniform(4, 7)), 12.0)
        heading = rng.uniform(0, np.pi)
        cx, cy = rng.uniform(length, size - length, 2)
        r = int(length / 2) + 2
        y0, x0 = int(cy) - r, int(cx) - r
        yy, xx = np.mgrid[y0 : y0 + 2 * r + 1, x0 : x0 + 2 * r + 1] + 0.5  # pixel centres
        u = (xx - cx) * np.cos(heading) + (yy - cy) * np.sin(heading)  # along the hull
        v = -(xx - cx) * np.sin(heading) + (yy - cy) * np.cos(heading)
        hull = (np.abs(u) / (length / 2)) ** 4 + (v / (width / 2)) ** 2 <= 1  # a blunt ellipse
        rows, cols = np.nonzero(hull)
        rows, cols = rows + y0, cols + x0
        pad = int(length)
        near = taken[max(rows.min() - pad, 0) : rows.max() + pad, max(cols.min() - pad, 0) : cols.max() + pad]
        if near.any():
            continue
        taken[rows, cols] = True
        db[rows, cols] = rng.uniform(-8, -2) + rng.normal(0, 3, len(rows))
        bright = rng.choice(len(rows), size=max(1, len(rows) // 20), replace=False)
        db[rows[bright], cols[bright]] += 12  # corner reflectors of the superstructure
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    out = np.empty((bands, size, size), np.float32)
    for b in range(bands):
        speckle = rng.gamma(2.0, 0.5, size=(size, size))
        out[b] = (10 ** ((db - 6.0 * (b % 2)) / 10) * speckle).astype(np.float32)
    return out, np.array(boxes, np.float32).reshape(-1, 4)


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


def _jobs(device: str) -> tuple[dict[str, _Job], int, int]:
    """Load the three shipped weights (this fails on a missing or damaged file) and choose the
    band counts: of the land scene, the most the water and encoder weights need; of the sea
    scene, what the ship detector needs (1 for weights of one repeated band)."""
    loaded = {
        "segment": (_load("segment", "water", device), "probabilities"),
        "embed": (_load("embed", None, device), "pooled"),
        "detect": (_load("detect", "ships", device), "detections"),
    }
    need = {
        k: 1 if adaptable(m.meta.bands, 1) else m.meta.encoder_config.in_chans for k, (m, _) in loaded.items()
    }
    n = max(need["segment"], need["embed"])
    if max(need.values()) > len(BAND_NAMES):
        worst = max(need, key=need.get)
        raise UsageError(
            f"the demo scenes have {len(BAND_NAMES)} bands at most ({', '.join(BAND_NAMES)}) but "
            f"{loaded[worst][0].path} takes {need[worst]}"
        )
    jobs = {}
    for k, (models, output) in loaded.items():
        models.backend(need[k], output)  # loads and checks the tensors now, before any output
        own = need[k] if k == "detect" else n
        bands = None if need[k] == own else ",".join(str(i) for i in range(1, need[k] + 1))
        jobs[k] = _Job(models, bands)
    return jobs, n, need["detect"]


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


def _ship_step(run: _Run, job: _Job, size: int, seed: int, n_bands: int) -> tuple[Step, dict[str, Any]]:
    """Write the sea scene (in the radiometry the ship weights take) and its true boxes, run
    `sarmae detect --task ships` on it, and score the boxes against the truth (IoU 0.5)."""
    out = run.out
    power, truth = ship_scene(size, seed + 1, n_bands)
    mode = job.models.meta.input_scaling.get("mode", "db")
    data = as_mode(power, mode if mode in ("db", "power", "amplitude", "uint8", "uint16") else "db")
    names = list(BAND_NAMES[:n_bands])
    transform = from_origin(*SHIP_ORIGIN, SHIP_PIXEL_M, SHIP_PIXEL_M)
    tags = {"SOURCE": f"sarmae demo: synthetic sea, {len(truth)} ships, seed {seed + 1}", "INPUT_SCALE": mode}
    write_geotiff(out["sea"], data, transform, None, names, tags, run.overwrite)
    with atomic_output(out["sea_truth"], run.overwrite) as tmp:
        rows = ["col_min,row_min,col_max,row_max"] + [",".join(f"{v:g}" for v in b) for b in truth]
        tmp.write_text("\n".join(rows) + "\n")
    t0 = time.perf_counter()
    s = detect_scene(
        out["sea"], out["ships"], job.models, run.options(job, "detect"),
        points=out["ships_points"], preview=out["ships_preview"],
    )  # fmt: skip
    found = gpd_boxes(out["ships"])
    true = {"boxes": truth, "scores": np.ones(len(truth)), "labels": np.zeros(len(truth))}
    tp, fp, fn = match(found.as_dict(), true)
    score = {
        "ships": len(truth), "detections": len(found), "true_positives": tp, "false_positives": fp,
        "missed": fn, "recall": tp / max(len(truth), 1), "precision": tp / len(found) if len(found) else 1.0,
    }  # fmt: skip
    lines = [
        f"{size} x {size} px sea, {SHIP_PIXEL_M:g} m pixels, {len(truth)} ships 24-96 m long, {mode} "
        f"(the radiometry of the ship weights), {SCENE_CRS} off Rotterdam (about 52.07 N, 3.88 E)",
        f"{s['tiles']} tiles in {time.perf_counter() - t0:.1f} s on {s['device']}: {len(found)} boxes "
        f"scoring {s['min_score']:g} or more",
        f"against the true boxes (IoU 0.5): recall {score['recall']:.2f} ({tp} of {len(truth)} ships), "
        f"precision {score['precision']:.2f} ({fp} false alarms)",
        f"open {out['ships_preview']} for the boxes over the scene; true boxes in {out['sea_truth']}",
    ]
    cmd = run.command(
        "detect", "--task", "ships", out["sea"], "-o", out["ships"], "--points", out["ships_points"],
        "--preview", out["ships_preview"], job=job,
    )  # fmt: skip
    written = [out["sea"], out["sea_truth"], out["ships"], out["ships_points"], out["ships_preview"]]
    title = "Ship detection (shipped ship detector) on a synthetic sea scene"
    return Step(4, title, cmd, written, lines), score


def gpd_boxes(path: Path) -> Boxes:
    """The boxes (input pixels), scores and classes of a `detect` output."""
    import geopandas as gpd

    gdf = gpd.read_file(path)
    b = gdf[["col_min", "row_min", "col_max", "row_max"]].to_numpy(np.float32).reshape(-1, 4)
    return Boxes(b, gdf["score"].to_numpy(np.float32), gdf["class_id"].to_numpy(np.int64))


def run_demo(
    outdir: Path = Path("sarmae-demo"),
    size: int = 1024,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], Progress | None] | None = None,
    report: Callable[[Step], None] | None = None,
) -> DemoResult:
    """Generate the synthetic scenes in `outdir` and run segment (water) and embed on the land
    scene, detect (ships) on the sea scene, with the shipped weights. `progress(label)` gives a
    (done, total) callback per step; `report(step)` is called as each step finishes. Nothing
    is written when the shipped weights are missing or damaged, or an output exists without
    `overwrite`."""
    if size < MIN_SIZE:
        raise UsageError(f"--size {size} is too small; use {MIN_SIZE} or more")
    outdir = Path(outdir)
    run = _Run(demo_outputs(outdir), device, overwrite, progress)
    _check_outputs(outdir, run.out, overwrite)
    jobs, n_bands, ship_bands = _jobs(device)
    outdir.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []

    def done(step: Step) -> None:
        steps.append(step)
        if report is not None:
            report(step)

    step, _, truth = _scene_step(run, size, seed, n_bands)
    done(step)
    step, iou, baseline = _segment_step(run, jobs["segment"], truth)
    done(step)
    done(_embed_step(run, jobs["embed"]))
    step, ships = _ship_step(run, jobs["detect"], size, seed, ship_bands)
    done(step)
    return DemoResult(steps, iou, ships, baseline)
