"""ONNX export of a detector: the dense head outputs in the graph, decoding outside it (shared
with PyTorch), box-level parity checked at export, and `sarmae detect -w X.onnx` on
onnxruntime giving the boxes PyTorch gives."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import onnx
import pytest
import torch

from sarmae_cli.export.box_parity import BOX_IOU, BOX_SCORE, box_parity, pair_up, point_parity
from sarmae_cli.export.onnx_export import OUTPUT_NAMES, ExportModule, export_onnx, sample_inputs
from sarmae_cli.model.factory import load_model
from tests.infer.conftest import db_scene, make_detector, write_scene


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return make_detector(tmp_path_factory.mktemp("det") / "det.safetensors", tile=64, overlap=32)


@pytest.fixture(scope="module")
def exported(detector, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx") / "det.onnx"
    report = export_onnx(detector, out)
    return out, report.to_dict()


def test_graph_holds_the_dense_head_outputs(exported):
    path, report = exported
    graph = onnx.load(str(path)).graph
    assert [o.name for o in graph.output] == OUTPUT_NAMES["detection"] == report["outputs"]
    assert report["task"] == "detection" and report["tile"] == 64
    n = (64 // 8) ** 2 + (64 // 16) ** 2 + (64 // 32) ** 2  # points of strides 8, 16, 32
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output]
    assert [d[1:] for d in dims] == [[n, 1], [n, 4], [n, 1]]


def test_export_checks_box_parity(exported):
    _, report = exported
    (points,) = [r for r in report["parity"] if r["output"] == "points"]
    (boxes,) = [r for r in report["parity"] if r["output"] == "boxes"]
    assert points["batch"] == 4 and points["points"] > 100  # an untrained detector scores ~0.07 everywhere
    assert boxes["boxes"] == 0  # ... so no decoded box reaches 0.3
    for row in (points, boxes):
        assert row["min_iou"] >= BOX_IOU and row["max_score_diff"] <= BOX_SCORE
    dense = [r for r in report["parity"] if r["output"] not in ("points", "boxes")]
    assert {r["output"] for r in dense} == set(OUTPUT_NAMES["detection"])


def test_box_parity_catches_moved_boxes(detector):
    model, meta = load_model(detector)
    x = sample_inputs(meta, 64, 2, seed=3)
    with torch.inference_mode():
        ref = [o.numpy() for o in ExportModule(model, "detection")(torch.from_numpy(x))]
    same = point_parity(ref, [o.copy() for o in ref], meta, 64)
    assert same["min_iou"] == 1.0 and same["max_score_diff"] == 0.0 and same["points"] > 100
    moved = [ref[0], ref[1] * 1.05, ref[2]]  # regression 5% off: boxes move by a fraction of a pixel
    assert point_parity(ref, moved, meta, 64)["min_iou"] < BOX_IOU
    rescored = [ref[0] + 0.05, ref[1], ref[2]]
    assert point_parity(ref, rescored, meta, 64)["max_score_diff"] > BOX_SCORE
    # decoded boxes: the same at a score every box passes; one moved box is caught
    assert box_parity(ref, ref, meta, 64, score=0.05)["boxes"] > 100
    assert box_parity(ref, moved, meta, 64, score=0.05)["min_iou"] < BOX_IOU


def test_detect_on_onnxruntime_matches_pytorch(invoke, detector, exported, tmp_path):
    onnx_path, _ = exported
    scene = write_scene(tmp_path / "s.tif", db_scene(100, 150)[:1])
    frames = {}
    for name, weights in (("torch", detector), ("ort", onnx_path)):
        out = tmp_path / f"{name}.gpkg"
        r = invoke("detect", "-w", weights, scene, "-o", out, "--min-score", "0.07", "--device", "cpu", "-q")
        assert r.exit_code == 0, r.stderr
        frames[name] = gpd.read_file(out)

    def boxes(gdf) -> dict:
        b = gdf[["col_min", "row_min", "col_max", "row_max"]].to_numpy(np.float32)
        return {"boxes": b, "scores": gdf["score"].to_numpy(), "labels": gdf["class_id"].to_numpy()}

    assert len(frames["torch"]) > 10
    parity = pair_up(boxes(frames["torch"]), boxes(frames["ort"]), skip_below=0.07 + BOX_SCORE)
    assert parity["min_iou"] >= BOX_IOU and parity["max_score_diff"] <= BOX_SCORE


def test_onnx_detector_needs_its_tile(invoke, exported, tmp_path):
    onnx_path, _ = exported
    scene = write_scene(tmp_path / "s.tif", db_scene(100, 150)[:1])
    r = invoke(
        "detect", "-w", onnx_path, scene, "-o", tmp_path / "d.gpkg", "--tile", "128", "--device", "cpu"
    )
    assert r.exit_code == 2 and "was exported for 64-px tiles; use --tile 64" in r.stderr
    assert not (tmp_path / "d.gpkg").exists()


def test_export_command_reports_boxes(invoke, detector, tmp_path):
    r = invoke("export", detector, "-o", tmp_path / "d.onnx", "--int8", "--json")
    assert r.exit_code == 0, r.stderr
    assert "points of 4 sample tiles: " in r.stderr and "boxes of 4 sample tiles: " in r.stderr
    assert "lowest IoU 1.0000" in r.stderr
    assert '"box_recall_vs_fp32"' in r.stdout


def test_detector_with_spatial_prior_exports_with_parity(tmp_path):
    """The prior's pooling and upsampling go into the graph: export checks dense and box
    parity (`export_onnx` raises when they fail) for a detector whose prior counts."""
    weights = make_detector(tmp_path / "p.safetensors", prior=32)
    model, _ = load_model(weights)
    assert model.prior == 32
    report = export_onnx(weights, tmp_path / "p.onnx").to_dict()
    (points,) = [r for r in report["parity"] if r["output"] == "points"]
    assert points["min_iou"] >= BOX_IOU and points["max_score_diff"] <= BOX_SCORE and points["points"] > 100
