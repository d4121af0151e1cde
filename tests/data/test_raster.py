"""Raster reading: boundless windows, validity (nodata, NaN/inf, masks), complex, decimation."""

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarmae_cli.data.raster import (
    RasterError,
    band_indexes,
    check_dtype,
    open_raster,
    read_decimated,
    read_image,
    read_window,
)


def _write(path, data, **kw):
    c, h, w = data.shape
    prof = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, crs="EPSG:32631")
    prof.update(transform=from_origin(0, 100, 1, 1), **kw)
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
    return path


def test_boundless_window_and_validity(tmp_path):
    data = np.arange(2 * 6 * 5, dtype=np.float32).reshape(2, 6, 5)
    data[0, 1, 1] = -99
    data[1, 2, 2] = np.inf
    p = _write(tmp_path / "a.tif", data, nodata=-99)
    with open_raster(p) as src:
        x, v = read_window(src, [1, 2], -2, 3, 5, 4, nodata=-99)
    assert x.shape == (2, 5, 4) and v.shape == (5, 4)
    assert not v[:2].any() and not v[:, 2:].any()  # outside the scene
    np.testing.assert_array_equal(x[:, 2:, :2], data[:, :3, 3:])
    assert v[2:, :2].all()
    with open_raster(p) as src:
        x, v = read_window(src, [1, 2], 0, 0, 3, 3, nodata=-99)
    assert not v[1, 1] and not v[2, 2] and np.isnan(x[:, 1, 1]).all() and v.sum() == 7


def test_internal_mask_and_complex(tmp_path):
    data = np.ones((1, 4, 4), np.float32)
    p = _write(tmp_path / "m.tif", data)
    with rasterio.open(p, "r+") as dst:
        m = np.full((4, 4), 255, np.uint8)
        m[0] = 0
        dst.write_mask(m)
    with open_raster(p) as src:
        _, v = read_window(src, [1], 0, 0, 4, 4)
    assert not v[0].any() and v[1:].all()
    slc = (np.full((1, 3, 3), 3 + 4j)).astype(np.complex64)
    p = _write(tmp_path / "c.tif", slc)
    with open_raster(p) as src:
        assert check_dtype(src) == "complex64"
        x, v = read_window(src, [1], 0, 0, 3, 3)
    np.testing.assert_allclose(x, 5.0) and v.all()


def test_decimated_read(tmp_path):
    data = np.zeros((1, 3000, 200), np.float32)
    data[0, :1500] = np.nan
    p = _write(tmp_path / "d.tif", data)
    with open_raster(p) as src:
        s = read_decimated(src, [1], max_side=300)
    assert max(s.shape[1:]) <= 300 and 0.4 < np.isnan(s).mean() < 0.6


def test_bands_and_errors(tmp_path):
    p = _write(tmp_path / "b.tif", np.zeros((2, 4, 4), np.float32))
    with rasterio.open(p, "r+") as dst:
        dst.descriptions = ("VV", "VH")
    with open_raster(p) as src:
        assert band_indexes(src, "vh,1") == [2, 1] and band_indexes(src, None) == [1, 2]
        with pytest.raises(RasterError, match="band 3 does not exist"):
            band_indexes(src, "3")
    with pytest.raises(RasterError, match="input not found"):
        open_raster(tmp_path / "nope.tif")
    (tmp_path / "x.tif").write_text("text")
    with pytest.raises(RasterError, match="not a readable raster"):
        read_image(tmp_path / "x.tif")
    p = _write(tmp_path / "i8.tif", np.zeros((1, 2, 2), np.int64))
    with open_raster(p) as src, pytest.raises(RasterError, match="unsupported pixel type int64"):
        check_dtype(src)
