"""Robustness of an MSTAR classifier to the rendering of its input, and the 17°/15° depression
effect that can be measured without training.

Every chip of mstar10/test (15° depression) is re-rendered with each of
`sarmae_cli.data.render.RENDERINGS` (gamma 0.5 and 2, 2-98 % percentile stretch, histogram
equalisation, linear and log magnitude, JPEG quality 50) and written losslessly (PNG) to a
work folder outside the repository; the weights are scored on each copy with
`evaluate_weights`, the stored preprocessing of the weights, exactly as `sarmae evaluate`
does. The `standard` copy is the decoded chips written back unchanged, so it must give the
accuracy of `sarmae evaluate mstar10/test`. The sweep (`--no-sweep` skips it) does the same
for mild doses: gamma 0.8-1.25 and linear gains 0.8-1.25 (`render.gamma`, `render.gain`).
It measures sensitivity on the test labels; nothing here may be chosen from it.

    python benchmarks/mstar_renderings.py --json mstar_renderings.json

Depression (`--no-depression` skips it): the weights scored on mstar10/train (17°) beside
mstar10/test (15°). Weights trained on all training chips have seen the 17° chips, so that
row is their training accuracy, not a generalisation figure. A model trained with a
held-out share of the training folder (`sarmae finetune TRAIN --val-fraction F`, no `--val`)
gives the defensible comparison: `--holdout-weights W` scores W on the 17° chips it held out
(the split stored in W, as `sarmae evaluate TRAIN --val-fraction F`) and on the 15° test
chips. The brightness of the two folders' chips, per class, is reported too (no model, no labels
beyond the folder names).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sarmae_cli.data.labelled import scan_classification
from sarmae_cli.data.raster import read_image
from sarmae_cli.data.render import RENDERINGS, gain, gamma
from sarmae_cli.model.checkpoint import read_meta
from sarmae_cli.train.evaluate import evaluate_weights

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SARMAE_DATA", ROOT.parent / "shared" / "data"))
CENTRE = 64  # the shipped classifier's input: the centre 64 px
SWEEP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    **{f"gamma {g}": partial(gamma, g=g) for g in (0.8, 0.9, 0.95, 1.05, 1.1, 1.25)},
    **{f"gain {k}": partial(gain, k=k) for k in (0.8, 0.9, 0.95, 1.05, 1.1, 1.25)},
}

Chips = list[tuple[Path, str, np.ndarray]]  # (file, class, raw uint8 [C, H, W])


def write_rendered(chips: Chips, fn: Callable[[np.ndarray], np.ndarray], folder: Path) -> Path:
    """Write fn(chip) of every chip as folder/<CLASS>/<stem>.png (lossless); returns folder."""
    for path, cls, raw in chips:
        img = fn(raw)  # uint8 [C, H, W]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        arr = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
        Image.fromarray(arr).save(folder / cls / f"{path.stem}.png")
    return folder


def score(weights: Path, data: Path, holdout: float | None = None) -> dict[str, Any]:
    """Overall and mean class accuracy (percent), per-class accuracy, the class predicted most
    often (and its share of the chips), chips and seconds."""
    t0 = time.perf_counter()
    m, _ = evaluate_weights(weights, data, torch.device("cpu"), holdout=holdout)
    per = {k: (None if v is None else round(v * 100, 2)) for k, v in m["per_class_accuracy"].items()}
    predicted = np.array(m["confusion_matrix"]).sum(0)  # chips predicted as each class
    top = int(predicted.argmax())
    return {
        "overall_accuracy": round(m["overall_accuracy"] * 100, 2),
        "mean_class_accuracy": round(m["mean_class_accuracy"] * 100, 2),
        "per_class_accuracy": per,
        "chips": int(predicted.sum()),
        "most_predicted": [list(per)[top], round(100 * predicted[top] / predicted.sum(), 1)],
        "data": m["data"],
        "seconds": round(time.perf_counter() - t0, 1),
    }


def score_all(weights: Path, chips: Chips, fns: dict[str, Callable], work: Path) -> dict[str, Any]:
    """Score `weights` on every re-rendered copy of `chips`; one progress line each."""
    out = {}
    for name, fn in fns.items():
        folder = write_rendered(chips, fn, work / name.replace(" ", "_"))
        out[name] = r = score(weights, folder)
        print(f"{name}: {r['overall_accuracy']:.2f} % ({r['chips']} chips, {r['seconds']} s)", flush=True)
    return out


def brightness(folder: Path) -> dict[str, dict[str, float]]:
    """Per class and for all chips of a folder: the median over chips of their centre's mean,
    median and 98th percentile (8-bit levels)."""
    stats: dict[str, list[tuple[float, float, float]]] = {}
    for s in scan_classification(folder).samples:
        raw = read_image(s.path)[0].astype(np.float64)
        t, left = (raw.shape[0] - CENTRE) // 2, (raw.shape[1] - CENTRE) // 2
        c = raw[t : t + CENTRE, left : left + CENTRE]
        stats.setdefault(s.path.parent.name, []).append((c.mean(), np.median(c), np.percentile(c, 98)))
    stats["all"] = [v for vs in list(stats.values()) for v in vs]
    keys = ("centre_mean", "centre_median", "centre_p98")
    return {
        cls: {"chips": len(v)}
        | {k: round(float(x), 1) for k, x in zip(keys, np.median(v, axis=0), strict=True)}
        for cls, v in stats.items()
    }


def held_out_fraction(weights: Path) -> float | None:
    """The `--val-fraction` a weights file held out of its training folder, or None when it was
    validated on another set (`--val`) and so trained on every chip of its folder."""
    data = read_meta(weights).training.get("config", {}).get("data", {})
    return None if data.get("val") else float(data.get("val_fraction") or 0) or None


def table(header: list[str], rows: list[list[str]]) -> None:
    """Print a markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_scores(results: dict[str, Any], base: dict[str, Any]) -> None:
    rows = []
    for name, r in results.items():
        r["drop"] = round(base["overall_accuracy"] - r["overall_accuracy"], 2)
        per = {k: v for k, v in r["per_class_accuracy"].items() if v is not None}
        weak = min(per, key=per.__getitem__)
        top, share = r["most_predicted"]
        acc = [f"{r['overall_accuracy']:.2f} %", f"{r['mean_class_accuracy']:.2f} %"]
        drop = "—" if r is base else f"{r['drop']:.2f}"
        rows.append([name, *acc, drop, f"{weak} {per[weak]:.1f} %", f"{top} ({share:.1f} %)"])
    head = [
        "rendering",
        "overall accuracy",
        "mean class accuracy",
        "drop vs standard (points)",
        "weakest class",
    ]
    table([*head, "most predicted class (share of chips)"], rows)


def depression(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """The 17°-vs-15° numbers: each model on the 17° chips (all, or its held-out share) and on
    the 15° test chips, and the brightness of the two folders per class."""
    light = {s: brightness(args.data / s) for s in ("train", "test")}
    dep: dict[str, Any] = {"brightness": light, "models": []}
    rows = []
    for w in [args.weights, *args.holdout_weights]:
        frac = held_out_fraction(w)
        at17 = score(w, args.data / "train", holdout=frac)
        at15 = base if w == args.weights else score(w, args.data / "test")
        dep["models"].append(
            {
                "weights": str(w),
                "held_out_fraction": frac,
                "saw_17deg_chips": frac is None,
                "17deg": at17,
                "15deg": at15,
            }
        )
        a, b = at17["overall_accuracy"], at15["overall_accuracy"]
        what = "all, seen in training" if frac is None else f"{at17['chips']} held out, unseen"
        rows.append([w.name, f"{a:.2f} % ({what})", f"{b:.2f} %", f"{a - b:+.2f}"])
    print()
    table(["weights", "17° chips (train folder)", "15° chips (test)", "17° − 15° (points)"], rows)
    print()
    rows = []
    for cls, tr in light["train"].items():
        te = light["test"][cls]
        ratio = tr["centre_mean"] / te["centre_mean"]
        rows.append([cls, f"{tr['centre_mean']} / {te['centre_mean']}", f"{ratio:.3f}"])
        rows[-1].append(f"{tr['centre_median']} / {te['centre_median']}")
    table(
        ["class", "centre mean, 17° / 15° (median over chips)", "17° / 15°", "centre median, 17° / 15°"], rows
    )
    return dep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-w", "--weights", type=Path, default=ROOT / "weights" / "sarmae_mstar.safetensors")
    ap.add_argument("--data", type=Path, default=DATA / "mstar10", help="folder with train/ and test/")
    ap.add_argument("--renderings", default=",".join(RENDERINGS), help="comma-separated names")
    ap.add_argument("--work", type=Path, help="folder for the re-rendered copies (kept); default: a temp dir")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--no-sweep", action="store_true", help="skip the mild gamma and gain doses")
    ap.add_argument("--no-depression", action="store_true", help="skip the 17°/15° part")
    ap.add_argument(
        "--holdout-weights", type=Path, nargs="*", default=[], help="weights with a held-out split"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.renderings.split(",") if n.strip()]
    unknown = [n for n in names if n not in RENDERINGS]
    if unknown:
        ap.error(f"unknown renderings {unknown}; choose from {', '.join(RENDERINGS)}")
    if "standard" not in names:
        names.insert(0, "standard")
    test = args.data / "test"
    chips = [(s.path, s.path.parent.name, read_image(s.path)) for s in scan_classification(test).samples]
    result: dict[str, Any] = {"weights": str(args.weights), "test": str(test)}

    with tempfile.TemporaryDirectory(prefix="mstar_renderings_") as tmp:
        work = args.work or Path(tmp)
        result["renderings"] = score_all(args.weights, chips, {n: RENDERINGS[n] for n in names}, work)
        if not args.no_sweep:
            result["sweep"] = score_all(args.weights, chips, SWEEP, work)

    base = result["renderings"]["standard"]
    print(f"\n`{args.weights.name}` on the {base['chips']} test chips (15°), re-rendered:\n")
    print_scores(result["renderings"], base)
    if not args.no_sweep:
        print("\nMild doses (a sensitivity measurement on the test labels, not a choice):\n")
        print_scores({"standard": base} | result["sweep"], base)
    if not args.no_depression:
        result["depression"] = depression(args, base)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
