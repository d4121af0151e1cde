"""Raster I/O with rasterio: the only module that opens rasters (GeoTIFF scenes and
PNG/JPEG/TIFF chips). Library errors become `RasterError` with a message a user can act on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from sarmae_cli.errors import SarmaeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class RasterError(SarmaeError):
    """A file is missing, not a raster, empty, truncated or of an unsupported type."""


def open_raster(path: Path) -> rasterio.DatasetReader:
    """Open a raster for reading, with one-line errors for the usual failures."""
    path = Path(path)
    if not path.exists():
        raise RasterError(f"input not found: {path}")
    if path.is_dir():
        raise RasterError(f"{path} is a folder, not a raster")
    try:
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


def band_indexes(src: rasterio.DatasetReader, bands: str | None) -> list[int]:
    """1-based band indexes from `--bands` ("1,2" or descriptions "VV,VH"); all when None."""
    if not bands:
        return list(range(1, src.count + 1))
    out = []
    descriptions = [(d or "").strip().upper() for d in src.descriptions]
    for token in (t.strip() for t in bands.split(",") if t.strip()):
        if token.isdigit():
            i = int(token)
            if not 1 <= i <= src.count:
                raise RasterError(f"band {i} does not exist: {src.name} has {src.count} band(s)")
            out.append(i)
        elif token.upper() in descriptions:
            out.append(descriptions.index(token.upper()) + 1)
        else:
            names = ", ".join(d for d in descriptions if d) or "none"
            raise RasterError(f"no band described as {token!r} in {src.name} (descriptions: {names})")
    return out
