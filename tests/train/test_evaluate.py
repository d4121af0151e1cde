"""`train/evaluate.py`: the validation pass, headlines, the report files, and scoring a weights
file on a labelled folder with the preprocessing stored in it."""

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from sarmae_cli.data.labelled import (
    IGNORE_INDEX,
    ChipDataset,
    LoadReport,
    SegmentationDataset,
    load_chips,
    scan_classification,
)
from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.model.factory import load_model
from sarmae_cli.train import metrics
from sarmae_cli.train.evaluate import evaluate, evaluate_weights, headline, stored_spec, write_report
from tests.infer.conftest import make_weights


def _chips(root, n=3, bands=2, size=32):
    """Class folders a/ and b/ of random float32 dB GeoTIFF chips."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            data = rng.normal(-12, 4, (bands, size, size)).astype(np.float32)
            with rasterio.open(
                root / c / f"{i}.tif",
                "w",
                driver="GTiff",
                width=size,
                height=size,
                count=bands,
                dtype="float32",
            ) as dst:
                dst.write(data)
    return root


def test_classification_metrics_and_report(tmp_path):
    weights = make_weights(tmp_path / "c.safetensors", "classification", 2, ["a", "b"])
    data = _chips(tmp_path / "chips")
    m, meta = evaluate_weights(weights, data, torch.device("cpu"))
    assert m["num_samples"] == 6 and 0.0 <= m["overall_accuracy"] <= 1.0
    assert np.array(m["confusion_matrix"]).sum() == 6 and m["skipped_files"] == 0
    assert headline(m).startswith("overall accuracy ")
    png = write_report(m, meta.class_names, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["num_samples"] == 6
    assert png == tmp_path / "r.png" and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(Exception, match="exists"):
        write_report(m, meta.class_names, tmp_path / "r.json")  # never overwritten silently


def test_the_model_is_scored_with_its_stored_preprocessing(tmp_path):
    """evaluate() on the dataset built with `stored_spec` equals evaluate_weights: one route."""
    weights = make_weights(tmp_path / "c.safetensors", "classification", 2, ["a", "b"])
    data = _chips(tmp_path / "chips")
    model, meta = load_model(weights)
    raws, labels = load_chips(scan_classification(data, ["a", "b"]).samples, LoadReport())
    direct = evaluate(
        model, ChipDataset(raws, labels, stored_spec(meta)), "classification", ["a", "b"], torch.device("cpu")
    )
    m, _ = evaluate_weights(weights, data, torch.device("cpu"))
    assert direct["confusion_matrix"] == m["confusion_matrix"]


def test_bad_weights_and_data_are_refused(tmp_path):
    data = _chips(tmp_path / "chips", bands=1)
    cls = make_weights(tmp_path / "c.safetensors", "classification", 2, ["a", "b"])
    with pytest.raises(UsageError, match=r"gives 1 band\(s\) but the weights expect 2"):
        evaluate_weights(cls, data, torch.device("cpu"))
    enc = make_weights(tmp_path / "e.safetensors", "encoder", 1)
    with pytest.raises(WeightsError, match="without a task head"):
        evaluate_weights(enc, data, torch.device("cpu"))
    seg = make_weights(tmp_path / "s.safetensors", "segmentation", 2, ["land", "water"])
    with pytest.raises(UsageError, match="--tta applies to classification"):
        evaluate_weights(seg, tmp_path, torch.device("cpu"), tta=6)


def test_segmentation_sliding_window_metrics(tmp_path):
    weights = make_weights(tmp_path / "s.safetensors", "segmentation", 2, ["land", "water"])
    model, meta = load_model(weights)
    rng = np.random.default_rng(1)
    raws = [rng.normal(-12, 4, (2, 40, 56)).astype(np.float32)]
    labels = [rng.integers(0, 2, (40, 56))]
    labels[0][:4] = IGNORE_INDEX  # ignored rows take no part
    val = SegmentationDataset(raws, labels, stored_spec(meta))
    m = evaluate(model, val, "segmentation", ["land", "water"], torch.device("cpu"), tile=32, stride=24)
    assert m["num_pixels"] == 36 * 56
    assert headline(m).startswith("mIoU ")
    assert set(m["iou"]) == {"land", "water"}


def test_segmentation_folder_with_png_masks(tmp_path):
    weights = make_weights(tmp_path / "s.safetensors", "segmentation", 1, ["land", "water"])
    rng = np.random.default_rng(2)
    for d in ("images", "masks"):
        (tmp_path / "set" / d).mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(
            tmp_path / "set/images" / f"{i}.png"
        )
        Image.fromarray(rng.integers(0, 2, (40, 40), dtype=np.uint8)).save(
            tmp_path / "set/masks" / f"{i}.png"
        )
    m, _ = evaluate_weights(weights, tmp_path / "set", torch.device("cpu"))
    assert m["num_pixels"] == 2 * 40 * 40
    cm = np.array(m["confusion_matrix"])
    assert metrics.segmentation_metrics(cm, ["land", "water"])["miou"] == m["miou"]
