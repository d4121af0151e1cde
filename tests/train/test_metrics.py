"""Metrics against hand-computed confusion matrices; sliding-window evaluation."""

import json

import numpy as np
import pytest
import torch

from sarmae_cli.train.metrics import (
    classification_metrics,
    confusion_matrix,
    dihedral_tta,
    format_pm,
    mean_std,
    multicrop_tta,
    save_confusion_png,
    segmentation_metrics,
    sliding_window_logits,
    summarize_seeds,
    window_starts,
    write_json,
)


def test_confusion_matrix_by_hand():
    target = [0, 0, 0, 1, 1, 2, 2, 2, 2, -1]
    pred = [0, 1, 0, 1, 1, 2, 0, 2, 2, 1]
    cm = confusion_matrix(torch.tensor(pred), torch.tensor(target), 3)
    # rows = truth, columns = prediction; the last item (target -1) is ignored
    assert cm.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 3]]
    m = classification_metrics(cm, ["a", "b", "c"])
    assert m["overall_accuracy"] == pytest.approx(7 / 9)
    assert m["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 3 / 4})
    assert m["mean_class_accuracy"] == pytest.approx((2 / 3 + 1 + 3 / 4) / 3)
    assert m["num_samples"] == 9


def test_confusion_matrix_rejects_bad_targets():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)


def test_segmentation_iou_by_hand():
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [-1, -1, 2, 2]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 0, 1], [2, 2, 2, 0]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 3, 0], [1, 0, 1]]
    m = segmentation_metrics(cm, ["land", "water", "x"])
    # IoU = TP / (TP + FP + FN): land 3/(3+2+1), water 3/(3+1+1), x 1/(1+0+1)
    assert m["iou"] == pytest.approx({"land": 0.5, "water": 0.6, "x": 0.5})
    assert m["miou"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    assert m["pixel_accuracy"] == pytest.approx(7 / 10)


def test_absent_class_has_no_score():
    cm = confusion_matrix(np.array([0, 0]), np.array([0, 0]), 2)
    assert segmentation_metrics(cm, ["a", "b"])["iou"] == {"a": 1.0, "b": None}
    assert segmentation_metrics(cm, ["a", "b"])["miou"] == 1.0
    assert classification_metrics(cm, ["a", "b"])["per_class_accuracy"]["b"] is None


def test_window_starts_cover_the_image():
    assert window_starts(512, 512, 384) == [0]
    assert window_starts(100, 256, 192) == [0]
    assert window_starts(1000, 512, 384) == [0, 384, 488]
    for length in range(64, 300, 7):
        starts = window_starts(length, 64, 48)
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s : s + 64] = True
        assert covered.all() and starts[-1] + 64 == length


def test_sliding_window_equals_full_image_for_a_pointwise_model():
    conv = torch.nn.Conv2d(2, 3, 1)
    image = torch.randn(2, 70, 100)
    full = conv(image[None])[0]
    out = sliding_window_logits(conv, image, 3, tile=32, stride=24, batch_size=3)
    assert out.shape == (3, 70, 100)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    small = sliding_window_logits(conv, image[:, :20, :20], 3, tile=32, stride=24)
    torch.testing.assert_close(small, full[:, :20, :20], atol=1e-5, rtol=1e-5)


def test_sliding_window_averages_overlaps():
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return torch.ones(x.shape[0], 1, *x.shape[-2:]) * len(calls)

    out = sliding_window_logits(model, torch.zeros(1, 8, 12), 1, tile=8, stride=4, batch_size=1)
    # windows at x = 0 and 4 -> values 1 and 2; the overlap [4, 8) averages to 1.5
    assert out[0, 0].tolist() == [1, 1, 1, 1, 1.5, 1.5, 1.5, 1.5, 2, 2, 2, 2]


def test_seed_summary():
    runs = [
        {"overall_accuracy": 0.9, "num_samples": 10, "per_class_accuracy": {"a": 1.0, "b": 0.8}},
        {"overall_accuracy": 0.8, "num_samples": 10, "per_class_accuracy": {"a": 0.6, "b": None}},
    ]
    s = summarize_seeds(runs)
    assert s["overall_accuracy"]["mean"] == pytest.approx(0.85)
    assert s["overall_accuracy"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert "num_samples" not in s
    assert s["per_class_accuracy"]["b"] == {"mean": 0.8, "std": 0.0, "n": 1}
    assert format_pm(s["overall_accuracy"]) == "85.00 ± 7.07"
    assert mean_std([None]) == {"mean": None, "std": None, "n": 0}


def test_confusion_png_and_json(tmp_path):
    cm = np.array([[5, 1], [0, 4]])
    save_confusion_png(cm, ["ship", "sea"], tmp_path / "cm.png", title="test")
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_json({"a": float("nan"), "b": [1.0]}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0]}
    assert not list(tmp_path.glob(".*part"))


def _position_model(x: torch.Tensor) -> torch.Tensor:
    """A model that is not flip/turn equivariant: logits [B, 2, T, T] depend on the column."""
    ramp = torch.linspace(-2, 2, x.shape[-1])  # [T]
    return torch.stack([x[:, 0] + ramp, -x[:, 0] - ramp], 1)


def test_dihedral_tta_maps_predictions_back():
    x = torch.randn(2, 1, 8, 8)
    one = dihedral_tta(_position_model, 1)(x)
    assert torch.allclose(one.exp(), _position_model(x).softmax(1), atol=1e-6)  # n=1: the model itself
    for n in (2, 4, 8):
        out = dihedral_tta(_position_model, n)(x)  # [B, 2, T, T] log-probabilities
        assert out.shape == (2, 2, 8, 8)
        assert torch.allclose(out.exp().sum(1), torch.ones(2, 8, 8), atol=1e-5)
        # averaged over a group containing the left-right flip: flipping the input flips the output
        assert torch.allclose(dihedral_tta(_position_model, n)(x.flip(-1)), out.flip(-1), atol=1e-5)
    full = dihedral_tta(_position_model, 8)
    assert torch.allclose(full(torch.rot90(x, 1, (-2, -1))), torch.rot90(full(x), 1, (-2, -1)), atol=1e-5)


def test_dihedral_tta_leaves_an_equivariant_model_unchanged():
    conv = torch.nn.Conv2d(1, 3, 1)  # per-pixel: commutes with flips and turns
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(dihedral_tta(conv, 8)(x), conv(x).log_softmax(1), atol=1e-5)


def test_multicrop_tta_averages_the_views_of_the_training_crops():
    seen: list[torch.Tensor] = []

    def model(x: torch.Tensor) -> torch.Tensor:  # [B, C, S, S] -> [B, 2]: logits from the mean
        seen.append(x)
        m = x.mean((1, 2, 3)) / 100
        return torch.stack([m, -m], 1)

    x = torch.arange(400.0).reshape(1, 1, 20, 20).repeat(2, 1, 1, 1)  # rows increase downwards
    x[1] *= -1
    one = multicrop_tta(model, 1)(x)
    assert torch.allclose(one.exp(), model(x).softmax(1), atol=1e-6)  # n=1: the model itself
    seen.clear()
    out = multicrop_tta(model, 6)(x)  # [B, 2] log of the mean probabilities
    assert out.shape == (2, 2) and torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-6)
    assert len(seen) == 6 and all(v.shape == x.shape for v in seen)  # every view resized back
    means = [float(v[0].mean()) for v in seen]
    assert means[0] == pytest.approx(199.5) and means[1] == pytest.approx(199.5)  # chip, centre
    # crops of 18 px (round(sqrt(0.85) * 20)): the top corners are darker than the bottom ones
    assert means[2] < means[1] < means[4] and means[3] < means[5]
    views = list(seen)  # the model appends to `seen`
    expected = torch.stack([model(v).softmax(1) for v in views]).mean(0).log()
    assert torch.allclose(out, expected, atol=1e-6)
    with pytest.raises(ValueError, match="1 to 6 views"):
        multicrop_tta(model, 7)
