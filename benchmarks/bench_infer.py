"""Scene-inference benchmark: throughput, peak memory and engine overhead of `sarmae segment`.

For each size it generates a 2-band float32 dB scene (speckle + dark 'water' blocks, tiled
GeoTIFF, UTM georeference), then runs in a fresh process:
1. end to end: `segment_scene` (per-scene statistics, streamed sliding-window inference with
   blending, class-map COG with overviews), as `sarmae segment` does after start-up;
2. pure model: the same backend on the same number of tiles and batch size, random inputs.
It reports tiles/s, megapixels/s, peak RSS (ru_maxrss of that process) and the ratio
end-to-end / pure model time.

`--model sarmae` uses a random-weight SARMAE segmenter (ViT preset, depth, FPN/UperNet);
`--model onnx` / `onnx-int8` the same segmenter exported with `sarmae export` (fp32 / int8)
and run by onnxruntime; `--model null` a 1x1-convolution backend, which measures the engine
itself (reading, blending, writing, COG) with almost no model cost. `--compress deflate`
writes the scenes DEFLATE-compressed (floating-point predictor) instead of uncompressed; the
engine then decodes each block again for every row of tiles that reads it, unless
$GDAL_CACHEMAX gives GDAL a block cache (`sarmae_cli.infer.api.GDAL_CACHE_BYTES`).

    $ python benchmarks/bench_infer.py --sizes 2048 4096 --model sarmae --depth 12
    $ python benchmarks/bench_infer.py --sizes 8192 16384 --model null
    $ GDAL_CACHEMAX=128 python benchmarks/bench_infer.py --sizes 8192 --model null --compress deflate
    $ python benchmarks/bench_infer.py --sizes 8192 --model onnx --depth 4 --channels 32
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


def generate(path: Path, size: int, seed: int = 0, compress: str | None = None) -> None:
    """A size x size 2-band float32 dB scene, written in 512-row bands (bounded memory);
    uncompressed, or `compress`ed with the floating-point predictor."""
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff", width=size, height=size, count=2, dtype="float32", crs="EPSG:32631",
        transform=from_origin(500000, 4_700_000, 10, 10), tiled=True, blockxsize=512, blockysize=512,
        nodata=float("nan"), bigtiff="YES",
    )  # fmt: skip
    if compress:
        profile.update(compress=compress, predictor=3)
    tmp = path.with_suffix(".part.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.descriptions = ("VV", "VH")
        for y in range(0, size, 512):
            h = min(512, size - y)
            band = rng.normal(-9.0, 2.5, (2, h, size)).astype(np.float32)
            band[1] -= 6.0
            rows = (np.arange(y, y + h) // 1024) % 3 == 1
            cols = (np.arange(size) // 1536) % 2 == 1
            band[:, rows[:, None] & cols[None, :]] -= 12.0  # water blocks
            dst.write(band, window=Window(0, y, size, h))
    tmp.rename(path)


def _weights(path: Path, args: argparse.Namespace) -> Path:
    import torch

    from sarmae_cli.model.checkpoint import WeightsMeta
    from sarmae_cli.model.config import preset
    from sarmae_cli.model.factory import save_model
    from sarmae_cli.model.heads import Segmenter

    torch.manual_seed(0)
    enc = preset(args.preset, in_chans=2, img_size=args.tile, depth=args.depth)
    meta = WeightsMeta(
        task="segmentation", encoder=enc.to_dict(), bands=["VV", "VH"],
        input_scaling={"mode": "db", "stretch": "fixed", "db_range": [-30.0, 5.0]},
        normalization={"mean": [0.5, 0.5], "std": [0.25, 0.25]}, class_names=["not water", "water"],
        tile={"size": args.tile, "overlap": args.overlap},
    )  # fmt: skip
    save_model(path, Segmenter(enc, 2, decoder=args.decoder, channels=args.channels), meta, overwrite=True)
    return path


class NullBackend:
    """1x1 convolution + softmax in numpy: the engine's cost without a real model."""

    in_chans, patch_size, out_channels, out_stride, device = 2, 16, 2, 1, "cpu"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        logits = np.stack([batch[:, 0] - batch[:, 1], batch[:, 1] - batch[:, 0]], 1)  # [B, 2, T, T]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)


def measure(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: end to end, then pure model time."""
    import torch

    from sarmae_cli.infer.api import Options, segment_scene
    from sarmae_cli.infer.models import Models

    torch.set_num_threads(args.threads or torch.get_num_threads())
    weights = _weights(Path(args.workdir) / "bench_seg.safetensors", args)
    if args.model.startswith("onnx"):  # the same model exported, run by onnxruntime
        from sarmae_cli.export.onnx_export import export_onnx

        weights = export_onnx(
            weights, Path(args.workdir) / f"bench_seg_{args.model}.onnx", int8=args.model == "onnx-int8",
            overwrite=True,
        ).output  # fmt: skip
    models = Models("segment", Path(weights), args.device, args.threads or None)
    if args.model == "null":
        models.use(NullBackend())
    backend = models.backend(2, "probabilities")
    scene = Path(args.scene)
    out = Path(args.workdir) / f"{scene.stem}_{args.model}_water.tif"
    t0 = time.perf_counter()
    s = segment_scene(scene, out, models, Options(args.batch_size, args.tile, args.overlap, overwrite=True))
    e2e = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = s["tiles"] - s["tiles_skipped"]
    x = np.random.default_rng(0).normal(0, 1, (args.batch_size, 2, args.tile, args.tile)).astype(np.float32)
    t0 = time.perf_counter()
    for i in range(0, n, args.batch_size):
        backend.predict(x[: min(args.batch_size, n - i)])
    model_s = time.perf_counter() - t0
    out.unlink()
    size = int(scene.stem.split("_")[-1])
    return {
        "size": size,
        "tiles": n,
        "end_to_end_s": round(e2e, 2),
        "model_only_s": round(model_s, 2),
        "ratio": round(e2e / model_s, 3),
        "tiles_per_s": round(n / e2e, 2),
        "megapixels_per_s": round(size * size / 1e6 / e2e, 3),
        "peak_rss_mb": round(rss_mb, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384])
    p.add_argument("--model", choices=["sarmae", "onnx", "onnx-int8", "null"], default="sarmae")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--decoder", default="fpn")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compress", choices=["none", "deflate"], default="none", help="scene compression")
    p.add_argument("--workdir", default="/tmp/sarmae_bench")
    p.add_argument("--scene", help=argparse.SUPPRESS)  # internal: measure one scene
    args = p.parse_args()
    if args.scene:
        print(json.dumps(measure(args)))
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        compressed = args.compress != "none"
        scene = work / (f"scene_{args.compress}_{size}.tif" if compressed else f"scene_{size}.tif")
        generate(scene, size, compress=args.compress if compressed else None)
        cmd = [sys.executable, __file__, "--scene", str(scene), *sys.argv[1:]]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode:
            sys.exit(f"measurement of {size} failed:\n{res.stderr}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    cache = os.environ.get("GDAL_CACHEMAX", "unset")
    cmd = "python " + " ".join(sys.argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; GDAL_CACHEMAX {cache}; command: {cmd}")
    print("| size | tiles | end-to-end s | model-only s | ratio | tiles/s | MP/s | peak RSS MB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['size']}x{r['size']} | {r['tiles']} | {r['end_to_end_s']} | {r['model_only_s']} | "
            f"{r['ratio']} | {r['tiles_per_s']} | {r['megapixels_per_s']} | {r['peak_rss_mb']} |"
        )


if __name__ == "__main__":
    main()
