"""Raster I/O with rasterio: the only module that opens rasters (GeoTIFF scenes and
PNG/JPEG/TIFF chips; `data/vrt.py` opens a scene given as one file per polarisation through
it). Library errors become `RasterError` with a message a user can act on."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from sarmae_cli.data.bands import polarisation
from sarmae_cli.errors import NotFoundError, SarmaeError, UsageError
from sarmae_cli.paths import CHIP_SUFFIXES as CHIP_SUFFIXES  # the suffix tables, kept here too
from sarmae_cli.paths import GEOTIFF_SUFFIXES as GEOTIFF_SUFFIXES
from sarmae_cli.paths import IMAGE_SUFFIXES as IMAGE_SUFFIXES
from sarmae_cli.paths import SCENE_SUFFIXES as SCENE_SUFFIXES
from sarmae_cli.paths import is_virtual, require_path


class RasterError(SarmaeError):
    """A file is missing, not a raster, empty, truncated or of an unsupported type."""


class InputNotFoundError(RasterError, NotFoundError):
    """The named input does not exist or is a folder: a usage error (exit 2), as a missing
    dataset or pretraining source is."""

    exit_code = 2


class BandError(RasterError, UsageError):
    """`--bands` names a band the input does not have: a usage error (exit 2), as a band-count
    mismatch with the weights is."""

    exit_code = 2


#: What GDAL says when a virtual file (a ZIP member, an object, a URL) is not there.
_NOT_THERE = ("does not exist", "No such file", "HTTP response code: 404")


def _open_virtual(name: str) -> rasterio.DatasetReader:
    """Open a GDAL virtual path or URI as given (never through `Path`, which would collapse
    `/vsizip//abs` and `s3://`); a file GDAL does not find is an `InputNotFoundError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(str(name))
    except RasterioIOError as e:
        if any(t in str(e) for t in _NOT_THERE):
            raise InputNotFoundError(f"input not found: {name}") from e
        raise


def require_input(path: str | Path) -> None:
    """Refuse a named input that does not exist. GDAL virtual paths and URIs (`/vsizip/`,
    `/vsis3/`, `zip://`, `https://`) are checked by GDAL, not the file system."""
    if is_virtual(path):
        try:
            _open_virtual(str(path)).close()
        except RasterioIOError:
            pass  # there, but not readable as a raster: open_raster says so when it is read
    else:
        require_path(path, "input", InputNotFoundError)


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open a raster for reading, with one-line errors for the usual failures. A virtual
    path or URI (`paths.is_virtual`) goes to GDAL verbatim (a `paths.Stack` of files, one per
    polarisation, opens with `data/vrt.open_input`)."""
    try:
        if is_virtual(path):
            src = _open_virtual(str(path))
        else:
            path = Path(path)
            require_input(path)
            if path.is_dir():
                raise InputNotFoundError(f"{path} is a folder, not a raster")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                src = rasterio.open(path)
    except RasterioIOError as e:
        raise RasterError(f"{path} is not a readable raster ({str(e).splitlines()[0][:160]})") from e
    if src.width == 0 or src.height == 0 or src.count == 0:
        src.close()
        raise RasterError(f"{path} is empty ({src.width}x{src.height}, {src.count} bands)")
    return src


def read_image(path: Path) -> np.ndarray:
    """Read a whole chip (PNG/JPEG/TIFF, 8 or 16 bit, any band count) as [C, H, W]."""
    with open_raster(path) as src:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return src.read()
        except RasterioIOError as e:
            raise RasterError(f"{path} cannot be decoded ({str(e).splitlines()[0][:160]})") from e


def label(src: rasterio.DatasetReader) -> str:
    """A dataset's name for messages: its path, or for a stack of files (a VRT held in memory)
    its files' folder and names joined by '+'."""
    if not src.name.startswith("<VRTDataset"):
        return src.name
    files = [str(f) for f in src.files]
    folder = files[0][: len(files[0]) - len(Path(files[0]).name)]
    return folder + "+".join(Path(f).name for f in files)


def band_indexes(src: rasterio.DatasetReader, bands: str | None) -> list[int]:
    """1-based band indexes from `--bands` ("1,2" or descriptions "VV,VH"); all when None."""
    if not bands:
        return list(range(1, src.count + 1))
    out = []
    descriptions = [(d or "").strip().upper() for d in src.descriptions]
    pols = [polarisation(d) for d in descriptions]
    for token in (t.strip() for t in bands.split(",") if t.strip()):
        if token.isdigit():
            i = int(token)
            if not 1 <= i <= src.count:
                raise BandError(f"band {i} does not exist: {label(src)} has {src.count} band(s)")
            out.append(i)
        elif token.upper() in descriptions:
            out.append(descriptions.index(token.upper()) + 1)
        elif token.upper() in pols:  # `--bands VV` for a band described as Sigma0_VV_db
            out.append(pols.index(token.upper()) + 1)
        else:
            names = ", ".join(d for d in descriptions if d) or "none"
            raise BandError(f"no band described as {token!r} in {label(src)} (descriptions: {names})")
    return out


#: Pixel types the inference engine reads (complex SLC is read as amplitude).
SUPPORTED_DTYPES = (
    "uint8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "float32",
    "float64",
    "complex64",
    "complex128",
    "complex_int16",
)


def check_dtype(src: rasterio.DatasetReader) -> str:
    """The scene's pixel type, refused with a clear error when the engine cannot read it."""
    dtype = src.dtypes[0]
    if dtype not in SUPPORTED_DTYPES:
        supported = ", ".join(SUPPORTED_DTYPES)
        raise RasterError(f"{label(src)}: unsupported pixel type {dtype}; supported: {supported}")
    return dtype


def uses_mask(src: rasterio.DatasetReader) -> bool:
    """Whether the validity of pixels comes from an internal/external mask or alpha band."""
    flags = src.mask_flag_enums[0]
    return MaskFlags.per_dataset in flags or MaskFlags.alpha in flags


def _finish(
    src: rasterio.DatasetReader, data: np.ndarray, mask: np.ndarray | None, nodata: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Raw [C, h, w] pixels -> float32 with NaN where invalid, and validity [h, w]."""
    if np.iscomplexobj(data):
        data = np.abs(data)  # SLC -> amplitude
    data = data.astype(np.float32, copy=False)
    ok = np.isfinite(data).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        ok &= (data != np.float32(nodata)).all(axis=0)
    if mask is not None:
        ok &= mask
    data[:, ~ok] = np.nan
    return data, ok


def _decode_error(src: rasterio.DatasetReader, e: Exception) -> RasterError:
    return RasterError(f"{label(src)} cannot be decoded ({str(e).splitlines()[0][:160]})")


def read_window(
    src: rasterio.DatasetReader,
    indexes: list[int],
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    nodata: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boundless read: float32 [C, height, width] and validity [height, width] (bool).

    The part of the window outside the scene is filled with NaN and marked invalid. A pixel is
    valid when it is inside the scene, every band is finite and differs from `nodata`, and the
    dataset mask (if the file has one) says so. Invalid pixels are NaN. Complex (SLC) pixels
    are read as amplitude.
    """
    out = np.full((len(indexes), height, width), np.nan, np.float32)
    valid = np.zeros((height, width), bool)
    r0, c0 = max(row_off, 0), max(col_off, 0)
    r1, c1 = min(row_off + height, src.height), min(col_off + width, src.width)
    if r1 <= r0 or c1 <= c0:
        return out, valid
    win = Window(c0, r0, c1 - c0, r1 - r0)
    try:
        data = src.read(indexes, window=win)  # [C, h, w]
        mask = src.read_masks(1, window=win) > 0 if uses_mask(src) else None
    except RasterioIOError as e:
        raise _decode_error(src, e) from e
    data, ok = _finish(src, data, mask, nodata)
    ys, xs = slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off)
    out[:, ys, xs] = data
    valid[ys, xs] = ok
    return out, valid


def pixel_size(src: rasterio.DatasetReader) -> tuple[float, float] | None:
    """Ground sample distance in metres along rows and columns, (y, x), from the geotransform;
    degrees are converted at the scene centre. None without a CRS and geotransform (chips,
    GCP-only scenes)."""
    t = src.transform
    if src.crs is None or t.is_identity:
        return None
    sx, sy = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if src.crs.is_geographic:
        lat = math.radians((t * (src.width / 2, src.height / 2))[1])
        sx, sy = sx * 111_320.0 * math.cos(lat), sy * 110_574.0
    else:
        try:
            unit = src.crs.linear_units_factor[1]
        except CRSError:
            return None
        sx, sy = sx * unit, sy * unit
    return sy, sx


def read_decimated(
    src: rasterio.DatasetReader, indexes: list[int], nodata: float | None = None, max_side: int = 1024
) -> np.ndarray:
    """The whole scene at reduced resolution (every f-th pixel, at most `max_side` pixels per
    side), float32 [C, h, w], NaN where invalid: the sample for per-scene statistics.

    Files with overviews are read through them; others are read in bands of full-resolution
    rows (bounded memory) and subsampled, which is much faster than GDAL's pixel-by-pixel
    subsampled reads of tiled files."""
    f = max(1, int(np.ceil(max(src.height, src.width) / max_side)))
    try:
        if f > 1 and src.overviews(indexes[0]):
            h, w = max(1, src.height // f), max(1, src.width // f)
            nearest = Resampling.nearest
            data = src.read(indexes, out_shape=(len(indexes), h, w), resampling=nearest)
            mask = src.read_masks(1, out_shape=(h, w), resampling=nearest) > 0 if uses_mask(src) else None
            return _finish(src, data, mask, nodata)[0]
        band = f * max(1, 256 // f)  # rows per read, a multiple of f so that rows stay aligned
        parts = []
        for y in range(0, src.height, band):
            win = Window(0, y, src.width, min(band, src.height - y))
            data = src.read(indexes, window=win)[:, ::f, ::f].copy()  # not a view: frees the band
            mask = src.read_masks(1, window=win)[::f, ::f] > 0 if uses_mask(src) else None
            parts.append(_finish(src, data, mask, nodata)[0])
    except RasterioIOError as e:
        raise _decode_error(src, e) from e
    return np.concatenate(parts, axis=1)


def same_bands(src: rasterio.DatasetReader, max_side: int = 256) -> bool:
    """Whether every band holds the values of band 1 (in a decimated read): a grey image saved
    with three equal colour channels."""
    x = read_decimated(src, list(range(1, src.count + 1)), None, max_side)  # [C, h, w]
    return all(np.array_equal(x[0], b, equal_nan=True) for b in x[1:])


def read_valid(
    src: rasterio.DatasetReader, indexes: list[int], nodata: float | None = None, limit: int = 1 << 20
) -> np.ndarray:
    """Valid pixels of the whole scene at full resolution, float32 [C, 1, n] (n <= `limit`, the
    first ones in row order; n = 0 when there are none), read in bands of rows: the sample of a
    scene whose decimated read found no valid pixel (a few valid pixels between the sampled)."""
    parts, n = [np.zeros((len(indexes), 0), np.float32)], 0
    rows = max(1, (1 << 22) // max(src.width, 1))
    try:
        for y in range(0, src.height, rows):
            win = Window(0, y, src.width, min(rows, src.height - y))
            mask = src.read_masks(1, window=win) > 0 if uses_mask(src) else None
            data, ok = _finish(src, src.read(indexes, window=win), mask, nodata)
            parts.append(data[:, ok])
            n += int(ok.sum())
            if n >= limit:
                break
    except RasterioIOError as e:
        raise _decode_error(src, e) from e
    return np.concatenate(parts, axis=1)[:, None, :limit]


def read_gcps(src: rasterio.DatasetReader) -> tuple[list[GroundControlPoint], CRS | None]:
    """The ground control points of a dataset georeferenced only by GCPs (Sentinel-1 GRD
    measurement TIFFs, many L1 products) and their CRS. ([], None) for a dataset with a
    geotransform (GDAL and QGIS then ignore any GCPs) or without GCPs."""
    if src.crs is not None or not src.transform.is_identity:
        return [], None
    gcps, crs = src.gcps
    return (list(gcps), crs) if gcps else ([], None)


def scale_gcps(
    gcps: list[GroundControlPoint], factor: float | tuple[float, float]
) -> list[GroundControlPoint]:
    """GCPs of a grid `factor` times coarser than theirs (output pixel i covers input pixels
    [i * factor, (i + 1) * factor)), one factor or (rows, columns): pixel/line divided by it,
    ground coordinates kept."""
    fy, fx = factor if isinstance(factor, tuple) else (factor, factor)
    if (fy, fx) == (1, 1):
        return list(gcps)
    return [GroundControlPoint(g.row / fy, g.col / fx, g.x, g.y, g.z, g.id, g.info) for g in gcps]
