"""Time of one fine-tuning optimizer step of the MSTAR classifier, as `train/loop.py` runs it
(autocast on CUDA, cross-entropy with label smoothing, backward, gradient clipping, AdamW over
the layer-decay groups), on random data: the model step alone, without the data loader.

    python benchmarks/bench_finetune_step.py --device cuda --steps 200 --json step.json

Variants: `loop` is what the loop does (AdamW with PyTorch's default implementation, and the
loss, the batch accuracy and the gradient norm read back to the CPU every step); `fused` uses
AdamW(fused=True); `fused_nosync` also keeps the metrics on the device (no read-back per step).
Inputs: the centre 64 px (4 x 4 tokens) and the zoomed 128 px (8 x 8 tokens), batch 32 and 128.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from sarmae_cli.model.config import ViTConfig
from sarmae_cli.model.heads import Classifier, param_groups_lrd
from sarmae_cli.model.runtime import autocast, resolve_device

TINY = {"embed_dim": 192, "depth": 12, "num_heads": 3}


def time_steps(device: torch.device, size: int, batch: int, variant: str, steps: int, warmup: int) -> float:
    """Mean wall time of `steps` steps after `warmup` steps, in ms per step."""
    torch.manual_seed(0)
    model = (
        Classifier(ViTConfig(img_size=size, in_chans=1, **TINY), 10, drop_path_rate=0.1).to(device).train()
    )
    groups = param_groups_lrd(model, 0.05, 0.75)
    fused = variant != "loop" and device.type == "cuda"
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05, fused=fused or None)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 1, size, size, device=device)  # [B, 1, S, S]
    y = torch.randint(0, 10, (batch,), device=device)  # [B]
    sync = variant != "fused_nosync"

    def step() -> None:
        with autocast(device):
            logits = model(x)  # [B, 10]
        loss = loss_fn(logits.float(), y)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        acc = (logits.argmax(1) == y).float().mean()
        if sync:
            float(loss.detach()), float(acc), float(norm)
        opt.step()
        opt.zero_grad(set_to_none=True)

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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    rows = []
    for size in (64, 128):
        for batch in (32, 128):
            for variant in ("loop", "fused", "fused_nosync"):
                ms = time_steps(device, size, batch, variant, args.steps, args.warmup)
                rows.append(
                    {
                        "size": size,
                        "batch": batch,
                        "variant": variant,
                        "ms_per_step": round(ms, 2),
                        "samples_per_s": round(1000 * batch / ms),
                    }
                )
                print(
                    f"{name} {size:>3} px batch {batch:>3} {variant:<13} {ms:7.2f} ms/step "
                    f"{1000 * batch / ms:8.0f} samples/s",
                    flush=True,
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": name, "torch": torch.__version__, "steps": args.steps, "rows": rows}, indent=1
            )
        )


if __name__ == "__main__":
    main()
