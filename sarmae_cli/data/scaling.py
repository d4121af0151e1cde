"""Input scaling: raw SAR pixel values (uint8 renderings, uint16 amplitude DN, dB, linear
power, amplitude, complex SLC) -> model input. One function per step, all pure numpy.

Pipeline for a [C, H, W] array:
1. `to_db`: every calibrated mode goes to decibels (uint8 stays a display rendering);
2. `to_unit`: dB are stretched to [0, 1] with a fixed range, per-scene percentiles or
   per-scene histogram equalisation (`stretch_range`, computed once per scene from a
   decimated read, never per tile); uint8 is x / 255, as the SARMAE reference feeds it (or,
   with the percentile or equalize stretch, its own per-image statistics: display renderings
   differ from image to image). Equalisation maps each value to its mid-rank in the scene, so
   any increasing display curve (gamma, log or linear magnitude, contrast stretch) gives the
   same input up to the rendering's quantisation. The anchored stretch is the percentile
   stretch bent at the scene's land/water threshold (`data/bimodal.find_threshold`, the
   physical baseline's), which it maps to 0.5 whatever the sensor or rendering;
3. `normalize`: (u - mean) / std per band from the weights' metadata.
Invalid pixels (nodata, NaN/inf, power <= 0) become NaN in steps 1-2 and 0 after step 3;
the caller keeps the validity mask.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sarmae_cli.data.bimodal import find_threshold
from sarmae_cli.errors import UsageError

MODES = ("uint8", "uint16", "db", "power", "amplitude")
STRETCHES = ("fixed", "percentile", "equalize", "anchored")
#: Quantile knots of the equalize stretch (every 1/256 of the scene's values).
EQUALIZE_KNOTS = 257


@dataclass(frozen=True)
class Scaling:
    """How raw pixels become model input; stored in weights metadata as `input_scaling`."""

    mode: str = "uint8"
    stretch: str = "fixed"  # fixed `db_range`; per-scene `percentiles`, `equalize` or `anchored`
    db_range: tuple[float, float] = (-30.0, 5.0)
    percentiles: tuple[float, float] = (2.0, 98.0)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. how `auto` chose the mode

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"unknown input scaling {self.mode!r}; use one of {', '.join(MODES)}")
        if self.stretch not in STRETCHES:
            raise UsageError(f"unknown stretch {self.stretch!r}; use one of {', '.join(STRETCHES)}")
        lo, hi = self.db_range
        if not lo < hi:
            raise UsageError(f"db_range must be increasing, got {self.db_range}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["db_range"], d["percentiles"] = list(self.db_range), list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Scaling:
        known = {"mode", "stretch", "db_range", "percentiles", "extra"}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("db_range", "percentiles"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        kw.setdefault("extra", {k: v for k, v in d.items() if k not in known})
        return cls(**kw)


# Words (split on anything not a letter or digit) that name a linear radiometry; SNAP writes
# bands as Amplitude_VV, Intensity_VV, Sigma0_VV (linear) and Sigma0_VV_db.
AMPLITUDE_WORDS = {"amplitude", "amp"}
POWER_WORDS = {"intensity", "power", "sigma0", "gamma0", "beta0"}


def detect_mode(dtype: np.dtype | str, sample: np.ndarray, hints: str = "") -> tuple[str, str]:
    """Guess the scaling of a raster from its dtype, a sample of valid values and text hints
    (file name, band descriptions, tags). Returns (mode, the rule that decided)."""
    dtype = np.dtype(dtype)
    h = hints.lower()
    if np.issubdtype(dtype, np.complexfloating) or dtype.kind == "c":
        return "amplitude", "complex (SLC) data: its modulus is used as amplitude"
    if dtype == np.uint8:
        return "uint8", "8-bit integers: a display rendering, scaled by 1/255"
    if dtype in (np.uint16, np.int16, np.uint32, np.int32):
        return "uint16", f"{dtype} integers: amplitude digital numbers"
    v = sample[np.isfinite(sample)]
    if "db" in h.replace("dbz", "") or "decibel" in h:
        return "db", "metadata or file name says dB"
    words = set(re.split(r"[^a-z0-9]+", h))
    if words & AMPLITUDE_WORDS:
        return "amplitude", "metadata or file name says amplitude"
    if words & POWER_WORDS:
        return "power", "metadata or file name says power / intensity / sigma0"
    if v.size and (v < 0).mean() > 0.05:
        return "db", "floats with many negative values: decibels"
    if v.size and np.median(v) < 1.0:
        return "power", "non-negative floats with median < 1: linear power (sigma0 / intensity)"
    return "amplitude", "non-negative floats with median >= 1: amplitude"


def to_db(x: np.ndarray, mode: str) -> np.ndarray:
    """Raw values -> dB (float32), NaN where undefined. uint8 is returned as float, unchanged."""
    if np.iscomplexobj(x):
        x = np.abs(x)
    x = x.astype(np.float32, copy=False)
    if mode in ("uint8", "db"):
        return np.where(np.isfinite(x), x, np.nan).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = 10.0 if mode == "power" else 20.0  # amplitude and uint16 DN are amplitudes
        out = factor * np.log10(x)
    return np.where(np.isfinite(out), out, np.nan).astype(np.float32)


def stretch_range(db_sample: np.ndarray, scaling: Scaling) -> np.ndarray:
    """Per-band knots of the dB stretch, [C, K]. `db_sample` is [C, N] (or [C, H, W]) of one
    whole scene, decimated, NaN where invalid. Fixed and percentile stretches give K = 2,
    (lo, hi); equalize gives the K = EQUALIZE_KNOTS quantiles 0, 1/256, ..., 1 of each band;
    anchored gives K = 3, (lo, t, hi) with `anchor`'s threshold t (it needs a [C, H, W]
    sample). Fixed stretch ignores the sample; the statistics of uint8 renderings are of
    their 0-255 values."""
    c = db_sample.shape[0]
    if scaling.mode == "uint8" and scaling.stretch == "fixed":
        return np.tile(np.array([0.0, 255.0], np.float32), (c, 1))
    if scaling.stretch == "fixed":
        return np.tile(np.array(scaling.db_range, np.float32), (c, 1))
    equalize = scaling.stretch == "equalize"
    levels = np.linspace(0.0, 100.0, EQUALIZE_KNOTS) if equalize else np.asarray(scaling.percentiles)
    out = np.empty((c, levels.size), np.float32)
    flat = db_sample.reshape(c, -1)
    for i in range(c):
        v = flat[i][np.isfinite(flat[i])]
        if v.size == 0:
            out[i] = np.linspace(*scaling.db_range, levels.size)
            continue
        q = np.percentile(v, levels)
        if not equalize and q[1] <= q[0]:
            q[1] = q[0] + 1.0
        out[i] = q
    if scaling.stretch == "anchored":
        if db_sample.ndim != 3:
            raise ValueError("the anchored stretch needs a [C, H, W] sample of the scene")
        return np.stack([anchor(band, lo, hi) for band, (lo, hi) in zip(db_sample, out, strict=True)])
    return out


def anchor(band: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Knots (lo, t, hi) of the anchored stretch of one band [H, W] (NaN where invalid): t is
    the scene's land/water threshold from its bimodal tiles, kept inside the middle 90 % of
    (lo, hi); without a bimodal tile t is the middle of (lo, hi), the plain percentile
    stretch. [3] float32."""
    mid = (lo + hi) / 2
    if np.isfinite(band).sum() >= 16:
        t = find_threshold(band)
        if not t.fallback:
            margin = 0.05 * (hi - lo)
            mid = float(np.clip(t.value, lo + margin, hi - margin))
    return np.array([lo, mid, hi], np.float32)


def knot_levels(knots: np.ndarray) -> np.ndarray:
    """The [0, 1] level of each of K increasing knots: evenly spaced, and for knots that are
    equal (a value that fills several quantiles, e.g. an 8-bit level) the mean of their levels,
    so a tied value maps to its mid-rank. [K] -> [K] float64."""
    k = knots.size
    levels = np.linspace(0.0, 1.0, k)
    _, start, counts = np.unique(knots, return_index=True, return_counts=True)
    sums = np.add.reduceat(levels, start)  # knots are sorted, so equal ones are adjacent
    return np.repeat(sums / counts, counts)


def to_unit(db: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """[C, H, W] dB (or uint8 values) -> [0, 1] with per-band knots `ranges` [C, K]: K = 2 is a
    linear stretch of (lo, hi), clipped; K > 2 maps piecewise-linearly through the knots'
    levels (`knot_levels`: histogram equalisation). NaN stays NaN."""
    if ranges.shape[1] == 2:
        lo = ranges[:, 0].reshape(-1, 1, 1)
        hi = ranges[:, 1].reshape(-1, 1, 1)
        return np.clip((db - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    out = np.empty(db.shape, np.float32)
    for i, knots in enumerate(ranges.astype(np.float64)):
        out[i] = np.interp(db[i], knots, knot_levels(knots))
        out[i][np.isnan(db[i])] = np.nan
    return out


def normalize(unit: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """(u - mean) / std per band; NaN (invalid) -> 0. [C, H, W] -> [C, H, W] float32."""
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    return np.nan_to_num((unit - m) / s, nan=0.0).astype(np.float32)


def prepare(
    x: np.ndarray, scaling: Scaling, ranges: np.ndarray, mean: list[float], std: list[float]
) -> np.ndarray:
    """All three steps: raw [C, H, W] -> normalized model input [C, H, W] float32."""
    return normalize(to_unit(to_db(x, scaling.mode), ranges), mean, std)


def scene_scaling(weights: Scaling, mode: str, reason: str = "") -> Scaling:
    """The scaling of one scene: its own `mode` (chosen by `--input-scale` or detected), with the
    stretch of the weights. Uncalibrated uint16 digital numbers have no meaningful fixed dB
    range, so with a fixed stretch they use the per-scene percentile stretch."""
    stretch = "percentile" if mode == "uint16" and weights.stretch == "fixed" else weights.stretch
    extra = {"reason": reason} if reason else {}
    return Scaling(mode, stretch, weights.db_range, weights.percentiles, extra)
