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
