"""`benchmarks/ship_cfar.py`: the two-parameter CFAR ship detector on synthetic speckle (ring
statistics against a direct computation, targets found with their boxes, a quiet sea, NaN and
edges, log=False on dB input) and its k sweep: the samples it scores, its options, and its
training images: those of the shipped detector's own split."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import load_benchmark

cfar = load_benchmark("ship_cfar")

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


def _grey_scenes(folder: Path, names: list[str]) -> list[Path]:
    """8-bit RGB JPEGs of speckle with the ship SHIPS[0] (+15 dB), 128 x 128 px."""
    folder.mkdir(exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        g = np.clip(with_ships(sea(20 + i, (128, 128)), SHIPS[:1]) ** 0.5 * 40, 0, 255).astype(np.uint8)
        paths.append(folder / f"{name}.jpg")
        Image.fromarray(np.stack([g] * 3, -1)).save(paths[-1], quality=95)
    return paths


def test_sweep_scores_the_given_samples_against_their_boxes(tmp_path):
    """Only the samples' images are read (a broken file beside them is not), and the truth is
    the samples' boxes: b's box is put on open sea, so b's ship counts as a false positive."""
    from sarmae_cli.data.detection_labels import BoxSample

    a, b = _grey_scenes(tmp_path, ["P0002_a", "P0003_a"])
    (tmp_path / "P0001_a.jpg").write_bytes(b"not an image")  # held out: never opened
    elsewhere = np.array([[5, 100, 35, 112]], np.float32)  # sea only
    samples = [
        BoxSample(a, SHIPS[:1].copy(), np.zeros(1, np.int64)),
        BoxSample(b, elsewhere, np.zeros(1, np.int64)),
    ]
    out = cfar.sweep(samples, ks=(2.0, 3.0))
    assert out["images"] == 2 and out["ships"] == 2
    assert [r["k"] for r in out["rows"]] == [2.0, 3.0]
    low, high = out["rows"]
    # k = 2: a's ship found; b's ship (not in its boxes) a false positive, its box a miss
    assert (low["tp"], low["fp"], low["fn"]) == (1, 1, 1) and low["f1"] == pytest.approx(0.5)
    # k = 3 keeps only the ships' cores (IoU 0.43): nothing matches
    assert (high["tp"], high["fp"], high["fn"]) == (0, 2, 2) and high["f1"] == 0.0
    assert out["chosen_k"] == out["params"]["k"] == 2.0
    with pytest.raises(ValueError):
        cfar.sweep([], ks=(2.0,))


def test_sweep_command_takes_its_split_from_the_weights(tmp_path, monkeypatch):
    """--sweep passes --data, -w and --val-fraction to `training_samples` and writes them with
    the rows to --json."""
    from sarmae_cli.data.detection_labels import BoxSample

    (image,) = _grey_scenes(tmp_path, ["P0002_a"])
    seen = []

    def fake_training_samples(data, weights, val_fraction):
        seen.append((data, weights, val_fraction))
        return [BoxSample(image, SHIPS[:1].copy(), np.zeros(1, np.int64))]

    monkeypatch.setattr(cfar, "training_samples", fake_training_samples)
    out = tmp_path / "sweep.json"
    cfar.main(["--sweep", "--data", str(tmp_path), "-w", "w.safetensors", "--val-fraction", "0.3",
               "--json", str(out)])  # fmt: skip
    assert seen == [(tmp_path, Path("w.safetensors"), 0.3)]
    doc = json.loads(out.read_text())
    assert doc["weights"] == "w.safetensors" and doc["val_fraction"] == 0.3
    assert doc["images"] == 1 and len(doc["rows"]) == len(cfar.K_GRID)
    cfar.main(["--sweep", "--data", str(tmp_path)])
    assert seen[-1] == (tmp_path, cfar.WEIGHTS, 0.2)  # the shipped detector, its 0.2 split


def test_training_samples_are_the_shipped_detectors_training_split(data_dir):
    """The sweep's images are the training side of the shipped detector's stored split (none of
    the scenes its fine-tuning held out), with the split's boxes, and give the default k."""
    from sarmae_cli.infer.models import Models

    models = Models("detect", cfar.WEIGHTS, "cpu")
    made = models.meta.provenance  # the fine-tuning's record, under each conversion's
    while "data" not in made:
        made = made["converted_from"]
    recorded = made["data"]
    train = cfar.training_samples(data_dir / "hrsid_mini")
    want, held_out = cfar.load("ships_operating_point").split_samples(data_dir / "hrsid_mini", models, 0.2)
    assert [s.image for s in train] == [s.image for s in want]
    for s, w in zip(train, want, strict=True):
        np.testing.assert_array_equal(s.boxes, w.boxes)
    groups = {s.image.name.split("_")[0] for s in train}
    assert not groups & set(recorded["val_groups"]) and len(train) == recorded["train_count"]
    assert not {s.image for s in train} & {s.image for s in held_out}
    out = cfar.sweep(train, ks=(2.0, 2.25, 2.5))
    assert (out["images"], out["ships"]) == (26, 50)
    r = {row["k"]: row for row in out["rows"]}
    assert (r[2.25]["tp"], r[2.25]["fp"], r[2.25]["fn"]) == (31, 81, 19)
    assert out["chosen_k"] == cfar.CfarParams().k == 2.25
    assert out["chosen_f1"] == pytest.approx(0.383, abs=5e-4)
