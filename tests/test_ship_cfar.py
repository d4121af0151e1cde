"""`benchmarks/ship_cfar.py`: the two-parameter CFAR ship detector on synthetic speckle (ring
statistics against a direct computation, targets found with their boxes, a quiet sea, NaN and
edges, log=False on dB input) and its k sweep's data handling."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("ship_cfar", ROOT / "benchmarks" / "ship_cfar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cfar = _load()

#: Two non-fluctuating ships, +15 dB over the mean sea power, as (x1, y1, x2, y2) boxes.
SHIPS = np.array([(50, 60, 80, 72), (150, 170, 160, 190)], np.float32)


def sea(seed: int = 0, shape: tuple[int, int] = (256, 256)) -> np.ndarray:
    """Single-look speckle: exponential power of mean 1."""
    return np.random.default_rng(seed).exponential(1.0, shape)


def with_ships(power: np.ndarray, boxes: np.ndarray = SHIPS, db: float = 15.0) -> np.ndarray:
    out = power.copy()
    for x1, y1, x2, y2 in boxes.astype(int):
        out[y1:y2, x1:x2] = 10 ** (db / 10)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def check_types(found: dict, n: int) -> None:
    assert set(found) == {"boxes", "scores", "labels"}
    assert found["boxes"].dtype == np.float32 and found["boxes"].shape == (n, 4)
    assert found["scores"].dtype == np.float32 and found["scores"].shape == (n,)
    assert found["labels"].dtype == np.int64 and found["labels"].shape == (n,)
    assert not found["labels"].any()


def test_ring_statistic_matches_a_direct_computation():
    """Mean and std of the valid dB values in the ring, image edges and NaN left out."""
    p = cfar.CfarParams(guard=1, background=3, min_ring_valid=0.3)
    power = sea(1, (14, 17))
    power[4:7, 2:9] = np.nan
    power[10, 12] = 0.0  # no dB value: invalid too
    keep = power[6, 12]
    power[3:10, 9:15] = np.nan
    power[6, 12] = keep  # valid, but only 7 of its 40 ring pixels are: below min_ring_valid
    got = cfar.cfar_statistic(power, p)
    with np.errstate(divide="ignore"):
        x = np.where(power > 0, 10 * np.log10(np.where(power > 0, power, 1)), np.nan)
    want = np.full(x.shape, np.nan)
    h, w = x.shape
    for i in range(h):
        for j in range(w):
            di, dj = np.mgrid[-3:4, -3:4]
            ring = np.maximum(abs(di), abs(dj)) > 1
            ii, jj = i + di[ring], j + dj[ring]
            inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
            vals = x[ii[inside], jj[inside]]
            vals = vals[np.isfinite(vals)]
            if np.isfinite(x[i, j]) and len(vals) >= 0.3 * 40:
                want[i, j] = (x[i, j] - vals.mean()) / vals.std()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[4:7, 2:9]).all() and np.isnan(got[10, 12]) and np.isnan(got[6, 12])
    assert np.isfinite(got[0, 0])  # a corner keeps 12 ring pixels
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_two_bright_rectangles_are_the_two_boxes():
    power = with_ships(sea(0))
    found = cfar.cfar_boxes(power)
    check_types(found, 2)
    stat = cfar.cfar_statistic(power)
    order = np.argsort(found["boxes"][:, 0])
    for box, score, truth in zip(found["boxes"][order], found["scores"][order], SHIPS, strict=True):
        assert iou(box, truth) >= 0.9, (box, truth)
        assert np.abs(box - truth).max() <= 2
        x1, y1, x2, y2 = box.astype(int)
        assert score == pytest.approx(stat[y1:y2, x1:x2].max(), rel=1e-6)  # the peak
    assert (found["scores"] > cfar.CfarParams().k).all()


def test_pure_sea_is_quiet_and_standardised():
    """At the default k the sea gives no component of min_pixels; the statistic is ~N(0, 1)."""
    for seed in range(3):
        power = sea(10 + seed)
        assert len(cfar.cfar_boxes(power)["boxes"]) <= 1
    stat = cfar.cfar_statistic(power)
    assert abs(np.nanmean(stat)) < 0.05 and abs(np.nanstd(stat) - 1) < 0.05


def test_min_pixels_drops_small_components():
    power = with_ships(sea(2), np.array([(100, 100, 103, 103)], np.float32), db=30.0)
    assert len(cfar.cfar_boxes(power, cfar.CfarParams(min_pixels=10))["boxes"]) == 0
    found = cfar.cfar_boxes(power, cfar.CfarParams(min_pixels=9))
    np.testing.assert_array_equal(found["boxes"], [[100, 100, 103, 103]])


def test_components_are_8_connected():
    """A diagonal line of 12 bright pixels is one component of 12 pixels."""
    power = sea(7)
    idx = np.arange(100, 112)
    power[idx, idx] = 1000.0
    found = cfar.cfar_boxes(power, cfar.CfarParams(min_pixels=10))
    np.testing.assert_array_equal(found["boxes"], [[100, 100, 112, 112]])


def test_nan_is_never_detected_and_does_not_break_the_rest():
    power = with_ships(sea(3))
    power[:, 140:156] = np.nan  # covers the left part of the second ship (x 150..160)
    power[0:20, 0:256] = np.nan
    holes = np.random.default_rng(4).random(power.shape) < 0.1
    power[holes] = np.nan
    stat = cfar.cfar_statistic(power)
    assert np.isnan(stat[np.isnan(power)]).all()
    found = cfar.cfar_boxes(power)
    assert len(found["boxes"]) == 2
    left, right = found["boxes"][np.argsort(found["boxes"][:, 0])]
    assert iou(left, SHIPS[0]) >= 0.9
    np.testing.assert_array_equal(right, [156, 170, 160, 190])  # only the valid part


def test_ships_at_the_image_edges_are_found():
    edges = np.array([(0, 0, 12, 8), (236, 246, 256, 256)], np.float32)
    found = cfar.cfar_boxes(with_ships(sea(5), edges))
    order = np.argsort(found["boxes"][:, 0])
    np.testing.assert_array_equal(found["boxes"][order], edges)


def test_log_false_on_db_is_log_true_on_power():
    power = with_ships(sea(6))
    a = cfar.cfar_boxes(power, log=True)
    b = cfar.cfar_boxes(10 * np.log10(power), log=False)
    assert len(a["boxes"]) == 2
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5)


@pytest.mark.parametrize("value", [np.nan, 0.0])
def test_an_image_without_valid_pixels_gives_empty_arrays(value):
    found = cfar.cfar_boxes(np.full((64, 48), value))
    check_types(found, 0)


def test_sweep_reads_only_training_scenes(tmp_path):
    """Held-out scenes are never read; truth comes from the masks' green components."""
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i, name in enumerate(["P0001_a", "P0002_a", "P0005_b"]):
        g = np.clip(with_ships(sea(20 + i, (128, 128)), SHIPS[:1]) ** 0.5 * 40, 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "images" / f"{name}.jpg", quality=95)
        mask = np.zeros((128, 128, 3), np.uint8)
        mask[60:72, 50:80, 1] = 255
        if not name.startswith(("P0001", "P0005")):
            Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    pairs = cfar.training_pairs(tmp_path)
    assert [p[0].name for p in pairs] == ["P0002_a.jpg"]  # the held-out ones have no mask
    np.testing.assert_array_equal(cfar.read_truth(pairs[0][1])["boxes"], SHIPS[:1])
    out = cfar.sweep(tmp_path, ks=(2.0, 3.0))
    assert out["images"] == 1 and out["ships"] == 1
    assert [r["k"] for r in out["rows"]] == [2.0, 3.0]
    assert all(r["tp"] + r["fn"] == 1 for r in out["rows"])
    assert out["chosen_k"] in (2.0, 3.0)
