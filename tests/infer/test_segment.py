"""`sarmae segment` end to end on generated and real GeoTIFFs."""

import json
import os
import signal
import subprocess
import sys
import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from tests.infer.conftest import db_scene, write_scene


def _seg(invoke, weights_dir, *args):
    return invoke("segment", *args, "-w", weights_dir / "seg.safetensors", "-q")


def test_segment_outputs(invoke, weights_dir, tmp_path):
    data = db_scene(90, 130)
    data[:, :10, :20] = np.nan
    src = write_scene(tmp_path / "s.tif", data)
    out, probs, vec, png = (tmp_path / n for n in ("w.tif", "p.tif", "w.gpkg", "w.png"))
    r = _seg(
        invoke,
        weights_dir,
        src,
        "-o",
        out,
        "--probabilities",
        probs,
        "--vector",
        vec,
        "--preview",
        png,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["done"] == 1 and summary["results"][0]["tiles"] > 1
    assert cog_validate(out)[0] and cog_validate(probs)[0]
    with rasterio.open(src) as s, rasterio.open(out) as o, rasterio.open(probs) as p:
        assert o.crs == s.crs and o.transform == s.transform and o.shape == s.shape
        assert o.dtypes[0] == "uint8" and o.nodata == 255
        cls = o.read(1)
        assert (cls[:10, :20] == 255).all() and set(np.unique(cls[10:])) <= {0, 1}
        assert (o.read_masks(1)[:10, :20] == 0).all()
        assert o.colormap(1)[1][:3] != o.colormap(1)[0][:3]
        assert o.descriptions == ("class",) and o.tags()["CLASS_1"] == "water"
        pr = p.read()
        assert p.count == 2 and np.isnan(pr[:, :10, :20]).all()
        np.testing.assert_allclose(pr[:, 10:].sum(0), 1.0, atol=1e-5)
        np.testing.assert_array_equal(pr[:, 10:].argmax(0), cls[10:])
        assert p.descriptions == ("probability of not water", "probability of water")
    polys = gpd.read_file(vec)
    assert polys.crs == rasterio.crs.CRS.from_epsg(32631) and set(polys["class"]) <= {0, 1}
    with rasterio.open(png) as q:
        assert q.count == 3 and q.width == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tif", "s.tif", "w.gpkg", "w.png", "w.tif"]


def test_segment_large_scene_cog_has_overviews(invoke, weights_dir, tmp_path):
    src = write_scene(tmp_path / "s.tif", db_scene(600, 700))
    out = tmp_path / "w.tif"
    r = _seg(invoke, weights_dir, src, "-o", out, "--tile", "64", "--overlap", "16", "--batch-size", "16")
    assert r.exit_code == 0, r.stderr
    assert cog_validate(out)[0]
    with rasterio.open(out) as o:
        assert o.overviews(1) and o.compression is not None and o.block_shapes[0] == (512, 512)


def test_geojson_and_creation_options(invoke, weights_dir, scene, tmp_path):
    out, vec = tmp_path / "w.tif", tmp_path / "w.geojson"
    r = _seg(invoke, weights_dir, scene, "-o", out, "--vector", vec, "--co", "COMPRESS=LZW")
    assert r.exit_code == 0, r.stderr
    with rasterio.open(out) as o:
        assert o.compression.name == "lzw"
    assert gpd.read_file(vec).crs.to_epsg() == 32631


def test_byte_identical_reruns(invoke, weights_dir, scene, tmp_path):
    outs = []
    for i in range(2):
        out, probs = tmp_path / f"w{i}.tif", tmp_path / f"p{i}.tif"
        assert _seg(invoke, weights_dir, scene, "-o", out, "--probabilities", probs).exit_code == 0
        outs.append((out.read_bytes(), probs.read_bytes()))
    assert outs[0] == outs[1]


def test_no_crs_warns_and_writes_without_crs(invoke, weights_dir, tmp_path):
    src = write_scene(tmp_path / "plain.tif", db_scene(40, 50), crs=None)
    out = tmp_path / "w.tif"
    r = _seg(invoke, weights_dir, src, "-o", out)
    assert r.exit_code == 0
    assert "Warning: plain.tif has no CRS" in r.stderr
    with rasterio.open(out) as o:
        assert o.crs is None and o.shape == (40, 50)


def test_real_sen1floods11_chip(invoke, weights_dir, data_dir, tmp_path):
    src = data_dir / "sen1floods11/S1/Spain_7370579_S1Hand.tif"
    out = tmp_path / "w.tif"
    r = invoke(
        "segment", src, "-o", out, "-w", weights_dir / "seg.safetensors", "--json", "-q", "--tile", "128"
    )
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["input_scale"] == "db"
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert o.crs == s.crs and o.transform == s.transform
        invalid = ~np.isfinite(s.read()).all(0)
        cls = o.read(1)
    assert (cls[invalid] == 255).all() and (cls[~invalid] != 255).all()


def test_real_s1_clip_one_band_with_nodata(invoke, weights_dir, data_dir, tmp_path):
    src = next((data_dir / "s1_scenes").glob("*.tif"))
    out = tmp_path / "w.tif"
    r = invoke("segment", src, "-o", out, "-w", weights_dir / "seg1.safetensors", "-q")
    assert r.exit_code == 0, r.stderr
    with rasterio.open(src) as s, rasterio.open(out) as o:
        assert o.crs == s.crs and o.transform == s.transform
        assert ((o.read(1) == 255) == (s.read(1) == s.nodata)).all()


def test_many_inputs_summary_skip_and_failure(invoke, weights_dir, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write_scene(d / "a.tif", db_scene(40, 40))
    write_scene(d / "b.tif", db_scene(40, 40, seed=1))
    (d / "c.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.tif").write_bytes(b"old")
    r = invoke("segment", d, "--output-dir", out, "-w", weights_dir / "seg.safetensors", "--json", "-q")
    assert r.exit_code == 1
    s = json.loads(r.stdout)
    assert (s["done"], s["skipped"], s["failed"]) == (1, 1, 1)
    assert r.stderr.count("\n") == 1 and "1 of 3 input(s) failed" in r.stderr
    assert (
        (out / "a.tif").exists() and (out / "b.tif").read_bytes() == b"old" and not (out / "c.tif").exists()
    )
    r = invoke(
        "segment", d / "[ab].tif", "--output-dir", out, "-w", weights_dir / "seg.safetensors", "--overwrite"
    )
    assert r.exit_code == 0 and (out / "b.tif").read_bytes() != b"old"


def test_one_missing_input_of_several_stops_before_any_runs(invoke, weights_dir, tmp_path):
    """A typo in one of several inputs is a usage error found up front: exit 2, one line, and
    no output for the inputs that do exist."""
    write_scene(tmp_path / "a.tif", db_scene(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    missing = tmp_path / "typo.tif"
    weights = weights_dir / "seg.safetensors"
    r = invoke("segment", tmp_path / "a.tif", missing, "--output-dir", out, "-w", weights)
    assert r.exit_code == 2 and r.stderr == f"Error: input not found: {missing}\n", r.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_leaves_no_destination(weights_dir, tmp_path, sig):
    src = write_scene(tmp_path / "big.tif", db_scene(1500, 1500))
    out = tmp_path / "w.tif"
    cmd = [sys.executable, "-m", "sarmae_cli", "segment", str(src), "-o", str(out), "-q", "--tile", "32"]
    cmd += ["-w", str(weights_dir / "seg.safetensors"), "--overlap", "16", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # A job started in the background (`cmd &`, as CI may run us) inherits SIGINT as ignored,
    # and Python then installs no Ctrl-C handler: give the child the default, as a terminal does.
    reset = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sig == signal.SIGINT else None
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env, preexec_fn=reset)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".w.tif.") for p in tmp_path.iterdir()):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before it could be interrupted; make the scene larger"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert not out.exists()
    if sig == signal.SIGINT:  # a clean stop: exit 130, at most one line, temporary files removed
        assert proc.returncode == 130 and err.decode().count("\n") <= 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


@pytest.mark.parametrize(
    "make,args,message,code",
    [
        (lambda p: p.write_text("hello"), [], "is not a readable raster", 1),
        (lambda p: p.write_bytes(b""), [], "is not a readable raster", 1),
        (None, ["--tile", "8"], "--tile 8 is smaller than the model's patch size 16", 2),
        (
            None,
            ["--tile", "32", "--overlap", "32"],
            "--overlap 32 must be >= 0 and smaller than --tile 32",
            2,
        ),
        (None, ["--bands", "1"], "gives 1 band(s) but the weights expect 2 (VV, VH)", 2),
        (None, ["--bands", "VV,HH"], "no band described as 'HH'", 2),
        (None, ["--bands", "5"], "band 5 does not exist", 2),
        (None, ["--input-scale", "decibel"], "unknown --input-scale 'decibel'", 2),
        (None, ["--co", "COMPRESS"], "--co 'COMPRESS' is not NAME=VALUE", 2),
    ],
)
def test_bad_inputs_one_line(invoke, weights_dir, tmp_path, make, args, message, code):
    src = tmp_path / "in.tif"
    if make:
        make(src)
    else:
        write_scene(src, db_scene(40, 40))
    out = tmp_path / "w.tif"
    r = _seg(invoke, weights_dir, src, "-o", out, *args)
    assert r.exit_code == code, r.stderr
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1 and message in r.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["in.tif"]


def test_truncated_geotiff(invoke, weights_dir, tmp_path):
    full = write_scene(tmp_path / "full.tif", db_scene(300, 300))
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    r = _seg(invoke, weights_dir, cut, "-o", tmp_path / "w.tif")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ")
    assert "cut.tif" in r.stderr and not (tmp_path / "w.tif").exists()


def test_pixel_problems(invoke, weights_dir, tmp_path):
    nothing = write_scene(tmp_path / "empty.tif", np.full((2, 20, 20), -99, np.float32), nodata=-99)
    r = _seg(invoke, weights_dir, nothing, "-o", tmp_path / "a.tif")  # all nodata: a nodata map
    assert r.exit_code == 0 and "Warning: empty.tif has no valid pixels" in r.stderr, r.stderr
    with rasterio.open(tmp_path / "a.tif") as o:
        assert (o.read(1) == 255).all() and o.shape == (20, 20)
    nan_inf = db_scene(40, 40)
    nan_inf[:, :5] = np.inf
    nan_inf[:, 5:10] = np.nan
    src = write_scene(tmp_path / "naninf.tif", nan_inf)
    assert _seg(invoke, weights_dir, src, "-o", tmp_path / "b.tif").exit_code == 0
    with rasterio.open(tmp_path / "b.tif") as o:
        cls = o.read(1)
    assert (cls[:10] == 255).all() and (cls[10:] != 255).all()
    ints = write_scene(tmp_path / "int64.tif", np.ones((2, 20, 20), np.int64))
    r = _seg(invoke, weights_dir, ints, "-o", tmp_path / "c.tif")
    assert r.exit_code == 1 and "unsupported pixel type int64" in r.stderr


def test_output_problems(invoke, weights_dir, scene, tmp_path):
    r = _seg(invoke, weights_dir, scene, "-o", tmp_path / "missing" / "w.tif")
    assert r.exit_code == 2 and "does not exist; create it first" in r.stderr
    existing = tmp_path / "w.tif"
    existing.write_bytes(b"x")
    r = _seg(invoke, weights_dir, scene, "-o", existing)
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr and existing.read_bytes() == b"x"
    if os.geteuid() != 0:  # root ignores folder permissions
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        r = _seg(invoke, weights_dir, scene, "-o", ro / "w.tif")
        assert r.exit_code == 2 and "not writable" in r.stderr


def test_weights_problems(invoke, weights_dir, scene, tmp_path, monkeypatch):
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(tmp_path / "none"))
    r = invoke("segment", scene, "-o", tmp_path / "w.tif", "--task", "water")
    assert r.exit_code == 1 and r.stderr.count("\n") == 1
    assert "sarmae_water.safetensors" in r.stderr and "--weights" in r.stderr
    r = invoke("segment", scene, "-o", tmp_path / "w.tif", "-w", weights_dir / "cls.safetensors")
    assert (
        r.exit_code == 2  # the command line names weights of the wrong task
        and "holds classification weights but `sarmae segment` needs segmentation" in r.stderr
    )
    nope = tmp_path / "nope.safetensors"
    r = invoke("segment", scene, "-o", tmp_path / "w.tif", "-w", nope)
    assert r.exit_code == 2 and r.stderr == f"Error: weights file not found: {nope}\n"
    r = invoke("segment", scene, "-o", tmp_path / "w.tif")
    assert r.exit_code == 2 and "needs --task" in r.stderr
    assert not (tmp_path / "w.tif").exists()


def test_scene_smaller_than_one_tile(invoke, weights_dir, tmp_path):
    src = write_scene(tmp_path / "small.tif", db_scene(20, 27))
    out, probs = tmp_path / "w.tif", tmp_path / "p.tif"
    r = _seg(invoke, weights_dir, src, "-o", out, "--probabilities", probs, "--tile", "64")
    assert r.exit_code == 0, r.stderr
    with rasterio.open(out) as o, rasterio.open(probs) as p:
        assert o.shape == (20, 27) and (o.read(1) != 255).all()
        np.testing.assert_allclose(p.read().sum(0), 1.0, atol=1e-5)


def test_gdal_block_cache_of_a_run(monkeypatch):
    """During a run GDAL's block cache is `GDAL_CACHE_BYTES` as GDAL itself reports it (rasterio
    takes GDAL_CACHEMAX in bytes: a number meant as MB gave a cache of that many bytes), and
    GDAL's own setting again after the run; with $GDAL_CACHEMAX set, GDAL's own setting (which
    GDAL takes from that variable) is left alone."""
    from rasterio.env import get_gdal_config

    from sarmae_cli.infer.api import GDAL_CACHE_BYTES, gdal_env

    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    before = get_gdal_config("GDAL_CACHEMAX")
    with gdal_env():
        assert get_gdal_config("GDAL_CACHEMAX") == GDAL_CACHE_BYTES
    assert get_gdal_config("GDAL_CACHEMAX") == before
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    with gdal_env():
        assert get_gdal_config("GDAL_CACHEMAX") == before
