"""The one input route: (a raster or chip, the weights' stored metadata) -> model input.

Training, pseudo-labelling, every inference command and export go through this module and
nothing else re-implements any part of it. The route has three stages, each one object:

1. `InputSpec` — what the weights were trained with, read from their metadata as plain data
   (`InputSpec.from_meta(meta.to_dict())`; `data/` never imports `model/`): input scaling,
   per-band normalisation, chip size, fit and crop, tile size and overlap.
2. `Radiometry` — the spec resolved for one scene or chip (`InputSpec.radiometry`): which
   radiometric mode its pixels are in (given or detected, `data/scaling.py`), the per-band
   stretch computed once from a (decimated) sample of the whole scene, and the
   normalisation of each of its bands. `Radiometry.apply` turns raw pixels of any window
   into normalised model input.
3. Geometry — `InputSpec.fit` (resize or centre crop, optional zoom crop) for chips and
   `InputSpec.tiling` for sliding windows over scenes.

Band selection (`check_band_count`, `match_chip_bands`) lives here too. New properties of
the input (band roles, pixel size) belong in `InputSpec` (stored), `Radiometry` (resolved per
scene) and a geometry step, so every caller picks them up at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sarmae_cli.data.scaling import MODES, Scaling, detect_mode, prepare, scene_scaling, stretch_range, to_db
from sarmae_cli.errors import UsageError
from sarmae_cli.weights_file import WeightsGsd, parse_weights_gsd

FITS = ("resize", "center_crop")
INPUT_SCALES = ("auto", *MODES)


def check_input_scale(input_scale: str) -> None:
    """Refuse an unknown `--input-scale` (before any file is opened)."""
    if input_scale not in (*INPUT_SCALES, "weights"):
        raise UsageError(f"unknown --input-scale {input_scale!r}; use one of {', '.join(INPUT_SCALES)}")


def per_band(values: Sequence[float], n: int) -> list[float]:
    """`n` per-band values from the stored ones, cycled (one stored value serves every band)."""
    return [float(values[i % len(values)]) for i in range(n)]


# --------------------------------------------------------------------------- geometry


def fit_chip(x: torch.Tensor, size: int, fit: str = "resize", crop: int | None = None) -> torch.Tensor:
    """[C, H, W] -> [C, size, size]: bilinear resize (no antialiasing), or centre crop with
    zero padding (the normalised mean) where the chip is smaller. With `crop`, the central
    `crop` x `crop` pixels are cut out first and resized to `size` (zoom on a centred target,
    e.g. MSTAR: crop 64 -> 128 gives 8-px patches)."""
    if crop is not None:
        x = fit_chip(x, crop, "center_crop")  # [C, crop, crop]
        fit = "resize"
    c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    if fit == "resize":
        return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    if fit != "center_crop":
        raise UsageError(f"unknown chip fit {fit!r}; use one of {', '.join(FITS)}")
    out = x.new_zeros((c, size, size))
    top, left = (h - size) // 2, (w - size) // 2  # negative: the chip is smaller
    src = x[:, max(top, 0) : max(top, 0) + size, max(left, 0) : max(left, 0) + size]
    oy, ox = max(-top, 0), max(-left, 0)
    out[:, oy : oy + src.shape[1], ox : ox + src.shape[2]] = src
    return out


# --------------------------------------------------------------------------- bands


def adaptable(band_names: Sequence[str], n_bands: int) -> bool:
    """A single band may feed weights whose input bands are all the same band (e.g. the
    official SAR,SAR,SAR import): the patch embedding is adapted exactly (summed kernels)."""
    return n_bands == 1 and len(set(band_names)) == 1


def check_band_count(n_bands: int, in_chans: int, band_names: Sequence[str], source: str) -> None:
    """Refuse input whose band count the weights cannot take (a usage error: choose bands or
    other weights)."""
    if n_bands == in_chans or adaptable(band_names, n_bands):
        return
    hint = "select bands with --bands (numbers or descriptions)" if n_bands > in_chans else ""
    hint = hint or f"use weights made for {n_bands}-band data"
    raise UsageError(
        f"{source} gives {n_bands} band(s) but the weights expect {in_chans} "
        f"({', '.join(band_names)}); {hint}"
    )


def match_chip_bands(raw: np.ndarray, in_chans: int, source: str = "image") -> np.ndarray:
    """Raw [C', H, W] -> [C, H, W] for an `in_chans`-band model: one band is repeated, a grey
    image replicated to RGB loses its copies; anything else must already match."""
    if raw.shape[0] == in_chans:
        return raw
    if raw.shape[0] == 1:
        return np.repeat(raw, in_chans, axis=0)
    if raw.shape[0] >= in_chans and (raw[:in_chans] == raw[:1]).all():  # grey replicated to RGB
        return raw[:in_chans]
    raise UsageError(f"{source} has {raw.shape[0]} bands but the model takes {in_chans}")


def match_bands(x: torch.Tensor, c: int) -> torch.Tensor:
    """[k, H, W] -> [c, H, W] for pretraining mixes: 1 band is repeated, k bands to 1 are
    averaged (3 equal channels of an 8-bit rendering give the original), extra bands are
    dropped, missing ones cycled."""
    k = x.shape[0]
    if k == c:
        return x
    if c == 1:
        return x.mean(dim=0, keepdim=True)
    return x[[i % k for i in range(c)]]


# --------------------------------------------------------------------------- radiometry


@dataclass(frozen=True)
class Radiometry:
    """The input spec resolved for one scene or chip: its scaling (mode and stretch), the
    per-band stretch range computed once for the whole scene, and per-band normalisation."""

    scaling: Scaling
    ranges: np.ndarray  # [C, K] per-band stretch knots: (lo, hi), or K quantiles to equalize
    mean: list[float]
    std: list[float]
    notes: list[str] = field(default_factory=list)  # what was chosen, for the user

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Raw [C, H, W] (any window of the scene) -> normalised float32 [C, H, W], 0 where
        invalid."""
        return prepare(raw, self.scaling, self.ranges, self.mean, self.std)


def detect_scaling(raw: np.ndarray, hints: str = "") -> Scaling:
    """Scaling guessed from one raw chip: uint8 renderings, integer DN, dB or linear floats."""
    mode, rule = detect_mode(raw.dtype, raw.reshape(-1)[:100_000].astype(np.float64, copy=False), hints)
    return Scaling(mode=mode, extra={"detected": rule})


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class InputSpec:
    """How raw pixels become model input, as the weights were trained: scaling, per-band
    normalisation, chip fit, and the sliding-window tile."""

    scaling: Scaling
    mean: list[float]
    std: list[float]
    chip_size: int
    fit: str = "resize"  # "resize" (bilinear) or "center_crop" (zero-pad if smaller)
    crop: int | None = None  # centre-crop this many pixels first (then fit to chip_size)
    tile_size: int = 0  # sliding-window tile of scenes (0: chip_size)
    tile_overlap: int = 0  # sliding-window overlap of dense (segmentation) inference
    patch_size: int = 16
    gsd: WeightsGsd | None = None  # pixel size (metres) the weights were trained at, or a range

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise UsageError(f"unknown chip fit {self.fit!r}; use one of {', '.join(FITS)}")
        if self.crop is not None and self.crop < 1:
            raise UsageError(f"crop must be a positive pixel count, got {self.crop}")

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> InputSpec:
        """The spec stored in a weights file's metadata (`WeightsMeta.to_dict()`, plain data).
        Older files without `training.preprocess` resize to the tile size."""
        encoder, tile = meta.get("encoder", {}), meta.get("tile") or {}
        pre = (meta.get("training") or {}).get("preprocess", {})
        gsd = (meta.get("training") or {}).get("gsd")
        tile_size = int(tile.get("size", encoder.get("img_size", 224)))
        norm = meta["normalization"]
        return cls(
            Scaling.from_dict(meta["input_scaling"]),
            [float(v) for v in norm["mean"]],
            [float(v) for v in norm["std"]],
            int(pre.get("chip_size", tile_size)),
            pre.get("fit", "resize"),
            pre.get("crop"),
            tile_size,
            int(tile.get("overlap", 0)),
            int(encoder.get("patch_size", 16)),
            parse_weights_gsd(gsd, "training.gsd") if gsd else None,
        )

    def preprocess_meta(self) -> dict[str, Any]:
        """The `training["preprocess"]` entry of the weights that inference must repeat."""
        crop = {"crop": self.crop} if self.crop is not None else {}
        return {"chip_size": self.chip_size, "fit": self.fit, **crop}

    # ------------------------------------------------------------------ radiometry

    def radiometry(
        self, sample: np.ndarray, input_scale: str = "weights", hints: str = "", dtype: str | None = None
    ) -> Radiometry:
        """Resolve the spec for one scene from `sample`, raw [C, ...] of the whole scene
        (decimated; NaN where invalid). `input_scale`: "weights" (the stored mode, as training
        does), "auto" (detected from `dtype`, the sample and text `hints`, with a note saying
        what was chosen) or a mode. The stretch is computed here, once per scene."""
        check_input_scale(input_scale)
        notes = []
        if input_scale == "weights":
            mode, reason = self.scaling.mode, ""
        elif input_scale == "auto":
            kind = dtype or str(sample.dtype)
            kind = "complex64" if kind.startswith("complex") else kind  # incl. GDAL's complex_int16
            mode, reason = detect_mode(kind, sample[np.isfinite(sample)], hints)
            notes.append(f"input scale: {mode} ({reason}); override with --input-scale")
        else:
            mode, reason = input_scale, "--input-scale"
        scaling = scene_scaling(self.scaling, mode, reason)
        ranges = stretch_range(to_db(sample, mode), scaling)  # [C, K]
        n = sample.shape[0]
        return Radiometry(scaling, ranges, per_band(self.mean, n), per_band(self.std, n), notes)

    def prepare(self, raw: np.ndarray) -> np.ndarray:
        """A whole chip in the stored mode: raw [C, H, W] -> normalised float32 [C, H, W]
        (NaN / invalid -> 0), its own statistics."""
        return self.radiometry(raw).apply(raw)

    # ------------------------------------------------------------------ geometry

    def fit_to(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Prepared [C, H, W] -> [C, S, S] as the weights were trained (`size`: another
        model input side, e.g. an ONNX file's fixed tile)."""
        return fit_chip(x, size or self.chip_size, self.fit, self.crop)

    def chip(self, raw: np.ndarray, margin: int = 0, size: int | None = None) -> torch.Tensor:
        """Raw [C, H, W] -> model input [C, S, S] (prepared, then fitted; `size`: another
        model input side S). With `margin` m the fitted window grows by m input pixels on every
        side ([C, S + 2m, S + 2m], same scale: with `crop`, the crop grows in proportion), for
        random shifts in training."""
        x = torch.from_numpy(self.prepare(raw))
        if not margin:
            return self.fit_to(x, size)
        if self.fit == "resize" and self.crop is None:
            # resizing a larger window would change the scale: resize, then pad with the mean (0)
            return F.pad(self.fit_to(x), (margin,) * 4)
        crop = self.crop + 2 * round(margin * self.crop / self.chip_size) if self.crop is not None else None
        return fit_chip(x, self.chip_size + 2 * margin, self.fit, crop)

    def tiling(
        self, tile: int | None = None, overlap: int | None = None, dense: bool = True
    ) -> tuple[int, int]:
        """(tile, overlap) of a sliding window: given, else the stored ones (overlap 0 for
        per-tile outputs). A stored overlap that does not fit a smaller tile becomes a quarter
        of it, in whole patches."""
        size = tile or self.tile_size or self.chip_size
        stored = self.tile_overlap if dense else 0
        if overlap is not None:
            return size, overlap
        if stored >= size:
            stored = size // 4 // self.patch_size * self.patch_size
        return size, stored


def band_stats(
    raws: Sequence[np.ndarray], scaling: Scaling, limit: int = 200
) -> tuple[list[float], list[float]]:
    """Per-band mean and std of the [0, 1] scaled values of (up to `limit`) training chips:
    the normalisation of weights trained from scratch."""
    spec = InputSpec(scaling, [0.0] * raws[0].shape[0], [1.0] * raws[0].shape[0], 1)
    step = max(1, len(raws) // limit)
    vals = np.concatenate([spec.prepare(r).reshape(r.shape[0], -1) for r in raws[::step]], axis=1)  # [C, N]
    std = np.maximum(vals.std(axis=1), 1e-3)
    return [float(v) for v in vals.mean(axis=1)], [float(v) for v in std]


def resample(x: np.ndarray, valid: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Prepared input [C, h, w] (0 where invalid) and validity [h, w] -> [C, height, width]
    and validity, for a model that runs at another pixel size: the mean of the valid pixels
    when coarsening (area), bilinear when refining. Done after the radiometric route, so a
    scene in dB, power or amplitude resamples alike."""
    t = torch.from_numpy(np.ascontiguousarray(x))[None]  # [1, C, h, w]
    v = torch.from_numpy(valid.astype(np.float32))[None, None]  # [1, 1, h, w]
    mode = "area" if height <= x.shape[1] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    num = F.interpolate(t * v, size=(height, width), mode=mode, **kw)[0]  # [C, H, W]
    den = F.interpolate(v, size=(height, width), mode=mode, **kw)[0, 0]  # [H, W]
    ok = den > 0.5
    out = torch.where(ok, num / den.clamp_min(1e-6), torch.zeros(()))
    return out.numpy().astype(np.float32), ok.numpy()
