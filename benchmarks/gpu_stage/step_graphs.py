"""One ViT-Tiny fine-tuning step (the MSTAR classifier step of `bench_finetune_step.py`:
bf16 autocast forward, cross-entropy with label smoothing, backward, gradient clipping,
AdamW over the layer-decay groups) made cheaper on the host, for the GPU stage.

Variants (ms per step, mean of `--steps` after `--warmup`, which holds any compilation):
- `eager`: as the loop runs it (fused AdamW, no read-back per step): the reference;
- `compile`: `torch.compile(model)` (inductor), optimizer eager;
- `compile-ro`: `torch.compile(model, mode="reduce-overhead")`: CUDA graphs of the compiled
  forward and backward; clipping and the optimizer eager;
- `graph`: the whole step (forward, loss, backward, clipping, AdamW(capturable=True)) captured
  once in one CUDA graph and replayed on static input buffers (the lr is fixed in the graph;
  a loop would pass it as a tensor).
The issue's target: at most 10 ms per step at batch 128 (measured eager on an H100: 31-45 ms,
host-bound; docs/gpu.md). `--dry-run`: CPU, 2 steps of batch 4, `compile` with the eager
backend (checks the wiring; no CUDA variant runs).

    python benchmarks/gpu_stage/step_graphs.py --device cuda --json step_graphs.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from sarmae_cli.model.config import ViTConfig
from sarmae_cli.model.heads import Classifier, param_groups_lrd

TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3}
VARIANTS = ("eager", "compile", "compile-ro", "graph")
CUDA_ONLY = ("compile-ro", "graph")


def make_step(device: torch.device, size: int, batch: int, variant: str, backend: str) -> Callable[[], None]:
    """A function that runs one optimizer step of `variant` on fixed random data."""
    torch.manual_seed(0)
    model = (
        Classifier(ViTConfig(img_size=size, in_chans=1, **TINY), 10, drop_path_rate=0.1).to(device).train()
    )
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(
        param_groups_lrd(model, 0.05, 0.75), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05,
        fused=cuda or None, capturable=variant == "graph",
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 1, size, size, device=device)  # [B, 1, S, S], static input buffer
    y = torch.randint(0, 10, (batch,), device=device)  # [B]
    net: nn.Module = model
    if variant == "compile":
        net = torch.compile(model, backend=backend)
    elif variant == "compile-ro":
        net = torch.compile(model, mode="reduce-overhead")

    def step() -> None:
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=cuda, cache_enabled=variant != "graph"
        ):
            logits = net(x)  # [B, 10]
        loss = loss_fn(logits.float(), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if variant != "graph":
            opt.zero_grad(set_to_none=True)

    if variant != "graph":
        return step
    side = torch.cuda.Stream()  # warm up (optimizer state, cuBLAS workspaces) off the default stream
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # gradients are allocated (and overwritten) inside the graph
        step()
    return graph.replay


def time_variant(
    device: torch.device, size: int, batch: int, variant: str, steps: int, warmup: int, backend: str
) -> float:
    """Mean wall time per step in ms, after `warmup` steps."""
    step = make_step(device, size, batch, variant, backend)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="input sides (px)")
    ap.add_argument("--batch", type=int, nargs="+", default=[128])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="CPU, 2 steps of batch 4: the wiring only")
    args = ap.parse_args()
    backend = "inductor"
    if args.dry_run:
        args.device, args.sizes, args.batch, args.steps, args.warmup, backend = (
            "cpu",
            [64],
            [4],
            2,
            1,
            "eager",
        )
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    rows = []
    for size in args.sizes:
        for batch in args.batch:
            for variant in args.variants:
                row = {"size": size, "batch": batch, "variant": variant}
                if variant in CUDA_ONLY and device.type != "cuda":
                    row["skipped"] = "needs CUDA"
                else:
                    try:
                        ms = time_variant(device, size, batch, variant, args.steps, args.warmup, backend)
                        row.update(ms_per_step=round(ms, 2), samples_per_s=round(1000 * batch / ms))
                    except Exception as e:  # a variant that does not run here is a result too
                        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
                        row["error"] = f"{type(e).__name__}: {first}"
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {
        "device": name,
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    sys.exit(0 if all("error" not in r for r in rows) else 1)


if __name__ == "__main__":
    main()
