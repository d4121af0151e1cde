"""The streaming sliding-window engine.

Dense outputs (`predict_dense`): the scene is read one row of tiles at a time (a band of
`tile` rows, boundless at the edges), in pieces of `READ_COLUMNS` tile columns that are cut
into tiles and batched to the backend as they are read, so that only about two pieces of
input are alive, whatever the width. The predictions are blended with a raised-cosine weight
into an accumulator that holds one row of tiles. As soon as the next row of tiles starts, the
rows above it are final: they are normalised in place and handed to the sink. Memory
therefore depends on the tile size, the scene width and the batch size, never on the scene
height.

Per-tile outputs (`predict_tiles`): one vector per tile of a regular grid.

A reader thread prefetches the next tiles while the model runs; sinks may write in their
own thread. Tiles without any valid pixel are skipped without running the model.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from sarmae_cli.data.geometry import NATIVE
from sarmae_cli.infer.backend import Backend
from sarmae_cli.infer.scene import Scene
from sarmae_cli.infer.tiling import Grid, check_tiling, output_size, tile_weight

T = TypeVar("T")
Progress = Callable[[int, int], None]  # (tiles done, tiles total)
#: Tile columns per read of a dense row band (on the scene's own grid). One read of the whole
#: width made the reading's float32 temporaries (raw, dB, stretch, normalised) the largest
#: memory that grows with the width; in pieces, peak RSS fell from 928 to 910 MB at 8192 px
#: wide and from 1086 to 997 MB at 16384 (null model, docs/benchmarks.md). Pieces re-read
#: only the tile overlap at their seams. Each piece goes to the model as soon as it is read
#: (one piece is one batch at the default batch size of 16), not after the whole row.
READ_COLUMNS = 16


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, keeping up to `depth` items ready.

    Exceptions in the producer are re-raised in the consumer; closing the consumer early
    stops the producer."""
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as e:  # handed to the consumer
            q.put((done, e))

    thread = threading.Thread(target=produce, name="sarmae-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, err = q.get()
            if item is done:
                if err is not None:
                    raise err
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def auto_prefetch(backend: Backend, depth: int | None, default: int) -> int:
    """Prefetch depth: `depth` if given; else `default` when the model runs on a GPU (reading
    then overlaps the model), and 0 on CPU, where torch already uses every core and a
    reader thread only competes with it (measured on 2 cores at 4096^2: end-to-end / model
    time 1.36 with a reader thread, 1.00 reading in turn; docs/benchmarks.md)."""
    if depth is not None:
        return depth
    return default if not str(backend.device).startswith("cpu") else 0


class DenseSink(Protocol):
    """Receives finished output rows [y0, y1): blended `values` [K, n, W] (float32, NaN-free)
    and `valid` [n, W]; `close()` at the end. `values` is a view of the engine's accumulator,
    valid during the call only: a sink copies what it keeps."""

    def write_rows(self, y0: int, values: np.ndarray, valid: np.ndarray) -> None: ...


@dataclass
class RunStats:
    """What a run did."""

    tiles: int = 0  # tiles in the grid
    skipped: int = 0  # tiles without valid pixels (model not run)
    batches: int = 0
    model_seconds: float = 0.0
    extra: dict = field(default_factory=dict)


@dataclass
class _PieceItem:
    row: int
    columns: int  # tile columns of this piece (empty ones included)
    tiles: list[tuple[int, np.ndarray]]  # (col index, input [C, T, T]) of non-empty tiles
    valid: np.ndarray | None  # [To, Wo] validity of the row's band, with the row's last piece
    row_empty: bool = False  # last piece of a row without any non-empty tile


class _Accumulator:
    """Weighted sums of predictions over one row of tiles, flushed to the sink row by row."""

    def __init__(self, grid: Grid, channels: int, sink: DenseSink) -> None:
        self.grid, self.sink = grid, sink
        self.rows, self.cols = grid.rows, grid.cols
        t, w = min(grid.tile, grid.height), grid.width
        self.acc = np.zeros((channels, t, w), np.float32)  # [K, To, Wo]
        self.wsum = np.zeros((t, w), np.float32)  # [To, Wo]
        self.row = 0
        self.valid_rows: dict[int, np.ndarray] = {}  # tile row -> validity [To, Wo] of its band

    def set_valid(self, row: int, valid: np.ndarray) -> None:
        """The output validity [To, Wo] of tile row `row` (needed when that row is flushed)."""
        self.valid_rows[row] = valid

    def add(self, row: int, col: int, pred: np.ndarray) -> None:
        """Blend the prediction [K, To, To] of tile (row, col)."""
        while self.row < row:
            self.advance()
        g = self.grid
        n_rows, n_cols = g.shape
        w = tile_weight(g.tile, g.overlap, row, col, n_rows, n_cols)  # [To, To]
        h, x0 = self.acc.shape[1], self.cols[col]
        x1 = min(x0 + g.tile, g.width)
        w = w[:h, : x1 - x0]
        part = pred[:, :h, : x1 - x0]  # [K, h, w], a view of this batch's output
        part *= w
        self.acc[:, :, x0:x1] += part
        self.wsum[:, x0:x1] += w

    def advance(self) -> None:
        """Flush the rows the current tile row finished and move to the next tile row. The
        rows are normalised in place (no new array): rows without any tile keep their 0."""
        y0, y1 = self.grid.finished_rows(self.row)
        n = y1 - y0
        covered = self.wsum[:n] > 0  # [n, Wo]
        values = self.acc[:, :n]  # [K, n, Wo], a view: discarded after this flush
        np.divide(values, self.wsum[:n], out=values, where=covered)
        self.sink.write_rows(y0, values, self.valid_rows.pop(self.row)[:n] & covered)
        self.row += 1
        if self.row >= len(self.rows):
            return
        keep = self.acc.shape[1] - n
        for a in (self.acc[:], self.wsum[None]):
            a[:, :keep] = a[:, n:].copy()
            a[:, keep:] = 0

    def finish(self) -> None:
        while self.row < len(self.rows):
            self.advance()


def _output_valid(valid: np.ndarray, scale: int, shape: tuple[int, int]) -> np.ndarray:
    """Input validity [h, w] -> output validity [ho, wo]: any valid input pixel in the block."""
    if scale == 1:
        return valid
    ho, wo = shape
    v = valid[: ho * scale, : wo * scale].reshape(ho, scale, wo, scale)
    return v.any(axis=(1, 3))


def predict_dense(
    scene: Scene,
    backend: Backend,
    sink: DenseSink,
    tile: int,
    overlap: int,
    batch_size: int = 8,
    progress: Progress | None = None,
    prefetch_rows: int | None = None,
) -> RunStats:
    """Blended dense predictions of the whole scene, streamed to `sink` row by row.

    `tile` and `overlap` are in input pixels; outputs are at `backend.out_stride` input
    pixels per output pixel (the output raster is ceil(H / s) x ceil(W / s))."""
    s = backend.out_stride
    if s is None:
        raise ValueError("predict_dense needs a backend with dense outputs")
    check_tiling(tile, overlap, backend.patch_size)
    to = tile // s
    grid = Grid(output_size(scene.height, s), output_size(scene.width, s), to, overlap // s, "edge")
    stats = RunStats(tiles=len(grid))
    band_w = grid.width * s

    cols = grid.cols
    # a resampled scene is read in whole bands: resampling a piece is not exactly resampling
    # that part of a wider window
    step = READ_COLUMNS if scene.scale == NATIVE else len(cols)
    pieces = [cols[i : i + step] for i in range(0, len(cols), step)]

    def read() -> Iterator[_PieceItem]:
        for r, y in enumerate(grid.rows):
            valid = np.zeros((tile, max(band_w, tile)), bool)  # [T, W']
            c = 0
            row_tiles = 0
            for i, piece in enumerate(pieces):
                xa, xb = piece[0] * s, piece[-1] * s + tile  # input columns of these tiles
                x, v = scene.read(y * s, xa, tile, xb - xa)  # [C, T, xb - xa], [T, xb - xa]
                valid[:, xa:xb] = v
                tiles = []
                for x0 in piece:
                    if v[:, x0 * s - xa : x0 * s - xa + tile].any():
                        tiles.append((c, x[:, :, x0 * s - xa : x0 * s - xa + tile]))  # views
                    c += 1
                row_tiles += len(tiles)
                if i < len(pieces) - 1:
                    yield _PieceItem(r, len(piece), tiles, None)
                    continue
                vout = _output_valid(valid, s, (to, max(grid.width, to)))
                yield _PieceItem(r, len(piece), tiles, vout[:, : grid.width], row_tiles == 0)

    acc = _Accumulator(grid, backend.out_channels, sink)
    pending: list[tuple[int, int, np.ndarray]] = []
    done = 0

    def run_batch() -> None:
        nonlocal done
        if not pending:
            return
        t0 = time.perf_counter()
        preds = backend.predict(np.stack([p[2] for p in pending]))  # [B, K, To, To]
        stats.model_seconds += time.perf_counter() - t0
        stats.batches += 1
        for (r, c, _), pred in zip(pending, preds, strict=True):
            acc.add(r, c, pred)
        done += len(pending)
        pending.clear()
        if progress:
            progress(done + stats.skipped, stats.tiles)

    ahead = auto_prefetch(backend, prefetch_rows, 2) * len(pieces)  # rows of tiles read ahead, in pieces
    for item in prefetch(read(), ahead):
        if item.row_empty and pending:
            run_batch()  # keep the accumulator close to the reader on empty stretches
        if item.valid is not None:
            acc.set_valid(item.row, item.valid)
        if not pending:  # rows above this one are finished
            while acc.row < item.row:
                acc.advance()
        stats.skipped += item.columns - len(item.tiles)
        for c, x in item.tiles:
            pending.append((item.row, c, x))
            if len(pending) >= batch_size:
                run_batch()
        if progress and item.row_empty:
            progress(done + stats.skipped, stats.tiles)
    run_batch()
    acc.finish()
    return stats


@dataclass
class TileResult:
    """One tile of a regular grid: its position (in input pixels) and the model's vector."""

    row: int
    col: int
    y: int
    x: int
    size: int
    valid_fraction: float
    vector: np.ndarray  # [K]


def predict_tiles(
    scene: Scene,
    backend: Backend,
    tile: int,
    overlap: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    prefetch_tiles: int | None = None,
) -> tuple[Iterator[TileResult], RunStats]:
    """One model vector per tile of a regular grid (tiles may reach past the scene edge,
    read as nodata). Returns a lazy iterator of results and the stats it fills."""
    check_tiling(tile, overlap, backend.patch_size)
    grid = Grid(scene.height, scene.width, tile, overlap, "regular")
    stats = RunStats(tiles=len(grid))

    def tiles() -> Iterator[tuple[int, int, int, int, float, np.ndarray | None]]:
        for r, y in enumerate(grid.rows):
            for c, x0 in enumerate(grid.cols):
                x, valid = scene.read(y, x0, tile, tile)
                frac = float(valid.mean())
                yield r, c, y, x0, frac, (x if frac > 0 else None)

    def results() -> Iterator[TileResult]:
        pending: list = []
        done = 0

        def run() -> Iterator[TileResult]:
            nonlocal done
            t0 = time.perf_counter()
            out = backend.predict(np.stack([p[5] for p in pending]))  # [B, K]
            stats.model_seconds += time.perf_counter() - t0
            stats.batches += 1
            for p, v in zip(pending, out, strict=True):
                yield TileResult(p[0], p[1], p[2], p[3], tile, p[4], v)
            done += len(pending)
            pending.clear()
            if progress:
                progress(done + stats.skipped, stats.tiles)

        for item in prefetch(tiles(), auto_prefetch(backend, prefetch_tiles, 64)):
            if item[5] is None:
                stats.skipped += 1
                continue
            pending.append(item)
            if len(pending) >= batch_size:
                yield from run()
        if pending:
            yield from run()
        if progress:
            progress(stats.tiles, stats.tiles)

    return results(), stats
