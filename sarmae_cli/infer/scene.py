"""A scene opened for inference: band selection, nodata, input scaling with per-scene
statistics (from one decimated read of the whole scene), and windowed reads that return
normalised model input plus a validity mask."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from sarmae_cli.data import raster
from sarmae_cli.data.scaling import MODES, Scaling, detect_mode, prepare, scene_scaling, stretch_range, to_db
from sarmae_cli.errors import UsageError
from sarmae_cli.model.checkpoint import WeightsMeta

INPUT_SCALES = ("auto", *MODES)


@dataclass
class Scene:
    """An open scene and everything needed to turn its pixels into model input."""

    path: Path
    src: rasterio.DatasetReader
    indexes: list[int]
    nodata: float | None
    scaling: Scaling
    ranges: np.ndarray  # [C, 2] per-band stretch (lo, hi)
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)  # what was chosen, for the user
    warnings: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.src.height

    @property
    def width(self) -> int:
        return self.src.width

    @property
    def crs(self) -> rasterio.crs.CRS | None:
        return self.src.crs

    @property
    def transform(self) -> rasterio.Affine:
        return self.src.transform

    @property
    def band_names(self) -> list[str]:
        return [self.src.descriptions[i - 1] or f"band {i}" for i in self.indexes]

    def read(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Model input [C, height, width] float32 (0 where invalid) and validity [height, width]."""
        x, valid = raster.read_window(self.src, self.indexes, row_off, col_off, height, width, self.nodata)
        return prepare(x, self.scaling, self.ranges, self.mean, self.std), valid

    def close(self) -> None:
        self.src.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hints(path: Path, src: rasterio.DatasetReader) -> str:
    """Text that may name the radiometry: file name, band descriptions, tags."""
    tags = " ".join(f"{k}={v}" for k, v in src.tags().items())
    return " ".join([path.name, *(d or "" for d in src.descriptions), tags])


def resolve_bands(src: rasterio.DatasetReader, bands: str | None, meta: WeightsMeta) -> list[int]:
    """Band indexes to feed the model; a count mismatch with the weights is a usage error."""
    indexes = raster.band_indexes(src, bands)
    want = meta.encoder_config.in_chans
    if len(indexes) != want and not adaptable(meta, len(indexes)):
        names = ", ".join(meta.bands)
        hint = "select bands with --bands (numbers or descriptions)" if len(indexes) > want else ""
        hint = hint or "use weights made for this many bands"
        raise UsageError(
            f"{src.name} gives {len(indexes)} band(s) but the weights expect {want} ({names}); {hint}"
        )
    return indexes


def adaptable(meta: WeightsMeta, n_bands: int) -> bool:
    """A single band may feed weights whose input bands are all the same band (e.g. the
    official SAR,SAR,SAR import): the patch embedding is adapted exactly (summed kernels)."""
    return n_bands == 1 and len(set(meta.bands)) == 1


def open_scene(
    path: Path,
    meta: WeightsMeta,
    bands: str | None = None,
    nodata: float | None = None,
    input_scale: str = "auto",
    max_side: int = 1024,
) -> Scene:
    """Open `path` for inference with the weights described by `meta`.

    Normalisation statistics are computed once per scene from a decimated read (at most
    `max_side` pixels per side), excluding nodata, never per tile.
    """
    if input_scale not in INPUT_SCALES:
        raise UsageError(f"unknown --input-scale {input_scale!r}; use one of {', '.join(INPUT_SCALES)}")
    path = Path(path)
    src = raster.open_raster(path)
    try:
        dtype = raster.check_dtype(src)
        indexes = resolve_bands(src, bands, meta)
        nd = nodata if nodata is not None else src.nodata
        sample = raster.read_decimated(src, indexes, nd, max_side)  # [C, h, w], NaN = invalid
        if not np.isfinite(sample).all(axis=0).any():
            raise raster.RasterError(
                f"{path} has no valid pixels (all nodata, NaN or masked); check the file or --nodata"
            )
        notes, warns = [], []
        if input_scale == "auto":
            kind = "complex64" if dtype.startswith("complex") else dtype  # incl. GDAL's complex_int16
            mode, reason = detect_mode(kind, sample[np.isfinite(sample)], _hints(path, src))
            notes.append(f"input scale: {mode} ({reason}); override with --input-scale")
        else:
            mode, reason = input_scale, "--input-scale"
        scaling = scene_scaling(Scaling.from_dict(meta.input_scaling), mode, reason)
        ranges = stretch_range(to_db(sample, mode), scaling)  # [C, 2]
        norm = meta.normalization
        n = len(indexes)
        mean = [norm["mean"][i % len(norm["mean"])] for i in range(n)]
        std = [norm["std"][i % len(norm["std"])] for i in range(n)]
        if src.crs is None:
            warns.append(f"{path.name} has no CRS: outputs will have none either")
        return Scene(path, src, indexes, nd, scaling, ranges, mean, std, notes, warns)
    except BaseException:
        src.close()
        raise
