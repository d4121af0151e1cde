"""A SAR scene beside water maps of it, with each map's water fraction (a side-by-side figure).

Each map is a class raster written by `sarmae segment --task water` on the scene:

    sarmae segment --task water scene.tif -o shipped.tif
    sarmae segment scene.tif --weights other.safetensors -o other.tif
    python benchmarks/plot_water_maps.py scene.tif "shipped head=shipped.tif" "other=other.tif" -o maps.png
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402


def read_scene(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 stretched between its 2nd and 98th percentiles to [0, 1], and the valid mask."""
    with rasterio.open(path) as src:
        band = src.read(1, masked=True)
    data = band.astype(np.float64).filled(np.nan)  # integer rasters too (uint16 DN)
    valid = np.isfinite(data)
    lo, hi = np.percentile(data[valid], [2, 98])
    return np.clip((data - lo) / max(hi - lo, 1e-12), 0, 1), valid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("maps", nargs="+", help="LABEL=MAP.tif (water = class 1)")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    image, valid = read_scene(args.scene)
    name = "\n".join(textwrap.wrap(args.scene.name, 34))
    panels = [(f"{name}\n(2-98 % stretch)", image)]
    for spec in args.maps:
        label, sep, path = spec.partition("=")
        if not (sep and label and path):
            raise SystemExit(f"error: bad map {spec!r}; write LABEL=MAP.tif")
        with rasterio.open(path) as src:
            water = src.read(1) == 1
        if water.shape != image.shape:
            raise SystemExit(f"error: {path} is {water.shape} but the scene is {image.shape}")
        panels.append((f"{label}\nwater {water[valid].mean():.0%} of valid pixels", water & valid))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
