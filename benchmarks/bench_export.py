"""PyTorch eager vs onnxruntime (fp32, int8) throughput of sarmae models on this machine.

$ python benchmarks/bench_export.py --models tiny,base --tasks encoder,segmentation --batch 8 --repeats 5

For each encoder preset and task: build the model (random weights: speed does not depend on
them), export it with `sarmae_cli.export.onnx_export.export_onnx`, then time batches of
224x224 inputs with torch (inference mode) and with onnxruntime (CPU provider), both with
the same thread count. Prints a markdown table and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sarmae_cli.export.onnx_export import export_onnx, sample_inputs
from sarmae_cli.export.ort_backend import OnnxBackend
from sarmae_cli.infer.backend import TorchBackend
from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.factory import EncoderModel, load_model, save_model
from sarmae_cli.model.heads import Classifier, Segmenter

OUTPUT = {"encoder": "pooled", "classification": "probabilities", "segmentation": "probabilities"}


def build(task: str, name: str, in_chans: int) -> tuple[torch.nn.Module, WeightsMeta]:
    cfg = preset(name, in_chans=in_chans)
    model = {
        "encoder": lambda: EncoderModel(SarViT(cfg)),
        "classification": lambda: Classifier(cfg, 10),
        "segmentation": lambda: Segmenter(cfg, 2),
    }[task]()
    meta = WeightsMeta(
        task=task,
        encoder=cfg.to_dict(),
        bands=[f"b{i}" for i in range(in_chans)],
        input_scaling={"mode": "db"},
        normalization={"mean": [0.5] * in_chans, "std": [0.25] * in_chans},
        class_names=[str(i) for i in range(10 if task == "classification" else 2)]
        if task != "encoder"
        else None,
        tile={"size": 224, "overlap": 32},
    )
    return model, meta


def images_per_s(predict, x: np.ndarray, repeats: int) -> float:
    predict(x)  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        predict(x)
    return repeats * len(x) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,small,base")
    ap.add_argument("--tasks", default="encoder,segmentation")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--in-chans", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, threads {args.threads}, batch {args.batch}, 224x224x{args.in_chans}"
    )
    cols = [
        "model",
        "task",
        "torch eager img/s",
        "ORT fp32 img/s",
        "ORT int8 img/s",
        "fp32 / torch",
        "int8 / torch",
    ]
    print("| " + " | ".join(cols) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for task in args.tasks.split(","):
                model, meta = build(task, name, args.in_chans)
                w = Path(tmp) / f"{name}_{task}.safetensors"
                save_model(w, model, meta)
                model, meta = load_model(w)
                x = sample_inputs(meta, 224, args.batch)
                torch_ips = images_per_s(TorchBackend(model, "cpu", OUTPUT[task]).predict, x, args.repeats)
                row = [torch_ips]
                for flag in ({}, {"int8": True}):
                    onnx_path = Path(tmp) / f"{name}_{task}_{len(flag)}.onnx"
                    export_onnx(w, onnx_path, **flag)
                    backend = OnnxBackend(onnx_path, OUTPUT[task], device="cpu", threads=args.threads)
                    row.append(images_per_s(backend.predict, x, args.repeats))
                print(
                    f"| {name} | {task} | {row[0]:.2f} | {row[1]:.2f} | {row[2]:.2f} | "
                    f"{row[1] / row[0]:.2f} | {row[2] / row[0]:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
