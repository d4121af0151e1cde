"""Training augmentations (`data/augment.py`): radiometric jitter, shifts with real context,
flips, square crops, and the checks of the augmentation config."""

import numpy as np
import pytest
import torch

from sarmae_cli.data.augment import AugmentConfig, make_augment, radiometric_jitter
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
