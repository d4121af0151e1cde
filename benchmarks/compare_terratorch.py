"""`sarmae segment` against TerraTorch's `tiled_inference` on the same model, scene and tiles.

One model, ViT-Tiny/16 with 2 bands and a 1x1 convolution on the last block's patch tokens
upsampled (bilinear) to the tile (a `Segmenter` with the `linear` head), is saved as a sarmae
segmentation weights file and exported with `sarmae export` (onnxruntime). Its head is a
closed-form linear probe (least squares on the patch tokens of 16 tiles) of the dark blocks
of a generated 4096^2 scene (`--probe-size`), so that the class map follows the scene. The same weights go to
TerraTorch's `tiled_inference` (timm's VisionTransformer with the same weights, softmax
probabilities blended, as sarmae blends them).

For each size a 2-band float32 dB GeoTIFF is generated (`bench_infer.generate`). Each run is
its own process, and the engines alternate within every repeat (the order rotates), so the
load of a shared machine hits all of them alike; medians over the repeats are reported:
- `terratorch`: the TerraTorch venv's python runs this file (`--child`): reads the whole scene
  (rasterio), scales it in place exactly as the weights say (fixed dB stretch, mean/std),
  `tiled_inference(crop 224, stride 192, batch 16, blend_overlaps, delta 0, padding off)`,
  argmax, and writes a uint8 COG (DEFLATE, 512 blocks, mode overviews) as sarmae does;
- `torch`, `onnx`, `onnx-int8`: `python -m sarmae_cli segment SCENE -w W --tile 224 --overlap 32
  --batch-size 16` with the safetensors file or its ONNX export (fp32 / dynamic int8).
TerraTorch's own defaults (delta 8, reflect padding) shift its tile grid by 8 px; with delta 0
and no padding both engines cut exactly the same tiles and only the blending weights differ.

Reported: end-to-end seconds of the process (start-up included), the work seconds (reading
to written map), tiles/s (tiles / end-to-end), peak RSS (ru_maxrss of the child, os.wait4),
the ratios against TerraTorch, and the share of pixels on which each class map equals
TerraTorch's; disagreements are split into those inside tile overlaps (where only the
blending weights differ) and elsewhere. It refuses (one line, exit 1) when a map agrees on
fewer than `--tolerance` (99 %) of the pixels.

TerraTorch is not a sarmae dependency: this script installs nothing and expects a separate
venv (`--venv`, default $SARMAE_TT_VENV or /work/runs/tt-venv):

    $ python3 -m venv /work/runs/tt-venv
    $ /work/runs/tt-venv/bin/pip install torch==2.14.1 torchvision==0.29.1   # the project's torch
    $ /work/runs/tt-venv/bin/pip install terratorch

    $ python benchmarks/compare_terratorch.py --sizes 4096 8192 12288 --repeats 3
    $ python benchmarks/compare_terratorch.py --sizes 2048 --repeats 1      # quick
    $ python benchmarks/compare_terratorch.py --dry-run --engines torch onnx  # tiny, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_VENV = os.environ.get("SARMAE_TT_VENV", "/work/runs/tt-venv")
ENGINES = ("terratorch", "torch", "onnx", "onnx-int8")
TILE, OVERLAP, BATCH = 224, 32, 16
DB_RANGE, MEAN, STD = (-30.0, 5.0), (0.5, 0.5), (0.25, 0.25)
VENV_HINT = (
    "create it with: python3 -m venv {v} && {v}/bin/pip install torch==2.14.1 torchvision==0.29.1 "
    "&& {v}/bin/pip install terratorch (or pass --venv DIR)"
)


class Refusal(Exception):
    """A one-line reason to stop (exit code in `code`)."""

    def __init__(self, msg: str, code: int = 1) -> None:
        super().__init__(msg)
        self.code = code


# --------------------------------------------------------------------------- both sides


def origins(n: int, tile: int = TILE, stride: int = TILE - OVERLAP) -> list[int]:
    """Tile starts along an axis: 0, stride, ... and a last tile ending at n (both engines)."""
    if n <= tile:
        return [0]
    return [i * stride for i in range(math.ceil((n - tile) / stride))] + [n - tile]


def overlap_mask(height: int, width: int, tile: int = TILE) -> np.ndarray:
    """[H, W] True where more than one tile covers the pixel (where blending weights act)."""

    def multi(n: int) -> np.ndarray:
        count = np.zeros(n, np.int32)
        for o in origins(n, tile):
            count[o : o + tile] += 1
        return count > 1

    return multi(height)[:, None] | multi(width)[None, :]


def agreement(ref: np.ndarray, other: np.ndarray) -> dict:
    """Share of equal pixels of two class maps [H, W], and of the differing ones inside tile
    overlaps."""
    diff = ref != other
    n_diff = int(diff.sum())
    inside = int((diff & overlap_mask(*ref.shape)).sum()) if n_diff else 0
    return {"agree": 1.0 - n_diff / diff.size, "differ": n_diff, "differ_in_overlaps": inside}


def tt_prepare(x: np.ndarray) -> np.ndarray:
    """Raw dB [C, H, W] float32 -> model input, in place: (clip((x - lo) / (hi - lo), 0, 1) -
    mean) / std, NaN -> 0 (the weights' fixed dB stretch and normalisation)."""
    lo, hi = DB_RANGE
    x -= lo
    x /= hi - lo
    np.clip(x, 0.0, 1.0, out=x)
    for c in range(x.shape[0]):
        x[c] -= MEAN[c]
        x[c] /= STD[c]
    np.nan_to_num(x, copy=False, nan=0.0)
    return x


def tt_model(weights: Path):
    """The weights file's model as plain timm + torch (what a TerraTorch user would build):
    timm VisionTransformer, 1x1 conv on the last block's tokens, bilinear upsampling."""
    from functools import partial

    import torch
    import torch.nn.functional as F
    from safetensors import safe_open
    from timm.models.vision_transformer import VisionTransformer
    from torch import nn

    with safe_open(str(weights), "pt") as f:
        meta = json.loads(f.metadata()["sarmae"])
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    e, head = meta["encoder"], meta["head"]

    class LinearSegmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = VisionTransformer(
                img_size=e["img_size"], patch_size=e["patch_size"], in_chans=e["in_chans"], num_classes=0,
                global_pool="avg", fc_norm=False, embed_dim=e["embed_dim"], depth=e["depth"],
                num_heads=e["num_heads"], mlp_ratio=e["mlp_ratio"], qkv_bias=True, dynamic_img_size=True,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
            )  # fmt: skip
            self.classifier = nn.Conv2d(e["embed_dim"], head["num_classes"], 1)
            self.block = head["layers"][-1]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            (maps,) = self.encoder.forward_intermediates(
                x, indices=[self.block], output_fmt="NCHW", intermediates_only=True
            )  # [B, d, H/p, W/p]
            logits = self.classifier(maps)  # [B, K, H/p, W/p]
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    model = LinearSegmenter()
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    model.encoder.load_state_dict(enc, strict=True)
    model.classifier.load_state_dict({k.split(".")[-1]: v for k, v in state.items() if k.startswith("head.")})
    return model.eval()


def tt_child(args: argparse.Namespace) -> dict:
    """The TerraTorch run (in the TerraTorch venv): whole scene in memory, `tiled_inference`,
    argmax, COG. Prints its summary as one JSON line."""
    import rasterio
    import torch
    from terratorch.tasks.tiled_inference import tiled_inference

    model = tt_model(Path(args.weights))
    t0 = time.perf_counter()
    with rasterio.open(args.scene) as src:
        x = tt_prepare(src.read(out_dtype="float32"))  # [C, H, W]
        profile = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
    with torch.inference_mode():
        probs = tiled_inference(
            lambda t: torch.softmax(model(t), dim=1), torch.from_numpy(x)[None], crop=TILE,
            stride=TILE - OVERLAP, delta=0, padding=False, batch_size=BATCH, blend_overlaps=True,
            average_patches=True,
        )  # fmt: skip  # [1, K, H, W]
    classes = probs[0].argmax(0).to(torch.uint8).numpy()  # [H, W]
    del probs, x
    with rasterio.open(
        args.out, "w", driver="COG", count=1, dtype="uint8", nodata=255, compress="DEFLATE", blocksize=512,
        overview_resampling="mode", bigtiff="IF_SAFER", **profile,
    ) as dst:  # fmt: skip
        dst.write(classes, 1)
    h, w = classes.shape
    return {"seconds": time.perf_counter() - t0, "tiles": len(origins(h)) * len(origins(w))}


# --------------------------------------------------------------------------- the parent


def check_venv(venv: Path) -> Path:
    """The TerraTorch venv's python, or a refusal that says how to create the venv."""
    py = venv / "bin" / "python"
    if not py.exists():
        raise Refusal(f"no TerraTorch venv at {venv}; {VENV_HINT.format(v=venv)}", 2)
    res = subprocess.run(
        [str(py), "-c", "import terratorch.tasks.tiled_inference"], capture_output=True, text=True
    )
    if res.returncode:
        raise Refusal(f"{py} cannot import terratorch; {VENV_HINT.format(v=venv)}", 2)
    return py


def make_weights(path: Path, scene: Path, depth: int, seed: int = 0) -> Path:
    """The compared model as a sarmae weights file; its head is a least-squares probe of the
    generated scene's dark blocks on the patch tokens of 16 random tiles."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from sarmae_cli.model.checkpoint import WeightsMeta
    from sarmae_cli.model.config import preset
    from sarmae_cli.model.factory import save_model
    from sarmae_cli.model.heads import Segmenter

    torch.manual_seed(seed)
    enc = preset("tiny", in_chans=2, img_size=TILE, depth=depth)
    model = Segmenter(enc, 2, decoder="linear", layers=[depth - 1]).eval()
    rng = np.random.default_rng(seed)
    with rasterio.open(scene) as src:
        ys = rng.integers(0, src.height - TILE + 1, 16)
        xs = rng.integers(0, src.width - TILE + 1, 16)
        raw = np.stack(
            [src.read(window=Window(int(x), int(y), TILE, TILE)) for y, x in zip(ys, xs, strict=True)]
        )
    p = enc.patch_size
    dark = raw[:, 0].reshape(16, TILE // p, p, TILE // p, p).mean((2, 4)) < -15  # [16, h, w] water blocks
    x = torch.from_numpy(np.stack([tt_prepare(r.copy()) for r in raw]))  # [16, 2, T, T]
    with torch.inference_mode():
        tokens = model.encoder.intermediate_layers(x, [depth - 1])[0]  # [16, d, h, w]
    a = tokens.permute(0, 2, 3, 1).reshape(-1, enc.embed_dim).double()  # [N, d]
    a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)  # [N, d + 1] with a bias column
    t = torch.from_numpy(np.where(dark.reshape(-1), 4.0, -4.0))[:, None]  # logit margin target
    coef = torch.linalg.solve(a.T @ a + 1e-3 * torch.eye(a.shape[1], dtype=a.dtype), a.T @ t)[:, 0]
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.weight[1, :, 0, 0] = coef[:-1].float()  # class 1 "water"; class 0 at 0
        model.head.classifier.bias[1] = coef[-1].float()
    meta = WeightsMeta(
        task="segmentation", encoder=enc.to_dict(), bands=["VV", "VH"],
        input_scaling={"mode": "db", "stretch": "fixed", "db_range": list(DB_RANGE)},
        normalization={"mean": list(MEAN), "std": list(STD)}, class_names=["other", "dark"],
        tile={"size": TILE, "overlap": OVERLAP},
    )  # fmt: skip
    save_model(path, model, meta, overwrite=True)
    return path


#: Runs a command and writes its wall time and peak RSS to argv[1]. A small process of its own:
#: Linux carries the RSS peak of the process that forks into the child's ru_maxrss, so the
#: children are not forked from this (large) one.
LAUNCHER = (
    "import json, os, subprocess, sys, time; t = time.perf_counter(); p = subprocess.Popen(sys.argv[2:]); "
    "_, s, u = os.wait4(p.pid, 0); open(sys.argv[1], 'w').write(json.dumps({'rc': "
    "os.waitstatus_to_exitcode(s), 'wall': time.perf_counter() - t, 'rss_kb': u.ru_maxrss, "
    "'cpu': u.ru_utime + u.ru_stime}))"
)


def run_child(cmd: list[str]) -> tuple[float, float, str]:
    """Run `cmd` in its own process; (wall seconds, its peak RSS in MB, its CPU seconds (user +
    system, all its threads), its stdout). A failure
    becomes a refusal with the last line of its stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        stat, out, err = (Path(tmp) / n for n in ("stat.json", "out.txt", "err.txt"))
        with out.open("w") as fo, err.open("w") as fe:
            subprocess.run(
                [sys.executable, "-S", "-c", LAUNCHER, str(stat), *cmd], stdout=fo, stderr=fe, cwd=ROOT
            )
        res = json.loads(stat.read_text()) if stat.exists() else {"rc": -1}
        text, errors = out.read_text(), err.read_text().strip()
    if res["rc"]:
        last = errors.splitlines()[-1] if errors else f"exit {res['rc']}"
        raise Refusal(f"{' '.join(Path(c).name for c in cmd[:4])}... failed: {last}")
    return res["wall"], res["rss_kb"] / 1024, res["cpu"], text


def run_engine(engine: str, scene: Path, out: Path, files: dict, tt_python: Path | None) -> dict:
    """One timed run of `engine` on `scene` in its own process."""
    if engine == "terratorch":
        cmd = [str(tt_python), __file__, "--child", "--scene", str(scene), "--weights", str(files["torch"])]
        wall, rss, cpu, text = run_child([*cmd, "--out", str(out)])
        summary = json.loads(text.strip().splitlines()[-1])
    else:
        cmd = [
            sys.executable,
            "-m",
            "sarmae_cli",
            "segment",
            str(scene),
            "-w",
            str(files[engine]),
            "-o",
            str(out),
        ]
        cmd += ["--tile", str(TILE), "--overlap", str(OVERLAP), "--batch-size", str(BATCH)]
        cmd += ["--input-scale", "db", "--gsd", "native", "--overwrite", "--json", "-q"]
        wall, rss, cpu, text = run_child(cmd)
        summary = json.loads(text)["results"][0]
    return {
        "engine": engine,
        "wall_s": wall,
        "work_s": summary["seconds"],
        "tiles": summary["tiles"],
        "rss_mb": rss,
        "cpu_s": cpu,
    }


def read_classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)  # [H, W] uint8


def disagreement(size: int, engine: str, ref: str, a: dict, tolerance: float) -> str:
    """The refusal of a map that differs from the reference's beyond the tolerance."""
    return (
        f"at {size}^2 the {engine} class map equals {ref}'s on only {100 * a['agree']:.3f} % of pixels "
        f"(< {100 * tolerance:g} %; {a['differ_in_overlaps']} of {a['differ']} differing pixels in tile "
        "overlaps): the engines do not compute the same map"
    )


def load_avg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def compare(args: argparse.Namespace) -> list[dict]:
    """Every size, every repeat, every engine in rotating order; returns one row per size and
    engine (medians) and checks the maps after each size's first repeat."""
    from bench_infer import generate

    from sarmae_cli.export.onnx_export import export_onnx

    engines = list(dict.fromkeys(args.engines))
    tt_python = check_venv(Path(args.venv)) if "terratorch" in engines else None
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scenes = {s: work / f"scene_{s}.tif" for s in args.sizes}
    for s, path in scenes.items():
        generate(path, s)
    probe = work / f"scene_{args.probe_size}.tif"  # the head is fitted on it, whatever the sizes
    generate(probe, args.probe_size)
    files = {"torch": make_weights(work / f"linear_d{args.depth}.safetensors", probe, args.depth)}
    for e in ("onnx", "onnx-int8"):
        if e in engines:
            files[e] = Path(export_onnx(
                files["torch"], work / f"linear_d{args.depth}_{e}.onnx", int8=e == "onnx-int8", overwrite=True
            ).output)  # fmt: skip
    ref = "terratorch" if "terratorch" in engines else engines[0]
    rows = []
    for size in args.sizes:
        runs: dict[str, list[dict]] = {e: [] for e in engines}
        agree: dict[str, dict] = {}
        for r in range(args.repeats):
            order = engines[r % len(engines) :] + engines[: r % len(engines)]
            for e in order:
                out = work / f"classes_{size}_{e}.tif"
                res = run_engine(e, scenes[size], out, files, tt_python)
                res["load"] = load_avg()
                runs[e].append(res)
                print(json.dumps({"size": size, "repeat": r, **res}), file=sys.stderr, flush=True)
            if r == 0:
                base = read_classes(work / f"classes_{size}_{ref}.tif")
                for e in engines:
                    if e != ref:
                        agree[e] = agreement(base, read_classes(work / f"classes_{size}_{e}.tif"))
                        if agree[e]["agree"] < args.tolerance:
                            raise Refusal(disagreement(size, e, ref, agree[e], args.tolerance))
                agree[ref] = {"agree": 1.0, "differ": 0, "differ_in_overlaps": 0}
                agree["_water"] = float((base == 1).mean())
        med = {
            e: {k: statistics.median(x[k] for x in runs[e]) for k in ("wall_s", "work_s", "rss_mb", "cpu_s")}
            for e in engines
        }
        for e in engines:
            tiles = runs[e][0]["tiles"]
            rows.append({
                "size": size, "engine": e, "tiles": tiles, **{k: round(v, 2) for k, v in med[e].items()},
                "tiles_per_s": round(tiles / med[e]["wall_s"], 2),
                "speed_vs_ref": round(med[ref]["wall_s"] / med[e]["wall_s"], 2),
                "cpu_vs_ref": round(med[ref]["cpu_s"] / med[e]["cpu_s"], 2),
                "rss_vs_ref": round(med[e]["rss_mb"] / med[ref]["rss_mb"], 3),
                "agree_pct": round(100 * agree[e]["agree"], 3), "differ": agree[e]["differ"],
                "differ_in_overlaps": agree[e]["differ_in_overlaps"],
                "dark_fraction": round(agree["_water"], 3),
                "runs": runs[e],
            })  # fmt: skip
    return rows


def table(rows: list[dict], ref: str) -> str:
    lines = [
        f"| size | engine | tiles | end-to-end s | work s | CPU s | tiles/s | peak RSS MB | "
        f"tiles/s vs {ref} | tiles per CPU s vs {ref} | RSS vs {ref} | "
        f"map = {ref}'s (differing px, in overlaps) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}² | {r['engine']} | {r['tiles']} | {r['wall_s']:.1f} | {r['work_s']:.1f} | "
            f"{r['cpu_s']:.0f} | {r['tiles_per_s']:.1f} | {r['rss_mb']:.0f} | {r['speed_vs_ref']:.2f} | "
            f"{r['cpu_vs_ref']:.2f} | {r['rss_vs_ref']:.3f} | "
            f"{r['agree_pct']:.3f} % ({r['differ']}, {r['differ_in_overlaps']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 12288], help="scene sides (px)")
    p.add_argument("--repeats", type=int, default=3, help="runs of every engine per size (median)")
    p.add_argument("--engines", nargs="+", choices=ENGINES, default=["terratorch", "torch", "onnx"])
    p.add_argument("--venv", default=DEFAULT_VENV, help="the TerraTorch venv (default: %(default)s)")
    p.add_argument("--depth", type=int, default=12, help="ViT blocks (12: ViT-Tiny)")
    p.add_argument("--probe-size", type=int, default=4096, help="side of the scene the head is fitted on")
    p.add_argument("--tolerance", type=float, default=0.99, help="least share of equal map pixels")
    p.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "sarmae_tt"))
    p.add_argument("--json", help="also write the rows (with every run) to this file")
    p.add_argument(
        "--dry-run", action="store_true", help="a 512² scene, 2 blocks, 1 repeat: checks the wiring"
    )
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # internal: the TerraTorch run
    p.add_argument("--scene", help=argparse.SUPPRESS)
    p.add_argument("--weights", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(tt_child(args)))
        return
    if args.dry_run:
        args.sizes, args.repeats, args.depth, args.probe_size = [512], 1, 2, 2048
    sys.path.insert(0, str(HERE))  # bench_infer
    ref = "terratorch" if "terratorch" in args.engines else args.engines[0]
    try:
        before = load_avg()
        t0 = time.perf_counter()
        rows = compare(args)
    except Refusal as e:
        print(f"Error: {e}", file=sys.stderr)
        sys.exit(e.code)
    cmd = "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    print(f"command: {cmd}")
    dark = ", ".join(str(r["dark_fraction"]) for r in rows if r["engine"] == ref)
    print(
        f"machine: {os.cpu_count()} CPUs; load average (1, 5, 15 min) before {before}, after {load_avg()}; "
        f"{time.perf_counter() - t0:.0f} s; medians of {args.repeats} run(s); "
        f"dark-class share of {ref}'s map: {dark}"
    )
    print(table(rows, ref))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
