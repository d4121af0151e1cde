"""Self-training (`data.unlabelled`, `data.teacher`, `data.pseudo_threshold`): the kept chips carry the
teacher's class, only chips at or above the threshold are kept, hidden labels never reach the
training set, and bad inputs fail with one line and write nothing."""

import numpy as np
import pytest
import torch

from sarmae_cli.data import labelled
from sarmae_cli.errors import UsageError
from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.factory import save_model
from sarmae_cli.model.heads import Classifier
from sarmae_cli.train import evaluate as ev
from sarmae_cli.train import finetune as ft
from sarmae_cli.train import pseudo
from tests.train.conftest import CLASSES
from tests.train.test_finetune import _cls_cfg, _one_line


def _rigged_teacher(path, bias, classes=CLASSES):
    """A classifier whose logits are `bias` for every chip (zero head weights)."""
    enc = preset("tiny", in_chans=1, img_size=32, depth=2)
    meta = WeightsMeta(
        "classification", enc.to_dict(), ["SAR"], {"mode": "uint8"}, {"mean": [0.5], "std": [0.5]},
        class_names=list(classes),
    )  # fmt: skip
    model = Classifier(enc, len(classes))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    save_model(path, model, meta)
    return path


def _self_cfg(train, val, teacher, unlabelled="rest", threshold=0.9):
    cfg = _cls_cfg(train, val, max_steps=2)
    cfg.data.shots = 4
    cfg.data.unlabelled, cfg.data.teacher, cfg.data.pseudo_threshold = unlabelled, str(teacher), threshold
    return cfg


def test_teacher_predictions_are_what_eval_only_scores(mstar, tmp_path):
    train, val = mstar
    out = tmp_path / "teacher.safetensors"
    ft.finetune(_cls_cfg(train, val, max_steps=3), out, seeds=[0])
    index = labelled.scan_classification(val, list(CLASSES))
    raws, truth = labelled.load_chips(index.samples, labelled.LoadReport())
    pred, conf = pseudo.teacher_predict(out, raws, list(CLASSES), torch.device("cpu"))
    m, _ = ev.evaluate_weights(out, val, torch.device("cpu"))
    cm = np.zeros((3, 3), np.int64)
    np.add.at(cm, (np.asarray(truth), pred), 1)
    assert cm.tolist() == m["confusion_matrix"]
    assert pred.shape == conf.shape == (18,) and np.all((conf > 1 / 3 - 1e-6) & (conf <= 1))


def test_rest_chips_join_with_the_teachers_class_not_their_own(mstar, tmp_path):
    train, val = mstar
    teacher = _rigged_teacher(tmp_path / "t.safetensors", [0.0, 3.0, 0.0])  # always BMP2, p = 0.909
    doc = ft.finetune(_self_cfg(train, val, teacher), tmp_path / "s.safetensors", seeds=[0])
    data = doc["runs"][0]["data"]
    assert data["labelled_count"] == 12  # 4 shots x 3 classes
    assert data["train_counts"] == {"2S1": 4, "BMP2": 4 + 24, "T72": 4}  # the other 24 chips, as BMP2
    p = data["pseudo"]
    assert p["candidates"] == 24 and p["kept"] == 24 and p["source"] == "rest"
    assert p["kept_per_class"] == {"2S1": 0, "BMP2": 24, "T72": 0}
    assert p["kept_accuracy"] == pytest.approx(8 / 24)  # 8 of the 24 really are BMP2
    # above the teacher's confidence nothing is kept: refused, nothing written
    with pytest.raises(UsageError, match="no unlabelled chip reached data.pseudo_threshold 0.95"):
        ft.finetune(_self_cfg(train, val, teacher, threshold=0.95), tmp_path / "n.safetensors", seeds=[0])
    assert not (tmp_path / "n.safetensors").exists()


def test_a_folder_of_unlabelled_chips(mstar, tmp_path, data_dir):
    train, val = mstar
    pool = tmp_path / "pool"
    pool.mkdir()
    for c in CLASSES:  # chips the labelled subset does not hold, flat, without class folders
        for f in sorted((data_dir / "mstar10" / "train" / c).iterdir())[12:17]:
            (pool / f"{c}_{f.name}").symlink_to(f)
    teacher = _rigged_teacher(tmp_path / "t.safetensors", [2.5, 0.0, 0.0])  # always 2S1, p = 0.859
    doc = ft.finetune(_self_cfg(train, val, teacher, str(pool), 0.8), tmp_path / "s.safetensors", seeds=[0])
    data = doc["runs"][0]["data"]
    assert data["train_counts"] == {"2S1": 4 + 15, "BMP2": 4, "T72": 4}
    assert data["pseudo"]["kept"] == 15 and "kept_accuracy" not in data["pseudo"]  # no labels to check
    with pytest.raises(UsageError, match="also labelled training or validation chips"):
        ft.finetune(_self_cfg(train, val, teacher, str(train / "T72"), 0.8), tmp_path / "x.safetensors")


def test_cli_bad_self_training_inputs(mstar, tmp_path, invoke):
    train, val = mstar
    out = tmp_path / "x.safetensors"
    teacher = _rigged_teacher(tmp_path / "t.safetensors", [0.0, 3.0, 0.0])
    base = ("finetune", "--task", "classification", train, "--val", val, "--init", "random", "-o", out)
    rest = ("--set", "data.unlabelled=rest")
    by = ("--set", f"data.teacher={teacher}")
    r = invoke(*base, "--shots", "4", *rest)
    _one_line(r, 2, "needs both", "unlabelled", "teacher")
    r = invoke(*base, "--shots", "4", *rest, "--set", f"data.teacher={tmp_path / 'none.safetensors'}")
    _one_line(r, 2, "teacher", "not found")
    r = invoke(*base, "--shots", "4", *rest, *by, "--set", "data.pseudo_threshold=1.5")
    _one_line(r, 2, "pseudo_threshold must be in (0, 1)")
    r = invoke(*base, *rest, *by)
    _one_line(r, 2, "already uses every training chip", "--shots")
    two = _rigged_teacher(tmp_path / "two.safetensors", [0.0, 1.0], classes=["2S1", "BMP2"])
    r = invoke(*base, "--shots", "4", *rest, "--set", f"data.teacher={two}")
    _one_line(r, 1, "has classes 2S1, BMP2", "trained on these classes")
    r = invoke(*base, "--shots", "4", "--set", f"data.unlabelled={tmp_path / 'nowhere'}", *by)
    _one_line(r, 2, "unlabelled", "not found")
    seg = ("finetune", "--task", "segmentation", train, "--init", "random", "-o", out)
    r = invoke(*seg, *rest, *by)
    _one_line(r, 2, "apply to classification")
    assert not out.exists() and not (tmp_path / "x.run").exists()
