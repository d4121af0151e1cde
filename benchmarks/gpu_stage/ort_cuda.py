"""onnxruntime's CUDA provider against PyTorch on the GPU, for the GPU stage: the segmenter of
`compare_terratorch.py` (ViT-Tiny/16, 2 bands, linear head) exported with `sarmae export`,
tiles/s of `OnnxBackend(device="cuda")` and of `TorchBackend` (bf16 autocast) at batch 64,
and the largest probability difference. Without the CUDA provider (onnxruntime-gpu not
installed) it records the providers there are and why.

    python benchmarks/gpu_stage/ort_cuda.py --json ort.json        # --dry-run: CPU, 2 blocks
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sarmae_cli.export.onnx_export import export_onnx
from sarmae_cli.export.ort_backend import OnnxBackend
from sarmae_cli.infer.backend import TorchBackend
from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.model.config import preset
from sarmae_cli.model.factory import load_model, save_model
from sarmae_cli.model.heads import Segmenter


def tiles_per_s(backend, x: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    y = backend.predict(x)  # warm-up (and the output compared)
    t = time.perf_counter()
    for _ in range(repeats):
        backend.predict(x)
    return repeats * len(x) / (time.perf_counter() - t), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gpu34_ort"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true", help="CPU provider, 2 blocks, batch 2")
    args = ap.parse_args()
    providers = ort.get_available_providers()
    result: dict = {"onnxruntime": ort.__version__, "providers": providers}
    cuda = "CUDAExecutionProvider" in providers
    if not cuda and not args.dry_run:
        result["why"] = (
            "no CUDAExecutionProvider: onnxruntime-gpu is not installed "
            "(its cp312 wheel, 256 MB, is over the carry limit)"
        )
    else:
        depth, device = (2, "cpu") if args.dry_run else (12, "cuda")
        batch, repeats = (2, 1) if args.dry_run else (args.batch, args.repeats)
        args.workdir.mkdir(parents=True, exist_ok=True)
        enc = preset("tiny", in_chans=2, img_size=224, depth=depth)
        meta = WeightsMeta(
            task="segmentation", encoder=enc.to_dict(), bands=["VV", "VH"], input_scaling={"mode": "db"},
            normalization={"mean": [0.5, 0.5], "std": [0.25, 0.25]}, class_names=["a", "b"],
        )  # fmt: skip
        weights = args.workdir / "seg.safetensors"
        save_model(weights, Segmenter(enc, 2, decoder="linear", layers=[depth - 1]), meta, overwrite=True)
        onnx = Path(export_onnx(weights, args.workdir / "seg.onnx", overwrite=True).output)
        x = np.random.default_rng(0).normal(0, 1, (batch, 2, 224, 224)).astype(np.float32)
        ob = OnnxBackend(onnx, device=device)
        tb = TorchBackend(load_model(weights)[0], device)
        ort_tps, yo = tiles_per_s(ob, x, repeats)
        torch_tps, yt = tiles_per_s(tb, x, repeats)
        result.update(device=device, provider=ob.session.get_providers()[0], batch=batch)
        result.update(ort_tiles_per_s=round(ort_tps, 1), torch_tiles_per_s=round(torch_tps, 1))
        result["max_probability_difference"] = float(np.abs(yo - yt).max())
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
