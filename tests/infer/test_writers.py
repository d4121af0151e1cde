"""The row-band writer and the COG conversion: what goes in comes out, whatever the row chunks."""

import numpy as np
import pytest
import rasterio

from sarmae_cli.infer.writers import RasterSpec, RowBandWriter, _block_rows, cog_threads, to_cog
from tests.infer.conftest import TRANSFORM


def _spec(height: int, width: int, count: int, dtype: str) -> RasterSpec:
    return RasterSpec(width, height, count, dtype, None, "EPSG:32631", TRANSFORM)


@pytest.mark.parametrize(
    ("count", "dtype", "chunks"),
    [
        (1, "uint8", lambda b: [192] * 6 + [1]),  # the engine's row bands: blocks fill across calls
        (2, "float32", lambda b: [2 * b + b // 2]),  # one call filling two bands and part of a third
        (1, "uint8", lambda b: [7, b - 7, b, 3, b // 2]),  # calls ending on and off band boundaries
    ],
)
def test_row_band_writer_writes_every_row_and_mask(tmp_path, count, dtype, chunks):
    """Rows written in chunks of any size land at their place, with their validity as the
    internal mask (255 valid, 0 not), and the two band buffers never mix rows."""
    sizes = chunks(_block_rows(_spec(10_000, 40, count, dtype)))
    height, width = sum(sizes), 40
    rng = np.random.default_rng(0)
    data = (rng.random((count, height, width)) * 200).astype(dtype)  # [count, H, W]
    valid = rng.random((height, width)) > 0.2  # [H, W]
    w = RowBandWriter(tmp_path / "rows.tif", _spec(height, width, count, dtype))
    y = 0
    for n in sizes:
        w.write(data[:, y : y + n].copy(), valid[y : y + n].copy())  # the caller's arrays are its own
        y += n
    w.close()
    with rasterio.open(tmp_path / "rows.tif") as ds:
        np.testing.assert_array_equal(ds.read(), data)
        np.testing.assert_array_equal(ds.read_masks(1), np.where(valid, 255, 0))


def test_row_band_writer_refuses_missing_rows(tmp_path):
    w = RowBandWriter(tmp_path / "short.tif", _spec(600, 10, 1, "uint8"))
    w.write(np.zeros((1, 550, 10), np.uint8), np.ones((550, 10), bool))
    with pytest.raises(RuntimeError, match="wrote 550 of 600 rows"):
        w.close()


def test_class_map_cog_is_the_same_with_one_compression_thread(tmp_path):
    """Class maps are compressed with one thread (less memory, as fast), float rasters with
    every core; the COG of a class map is byte-identical to the one written with every core."""
    spec = _spec(1100, 700, 1, "uint8")
    spec.resampling = "mode"
    assert cog_threads(spec) == "1" and cog_threads(_spec(10, 10, 2, "float32")) == "ALL_CPUS"
    rng = np.random.default_rng(1)
    w = RowBandWriter(tmp_path / "classes.tif", spec)
    w.write(rng.integers(0, 3, (1, 1100, 700)).astype(np.uint8), np.ones((1100, 700), bool))
    w.close()
    to_cog(tmp_path / "classes.tif", tmp_path / "one.tif", spec)
    to_cog(tmp_path / "classes.tif", tmp_path / "all.tif", spec, {"NUM_THREADS": "ALL_CPUS"})
    assert (tmp_path / "one.tif").read_bytes() == (tmp_path / "all.tif").read_bytes()
