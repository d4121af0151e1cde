"""Frozen-feature probe of encoders on MSTAR: no training, so it isolates what pretraining
learned. K chips per class of mstar10/train (seeded) are the references; every chip of
mstar10/test is labelled by its nearest reference (cosine 1-NN) and by the nearest class
mean. Features: mean of the patch tokens of a 64-px centre crop, centred and L2-normalised.

    python benchmarks/probe_mstar_knn.py random runs/pt/encoder.safetensors --shots 40

`random` is a randomly initialised ViT-Tiny (same seed every run) as the baseline.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sarmae_cli.model.checkpoint import load_encoder
from sarmae_cli.model.config import preset
from sarmae_cli.model.encoder import SarViT

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CROP = 64


def load(split: Path, classes: list[str], shots: int | None, rng: np.random.Generator):
    """[N, 1, 64, 64] centre crops in [0, 1] and their labels."""
    xs, ys = [], []
    for ci, c in enumerate(classes):
        files = sorted((split / c).glob("*.jpeg"))
        if shots:
            files = [files[i] for i in sorted(rng.choice(len(files), shots, replace=False))]
        for f in files:
            a = np.asarray(Image.open(f).convert("L"), np.float32) / 255
            t, left = (a.shape[0] - CROP) // 2, (a.shape[1] - CROP) // 2
            xs.append(a[t : t + CROP, left : left + CROP])
            ys.append(ci)
    return np.stack(xs)[:, None], np.array(ys)


@torch.no_grad()
def features(enc: SarViT, x: np.ndarray, mean: float, std: float) -> np.ndarray:
    out = []
    for i in range(0, len(x), 256):
        tokens = enc.forward_features(torch.from_numpy((x[i : i + 256] - mean) / std))  # [B, 1+N, D]
        out.append(tokens[:, 1:].mean(1).numpy())
    f = np.concatenate(out)
    f -= f.mean(0)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("encoders", nargs="+", help="weights files, or 'random'")
    ap.add_argument("--shots", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = DATA / "mstar10"
    classes = sorted(p.name for p in (root / "train").iterdir())
    xtr, ytr = load(root / "train", classes, args.shots, np.random.default_rng(args.seed))
    xte, yte = load(root / "test", classes, None, np.random.default_rng(args.seed))
    print("| encoder | normalisation | 1-NN acc. | class-mean acc. |\n| --- | --- | --- | --- |")
    for name in args.encoders:
        if name == "random":
            torch.manual_seed(0)
            enc, mean, std = SarViT(preset("tiny", in_chans=1)), 0.5, 0.5
        else:
            enc, meta = load_encoder(Path(name))
            mean, std = meta.normalization["mean"][0], meta.normalization["std"][0]
        enc.eval()
        for label, (m, s) in {"weights'": (mean, std), "data": (float(xtr.mean()), float(xtr.std()))}.items():
            ftr, fte = features(enc, xtr, m, s), features(enc, xte, m, s)
            nn1 = (ytr[(fte @ ftr.T).argmax(1)] == yte).mean()
            centres = np.stack([ftr[ytr == c].mean(0) for c in range(len(classes))])
            ncm = ((fte @ centres.T).argmax(1) == yte).mean()
            print(f"| {name} | {label} | {nn1 * 100:.1f} % | {ncm * 100:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
