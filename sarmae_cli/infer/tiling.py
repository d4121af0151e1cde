"""Pure tiling arithmetic for sliding-window inference (no GDAL, no torch).

Coordinates are in *output* pixels: an output pixel covers `scale` x `scale` input pixels
(1 for segmentation maps, the patch size for per-patch features). Tiles are `tile` output
pixels wide and step by `tile - overlap`.

Two layouts:
- `edge` (dense maps): the last tile is shifted back to end exactly at the scene edge, so no
  tile reaches past the scene unless the scene is smaller than one tile;
- `regular` (one value per tile): tiles sit on a regular grid of step `stride`, the last ones
  may reach past the edge (read as nodata), so tile (row, col) has a simple footprint.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from sarmae_cli.errors import UsageError


def check_tiling(tile: int, overlap: int, patch: int) -> None:
    """Refuse tile/overlap settings the model cannot run (tile in input pixels)."""
    if tile < patch:
        raise UsageError(
            f"--tile {tile} is smaller than the model's patch size {patch}; use --tile >= {patch}"
        )
    if tile % patch:
        raise UsageError(
            f"--tile {tile} is not a multiple of the model's patch size {patch}; "
            f"use e.g. --tile {max(patch, tile // patch * patch)}"
        )
    if overlap < 0 or overlap >= tile:
        raise UsageError(f"--overlap {overlap} must be >= 0 and smaller than --tile {tile}")


def tile_origins(n: int, tile: int, stride: int, layout: str = "edge") -> list[int]:
    """Start offsets of tiles of size `tile` and step `stride` along an axis of length `n`.

    `edge`: 0, stride, ... and a last tile ending exactly at `n` ([0] when n <= tile).
    `regular`: 0, stride, ... until the axis is covered (the last tile may pass `n`).
    """
    if n <= 0 or tile <= 0 or stride <= 0:
        raise ValueError(f"invalid axis n={n}, tile={tile}, stride={stride}")
    if n <= tile:
        return [0]
    count = math.ceil((n - tile) / stride) + 1
    origins = [i * stride for i in range(count)]
    if layout == "edge":
        origins[-1] = n - tile
    elif layout != "regular":
        raise ValueError(f"unknown layout {layout!r}")
    return origins


def ramp(overlap: int) -> np.ndarray:
    """Raised-cosine ramp of `overlap` values in (0, 1): sin^2 of half-pixel centres, so a ramp
    up plus the mirrored ramp down sum to exactly 1 and no value is zero."""
    i = np.arange(overlap, dtype=np.float64)
    return (np.sin(np.pi * (i + 0.5) / (2 * overlap)) ** 2).astype(np.float32)


def axis_weight(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D blending weight [tile]: flat 1 in the middle, a raised-cosine ramp over `overlap`
    pixels on each side that has a neighbour tile; sides on the scene border stay 1, so the
    outermost scene pixels never get a zero (or small) weight."""
    w = np.ones(tile, np.float32)
    ov = min(overlap, tile // 2)
    if ov > 0:
        r = ramp(ov)
        if not first:
            w[:ov] = r
        if not last:
            w[tile - ov :] = r[::-1]
    return w


def tile_weight(tile: int, overlap: int, row: int, col: int, n_rows: int, n_cols: int) -> np.ndarray:
    """2-D Hann-type blending weight [tile, tile] of tile (row, col) in an n_rows x n_cols grid
    (cached and read-only: there are at most 9 distinct ones per grid)."""
    return _weight(tile, overlap, row == 0, row == n_rows - 1, col == 0, col == n_cols - 1)


@functools.lru_cache(maxsize=64)
def _weight(tile: int, overlap: int, top: bool, bottom: bool, left: bool, right: bool) -> np.ndarray:
    w = np.outer(axis_weight(tile, overlap, top, bottom), axis_weight(tile, overlap, left, right))
    w.flags.writeable = False
    return w  # [T, T], > 0 everywhere


@dataclass(frozen=True)
class Grid:
    """Tiles over an output raster of `height` x `width` pixels."""

    height: int
    width: int
    tile: int
    overlap: int
    layout: str = "edge"

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def rows(self) -> list[int]:
        return tile_origins(self.height, self.tile, self.stride, self.layout)

    @property
    def cols(self) -> list[int]:
        return tile_origins(self.width, self.tile, self.stride, self.layout)

    @property
    def shape(self) -> tuple[int, int]:
        """(tile rows, tile columns)."""
        return len(self.rows), len(self.cols)

    def __len__(self) -> int:
        r, c = self.shape
        return r * c

    def finished_rows(self, row: int) -> tuple[int, int]:
        """Output rows [y0, y1) that no tile after tile-row `row` touches (ready to write)."""
        rows = self.rows
        y0 = rows[row]
        y1 = rows[row + 1] if row + 1 < len(rows) else self.height
        return y0, min(y1, self.height)


def output_size(n: int, scale: int) -> int:
    """Output pixels along an axis of `n` input pixels at `scale` input pixels per output pixel."""
    return math.ceil(n / scale)
