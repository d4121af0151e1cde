"""The one input route (`data/preprocess.py`): chip fit, the spec stored in weights, per-scene
radiometry, band checks, tile geometry, and the four callers that must agree on it."""

from typing import Any

import numpy as np
import pytest
import torch

from sarmae_cli.data.preprocess import (
    InputSpec,
    adaptable,
    check_band_count,
    check_input_scale,
    fit_chip,
    match_chip_bands,
    per_band,
)
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.errors import UsageError


def _meta(**over: Any) -> dict[str, Any]:
    """Stored metadata as plain data (the shape of `WeightsMeta.to_dict()`)."""
    meta = {
        "encoder": {"img_size": 32, "patch_size": 8, "in_chans": 1},
        "input_scaling": {"mode": "db", "stretch": "fixed", "db_range": [-25.0, 5.0]},
        "normalization": {"mean": [0.4], "std": [0.2]},
        "tile": {"size": 32, "overlap": 8},
        "training": {},
    }
    return {**meta, **over}


def test_fit_chip_resize_and_center_crop():
    x = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)
    assert fit_chip(x, 4, "resize").shape == (2, 4, 4)
    crop = fit_chip(x, 4, "center_crop")
    assert torch.equal(crop, x[:, 1:5, 2:6])
    padded = fit_chip(x, 10, "center_crop")  # 6x8 -> 10x10, centred, zero elsewhere
    assert torch.equal(padded[:, 2:8, 1:9], x) and padded.sum() == x.sum()
    with pytest.raises(UsageError, match="unknown chip fit"):
        InputSpec(Scaling(), [0.0], [1.0], 4, fit="stretch")


def test_fit_chip_crop_zooms_on_the_centre():
    x = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)
    assert torch.equal(fit_chip(x, 2, crop=2), x[:, 2:4, 3:5])  # crop == size: the centre only
    zoom = fit_chip(x, 8, "center_crop", crop=4)  # centre 4x4 resized to 8x8 (crop wins over fit)
    assert zoom.shape == (2, 8, 8)
    ref = torch.nn.functional.interpolate(x[None, :, 1:5, 2:6], size=(8, 8), mode="bilinear")[0]
    assert torch.allclose(zoom, ref)
    spec = InputSpec(Scaling(), [0.0], [1.0], 8, crop=4)
    assert spec.preprocess_meta() == {"chip_size": 8, "fit": "resize", "crop": 4}
    stored = InputSpec.from_meta(_meta(training={"preprocess": spec.preprocess_meta()}, tile={"size": 8}))
    assert (stored.chip_size, stored.fit, stored.crop) == (8, "resize", 4)
    old = InputSpec.from_meta(_meta(tile={"size": 32}))  # weights written before --crop existed
    assert (old.chip_size, old.fit, old.crop) == (32, "resize", None)
    with pytest.raises(UsageError, match="crop must be a positive"):
        InputSpec(Scaling(), [0.0], [1.0], 4, crop=0)


def test_spec_from_meta_reads_every_stored_choice():
    spec = InputSpec.from_meta(
        _meta(training={"preprocess": {"chip_size": 24, "fit": "center_crop", "crop": 16}})
    )
    assert spec.scaling.mode == "db" and spec.scaling.db_range == (-25.0, 5.0)
    assert (spec.mean, spec.std) == ([0.4], [0.2])
    assert (spec.chip_size, spec.fit, spec.crop) == (24, "center_crop", 16)
    assert (spec.tile_size, spec.tile_overlap, spec.patch_size) == (32, 8, 8)


def test_tiling_defaults_and_a_stored_overlap_too_large_for_the_tile():
    spec = InputSpec.from_meta(_meta(tile={"size": 64, "overlap": 16}))
    assert spec.tiling() == (64, 16)
    assert spec.tiling(dense=False) == (64, 0)  # per-tile outputs: no overlap
    assert spec.tiling(128, 40) == (128, 40)  # given values win
    assert spec.tiling(16) == (16, 0)  # 16 >= 16: a quarter of the tile in whole 8-px patches
    assert InputSpec.from_meta(_meta(tile={"size": 64, "overlap": 64})).tiling(64) == (64, 16)


def test_radiometry_detects_the_mode_and_stretches_once_per_scene():
    rng = np.random.default_rng(0)
    power = rng.gamma(1.0, 0.05, (2, 40, 40)).astype(np.float32)  # linear sigma0
    spec = InputSpec(Scaling("db", "percentile"), [0.5], [0.25], 32)
    auto = spec.radiometry(power, "auto", hints="s1_sigma0.tif")
    assert auto.scaling.mode == "power" and "input scale: power" in auto.notes[0]
    assert auto.ranges.shape == (2, 2) and (auto.mean, auto.std) == ([0.5, 0.5], [0.25, 0.25])
    db = spec.radiometry(10 * np.log10(power), "db")  # the same scene in dB: the same input
    assert np.allclose(auto.apply(power[:, :8, :8]), db.apply(10 * np.log10(power[:, :8, :8])), atol=1e-4)
    assert spec.radiometry(power).scaling.mode == "db"  # "weights": the stored mode, as training does
    with pytest.raises(UsageError, match="unknown --input-scale 'decibel'"):
        spec.radiometry(power, "decibel")
    with pytest.raises(UsageError, match="unknown --input-scale"):
        check_input_scale("linear")


def test_uint16_digital_numbers_get_a_per_scene_stretch_at_training_and_inference():
    dn = np.random.default_rng(1).integers(50, 3000, (1, 16, 16)).astype(np.uint16)
    spec = InputSpec(Scaling("uint16"), [0.5], [0.25], 16)  # stored fixed stretch
    training = spec.prepare(dn)
    inference = spec.radiometry(dn.astype(np.float32), "auto", dtype="uint16").apply(dn)
    assert spec.radiometry(dn).scaling.stretch == "percentile"
    assert np.array_equal(training, inference)


def test_band_checks():
    check_band_count(2, 2, ["VV", "VH"], "s.tif")
    check_band_count(1, 3, ["SAR", "SAR", "SAR"], "s.tif")  # adapted exactly
    assert adaptable(["SAR"] * 3, 1) and not adaptable(["VV", "VH"], 1)
    with pytest.raises(
        UsageError, match=r"s.tif gives 3 band\(s\) but the weights expect 2 \(VV, VH\); select"
    ):
        check_band_count(3, 2, ["VV", "VH"], "s.tif")
    with pytest.raises(UsageError, match="use weights made for 1-band data"):
        check_band_count(1, 2, ["VV", "VH"], "s.tif")
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert match_chip_bands(grey, 3).shape == (3, 3, 4)
    assert np.array_equal(match_chip_bands(np.repeat(grey, 3, 0), 1), grey)
    with pytest.raises(UsageError, match="has 2 bands but the model takes 3"):
        match_chip_bands(np.zeros((2, 3, 4)), 3)
    assert per_band([0.1, 0.2], 3) == [0.1, 0.2, 0.1]


def test_chip_margin_keeps_the_scale():
    raw = np.random.default_rng(2).integers(0, 255, (1, 40, 40)).astype(np.uint8)
    zoom = InputSpec(Scaling(), [0.5], [0.25], 32, crop=16)  # 2 x zoom
    assert zoom.chip(raw, margin=4).shape == (1, 40, 40)
    ref = fit_chip(torch.from_numpy(zoom.prepare(raw)), 40, crop=20)
    assert torch.equal(zoom.chip(raw, margin=4), ref)
    resize = InputSpec(Scaling(), [0.5], [0.25], 32)
    padded = resize.chip(raw, margin=4)
    assert torch.equal(padded[:, 4:-4, 4:-4], resize.chip(raw)) and padded[:, :4].abs().sum() == 0
    assert resize.chip(raw, size=16).shape == (1, 16, 16)
