"""Import of official SARMAE checkpoints: timm parity, strictness, extras, decoder."""

import pytest
import torch

from sarmae_cli.errors import ArchitectureError, UnsafeCheckpointError, WeightsError
from sarmae_cli.model import MAE, load_encoder, read_weights
from sarmae_cli.model.checkpoint import load_state_strict, sub_state
from sarmae_cli.model.official import convert_official, import_official
from tests.helpers import official_checkpoint, official_state_dict, timm_encoder


def _features_match_timm(dst, timm_name, size=224, batch=2):
    enc, meta = load_encoder(dst)
    ref = timm_encoder(timm_name, official_state_dict(timm_name))
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        ours, theirs = enc.forward_features(x), ref.forward_features(x)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-5, diff
    return meta


def test_tiny_import_matches_timm(tiny_official, tmp_path):
    dst = tmp_path / "tiny.safetensors"
    meta = import_official(tiny_official, dst)
    assert meta.task == "encoder" and meta.decoder is None
    assert meta.encoder["embed_dim"] == 192 and meta.encoder["in_chans"] == 3
    assert meta.input_scaling["mode"] == "uint8"
    assert meta.normalization == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert meta.provenance["source_epoch"] == 299
    assert meta.training["source_args"]["model"] == "mae_vit_base_patch16"
    tensors, _ = read_weights(dst)
    assert all(k.startswith("encoder.") for k in tensors)
    _features_match_timm(dst, "vit_tiny_patch16_224")


@pytest.mark.slow
def test_vit_base_import_matches_timm(tmp_path):
    src = official_checkpoint(tmp_path / "SARMAE_vitb_checkpoint-last.pth", "vit_base_patch16_224")
    dst = tmp_path / "vitb.safetensors"
    meta = import_official(src, dst)
    assert (meta.encoder["embed_dim"], meta.encoder["depth"], meta.encoder["num_heads"]) == (
        768,
        12,
        12,
    )
    _features_match_timm(dst, "vit_base_patch16_224", batch=1)


def test_keep_decoder_loads_into_mae(tiny_official, tmp_path):
    dst = tmp_path / "mae.safetensors"
    meta = import_official(tiny_official, dst, keep_decoder=True)
    assert meta.task == "pretrain"
    assert meta.decoder == {"embed_dim": 512, "depth": 8, "num_heads": 16, "mlp_ratio": 4.0}
    tensors, _ = read_weights(dst)
    mae = MAE(meta.encoder_config, meta.decoder_config)
    load_state_strict(mae.encoder, sub_state(tensors, "encoder."), "test")
    load_state_strict(mae.decoder, sub_state(tensors, "decoder."), "test")
    src = official_state_dict("vit_tiny_patch16_224")
    torch.testing.assert_close(mae.decoder.embed.weight, src["sar_encoder.decoder_embed.weight"])
    torch.testing.assert_close(
        mae.decoder.blocks[7].mlp.fc2.bias, src["sar_encoder.decoder_blocks.7.mlp.fc2.bias"]
    )
    assert mae(torch.randn(1, 3, 224, 224)).pred.shape == (1, 196, 768)


@pytest.mark.parametrize("c", [1, 2])
def test_three_channel_weights_on_fewer_bands(tiny_official, tmp_path, c):
    dst = tmp_path / f"c{c}.safetensors"
    meta = import_official(tiny_official, dst, in_chans=c)
    assert meta.encoder["in_chans"] == c
    assert meta.channel_adaptation == {
        "from_in_chans": 3,
        "to_in_chans": c,
        "method": meta.channel_adaptation["method"],
    }
    assert len(meta.normalization["mean"]) == c and len(meta.bands) == c
    enc, _ = load_encoder(dst)
    assert enc.pooled(torch.randn(2, c, 224, 224)).shape == (2, 192)


def _save(tmp_path, sd, name="bad.pth", **extra):
    path = tmp_path / name
    torch.save({"model": sd, **extra}, path)
    return path


def test_missing_encoder_key_is_named(tmp_path):
    sd = official_state_dict("vit_tiny_patch16_224")
    del sd["sar_encoder.blocks.5.attn.proj.weight"]
    with pytest.raises(ArchitectureError, match=r"missing key 'sar_encoder\.blocks\.5\.attn\.proj\.weight'"):
        convert_official(_save(tmp_path, sd))


def test_wrong_shape_is_named(tmp_path):
    sd = official_state_dict("vit_tiny_patch16_224")
    sd["sar_encoder.blocks.3.mlp.fc1.bias"] = torch.zeros(10)
    with pytest.raises(
        ArchitectureError, match=r"'sar_encoder\.blocks\.3\.mlp\.fc1\.bias' has shape \(10,\)"
    ):
        convert_official(_save(tmp_path, sd))


def test_unexpected_encoder_key_is_named(tmp_path):
    sd = official_state_dict("vit_tiny_patch16_224")
    sd["sar_encoder.blocks.0.attn.q_norm.weight"] = torch.ones(64)
    with pytest.raises(ArchitectureError, match=r"unexpected key 'sar_encoder\.blocks\.0\.attn\.q_norm"):
        convert_official(_save(tmp_path, sd))


def test_other_architecture_refused(tmp_path):
    import timm

    sd = timm.create_model("resnet18", pretrained=False).state_dict()
    with pytest.raises(ArchitectureError, match="not a SARMAE checkpoint.*conv1.weight"):
        convert_official(_save(tmp_path, sd))


def test_keep_decoder_without_decoder(tmp_path):
    sd = {
        k: v
        for k, v in official_state_dict("vit_tiny_patch16_224").items()
        if "decoder" not in k and "mask_token" not in k
    }
    with pytest.raises(ArchitectureError, match="no MAE decoder keys"):
        convert_official(_save(tmp_path, sd), keep_decoder=True)


def test_not_a_checkpoint_and_truncated(tmp_path, tiny_official):
    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        convert_official(text)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(tiny_official.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated or corrupted"):
        convert_official(cut)


class _Config:
    """A harmless-looking class that is not on the allow-list."""

    def __init__(self):
        self.lr = 1e-4


def test_unsafe_checkpoint_refused(tmp_path):
    sd = official_state_dict("vit_tiny_patch16_224")
    path = _save(tmp_path, sd, config=_Config())
    with pytest.raises(UnsafeCheckpointError, match="_Config.*allow-list"):
        convert_official(path)
