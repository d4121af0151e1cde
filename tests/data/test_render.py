"""Re-renderings of 8-bit chips (`data/render.py`): shape, dtype and determinism of each, what
each does to the pixel values, and the random choice for augmentation."""

import numpy as np
import pytest

from sarmae_cli.data import render as R


def speckle_chip(seed: int = 0, size: int = 64, bands: int = 1) -> np.ndarray:
    """A chip like the MSTAR renderings: Rayleigh clutter in linear magnitude (mean about 22 of
    255) with a bright target in the middle, uint8 [bands, size, size]."""
    rng = np.random.default_rng(seed)
    amp = rng.rayleigh(18.0, (bands, size, size))
    c = size // 2
    amp[:, c - 6 : c + 6, c - 4 : c + 4] *= 8.0
    return np.clip(np.rint(amp), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", list(R.RENDERINGS))
@pytest.mark.parametrize("bands", [1, 2])
def test_each_rendering_keeps_shape_and_dtype_and_is_deterministic(name, bands):
    chip = speckle_chip(bands=bands, size=48)
    before = chip.copy()
    out = R.render(chip, name)
    assert out.shape == chip.shape and out.dtype == np.uint8
    assert np.array_equal(out, R.render(chip, name))  # deterministic
    assert np.array_equal(chip, before)  # the input is left alone
    if name == "standard":
        assert np.array_equal(out, chip) and out is not chip
    else:
        assert not np.array_equal(out, chip), f"{name} left the chip unchanged"


def test_standard_is_first():
    assert next(iter(R.RENDERINGS)) == "standard"
    names = "standard gamma0.5 gamma2 percentile histeq linear log jpeg50"
    assert list(R.RENDERINGS) == names.split()


def test_gamma_is_monotone_and_brightens_or_darkens():
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for name, brighter in (("gamma0.5", True), ("gamma2", False)):
        out = R.render(ramp, name).ravel().astype(int)
        assert np.all(np.diff(out) >= 0), f"{name} is not monotone"
        assert out[0] == 0 and out[-1] == 255
        mid = ramp.ravel()[1:-1].astype(int)
        assert np.all(out[1:-1] >= mid) if brighter else np.all(out[1:-1] <= mid)
    assert R.render(ramp, "gamma0.5")[0, 4, 0] == round(255 * (64 / 255) ** 0.5)  # 64 -> 128


def test_gain_scales_magnitude_and_clips():
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    out = R.gain(ramp, 1.1).ravel().astype(int)
    assert out[100] == 110 and out[240] == 255 and out[0] == 0
    assert np.array_equal(R.gain(ramp, 1.0), ramp)
    assert np.all(R.gain(ramp, 0.5).ravel().astype(int) == np.rint(np.arange(256) * 0.5))


def test_percentile_stretches_the_2_to_98_range_to_full_scale():
    chip = speckle_chip(1)
    out = R.render(chip, "percentile").astype(float)
    lo, hi = np.percentile(chip, [2, 98])
    assert (out <= 0).mean() >= 0.01 and (out >= 255).mean() >= 0.01  # about 2 % clipped each side
    inside = (chip > lo) & (chip < hi)
    expected = (chip[inside] - lo) * 255 / (hi - lo)
    assert np.abs(out[inside] - expected).max() <= 0.5
    flat = np.full((1, 8, 8), 7, np.uint8)
    assert np.array_equal(R.render(flat, "percentile"), flat)


def test_histeq_flattens_the_histogram():
    chip = speckle_chip(2)
    out = R.render(chip, "histeq")
    cdf = lambda a: np.cumsum(np.bincount(a.ravel(), minlength=256)) / a.size  # noqa: E731
    ideal = (np.arange(256) + 1) / 256
    assert np.abs(cdf(out) - ideal).max() < 0.5 * np.abs(cdf(chip) - ideal).max()
    assert np.abs(cdf(out) - ideal).max() < 0.1
    assert float(out.std()) > 2 * float(chip.std())
    # the order of the levels is kept
    order = np.argsort(chip.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_log_and_linear_are_inverse_curves_over_the_fixed_range():
    ramp = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    lg, ln = R.render(ramp, "log").ravel(), R.render(ramp, "linear").ravel()
    assert lg[0] == 0 and lg[1] == 0 and lg[255] == 255 and ln[255] == 255 and ln[0] == 1
    assert np.all(np.diff(lg.astype(int)) >= 0) and np.all(np.diff(ln.astype(int)) >= 0)
    # 20 log10(v / 255) over 48.1 dB: v = 16 is -24 dB, the middle of the range
    assert abs(int(lg[16]) - 128) <= 1 and abs(R.LOG_RANGE_DB - 48.13) < 0.01
    # linear undoes log up to the 8-bit quantisation of the log curve (coarsest at the top)
    levels = np.arange(256)
    back = R.linear(R.log(ramp)).ravel().astype(int)
    assert np.all(np.abs(back - levels) <= np.maximum(1, 0.02 * levels))
    chip = speckle_chip(3)
    # the log rendering lifts the clutter, the linear one buries it
    assert np.median(R.log(chip)) > 3 * np.median(chip) > 3 * np.median(R.linear(chip))


def test_jpeg_round_trip_is_close_but_not_equal():
    chip = speckle_chip(4)
    out = R.render(chip, "jpeg50").astype(int)
    diff = np.abs(out - chip.astype(int))
    assert diff.max() > 0
    psnr = 10 * np.log10(255**2 / np.mean(diff.astype(float) ** 2))
    assert psnr > 25 and abs(out.mean() - chip.mean()) < 1.0  # white speckle: the worst case
    assert np.corrcoef(out.ravel(), chip.ravel())[0, 1] > 0.8
    better = np.abs(R.jpeg(chip, 95).astype(int) - chip.astype(int)).mean()
    assert better < diff.mean()


def test_random_rendering_is_reproducible_and_covers_the_choices():
    chip = speckle_chip(5, size=32)
    a = [R.random_rendering(chip, np.random.default_rng(7)) for _ in range(2)]
    assert np.array_equal(a[0], a[1])
    rng = np.random.default_rng(0)
    seen = {R.random_rendering(chip, rng).tobytes() for _ in range(200)}
    assert len(seen) == len(R.RENDERINGS)
    only = R.random_rendering(chip, rng, names=["gamma2"])
    assert np.array_equal(only, R.render(chip, "gamma2"))
    with pytest.raises(ValueError, match="unknown rendering"):
        R.random_rendering(chip, rng, names=["sepia"])
    with pytest.raises(ValueError, match="at least one"):
        R.random_rendering(chip, rng, names=[])


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((1, 8, 8), np.float32), [[1]]])
def test_renderings_take_uint8_chips_only(bad):
    with pytest.raises(ValueError, match="uint8 chip"):
        R.render(bad, "gamma2")


def test_random_display_draws_every_family_reproducibly():
    chip = (np.arange(48 * 48).reshape(1, 48, 48) % 251).astype(np.uint8)
    a = [R.random_display(chip, np.random.default_rng(s)) for s in range(60)]
    b = [R.random_display(chip, np.random.default_rng(s)) for s in range(60)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(x.dtype == np.uint8 and x.shape == chip.shape for x in a)
    distinct = {x.tobytes() for x in a}
    assert len(distinct) > 40  # parameters are drawn, not a few fixed points
