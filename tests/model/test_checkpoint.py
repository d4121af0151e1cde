"""The weights format: round trip, checksum, metadata errors, safe pickle loading."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from sarmae_cli.errors import OutputExistsError, UnsafeCheckpointError, WeightsError
from sarmae_cli.model import SarViT, WeightsMeta, load_encoder, preset, read_meta, read_weights
from sarmae_cli.model.checkpoint import (
    adapt_in_chans,
    load_pickled_checkpoint,
    provenance,
    save_weights,
)


def _meta(cfg, **kw) -> WeightsMeta:
    return WeightsMeta(
        task="encoder",
        encoder=cfg.to_dict(),
        bands=["VV", "VH"][: cfg.in_chans],
        input_scaling={"mode": "db", "range": [-30.0, 5.0]},
        normalization={"mean": [0.1] * cfg.in_chans, "std": [0.9] * cfg.in_chans},
        class_names=None,
        tile={"size": 64, "overlap": 16},
        training={"epochs": 3, "lr": 1e-3},
        provenance=provenance("sarmae test", data=["synthetic"]),
        **kw,
    )


@pytest.fixture
def tiny_file(tmp_path):
    cfg = preset("tiny", in_chans=2, img_size=64, depth=2)
    enc = SarViT(cfg)
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    path = tmp_path / "w.safetensors"
    meta = save_weights(path, tensors, _meta(cfg))
    return path, tensors, meta, enc


def test_round_trip_tensors_and_metadata(tiny_file):
    path, tensors, meta, _ = tiny_file
    got, got_meta = read_weights(path)
    assert got.keys() == tensors.keys()
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert got_meta == meta
    assert got_meta.to_dict() == json.loads(json.dumps(meta.to_dict()))
    assert read_meta(path) == meta and len(meta.tensors_sha256) == 64


def test_load_encoder_gives_same_features(tiny_file):
    path, _, meta, enc = tiny_file
    model, m = load_encoder(path)
    x = torch.randn(2, 2, 64, 64)
    torch.testing.assert_close(model.forward_features(x), enc.eval().forward_features(x))
    assert m.bands == ["VV", "VH"]


def test_half_precision_storage(tmp_path, tiny_file):
    _, tensors, meta, _ = tiny_file
    path = tmp_path / "half.safetensors"
    save_weights(path, tensors, meta, half=True)
    got, _ = read_weights(path)
    assert all(v.dtype == torch.float16 for v in got.values())
    assert path.stat().st_size < tiny_file[0].stat().st_size * 0.6


def test_corrupted_tensors_fail_checksum(tiny_file):
    path = tiny_file[0]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # flip bits inside the last tensor
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupted.*checksum"):
        read_weights(path)


def test_truncated_file(tiny_file):
    path = tiny_file[0]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or corrupted|not a readable"):
        read_weights(path)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_meta(tmp_path / "nope.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="without sarmae metadata"):
        read_meta(plain)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        read_meta(text)


def test_refuses_to_overwrite(tiny_file):
    path, tensors, meta, _ = tiny_file
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_weights(path, tensors, meta)
    assert path.read_bytes() == before
    save_weights(path, tensors, meta, overwrite=True)


def test_failed_write_leaves_nothing(tmp_path, tiny_file, monkeypatch):
    _, tensors, meta, _ = tiny_file
    import sarmae_cli.model.checkpoint as ck

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck, "save_file", boom)
    dst = tmp_path / "sub"
    dst.mkdir()
    with pytest.raises(Exception, match="No space"):
        save_weights(dst / "x.safetensors", tensors, meta)
    assert os.listdir(dst) == []


def test_adapt_in_chans_one_band_equals_repeated_input(tmp_path):
    cfg = preset("tiny", in_chans=3, img_size=64, depth=2)
    enc = SarViT(cfg).eval()
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    meta = _meta(cfg, channel_adaptation=None)
    meta.bands = ["SAR"] * 3
    t1, m1 = adapt_in_chans(tensors, meta, 1)
    assert m1.encoder["in_chans"] == 1 and m1.bands == ["SAR"]
    assert m1.channel_adaptation["from_in_chans"] == 3
    path = tmp_path / "a.safetensors"
    save_weights(path, t1, m1)
    one, m = load_encoder(path)
    assert m.channel_adaptation["to_in_chans"] == 1
    x = torch.randn(2, 1, 64, 64)
    torch.testing.assert_close(
        one.forward_features(x), enc.forward_features(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5
    )
    two, m2 = load_encoder(path, in_chans=2)  # adaptation at load time works too
    assert two.forward_features(torch.randn(1, 2, 64, 64)).shape == (1, 17, 192)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_without_side_effects(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused.*system.*nothing in it was executed"):
        load_pickled_checkpoint(path)
    assert not marker.exists()
    # a bare (non-zip) pickle with the same payload is refused too
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"payload": _Evil(marker)}))
    with pytest.raises(WeightsError):
        load_pickled_checkpoint(raw)
    assert not marker.exists()
