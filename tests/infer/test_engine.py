"""The streaming engine with hand-made backends: blending, seams, nodata, strides, streaming."""

import numpy as np
import pytest

from sarmae_cli.infer.engine import predict_dense, predict_tiles, prefetch
from sarmae_cli.infer.scene import open_scene
from tests.infer.conftest import db_scene, tiny_meta, write_scene


class PointBackend:
    """Per-pixel model: output = [2*x0 + 1, x1] (no receptive field)."""

    in_chans, patch_size, out_channels, out_stride, device = 2, 16, 2, 1, "test"

    def __init__(self):
        self.calls = 0

    def predict(self, batch):
        self.calls += len(batch)
        return np.stack([batch[:, 0] * 2 + 1, batch[:, 1]], 1).astype(np.float32)


class BoxBackend(PointBackend):
    """3x3 mean filter (small receptive field; zero padding at the tile border)."""

    def predict(self, batch):
        pad = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)))  # zeros around each tile
        h, w = batch.shape[-2:]
        out = sum(pad[:, :, i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9
        return out.astype(np.float32)


class PoolBackend(PointBackend):
    """Per-patch mean (out_stride = patch) or per-tile mean vector."""

    def __init__(self, stride):
        super().__init__()
        self.out_stride = stride

    def predict(self, batch):
        if self.out_stride is None:
            return batch.mean(axis=(2, 3))
        b, c, t, _ = batch.shape
        p = self.out_stride
        return batch.reshape(b, c, t // p, p, t // p, p).mean(axis=(3, 5))


class Rows:
    """A sink that keeps every row it receives."""

    def __init__(self):
        self.calls = []

    def write_rows(self, y0, values, valid):
        self.calls.append((y0, values.copy(), valid.copy()))

    def image(self):
        vals = np.concatenate([c[1] for c in self.calls], axis=1)
        valid = np.concatenate([c[2] for c in self.calls], axis=0)
        return vals, valid


def _scene(tmp_path, data, nodata=None):
    return open_scene(
        write_scene(tmp_path / "s.tif", data, nodata=nodata), tiny_meta("segmentation", classes=["a", "b"])
    )


@pytest.mark.parametrize("shape", [(90, 130), (20, 25), (32, 32), (33, 97)])
def test_blended_output_equals_whole_image_for_pointwise_model(tmp_path, shape):
    with _scene(tmp_path, db_scene(*shape)) as sc:
        sink = Rows()
        stats = predict_dense(sc, PointBackend(), sink, tile=32, overlap=8, batch_size=3)
        got, valid = sink.image()
        x, v = sc.read(0, 0, sc.height, sc.width)
    assert [c[0] for c in sink.calls] == sorted(c[0] for c in sink.calls)
    assert got.shape == (2, *shape) and valid.all() and v.all()
    np.testing.assert_allclose(got, np.stack([2 * x[0] + 1, x[1]]), atol=1e-5)
    assert stats.skipped == 0 and stats.tiles >= 1


def test_blended_equals_whole_image_with_small_receptive_field(tmp_path):
    with _scene(tmp_path, db_scene(96, 128)) as sc:
        sink = Rows()
        predict_dense(sc, BoxBackend(), sink, tile=32, overlap=16, batch_size=4)
        got, _ = sink.image()
        x, _ = sc.read(0, 0, sc.height, sc.width)
    whole = BoxBackend().predict(x[None])[0]
    inner = (slice(None), slice(1, -1), slice(1, -1))  # the scene border is zero-padded in both
    err = np.abs(got - whole)[inner]
    assert err.max() < 0.05 * np.abs(whole).max()  # only tile-border pixels differ, with tiny weight
    assert np.median(err) < 1e-6


def test_constant_scene_gives_constant_output(tmp_path):
    data = np.full((2, 75, 110), -12.0, np.float32)
    with _scene(tmp_path, data) as sc:
        sink = Rows()
        predict_dense(sc, BoxBackend(), sink, tile=32, overlap=8)
        got, _ = sink.image()
    inner = got[:, 1:-1, 1:-1]
    interior_tile = BoxBackend().predict(np.full((1, 2, 32, 32), inner[0, 0, 0], np.float32))[0]
    # the box filter shrinks only the outermost pixel ring of each tile; blending must hide tile
    # borders inside the scene: no seams = every interior value equals the interior-tile value
    np.testing.assert_allclose(inner, np.broadcast_to(interior_tile[:, 5:6, 5:6], inner.shape), atol=2e-3)


def test_nodata_is_respected_and_empty_tiles_skipped(tmp_path):
    data = db_scene(96, 96)
    data[:, :64, :] = np.nan  # two tile rows of nothing
    data[:, 80:, 90:] = np.inf  # inf is nodata too
    data[:, 70, 5] = -99.0
    backend = PointBackend()
    with _scene(tmp_path, data, nodata=-99.0) as sc:
        sink = Rows()
        stats = predict_dense(sc, backend, sink, tile=32, overlap=0, batch_size=2)
        got, valid = sink.image()
    expected = np.isfinite(data).all(0) & (data != -99).all(0)
    np.testing.assert_array_equal(valid, expected)
    assert stats.skipped == 6 and backend.calls == stats.tiles - 6 == 3
    assert np.isfinite(got).all()


def test_patch_stride_outputs(tmp_path):
    with _scene(tmp_path, db_scene(70, 100)) as sc:
        sink = Rows()
        predict_dense(sc, PoolBackend(16), sink, tile=32, overlap=16)
        got, valid = sink.image()
        x, _ = sc.read(0, 0, 80, 112)
    assert got.shape == (2, 5, 7)  # ceil(70/16), ceil(100/16)
    np.testing.assert_allclose(
        got[:, :4, :6], x[:, :64, :96].reshape(2, 4, 16, 6, 16).mean((2, 4)), atol=1e-5
    )


def test_memory_is_bounded_by_tile_rows(tmp_path):
    """The sink receives at most one tile-stride of rows per call, in order: the engine
    never holds more than one row of tiles, whatever the scene height."""
    with _scene(tmp_path, db_scene(300, 40)) as sc:
        sink = Rows()
        predict_dense(sc, PointBackend(), sink, tile=32, overlap=8, batch_size=5)
    ys = [c[0] for c in sink.calls]
    assert ys == sorted(ys) and len(ys) == 13
    assert max(c[1].shape[1] for c in sink.calls) <= 32


def test_predict_tiles_regular_grid(tmp_path):
    data = db_scene(70, 100)
    data[:, :, 96:] = np.nan
    with _scene(tmp_path, data) as sc:
        results, stats = predict_tiles(sc, PoolBackend(None), tile=32, batch_size=4)
        rows = list(results)
    assert stats.tiles == 3 * 4 and stats.skipped == 3  # the last tile column holds only nodata
    assert [(r.row, r.col) for r in rows] == [(r, c) for r in range(3) for c in range(3)]
    assert rows[-1].valid_fraction == pytest.approx((70 - 64) / 32)


def test_prefetch_propagates_errors_and_stops():
    def gen():
        yield 1
        raise ValueError("boom")

    it = prefetch(gen(), 2)
    assert next(it) == 1
    with pytest.raises(ValueError, match="boom"):
        next(it)
    it = prefetch(iter(range(10**6)), 2)
    assert next(it) == 0
    it.close()  # stops the producer thread
    assert list(prefetch(range(5), 0)) == list(range(5))


def _recording(read, widths):
    """`read` that also records the width of every read."""

    def wrapper(y, x, h, w):
        widths.append(w)
        return read(y, x, h, w)

    return wrapper


@pytest.mark.parametrize("backend", [BoxBackend(), PoolBackend(16)])
def test_row_bands_read_in_pieces_give_the_same_output(tmp_path, monkeypatch, backend):
    """Reading each row of tiles in pieces of 2 tile columns (scene 33 x 300 px: 18 columns
    of 32-px tiles at overlap 16) gives exactly what one read of the whole width gives, nodata
    included, and no read is wider than 2 tiles and their overlap."""
    from sarmae_cli.infer import engine

    data = db_scene(33, 300)
    data[:, 5:9, 100:140] = np.nan
    outputs = []
    for columns in (100, 2):
        monkeypatch.setattr(engine, "READ_COLUMNS", columns)
        with _scene(tmp_path, data) as sc:
            widths: list[int] = []
            monkeypatch.setattr(sc, "read", _recording(sc.read, widths))
            sink = Rows()
            predict_dense(sc, backend, sink, tile=32, overlap=16, batch_size=3)
            outputs.append(sink.image())
    assert max(widths) == 32 + 16  # two tiles 16 px apart
    np.testing.assert_array_equal(outputs[0][0], outputs[1][0])
    np.testing.assert_array_equal(outputs[0][1], outputs[1][1])


def test_pieces_go_to_the_model_as_they_are_read(tmp_path, monkeypatch):
    """Each piece of a row is batched as soon as it is read, not after the whole row: with
    pieces of 2 tile columns and batches of 2 tiles, the i-th batch runs after the i-th read,
    so that only about one piece of input is alive, whatever the width."""
    from sarmae_cli.infer import engine

    monkeypatch.setattr(engine, "READ_COLUMNS", 2)
    reads_before_batch: list[int] = []

    class Recording(PointBackend):
        device = "cpu"  # reads in turn (no reader thread running ahead)

        def predict(self, batch):
            reads_before_batch.append(len(widths))
            return super().predict(batch)

    with _scene(tmp_path, db_scene(32, 300)) as sc:  # one row of 18 tiles: 9 pieces
        widths: list[int] = []
        monkeypatch.setattr(sc, "read", _recording(sc.read, widths))
        sink = Rows()
        predict_dense(sc, Recording(), sink, tile=32, overlap=16, batch_size=2)
        x, _ = sc.read(0, 0, sc.height, sc.width)
    assert reads_before_batch == list(range(1, 10))
    got, valid = sink.image()
    assert valid.all()
    np.testing.assert_allclose(got, np.stack([2 * x[0] + 1, x[1]]), atol=1e-5)


def test_sink_values_are_only_valid_during_the_call(tmp_path):
    """The engine hands each flush as a view of its accumulator, normalised in place, and
    reuses it afterwards: a sink that keeps the array without copying sees it change, one that
    copies (as every sink of the package does) keeps the right values."""

    class Keeping(Rows):
        def write_rows(self, y0, values, valid):
            super().write_rows(y0, values, valid)
            self.kept = getattr(self, "kept", []) + [values]

    with _scene(tmp_path, db_scene(100, 40)) as sc:
        sink = Keeping()
        predict_dense(sc, PointBackend(), sink, tile=32, overlap=8, batch_size=4)
    copies = [c[1] for c in sink.calls]
    assert any(not np.array_equal(k, c) for k, c in zip(sink.kept[:-1], copies, strict=False))
    assert all(k.base is not None for k in sink.kept)  # views, not new arrays
