"""A scene opened for inference: band selection, nodata, and the input route of
`data/preprocess.py` resolved once per scene (radiometric mode, per-scene statistics from one
decimated read of the whole scene); windowed reads return normalised model input plus a
validity mask."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
from sarmae_cli.data.vrt import FILE_POLARISATION, open_input
from sarmae_cli.errors import UsageError
from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.paths import Stack, as_input

__all__ = ["INPUT_SCALES", "Scene", "open_scene", "resolve_bands"]


@dataclass
class Scene:
    """An open scene and everything needed to turn its pixels into model input."""

    path: Path | Stack  # a `Stack`: one scene given as one file per polarisation
    src: rasterio.DatasetReader
    indexes: list[int]
    nodata: float | None
    radiometry: Radiometry
    warnings: list[str] = field(default_factory=list)
    band_note: str = ""  # which bands were used as what
    scale: Scale = NATIVE  # model pixels per input pixel (scene GSD / model GSD), (rows, cols)
    gsd_note: str = ""
    empty: bool = False  # no valid pixel anywhere: every output is nodata

    @property
    def scaling(self) -> Scaling:
        return self.radiometry.scaling

    @property
    def ranges(self) -> np.ndarray:
        """[C, K] per-band stretch knots (`scaling.stretch_range`)."""
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

    def georef(self, step: float | None = None) -> dict:
        """`crs`, `transform` and `gcps` of an output grid: the input grid (`step` None), or one
        whose pixel is `step` pixels of the grid the model runs on. The scene transform scaled,
        or for a GCP-only scene its GCPs with pixel/line divided by the step (`crs` is then the
        GCPs' CRS)."""
        fy, fx = (1.0, 1.0) if step is None else (step / self.scale[0], step / self.scale[1])
        gcps, gcp_crs = self.gcps
        if gcps:
            return {"crs": gcp_crs, "transform": None, "gcps": raster.scale_gcps(gcps, (fy, fx))}
        return {"crs": self.crs, "transform": self.transform @ Affine.scale(fx, fy), "gcps": []}

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """A position (row, column) on the grid the model runs on -> on the input grid."""
        return y / self.scale[0], x / self.scale[1]

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


def _hints(path: Path | Stack, src: rasterio.DatasetReader) -> str:
    """Text that may name the radiometry: file name, band descriptions, tags."""
    tags = " ".join(f"{k}={v}" for k, v in src.tags().items())
    return " ".join([path.name, *(d or "" for d in src.descriptions), tags])


def band_polarisations(src: rasterio.DatasetReader, name: str) -> tuple[list[str | None], list[str]]:
    """The polarisation of each band: its description, else a POLARISATION band tag, else its
    file's name (a one-band file, or a file of a scene given as one file per polarisation); and
    a note for each band whose description, tag and file name disagree, saying which was used."""
    pols: list[str | None] = []
    notes = []
    for i in range(1, src.count + 1):
        tags = src.tags(i)
        tag = next((v for k, v in tags.items() if k.upper().startswith("POLARI")), None)
        file = tags.get(FILE_POLARISATION) or (name if src.count == 1 else None)
        said = [("description", src.descriptions[i - 1]), ("POLARISATION tag", tag), ("file name", file)]
        found = [(how, p) for how, text in said if (p := polarisation(text))]
        pols.append(found[0][1] if found else None)
        if len({p for _, p in found}) > 1:
            told = ", ".join(f"{how} {p}" for how, p in found)
            notes.append(f"band {i}: {told}; {found[0][1]} used (the {found[0][0]})")
    return pols, notes


def resolve_bands(
    src: rasterio.DatasetReader,
    bands: str | None,
    meta: WeightsMeta,
    name: str = "",
    where: Sequence[str] = (),
) -> tuple[list[int], str]:
    """Band indexes to feed the model and the line saying which band is used as what: the
    `--bands` given, else chosen by polarisation role (`data/bands.py`; `where` names each band
    in that line, e.g. its file). A band count the weights cannot take is a usage error."""
    in_chans = meta.encoder_config.in_chans
    if bands:
        indexes, note = raster.band_indexes(src, bands), ""
    else:
        roles = ["co"] if adaptable(meta.bands, 1) else model_roles(meta.bands)
        prefer = [polarisation(b) or "" for b in meta.bands]
        names = [d or "" for d in src.descriptions]
        pols, notes = band_polarisations(src, name or src.name)
        if 0 < len(roles) < src.count and not any(pols) and raster.same_bands(src):
            pols, names = [None], names[:1]  # a grey picture saved as colour: one band
            notes.append(f"bands 1-{src.count} hold the same values (a grey image saved as colour)")
        try:
            choice = select_bands(pols, names, roles, prefer, where)
        except UsageError as e:
            raise UsageError(f"{raster.label(src)}: {e}{_colour_hint(src)}") from e
        indexes, note = choice.indexes, "; ".join(n for n in (choice.note, *notes) if n)
    check_band_count(len(indexes), in_chans, meta.bands, raster.label(src))
    return indexes, note


def _colour_hint(src: rasterio.DatasetReader) -> str:
    """What to add to a refusal of a colour picture (red, green, blue bands)."""
    colours = [c.name for c in src.colorinterp if c.name in ("red", "green", "blue")]
    return (
        "; its bands are red, green and blue: a colour picture, not a SAR product"
        if len(colours) == 3
        else ""
    )


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
    src = open_input(path)
    try:
        dtype = raster.check_dtype(src)
        where = [""] * len(path.members) if isinstance(path, Stack) else []  # a file per band
        indexes, band_note = resolve_bands(src, bands, meta, path.name, where)
        nd = nodata if nodata is not None else src.nodata
        sample = raster.read_decimated(src, indexes, nd, max_side)  # [C, h, w], NaN = invalid
        if not np.isfinite(sample).all(axis=0).any():  # none sampled: any valid pixel at all?
            sample = raster.read_valid(src, indexes, nd)  # [C, 1, n]
        empty = sample.size == 0
        scale_mode = "weights" if empty else input_scale  # nothing to detect a scale from
        radiometry = spec.radiometry(sample, scale_mode, _hints(path, src), dtype)
        scale, gsd_note = resolve_gsd(raster.pixel_size(src), spec.gsd, gsd)
        warns = _georef_warnings(path, src)
        if empty:
            warns.append(
                f"{path.name} has no valid pixels (all nodata, NaN or masked): the outputs are all "
                "nodata; check the file or --nodata"
            )
        return Scene(path, src, indexes, nd, radiometry, warns, band_note, scale, gsd_note, empty)
    except BaseException:
        src.close()
        raise


def model_scale(path: Path, meta: WeightsMeta, gsd: str | float = "auto") -> Scale:
    """What `open_scene` resamples `path` by for the weights `meta` at `--gsd gsd` (model pixels
    per input pixel, rows and columns), from the file's georeferencing alone: no pixels read."""
    with open_input(as_input(path)) as src:
        return resolve_gsd(raster.pixel_size(src), InputSpec.from_meta(meta.to_dict()).gsd, gsd)[0]
