"""The onnxruntime backend inside the scene engine: `segment`, `embed` and `classify` take
an exported .onnx model and give the PyTorch backend's results within tolerance."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from sarmae_cli.export.onnx_export import export_onnx
from tests.infer.conftest import db_scene, make_weights, write_scene


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort")
    seg = make_weights(d / "seg.safetensors", "segmentation", classes=["land", "water"])
    enc = make_weights(d / "enc.safetensors", "encoder")
    clf = make_weights(d / "clf.safetensors", "classification", classes=["a", "b", "c"])
    out = {"seg": seg, "enc": enc, "clf": clf}
    for k, w in list(out.items()):
        out[k + "_onnx"] = export_onnx(w, d / f"{k}.onnx").output
    out["scene"] = write_scene(d / "scene.tif", db_scene(70, 100))
    return out


def test_segment_onnx_matches_torch(models, tmp_path, invoke):
    for name in ("seg", "seg_onnx"):
        r = invoke(
            "segment",
            models["scene"],
            "-o",
            tmp_path / f"{name}.tif",
            "-w",
            models[name],
            "--probabilities",
            tmp_path / f"{name}_p.tif",
            "-q",
            "--device",
            "cpu",
            "--threads",
            "1",
        )
        assert r.exit_code == 0, r.stderr
    with rasterio.open(tmp_path / "seg_p.tif") as a, rasterio.open(tmp_path / "seg_onnx_p.tif") as b:
        pa, pb = a.read(), b.read()
        assert a.transform == b.transform and a.crs == b.crs
    assert np.abs(pa - pb).max() <= 1e-4
    with rasterio.open(tmp_path / "seg.tif") as a, rasterio.open(tmp_path / "seg_onnx.tif") as b:
        assert (a.read() == b.read()).mean() > 0.999


def test_embed_and_classify_onnx_match_torch(models, tmp_path, invoke):
    for name in ("enc", "enc_onnx"):
        r = invoke("embed", models["scene"], "-o", tmp_path / f"{name}.parquet", "-w", models[name], "-q")
        assert r.exit_code == 0, r.stderr
    a = np.stack(gpd.read_parquet(tmp_path / "enc.parquet")["embedding"].to_numpy())
    b = np.stack(gpd.read_parquet(tmp_path / "enc_onnx.parquet")["embedding"].to_numpy())
    assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    chips = tmp_path / "chips"
    chips.mkdir()
    for i in range(3):
        write_scene(chips / f"c{i}.tif", db_scene(32, 32, seed=i))
    rows = {}
    for name in ("clf", "clf_onnx"):
        r = invoke("classify", chips, "-w", models[name], "--format", "jsonl", "-q")
        assert r.exit_code == 0, r.stderr
        rows[name] = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows["clf"]) == 3
    for x, y in zip(rows["clf"], rows["clf_onnx"], strict=True):
        assert [t["class"] for t in x["top"]] == [t["class"] for t in y["top"]]
        for tx, ty in zip(x["top"], y["top"], strict=True):
            assert abs(tx["probability"] - ty["probability"]) <= 1e-4


def test_onnx_bad_inputs(models, tmp_path, invoke):
    r = invoke("segment", models["scene"], "-o", tmp_path / "x.tif", "-w", models["seg_onnx"], "--tile", "64")
    assert r.exit_code == 2 and "exported for 32-px tiles; use --tile 32" in r.stderr
    one_band = write_scene(tmp_path / "vv.tif", db_scene(40, 40)[:1])
    r = invoke("segment", one_band, "-o", tmp_path / "y.tif", "-w", models["seg_onnx"])
    assert r.exit_code == 2 and "the weights need co-pol and cross-pol bands; found VV (band 1)" in r.stderr
    r = invoke("embed", models["scene"], "-o", tmp_path / "z.parquet", "-w", models["seg_onnx"])
    assert r.exit_code != 0 and "no 'embedding' output" in r.stderr
    assert not any(
        p.suffix in (".tif", ".parquet") and p.name.startswith(("x", "y", "z")) for p in tmp_path.iterdir()
    )
