"""The exit-code rule (docs/inference.md, README), over every command (issue 31, items 6-7):
2 for anything the user can fix on the command line (a missing or unreadable path named on it,
a bad option value or combination, an output name with the wrong extension, an output that
exists or is an input, an empty input folder, weights of the wrong task, a band that is not
there), 1 for a failure during the work (a damaged file, an unsafe pickle); every refusal is one
line on stderr starting with "Error:", no traceback, and no file written. Command-line checks
run before torch is imported, so a refusal is immediate."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import typer
from rasterio.transform import from_origin

from sarmae_cli.cli import app
from sarmae_cli.outputs import EXTENSIONS

ROOT = Path(__file__).resolve().parents[2]
TIF = "needs a .tif or .tiff name"

#: (command line, exit code, a fragment of the one error line). Names in braces are files the
#: `files` fixture makes: {scene} a 1-band GeoTIFF, {chips} a folder with one PNG chip, {empty}
#: an empty folder, {afile} a plain file, {existing} a file named like a GeoTIFF output, {w} a
#: file named like weights (never read: every row that names it is refused before), {junk} a
#: .safetensors of zeros, {corrupt} a text file named .tif, {evil} a pickle not from torch.save,
#: {segmenter} the shipped water weights, {rgb} a colour PNG, {pvv} {pvh} VV and VH files of one
#: scene on different grids, {qvv} {qvv2} two VV files of one scene, {detector} the shipped
#: ship detector.
CASES = [
    # segment
    ("segment --task water missing.tif -o o.tif", 2, "input not found: missing.tif"),
    ("segment --task water 'no*.tif' -o o.tif", 2, "no file matches 'no*.tif'"),
    ("segment --task water {empty} -o o.tif", 2, "holds no scenes"),
    ("segment --task water {scene} -o o.xyz", 2, f"-o o.xyz: a class-map GeoTIFF {TIF}"),
    ("segment --task water {scene} -o '{{stem}}'", 2, f": a class-map GeoTIFF {TIF}"),
    ("segment --task water {scene} -o o.tif --preview p.xyz", 2,
     "--preview p.xyz: a PNG quicklook needs a .png name"),
    ("segment --task water {scene} -o o.tif --probabilities p.png", 2,
     f"--probabilities p.png: a probabilities GeoTIFF {TIF}"),
    ("segment --task water {scene} -o o.tif --vector v.shp", 2,
     "--vector v.shp: a GeoPackage or GeoJSON of class polygons needs a .gpkg, .geojson or .json name"),
    ("segment -w nope.safetensors {scene} -o o.tif", 2, "weights file not found: nope.safetensors"),
    ("segment --task nope {scene} -o o.tif", 2, "unknown --task 'nope'"),
    ("segment --task water {scene}", 2, "give the output with -o FILE"),
    ("segment --task water {scene} --output-dir {afile}", 2, "--output-dir {afile} is a file; give a folder"),
    ("segment --task water {scene} --output-dir nodir", 2, "--output-dir nodir does not exist"),
    ("segment --task water {scene} -o {scene}", 2, "is the input scene"),
    ("segment --task water {scene} -o {existing}", 2, "output {existing} exists; pass --overwrite"),
    ("segment --task water {scene} -o o.tif --co COMPRESS", 2, "--co 'COMPRESS' is not NAME=VALUE"),
    ("segment --task water {scene} -o o.tif --tile 0", 2, "Invalid value for '--tile'"),
    ("segment --task water {scene} -o o.tif --bands 5", 2, "band 5 does not exist"),
    ("segment --task water {corrupt} -o o.tif", 1, "is not a readable raster"),
    ("segment --task water {rgb} -o o.tif", 2,
     "3 bands without polarisation names (band 1, band 2, band 3) for weights that take co-pol"),
    ("segment --task water {pvv} {pvh} -o o.tif", 2, "have different sizes (64 x 64 and 32 x 32 pixels)"),
    ("segment --task water {qvv} {qvv2} -o o.tif", 2, "are both VV files of one scene"),
    ("segment --task water {scene} -o o.tif --gsd 0.4", 2, "a ratio beyond 20x; give --gsd native"),
    ("segment --task water {scene} -o o.tif --gsd ten", 2, "--gsd 'ten': give auto, native or a pixel size"),
    # detect
    ("detect missing.tif -o d.gpkg", 2, "input not found: missing.tif"),
    ("detect {scene}", 2, "give the output with -o FILE"),
    ("detect {scene} -o d.xyz", 2,
     "-o d.xyz: a GeoPackage or GeoJSON of detections needs a .gpkg, .geojson or .json name"),
    ("detect {scene} -o d.gpkg --points p.txt", 2,
     "--points p.txt: a CSV of detection points needs a .csv name"),
    ("detect {scene} -o d.gpkg --preview p.jpg", 2, "--preview p.jpg: a PNG quicklook needs a .png name"),
    ("detect {scene} -o d.gpkg --min-score 2", 2, "Invalid value for '--min-score'"),
    ("detect {scene} -o d.gpkg --max-detections 0", 2, "Invalid value for '--max-detections'"),
    ("detect -w nope.onnx {scene} -o d.gpkg", 2, "weights file not found: nope.onnx"),
    ("detect --task water {scene} -o d.gpkg", 2,
     "--task water is the shipped segmentation model, not one for sarmae detect"),
    ("detect -w {segmenter} {scene} -o d.gpkg", 2,
     "holds segmentation weights but `sarmae detect` needs detection weights"),
    ("detect -w {segmenter} {scene} -o d.gpkg --gsd x", 2, "--gsd"),
    # embed
    ("embed missing.tif -o e.parquet", 2, "input not found: missing.tif"),
    ("embed {scene} -o e.xyz", 2, "-o e.xyz: a GeoParquet of tile embeddings needs a .parquet name"),
    ("embed {scene} -o e.parquet --dense d.xyz", 2, f"--dense d.xyz: a GeoTIFF of patch features {TIF}"),
    ("embed {chips} -o e.csv", 2, "-o e.csv: a GeoParquet of chip embeddings needs a .parquet name"),
    ("embed {chips} -o e.parquet --dense d.tif", 2, "a folder of chips gives one GeoParquet"),
    ("embed -w nope.onnx {scene} -o e.parquet", 2, "weights file not found: nope.onnx"),
    ("embed {scene} -o e.parquet --gsd 0", 2, "--gsd '0': give auto, native or a pixel size"),
    ("embed {rgb} -o e.parquet", 2, "3 bands without polarisation names"),
    # classify
    ("classify missing.png", 2, "input not found: missing.png"),
    ("classify {empty}", 2, "holds no image files"),
    ("classify {chips} -o c.xyz", 2, "-o c.xyz: classify's output needs a .csv, .jsonl, .tif or .tiff name"),
    ("classify {chips} -o c.json", 2, "needs a .csv, .jsonl, .tif or .tiff name"),
    ("classify {chips} --format csv -o c.jsonl", 2, "-o c.jsonl: --format csv output needs a .csv name"),
    ("classify {chips} --format xml", 2, "unknown --format 'xml'"),
    ("classify {chips} --json", 2, "--json needs -o FILE"),
    ("classify {scene} -o c.tif --format csv", 2, "--format is for the classes of chips"),
    ("classify -w nope.safetensors {chips}", 2, "weights file not found: nope.safetensors"),
    ("classify -w {segmenter} {chips}", 2, "holds segmentation weights but `sarmae classify` needs"),
    ("classify {scene} -o c.tif --gsd -1", 2, "--gsd '-1': give auto, native or a pixel size"),
    ("classify {rgb}", 2, "a colour picture, not a SAR product"),
    # evaluate
    ("evaluate missing -w {w}", 2, "dataset not found: missing"),
    ("evaluate {empty} -w {w}", 2, "no images (PNG, JPEG, TIFF) found in {empty}"),
    ("evaluate {chips} -w nope.safetensors", 2, "weights file not found: nope.safetensors"),
    ("evaluate {chips} -w {w} -o m.xyz", 2,
     "-o m.xyz: a metrics JSON (the plot goes beside it) needs a .json name"),
    ("evaluate {chips} -w {w} --mask-values 0,x", 2, "--mask-values must be comma-separated integers"),
    ("evaluate {chips} -w {detector}", 1, "holds no detection labels"),
    ("evaluate {chips} -w {detector} --tta 2", 2, "--tta applies to classification weights"),
    # finetune
    ("finetune missing --task classification -o f.safetensors", 2, "dataset not found: missing"),
    ("finetune {empty} --task classification -o f.safetensors", 2,
     "no images (PNG, JPEG, TIFF) found in {empty}"),
    ("finetune {chips} --task classification -o f.xyz", 2,
     "-o f.xyz: the fine-tuned weights file needs a .safetensors name"),
    ("finetune {chips} --task classification --val missing -o f.safetensors", 2,
     "validation set not found: missing"),
    ("finetune {chips} --task classification --config missing.yaml -o f.safetensors", 2,
     "config file not found: missing.yaml"),
    ("finetune {chips} --task classification --seeds x -o f.safetensors", 2,
     "--seeds must be comma-separated integers"),
    ("finetune {chips} -o f.safetensors", 2, "--task is required"),
    ("finetune {chips} --task classification -o {w}", 2, "exists; pass --overwrite"),
    ("finetune {chips} --task detection -o f.safetensors", 1, "holds no detection labels: give a COCO"),
    ("finetune {chips} --task detection --class-names , -o f.safetensors", 2,
     "--class-names must be distinct comma-separated names"),
    ("finetune {chips} --task detection --set detection.channels=48 -o f.safetensors", 2,
     "detection.channels must be a multiple of 32"),
    ("finetune {chips} --task detection --set detection.zoom=0 -o f.safetensors", 2,
     "detection.zoom (model pixels per image pixel) must be in [0.25, 8], got 0"),
    ("finetune {chips} --task detection --set data.group_by=( -o f.safetensors", 2,
     "data.group_by '(' is not a regular expression"),
    ("finetune {chips} --task detection --chip-size 100 -o f.safetensors", 2,
     "detection crops must be a multiple of 16 pixels"),
    # pretrain
    ("pretrain missing -o run", 2, "source not found: missing"),
    ("pretrain {empty} -o run", 2, "no images (PNG, JPEG, TIFF or ZIPs of them) found in {empty}"),
    ("pretrain {chips} -o {afile}", 2, "run folder {afile} is a file; give a folder"),
    ("pretrain {chips} -o run --resume", 2, "cannot resume: no checkpoint.pt in run"),
    ("pretrain {chips} -o run --paired missing.csv", 2, "paired manifest not found: missing.csv"),
    ("pretrain {chips} -o run --init nope.safetensors", 2, "--init weights file not found: nope.safetensors"),
    # export
    ("export nope.safetensors -o x.onnx", 2, "weights file not found: nope.safetensors"),
    ("export {w} -o x.xyz", 2, "-o x.xyz: an ONNX model needs a .onnx name"),
    ("export {w} -o x.onnx --fp16 --int8", 2, "choose one of --fp16 and --int8"),
    ("export {w} -o x.onnx --holdout missing", 2, "hold-out folder not found: missing"),
    ("export {w} -o {afile}", 2, "needs a .onnx name"),
    # demo
    ("demo {afile}", 2, "{afile} is a file; give a folder for the demo's outputs"),
    ("demo d --size 99999", 2, "Invalid value for '--size'"),
    # weights
    ("weights list --bogus", 2, "No such option: --bogus"),
    ("weights info nope.safetensors", 2, "weights file not found: nope.safetensors"),
    ("weights info {junk}", 1, "is not a readable safetensors file"),
    ("weights import nope.pth -o i.safetensors", 2, "checkpoint not found: nope.pth"),
    ("weights import {evil} -o i.xyz", 2, "-o i.xyz: the imported weights file needs a .safetensors name"),
    ("weights import {evil} -o i.safetensors", 1, "is not a PyTorch checkpoint sarmae can read safely"),
    ("weights convert nope.safetensors -o c.safetensors", 2, "weights file not found: nope.safetensors"),
    ("weights convert {w} -o c.xyz", 2, "-o c.xyz: the converted weights file needs a .safetensors name"),
    ("weights convert {w} -o c.safetensors --min-score 2", 2, "Invalid value for '--min-score'"),
    ("weights convert {w} -o c.safetensors --min-score -0.1", 2, "Invalid value for '--min-score'"),
    ("weights convert {detector} -o c.safetensors --min-score 1", 2, "--min-score 1 must be in [0, 1)"),
    ("weights convert {segmenter} -o c.safetensors --min-score 0.3", 2,
     "is the default score cut-off of detectors;"),
    ("weights snapshot missing -o s.safetensors", 2, "run folder not found: missing"),
    ("weights snapshot {empty} -o s.xyz", 2, "-o s.xyz: the weights file needs a .safetensors name"),
]  # fmt: skip


def _leaf_commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield " ".join((*prefix, name))


def _command(line: str) -> str:
    words = line.split()
    return " ".join(words[:2]) if words[0] == "weights" else words[0]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """The inputs of `CASES` in a fresh working folder (relative outputs land there too)."""
    monkeypatch.chdir(tmp_path)
    f = {name: tmp_path / name for name in ("scene.tif", "chips", "empty", "afile", "w.safetensors")}
    with rasterio.open(
        f["scene.tif"], "w", driver="GTiff", width=64, height=64, count=1, dtype="float32",
        crs="EPSG:32631", transform=from_origin(500_000, 5_000_000, 10, 10),
    ) as dst:  # fmt: skip
        dst.write(np.random.default_rng(0).uniform(-25, 0, (1, 64, 64)).astype("float32"))
    for d in ("chips", "empty"):
        f[d].mkdir()
    (f["chips"] / "c.png").write_bytes(b"")
    f["afile"].write_text("x")
    (tmp_path / "exists.tif").write_text("keep me")
    f["w.safetensors"].write_bytes(b"")
    (tmp_path / "junk.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / "corrupt.tif").write_text("not a raster")
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Path))  # a plain pickle, not torch.save
    colour = np.random.default_rng(0).integers(0, 255, (3, 16, 16), dtype=np.uint8)
    with rasterio.open(
        tmp_path / "rgb.png", "w", driver="PNG", width=16, height=16, count=3, dtype="uint8"
    ) as dst:
        dst.write(colour)  # a colour picture (three different bands)
    for name, size in (("p_VV.tif", 64), ("p_VH.tif", 32), ("q_VV.tif", 64), ("q-VV.tif", 64)):
        with rasterio.open(
            tmp_path / name, "w", driver="GTiff", width=size, height=size, count=1, dtype="float32",
            crs="EPSG:32631", transform=from_origin(500_000, 5_000_000, 10, 10),
        ) as dst:  # fmt: skip
            dst.write(np.full((1, size, size), -12.0, np.float32))
    return {
        "scene": f["scene.tif"], "chips": f["chips"], "empty": f["empty"], "afile": f["afile"],
        "existing": tmp_path / "exists.tif", "w": f["w.safetensors"], "junk": tmp_path / "junk.safetensors",
        "corrupt": tmp_path / "corrupt.tif", "evil": tmp_path / "evil.pth",
        "segmenter": ROOT / "weights" / "sarmae_water.safetensors", "rgb": tmp_path / "rgb.png",
        "detector": ROOT / "weights" / "sarmae_ships.safetensors",
        "pvv": tmp_path / "p_VV.tif", "pvh": tmp_path / "p_VH.tif", "qvv": tmp_path / "q_VV.tif",
        "qvv2": tmp_path / "q-VV.tif",
    }  # fmt: skip


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_command_has_bad_invocations():
    """A new command joins the table (and so the rule) before it is merged."""
    assert {_command(line) for line, _, _ in CASES} == set(_leaf_commands())


def test_table_covers_every_output_kind():
    named = " ".join(f"{line} {message}" for line, _, message in CASES)
    for kind, (_, extensions) in EXTENSIONS.items():
        assert any(ext in named for ext in extensions), kind


@pytest.mark.parametrize(("line", "code", "message"), CASES, ids=[c[0] for c in CASES])
def test_exit_code_and_one_line(invoke, files, tmp_path, line, code, message):
    args = [a.strip("'").format(**files) for a in line.split()]
    before = _listing(tmp_path)
    r = invoke(*args)
    assert r.exit_code == code, (r.exit_code, r.stderr)
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert message.format(**files) in r.stderr, r.stderr
    assert _listing(tmp_path) == before, "a refused command wrote or changed a file"


#: Refusals that must come before torch (or rasterio, timm, onnx) is imported.
LIGHT_REFUSALS = [
    ["segment", "--task", "water", "missing.tif", "-o", "o.tif"],
    ["segment", "--task", "water", "SCENE", "-o", "o.xyz"],
    ["segment", "-w", "nope.safetensors", "SCENE", "-o", "o.tif"],
    ["segment", "--task", "water", "SCENE", "-o", "o.tif", "--preview", "p.xyz"],
    ["detect", "SCENE", "-o", "d.xyz"],
    ["detect", "-w", "nope.safetensors", "SCENE", "-o", "d.gpkg"],
    ["embed", "SCENE", "-o", "e.xyz"],
    ["classify", "SCENE", "-o", "c.xyz"],
    ["evaluate", "missing", "-w", "w.safetensors"],
    ["finetune", "missing", "--task", "classification", "-o", "f.safetensors"],
    ["pretrain", "missing", "-o", "run"],
    ["export", "nope.safetensors", "-o", "x.onnx"],
    ["weights", "import", "nope.pth", "-o", "i.safetensors"],
    ["weights", "convert", "nope.safetensors", "-o", "c.xyz"],
    ["weights", "info", "nope.safetensors"],
]


def test_refusals_import_no_torch(tmp_path):
    """Each refusal runs in a fresh interpreter; after it, torch and the other heavy libraries
    must still be unloaded (a refusal takes a fraction of a second, not the 4-10 s of loading
    them)."""
    scene = tmp_path / "SCENE"
    scene.write_bytes(b"")  # exists: the refusal is about the output
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from sarmae_cli.cli import app\n"
        "args = json.loads(sys.argv[1])\n"
        "r = CliRunner().invoke(app, args)\n"
        "heavy = [m for m in ('torch', 'timm', 'rasterio', 'onnx') if m in sys.modules]\n"
        "print(json.dumps([r.exit_code, heavy, r.stderr]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for args in LIGHT_REFUSALS:
        run = subprocess.run(
            [sys.executable, "-c", code, json.dumps(args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            check=True,
        )
        exit_code, heavy, stderr = json.loads(run.stdout.strip().splitlines()[-1])
        assert exit_code == 2 and stderr.startswith("Error: "), (args, stderr)
        assert heavy == [], f"`sarmae {' '.join(args)}` imported {heavy} before refusing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SCENE"]
