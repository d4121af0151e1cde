"""Task heads and the model factory: shapes and exact save/load round trips."""

import pytest
import torch

from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.factory import EncoderModel, load_model, save_model
from sarmae_cli.model.heads import Classifier, Segmenter, default_layers

CFG = preset("tiny", in_chans=2, img_size=64, depth=4)


def _meta(task, classes=None):
    return WeightsMeta(
        task=task,
        encoder=CFG.to_dict(),
        bands=["VV", "VH"],
        input_scaling={"mode": "db"},
        normalization={"mean": [0.5, 0.5], "std": [0.25, 0.25]},
        class_names=classes,
    )


def test_default_layers():
    assert default_layers(12) == [2, 5, 8, 11]
    assert default_layers(24) == [5, 11, 17, 23]
    assert default_layers(4) == [0, 1, 2, 3]


@pytest.mark.parametrize("decoder", ["upernet", "fpn"])
def test_segmenter_round_trip(tmp_path, decoder):
    model = Segmenter(CFG, 3, decoder, channels=32).eval()
    x = torch.randn(2, 2, 64, 64)
    y = model(x)
    assert y.shape == (2, 3, 64, 64)
    assert model(torch.randn(1, 2, 96, 160)).shape == (1, 3, 96, 160)
    meta = save_model(tmp_path / "s.safetensors", model, _meta("segmentation", ["a", "b", "c"]))
    assert meta.head["decoder"] == decoder and meta.head["num_classes"] == 3
    loaded, m = load_model(tmp_path / "s.safetensors")
    assert isinstance(loaded, Segmenter) and m.class_names == ["a", "b", "c"]
    assert torch.equal(loaded(x), y)


def test_classifier_and_encoder_round_trip(tmp_path):
    clf = Classifier(CFG, 10).eval()
    x = torch.randn(2, 2, 64, 64)
    save_model(tmp_path / "c.safetensors", clf, _meta("classification", [str(i) for i in range(10)]))
    loaded, meta = load_model(tmp_path / "c.safetensors")
    assert meta.head == {"type": "classifier", "num_classes": 10}
    assert torch.equal(loaded(x), clf(x))
    enc = EncoderModel(SarViT(CFG)).eval()
    save_model(tmp_path / "e.safetensors", enc, _meta("encoder"))
    loaded, _ = load_model(tmp_path / "e.safetensors")
    assert torch.equal(loaded(x), enc(x)) and loaded(x).shape == (2, 192)


def test_pixel_refiner_starts_as_identity_and_round_trips(tmp_path):
    """An untrained refiner changes nothing; a trained one is saved, rebuilt and band-agnostic."""
    torch.manual_seed(0)
    plain = Segmenter(CFG, 2, channels=32).eval()
    refined = Segmenter(CFG, 2, channels=32, refine=8).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("head.refiner.") for k in missing)
    x = torch.randn(2, 2, 64, 64)
    assert torch.allclose(refined(x), plain(x), atol=1e-6)
    torch.nn.init.normal_(refined.head.refiner.out.weight)  # as if trained
    y = refined(x)
    assert y.shape == (2, 2, 64, 64) and not torch.allclose(y, plain(x), atol=1e-3)
    meta = save_model(tmp_path / "r.safetensors", refined, _meta("segmentation", ["land", "water"]))
    assert meta.head["refine"] == 8
    loaded, _ = load_model(tmp_path / "r.safetensors")
    assert loaded.head.refiner is not None and torch.equal(loaded(x), y)
    one_band, _ = load_model(tmp_path / "r.safetensors", in_chans=1)  # guide = band mean
    assert one_band(torch.randn(1, 1, 64, 64)).shape == (1, 2, 64, 64)
    assert (
        save_model(tmp_path / "p.safetensors", plain, _meta("segmentation", ["land", "water"])).head["refine"]
        == 0
    )
