"""Pack the centre 64 x 64 pixels of every MSTAR chip as PNG, for the 64 MiB trip to a GPU machine.

The MSTAR recipes only ever see the centre 64 px of a chip (`--chip-size 64 --fit center_crop`,
or `--set data.crop=64 --chip-size 128`), and the chips are 8-bit with the fixed x / 255 scaling, so the
centre crop decoded here is exactly what the model would get from the original JPEG. The script
checks that for every chip (the crop read back equals `fit_chip` of the original) and keeps the
file stems, so the protocols draw the same chips (they sort by path).

    python benchmarks/gpu_stage/pack_mstar_centres.py -o .devdata/mstar64 [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sarmae_cli.data.labelled import fit_chip
from sarmae_cli.data.raster import read_image

SIZE = 64


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SARMAE_DATA", "../shared/data")))
    args = ap.parse_args()
    src = args.data / "mstar10"
    files = sorted(src.glob("*/*/*.jpeg"))
    if not files:
        print(f"no MSTAR chips under {src}", file=sys.stderr)
        return 1
    for f in files:
        raw = read_image(f)  # [1, H, W] uint8
        centre = fit_chip(torch.from_numpy(raw), SIZE, "center_crop").numpy()  # [1, 64, 64]
        out = args.out / f.relative_to(src).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(centre[0]).save(out)
        back = read_image(out)
        if back.dtype != raw.dtype or not np.array_equal(back, centre):
            print(f"{out}: the packed crop differs from the original's centre", file=sys.stderr)
            return 1
    size = sum(p.stat().st_size for p in args.out.rglob("*.png"))
    print(f"{len(files)} chips -> {args.out} ({size / 1e6:.1f} MB), every crop checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
