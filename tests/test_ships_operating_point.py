"""`benchmarks/ships_operating_point.py`: precision, recall and F1 per score cut, the F1 rule
(ties to the lower cut), and the held-out images it scores."""

from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


def _load():
    return load_benchmark("ships_operating_point")


def dets(rows: list[tuple[float, float, float, float, float]]) -> dict[str, np.ndarray]:
    """(x0, y0, x1, y1, score) rows -> a detection set of class 0."""
    a = np.array(rows, np.float32).reshape(-1, 5)
    return {"boxes": a[:, :4], "scores": a[:, 4], "labels": np.zeros(len(a), np.int64)}


#: Two images: A with ships at (0, 0) and (20, 20), B with one at (0, 0), all 10 x 10 px.
TRUTH = [dets([(0, 0, 10, 10, 1), (20, 20, 30, 30, 1)]), dets([(0, 0, 10, 10, 1)])]
#: What a detector returns at a low cut: A finds both ships (0.9, 0.4), twice the first one
#: (0.45: a duplicate is a false alarm), and a box of IoU 1/3 with the second (0.35); B finds its
#: ship (0.8) and sea (0.3).
FOUND = [
    dets([(0, 0, 10, 10, 0.9), (20, 20, 30, 30, 0.4), (1, 0, 10, 10, 0.45), (25, 20, 35, 30, 0.35)]),
    dets([(0, 1, 10, 11, 0.8), (50, 50, 60, 60, 0.3)]),
]


def at(cut: float) -> list[dict[str, np.ndarray]]:
    return [{k: v[d["scores"] >= cut] for k, v in d.items()} for d in FOUND]


def test_rows_count_matches_at_iou_half_and_choose_the_best_f1():
    op = _load()
    rows = {r["cut"]: r for r in op.sweep({c: at(c) for c in (0.3, 0.4, 0.5, 0.95)}, TRUTH)}
    # 0.3: 3 ships found, the duplicate, the shifted box and the sea are false alarms
    assert (rows[0.3]["tp"], rows[0.3]["fp"], rows[0.3]["fn"]) == (3, 3, 0)
    assert rows[0.3]["precision"] == pytest.approx(0.5) and rows[0.3]["recall"] == 1.0
    assert rows[0.3]["f1"] == pytest.approx(6 / 9)
    assert (rows[0.4]["tp"], rows[0.4]["fp"], rows[0.4]["fn"]) == (3, 1, 0)
    assert rows[0.4]["f1"] == pytest.approx(6 / 7)
    assert (rows[0.5]["tp"], rows[0.5]["fp"], rows[0.5]["fn"]) == (2, 0, 1)
    assert rows[0.5]["precision"] == 1.0 and rows[0.5]["recall"] == pytest.approx(2 / 3)
    assert rows[0.95] == {"cut": 0.95, "tp": 0, "fp": 0, "fn": 3, "precision": None, "recall": 0.0, "f1": 0.0}
    assert op.choose(list(rows.values()))["cut"] == 0.4
    assert [r["cut"] for r in op.sweep({c: at(c) for c in (0.5, 0.3)}, TRUTH)] == [0.3, 0.5]


def test_choose_breaks_ties_towards_the_lower_cut():
    op = _load()
    row = {"tp": 2, "fp": 1, "fn": 1, "precision": 2 / 3, "recall": 2 / 3, "f1": 4 / 6}
    rows = [{"cut": 0.6, **row}, {"cut": 0.2, **row, "f1": 0.5}, {"cut": 0.45, **row}]
    assert op.choose(rows)["cut"] == 0.45
    with pytest.raises(ValueError):
        op.choose([{"cut": 0.5, "f1": None}])


def test_held_out_images_are_those_of_the_stored_split(data_dir):
    """The shipped detector's held-out images: the 3 scenes its fine-tuning held out."""
    from sarmae_cli.infer.models import Models

    op = _load()
    weights = ROOT / "weights" / "sarmae_ships.safetensors"
    models = Models("detect", weights, "cpu")
    train, held_out = op.split_samples(data_dir / "hrsid_mini", models, 0.2)
    made = models.meta.provenance  # the fine-tuning's record, under each conversion's
    while "data" not in made:
        made = made["converted_from"]
    recorded = made["data"]
    assert sorted({p.image.name.split("_")[0] for p in held_out}) == recorded["val_groups"]
    assert len(held_out) == recorded["val_count"] and len(train) == recorded["train_count"]
    assert sum(len(s.boxes) for s in held_out) == recorded["val_boxes"]
