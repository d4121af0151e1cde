"""Pretraining throughput (samples/s) per model size: without SARC, with SARC running the
DINOv2 teacher on the fly, and with the teacher-feature cache; plus the data pipeline alone.

    python benchmarks/bench_pretrain.py --models tiny base --rounds 5 --batch-size 8

Data: real chips, the first --pairs pairs of $SARMAE_DATA/paired_s1s2 plus as many MSTAR training
chips, 224 px crops, SARE on, paired fraction 0.7, exactly as `sarmae pretrain` builds them.
One optimizer step = teacher (if any) + forward + backward + AdamW step on a prepared batch.
The modes are timed round-robin (one step of each per round, the median over rounds reported),
so a machine whose load drifts (this one is shared) biases them alike. The one-off cost of
building the teacher cache and the data pipeline's samples/s (one process) are timed apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from sarmae_cli.data.unlabelled import PretrainData, find_images, read_optical, read_pairs, scan
from sarmae_cli.model.runtime import autocast, resolve_device
from sarmae_cli.model.teacher import AlignHead, TeacherCache, build_teacher
from sarmae_cli.train.config import from_dict
from sarmae_cli.train.loop import SeededDataset, default_param_groups, sample_seed, to_device
from sarmae_cli.train.pretrain import PretrainConfig, PretrainTask, SarmaeNet, build_mae

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    cpu = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} CPU cores (load {load:.1f}), {gpu}, torch {torch.__version__}"


def write_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    pairs = read_pairs(DATA / "paired_s1s2" / "pairs.csv")[:n]
    man = folder / "pairs.csv"
    with open(man, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sar", "opt"])
        w.writerows([(str(s), str(o)) for s, o in pairs])
    chips = sorted((DATA / "mstar10" / "train").rglob("*.jpeg"))[:n]
    lst = folder / "chips.txt"
    lst.write_text("\n".join(map(str, chips)))
    return lst, man


def batches(data: PretrainData, n: int, size: int) -> list[dict]:
    seeded = SeededDataset(data)
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    items = [seeded[(i, sample_seed(0, 0, i))] for i in idx[: n * size]]
    return [default_collate(items[k * size : (k + 1) * size]) for k in range(n)]


def bench_model(model: str, args: argparse.Namespace, folder: Path, lst: Path, man: Path, out: dict) -> None:
    device = resolve_device(args.device)
    cfg = from_dict(
        PretrainConfig,
        {"sources": [str(lst)], "paired": str(man), "model": {"preset": model, "img_size": 224}},
    )
    unpaired, paired, _ = scan(find_images([lst]), read_pairs(man), cfg.data)
    teacher = build_teacher("dinov2-s").to(device)
    cache = TeacherCache(folder / "cache")
    grid = 224 // 16
    plain = PretrainData(unpaired, paired, cfg.data, 224, 1, 224, speckle=cfg.sare)
    cached = PretrainData(
        unpaired, paired, cfg.data, 224, 1, 224, speckle=cfg.sare, teacher_cache=cache, grid=grid
    )
    t0 = time.perf_counter()
    plain_batches = batches(plain, args.rounds, args.batch_size)
    data_sps = args.rounds * args.batch_size / (time.perf_counter() - t0)
    cached_batches = batches(cached, args.rounds, args.batch_size)
    setups = {}
    for mode in args.modes:
        torch.manual_seed(0)
        mae, _ = build_mae(cfg)
        head = None if mode == "no-sarc" else AlignHead(mae.encoder.embed_dim, teacher.dim)
        net = SarmaeNet(mae, head, 0.1).to(device).train()
        task = PretrainTask(
            net, teacher if mode == "sarc-onthefly" else None, mode == "sarc-cached", {}, cfg.data
        )
        opt = torch.optim.AdamW(default_param_groups(net, 0.05), lr=1e-4, betas=(0.9, 0.95))
        setups[mode] = (task, net, opt, cached_batches if mode == "sarc-cached" else plain_batches)
    times: dict[str, list[float]] = {m: [] for m in args.modes}
    for r in range(args.rounds + 1):  # round 0 warms up
        for mode, (task, net, opt, bs) in setups.items():
            batch = to_device(bs[r % len(bs)], device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with autocast(device):
                loss, _ = task.training_step(net, batch)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if r:
                times[mode].append(time.perf_counter() - t)
    for mode in args.modes:
        sps = args.batch_size / statistics.median(times[mode])
        out["runs"].append({"model": model, "mode": mode, "samples_per_s": round(sps, 3)})
        print(f"{model:5s} {mode:14s} {sps:8.2f} samples/s", flush=True)
    out["data_pipeline_samples_per_s"] = round(data_sps, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "base"])
    ap.add_argument("--modes", nargs="+", default=["no-sarc", "sarc-onthefly", "sarc-cached"])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    results: dict = {"machine": machine(), "argv": sys.argv, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lst, man = write_inputs(folder, args.pairs)
        (folder / "cache").mkdir()
        teacher = build_teacher("dinov2-s")
        files = sorted({str(o) for _, o in read_pairs(man)})
        t0 = time.perf_counter()
        TeacherCache.build(folder / "cache", teacher, files, read_optical)
        dt = time.perf_counter() - t0
        results["cache_build"] = {
            "images": len(files),
            "seconds": round(dt, 2),
            "images_per_s": len(files) / dt,
        }
        print(f"teacher cache: {len(files)} optical chips in {dt:.1f} s ({len(files) / dt:.2f} images/s)")
        for model in args.models:
            bench_model(model, args, folder, lst, man, results)
        print(f"data pipeline (one process): {results['data_pipeline_samples_per_s']} samples/s")
    results["machine_after"] = machine()
    print(f"machine after: {results['machine_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
