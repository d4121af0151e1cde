"""Synthetic SAR: speckled backscatter fields with dark water bodies, for demos, tests and
export checks. Fully determined by the seed."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def speckled_scene(
    height: int,
    width: int,
    bands: int = 1,
    looks: float = 4.0,
    water_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear-power backscatter [bands, H, W] float32 and its water mask [H, W] bool.

    Land: a smooth log-normal texture around -8 dB (VV) / -15 dB (VH); water: around
    -22 dB / -28 dB; each band multiplied by Gamma(L, 1/L) speckle (fully developed, L looks).
    """
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.standard_normal((height, width)), sigma=max(height, width) / 16)
    water = field < np.quantile(field, water_fraction)  # [H, W] smooth blobs
    texture = gaussian_filter(rng.standard_normal((height, width)), sigma=3) * 2.0  # dB
    out = np.empty((bands, height, width), np.float32)
    for b in range(bands):
        land_db, water_db = (-8.0, -22.0) if b % 2 == 0 else (-15.0, -28.0)
        db = np.where(water, water_db, land_db + texture)
        speckle = rng.gamma(looks, 1.0 / looks, size=(height, width))
        out[b] = (10 ** (db / 10) * speckle).astype(np.float32)
    return out, water


def as_mode(power: np.ndarray, mode: str) -> np.ndarray:
    """Express linear power in another radiometric convention (`db`, `amplitude`, `uint16`,
    `uint8` display rendering of -30..+5 dB, or `power` unchanged)."""
    with np.errstate(divide="ignore"):
        db = 10 * np.log10(np.maximum(power, 1e-10))
    if mode == "power":
        return power.astype(np.float32)
    if mode == "db":
        return db.astype(np.float32)
    if mode == "amplitude":
        return np.sqrt(power).astype(np.float32)
    if mode == "uint16":
        return np.clip(np.sqrt(power) * 2000, 1, 65535).astype(np.uint16)
    if mode == "uint8":
        return np.clip((db + 30) / 35 * 255, 0, 255).astype(np.uint8)
    raise ValueError(f"unknown mode {mode!r}")
