"""Water called by a water head on the BigEarthNet-S1 patches, against their CORINE labels.

Each patch's VV band (120 x 120 px, 10 m, dB) is segmented with `sarmae segment --task water`
(the shipped weights; `--weights FILE` with `-w FILE`; `--method threshold` or `hybrid` as
`segment` takes it), and the share of pixels called water is printed beside
whether the patch's labels include "Water bodies". Patch labels cannot say how much water a
patch holds, so this only shows how much water a head calls on land (the patches without it).

    python benchmarks/water_bigearthnet.py [-w candidate.safetensors] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-w", "--weights", type=Path, help="water weights (default: the shipped ones)")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SARMAE_DATA", "../shared/data")))
    ap.add_argument("--method", choices=("model", "threshold", "hybrid"), default="model")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    patches = sorted(p for p in (args.data / "bigearthnet_s1").glob("*") if p.is_dir())
    if not patches:
        print(f"no BigEarthNet-S1 patches under {args.data / 'bigearthnet_s1'}", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in patches:
            vv = next(p.glob("*_VV.tif"))
            labels = json.loads(next(p.glob("*_labels_metadata.json")).read_text())["labels"]
            out = Path(tmp) / f"{p.name}.tif"
            model = ["--weights", str(args.weights)] if args.weights else ["--task", "water"]
            model = [] if args.method == "threshold" else model
            cmd = [sys.executable, "-m", "sarmae_cli", "segment", *model, "--method", args.method]
            cmd += [str(vv), "-o", str(out), "-q"]
            subprocess.run(cmd, check=True)
            with rasterio.open(out) as src:
                m = src.read(1, masked=True)  # class ids; masked where nodata
            water = float((m == 1).sum() / max(m.count(), 1))
            rows.append(
                {"patch": p.name, "labelled_water": "Water bodies" in labels, "water_fraction": water}
            )
            print(
                f"{p.name}  labelled water: {'yes' if rows[-1]['labelled_water'] else 'no '}  "
                f"called water {100 * water:5.1f} %"
            )
    dry = [r["water_fraction"] for r in rows if not r["labelled_water"]]
    summary = {"dry_mean": float(np.mean(dry)), "dry_max": float(np.max(dry))} if dry else {}
    if dry:
        print(
            f"patches labelled without water: mean {100 * summary['dry_mean']:.1f} %, "
            f"largest {100 * summary['dry_max']:.1f} %"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"weights": str(args.weights or "shipped"), "method": args.method, "rows": rows, **summary},
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
