"""Input scaling: detection rules and the dB / stretch / normalisation pipeline."""

import numpy as np
import pytest

from sarmae_cli.data.scaling import Scaling, detect_mode, prepare, stretch_range, to_db, to_unit
from sarmae_cli.errors import UsageError


def test_detect_modes():
    rng = np.random.default_rng(0)
    assert detect_mode(np.uint8, np.zeros(4))[0] == "uint8"
    assert detect_mode(np.uint16, np.zeros(4))[0] == "uint16"
    assert detect_mode(np.complex64, np.zeros(4))[0] == "amplitude"
    assert detect_mode(np.float32, rng.normal(-15, 4, 1000))[0] == "db"
    assert detect_mode(np.float32, rng.gamma(1, 0.05, 1000))[0] == "power"
    assert detect_mode(np.float32, rng.gamma(4, 50, 1000))[0] == "amplitude"
    assert detect_mode(np.float32, rng.gamma(1, 0.05, 1000), "scene_norm_db.tif")[0] == "db"


def test_detect_linear_modes_from_names():
    """Calibrated amplitude often has a median below 1, like power: names settle it."""
    amp = np.sqrt(rng_power := np.random.default_rng(1).gamma(4, 0.02, 1000))
    assert detect_mode(np.float32, amp)[0] == "power"  # values alone cannot tell
    assert detect_mode(np.float32, amp, "S1A_Amplitude_VV.tif")[0] == "amplitude"
    assert detect_mode(np.float32, amp, "vv_amp.tif")[0] == "amplitude"
    assert detect_mode(np.float32, rng_power * 100, "x.tif Intensity_VV")[0] == "power"
    assert detect_mode(np.float32, rng_power * 100, "Sigma0_VV.tif")[0] == "power"
    assert detect_mode(np.float32, rng_power, "Sigma0_VV_db.tif")[0] == "db"
    assert detect_mode(np.float32, rng_power * 100, "example.tif")[0] == "amplitude"  # 'amp' in a word


def test_same_backscatter_same_input_across_modes():
    db = np.linspace(-25, 0, 50, dtype=np.float32).reshape(1, 5, 10)
    power = 10 ** (db / 10)
    amplitude = np.sqrt(power)
    sc = Scaling("db")
    r = stretch_range(db, sc)
    ref = prepare(db, sc, r, [0.5], [0.5])
    for mode, x in (("power", power), ("amplitude", amplitude)):
        np.testing.assert_allclose(prepare(x, Scaling(mode), r, [0.5], [0.5]), ref, atol=1e-5)
    slc = amplitude * np.exp(1j * 0.3)
    np.testing.assert_allclose(prepare(slc, Scaling("amplitude"), r, [0.5], [0.5]), ref, atol=1e-5)


def test_invalid_pixels_and_uint8():
    x = np.array([[[0.0, -1.0, np.nan, np.inf, 0.01]]], np.float32)
    d = to_db(x, "power")
    assert np.isnan(d[0, 0, :4]).all() and d[0, 0, 4] == pytest.approx(-20.0)
    u8 = np.array([[[0, 255, 128]]], np.uint8)
    out = to_unit(to_db(u8, "uint8"), stretch_range(u8.astype(np.float32), Scaling("uint8")))
    np.testing.assert_allclose(out[0, 0], [0, 1, 128 / 255], atol=1e-6)


def test_percentile_stretch_per_scene():
    rng = np.random.default_rng(1)
    db = rng.normal(-12, 3, (2, 100, 100)).astype(np.float32)
    db[1] -= 8
    r = stretch_range(db, Scaling("db", stretch="percentile", percentiles=(2, 98)))
    for i in range(2):
        np.testing.assert_allclose(r[i], np.percentile(db[i], [2, 98]), rtol=1e-5)


def test_round_trip_dict_and_errors():
    s = Scaling("db", stretch="percentile", extra={"auto": "rule"})
    assert Scaling.from_dict(s.to_dict()) == s
    with pytest.raises(UsageError, match="unknown input scaling"):
        Scaling("decibel")
    with pytest.raises(UsageError, match="increasing"):
        Scaling("db", db_range=(5, -30))


def test_scene_scaling_keeps_weights_stretch_and_uint16_percentile():
    from sarmae_cli.data.scaling import scene_scaling

    w = Scaling("uint8", stretch="fixed", db_range=(-25.0, 0.0))
    s = scene_scaling(w, "power", "detected")
    assert (s.mode, s.stretch, s.db_range, s.extra) == (
        "power",
        "fixed",
        (-25.0, 0.0),
        {"reason": "detected"},
    )
    assert scene_scaling(w, "uint16").stretch == "percentile"


def test_percentile_stretch_of_uint8_renderings_removes_their_rendering():
    """Two renderings of one scene (a darker, flatter one too) reach the same [0, 1] values."""
    rng = np.random.default_rng(2)
    a = rng.integers(40, 220, (1, 64, 64)).astype(np.uint8)
    b = (a.astype(np.float32) * 0.5 + 20).astype(np.uint8)  # another display stretch
    s = Scaling("uint8", stretch="percentile", percentiles=(2, 98))
    ua, ub = (to_unit(to_db(x, "uint8"), stretch_range(to_db(x, "uint8"), s)) for x in (a, b))
    assert float(np.abs(ua - ub).mean()) < 0.01
    fixed = Scaling("uint8")
    assert stretch_range(to_db(b, "uint8"), fixed).tolist() == [[0.0, 255.0]]


def test_equalize_stretch_is_invariant_to_increasing_display_curves():
    """Gamma and log display curves change the percentile stretch's input, not equalize's."""
    rng = np.random.default_rng(3)
    amp = rng.gamma(2.0, 20.0, (1, 64, 64)).astype(np.float32)
    x = np.clip(amp, 0, 255).astype(np.uint8)
    curves = {
        "gamma 0.5": (255 * (x / 255.0) ** 0.5).astype(np.uint8),
        "log": (255 * np.log1p(x.astype(np.float32)) / np.log(256)).astype(np.uint8),
    }
    eq, pc = Scaling("uint8", stretch="equalize"), Scaling("uint8", stretch="percentile")

    def unit(a: np.ndarray, s: Scaling) -> np.ndarray:
        db = to_db(a, "uint8")
        return to_unit(db, stretch_range(db, s))

    for name, y in curves.items():
        gap_eq = float(np.abs(unit(x, eq) - unit(y, eq)).mean())
        gap_pc = float(np.abs(unit(x, pc) - unit(y, pc)).mean())
        assert gap_eq < 0.01 < gap_pc, (name, gap_eq, gap_pc)
    u = unit(x, eq)
    assert 0.45 < float(u.mean()) < 0.55 and u.min() >= 0 and u.max() <= 1  # about uniform


def test_equalize_maps_ties_to_mid_rank_and_keeps_nan():
    """A value that fills several quantiles maps to the middle of its share, NaN stays NaN."""
    from sarmae_cli.data.scaling import EQUALIZE_KNOTS, knot_levels

    db = np.zeros((2, 10, 10), np.float32)
    db[:, 6:] = 5.0  # 60 % zeros, 40 % fives
    db[1, 0, 0] = np.nan
    s = Scaling("db", stretch="equalize")
    knots = stretch_range(db, s)
    assert knots.shape == (2, EQUALIZE_KNOTS)
    u = to_unit(db, knots)
    assert np.isnan(u[1, 0, 0]) and np.isfinite(u[0]).all()
    assert abs(float(u[0, 0, 0]) - 0.3) < 0.01 and abs(float(u[0, 9, 9]) - 0.8) < 0.01
    assert knot_levels(np.array([0.0, 0.0, 1.0])).tolist() == [0.25, 0.25, 1.0]


def test_scene_scaling_keeps_equalize_for_uint16():
    from sarmae_cli.data.scaling import scene_scaling

    assert scene_scaling(Scaling("db", stretch="equalize"), "uint16").stretch == "equalize"
    assert scene_scaling(Scaling("db", stretch="percentile"), "uint16").stretch == "percentile"


def test_anchored_stretch_puts_the_land_water_split_at_mid_grey():
    """A scene with dark water and bright land: the split goes to 0.5, whatever the calibration
    offset; a scene without water falls back to the plain percentile stretch."""
    rng = np.random.default_rng(4)
    db = np.full((1, 128, 128), -8.0, np.float32)
    db[:, :, :40] = -22.0  # water on the left
    db += rng.normal(0, 1.5, db.shape).astype(np.float32)
    s = Scaling("db", stretch="anchored")
    for offset in (0.0, 7.5):  # another calibration constant shifts every value alike
        knots = stretch_range(db + offset, s)
        assert knots.shape == (1, 3) and knots[0, 0] < knots[0, 1] < knots[0, 2]
        assert -22.0 + offset < knots[0, 1] < -8.0 + offset
        u = to_unit(db + offset, knots)
        assert float(u[0, :, :40].mean()) < 0.5 < float(u[0, :, 40:].mean())
    land = (-8.0 + rng.normal(0, 1.5, (1, 128, 128))).astype(np.float32)
    knots = stretch_range(land, s)
    pct = stretch_range(land, Scaling("db", stretch="percentile"))
    np.testing.assert_allclose(knots[0, [0, 2]], pct[0], rtol=1e-6)
    assert knots[0, 1] == pytest.approx(pct[0].mean())
    np.testing.assert_allclose(to_unit(land, knots), to_unit(land, pct), atol=1e-5)
    with pytest.raises(ValueError, match="anchored"):
        stretch_range(land.reshape(1, -1), s)
