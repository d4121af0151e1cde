"""SARE speckle statistics: Gamma looks, log-normal formula, reference mode, dB domain, fraction."""

import math

import numpy as np
import pytest
import torch

from sarmae_cli.data.speckle import (
    SpeckleConfig,
    apply_noise,
    draw_noise,
    gamma_noise,
    inject,
    lognormal_enl,
    lognormal_noise,
)
from sarmae_cli.errors import UsageError

N = (1, 400, 500)  # 200k pixels


def enl(ratio: np.ndarray) -> float:
    """Equivalent number of looks of a multiplicative noise sample: mean^2 / variance."""
    return float(ratio.mean() ** 2 / ratio.var())


@pytest.mark.parametrize("looks", [1.0, 4.0, 10.0])
def test_gamma_ratio_has_mean_one_and_enl_of_looks(looks):
    n = gamma_noise(N, looks, np.random.default_rng(0))
    assert n.mean() == pytest.approx(1.0, abs=0.01)
    assert enl(n) == pytest.approx(looks, rel=0.10)


def test_injected_gamma_image_noisy_over_clean_ratio():
    clean = torch.full(N, 0.01)  # low values: the clamp at 1 never acts
    cfg = SpeckleConfig(mode="gamma", fraction=1.0, looks=(3.0, 3.0))
    noisy, applied = inject(clean, cfg, np.random.default_rng(1))
    ratio = (noisy / clean).numpy()
    assert applied
    assert ratio.mean() == pytest.approx(1.0, abs=0.01)
    assert enl(ratio) == pytest.approx(3.0, rel=0.10)
    assert torch.equal(clean, torch.full(N, 0.01))  # the target stays clean


def test_gamma_looks_are_drawn_log_uniformly_in_range():
    cfg = SpeckleConfig(mode="gamma", looks=(2.0, 8.0))
    rng = np.random.default_rng(2)
    looks = [float(draw_noise((1, 2, 2), cfg, rng)[1].split("=")[1]) for _ in range(2000)]
    assert min(looks) >= 2.0 and max(looks) <= 8.0
    assert np.median(looks) == pytest.approx(4.0, rel=0.1)  # geometric mean of 2 and 8


@pytest.mark.parametrize("sigma", [0.3, 0.7])
def test_lognormal_matches_its_formula(sigma):
    n = lognormal_noise(N, sigma, np.random.default_rng(3))
    log = np.log(n)
    assert log.mean() == pytest.approx(0.0, abs=0.01)
    assert log.std() == pytest.approx(sigma, rel=0.02)
    assert n.mean() == pytest.approx(math.exp(sigma**2 / 2), rel=0.02)
    assert enl(n) == pytest.approx(lognormal_enl(sigma), rel=0.10)
    assert lognormal_enl(0.7) == pytest.approx(1.58, abs=0.01)
    assert lognormal_enl(0.3) == pytest.approx(10.6, abs=0.1)


def test_reference_mode_uses_gamma_for_small_sigma_and_lognormal_above():
    rng = np.random.default_rng(4)
    small = SpeckleConfig(mode="reference", sigma=(0.04, 0.04))
    n, what = draw_noise(N, small, rng)
    assert what.startswith("gamma")
    assert enl(n) == pytest.approx(1 / (4 * 0.04**2), rel=0.10)  # L = 1 / (4 sigma^2) = 156
    n, what = draw_noise(N, SpeckleConfig(mode="reference", sigma=(0.5, 0.5)), rng)
    assert what.startswith("lognormal")
    assert np.log(n).std() == pytest.approx(0.5, rel=0.02)


def test_db_domain_noise_is_additive_in_decibels():
    unit = torch.full((1, 8, 8), 0.5)
    noise = np.full((1, 8, 8), 2.0, np.float32)  # x2 in power = +3.01 dB
    out = apply_noise(unit, noise, db_span=35.0)
    assert torch.allclose(out, torch.full_like(unit, 0.5 + 10 * math.log10(2) / 35))
    assert torch.allclose(apply_noise(unit, noise), torch.ones_like(unit))  # linear, clamped to 1


def test_fraction_of_noisy_samples_and_disabled_mode():
    rng = np.random.default_rng(5)
    img = torch.full((1, 4, 4), 0.2)
    hits = sum(inject(img, SpeckleConfig(fraction=0.3), rng)[1] for _ in range(4000))
    assert hits / 4000 == pytest.approx(0.3, abs=0.03)
    assert not any(inject(img, SpeckleConfig(enabled=False), rng)[1] for _ in range(50))
    same, applied = inject(img, SpeckleConfig(fraction=0.0), rng)
    assert not applied and same is img


def test_nan_pixels_stay_nan():
    img = torch.tensor([[[0.5, float("nan")]]])
    out, _ = inject(img, SpeckleConfig(fraction=1.0), np.random.default_rng(0))
    assert torch.isnan(out[0, 0, 1]) and 0 < out[0, 0, 0] <= 1


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"mode": "poisson"}, "unknown SARE mode"),
        ({"fraction": 1.5}, "fraction"),
        ({"looks": (0.0, 2.0)}, "looks"),
        ({"sigma": (0.5, 0.1)}, "sigma"),
    ],
)
def test_bad_config_is_a_usage_error(kw, msg):
    with pytest.raises(UsageError, match=msg):
        SpeckleConfig(**kw)
