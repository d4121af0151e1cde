"""Outputs back on the input grid when a scene runs at the model's pixel size (`--gsd`).

The engine predicts on the model grid (the scene resampled by `Scene.scale`, model pixels per
input pixel); `ToInputGrid` sits between the engine and the writers and turns each finished
model-grid row band into the input-grid rows it covers (nearest neighbour), keeping only the
few model rows still needed. Memory stays bounded by the scene width, as in the engine.
"""

from __future__ import annotations

import numpy as np

from sarmae_cli.infer.engine import DenseSink


class ToInputGrid:
    """A dense sink on the model grid that writes input-grid rows [K, n, width] to `sink`."""

    def __init__(self, sink: DenseSink, scale: tuple[float, float], height: int, width: int) -> None:
        fy, fx = scale  # model pixels per input pixel along rows and columns
        grid_h, grid_w = int(np.ceil(height * fy)), int(np.ceil(width * fx))
        # the model pixel whose centre is nearest each input pixel's centre
        self.rows = np.minimum(((np.arange(height) + 0.5) * fy).astype(np.int64), grid_h - 1)
        self.cols = np.minimum(((np.arange(width) + 0.5) * fx).astype(np.int64), grid_w - 1)
        self.sink = sink
        self.next = 0  # next input row to write
        self.start = 0  # model row of the buffer's first row
        self.values: np.ndarray | None = None  # [K, m, grid_w]
        self.valid: np.ndarray | None = None  # [m, grid_w]

    def write_rows(self, y0: int, values: np.ndarray, valid: np.ndarray) -> None:
        if self.values is None:  # a copy: the engine reuses `values` after this call
            self.values, self.valid, self.start = values.copy(), valid.copy(), y0
        else:
            self.values = np.concatenate([self.values, values], axis=1)
            self.valid = np.concatenate([self.valid, valid], axis=0)
        end = self.start + self.values.shape[1]
        last = int(np.searchsorted(self.rows, end, side="left"))  # input rows fully covered
        if last > self.next:
            src = self.rows[self.next : last] - self.start
            out = self.values[:, src][:, :, self.cols]  # [K, n, width]
            self.sink.write_rows(self.next, out, self.valid[src][:, self.cols])
            self.next = last
        keep = int(self.rows[self.next]) if self.next < len(self.rows) else end
        if keep > self.start:  # drop model rows no input row needs any more
            self.values = self.values[:, keep - self.start :]
            self.valid = self.valid[keep - self.start :]
            self.start = keep
