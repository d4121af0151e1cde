"""SARE speckle injection: make a SAR image noisier (fewer looks), keep the clean one as target.

Fully developed speckle multiplies intensity I by n ~ Gamma(L, 1/L) (mean 1, variance 1/L,
L = number of looks). Modes (SARMAE_METHOD.md §2):

- `gamma` (the paper's model, the default): per image L ~ log-uniform on `looks`;
  noisy = clean x n.
- `lognormal`: per image sigma ~ U(`sigma`); noisy = clean x exp(N(0, sigma^2)); its
  equivalent number of looks is 1 / (exp(sigma^2) - 1).
- `reference` (the reference code): sigma ~ U(`sigma`); sigma > 0.05 -> log-normal as above,
  else Gamma with L = 1 / (4 sigma^2).

Noise is applied to a `fraction` of samples, on the [0, 1] model-input image before
normalisation. For 8-bit renderings the unit value is treated as the intensity (as the
reference code does); for data scaled from decibels (`db_span` = dB range mapped to [0, 1])
the multiplication happens in linear power: u' = u + 10 log10(n) / db_span. Results are
clamped to [1e-8, 1] (reference) and invalid (NaN) pixels stay NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sarmae_cli.errors import UsageError

MODES = ("gamma", "lognormal", "reference")


@dataclass(frozen=True)
class SpeckleConfig:
    """SARE settings; `looks` is used by `gamma`, `sigma` by `lognormal` and `reference`."""

    enabled: bool = True
    mode: str = "gamma"
    fraction: float = 0.5
    looks: tuple[float, float] = (1.0, 10.0)
    sigma: tuple[float, float] = (0.0, 0.7)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"unknown SARE mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not 0.0 <= self.fraction <= 1.0:
            raise UsageError(f"SARE fraction must be in [0, 1], got {self.fraction}")
        if not 0 < self.looks[0] <= self.looks[1]:
            raise UsageError(f"SARE looks range must be increasing and > 0, got {self.looks}")
        if not 0 <= self.sigma[0] <= self.sigma[1]:
            raise UsageError(f"SARE sigma range must be increasing and >= 0, got {self.sigma}")


def gamma_noise(shape: tuple[int, ...], looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative speckle of `looks` looks: Gamma(L, 1/L), mean 1, variance 1/L."""
    return rng.gamma(shape=looks, scale=1.0 / looks, size=shape).astype(np.float32)


def lognormal_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """exp(N(0, sigma^2)): log-normal multiplicative noise (median 1, mean exp(sigma^2 / 2))."""
    return np.exp(rng.normal(0.0, sigma, size=shape)).astype(np.float32)


def lognormal_enl(sigma: float) -> float:
    """Equivalent number of looks of exp(N(0, sigma^2)) noise: mean^2 / variance."""
    return math.inf if sigma == 0 else 1.0 / math.expm1(sigma**2)


def draw_noise(
    shape: tuple[int, ...], cfg: SpeckleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, str]:
    """One image's multiplicative noise field and a short description (e.g. 'gamma L=3.2')."""
    if cfg.mode == "gamma":
        lo, hi = cfg.looks
        looks = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        return gamma_noise(shape, looks, rng), f"gamma L={looks:.2f}"
    sigma = float(rng.uniform(*cfg.sigma))
    if cfg.mode == "reference" and sigma <= 0.05:
        looks = 1.0 / (4.0 * max(sigma, 1e-4) ** 2)
        return gamma_noise(shape, looks, rng), f"gamma L={looks:.1f}"
    return lognormal_noise(shape, sigma, rng), f"lognormal sigma={sigma:.3f}"


def apply_noise(unit: torch.Tensor, noise: np.ndarray, db_span: float | None = None) -> torch.Tensor:
    """Multiply a [C, H, W] unit-range image by `noise` (linear), or add it in dB when the image
    was stretched from a `db_span`-dB range. Clamped to [1e-8, 1]; NaN stays NaN."""
    n = torch.from_numpy(noise).to(unit.dtype)
    if db_span:
        out = unit + 10.0 * torch.log10(n) / db_span
    else:
        out = unit * n
    return out.clamp(1e-8, 1.0)


def inject(
    unit: torch.Tensor, cfg: SpeckleConfig, rng: np.random.Generator, db_span: float | None = None
) -> tuple[torch.Tensor, bool]:
    """SARE for one sample: with probability `cfg.fraction`, a noisier copy of `unit`
    ([C, H, W] in [0, 1]); otherwise `unit` itself. Returns (input image, noise applied)."""
    if not cfg.enabled or cfg.fraction <= 0 or rng.random() >= cfg.fraction:
        return unit, False
    noise, _ = draw_noise(tuple(unit.shape), cfg, rng)
    return apply_noise(unit, noise, db_span), True
