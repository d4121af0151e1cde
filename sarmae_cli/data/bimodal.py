"""Bimodal-histogram thresholds of a SAR image (dark = water), pure numpy/scipy: the core of
the physical baseline (`infer/threshold.py`, whose docstring gives the method and its
references) and of the `anchored` input stretch (`data/scaling.py`), which pins each scene's
land/water split to the middle of the model's input range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, median_filter

from sarmae_cli.errors import UsageError


@dataclass(frozen=True)
class Params:
    """The method's settings, fixed before any test score was seen (docs/model_cards/sarmae_water.md)."""

    filter_size: int = 5  # median filter, pixels (odd)
    tile: int = 64  # tiles of the decimated sample, pixels
    min_valid: float = 0.5  # share of valid pixels a tile needs to be tested
    min_ashman: float = 2.0  # Ashman's D of a bimodal tile
    min_share: float = 0.1  # smaller Gaussian's share of a bimodal tile
    rule: str = "otsu"  # threshold of the pooled bimodal tiles: "otsu" or "ki"
    bins: int = 256


@dataclass(frozen=True)
class Threshold:
    """A scene's threshold (dB, or grey levels of an 8-bit rendering) and how it was found."""

    value: float
    tiles: int  # tiles with enough valid pixels to test
    bimodal: int  # of those, bimodal
    fallback: bool  # no bimodal tile: Otsu on the whole scene


def otsu(counts: np.ndarray) -> int:
    """Otsu (1979): the last bin k of the lower class [0..k] that maximises the between-class
    variance of a histogram."""
    p = counts / max(counts.sum(), 1)
    i = np.arange(len(p))
    w0, m, mu = np.cumsum(p)[:-1], np.cumsum(p * i)[:-1], (p * i).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu * w0 - m) ** 2 / (w0 * (1 - w0))
    if not np.isfinite(between).any():  # one occupied bin: everything in the lower class
        return int(min(np.flatnonzero(counts).max(initial=0), len(p) - 2))
    return int(np.nanargmax(np.where(np.isfinite(between), between, np.nan)))


def kittler_illingworth(counts: np.ndarray) -> int:
    """Kittler and Illingworth (1986) minimum-error threshold: the last bin k of the lower
    class minimising J = P0 ln(s0 / P0) + P1 ln(s1 / P1) for two Gaussian classes; Otsu where
    no split has two classes of positive variance."""
    p = counts / max(counts.sum(), 1)
    i = np.arange(len(p), dtype=np.float64)
    w0, m0, q0 = np.cumsum(p)[:-1], np.cumsum(p * i)[:-1], np.cumsum(p * i * i)[:-1]
    w1, m1, q1 = 1 - w0, (p * i).sum() - m0, (p * i * i).sum() - q0
    with np.errstate(divide="ignore", invalid="ignore"):
        v0, v1 = q0 / w0 - (m0 / w0) ** 2, q1 / w1 - (m1 / w1) ** 2
        j = w0 * np.log(np.sqrt(v0) / w0) + w1 * np.log(np.sqrt(v1) / w1)
    ok = (w0 > 0.01) & (w1 > 0.01) & (v0 > 1e-6) & (v1 > 1e-6) & np.isfinite(j)
    return int(np.argmin(np.where(ok, j, np.inf))) if ok.any() else otsu(counts)


def ashman(counts: np.ndarray, split: int, iters: int = 30) -> tuple[float, float]:
    """Two-Gaussian fit of a histogram (EM on bin indexes, started from the split at `split`):
    (Ashman's D, share of the smaller component)."""
    x = np.arange(len(counts), dtype=np.float64)
    c, n = counts.astype(np.float64), counts.sum()
    resp = np.stack([x <= split, x > split]).astype(np.float64)  # [2, bins]
    for _ in range(iters):
        nk = (resp * c).sum(1) + 1e-12
        w, m = nk / n, (resp * c * x).sum(1) / nk
        v = (resp * c * (x - m[:, None]) ** 2).sum(1) / nk + 1.0 / 12  # + the bin's own spread
        pdf = w[:, None] / np.sqrt(v[:, None]) * np.exp(-((x - m[:, None]) ** 2) / (2 * v[:, None]))
        resp = pdf / np.maximum(pdf.sum(0), 1e-300)
    return float(np.sqrt(2) * abs(m[0] - m[1]) / np.sqrt(v.sum())), float(w.min())


def filtered(db: np.ndarray, size: int) -> np.ndarray:
    """Median filter of a [H, W] image with NaN where invalid: invalid pixels take their
    nearest valid value for the filter and stay NaN."""
    bad = ~np.isfinite(db)
    if bad.all():
        return db
    if bad.any():
        db = db[tuple(distance_transform_edt(bad, return_distances=False, return_indices=True))]
    out = median_filter(db, size=size, mode="nearest")
    out[bad] = np.nan
    return out


def find_threshold(
    sample: np.ndarray, params: Params = Params(), guide: np.ndarray | None = None
) -> Threshold:
    """The scene threshold from a [h, w] sample (dB or grey levels, NaN where invalid), steps
    1-2 of the module docstring. With `guide` ([h, w]: 1 where a model calls water, 0 land, NaN
    unknown) a tile is pooled only when the model also calls between `min_share` and
    1 - `min_share` of it water, and without such a tile there is no fallback: the result has
    `bimodal` 0 and a NaN value."""
    s = filtered(sample.astype(np.float32), params.filter_size)
    v = s[np.isfinite(s)]
    if v.size == 0:
        raise UsageError("no valid pixels to threshold")
    lo, hi = np.percentile(v, [0.1, 99.9])
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, params.bins + 1)
    h, w = s.shape
    th, tw = min(params.tile, h), min(params.tile, w)
    pooled, tiles, bimodal = np.zeros(params.bins, np.int64), 0, 0
    for y in range(0, h, th):
        for x in range(0, w, tw):
            t = s[y : y + th, x : x + tw]
            t = t[np.isfinite(t)]
            if t.size < params.min_valid * th * tw or t.size < 16:
                continue
            tiles += 1
            if guide is not None:
                g = guide[y : y + th, x : x + tw]
                g = g[np.isfinite(g)]
                if not g.size or not params.min_share <= g.mean() <= 1 - params.min_share:
                    continue
            counts = np.histogram(np.clip(t, edges[0], edges[-1]), edges)[0]
            d, share = ashman(counts, otsu(counts))
            if d > params.min_ashman and share >= params.min_share:
                bimodal += 1
                pooled += counts
    if bimodal:
        k = kittler_illingworth(pooled) if params.rule == "ki" else otsu(pooled)
    elif guide is not None:
        return Threshold(float("nan"), tiles, 0, True)
    else:
        k = otsu(np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0])
    return Threshold(float(edges[k + 1]), tiles, bimodal, not bimodal)
