"""Training augmentations (`data/augment.py`): radiometric jitter, shifts with real context,
flips, square crops, and the checks of the augmentation config."""

import numpy as np
import pytest
import torch

from sarmae_cli.data.augment import (
    AugmentConfig,
    coarser,
    make_augment,
    multilook,
    radiometric_jitter,
    rerender,
    tone_curve,
)
from sarmae_cli.data.labelled import ChipDataset
from sarmae_cli.data.preprocess import InputSpec, detect_scaling
from sarmae_cli.errors import UsageError


def test_radiometric_jitter_stays_in_unit_range_and_changes_contrast():
    rng = np.random.default_rng(0)
    x = torch.linspace(0.2, 0.8, 64).view(1, 8, 8)  # [C, S, S]
    cfg = AugmentConfig(gain=(2.0, 2.0), offset=(0.0, 0.0), gamma=(1.0, 1.0))
    out = radiometric_jitter(x, rng, cfg)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 1.5 * float(x.std())  # contrast doubled (up to clipping)
    cfg = AugmentConfig(gain=(1.0, 1.0), offset=(0.1, 0.1), gamma=(1.0, 1.0))
    assert torch.allclose(radiometric_jitter(x, rng, cfg), x + 0.1, atol=1e-6)


def test_shift_cuts_real_context_windows_and_evaluates_on_the_centre():
    raw = np.arange(40 * 40, dtype=np.uint8).reshape(1, 40, 40) % 251  # distinct neighbours
    spec = InputSpec(detect_scaling(raw), [0.5], [0.25], 16, fit="center_crop")
    wide = spec.chip(raw, margin=4)  # [1, 24, 24]: the centre 24 px, real pixels
    assert wide.shape == (1, 24, 24) and torch.equal(wide[:, 4:20, 4:20], spec.chip(raw))
    cfg = AugmentConfig(flips=False, rot90=False, crop_scale=(1.0, 1.0), shift=4)
    aug = make_augment(cfg, spec, cfg.crop_scale)
    assert aug is not None  # a shift alone is an augmentation
    offsets = set()
    torch.manual_seed(0)
    for _ in range(40):
        out = aug(wide)  # [1, 16, 16]
        assert out.shape == (1, 16, 16)
        hits = [
            (t, c) for t in range(9) for c in range(9) if torch.equal(out, wide[:, t : t + 16, c : c + 16])
        ]
        assert len(hits) == 1  # an unresized window of the wide chip
        offsets.add(hits[0])
    assert len(offsets) > 10  # it moves (81 possible windows)
    ds = ChipDataset([raw], [0], spec, aug, margin=4)
    assert ds[0][0].shape == (1, 16, 16)
    assert ChipDataset([raw], [0], spec)[0][0].shape == (1, 16, 16)  # evaluation: centre
    with pytest.raises(ValueError, match="margin needs an augmentation"):
        ChipDataset([raw], [0], spec, None, margin=4)


def test_vflip_off_keeps_up_and_down():
    spec = InputSpec(detect_scaling(np.zeros((1, 4, 4), np.uint8)), [0.0], [1.0], 4)
    x = torch.arange(16.0).view(1, 4, 4)  # [C, S, S]
    torch.manual_seed(0)
    cfg = AugmentConfig(flips=True, vflip=False, rot90=False, crop_scale=(1.0, 1.0))
    outs = [make_augment(cfg, spec, cfg.crop_scale)(x) for _ in range(30)]
    assert all(torch.equal(o, x) or torch.equal(o, x.flip(-1)) for o in outs)  # left-right only
    assert any(torch.equal(o, x.flip(-1)) for o in outs)
    cfg = AugmentConfig(flips=True, rot90=False, crop_scale=(1.0, 1.0))  # default: both axes
    assert any(torch.equal(make_augment(cfg, spec, cfg.crop_scale)(x), x.flip(-2)) for _ in range(30))


def test_square_crops_keep_the_aspect_ratio():
    """crop_ratio [1, 1]: every crop box is square, so a circle stays round; the default
    ratio range gives non-square boxes."""
    spec = InputSpec(detect_scaling(np.zeros((1, 4, 4), np.uint8)), [0.0], [1.0], 4)
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(flips=False, rot90=False, crop_scale=(0.3, 0.9), crop_ratio=(1.0, 1.0))
    boxes = [make_augment(cfg, spec, cfg.crop_scale).geometry.sample(rng).box for _ in range(50)]
    assert all(abs(h - w) < 1e-9 for _, _, h, w in boxes)
    assert len({round(h, 6) for _, _, h, _ in boxes}) > 10  # the size still varies
    cfg = AugmentConfig(flips=False, rot90=False, crop_scale=(0.3, 0.9))
    boxes = [make_augment(cfg, spec, cfg.crop_scale).geometry.sample(rng).box for _ in range(50)]
    assert max(abs(h / w - 1) for _, _, h, w in boxes) > 0.1


@pytest.mark.parametrize(
    ("task", "change", "msg"),
    [
        ("classification", {"shift": -1}, "augment.shift must be >= 0"),
        ("segmentation", {"shift": 4}, "augment.shift applies to classification"),
        ("classification", {"crop_scale": (0.9, 0.8)}, "augment.crop_scale must satisfy"),
        ("classification", {"crop_ratio": "square"}, "augment.crop_ratio must be two numbers"),
        ("classification", {"mixup": -0.1}, "alphas >= 0"),
        ("segmentation", {"cutmix": 1.0}, "apply to classification"),
    ],
)
def test_config_check_refuses_values_no_augmentation_can_use(task, change, msg):
    AugmentConfig().check(task)  # the defaults are fine for both tasks
    with pytest.raises(UsageError, match=msg):
        AugmentConfig(**change).check(task)


def test_no_augmentation_when_nothing_moves_or_changes():
    spec = InputSpec(detect_scaling(np.zeros((1, 4, 4), np.uint8)), [0.0], [1.0], 4)
    still = AugmentConfig(flips=False, rot90=False, crop_scale=(1.0, 1.0))
    assert make_augment(still, spec, still.crop_scale) is None
    assert make_augment(AugmentConfig(flips=False, rot90=False, speckle=0.5), spec, (1.0, 1.0)) is not None


# --------------------------------------------------------------------------- product variations (issue 32)


def test_coarser_pixels_remove_detail_but_keep_the_mean():
    x = torch.zeros(1, 32, 32)
    x[:, ::2, ::2] = 1.0  # a checkerboard-like fine pattern
    out = coarser(x, 2.0)
    assert out.shape == x.shape
    assert float(out.std()) < 0.2 * float(x.std())  # the 1-px pattern is gone
    assert abs(float(out.mean()) - float(x.mean())) < 0.02


def test_multilook_reduces_speckle_variance_by_about_the_window_area():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, 64, generator=g)  # independent pixels
    out = multilook(x, 3)
    assert out.shape == x.shape
    ratio = float(x[:, 4:-4, 4:-4].var() / out[:, 4:-4, 4:-4].var())
    assert 6.0 < ratio < 12.0  # 9 independent looks


@pytest.mark.parametrize("to_log", [True, False])
def test_tone_curve_changes_the_display_curve_and_restretches(to_log):
    x = torch.linspace(0.01, 1.0, 100 * 100).view(1, 100, 100)
    out = tone_curve(x, to_log, 30.0)
    assert out.shape == x.shape and float(out.min()) == 0.0 and float(out.max()) == 1.0
    assert bool((out.flatten().diff() >= -1e-6).all())  # monotone: order of values kept
    mid = float(out.flatten()[5000])  # the median pixel: log lifts it, linear sinks it
    assert (mid > 0.7) if to_log else (mid < 0.2)


def test_product_variations_are_probabilities():
    with pytest.raises(UsageError, match=r"augment.tone is a probability in \[0, 1\], got 1.5"):
        AugmentConfig(tone=1.5).check("segmentation")
    cfg = AugmentConfig(flips=False, rot90=False, looks=1.0)
    spec = InputSpec(detect_scaling(np.zeros((1, 8, 8), np.uint8)), [0.5], [0.5], 16)
    assert make_augment(cfg, spec, (1.0, 1.0)) is not None  # a value change alone augments


def test_rerender_draws_new_renderings_of_raw_chips_in_the_dataset():
    raw = (np.arange(32 * 32).reshape(1, 32, 32) % 200 + 20).astype(np.uint8)
    spec = InputSpec(detect_scaling(raw), [0.5], [0.5], 32)
    plain = ChipDataset([raw], [0], spec)
    assert rerender(0.0) is None
    ds = ChipDataset([raw], [0], spec, rerender=rerender(1.0))
    torch.manual_seed(0)
    outs = [ds[0][0] for _ in range(6)]
    assert all(o.shape == plain[0][0].shape for o in outs)
    assert sum(not torch.equal(o, plain[0][0]) for o in outs) >= 5  # almost every draw differs
    assert np.array_equal(ds.raws[0], raw)  # the stored chip is never modified
    float_raw = raw.astype(np.float32)  # not an 8-bit rendering: passed as it is
    assert rerender(1.0)(float_raw) is float_raw
