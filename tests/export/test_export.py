"""ONNX export: graph check, metadata, parity, reduced precision, bad inputs, ORT backend."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sarmae_cli.errors import UsageError, WeightsError
from sarmae_cli.export import onnx_export
from sarmae_cli.export.onnx_export import export_onnx, sample_inputs
from sarmae_cli.export.ort_backend import OnnxBackend
from sarmae_cli.infer.backend import TorchBackend
from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.checkpoint import read_onnx_meta
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.factory import EncoderModel, load_model, save_model
from sarmae_cli.model.heads import Classifier, Segmenter

CFG = preset("tiny", in_chans=2, img_size=64, depth=4)


def _meta(task, classes=None):
    return WeightsMeta(
        task=task,
        encoder=CFG.to_dict(),
        bands=["VV", "VH"],
        input_scaling={"mode": "db", "stretch": "fixed", "db_range": [-30.0, 5.0]},
        normalization={"mean": [0.5, 0.5], "std": [0.25, 0.25]},
        class_names=classes,
        tile={"size": 64, "overlap": 16},
    )


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("w")
    torch.manual_seed(0)
    models = {
        "segmentation": (Segmenter(CFG, 2, channels=32), ["land", "water"]),
        "classification": (Classifier(CFG, 3), ["a", "b", "c"]),
        "encoder": (EncoderModel(SarViT(CFG)), None),
    }
    for task, (model, classes) in models.items():
        save_model(d / f"{task}.safetensors", model, _meta(task, classes))
    return {task: d / f"{task}.safetensors" for task in models}


@pytest.fixture(scope="module")
def exported(weights, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    return {task: export_onnx(w, d / f"{task}.onnx").output for task, w in weights.items()}


@pytest.mark.parametrize("task", ["segmentation", "classification", "encoder"])
def test_export_checks_and_metadata(weights, exported, task):
    path = Path(exported[task])
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    for key in ("task", "bands", "input_scaling", "normalization", "tile", "class_names", "sarmae_version"):
        assert key in props, key
    assert json.loads(props["bands"]) == ["VV", "VH"]
    meta, info = read_onnx_meta(path)
    assert meta.task == task and info["tile"] == 64 and info["precision"] == "fp32"
    assert all(r["relative"] <= 1e-4 for r in info["parity"]) and {r["batch"] for r in info["parity"]} == {
        1,
        3,
    }


@pytest.mark.parametrize(
    "task,output",
    [
        ("segmentation", "probabilities"),
        ("classification", "probabilities"),
        ("encoder", "pooled"),
        ("encoder", "patch_features"),
    ],
)
def test_onnx_backend_matches_torch_backend(weights, exported, task, output):
    model, meta = load_model(weights[task])
    torch_b = TorchBackend(model, "cpu", output)
    onnx_b = OnnxBackend(exported[task], output, device="cpu", threads=1)
    x = sample_inputs(meta, 64, 5, seed=3)  # batch 5: the batch axis is dynamic
    a, b = torch_b.predict(x), onnx_b.predict(x)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max())
    assert (onnx_b.in_chans, onnx_b.patch_size, onnx_b.out_channels, onnx_b.out_stride) == (
        torch_b.in_chans,
        torch_b.patch_size,
        torch_b.out_channels,
        torch_b.out_stride,
    )


def test_refined_segmenter_exports_with_parity(tmp_path):
    """The full-resolution pixel refiner (model.refine) goes through ONNX unchanged."""
    torch.manual_seed(1)
    model = Segmenter(CFG, 2, channels=32, refine=8)
    torch.nn.init.normal_(model.head.refiner.out.weight)  # as if trained: not the identity
    w = tmp_path / "refined.safetensors"
    save_model(w, model, _meta("segmentation", ["land", "water"]))
    out = Path(export_onnx(w, tmp_path / "refined.onnx").output)
    meta, info = read_onnx_meta(out)
    assert meta.head["refine"] == 8
    assert all(r["relative"] <= 1e-4 for r in info["parity"])
    x = sample_inputs(meta, 64, 2, seed=0)
    a = TorchBackend(load_model(w)[0], "cpu", "probabilities").predict(x)
    b = OnnxBackend(out, "probabilities", device="cpu", threads=1).predict(x)
    assert np.abs(a - b).max() <= 1e-4


def test_cpu_arena_off_unless_asked(exported, monkeypatch):
    """The arena keeps its power-of-two peak: off by default (memory target), env turns it on."""
    path = exported["segmentation"]
    assert not OnnxBackend(path, device="cpu").session.get_session_options().enable_cpu_mem_arena
    monkeypatch.setenv("SARMAE_ORT_ARENA", "1")
    assert OnnxBackend(path, device="cpu").session.get_session_options().enable_cpu_mem_arena


def test_backend_bad_inputs(exported, tmp_path):
    b = OnnxBackend(exported["segmentation"], device="cpu")
    with pytest.raises(UsageError, match="takes 2 bands"):
        b.predict(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(UsageError, match="exported for 64-px tiles; use --tile 64"):
        b.predict(np.zeros((1, 2, 32, 32), np.float32))
    bare = onnx.load(str(exported["segmentation"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(WeightsError, match="no sarmae metadata"):
        OnnxBackend(tmp_path / "bare.onnx")


@pytest.mark.parametrize("flag", ["int8", "fp16"])
def test_reduced_precision_records_accuracy_change(weights, tmp_path, flag, data_dir):
    out = tmp_path / f"clf_{flag}.onnx"
    holdout = data_dir / "mstar10" / "test" / "2S1"
    report = export_onnx(weights["classification"], out, holdout=holdout, holdout_limit=8, **{flag: True})
    _, info = read_onnx_meta(out)
    change = info["accuracy_change"]
    assert info["precision"] == flag and change["images"] == 8 and change["holdout"] == str(holdout)
    assert 0.0 <= change["prediction_agreement"] <= 1.0
    fp32_size = tmp_path / "ref.onnx"
    export_onnx(weights["classification"], fp32_size)
    assert report.size_mb < fp32_size.stat().st_size / 1e6 * 0.7


def test_parity_failure_writes_nothing(weights, tmp_path, monkeypatch, invoke):
    monkeypatch.setattr(onnx_export, "FP32_TOLERANCE", -1.0)
    out = tmp_path / "bad.onnx"
    r = invoke("export", weights["encoder"], "-o", out)
    assert r.exit_code == 1 and r.stderr.startswith("Error: onnxruntime differs from PyTorch")
    assert r.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_info(weights, tmp_path, invoke):
    out = tmp_path / "seg.onnx"
    r = invoke("export", weights["segmentation"], "-o", out, "--tile", "32", "--json", "-q", "--simplify")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tile"] == 32 and summary["simplified"] and summary["outputs"] == ["logits"]
    r = invoke("weights", "info", out, "--json")
    assert json.loads(r.stdout)["onnx"]["tile"] == 32
    r = invoke("export", weights["segmentation"], "-o", out)
    assert r.exit_code == 2 and "--overwrite" in r.stderr


def test_cli_bad_inputs(weights, tmp_path, invoke):
    r = invoke("export", weights["encoder"], "-o", tmp_path / "x.onnx", "--fp16", "--int8")
    assert r.exit_code == 2 and "choose one of --fp16 and --int8" in r.stderr
    r = invoke("export", weights["encoder"], "-o", tmp_path / "x.onnx", "--tile", "40")
    assert r.exit_code == 2 and "multiple of the patch size 16" in r.stderr
    broken = tmp_path / "nohead.safetensors"
    meta = _meta("classification", ["a"])
    save_model(broken, EncoderModel(SarViT(CFG)), meta)  # classification metadata, no head
    r = invoke("export", broken, "-o", tmp_path / "y.onnx")
    assert r.exit_code == 1 and "without a head description" in r.stderr
    r = invoke("export", tmp_path / "missing.safetensors", "-o", tmp_path / "z.onnx")
    assert r.exit_code == 2 and "weights file not found" in r.stderr  # named on the command line
    r = invoke("export", broken, "-o", tmp_path / "z.xyz")
    assert r.exit_code == 2 and "z.xyz: an ONNX model needs a .onnx name" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nohead.safetensors"]
