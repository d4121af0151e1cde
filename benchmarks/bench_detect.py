"""Scene-detection benchmark: peak memory and engine overhead of `sarmae detect`.

For each size it generates a 1-band uint8 sea scene with ships (`sarmae_cli.demo.ship_scene`
in 512 x 512 blocks, about 7 ships each, the radiometry of the shipped ship weights; tiled
GeoTIFF, UTM georeference), then runs in a fresh process:
1. end to end: `detect_scene` (per-scene statistics, streamed tiles, the detector, decoding,
   cross-tile NMS, the GeoPackage and points CSV), as `sarmae detect` does after start-up;
2. pure model: the same backend on the same number of tiles and batch size, random inputs
   (dense head outputs only, no decoding).
It reports tiles/s, the ratio end-to-end / pure model time, in wall-clock time and in CPU time
of the process (`time.process_time`, all its threads: the fair measure on a machine shared
with other jobs, where wall time follows their load), the model's own time inside the run,
and the peak RSS (ru_maxrss of that process). With `--segment` it also runs `segment_scene`
with a segmenter on the same encoder and tiling, for the memory of the dense engine on the
same scene.

The detector is the shipped one (`--weights`), or by default a random-weight detector of the
shipped architecture (ViT-Tiny, 12 blocks, 384-px tiles overlapping by 96 px, FCOS head with
128 channels and 4 convolutions; `--depth` to make it cheaper).

    $ python benchmarks/bench_detect.py --sizes 4096 8192 --segment
    $ python benchmarks/bench_detect.py --sizes 8192 --weights weights/sarmae_ships.safetensors
    $ python benchmarks/bench_detect.py --sizes 4096 --min-score 0.05   # random weights: ~300 boxes a tile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

BLOCK = 512


def generate(path: Path, size: int, seed: int = 0) -> int:
    """A size x size 1-band uint8 sea scene with ships, written block by block (bounded memory).
    Returns the number of ships."""
    from sarmae_cli.data.synthetic import as_mode
    from sarmae_cli.demo import ship_scene

    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return json.loads(meta.read_text())["ships"]
    profile = dict(
        driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs="EPSG:32631",
        transform=from_origin(560_000, 5_770_000, 2, 2), tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
        compress="DEFLATE",
    )  # fmt: skip
    tmp = path.with_suffix(".part.tif")
    ships = 0
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.descriptions = ("VV",)
        for i, y in enumerate(range(0, size, BLOCK)):
            for j, x in enumerate(range(0, size, BLOCK)):
                power, boxes = ship_scene(BLOCK, seed + i * 1000 + j)
                h, w = min(BLOCK, size - y), min(BLOCK, size - x)
                dst.write(as_mode(power, "uint8")[:, :h, :w], window=Window(x, y, w, h))
                ships += len(boxes)
    tmp.rename(path)
    meta.write_text(json.dumps({"ships": ships}))
    return ships


def _weights(path: Path, args: argparse.Namespace, task: str) -> Path:
    import torch

    from sarmae_cli.model.checkpoint import WeightsMeta
    from sarmae_cli.model.config import preset
    from sarmae_cli.model.detector import Detector
    from sarmae_cli.model.factory import save_model
    from sarmae_cli.model.heads import Segmenter

    torch.manual_seed(0)
    enc = preset("tiny", in_chans=1, img_size=args.tile, depth=args.depth)
    meta = WeightsMeta(
        task=task, encoder=enc.to_dict(), bands=["SAR"],
        input_scaling={"mode": "uint8", "stretch": "fixed", "db_range": [-30.0, 5.0]},
        normalization={"mean": [0.5], "std": [0.5]},
        class_names=["ship"] if task == "detection" else ["sea", "ship"],
        tile={"size": args.tile, "overlap": args.overlap},
    )  # fmt: skip
    model = Detector(enc, 1, (8, 16, 32), 128) if task == "detection" else Segmenter(enc, 2, "fpn", 64)
    save_model(path, model, meta, overwrite=True)
    return path


def measure(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: end to end, then pure model time."""
    import torch

    from sarmae_cli.infer.api import Options, segment_scene
    from sarmae_cli.infer.detect import DetectOptions, detect_scene
    from sarmae_cli.infer.models import Models

    torch.set_num_threads(args.threads or torch.get_num_threads())
    work, scene = Path(args.workdir), Path(args.scene)
    opts = Options(args.batch_size, args.tile, args.overlap, overwrite=True)
    size = int(scene.stem.split("_")[-1])
    if args.measure == "segment":
        weights = _weights(work / "bench_seg.safetensors", args, "segmentation")
        models = Models("segment", weights, args.device, args.threads or None)
        out = work / f"{scene.stem}_seg.tif"
        t0 = time.perf_counter()
        s = segment_scene(scene, out, models, opts)
        e2e = time.perf_counter() - t0
        out.unlink()
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"size": size, "command": "segment", "tiles": s["tiles"] - s["tiles_skipped"],
                "end_to_end_s": round(e2e, 2), "peak_rss_mb": round(rss_mb, 1)}  # fmt: skip
    weights = Path(args.weights or _weights(work / "bench_det.safetensors", args, "detection"))
    models = Models("detect", weights, args.device, args.threads or None)
    backend = models.backend(1, "detections")
    out, pts = work / f"{scene.stem}_det.gpkg", work / f"{scene.stem}_det.csv"
    t0, c0 = time.perf_counter(), time.process_time()
    s = detect_scene(scene, out, models, opts, DetectOptions(args.min_score), points=pts)
    e2e, e2e_cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.unlink()
    pts.unlink()
    n = s["tiles"] - s["tiles_skipped"]
    x = np.random.default_rng(0).normal(0, 1, (args.batch_size, 1, s["tile"], s["tile"])).astype(np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, args.batch_size):
        backend.predict(x[: min(args.batch_size, n - i)])
    model_s, model_cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "size": size,
        "command": "detect",
        "tiles": n,
        "detections": s["detections"],
        "end_to_end_s": round(e2e, 2),
        "model_in_run_s": round(s["model_seconds"], 2),
        "model_only_s": round(model_s, 2),
        "ratio": round(e2e / model_s, 3),
        "end_to_end_cpu_s": round(e2e_cpu, 2),
        "model_only_cpu_s": round(model_cpu, 2),
        "cpu_ratio": round(e2e_cpu / model_cpu, 3),
        "tiles_per_s": round(n / e2e, 2),
        "peak_rss_mb": round(rss_mb, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    p.add_argument("--weights", help="a detector weights file (default: random, shipped architecture)")
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--tile", type=int, default=384)
    p.add_argument("--overlap", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--min-score", type=float, help="detect's --min-score (default: the weights')")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--segment", action="store_true", help="also the peak memory of segment on each scene")
    p.add_argument("--workdir", default="/tmp/sarmae_bench_detect")
    p.add_argument("--scene", help=argparse.SUPPRESS)  # internal: measure one scene
    p.add_argument("--measure", default="detect", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scene:
        print(json.dumps(measure(args)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        scene = work / f"sea_{size}.tif"
        ships = generate(scene, size)
        for what in ["detect"] + ["segment"] * args.segment:
            cmd = [sys.executable, __file__, "--scene", str(scene), "--measure", what, *sys.argv[1:]]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode:
                sys.exit(f"measurement of {what} on {size} failed:\n{res.stderr}")
            rows.append({**json.loads(res.stdout.strip().splitlines()[-1]), "ships": ships})
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; command: python {' '.join(sys.argv)}")
    cols = ["end_to_end_s", "model_in_run_s", "model_only_s", "ratio", "end_to_end_cpu_s", "model_only_cpu_s"]
    print(
        "| size | command | tiles | end-to-end s | model in run s | model-only s | ratio | end-to-end CPU s "
        "| model-only CPU s | CPU ratio | peak RSS MB |"
    )
    print("|" + " --- |" * 11)
    for r in rows:
        cells = [f"{r['size']}x{r['size']}", r["command"], r["tiles"], *(r.get(c, "") for c in cols)]
        cells += [r.get("cpu_ratio", ""), r["peak_rss_mb"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
