"""`sarmae weights list|info|import` end to end, including every bad input."""

import json
import os
import pickle

import torch
from safetensors.torch import save_file

from sarmae_cli.model import read_meta
from tests.helpers import official_checkpoint


def test_import_then_info(invoke, tiny_official, tmp_path):
    dst = tmp_path / "sarmae_tiny.safetensors"
    r = invoke("weights", "import", tiny_official, "-o", dst)
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and "wrote" in r.stderr
    meta = read_meta(dst)
    assert meta.provenance["command"] == f"sarmae weights import {tiny_official} -o {dst}"
    r = invoke("weights", "info", dst, "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["format"] == "sarmae-weights" and info["task"] == "encoder"
    assert info["parameters"] == sum(
        p.numel() for p in __import__("timm").create_model("vit_tiny_patch16_224", num_classes=0).parameters()
    )
    assert info["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    r = invoke("weights", "info", dst)
    assert r.exit_code == 0
    for field in ("encoder", "ViT-tiny p16 224px 3ch", "input scaling", "uint8", "checksum"):
        assert field in r.stdout


def test_import_options(invoke, tiny_official, tmp_path):
    dst = tmp_path / "mae1.safetensors"
    r = invoke("weights", "import", tiny_official, "-o", dst, "--keep-decoder", "--in-chans", "1")
    assert r.exit_code == 0, r.stderr
    meta = read_meta(dst)
    assert meta.task == "pretrain" and meta.encoder["in_chans"] == 1
    assert meta.channel_adaptation["to_in_chans"] == 1


def _one_line_error(r, code, *needles):
    assert r.exit_code == code if code is not None else r.exit_code != 0, (r.exit_code, r.stderr)
    assert r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_import_bad_inputs(invoke, tiny_official, tmp_path):
    dst = tmp_path / "out.safetensors"
    text = tmp_path / "readme.pth"
    text.write_text("not a checkpoint")
    r = invoke("weights", "import", text, "-o", dst)
    _one_line_error(r, 1, "not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    assert "weights_only" not in r.stderr  # torch's advice to load unsafely is not passed on
    _one_line_error(invoke("weights", "import", tmp_path / "missing.pth", "-o", dst), 2, "not found")

    import timm

    other = tmp_path / "resnet.pth"
    torch.save({"model": timm.create_model("resnet18").state_dict()}, other)
    _one_line_error(invoke("weights", "import", other, "-o", dst), 1, "not a SARMAE checkpoint")

    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_official.read_bytes()[:50_000])
    _one_line_error(invoke("weights", "import", cut, "-o", dst), 1, "truncated or corrupted")
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo owned > {self.marker}",))


def test_import_refuses_code_execution(invoke, tmp_path):
    marker = tmp_path / "owned.txt"
    src = tmp_path / "evil.pth"
    torch.save({"model": {"sar_encoder.cls_token": torch.zeros(1, 1, 8)}, "x": _Payload(marker)}, src)
    dst = tmp_path / "out.safetensors"
    _one_line_error(invoke("weights", "import", src, "-o", dst), 1, "refused", "nothing")
    assert not marker.exists() and not dst.exists()


def test_import_plain_pickle_says_what_is_true(invoke, tmp_path):
    """Issue 31: a malicious pickle written with `pickle.dump` (protocol 4+, not torch.save) was
    refused with torch's "Unsupported operand 149"; the message now says what the file is, that
    nothing ran, and what to give instead."""
    marker = tmp_path / "owned.txt"
    src = tmp_path / "evil.pth"
    src.write_bytes(pickle.dumps(_Payload(marker)))
    dst = tmp_path / "out.safetensors"
    r = invoke("weights", "import", src, "-o", dst)
    _one_line_error(r, 1, "is not a PyTorch checkpoint sarmae can read safely", "a pickle that torch.save")
    assert "nothing in it was executed" in r.stderr and "Give the official SARMAE .pth checkpoint" in r.stderr
    assert "Unsupported operand" not in r.stderr and "weights_only" not in r.stderr
    assert not marker.exists() and not dst.exists()


def test_import_destination_rules(invoke, tiny_official, tmp_path):
    dst = tmp_path / "exists.safetensors"
    dst.write_bytes(b"keep me")
    _one_line_error(invoke("weights", "import", tiny_official, "-o", dst), 2, "--overwrite")
    assert dst.read_bytes() == b"keep me"
    assert invoke("weights", "import", tiny_official, "-o", dst, "--overwrite").exit_code == 0
    assert read_meta(dst).task == "encoder"

    blocker = tmp_path / "afile"
    blocker.write_text("x")
    _one_line_error(
        invoke("weights", "import", tiny_official, "-o", blocker / "w.safetensors"),
        2,
        "not a folder",
    )
    _one_line_error(
        invoke("weights", "import", tiny_official, "-o", tmp_path / "no" / "w.safetensors"),
        2,
        "does not exist",
    )
    _one_line_error(
        invoke("weights", "import", tiny_official, "-o", tmp_path / "w.st"),
        2,
        "w.st: the imported weights file needs a .safetensors name",
    )


def test_import_unwritable_destination(invoke, tiny_official):
    # /proc refuses new files, even for root (whose os.access checks always pass)
    r = invoke("weights", "import", tiny_official, "-o", "/proc/w.safetensors")
    _one_line_error(r, None, "cannot write /proc/w.safetensors")


def test_info_bad_inputs(invoke, tmp_path):
    _one_line_error(invoke("weights", "info", tmp_path / "none.safetensors"), 2, "not found")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))
    _one_line_error(invoke("weights", "info", plain), 1, "without sarmae metadata")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    _one_line_error(invoke("weights", "info", junk), 1, "not a readable safetensors")


def test_list_shipped(invoke, tiny_official, tmp_path, monkeypatch):
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(tmp_path))
    r = invoke("weights", "list")
    assert r.exit_code == 0 and "No shipped weights" in r.stdout
    invoke("weights", "import", tiny_official, "-o", tmp_path / "sarmae_tiny.safetensors")
    r = invoke("weights", "list", "--json")
    rows = json.loads(r.stdout)["weights"]
    assert [(os.path.basename(w["path"]), w["task"]) for w in rows] == [
        ("sarmae_tiny.safetensors", "encoder")
    ]
    r = invoke("weights", "list")
    assert "sarmae_tiny.safetensors" in r.stdout and "encoder" in r.stdout


def test_vit_base_cli_import(invoke, tmp_path):
    src = official_checkpoint(tmp_path / "b.pth", "vit_base_patch16_224", with_extras=True)
    r = invoke("weights", "import", src, "-o", tmp_path / "b.safetensors", "--keep-decoder")
    assert r.exit_code == 0, r.stderr
    assert "ViT-base p16 224px 3ch" in r.stderr


def test_convert_fp16_and_drop_mae_decoder(invoke, tiny_official, tmp_path):
    """The shipped files are made this way: fp16 halves the size, the encoder's outputs stay
    within fp16 rounding, and only pretraining weights have an MAE decoder to drop."""
    from sarmae_cli.model import load_encoder

    mae = tmp_path / "mae.safetensors"
    assert invoke("weights", "import", tiny_official, "-o", mae, "--keep-decoder").exit_code == 0
    small = tmp_path / "enc16.safetensors"
    r = invoke("weights", "convert", mae, "--fp16", "--drop-mae-decoder", "-o", small)
    assert r.exit_code == 0, r.stderr
    meta = read_meta(small)
    assert meta.task == "encoder" and meta.decoder is None
    assert meta.provenance["converted_from"]["file"] == "mae.safetensors"
    assert small.stat().st_size < 0.5 * mae.stat().st_size
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = load_encoder(mae)[0].eval().forward_features(x)  # [2, 197, 192]
        out = load_encoder(small)[0].eval().forward_features(x)
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max()) < 1e-2 * float(ref.abs().max())
    r = invoke("weights", "convert", small, "--drop-mae-decoder", "-o", tmp_path / "x.safetensors")
    assert r.exit_code == 1 and "no MAE decoder" in r.stderr and not (tmp_path / "x.safetensors").exists()
    r = invoke("weights", "convert", mae, "-o", small)
    assert r.exit_code == 2 and "--overwrite" in r.stderr


def test_convert_sets_the_default_tile(invoke, tiny_official, tmp_path):
    enc = tmp_path / "enc.safetensors"
    assert invoke("weights", "import", tiny_official, "-o", enc).exit_code == 0
    out = tmp_path / "t.safetensors"
    r = invoke("weights", "convert", enc, "--tile", "256", "--overlap", "64", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert read_meta(out).tile == {"size": 256, "overlap": 64}
    r = invoke("weights", "convert", enc, "--tile", "250", "-o", tmp_path / "bad.safetensors")
    assert r.exit_code == 1 and "multiple of the patch size" in r.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_convert_stores_the_detect_min_score_and_keeps_the_tensors(invoke, tmp_path):
    """`--min-score` writes `training.detection.min_score` (the default of `sarmae detect`) and
    changes nothing else: the same tensors, byte for byte, and the same checksum; `weights info`
    shows it, and files without it show the 0.5 `detect` falls back to."""
    from safetensors.torch import load_file

    from tests.infer.conftest import make_detector

    det = make_detector(tmp_path / "det32.safetensors")
    half = tmp_path / "det.safetensors"
    assert invoke("weights", "convert", det, "--fp16", "-o", half).exit_code == 0  # as shipped
    out = tmp_path / "op.safetensors"
    r = invoke("weights", "convert", half, "--min-score", "0.35", "-o", out)
    assert r.exit_code == 0, r.stderr
    before, after = read_meta(half), read_meta(out)
    assert after.training["detection"]["min_score"] == 0.35
    assert "min_score" not in before.training.get("detection", {})
    assert {k: v for k, v in after.training.items() if k != "detection"} == {
        k: v for k, v in before.training.items() if k != "detection"
    }
    assert after.tensors_sha256 == before.tensors_sha256 and after.tile == before.tile
    assert after.provenance["command"].endswith("--min-score 0.35")
    a, b = load_file(str(half)), load_file(str(out))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == (torch.float16 if a[k].is_floating_point() else a[k].dtype)
        assert torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)), k
    r = invoke("weights", "info", out)
    assert r.exit_code == 0 and "detect --min-score" in r.stdout and "0.35" in r.stdout
    r = invoke("weights", "info", half)
    assert r.exit_code == 0 and "0.5 (none stored)" in r.stdout
    # a stored cut can be replaced by another, and 0 is a valid cut
    again = tmp_path / "zero.safetensors"
    assert invoke("weights", "convert", out, "--min-score", "0", "-o", again).exit_code == 0
    assert read_meta(again).training["detection"]["min_score"] == 0.0


def test_convert_records_a_pixel_size_range(invoke, tmp_path):
    """`--gsd LO:HI` records the range a detector trained on mixed resolutions reads as it is
    (`training.gsd` [LO, HI]) with the same tensors; a bad range is a one-line usage error and
    writes nothing."""
    from tests.infer.conftest import make_detector

    det = make_detector(tmp_path / "det.safetensors")
    out = tmp_path / "r.safetensors"
    r = invoke("weights", "convert", det, "--gsd", "0.5:5", "-o", out)
    assert r.exit_code == 0, r.stderr
    meta = read_meta(out)
    assert meta.training["gsd"] == [0.5, 5.0] and meta.provenance["command"].endswith("--gsd 0.5:5")
    assert meta.tensors_sha256 == read_meta(det).tensors_sha256
    r = invoke("weights", "convert", det, "--gsd", "5:0.5", "-o", tmp_path / "bad.safetensors")
    assert r.exit_code == 2 and "or a range LO:HI" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad.safetensors").exists()
