"""The four callers of the input route (a segment tile, a classify chip, the export parity
input, the fine-tuning evaluation input) give identical tensors for the same chip and weights:
they all go through `data/preprocess.py`."""

import numpy as np
import pytest
import torch

from sarmae_cli.data.labelled import ChipDataset
from sarmae_cli.data.raster import read_image
from sarmae_cli.export.onnx_export import prep_chip
from sarmae_cli.infer.api import Options, _chip_input
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.scene import open_scene
from sarmae_cli.model.factory import save_model
from sarmae_cli.model.heads import Classifier
from sarmae_cli.train.evaluate import stored_spec
from tests.infer.conftest import tiny_meta, write_scene


def _classifier(path, preprocess=None):
    torch.manual_seed(0)
    meta = tiny_meta("classification", 2, ["a", "b"], training={"preprocess": preprocess or {}})
    save_model(path, Classifier(meta.encoder_config, 2), meta)
    return path


def _db_chip(size, seed=0):
    rng = np.random.default_rng(seed)
    return (10 * np.log10(rng.gamma(1.0, 0.05, (2, size, size)))).astype(np.float32)  # [2, S, S] dB


def test_four_routes_give_identical_tensors(tmp_path):
    weights = _classifier(tmp_path / "c.safetensors")
    chip = write_scene(tmp_path / "chip.tif", _db_chip(32))
    models = Models("classify", weights, device="cpu")
    meta = models.meta

    with open_scene(chip, meta) as scene:  # segment / scene route: one tile covering the chip
        tile, _ = scene.read(0, 0, 32, 32)
    classify, scene = _chip_input(chip, models, Options(), 32)
    scene.close()
    export = prep_chip(read_image(chip), meta, 32)
    finetune_eval = ChipDataset([read_image(chip)], [0], stored_spec(meta))[0][0].numpy()

    assert tile.shape == classify.shape == export.shape == finetune_eval.shape == (2, 32, 32)
    assert float(np.abs(tile).max()) > 0.1  # not all zeros
    for other in (classify, export, finetune_eval):
        np.testing.assert_array_equal(tile, other)


@pytest.mark.parametrize(
    "preprocess",
    [{"chip_size": 32, "fit": "resize", "crop": 24}, {"chip_size": 32, "fit": "center_crop"}],
)
def test_chip_routes_fit_alike(tmp_path, preprocess):
    """A chip larger than the model input is fitted (zoom crop or centre crop) the same way
    by classify, export and fine-tuning evaluation."""
    weights = _classifier(tmp_path / "c.safetensors", preprocess)
    chip = write_scene(tmp_path / "chip.tif", _db_chip(48, seed=1))
    models = Models("classify", weights, device="cpu")
    classify, scene = _chip_input(chip, models, Options(), 32)
    scene.close()
    export = prep_chip(read_image(chip), models.meta, 32)
    finetune_eval = ChipDataset([read_image(chip)], [0], stored_spec(models.meta))[0][0].numpy()
    np.testing.assert_array_equal(classify, export)
    np.testing.assert_array_equal(classify, finetune_eval)
    resized = ChipDataset([read_image(chip)], [0], stored_spec(_meta_without_fit(models.meta)))[0][0]
    assert not np.array_equal(classify, resized.numpy())  # the fit matters: the test can fail


def _meta_without_fit(meta):
    meta.training = {}
    return meta
