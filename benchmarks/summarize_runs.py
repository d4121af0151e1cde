"""Mean ± std of a metric over the seeds of several `sarmae finetune` metrics JSON files
(e.g. seed 0 in one run and seeds 1,2 in another).

    python benchmarks/summarize_runs.py random_s0.metrics.json random_s12.metrics.json
    python benchmarks/summarize_runs.py --metric miou water.metrics.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def seed_values(files: list[Path], metric: str = "overall_accuracy") -> dict[int, float]:
    """{seed: metric} over the runs of several metrics JSON files (a later file wins a seed)."""
    values: dict[int, float] = {}
    for f in files:
        doc = json.loads(Path(f).read_text())
        for seed, run in zip(doc["seeds"], doc["runs"], strict=True):
            values[int(seed)] = float(run[metric])
    return values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--metric", default="overall_accuracy")
    args = ap.parse_args()
    values = seed_values(args.files, args.metric)
    v = np.array([values[s] for s in sorted(values)]) * 100
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    per_seed = ", ".join(f"seed {s}: {values[s] * 100:.2f}" for s in sorted(values))
    print(f"{args.metric}: {v.mean():.2f} ± {std:.2f} % (n={len(v)}; {per_seed})")


if __name__ == "__main__":
    main()
