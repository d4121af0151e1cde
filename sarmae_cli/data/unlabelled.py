"""Unlabelled SAR (and paired SAR-optical) data for pretraining.

Sources, mixed freely in one run:
- folders (searched recursively) of chips: PNG / JPEG / BMP read whole, TIFF read by window;
- GeoTIFF scenes of any size: every `.tif`/`.tiff` is read as random windows of
  `scene_window` pixels, never whole;
- manifests: a `.txt` with one path per line, or a `.csv` with a `path` (or `sar`) column;
  relative paths are relative to the manifest;
- ZIP archives (given, or found in a folder): the image members whose path inside the archive
  matches `zip_members` (a glob, e.g. `*/Patch_Cal/*` for OpenSARShip's calibrated chips) are
  read in place through GDAL's `/vsizip/`, never extracted.
Paired SAR-optical chips: a CSV with columns `sar`, `opt` (relative to the CSV, like
`paired_s1s2/pairs.csv`) or a folder with `sar/` and `opt/` sub-folders matched by file stem.
Chips are resized whole to the training size (`chip_fit="resize"`), or, with
`chip_fit="center_crop"`, cut to their centre at native resolution first (unpaired chips; a
target centred in its chip, as MSTAR, seen as `finetune --fit center_crop` will show it).
A TIFF no larger than `scene_window` is read whole and counts as a chip here.

Every file is probed once when the dataset is built (chips decoded, scenes opened and sampled):
unreadable files are skipped, counted and reported (`DataReport`), and a run with nothing
readable stops with an error naming the source. Input scaling is explicit (`scaling`) or
`auto`: each file's mode is detected by `scaling.detect_mode` (dtype, values, file name) and
the rules used are recorded in the report, then stored in the resulting weights.

A sample is a dict: `image` [C, S, S], the clean SAR crop scaled to [0, 1] (NaN/nodata -> 0)
and normalised with `mean`/`std`; `noisy`, the same after SARE speckle injection (equal to
`image` for samples that drew no noise; `speckled` says which); `is_paired`; and for paired
samples `opt` [3, T, T] in [0, 1] (zeros when unpaired) or, with a teacher
feature cache, `opt_feat` [D, g, g] resampled to the SAR token grid.
"""

from __future__ import annotations

import csv
import fnmatch
import math
import warnings
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import Dataset

from sarmae_cli.data import raster, scaling, speckle
from sarmae_cli.data.augment import Augment, crop_resize, flip_rotate, sample_rng
from sarmae_cli.data.preprocess import FITS, fit_chip, match_bands, per_band
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.paths import is_hidden, require_source

SCALINGS = ("auto", *scaling.MODES)


@dataclass(frozen=True)
class DataConfig:
    """How files become model input (see the module docstring)."""

    scaling: str = "auto"  # auto or one of scaling.MODES
    stretch: str = "fixed"  # dB -> [0, 1]: fixed `db_range`, per-image `percentiles` or `equalize`
    db_range: tuple[float, float] = (-30.0, 5.0)
    percentiles: tuple[float, float] = (2.0, 98.0)
    mean: tuple[float, ...] = (0.5,)  # per band, after scaling to [0, 1]: (u - mean) / std
    std: tuple[float, ...] = (0.5,)
    scene_window: int = 224  # pixels read per sample from a scene (then cropped and resized)
    chip_fit: str = "resize"  # unpaired chips: "resize" whole, or "center_crop" (native pixels)
    zip_members: str = "*"  # glob over member paths of ZIP sources (e.g. "*/Patch_Cal/*")
    paired_fraction: float | None = 0.7  # share of paired samples per epoch; None: natural
    augment: Augment = field(default_factory=Augment)

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise UsageError(f"unknown input scaling {self.scaling!r}; use one of {', '.join(SCALINGS)}")
        if self.paired_fraction is not None and not 0.0 <= self.paired_fraction <= 1.0:
            raise UsageError(f"paired fraction must be in [0, 1], got {self.paired_fraction}")
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise UsageError("mean and std need one value per band (or one for all), std > 0")
        if self.chip_fit not in FITS:
            raise UsageError(f"unknown chip fit {self.chip_fit!r}; use one of {', '.join(FITS)}")
        if self.scene_window < 16:
            raise UsageError(f"scene window must be >= 16 pixels, got {self.scene_window}")

    def base_scaling(self) -> scaling.Scaling:
        mode = "uint8" if self.scaling == "auto" else self.scaling
        return scaling.Scaling(mode, self.stretch, self.db_range, self.percentiles)


@dataclass(frozen=True)
class ImageRecord:
    """One readable file: how to read it and how to scale it."""

    path: str
    kind: str  # "chip" (read whole) or "scene" (read by random windows)
    height: int
    width: int
    bands: int
    mode: str  # input scaling mode
    rule: str  # why this mode
    ranges: tuple[tuple[float, ...], ...] | None  # per-band stretch knots; None: per-crop statistics
    nodata: float | None = None
    opt: str | None = None  # paired optical chip


@dataclass
class DataReport:
    """What a scan found: files used, skipped (with reasons) and the scaling rules applied."""

    used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    rules: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        modes = ", ".join(f"{m}: {n}" for m, n in self.modes.most_common())
        text = f"{self.used} image(s) used ({modes})"
        if self.skipped:
            first = "; ".join(f"{p} ({why})" for p, why in self.skipped[:3])
            text += f"; {len(self.skipped)} unreadable file(s) skipped, e.g. {first}"
        return text

    def input_scaling(self, cfg: DataConfig) -> dict[str, Any]:
        """The `input_scaling` record for weights metadata."""
        main = self.modes.most_common(1)[0][0] if self.modes else cfg.base_scaling().mode
        d = scaling.Scaling(main, cfg.stretch, cfg.db_range, cfg.percentiles).to_dict()
        d["extra"] = {
            "invalid_pixels": "NaN and nodata become 0 after scaling to [0, 1]",
            "chosen_by": "auto-detected per file" if cfg.scaling == "auto" else "given",
            "modes_seen": dict(self.modes),
            "rules": self.rules,
            "sare_domain": "dB (additive) for dB-stretched data, linear for uint8 renderings",
        }
        return d


# ---------------------------------------------------------------- finding files


def _read_manifest(path: Path) -> list[Path]:
    """Paths listed in a .txt (one per line) or .csv (`path` or `sar` column, else the first)."""
    base = path.parent
    if path.suffix.lower() == ".txt":
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        names = [ln for ln in lines if ln and not ln.startswith("#")]
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            col = next((c for c in ("path", "sar", "image") if c in cols), cols[0] if cols else None)
            if col is None:
                raise UsageError(f"manifest {path} has no header row; give a 'path' column")
            names = [row[col].strip() for row in reader if row.get(col)]
    return [p if p.is_absolute() else base / p for p in map(Path, names)]


def zip_images(path: Path, members: str = "*") -> list[Path]:
    """The image members of a ZIP archive matching the glob `members`, as GDAL `/vsizip/` paths
    (read in place). Raises SarmaeError for a broken archive or no matching image."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise SarmaeError(f"{path} is not a readable ZIP archive ({e}); re-download or unzip it") from e
    found = sorted(
        n for n in names if Path(n).suffix.lower() in raster.IMAGE_SUFFIXES and fnmatch.fnmatch(n, members)
    )
    if not found:
        raise UsageError(
            f"no images (PNG, JPEG, TIFF) matching '{members}' inside {path}; "
            "check --zip-member (a glob over paths inside the archive)"
        )
    return [Path(f"/vsizip/{{{Path(path).resolve()}}}/{n}") for n in found]


def find_images(sources: list[Path], zip_members: str = "*") -> list[Path]:
    """Image files named by `sources` (folders searched recursively, hidden files and folders
    left out, manifests, ZIP archives whose members match `zip_members`, files)."""
    out: list[Path] = []
    for src in map(Path, sources):
        require_source(src)  # exists; a folder holds images or ZIPs
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.is_file() and not is_hidden(p, src))
            found = [p for p in files if p.suffix.lower() in raster.IMAGE_SUFFIXES]
            for z in (p for p in files if p.suffix.lower() == ".zip"):
                found += zip_images(z, zip_members)
            out += found
        elif src.suffix.lower() in (".csv", ".txt"):
            listed = _read_manifest(src)
            if not listed:
                raise UsageError(f"manifest {src} lists no images")
            out += listed
        elif src.suffix.lower() == ".zip":
            out += zip_images(src, zip_members)
        elif src.suffix.lower() in raster.IMAGE_SUFFIXES:
            out.append(src)
        else:
            raise UsageError(f"{src} is not a folder, an image, a ZIP archive or a .csv/.txt manifest")
    return out


def read_pairs(path: Path) -> list[tuple[Path, Path]]:
    """SAR-optical pairs from a CSV (`sar`, `opt` columns, relative to it) or a folder with
    `sar/` and `opt/` sub-folders matched by stem. Missing files are an error listing them."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"paired manifest not found: {path}")
    if path.is_dir():
        sar_dir, opt_dir = path / "sar", path / "opt"
        if not (sar_dir.is_dir() and opt_dir.is_dir()):
            raise UsageError(f"paired folder {path} needs 'sar/' and 'opt/' sub-folders")
        return pairs_from_folders(sar_dir, opt_dir)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"sar", "opt"} <= set(reader.fieldnames or []):
            raise UsageError(
                f"paired manifest {path} needs columns 'sar' and 'opt' (has {reader.fieldnames})"
            )
        rows = [(row["sar"].strip(), row["opt"].strip()) for row in reader if row.get("sar")]
    pairs = [(path.parent / s, path.parent / o) for s, o in rows]
    if not pairs:
        raise UsageError(f"paired manifest {path} lists no pairs")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise SarmaeError(
            f"paired manifest {path}: {len(missing)} listed file(s) do not exist, e.g. "
            f"{', '.join(missing[:3])}; fix the paths (they are relative to the CSV)"
        )
    return pairs


def pairs_from_folders(sar_dir: Path, opt_dir: Path) -> list[tuple[Path, Path]]:
    """Pairs of files with the same stem in two folders (SAR files without a partner are an error)."""
    opts = {p.stem: p for p in sorted(Path(opt_dir).iterdir()) if p.suffix.lower() in raster.IMAGE_SUFFIXES}
    sars = sorted(p for p in Path(sar_dir).iterdir() if p.suffix.lower() in raster.IMAGE_SUFFIXES)
    if not sars:
        raise UsageError(f"no images found in {sar_dir}")
    lonely = [p.name for p in sars if p.stem not in opts]
    if lonely:
        raise SarmaeError(
            f"{len(lonely)} SAR file(s) in {sar_dir} have no optical partner of the same name in "
            f"{opt_dir}, e.g. {', '.join(lonely[:3])}"
        )
    return [(p, opts[p.stem]) for p in sars]


# ---------------------------------------------------------------- probing files


def _scene_sample(src: Any, nodata: float | None, n: int = 4, side: int = 64) -> np.ndarray:
    """A few small windows spread over a scene, [C, n*n*side*side]: enough to detect the
    scaling and percentiles without reading a whole (possibly huge) scene."""
    idx = list(range(1, src.count + 1))
    parts = []
    for fy in np.linspace(0, 1, n):
        for fx in np.linspace(0, 1, n):
            r = int(fy * max(0, src.height - side))
            c = int(fx * max(0, src.width - side))
            parts.append(raster.read_window(src, idx, r, c, side, side, nodata)[0].reshape(src.count, -1))
    return np.concatenate(parts, axis=1)


def probe(path: Path, cfg: DataConfig, opt: Path | None = None) -> ImageRecord:
    """Open (and for chips decode) one file; choose its scaling. Raises RasterError if unreadable."""
    kind = "scene" if path.suffix.lower() in raster.GEOTIFF_SUFFIXES else "chip"
    with raster.open_raster(path) as src:
        h, w, bands, dtype = src.height, src.width, src.count, src.dtypes[0]
        nodata = src.nodata
        if kind == "chip":
            sample = raster.read_image(path).astype(np.float32).reshape(bands, -1)
        else:
            sample = _scene_sample(src, nodata)
    if opt is not None:
        raster.read_image(opt)  # the optical partner must decode too
    if cfg.scaling == "auto":
        mode, rule = scaling.detect_mode(np.dtype(dtype), sample, hints=path.name)
    else:
        mode, rule = cfg.scaling, "given"
    sc = scaling.scene_scaling(cfg.base_scaling(), mode, rule)
    ranges = None
    if sc.stretch == "fixed" or mode == "uint8" or kind == "scene":
        db = scaling.to_db(sample, mode)
        ranges = tuple(tuple(float(x) for x in knots) for knots in scaling.stretch_range(db, sc))
    return ImageRecord(str(path), kind, h, w, bands, mode, rule, ranges, nodata, str(opt) if opt else None)


def scan(
    images: list[Path], pairs: list[tuple[Path, Path]], cfg: DataConfig, threads: int = 4
) -> tuple[list[ImageRecord], list[ImageRecord], DataReport]:
    """Probe every file (in threads); returns (unpaired records, paired records, report)."""
    report = DataReport()
    jobs = [(p, None) for p in images] + [(s, o) for s, o in pairs]

    def one(job: tuple[Path, Path | None]) -> ImageRecord | tuple[str, str]:
        try:
            return probe(Path(job[0]), cfg, job[1])
        except raster.RasterError as e:
            return (str(job[0]), str(e))

    with warnings.catch_warnings(), ThreadPoolExecutor(threads) as pool:  # filters are process-wide
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        results = list(pool.map(one, jobs))
    unpaired, paired = [], []
    for job, res in zip(jobs, results, strict=True):
        if isinstance(res, tuple):
            report.skipped.append(res)
            continue
        (paired if job[1] is not None else unpaired).append(res)
        report.used += 1
        report.modes[res.mode] += 1
        report.rules.setdefault(res.mode, res.rule)
    if report.used == 0:
        where = ", ".join(sorted({str(Path(p).parent) for p, _ in report.skipped})[:3]) or "the sources"
        raise SarmaeError(
            f"no readable images in {where}: all {len(report.skipped)} file(s) failed "
            f"(first: {report.skipped[0][1] if report.skipped else 'none'})"
        )
    return unpaired, paired, report


# ---------------------------------------------------------------- the dataset


def read_optical(path: str) -> torch.Tensor:
    """An optical chip as [3, H, W] in [0, 1]: 8-bit / 255, other types a 2-98 % stretch; grey
    is repeated to RGB, extra bands dropped."""
    x = raster.read_image(Path(path))
    if x.dtype == np.uint8:
        u = x.astype(np.float32) / 255.0
    else:
        x = x.astype(np.float32)
        lo, hi = np.nanpercentile(x, (2, 98))
        u = np.clip((x - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    t = torch.from_numpy(np.nan_to_num(u, nan=0.0))
    return t[[i % t.shape[0] for i in range(3)]]  # [3, H, W]


class PretrainData(Dataset):
    """Unpaired + paired SAR samples with a fixed paired share per epoch (see module doc).

    With `paired_fraction` f (and both kinds present) an epoch has N samples, of which round(f N)
    are paired: N = max(n_paired / f, n_unpaired / (1 - f)), so every file is seen at least once
    per epoch and the smaller kind is repeated.
    """

    def __init__(
        self,
        unpaired: list[ImageRecord],
        paired: list[ImageRecord],
        cfg: DataConfig,
        size: int,
        in_chans: int,
        opt_size: int = 224,
        speckle: speckle.SpeckleConfig | None = None,
        teacher_cache: Any = None,
        grid: int | None = None,
    ) -> None:
        self.unpaired, self.paired, self.cfg = unpaired, paired, cfg
        self.speckle = speckle if speckle is not None and speckle.enabled else None
        self.size, self.in_chans, self.opt_size = size, in_chans, opt_size
        self.cache, self.grid = teacher_cache, grid
        f = cfg.paired_fraction
        n_u, n_p = len(unpaired), len(paired)
        if n_p == 0 or n_u == 0 or f is None:
            self.n_paired, total = n_p, n_u + n_p
        elif f == 0.0:
            self.n_paired, total = 0, n_u
        elif f == 1.0:
            self.n_paired, total = n_p, n_p
        else:
            total = int(math.ceil(max(n_p / f, n_u / (1 - f))))
            self.n_paired = int(round(f * total))
        self.total = total

    def __len__(self) -> int:
        return self.total

    def record(self, i: int) -> ImageRecord:
        """Paired records fill the first `n_paired` indices (cycled), unpaired the rest."""
        if i < self.n_paired:
            return self.paired[i % len(self.paired)]
        return self.unpaired[(i - self.n_paired) % len(self.unpaired)]

    def _unit(self, x: np.ndarray, rec: ImageRecord) -> torch.Tensor:
        """Raw [k, h, w] -> [0, 1] float tensor (invalid -> 0)."""
        sc = scaling.scene_scaling(self.cfg.base_scaling(), rec.mode)
        db = scaling.to_db(x, rec.mode)
        ranges = np.asarray(rec.ranges, np.float32) if rec.ranges else scaling.stretch_range(db, sc)
        return torch.from_numpy(np.nan_to_num(scaling.to_unit(db, ranges), nan=0.0))

    def _read(self, rec: ImageRecord, rng: np.random.Generator) -> np.ndarray:
        """A chip whole, or a random `scene_window` window of a scene (the scene if smaller)."""
        if rec.kind == "chip":
            return raster.read_image(Path(rec.path))
        h, w = min(self.cfg.scene_window, rec.height), min(self.cfg.scene_window, rec.width)
        r = int(rng.integers(0, rec.height - h + 1))
        c = int(rng.integers(0, rec.width - w + 1))
        with raster.open_raster(Path(rec.path)) as src:
            data, _ = raster.read_window(src, list(range(1, rec.bands + 1)), r, c, h, w, rec.nodata)
        return data

    def read_whole(self, rec: ImageRecord) -> bool:
        """Whether a sample holds the whole file: a chip, or a TIFF no larger than one window
        (a TIFF chip). `chip_fit` applies to these; windows of larger scenes are never cut."""
        return rec.kind == "chip" or (
            rec.height <= self.cfg.scene_window and rec.width <= self.cfg.scene_window
        )

    def db_span(self, rec: ImageRecord) -> float:
        """dB range mapped to [0, 1]; 0 for 8-bit renderings (SARE treats their values as linear)."""
        if rec.mode == "uint8":
            return 0.0
        if rec.ranges:
            return float(np.mean([knots[-1] - knots[0] for knots in rec.ranges]))
        return float(self.cfg.db_range[1] - self.cfg.db_range[0])

    def normalize(self, unit: torch.Tensor) -> torch.Tensor:
        """[C, H, W] in [0, 1] -> (u - mean) / std per band (one value is used for all bands)."""
        c = unit.shape[0]
        mean = torch.tensor(per_band(self.cfg.mean, c)).view(c, 1, 1)
        std = torch.tensor(per_band(self.cfg.std, c)).view(c, 1, 1)
        return (unit - mean) / std

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = sample_rng()
        rec = self.record(i)
        params = self.cfg.augment.sample(rng)
        unit = match_bands(self._unit(self._read(rec, rng), rec), self.in_chans)  # [C, h, w]
        if self.cfg.chip_fit == "center_crop" and i >= self.n_paired and self.read_whole(rec):
            # unpaired chips only: a paired chip stays whole, aligned with its optical image
            unit = fit_chip(unit, self.size, "center_crop")  # [C, S, S] at native resolution
        clean = self.cfg.augment.apply(unit, params, self.size).clamp(0, 1)  # [C, S, S]
        noisy, speckled = clean, False
        if self.speckle is not None:
            noisy, speckled = speckle.inject(clean, self.speckle, rng, self.db_span(rec))
        out: dict[str, Any] = {
            "image": self.normalize(clean),  # the SARE target
            "noisy": self.normalize(noisy),  # the encoder input
            "speckled": torch.tensor(speckled),
            "is_paired": torch.tensor(i < self.n_paired),
        }
        if self.cache is not None:
            d = self.cache.dim
            feat = torch.zeros(d, self.grid, self.grid)
            if i < self.n_paired:
                full = torch.from_numpy(np.asarray(self.cache.get(rec.opt), np.float32))  # [D, gh, gw]
                feat = flip_rotate(
                    crop_resize(full, params.box, self.grid), params.hflip, params.vflip, params.rot90
                )
            out["opt_feat"] = feat  # [D, g, g]
        else:
            opt = torch.zeros(3, self.opt_size, self.opt_size)
            if i < self.n_paired and rec.opt:
                opt = self.cfg.augment.apply(read_optical(rec.opt), params, self.opt_size).clamp(0, 1)
            out["opt"] = opt  # [3, T, T]
        return out
