"""Re-renderings of 8-bit SAR chips: the same scene as other products display it.

Every function maps a uint8 chip [C, H, W] to a new uint8 chip of the same shape, band by
band, deterministically (no randomness, no state). They model how another product or viewer
might have turned the same magnitude image into 8 bits, so a classifier can be scored on them
(`benchmarks/mstar_renderings.py`) and trained with them as an augmentation
(`random_rendering`; apply it to the raw chip before `InputSpec.chip`, as a product renders
the whole chip, not the model's crop of it).

    chip = read_image(path)                   # uint8 [1, H, W]
    out = RENDERINGS["histeq"](chip)          # uint8 [1, H, W]
    out = random_rendering(chip, np.random.default_rng(0))
    out = random_display(chip, np.random.default_rng(0))   # parameters drawn too (training)

The 8-bit MSTAR renderings of `../shared/data/mstar10` are of **linear magnitude**: their
clutter (four 20-px corners of a chip) has a standard deviation of 0.56-0.70 times its mean
(10th-90th percentile over every tenth chip of train and test), close to the 0.52 of
Rayleigh-distributed speckle amplitude; a dB rendering would show a spread of about 5.6 dB
whatever the mean. `log` and `linear` convert between the two conventions over
one fixed dynamic range, `LOG_RANGE_DB`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

#: The dynamic range of the `log` / `linear` conversions, in dB: that of 8-bit linear
#: magnitude, 20 log10(255) = 48.1 dB, so that values 1..255 map onto 0..255 and back.
LOG_RANGE_DB = float(20 * np.log10(255.0))

#: The percentiles that `percentile` stretches to 0 and 255.
PERCENTILES = (2.0, 98.0)

#: The JPEG quality of `jpeg50`.
JPEG_QUALITY = 50

Rendering = Callable[[np.ndarray], np.ndarray]


def _check(chip: np.ndarray) -> np.ndarray:
    if not isinstance(chip, np.ndarray) or chip.dtype != np.uint8 or chip.ndim != 3:
        got = f"{chip.dtype} {chip.shape}" if isinstance(chip, np.ndarray) else type(chip).__name__
        raise ValueError(f"a rendering takes a uint8 chip [C, H, W], got {got}")
    return chip


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float values on the 0..255 scale, rounded to the nearest level and clipped."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _lookup(chip: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Apply a 256-entry uint8 lookup table to every pixel."""
    return table[_check(chip)]


def standard(chip: np.ndarray) -> np.ndarray:
    """The chip as given (a copy): the rendering the shipped models were trained on."""
    return _check(chip).copy()


def gamma(chip: np.ndarray, g: float) -> np.ndarray:
    """Power-law display curve 255 (v / 255) ** g: g < 1 brightens the dark clutter, g > 1
    darkens it and leaves only bright scatterers. 0 and 255 stay fixed."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return _lookup(chip, _to_uint8(255.0 * levels**g))


def gain(chip: np.ndarray, k: float) -> np.ndarray:
    """Linear magnitude scaled by `k` (a calibration offset of 20 log10(k) dB), rounded and
    clipped to 0..255; not one of RENDERINGS, a dose for sensitivity sweeps and augmentation."""
    return _lookup(chip, _to_uint8(k * np.arange(256, dtype=np.float64)))


def gamma05(chip: np.ndarray) -> np.ndarray:
    """Gamma 0.5 (square root of the 8-bit value): a brighter, flatter display."""
    return gamma(chip, 0.5)


def gamma2(chip: np.ndarray) -> np.ndarray:
    """Gamma 2 (square of the 8-bit value): the display of power instead of magnitude."""
    return gamma(chip, 2.0)


def percentile(chip: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]) -> np.ndarray:
    """Contrast stretch of each band from its `lo`..`hi` percentiles (2-98 %) to 0..255,
    clipped outside: the default of many viewers. A flat band is returned unchanged."""
    out = _check(chip).copy()
    for b, band in enumerate(chip):
        p_lo, p_hi = np.percentile(band, [lo, hi])
        if p_hi > p_lo:
            out[b] = _to_uint8((band.astype(np.float64) - p_lo) * (255.0 / (p_hi - p_lo)))
    return out


def histeq(chip: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each band (PIL `ImageOps.equalize`): the levels are spread
    so that their cumulative histogram becomes about linear."""
    return np.stack([np.asarray(ImageOps.equalize(Image.fromarray(band))) for band in _check(chip)])


def log(chip: np.ndarray) -> np.ndarray:
    """Re-render linear magnitude as log magnitude: the 8-bit value v is taken as amplitude
    A = v / 255, its dB value 20 log10(A) over the fixed range [-LOG_RANGE_DB, 0] is mapped
    to 0..255 (v = 0, minus infinity dB, goes to 0). This is what a product or viewer that
    displays dB makes of the same scene: clutter lifted to mid-grey, targets compressed.
    With LOG_RANGE_DB = 20 log10(255) it is 255 ln(v) / ln(255)."""
    levels = np.arange(256, dtype=np.float64)
    db = 20.0 * np.log10(np.maximum(levels, 1.0) / 255.0)
    table = 255.0 * (1.0 + db / LOG_RANGE_DB)
    table[0] = 0.0
    return _lookup(chip, _to_uint8(table))


def linear(chip: np.ndarray) -> np.ndarray:
    """The inverse of `log`: the 8-bit value v is taken as log magnitude over the same fixed
    range, dB = (v / 255 - 1) LOG_RANGE_DB, and re-rendered as linear magnitude
    255 * 10 ** (dB / 20) = 255 ** (v / 255). It models the opposite mismatch, a chip rendered
    in dB read as if it were linear: for the linear-magnitude MSTAR chips the result is an
    extreme contrast expansion (clutter near 1-2, only the strongest scatterers bright)."""
    levels = np.arange(256, dtype=np.float64)
    db = (levels / 255.0 - 1.0) * LOG_RANGE_DB
    return _lookup(chip, _to_uint8(255.0 * 10.0 ** (db / 20.0)))


def jpeg(chip: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """A lossy JPEG round trip at `quality` (PIL, baseline, each band as its own greyscale
    image): blocking and ringing as in products delivered as quick-looks."""
    out = []
    for band in _check(chip):
        buf = io.BytesIO()
        Image.fromarray(band).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out.append(np.asarray(im.convert("L")))
    return np.stack(out)


def jpeg50(chip: np.ndarray) -> np.ndarray:
    """JPEG round trip at quality 50."""
    return jpeg(chip, 50)


#: The named renderings, `standard` first: name -> uint8 [C, H, W] -> uint8 [C, H, W].
RENDERINGS: dict[str, Rendering] = {
    "standard": standard,
    "gamma0.5": gamma05,
    "gamma2": gamma2,
    "percentile": percentile,
    "histeq": histeq,
    "linear": linear,
    "log": log,
    "jpeg50": jpeg50,
}


def render(chip: np.ndarray, name: str) -> np.ndarray:
    """The chip in the rendering `name` (a key of RENDERINGS)."""
    if name not in RENDERINGS:
        raise ValueError(f"unknown rendering {name!r}; choose from {', '.join(RENDERINGS)}")
    return RENDERINGS[name](chip)


def random_rendering(
    chip: np.ndarray, rng: np.random.Generator, names: Sequence[str] | None = None
) -> np.ndarray:
    """The chip in one rendering drawn uniformly from `names` (default: all of RENDERINGS,
    `standard` included) with `rng`: a training augmentation, reproducible from the seed."""
    choices = list(names) if names is not None else list(RENDERINGS)
    if not choices:
        raise ValueError("random_rendering needs at least one rendering name")
    return render(chip, choices[int(rng.integers(len(choices)))])


def random_display(chip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The chip in a random display rendering for training: a family drawn uniformly from
    gamma (exponent log-uniform in 0.4-2.5), percentile stretch (low 0-5 %, high 95-100 %),
    histogram equalisation, log or linear magnitude (dynamic range 30-60 dB), JPEG (quality
    30-95) and a calibration gain (x0.5-2), each with its parameters drawn from `rng`. The
    fixed points of RENDERINGS lie inside these ranges; the ranges, not the points, are what a
    model trained with this sees."""
    family = int(rng.integers(7))
    if family == 0:
        return gamma(chip, float(np.exp(rng.uniform(np.log(0.4), np.log(2.5)))))
    if family == 1:
        return percentile(chip, float(rng.uniform(0, 5)), float(rng.uniform(95, 100)))
    if family == 2:
        return histeq(chip)
    if family in (3, 4):
        range_db = float(rng.uniform(30, 60))
        levels = np.arange(256, dtype=np.float64)
        if family == 3:  # linear magnitude shown in dB over range_db
            db = 20.0 * np.log10(np.maximum(levels, 1.0) / 255.0)
            table = np.clip(255.0 * (1.0 + db / range_db), 0, 255)
            table[0] = 0.0
        else:  # dB over range_db shown as linear magnitude
            table = 255.0 * 10.0 ** ((levels / 255.0 - 1.0) * range_db / 20.0)
        return _lookup(chip, _to_uint8(table))
    if family == 5:
        return jpeg(chip, int(rng.integers(30, 96)))
    return gain(chip, float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))))
