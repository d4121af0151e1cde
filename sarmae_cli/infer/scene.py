"""A scene opened for inference: band selection, nodata, and the input route of
`data/preprocess.py` resolved once per scene (radiometric mode, per-scene statistics from one
decimated read of the whole scene); windowed reads return normalised model input plus a
validity mask."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import Affine

from sarmae_cli.data import raster
from sarmae_cli.data.bands import model_roles, polarisation, select_bands
from sarmae_cli.data.geometry import NATIVE, Scale, resolve_gsd
from sarmae_cli.data.preprocess import (
    INPUT_SCALES,
    InputSpec,
    Radiometry,
    adaptable,
    check_band_count,
    check_input_scale,
    resample,
)
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.paths import as_input

__all__ = ["INPUT_SCALES", "Scene", "open_scene", "resolve_bands"]


@dataclass
class Scene:
    """An open scene and everything needed to turn its pixels into model input."""

    path: Path
    src: rasterio.DatasetReader
    indexes: list[int]
    nodata: float | None
    radiometry: Radiometry
    warnings: list[str] = field(default_factory=list)
    band_note: str = ""  # which bands were used as what
    scale: Scale = NATIVE  # model pixels per input pixel (scene GSD / model GSD), (rows, cols)
    gsd_note: str = ""

    @property
    def scaling(self) -> Scaling:
        return self.radiometry.scaling

    @property
    def ranges(self) -> np.ndarray:
        """[C, 2] per-band stretch (lo, hi)."""
        return self.radiometry.ranges

    @property
    def notes(self) -> list[str]:
        """What was chosen, for the user."""
        return [n for n in (self.band_note, *self.radiometry.notes, self.gsd_note) if n]

    @property
    def height(self) -> int:
        """Rows of the grid the model runs on (the input's unless resampled, `scale`)."""
        return math.ceil(self.src.height * self.scale[0])

    @property
    def width(self) -> int:
        return math.ceil(self.src.width * self.scale[1])

    @property
    def input_height(self) -> int:
        """Rows of the input grid, where outputs are written."""
        return self.src.height

    @property
    def input_width(self) -> int:
        return self.src.width

    @property
    def crs(self) -> rasterio.crs.CRS | None:
        return self.src.crs

    @property
    def transform(self) -> rasterio.Affine:
        return self.src.transform

    @property
    def gcps(self) -> tuple[list[GroundControlPoint], rasterio.crs.CRS | None]:
        """(GCPs, their CRS) of a scene georeferenced only by GCPs; ([], None) otherwise."""
        return raster.read_gcps(self.src)

    def georef(self, scale: int = 1) -> dict:
        """`crs`, `transform` and `gcps` of an output grid `scale` times coarser than the scene
        (1: the scene's grid): the scene transform scaled, or for a GCP-only scene its GCPs with
        pixel/line divided by `scale` (`crs` is then the GCPs' CRS)."""
        gcps, gcp_crs = self.gcps
        if gcps:
            return {"crs": gcp_crs, "transform": None, "gcps": raster.scale_gcps(gcps, scale)}
        return {"crs": self.crs, "transform": self.transform @ Affine.scale(scale), "gcps": []}

    @property
    def band_names(self) -> list[str]:
        return [self.src.descriptions[i - 1] or f"band {i}" for i in self.indexes]

    def read(self, row_off: int, col_off: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Model input [C, height, width] float32 (0 where invalid) and validity [height, width],
        on the grid the model runs on (the input's, or resampled by `scale`)."""
        if self.scale == NATIVE:
            x, valid = raster.read_window(
                self.src, self.indexes, row_off, col_off, height, width, self.nodata
            )
            return self.radiometry.apply(x), valid
        fy, fx = self.scale
        r0, c0 = math.floor(row_off / fy), math.floor(col_off / fx)
        r1, c1 = math.ceil((row_off + height) / fy), math.ceil((col_off + width) / fx)
        x, valid = raster.read_window(self.src, self.indexes, r0, c0, r1 - r0, c1 - c0, self.nodata)
        return resample(self.radiometry.apply(x), valid, height, width)

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


def band_polarisations(src: rasterio.DatasetReader, name: str) -> list[str | None]:
    """The polarisation of each band: its description, else a POLARISATION band tag, else (one
    band) the file name."""
    pols = []
    for i in range(1, src.count + 1):
        tag = next((v for k, v in src.tags(i).items() if k.upper().startswith("POLARI")), None)
        pols.append(polarisation(src.descriptions[i - 1]) or polarisation(tag))
    if src.count == 1 and pols[0] is None:
        pols[0] = polarisation(name)
    return pols


def resolve_bands(
    src: rasterio.DatasetReader, bands: str | None, meta: WeightsMeta, name: str = ""
) -> tuple[list[int], str]:
    """Band indexes to feed the model and the line saying which band is used as what: the
    `--bands` given, else chosen by polarisation role (`data/bands.py`). A band count the
    weights cannot take is a usage error."""
    in_chans = meta.encoder_config.in_chans
    if bands:
        indexes, note = raster.band_indexes(src, bands), ""
    else:
        roles = ["co"] if adaptable(meta.bands, 1) else model_roles(meta.bands)
        prefer = [polarisation(b) or "" for b in meta.bands]
        names = [d or "" for d in src.descriptions]
        choice = select_bands(band_polarisations(src, name or src.name), names, roles, prefer)
        indexes, note = choice.indexes, choice.note
    check_band_count(len(indexes), in_chans, meta.bands, src.name)
    return indexes, note


def _georef_warnings(path: Path, src: rasterio.DatasetReader) -> list[str]:
    """What the user should know about the scene's georeferencing."""
    if src.crs is not None:
        return []
    gcps, gcp_crs = raster.read_gcps(src)
    if gcps:
        where = gcp_crs.to_string() if gcp_crs else "no CRS"
        return [
            f"{path.name} is georeferenced by {len(gcps)} GCPs ({where}), not a geotransform: "
            "outputs carry the same GCPs (warp with gdalwarp for a map grid)"
        ]
    return [f"{path.name} has no CRS: outputs will have none either"]


def open_scene(
    path: Path,
    meta: WeightsMeta,
    bands: str | None = None,
    nodata: float | None = None,
    input_scale: str = "auto",
    max_side: int = 1024,
    gsd: str | float = "native",
) -> Scene:
    """Open `path` for inference with the weights described by `meta`.

    Normalisation statistics are computed once per scene from a decimated read (at most
    `max_side` pixels per side), excluding nodata, never per tile. `gsd` ("auto": the pixel
    size the weights record, "native", or metres) sets the grid the model runs on.
    """
    spec = InputSpec.from_meta(meta.to_dict())
    check_input_scale(input_scale)
    path = as_input(path)  # a GDAL virtual path stays verbatim (Path() would mangle it)
    src = raster.open_raster(path)
    try:
        dtype = raster.check_dtype(src)
        indexes, band_note = resolve_bands(src, bands, meta, Path(str(path)).name)
        nd = nodata if nodata is not None else src.nodata
        sample = raster.read_decimated(src, indexes, nd, max_side)  # [C, h, w], NaN = invalid
        if not np.isfinite(sample).all(axis=0).any():
            raise raster.RasterError(
                f"{path} has no valid pixels (all nodata, NaN or masked); check the file or --nodata"
            )
        radiometry = spec.radiometry(sample, input_scale, _hints(path, src), dtype)
        scale, gsd_note = resolve_gsd(raster.pixel_size(src), spec.gsd, gsd)
        warns = _georef_warnings(path, src)
        return Scene(path, src, indexes, nd, radiometry, warns, band_note, scale, gsd_note)
    except BaseException:
        src.close()
        raise
