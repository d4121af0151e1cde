"""Writers: streamed row-band GeoTIFFs converted to Cloud-Optimized GeoTIFFs, class maps with
colormaps, GeoParquet of tile embeddings, polygons of classes and quicklook PNGs."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning
from rasterio.shutil import copy as rio_copy
from rasterio.transform import GCPTransformer

from sarmae_cli.errors import SarmaeError

CLASS_NODATA = 255
#: Colours of class indexes 0.. (RGBA); water-style maps get 0 = grey, 1 = blue.
PALETTE = [
    (160, 160, 160, 255),
    (30, 110, 230, 255),
    (230, 80, 50, 255),
    (60, 180, 75, 255),
    (255, 200, 40, 255),
    (145, 30, 180, 255),
    (70, 240, 240, 255),
    (240, 50, 230, 255),
    (210, 245, 60, 255),
    (0, 128, 128, 255),
    (170, 110, 40, 255),
    (128, 0, 0, 255),
]


def colormap(n_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table for a class map: class i -> PALETTE[i], nodata 255 transparent."""
    cmap = {i: PALETTE[i % len(PALETTE)] for i in range(n_classes)}
    cmap[CLASS_NODATA] = (0, 0, 0, 0)
    return cmap


@dataclass
class RasterSpec:
    """What an output raster is: size, georeferencing, type and labels. Georeferencing is
    `crs` + `transform`, or for a GCP-only scene `gcps` (ground control points on this grid)
    with `crs` their CRS and `transform` unused."""

    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    crs: Any
    transform: Any
    gcps: list = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    resampling: str = "nearest"  # for overviews


def _block_rows(spec: RasterSpec, budget: int = 64 << 20) -> int:
    """Rows per internal block of the temporary GeoTIFF (the COG is tiled by `to_cog`): 256,
    fewer for very wide/deep rasters. The writer holds two bands of that many rows (25 MB for a
    class map 12288 px wide at 512 rows, 13 MB at 256; the COG is byte-identical)."""
    per_row = spec.width * spec.count * np.dtype(spec.dtype).itemsize
    rows = 256
    while rows > 16 and rows * per_row > budget:
        rows //= 2
    return rows


class RowBandWriter:
    """Writes finished rows, in order, into a tiled GeoTIFF; rows are copied into a band of one
    row of blocks, and a full band is written by a background thread (one write in flight).
    Two band buffers, allocated once, take turns: no copy or temporary per band."""

    def __init__(self, path: Path, spec: RasterSpec) -> None:
        self.path, self.spec = Path(path), spec
        self.block = _block_rows(spec)
        profile = {
            "driver": "GTiff",
            "width": spec.width,
            "height": spec.height,
            "count": spec.count,
            "dtype": spec.dtype,
            "nodata": spec.nodata,
            "crs": spec.crs,
            "transform": spec.transform,
            "tiled": True,
            "blockxsize": self.block,
            "blockysize": self.block,
            "compress": "ZSTD",  # fast; the final COG is recompressed
            "zstd_level": 1,
            "bigtiff": "IF_SAFER",
            "interleave": "pixel",
        }
        if spec.gcps:  # GDAL's GTiff and COG drivers keep GCPs (and their CRS)
            del profile["transform"]
            profile["gcps"] = spec.gcps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.dst = rasterio.open(self.path, "w", **profile)
        for i, d in enumerate(spec.descriptions, start=1):
            self.dst.set_band_description(i, d)
        if spec.tags:
            self.dst.update_tags(**spec.tags)
        if spec.colormap:
            self.dst.write_colormap(1, spec.colormap)
        self.band = self._new_band()  # (data [count, rows, W], mask [rows, W] 0/255) being filled
        self.spare: tuple[np.ndarray, np.ndarray] | None = None  # the other band, once written
        self.filled = 0  # rows of `band` filled
        self.y = 0  # first row of `band`
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sarmae-writer")
        self.pending: Future | None = None  # the write in flight; returns its band

    def _new_band(self) -> tuple[np.ndarray, np.ndarray]:
        rows, s = min(self.block, self.spec.height), self.spec
        return np.empty((s.count, rows, s.width), s.dtype), np.empty((rows, s.width), np.uint8)

    def write(self, rows: np.ndarray, valid: np.ndarray) -> None:
        """Append rows [count, n, width] (already in the output dtype) and their validity
        [n, width] (the internal mask)."""
        i, n = 0, rows.shape[1]
        while i < n:
            data, mask = self.band
            k = min(n - i, data.shape[1] - self.filled)
            data[:, self.filled : self.filled + k] = rows[:, i : i + k]
            np.multiply(valid[i : i + k], np.uint8(255), out=mask[self.filled : self.filled + k])
            self.filled += k
            i += k
            if self.filled == data.shape[1]:
                self._flush()

    def _flush(self) -> None:
        n = self.filled
        window = rasterio.windows.Window(0, self.y, self.spec.width, n)
        if self.pending is not None:
            self.spare = self.pending.result()
        self.pending = self.pool.submit(self._write, *self.band, n, window)
        self.band, self.spare = self.spare or self._new_band(), None
        self.y += n
        self.filled = 0

    def _write(
        self, data: np.ndarray, mask: np.ndarray, n: int, window: rasterio.windows.Window
    ) -> tuple[np.ndarray, np.ndarray]:
        self.dst.write(data[:, :n], window=window)
        self.dst.write_mask(mask[:n], window=window)
        return data, mask

    def close(self) -> None:
        """Write what is left and close the file."""
        try:
            if self.filled:
                self._flush()
            if self.pending is not None:
                self.pending.result()
            if self.y != self.spec.height:
                raise RuntimeError(f"wrote {self.y} of {self.spec.height} rows")
        finally:
            self.pool.shutdown(wait=True)
            self.dst.close()

    def abort(self) -> None:
        self.pool.shutdown(wait=True)
        self.dst.close()


def cog_threads(spec: RasterSpec) -> str:
    """GDAL compression threads of a COG: one for 8-bit rasters (class maps), which compress so
    fast that threads gain little (re-converting a 12288^2 class-map COG on the 2-core VM:
    0.67-0.96 s with one thread, 0.50-0.59 s with both cores) and cost memory at the end of a
    run, where it can set the peak of a `sarmae segment` run (docs/benchmarks.md); every core
    for the others (float32 outputs compress slowly)."""
    return "1" if np.dtype(spec.dtype).itemsize == 1 else "ALL_CPUS"


def to_cog(src: Path, dst: Path, spec: RasterSpec, co: dict[str, str] | None = None) -> None:
    """Convert a tiled GeoTIFF into a COG with GDAL's COG driver: DEFLATE (or `co`),
    overviews, and the nodata value, internal mask and colormap of `src`."""
    options = {
        "COMPRESS": "DEFLATE",
        "BLOCKSIZE": "512",
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": cog_threads(spec),
    }
    options["OVERVIEW_RESAMPLING"] = spec.resampling.upper()
    options.update({k.upper(): v for k, v in (co or {}).items()})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            rio_copy(str(src), str(dst), driver="COG", **options)
    except rasterio.errors.RasterioError as e:
        raise SarmaeError(f"cannot write COG {dst}: {str(e).splitlines()[0][:200]}") from e


def through_gcps(geoms: list, gcps: list[GroundControlPoint], name: str, max_segment: float) -> list:
    """Geometries in pixel coordinates (x = column, y = row, pixel corners on integers) -> the
    GCPs' CRS through GDAL's GCP transformer (a least-squares polynomial fitted to the GCPs).
    Edges are first split into pieces of at most `max_segment` pixels so that they follow the
    polynomial."""
    import shapely

    def to_ground(xy: np.ndarray) -> np.ndarray:  # [N, 2] (col, row) -> [N, 2] (x, y)
        xs, ys = t.xy(xy[:, 1], xy[:, 0], offset="ul")
        return np.column_stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)])

    try:  # fits the polynomial; GDAL's CPLE_* errors are not exported by rasterio.errors
        t = GCPTransformer(gcps)
    except Exception as e:
        raise SarmaeError(
            f"cannot map {name} through its {len(gcps)} GCPs ({str(e).splitlines()[0][:120]}); "
            "warp the scene first with gdalwarp"
        ) from e
    with t:
        dense = shapely.segmentize(np.asarray(geoms, dtype=object), max_segment)
        return list(shapely.transform(dense, to_ground))


@contextlib.contextmanager
def temp_beside(path: Path, suffix: str = ".tif") -> Iterator[Path]:
    """A temporary file name beside `path` (same filesystem), removed on exit."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
        Path(str(tmp) + ".aux.xml").unlink(missing_ok=True)


class CogSink:
    """A dense sink that encodes finished rows with `encode(values, valid) -> rows` and streams
    them to a temporary tiled GeoTIFF; `finish(dst)` converts it to a COG at `dst`."""

    def __init__(
        self,
        tmp: Path,
        spec: RasterSpec,
        encode: Callable[[np.ndarray, np.ndarray], np.ndarray],
        co: dict[str, str] | None = None,
    ) -> None:
        self.tmp, self.spec, self.encode, self.co = tmp, spec, encode, co
        self.writer = RowBandWriter(tmp, spec)

    def write_rows(self, y0: int, values: np.ndarray, valid: np.ndarray) -> None:
        self.writer.write(self.encode(values, valid), valid)

    def finish(self, dst: Path) -> None:
        self.writer.close()
        to_cog(self.tmp, dst, self.spec, self.co)

    def abort(self) -> None:
        self.writer.abort()


class Tee:
    """Sends finished rows to several sinks."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def write_rows(self, y0: int, values: np.ndarray, valid: np.ndarray) -> None:
        for s in self.sinks:
            s.write_rows(y0, values, valid)


def encode_classes(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Probabilities [K, n, W] -> class map [1, n, W] uint8 (argmax; 255 where invalid)."""
    best = values[0].copy()
    cls = np.zeros(best.shape, np.uint8)
    for k in range(1, values.shape[0]):  # arg-max, first index on ties; faster than argmax(axis=0)
        better = values[k] > best
        cls[better] = k
        np.maximum(best, values[k], out=best)
    cls[~valid] = CLASS_NODATA
    return cls[None]


def encode_float(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Values [K, n, W] -> float32 with NaN where invalid."""
    out = values.astype(np.float32, copy=True)
    out[:, ~valid] = np.nan
    return out
