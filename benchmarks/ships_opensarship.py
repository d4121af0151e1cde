"""The ship detector on real Sentinel-1 ships at 10 m: OpenSARShip's GRD chips (issue 32: every
shipped model at 1 m to 20 m pixels), run through `sarmae detect`'s library path at several
`--gsd` settings.

Each OpenSARShip GRD archive (`$SARMAE_DATA/opensarship/*GRDH*.zip`) holds chips cut around
AIS-matched ships (`Patch_Cal/`: calibrated sigma0, linear power; VV is the last band) and
`Ship.xml`, with each ship's head and tail in scene pixels and its AIS width. The chip is
centred on the ship (its name gives the centre). Each chip's VV band is written as a GeoTIFF on
a 10 m grid (the GRD pixel spacing; an arbitrary UTM origin, description `VV`), and detected
with the weights' stored cut at each `--gsd` (`native`: as given; METRES: resampled to that
pixel size for the detector, boxes back on the 10 m grid; `auto`: what the weights record). Scored per chip:

- hit: a box contains the ship's centre pixel (the chip centre);
- hit IoU 0.3: a box overlaps the ship's box (head-tail segment widened by the AIS width) at
  IoU >= 0.3 (ships are 5-40 px long here, so boxes are coarse);
- other boxes: boxes that contain no ship centre (other ships in the chip count here too).

A second table gives the recall (box on the centre) by the ship's AIS length: under 100 m,
100-200 m and 200 m or more (small boats are not in OpenSARShip: its ships are AIS-matched).

    OMP_NUM_THREADS=1 python benchmarks/ships_opensarship.py --gsd native 5 3 2 1 auto --json out.json

Needs the data in $SARMAE_DATA (default ../shared/data). SLC archives are left out (their pixels
are not square and not 10 m).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torchvision.ops import box_iou

from sarmae_cli.data.geometry import parse_gsd
from sarmae_cli.demo import gpd_boxes
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.detect import DetectOptions, detect_scene
from sarmae_cli.infer.models import Models

DATA = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "sarmae_ships.safetensors"
PIXEL_M = 10.0  # Sentinel-1 IW GRDH pixel spacing


@dataclass
class Chip:
    """One ship chip: VV power [H, W], its ship's box [x1, y1, x2, y2] in chip pixels."""

    name: str
    vv: np.ndarray
    box: np.ndarray
    length_m: float = 0.0  # AIS length (0: not given)


def _ships(xml: bytes) -> dict[tuple[int, int], dict[str, float]]:
    """Ship.xml -> {(centre x, centre y): head / tail / centre pixels, AIS width and length (m)}."""
    out = {}
    xml = xml.replace(b"<\\ShipList>", b"</ShipList>")  # some archives close the list with a backslash
    for ship in ET.fromstring(xml).iter("ship"):
        sar = ship.find("SARShipInformation")
        ais = ship.find("AISShipInformation")
        keys = ("Head_x", "Head_y", "Tail_x", "Tail_y", "Center_x", "Center_y")
        v = {k: float(sar.findtext(k)) for k in keys}
        v["width_m"] = float(ais.findtext("Width") or 0) if ais is not None else 0.0
        v["length_m"] = float(ais.findtext("Length") or 0) if ais is not None else 0.0
        out[(int(v["Center_x"]), int(v["Center_y"]))] = v
    return out


def ship_box(ship: dict[str, float], shape: tuple[int, int]) -> np.ndarray:
    """The ship's axis-aligned box in chip pixels: its head-tail segment, widened by half its
    AIS width (at least 1 px) on each side; the chip is centred on the ship's centre."""
    cy, cx = shape[0] // 2, shape[1] // 2
    xs = np.array([ship["Head_x"], ship["Tail_x"]]) - ship["Center_x"] + cx
    ys = np.array([ship["Head_y"], ship["Tail_y"]]) - ship["Center_y"] + cy
    half = max(ship["width_m"] / PIXEL_M / 2, 1.0)
    return np.array([xs.min() - half, ys.min() - half, xs.max() + 1 + half, ys.max() + 1 + half], np.float32)


def load_chips(folder: Path) -> list[Chip]:
    """The VV chips and ship boxes of every GRD archive in `folder`."""
    chips = []
    for path in sorted(folder.glob("*GRDH*.zip")):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            ships = _ships(z.read(next(n for n in names if n.endswith("Ship.xml"))))
            for n in sorted(n for n in names if "/Patch_Cal/" in f"/{n}" and n.endswith(".tif")):
                stem = Path(n).stem  # Class_x{cx}_y{cy}
                cx, cy = (int(p[1:]) for p in stem.split("_")[-2:])
                if (cx, cy) not in ships:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with rasterio.MemoryFile(io.BytesIO(z.read(n))) as mem, mem.open() as src:
                        vv = src.read(src.count).astype(np.float32)  # [H, W], VV = last band
                ship = ships[(cx, cy)]
                chips.append(Chip(f"{path.stem[:40]}/{stem}", vv, ship_box(ship, vv.shape), ship["length_m"]))
    return chips


def write_chip(chip: Chip, path: Path) -> Path:
    """A chip as a one-band float32 GeoTIFF of linear power on a 10 m UTM grid, band `VV`."""
    h, w = chip.vv.shape
    profile = dict(driver="GTiff", width=w, height=h, count=1, dtype="float32", crs="EPSG:32650")
    with rasterio.open(path, "w", transform=from_origin(500000, 4400000, PIXEL_M, PIXEL_M), **profile) as dst:
        dst.write(chip.vv, 1)
        dst.set_band_description(1, "VV")
    return path


def score_chip(boxes: np.ndarray, chip: Chip) -> tuple[bool, bool, int]:
    """(a box contains the ship centre, a box overlaps the ship box at IoU >= 0.3, boxes
    without the centre) for one chip's detected boxes [N, 4]."""
    cy, cx = chip.vv.shape[0] // 2 + 0.5, chip.vv.shape[1] // 2 + 0.5
    inside = (boxes[:, 0] <= cx) & (cx <= boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy <= boxes[:, 3])
    overlap = bool(len(boxes)) and bool(
        (box_iou(torch.tensor(boxes), torch.tensor(chip.box[None])) >= 0.3).any()
    )
    return bool(inside.any()), overlap, int((~inside).sum())


#: AIS length classes (metres) of the per-length recall: [lo, hi).
LENGTHS = ((1.0, 100.0), (100.0, 200.0), (200.0, 1000.0))


def length_class(length_m: float) -> str | None:
    """The `LENGTHS` class of an AIS length, e.g. "100-200 m"; None when unknown (0)."""
    for lo, hi in LENGTHS:
        if lo <= length_m < hi:
            return f"{lo:g}-{hi:g} m"
    return None


def run(chips: list[Chip], weights: Path, gsds: list[str], work: Path) -> list[dict]:
    """One row per `--gsd` setting: hits, IoU-0.3 hits, other boxes, seconds, and the recall
    (box on the centre) per AIS length class."""
    models = Models("detect", weights, device="cpu")
    paths = [write_chip(c, work / f"chip{i:03d}.tif") for i, c in enumerate(chips)]
    rows = []
    for g in gsds:
        gsd = parse_gsd(g)
        hits = hits30 = other = 0
        by_length: dict[str, list[int]] = {}
        t0 = time.perf_counter()
        for chip, path in zip(chips, paths, strict=True):
            out = work / "out.gpkg"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                detect_scene(path, out, models, Options(overwrite=True, gsd=gsd), DetectOptions())
            h, h30, o = score_chip(gpd_boxes(out).boxes, chip)
            hits, hits30, other = hits + h, hits30 + h30, other + o
            if (cls := length_class(chip.length_m)) is not None:
                by_length.setdefault(cls, []).append(int(h))
        n = len(chips)
        rows.append(
            {
                "gsd": g,
                "chips": n,
                "recall_centre": hits / n,
                "recall_iou30": hits30 / n,
                "other_boxes_per_chip": other / n,
                "seconds": round(time.perf_counter() - t0, 1),
                "recall_centre_by_length": {
                    k: {"ships": len(v), "recall": sum(v) / len(v)} for k, v in sorted(by_length.items())
                },
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--gsd", nargs="+", default=["native", "5", "3", "2", "1"])
    ap.add_argument("--data", type=Path, default=DATA / "opensarship")
    ap.add_argument("--limit", type=int, help="only the first N chips (a quick look)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    chips = load_chips(args.data)[: args.limit]
    lengths = [float(np.hypot(*(c.box[2:] - c.box[:2]))) for c in chips]
    print(f"{len(chips)} GRD chips, ship box diagonal {np.median(lengths):.0f} px median", file=sys.stderr)
    with tempfile.TemporaryDirectory() as work:
        rows = run(chips, args.weights, args.gsd, Path(work))
    print("| `--gsd` | chips | recall (box on the centre) | recall (IoU >= 0.3) | other boxes per chip | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['gsd']} | {r['chips']} | {r['recall_centre']:.3f} | {r['recall_iou30']:.3f} | "
            f"{r['other_boxes_per_chip']:.2f} | {r['seconds']} |"
        )
    classes = [f"{lo:g}-{hi:g} m" for lo, hi in LENGTHS]
    print("\n| `--gsd` | " + " | ".join(f"recall, AIS length {c}" for c in classes) + " |")
    print("| --- |" + " --- |" * len(classes))
    for r in rows:
        cells = [r["recall_centre_by_length"].get(c) for c in classes]
        text = [f"{c['recall']:.3f} ({c['ships']})" if c else "-" for c in cells]
        print(f"| {r['gsd']} | " + " | ".join(text) + " |")
    if args.json:
        args.json.write_text(json.dumps({"weights": str(args.weights), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
