"""The ship detector on generated open-sea scenes: the `sarmae demo` sea generator
(`demo.ship_scene`: a swell of about 1.5 dB on a -27 dB sea, 2-look Gamma speckle, hulls 12-48 px
long at 2 m pixels, any heading, about 20 dB above the sea) at seeds other than the demo's, run
through `sarmae detect`'s library path with the weights' stored cut (or `--min-score`).

Each scene is written as the demo writes its sea (a GeoTIFF in the radiometry the weights take,
band `VV`, 2 m UTM pixels). Boxes are matched one-to-one to the true boxes at IoU >= 0.5
(`export/box_parity.match`, highest score first); recall and precision are given per scene,
pooled, and pooled recall by the true box's diagonal (under 24, 24-36, 36-60 px; 2 m pixels).

    OMP_NUM_THREADS=2 python benchmarks/ships_synthetic_sea.py --seeds 100 101 102 103 104 --json out.json

What it stands for: an open sea under strong speckle, bright hulls on dark water. What it does
not: real ships (point scatterers, sidelobes, wakes, azimuth smearing) or coastal clutter; the
held-out HRSID scenes and OpenSARShip (`ships_opensarship.py`) measure those.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from rasterio.transform import from_origin

from sarmae_cli.data.synthetic import as_mode
from sarmae_cli.demo import SHIP_ORIGIN, SHIP_PIXEL_M, gpd_boxes, ship_scene, write_geotiff
from sarmae_cli.export.box_parity import matched_truth
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.detect import DetectOptions, detect_scene
from sarmae_cli.infer.models import Models

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "sarmae_ships.safetensors"
LENGTHS_PX = ((0, 24), (24, 36), (36, 60))  # box diagonal classes, [lo, hi) px


def length_px(box: np.ndarray) -> float:
    """The diagonal of a true box [4] in pixels (the hull length, up to its width)."""
    return float(np.hypot(box[2] - box[0], box[3] - box[1]))


def run(weights: Path, seeds: list[int], size: int, min_score: float | None, work: Path) -> dict:
    """Per-scene and pooled recall / precision, and pooled recall by ship length."""
    models = Models("detect", weights, device="cpu")
    mode = models.meta.input_scaling.get("mode", "db")
    mode = mode if mode in ("db", "power", "amplitude", "uint8", "uint16") else "db"
    transform = from_origin(*SHIP_ORIGIN, SHIP_PIXEL_M, SHIP_PIXEL_M)
    rows, lengths, hits = [], [], []
    tp_all = fp_all = n_all = 0
    cut = None
    for seed in seeds:
        power, truth = ship_scene(size, seed)
        scene, out = work / f"sea{seed}.tif", work / f"ships{seed}.gpkg"
        write_geotiff(scene, as_mode(power, mode), transform, None, ["VV"], {"INPUT_SCALE": mode}, True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = detect_scene(scene, out, models, Options(overwrite=True), DetectOptions(min_score=min_score))
        cut = s["min_score"]
        found = gpd_boxes(out)
        pred = {"boxes": found.boxes, "scores": found.scores, "labels": np.zeros(len(found.boxes))}
        true = {"boxes": truth, "scores": np.ones(len(truth)), "labels": np.zeros(len(truth))}
        hit = matched_truth(pred, true)
        tp, fp, fn = int(hit.sum()), len(found.boxes) - int(hit.sum()), len(truth) - int(hit.sum())
        hits += hit.tolist()
        lengths += [length_px(b) for b in truth]
        tp_all, fp_all, n_all = tp_all + tp, fp_all + fp, n_all + len(truth)
        row = {
            "seed": seed, "ships": len(truth), "boxes": len(found.boxes), "tp": tp, "fp": fp, "fn": fn,
            "recall": tp / max(len(truth), 1),
            "precision": tp / len(found.boxes) if len(found.boxes) else 1.0,
            "seconds": round(time.perf_counter() - t0, 1),
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    by_length = {}
    for lo, hi in LENGTHS_PX:
        sel = [h for h, n in zip(hits, lengths, strict=True) if lo <= n < hi]
        by_length[f"{lo}-{hi} px"] = {"ships": len(sel), "recall": float(np.mean(sel)) if sel else None}
    pooled = {
        "ships": n_all, "tp": tp_all, "fp": fp_all, "recall": tp_all / max(n_all, 1),
        "precision": tp_all / (tp_all + fp_all) if tp_all + fp_all else 1.0,
    }  # fmt: skip
    return {
        "weights": str(weights), "min_score": cut, "input_scale": mode, "scenes": rows,
        "pooled": pooled, "by_length": by_length,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    ap.add_argument("--size", type=int, default=1024, help="scene side in pixels (the demo's default)")
    ap.add_argument("--min-score", type=float, help="default: the cut stored in the weights")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        r = run(args.weights, args.seeds, args.size, args.min_score, Path(work))
    p = r["pooled"]
    print(f"weights {args.weights}, cut {r['min_score']}, input {r['input_scale']}")
    print("| seed | ships | boxes | TP | FP | recall | precision |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s in r["scenes"]:
        cells = [s["seed"], s["ships"], s["boxes"], s["tp"], s["fp"]]
        cells += [f"{s['recall']:.3f}", f"{s['precision']:.3f}"]
        print("| " + " | ".join(map(str, cells)) + " |")
    cells = ["**pooled**", p["ships"], p["tp"] + p["fp"], p["tp"], p["fp"]]
    cells += [f"**{p['recall']:.3f}**", f"**{p['precision']:.3f}**"]
    print("| " + " | ".join(map(str, cells)) + " |")
    print("\n| ship length | " + " | ".join(r["by_length"]) + " |")
    print("| --- |" + " --- |" * len(r["by_length"]))
    cells = [f"{v['recall']:.3f} ({v['ships']})" if v["ships"] else "-" for v in r["by_length"].values()]
    print("| recall | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
