"""Write the pretraining manifest of the shipped encoder's GPU stage (see README.md here).

The manifest lists every MSTAR training chip once (2,746), then the 102 Sentinel-1 files of
`extra_sources.txt` (OMBRIA train images, paired-S1 SAR chips, one GRD scene) 16 times each, so
that about 37 % of the samples are Sentinel-1. Paths are absolute, under SARMAE_DATA.

    python benchmarks/gpu_stage/make_manifest.py -o mix.txt [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPEAT = 16


def manifest(data: Path) -> list[Path]:
    """The manifest's paths, in the order the GPU run used (the order fixes the samples)."""
    mstar = sorted((data / "mstar10" / "train").rglob("*.jpeg"))
    extra = [data / p for p in (HERE / "extra_sources.txt").read_text().split()]
    return mstar + extra * REPEAT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SARMAE_DATA", "../shared/data")))
    args = ap.parse_args()
    paths = manifest(args.data.resolve())
    missing = [p for p in paths if not p.is_file()]
    if missing or not any("mstar10" in p.parts for p in paths):
        print(
            f"error: files missing under {args.data} (e.g. {missing[0] if missing else 'mstar10/train'}); "
            "set --data or SARMAE_DATA to the shared data folder",
            file=sys.stderr,
        )
        return 1
    args.output.write_text("\n".join(map(str, paths)) + "\n", encoding="utf-8")
    print(f"wrote {args.output}: {len(paths)} entries, {len(set(paths))} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
