"""Encoder and MAE: shapes, gradients, masking, patchify, position embeddings."""

import pytest
import torch

from sarmae_cli.model import MAE, PRESETS, SarViT, patchify, preset, random_masking, unpatchify
from sarmae_cli.model.config import DecoderConfig
from sarmae_cli.model.runtime import autocast, resolve_device

SMALL_DEC = DecoderConfig(embed_dim=64, depth=1, num_heads=4)


def tiny(in_chans: int, img_size: int = 64):
    return preset("tiny", in_chans=in_chans, img_size=img_size, depth=2)


@pytest.mark.parametrize("c", [1, 2, 4])
def test_encoder_forward_backward(c):
    enc = SarViT(tiny(c))
    x = torch.randn(2, c, 64, 64, requires_grad=True)
    tokens = enc.forward_features(x)  # [2, 1 + 16, 192]
    assert tokens.shape == (2, 17, 192)
    pooled = enc.pooled(x)
    assert pooled.shape == (2, 192)
    torch.testing.assert_close(pooled, tokens[:, 1:].mean(1))
    maps = enc.intermediate_layers(x, indices=[0, 1])
    assert [m.shape for m in maps] == [(2, 192, 4, 4)] * 2
    pooled.sum().backward()
    assert x.grad is not None and enc.patch_embed.proj.weight.grad.shape == (192, c, 16, 16)
    assert enc.pos_embed.grad is None  # fixed sin-cos, not learned


@pytest.mark.parametrize("c", [1, 2, 4])
def test_mae_forward_backward(c):
    mae = MAE(tiny(c), SMALL_DEC)
    x = torch.randn(2, c, 64, 64)
    out = mae(x)
    assert out.pred.shape == (2, 16, 16 * 16 * c)
    assert out.mask.shape == (2, 16) and out.mask.sum().item() == 2 * 12
    assert out.encoded.latent.shape == (2, 1 + 4, 192)
    out.loss.backward()
    assert mae.decoder.pred.weight.grad is not None
    assert mae.encoder.blocks[0].attn.qkv.weight.grad is not None


def test_loss_is_mse_on_masked_patches_only():
    mae = MAE(tiny(1), SMALL_DEC)
    x = torch.randn(1, 1, 64, 64)
    out = mae(x)
    target = patchify(x, 16)
    m = out.mask.bool()
    expected = ((out.pred - target) ** 2).mean(-1)[m].mean()
    torch.testing.assert_close(out.loss, expected)
    # a different clean target changes only through masked patches
    x2 = x.clone()
    x2_p = patchify(x2, 16)
    x2_p[~m] += 10.0  # corrupt visible patches of the target
    out2 = mae.forward_loss(unpatchify(x2_p, 16, 1), out.pred, out.mask)
    torch.testing.assert_close(out2, out.loss)


def test_random_masking_keeps_count_and_restores_order():
    x = torch.arange(2 * 50 * 3, dtype=torch.float32).reshape(2, 50, 3)
    vis, mask, ids_restore, ids_keep = random_masking(x, 0.75)
    k = int(50 * 0.25)
    assert vis.shape == (2, k, 3) and ids_keep.shape == (2, k)
    assert (mask.sum(1) == 50 - k).all()
    for n in range(2):
        kept = set(ids_keep[n].tolist())
        assert all(mask[n, i] == (0 if i in kept else 1) for i in range(50))
        torch.testing.assert_close(vis[n], x[n, ids_keep[n]])
    # ids_restore inverts the shuffle: un-shuffling the shuffled ids gives 0..L-1
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :k], ids_keep)
    assert (torch.gather(ids_shuffle, 1, ids_restore) == torch.arange(50)).all()


def test_masking_is_per_sample_and_seeded():
    x = torch.randn(8, 64, 4)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    _, m1, _, _ = random_masking(x, 0.75, g1)
    _, m2, _, _ = random_masking(x, 0.75, g2)
    assert torch.equal(m1, m2)
    assert len({tuple(r.tolist()) for r in m1}) == 8  # different per sample


@pytest.mark.parametrize("c", [1, 2, 4])
def test_patchify_roundtrip(c):
    x = torch.randn(3, c, 48, 32)
    p = patchify(x, 16)
    assert p.shape == (3, 6, 16 * 16 * c)
    torch.testing.assert_close(unpatchify(p, 16, c, (3, 2)), x)
    # a patch holds exactly the pixels of its 16x16 window, channels last
    torch.testing.assert_close(p[0, 1].reshape(16, 16, c).permute(2, 0, 1), x[0, :, :16, 16:32])


def test_pos_embed_is_sincos_and_interpolates():
    enc = SarViT(tiny(1))
    pe = enc.pos_embed  # [1, 1 + 16, 192]
    assert pe.shape == (1, 17, 192)
    assert torch.all(pe[0, 0] == 0)
    assert pe[0, 1:].abs().max() <= 1.0 + 1e-6
    same = enc.pos_embed_for((4, 4))
    torch.testing.assert_close(same, pe)
    bigger = enc.pos_embed_for((8, 6))
    assert bigger.shape == (1, 1 + 48, 192)
    torch.testing.assert_close(bigger[:, 0], pe[:, 0])
    # other input sizes run and use the resampled grid
    assert enc.forward_features(torch.randn(1, 1, 128, 96)).shape == (1, 1 + 48, 192)
    mae = MAE(tiny(1), SMALL_DEC)
    assert mae(torch.randn(1, 1, 96, 96)).pred.shape == (1, 36, 256)


def test_presets_match_sarmae_shapes():
    b, large = PRESETS["base"], PRESETS["large"]
    assert (b.embed_dim, b.depth, b.num_heads, b.patch_size, b.img_size) == (768, 12, 12, 16, 224)
    assert (large.embed_dim, large.depth, large.num_heads) == (1024, 24, 16)
    d = DecoderConfig()
    assert (d.embed_dim, d.depth, d.num_heads) == (512, 8, 16)
    assert MAE(preset("tiny"), mask_ratio=0.75).mask_ratio == 0.75


def test_cpu_runtime_has_no_autocast():
    dev = resolve_device("auto" if not torch.cuda.is_available() else "cpu")
    with autocast(dev):
        y = SarViT(tiny(1))(torch.randn(1, 1, 64, 64))
    assert y.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_forward():
    dev = resolve_device("cuda")
    mae = MAE(tiny(2), SMALL_DEC).to(dev)
    with autocast(dev):
        out = mae(torch.randn(2, 2, 64, 64, device=dev))
    out.loss.backward()
    assert torch.isfinite(out.loss)
