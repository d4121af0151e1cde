"""CUDA (autocast) vs CPU fp32 outputs of an encoder on 64 MSTAR chips (run_on_gpu.sh unpacks them)."""

import glob
import sys

import numpy as np
import torch
from PIL import Image

from sarmae_cli.model.checkpoint import load_encoder
from sarmae_cli.model.runtime import autocast, resolve_device

enc, meta = load_encoder(sys.argv[1])
files = sorted(glob.glob("/tmp/devdata/data/mstar_train/*/*.jpeg"))[::40][:64]
chips = [Image.open(f).convert("L").resize((128, 128), Image.BILINEAR) for f in files]
x = np.stack([np.asarray(c, np.float32) / 255.0 for c in chips])
x = torch.from_numpy((x - 0.5) / 0.5)[:, None]  # [B, 1, 128, 128]
enc = enc.float().eval()
with torch.no_grad():
    ref = enc(x).float()
    dev = resolve_device(sys.argv[2])
    enc = enc.to(dev)
    with autocast(dev):
        out = enc(x.to(dev)).float().cpu()
a, b = ref.flatten(1), out.flatten(1)
cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
print(
    f"encoder output {tuple(ref.shape)}; {dev} autocast vs CPU fp32: cosine min {cos.min():.5f} "
    f"mean {cos.mean():.5f}; max abs diff {(a - b).abs().max():.4f} (mean |x| {a.abs().mean():.4f})"
)
