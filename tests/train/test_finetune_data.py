"""`train/finetune_data.py`: the data of one fine-tuning seed, and the class checks that stop a
run that could only learn one class (issue 31, defect 4)."""

import numpy as np
import pytest
from PIL import Image

from sarmae_cli.errors import UsageError
from sarmae_cli.train import finetune as ft
from sarmae_cli.train import finetune_config as fc
from sarmae_cli.train.finetune_data import check_classes, missing_classes, prepare_classification

TINY = {
    "model": {"init": "random", "preset": "tiny", "depth": 1},
    "loop": {"max_steps": 1, "progress": False},
}


def _class_folders(root, classes, n=3, size=16):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def _mask_pairs(root, masks):
    for d in ("images", "masks"):
        (root / d).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i, m in enumerate(masks):
        Image.fromarray(rng.integers(0, 255, m.shape, dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return root


def test_check_classes():
    check_classes(["a", "b"], [0, 1, 1], "training set")
    with pytest.raises(
        UsageError, match="the training set has only class 'b'; classification needs at least two"
    ):
        check_classes(["a", "b"], [1, 1], "training set")


def test_single_class_training_set_is_refused_before_any_output(tmp_path):
    train = _class_folders(tmp_path / "train", ["T72"])
    cfg = fc.resolve_config("classification", TINY, {"data": {"train": str(train)}})
    with pytest.raises(UsageError, match="only class 'T72'"):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists() and not (tmp_path / "w.run").exists()


def test_validation_set_with_one_class_is_refused(tmp_path):
    train = _class_folders(tmp_path / "train", ["a", "b"])
    val = _class_folders(tmp_path / "val", ["a"])
    cfg = fc.resolve_config("classification", TINY, {"data": {"train": str(train), "val": str(val)}})
    with pytest.raises(UsageError, match="the validation set has only class 'a'"):
        prepare_classification(cfg, 0, 16)


def test_segmentation_needs_two_present_classes_and_warns_per_missing_one():
    water = np.zeros((4, 4), np.int64)
    water[0] = 1
    assert missing_classes(["land", "water"], [water], "training") == []
    with pytest.raises(UsageError, match="contain no 'water' pixels"):
        missing_classes(["land", "water"], [np.zeros((4, 4), np.int64)], "training")
    lines = missing_classes(["land", "water", "ice"], [water], "training")
    assert lines == ["warning: no 'ice' pixels in the training masks; the model cannot learn it"]


def test_all_land_masks_are_refused(tmp_path):
    train = _mask_pairs(tmp_path / "seg", [np.zeros((16, 16)), np.zeros((16, 16))])
    layer = {"data": {"train": str(train), "mask_values": [0, 255], "chip_size": 16}}
    cfg = fc.resolve_config("segmentation", TINY, layer)
    with pytest.raises(UsageError, match="no 'water' pixels"):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists()
