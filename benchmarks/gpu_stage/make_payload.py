"""Build the payload of the GPU stage (`stage34.py`): the cp312 wheels of every sarmae
dependency the GPU image lacks, split into parts that each fit one call's 64 MiB beside the
working tree that travels anyway (tracked and untracked-not-ignored files, `weights/` among
them). Part K goes with call K (`carry=[".devdata/gpu34/partK"]`); every call but the last
only stores its part on the (warm) machine, the last installs them all and runs the stage.

    $ python benchmarks/gpu_stage/make_payload.py            # downloads with pip, writes .devdata/gpu34
    $ python benchmarks/gpu_stage/make_payload.py --wheels DIR   # wheels already downloaded

It prints the calls to make. Versions are those of this environment (rasterio: 1.4.3, whose
manylinux2014 wheel is 22 MB against 36 MB for 1.4.4; pyogrio: 0.10.0, 24 MB against 32 MB).
onnxruntime-gpu is not carried: its cp312 wheel is 256 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20
#: What the GPU image (KINDS.md: torch, numpy, onnx, onnxruntime, pandas, pyarrow, typer, rich,
#: pytest-xdist, pytest-timeout...) lacks or holds in too old a version, most needed first.
PACKAGES = [
    "rasterio", "affine", "cligj", "click-plugins", "pydantic", "pydantic-core", "annotated-types",
    "typing-inspection", "typer", "timm", "segmentation-models-pytorch", "pycocotools",
    "onnxconverter-common", "geopandas", "pyogrio", "pyproj", "shapely", "rio-cogeo", "morecantile",
]  # fmt: skip
#: smaller wheels than this environment's versions: rasterio 1.4.4 is 36 MB, pyogrio 0.13.0 32 MB
PINNED = {"rasterio": "1.4.3", "pyogrio": "0.10.0"}
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def travelling_bytes(root: Path = ROOT) -> int:
    """Bytes of the working tree that travels with every call (tracked and untracked files
    that git does not ignore)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, capture_output=True, check=True
    ).stdout
    files = [root / p for p in out.decode().split("\0") if p]
    return sum(f.stat().st_size for f in files if f.is_file())


def pack(sizes: dict[str, int], budget: int) -> list[list[str]]:
    """Wheels (name -> bytes, in priority order) into parts of at most `budget` bytes: each
    wheel goes into the first part with room (first fit), so the first parts hold the most
    needed ones. A wheel over the budget is an error."""
    parts: list[list[str]] = []
    room: list[int] = []
    for name, size in sizes.items():
        if size > budget:
            raise SystemExit(
                f"Error: {name} ({size / MIB:.1f} MiB) is over one call's room ({budget / MIB:.1f} MiB)"
            )
        for i, r in enumerate(room):
            if size <= r:
                parts[i].append(name)
                room[i] -= size
                break
        else:
            parts.append([name])
            room.append(budget - size)
    return parts


def download(dest: Path) -> None:
    """cp312 wheels of PACKAGES at this environment's versions, with pip (no dependencies)."""
    specs = [f"{p}=={PINNED.get(p) or version(p)}" for p in PACKAGES]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.12",
    ]
    cmd += [
        "--implementation",
        "cp",
        *(a for p in PLATFORMS for a in ("--platform", p)),
        "-d",
        str(dest),
        *specs,
    ]
    subprocess.run(cmd, check=True)


def ensure_ignored(path: Path) -> None:
    """`path` must not travel as an untracked file: add it to .git/info/exclude if git does not
    ignore it yet."""
    rel = path.resolve().relative_to(ROOT)
    if subprocess.run(["git", "check-ignore", "-q", str(rel)], cwd=ROOT).returncode == 0:
        return
    exclude = ROOT / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with exclude.open("a") as f:
        f.write(f"/{rel.parts[0]}/\n")
    print(f"added /{rel.parts[0]}/ to {exclude}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".devdata" / "gpu34")
    ap.add_argument(
        "--wheels", type=Path, help="a folder of wheels already downloaded (default: pip download)"
    )
    ap.add_argument("--limit-mib", type=float, default=64.0, help="what one call may carry in all")
    ap.add_argument("--margin-mib", type=float, default=1.0, help="kept free for files added later")
    args = ap.parse_args()
    ensure_ignored(args.out)
    wheels = args.wheels or args.out / "wheels"
    if args.wheels is None:
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        download(wheels)
    files = {p.name: p for p in sorted(wheels.glob("*.whl"))}
    ordered = {}
    for pkg in PACKAGES:  # priority order; a wheel's name uses _ for -
        for name in [n for n in files if n.lower().startswith(pkg.replace("-", "_") + "-")]:
            ordered[name] = files[name].stat().st_size
    missing = [
        p for p in PACKAGES if not any(n.lower().startswith(p.replace("-", "_") + "-") for n in ordered)
    ]
    tree = travelling_bytes()
    budget = int((args.limit_mib - args.margin_mib) * MIB) - tree
    parts = pack(ordered, budget)
    for old in args.out.glob("part*"):
        shutil.rmtree(old)
    manifest = {"tree_bytes": tree, "budget_bytes": budget, "parts": parts, "missing": missing}
    for k, names in enumerate(parts, start=1):
        d = args.out / f"part{k}"
        d.mkdir(parents=True)
        for n in names:
            shutil.copy2(files[n], d / n)
        (d / "parts.json").write_text(json.dumps({**manifest, "part": k}, indent=1))
    (args.out / "parts.json").write_text(json.dumps(manifest, indent=1))
    lacking = f"; not found: {', '.join(missing)}" if missing else ""
    print(
        f"tree {tree / MIB:.1f} MiB travels with every call; {budget / MIB:.1f} MiB left per call; "
        f"{len(parts)} part(s){lacking}"
    )
    for k, names in enumerate(parts, start=1):
        size = sum(ordered[n] for n in names) / MIB
        what = ", ".join(n.split("-")[0] for n in names)
        cmd = f"PYTHONUNBUFFERED=1 python3 benchmarks/gpu_stage/stage34.py --part {k}"
        print(f"call {k}: run(command='{cmd}', carry=['.devdata/gpu34/part{k}'])  # {size:.1f} MiB: {what}")


if __name__ == "__main__":
    main()
