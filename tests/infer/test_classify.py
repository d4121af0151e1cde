"""`sarmae classify`: top-k CSV / JSONL of chips and per-tile class maps of scenes."""

import csv
import io
import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from rio_cogeo.cogeo import cog_validate

from tests.infer.conftest import db_scene, write_scene


def _chips(tmp_path, n=3):
    d = tmp_path / "chips"
    d.mkdir()
    for i in range(n):
        write_scene(d / f"c{i}.tif", db_scene(40 + 8 * i, 48, seed=i))
    return d


def test_csv_to_stdout(invoke, weights_dir, tmp_path):
    d = _chips(tmp_path)
    r = invoke("classify", d, "-w", weights_dir / "cls.safetensors", "--top-k", "2", "-q")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["path", "class", "probability", "class_2", "probability_2"]
    assert [row[0] for row in rows[1:]] == [str(d / f"c{i}.tif") for i in range(3)]
    for row in rows[1:]:
        p1, p2 = float(row[2]), float(row[4])
        assert row[1] in "abcd" and row[3] in "abcd" and 1 >= p1 >= p2 >= 0


def test_jsonl_file_matches_csv(invoke, weights_dir, tmp_path):
    d = _chips(tmp_path)
    w = weights_dir / "cls.safetensors"
    out = tmp_path / "r.jsonl"
    assert invoke("classify", d, "-w", w, "-o", out, "-q").exit_code == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 3 and len(lines[0]["top"]) == 3
    assert abs(sum(t["probability"] for t in lines[0]["top"]) - 1) < 0.02  # 3 of 4 classes
    rows = list(csv.reader(io.StringIO(invoke("classify", d, "-w", w, "-q").stdout)))[1:]
    assert [row[1] for row in rows] == [x["top"][0]["class"] for x in lines]


def test_scene_class_map(invoke, weights_dir, scene, tmp_path):
    out = tmp_path / "c.tif"
    r = invoke("classify", scene, "-o", out, "-w", weights_dir / "cls.safetensors", "--tile", "32", "-q")
    assert r.exit_code == 0, r.stderr
    assert cog_validate(out)[0]
    with rasterio.open(scene) as s, rasterio.open(out) as o:
        assert o.shape == (3, 5) and o.crs == s.crs  # ceil(90/32), ceil(130/32)
        assert o.transform == s.transform @ Affine.scale(32)
        assert o.nodata == 255 and set(np.unique(o.read(1))) <= {0, 1, 2, 3}
        assert o.tags()["CLASS_3"] == "d"


def test_real_mstar_jpegs_and_bad_chip(invoke, weights_dir, data_dir, tmp_path):
    chips = sorted((data_dir / "mstar10/train/BMP2").glob("*.jpeg"))[:2]
    bad = tmp_path / "bad.png"
    bad.write_text("no image")
    args = ["classify", *chips, bad, "-w", weights_dir / "cls1.safetensors", "-q"]
    r = invoke(*args)
    assert r.exit_code == 1 and len(r.stdout.splitlines()) == 3  # header + 2 chips still written
    assert "bad.png" in r.stderr and r.stderr.splitlines()[-1].startswith("Error: 1 of 3 chip(s) failed")


def test_classify_errors(invoke, weights_dir, tmp_path):
    d = _chips(tmp_path, 1)
    r = invoke("classify", d, "-w", weights_dir / "seg.safetensors")
    assert (
        r.exit_code == 2  # the command line names weights of the wrong task
        and "holds segmentation weights but `sarmae classify` needs classification" in r.stderr
    )
    r = invoke("classify", d, "-w", weights_dir / "cls.safetensors", "--format", "xml")
    assert r.exit_code == 2 and "unknown --format 'xml'" in r.stderr
    out = tmp_path / "o.csv"
    r = invoke("classify", d, tmp_path / "typo.png", "-o", out, "-w", weights_dir / "cls.safetensors")
    assert r.exit_code == 2 and r.stderr == f"Error: input not found: {tmp_path / 'typo.png'}\n"
    assert not out.exists()


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_every_chip_failing_is_one_error_line(invoke, weights_dir, command, tmp_path):
    """When no chip can be read there is nothing to warn about chip by chip: one error line
    (the chip's own error for one chip), exit 1, and no output file."""
    folder = tmp_path / "chips"
    folder.mkdir()
    for name in ("a.png", "b.tif"):
        (folder / name).write_text("no image")
    weights = weights_dir / ("cls1.safetensors" if command == "classify" else "enc1.safetensors")
    out = tmp_path / ("out.csv" if command == "classify" else "out.parquet")
    r = invoke(command, folder, "-o", out, "-w", weights)
    verb = "classified" if command == "classify" else "embedded"
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"Error: no chip could be {verb}: all 2 failed; first: "), r.stderr
    assert "a.png is not a readable raster" in r.stderr and "wrote" not in r.stderr
    r = invoke(command, folder / "b.tif", "-o", out, "-w", weights)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: ") and "b.tif is not a readable raster" in r.stderr
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))
