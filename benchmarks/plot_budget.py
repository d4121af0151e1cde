"""Accuracy against fine-tuning epochs, mean ± std over seeds, one line per start.

Each curve point is LABEL:EPOCHS=FILE[,FILE...] (metrics JSON files of `sarmae finetune`):

    python benchmarks/plot_budget.py -o budget.png \\
        "SARMAE init:40=a40.metrics.json" "SARMAE init:160=a160.metrics.json" \\
        "random init:40=r40_s0.metrics.json,r40_s12.metrics.json" "random init:160=r160.metrics.json"
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from summarize_runs import seed_values  # noqa: E402


def parse_point(spec: str) -> tuple[str, int, list[Path]]:
    """'LABEL:EPOCHS=F1,F2' -> (label, epochs, files)."""
    head, sep, files = spec.partition("=")
    label, colon, epochs = head.rpartition(":")
    if not (sep and colon and label and epochs.isdigit() and files):
        raise SystemExit(f"error: bad point {spec!r}; write LABEL:EPOCHS=FILE[,FILE...]")
    return label, int(epochs), [Path(f) for f in files.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("points", nargs="+", help="LABEL:EPOCHS=FILE[,FILE...]")
    ap.add_argument("--metric", default="overall_accuracy")
    ap.add_argument("--title", default="MSTAR SOC test, 40-shot")
    ap.add_argument("-o", "--output", type=Path, required=True)
    args = ap.parse_args()
    curves: dict[str, list[tuple[int, float, float, int]]] = {}
    for spec in args.points:
        label, epochs, files = parse_point(spec)
        v = np.array(list(seed_values(files, args.metric).values())) * 100  # [seeds]
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        curves.setdefault(label, []).append((epochs, float(v.mean()), std, len(v)))
        print(f"{label:>16} {epochs:4d} epochs: {v.mean():.2f} ± {std:.2f} % (n={len(v)})")
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, pts in curves.items():
        e, m, s, _ = (np.array(c) for c in zip(*sorted(pts), strict=True))
        ax.errorbar(e, m, yerr=s, marker="o", capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({p[0] for pts in curves.values() for p in pts}))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("fine-tuning epochs")
    ax.set_ylabel(f"{args.metric.replace('_', ' ')} (%)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"plot: {args.output}")


if __name__ == "__main__":
    main()
