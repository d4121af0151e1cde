"""The FCOS detector: output shapes over levels, decoding of hand-made outputs, the loss, and
exact save/load round trips through the model factory."""

import pytest
import torch

from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.detector import Detector, decode, detection_loss, level_sizes
from sarmae_cli.model.factory import load_model, save_model

CFG = preset("tiny", in_chans=2, img_size=64, depth=2)


def _meta(classes):
    return WeightsMeta(
        task="detection",
        encoder=CFG.to_dict(),
        bands=["VV", "VH"],
        input_scaling={"mode": "db"},
        normalization={"mean": [0.5, 0.5], "std": [0.25, 0.25]},
        class_names=classes,
    )


@pytest.mark.parametrize("strides", [(8, 16, 32), (4, 8, 16, 32)])
def test_forward_shapes_over_levels(strides):
    model = Detector(CFG, 3, strides, channels=32, num_convs=1).eval()
    x = torch.randn(2, 2, 96, 160)  # 6 x 10 patches: stride 32 rounds up to 3 x 5
    cls, reg, ctr = model(x)
    n = sum(r * c for r, c in level_sizes((96, 160), strides))
    assert level_sizes((96, 160), (32,)) == [(3, 5)]
    assert cls.shape == (2, n, 3) and reg.shape == (2, n, 4) and ctr.shape == (2, n, 1)
    assert (reg >= 0).all()  # FCOS distances are ReLU'd


def test_bad_configs_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        Detector(CFG, 1, channels=48)
    with pytest.raises(ValueError, match="prior width"):
        Detector(CFG, 1, prior=48)
    with pytest.raises(ValueError, match="power of 2"):
        Detector(CFG, 1, strides=(8, 24))


def test_decode_recovers_a_hand_made_box():
    """One confident point at stride 8 (row 3, col 5: centre (40, 24)) with distances
    (1, 1, 2, 2) strides decodes to the box (32, 16, 56, 40) with its class."""
    size, strides = (64, 96), (8, 16)
    n = sum(r * c for r, c in level_sizes(size, strides))
    cls = torch.full((1, n, 2), -10.0)
    reg = torch.zeros(1, n, 4)
    ctr = torch.full((1, n, 1), 10.0)
    i = 3 * 12 + 5  # stride-8 grid is 8 x 12
    cls[0, i, 1] = 10.0
    reg[0, i] = torch.tensor([1.0, 1.0, 2.0, 2.0])
    (det,) = decode((cls, reg, ctr), size, strides)
    assert det["boxes"].shape == (1, 4)
    assert torch.allclose(det["boxes"][0], torch.tensor([32.0, 16.0, 56.0, 40.0]))
    assert det["labels"].tolist() == [1] and det["labels"].dtype == torch.int64
    assert det["scores"][0] > 0.99
    with pytest.raises(ValueError, match="points"):
        decode((cls, reg, ctr), (64, 64), strides)


def test_loss_falls_when_fitting_one_box():
    """A few optimizer steps on one image with one box lower the FCOS loss."""
    model = Detector(CFG, 1, (8, 16), channels=32, num_convs=1)
    x = torch.randn(1, 2, 64, 64)
    target = [{"boxes": torch.tensor([[16.0, 20.0, 40.0, 36.0]]), "labels": torch.tensor([0])}]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = sum(detection_loss(model(x), target, (64, 64), model.strides).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert torch.isfinite(sum(detection_loss(model(x), empty, (64, 64), model.strides).values()))


def test_round_trip_through_weights_file(tmp_path):
    model = Detector(CFG, 2, (8, 16, 32), channels=32, num_convs=2).eval()
    x = torch.randn(1, 2, 64, 64)
    meta = save_model(tmp_path / "d.safetensors", model, _meta(["ship", "rig"]))
    assert meta.head == {
        "type": "detector",
        "num_classes": 2,
        "strides": [8, 16, 32],
        "channels": 32,
        "num_convs": 2,
        "prior": 0,
    }
    loaded, m = load_model(tmp_path / "d.safetensors")
    assert isinstance(loaded, Detector) and m.task == "detection" and m.class_names == ["ship", "rig"]
    assert all(k.startswith(("encoder.", "head.")) for k in loaded.state_dict())
    for a, b in zip(loaded(x), model(x), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("strides", [(8, 16, 32), (4, 8, 16, 32, 64)])
def test_untrained_spatial_prior_leaves_the_outputs_unchanged(strides):
    """The prior's 1x1 convs start at zero: the same weights without and with a prior give the
    same outputs, on a size whose coarse levels round up (6 x 10 patches)."""
    torch.manual_seed(0)
    plain = Detector(CFG, 1, strides, channels=32, num_convs=1).eval()
    with_prior = Detector(CFG, 1, strides, channels=32, num_convs=1, prior=64).eval()
    missing, unexpected = with_prior.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("head.prior.") for k in missing)
    x = torch.randn(2, 2, 96, 160)
    for a, b in zip(plain(x), with_prior(x), strict=True):
        assert torch.equal(a, b)


def test_trained_spatial_prior_counts_and_round_trips(tmp_path):
    """With non-zero projections the prior changes the outputs; a weights file records its width
    and gives the same outputs back; a 1-band input runs through it too (it reads the band mean)."""
    torch.manual_seed(0)
    model = Detector(CFG, 1, (8, 16, 32), channels=32, num_convs=1, prior=32).eval()
    x = torch.randn(1, 2, 64, 64)
    before = model(x)[0].clone()
    for conv in model.head.prior.proj:
        torch.nn.init.normal_(conv.weight, std=0.1)
    assert not torch.allclose(model(x)[0], before)
    meta = save_model(tmp_path / "p.safetensors", model, _meta(["ship"]))
    assert meta.head["prior"] == 32
    loaded, _ = load_model(tmp_path / "p.safetensors")
    assert loaded.prior == 32
    for a, b in zip(loaded(x), model(x), strict=True):
        assert torch.equal(a, b)
    one_band = Detector(preset("tiny", in_chans=1, img_size=64, depth=2), 1, (8, 16), channels=32, prior=32)
    assert one_band(torch.randn(1, 1, 64, 64))[0].shape == (1, 64 + 16, 1)
