"""Training accuracy at the end of a fine-tuning run, from its `log.csv`.

Each `log.csv` row holds the mean of a metric over the optimizer steps since the previous
row, so the mean over the last N steps weights each row by the steps it covers (rows are not
evenly spaced: one every `log_every` steps plus one at every epoch end).

    python benchmarks/train_accuracy.py RUN.run/seed0/log.csv [...] [--last 150] [--metric acc]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def last_steps_mean(path: Path, last: int = 150, metric: str = "acc") -> float:
    """Step-weighted mean of `metric` over the last `last` optimizer steps of a log.csv."""
    with open(path, newline="") as f:
        rows = [(int(r["step"]), float(r[metric])) for r in csv.DictReader(f) if r.get(metric)]
    if not rows:
        raise ValueError(f"{path}: no '{metric}' values")
    start = rows[-1][0] - last  # steps (start, end] are counted
    total = weight = 0.0
    prev = 0
    for step, value in rows:
        span = step - max(prev, start)
        if span > 0:
            total += value * span
            weight += span
        prev = step
    return total / weight


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--last", type=int, default=150, help="optimizer steps at the end (default 150)")
    ap.add_argument("--metric", default="acc", help="log.csv column (default acc)")
    args = ap.parse_args()
    if args.last < 1:
        print("error: --last must be >= 1", file=sys.stderr)
        return 2
    for path in args.logs:
        try:
            value = last_steps_mean(path, args.last, args.metric)
        except (OSError, KeyError, ValueError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 1
        print(f"{path}\t{100 * value:.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
