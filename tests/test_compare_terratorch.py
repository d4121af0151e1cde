"""benchmarks/compare_terratorch.py: both engines see the same tiles, input and model, the
map comparison and the refusals; a tiny run of the sarmae engines (and of TerraTorch where its
venv exists)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sarmae_cli.infer.tiling import tile_origins

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "compare_terratorch.py"


def _load():
    spec = importlib.util.spec_from_file_location("compare_terratorch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ct = _load()


@pytest.mark.parametrize("n", [100, 224, 416, 512, 4096, 12288, 12289])
def test_tile_grid_is_the_engines_grid(n):
    """The tile starts the script counts (TerraTorch's grid with delta 0, no padding) are those
    of sarmae's engine."""
    assert ct.origins(n) == tile_origins(n, 224, 192, "edge")


def test_overlap_mask_marks_pixels_of_several_tiles():
    m = ct.overlap_mask(512, 416)  # rows: tiles at 0, 192, 288; columns: 0, 192
    assert m.shape == (512, 416)
    assert not m[:192, :192].any()  # one tile only
    assert m[192:224, :].all() and m[:, 192:224].all()
    assert m[288:416, 0].all() and not m[416:, 100].any()


def test_agreement_counts_differences_inside_and_outside_overlaps():
    a = np.zeros((512, 512), np.uint8)
    b = a.copy()
    b[200, 10] = 1  # inside the overlap of rows 192-224
    b[100, 100] = 1  # a pixel of one tile only
    r = ct.agreement(a, b)
    assert r["differ"] == 2 and r["differ_in_overlaps"] == 1
    assert r["agree"] == pytest.approx(1 - 2 / a.size)


def test_terratorch_input_is_sarmae_input(tmp_path):
    """The in-place scaling of the TerraTorch side equals the route sarmae reads a scene with."""
    from sarmae_cli.data.scaling import Scaling, prepare

    raw = np.random.default_rng(0).normal(-12, 8, (2, 32, 32)).astype(np.float32)
    raw[0, 0, 0] = np.nan
    scaling = Scaling(mode="db", stretch="fixed", db_range=list(ct.DB_RANGE))
    ranges = np.array([ct.DB_RANGE, ct.DB_RANGE], np.float32)
    want = prepare(raw, scaling, ranges, list(ct.MEAN), list(ct.STD))
    np.testing.assert_allclose(ct.tt_prepare(raw.copy()), want, atol=1e-6)


def test_terratorch_model_is_the_sarmae_model(tmp_path):
    """The timm + conv model the TerraTorch side builds from the weights file gives the logits of
    sarmae's own `Segmenter` (linear head) on the same input; the probe head separates the dark
    blocks of the generated scene."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_infer import generate

    from sarmae_cli.model.factory import load_model

    scene = tmp_path / "scene_2048.tif"
    generate(scene, 2048)
    weights = ct.make_weights(tmp_path / "w.safetensors", scene, depth=2)
    ours, meta = load_model(weights)
    assert meta.head["decoder"] == "linear" and meta.head["layers"] == [1]
    theirs = ct.tt_model(weights)
    x = torch.randn(3, 2, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene) as src:  # rows 1024-2047, columns 1536-2047 are dark
        raw = np.stack([src.read(window=Window(c, r, 224, 224)) for r, c in ((1200, 1700), (200, 200))])
    with torch.inference_mode():
        cls = ours(torch.from_numpy(np.stack([ct.tt_prepare(t.copy()) for t in raw]))).argmax(1)
    assert cls[0].float().mean() > 0.9 and cls[1].float().mean() < 0.1


def test_refuses_without_the_terratorch_venv(tmp_path):
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--dry-run",
        "--venv",
        str(tmp_path / "nope"),
        "--workdir",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no TerraTorch venv at")
    assert "pip install terratorch" in lines[0] and not res.stdout


def test_refuses_maps_that_disagree(tmp_path, monkeypatch):
    """A map that differs beyond the tolerance stops the comparison with one line."""
    monkeypatch.setattr(ct, "make_weights", lambda path, scene, depth: path)
    monkeypatch.setattr(ct, "check_venv", lambda venv: Path(sys.executable))

    def fake_run(engine, scene, out, files, tt_python):
        classes = np.zeros((512, 512), np.uint8)
        if engine == "torch":
            classes[:20] = 1  # 3.9 % of the pixels
        import rasterio

        with rasterio.open(out, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint8") as ds:
            ds.write(classes, 1)
        return {"engine": engine, "wall_s": 1.0, "work_s": 1.0, "tiles": 9, "rss_mb": 1.0, "cpu_s": 1.0}

    monkeypatch.setattr(ct, "run_engine", fake_run)
    args = ct.argparse.Namespace(
        sizes=[512], repeats=1, engines=["terratorch", "torch"], venv="x", depth=2, tolerance=0.99,
        probe_size=512, workdir=str(tmp_path),
    )  # fmt: skip
    sys.path.insert(0, str(ROOT / "benchmarks"))
    with pytest.raises(ct.Refusal, match=r"torch class map equals terratorch's on only 96\.094 %"):
        ct.compare(args)
    args.tolerance = 0.95
    rows = ct.compare(args)
    assert [r["agree_pct"] for r in rows] == [100.0, pytest.approx(96.094, abs=1e-3)]


def _dry_run(tmp_path, engines, venv=None):
    cmd = [sys.executable, str(SCRIPT), "--dry-run", "--workdir", str(tmp_path), "--engines", *engines]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [*cmd, *(["--venv", venv] if venv else [])], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_dry_run_of_the_sarmae_engines(tmp_path):
    """`sarmae segment` with the weights file and with its ONNX export, timed in their own
    processes, give the same class map; the table names every engine."""
    out = _dry_run(tmp_path, ["torch", "onnx"])
    assert "| 512² | torch | 9 |" in out and "| 512² | onnx | 9 |" in out
    assert "100.000 %" in out and "load average" in out


VENV = Path(os.environ.get("SARMAE_TT_VENV", "/work/runs/tt-venv"))


@pytest.mark.skipif(
    not (VENV / "bin" / "python").exists(), reason=f"no TerraTorch venv at {VENV} (see the script)"
)
def test_dry_run_against_terratorch(tmp_path):
    out = _dry_run(tmp_path, ["terratorch", "torch"], str(VENV))
    assert "| 512² | terratorch | 9 |" in out and "| 512² | torch | 9 |" in out
