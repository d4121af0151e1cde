"""`sarmae finetune` on small real subsets (MSTAR, OMBRIA) with a 2-block ViT-Tiny: the loss
goes down, seeds give mean ± std, resume equals an uninterrupted run, the saved weights are
self-describing and give the same predictions when loaded (in Python, `sarmae evaluate` and
`sarmae classify`), and the bad inputs of issue 5 fail with one line."""

import csv
import json

import numpy as np
import pytest
import torch

from sarmae_cli.data import labelled
from sarmae_cli.data.augment import AugmentConfig
from sarmae_cli.data.preprocess import InputSpec
from sarmae_cli.errors import UsageError
from sarmae_cli.model import WeightsMeta, preset
from sarmae_cli.model.checkpoint import read_weights
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.factory import EncoderModel, load_model, save_model
from sarmae_cli.model.heads import Classifier, SegmentationLoss, Segmenter, param_groups_lrd
from sarmae_cli.train import evaluate as ev
from sarmae_cli.train import finetune as ft
from sarmae_cli.train import finetune_config as fc
from sarmae_cli.train import finetune_data
from tests.train.conftest import CLASSES

TINY = {"model": {"init": "random", "preset": "tiny", "depth": 2, "channels": 32, "decoder": "fpn"}}


@pytest.fixture
def ombria(data_dir, tmp_path):
    """8 training and 2 validation OMBRIA pairs (links)."""
    src = data_dir / "ombria_s1"
    out = {}
    for split, n in (("train", 8), ("test", 2)):
        for d in ("AFTER", "MASK"):
            (tmp_path / "ombria" / split / d).mkdir(parents=True)
        for img in sorted((src / split / "AFTER").iterdir())[:n]:
            mask = src / split / "MASK" / img.name.replace("after", "mask")
            (tmp_path / "ombria" / split / "AFTER" / img.name).symlink_to(img)
            (tmp_path / "ombria" / split / "MASK" / mask.name).symlink_to(mask)
        out[split] = tmp_path / "ombria" / split
    return out["train"], out["test"]


def _cls_cfg(train, val, **loop):
    layer = {
        **TINY,
        "data": {"train": str(train), "val": str(val), "chip_size": 32},
        "augment": {"flips": False, "rot90": False, "crop_scale": [1.0, 1.0]},
        "lr": 1e-3,
        "loop": {
            "batch_size": 12,
            "warmup_steps": 2,
            "max_steps": 24,
            "progress": False,
            "log_every": 1,
            **loop,
        },
    }
    return fc.resolve_config("classification", layer)


def _losses(run_dir):
    with open(run_dir / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_classification_learns_and_saves_self_describing_weights(mstar, tmp_path):
    train, val = mstar
    out = tmp_path / "mstar.safetensors"
    doc = ft.finetune(_cls_cfg(train, val), out, seeds=[0], command="sarmae finetune test")
    losses = _losses(tmp_path / "mstar.run" / "seed0")
    assert len(losses) == 24
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1

    run = doc["runs"][0]
    assert run["num_samples"] == 18 and run["data"]["train_counts"] == {c: 12 for c in CLASSES}
    cm = np.array(run["confusion_matrix"])
    assert cm.sum() == 18 and cm.sum(1).tolist() == [6, 6, 6]
    assert run["overall_accuracy"] == pytest.approx(np.trace(cm) / 18)

    model, meta = load_model(out)
    assert isinstance(model, Classifier) and meta.task == "classification"
    assert meta.class_names == list(CLASSES) and meta.bands == ["SAR"]
    assert meta.input_scaling["mode"] == "uint8"
    assert meta.training["preprocess"] == {"chip_size": 32, "fit": "resize"}
    assert meta.encoder["img_size"] == 32 and meta.tile == {"size": 32, "overlap": 0}
    assert meta.training["config"]["data"]["train"] == str(train)
    assert meta.metrics["validation"]["overall_accuracy"] == run["overall_accuracy"]
    assert meta.provenance["command"] == "sarmae finetune test" and meta.provenance["init"] == "random"
    saved = json.loads(ev.metrics_path(out).read_text())
    assert saved["runs"][0]["confusion_matrix"] == run["confusion_matrix"]
    assert ev.confusion_path(out).read_bytes()[:4] == b"\x89PNG"

    # the loaded weights predict exactly what the evaluation measured
    m, _ = ev.evaluate_weights(out, val, torch.device("cpu"))
    assert m["confusion_matrix"] == run["confusion_matrix"] and m["tta"] == 1
    m6, _ = ev.evaluate_weights(out, val, torch.device("cpu"), tta=6)  # six crop views per chip
    assert m6["tta"] == 6 and np.sum(m6["confusion_matrix"]) == 18


def test_eval_only_scores_the_share_a_val_fraction_run_held_out(mstar, tmp_path, invoke):
    train, _ = mstar
    out = tmp_path / "sel.safetensors"
    cfg = _cls_cfg(train, None, max_steps=3)
    cfg.data.val, cfg.data.val_fraction, cfg.data.split_seed = None, 0.25, 3
    run = ft.finetune(cfg, out, seeds=[0])["runs"][0]
    assert run["num_samples"] == 9  # 3 of each class's 12 chips
    r = invoke("evaluate", train, "-w", out, "--val-fraction", "0.25", "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["confusion_matrix"] == run["confusion_matrix"]  # the same 9 chips, the stored split seed
    assert m["data"] == f"0.25 of {train} (split seed 3)"
    whole = json.loads(invoke("evaluate", train, "-w", out, "--json").stdout)
    assert whole["num_samples"] == 36


@pytest.mark.parametrize("crop", [None, 48])
def test_saved_classifier_predicts_the_same_in_classify(mstar, tmp_path, invoke, crop):
    train, val = mstar
    out = tmp_path / "m.safetensors"
    cfg = _cls_cfg(train, val, max_steps=3)
    cfg.data.crop = crop  # 158-px chips: centre 48 px zoomed to 32, or the whole chip resized
    ft.finetune(cfg, out, seeds=[0])
    model, meta = load_model(out)
    spec = InputSpec.from_meta(meta.to_dict())
    assert (spec.fit, spec.crop, spec.chip_size) == ("resize", crop, 32)
    files = sorted(p for c in CLASSES for p in (val / c).iterdir())
    x = torch.stack([spec.chip(labelled.read_image(p)) for p in files])
    with torch.no_grad():
        probs = model(x).softmax(-1)
    r = invoke("classify", *files, "-w", out, "--format", "jsonl", "--top-k", "3", "--quiet")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(p) for p in files]
    top1 = [row["top"][0] for row in rows]
    got = [t["class"] if isinstance(t, dict) else t[0] for t in top1]
    assert got == [CLASSES[i] for i in probs.argmax(-1).tolist()]


def test_seeds_give_mean_and_std(mstar, tmp_path):
    train, val = mstar
    out = tmp_path / "s.safetensors"
    doc = ft.finetune(_cls_cfg(train, val, max_steps=2), out, seeds=[3, 4])
    accs = [r["overall_accuracy"] for r in doc["runs"]]
    assert doc["seeds"] == [3, 4]
    assert doc["summary"]["overall_accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert doc["summary"]["overall_accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert (tmp_path / "s.run" / "seed3" / "checkpoint.pt").is_file()
    assert (tmp_path / "s.run" / "seed4" / "checkpoint.pt").is_file()


def test_resume_equals_uninterrupted(mstar, tmp_path, monkeypatch):
    train, val = mstar
    cfg = _cls_cfg(train, val, max_steps=6, ckpt_every=2)
    cfg.augment = AugmentConfig(flips=True, rot90=True, crop_scale=(0.5, 1.0), speckle=0.5, intensity=0.5)
    ft.finetune(cfg, tmp_path / "a.safetensors", seeds=[0])

    calls = {"n": 0}
    original = labelled.ChipDataset.__getitem__

    def crashing(self, i):
        calls["n"] += 1
        if self.augment is not None and calls["n"] > 12 * 3 + 5:  # during step 4 (checkpoint at 2)
            raise KeyboardInterrupt
        return original(self, i)

    monkeypatch.setattr(labelled.ChipDataset, "__getitem__", crashing)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(cfg, tmp_path / "b.safetensors", seeds=[0])
    assert not (tmp_path / "b.safetensors").exists()
    monkeypatch.setattr(labelled.ChipDataset, "__getitem__", original)
    ft.finetune(cfg, tmp_path / "b.safetensors", seeds=[0], resume=True)

    a, _ = read_weights(tmp_path / "a.safetensors")
    b, _ = read_weights(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(tmp_path / "a.run" / "seed0") == _losses(tmp_path / "b.run" / "seed0")


def test_linear_probe_from_a_weights_file_with_band_adaptation(mstar, tmp_path):
    """A 3-band encoder (like imported official weights) serves 1-band MSTAR: the patch
    embedding is summed over bands, and a linear probe leaves the encoder untouched."""
    train, val = mstar
    enc_cfg = preset("tiny", in_chans=3, img_size=32, depth=2)
    norm = {"mean": [0.5] * 3, "std": [0.5] * 3}
    meta = WeightsMeta("encoder", enc_cfg.to_dict(), ["SAR"] * 3, {"mode": "uint8"}, norm)
    save_model(tmp_path / "enc.safetensors", EncoderModel(SarViT(enc_cfg)), meta)
    cfg = _cls_cfg(train, val, max_steps=3)
    cfg.model = fc.ModelConfig(init=str(tmp_path / "enc.safetensors"), freeze_encoder=True)
    out = tmp_path / "probe.safetensors"
    ft.finetune(cfg, out, seeds=[0])
    init, _ = read_weights(tmp_path / "enc.safetensors")
    got, meta = read_weights(out)
    w = init["encoder.patch_embed.proj.weight"]  # [d, 3, p, p]
    assert torch.equal(got["encoder.patch_embed.proj.weight"], w.sum(1, keepdim=True))
    assert torch.equal(got["encoder.blocks.1.mlp.fc2.weight"], init["encoder.blocks.1.mlp.fc2.weight"])
    assert not torch.equal(got["head.weight"], torch.zeros_like(got["head.weight"]))
    assert meta.channel_adaptation["from_in_chans"] == 3 and meta.normalization["mean"] == [0.5]
    assert meta.provenance["init"] == str(tmp_path / "enc.safetensors")


def test_segmentation_on_ombria_and_eval_only(ombria, tmp_path, invoke):
    train, val = ombria
    layer = {
        "model": {**TINY["model"], "refine": 4},  # with the full-resolution pixel refiner
        "data": {"train": str(train), "val": str(val), "chip_size": 64},
        "lr": 1e-3,
        "loop": {"batch_size": 4, "warmup_steps": 1, "max_steps": 6, "progress": False, "log_every": 1},
    }
    out = tmp_path / "water.safetensors"
    doc = ft.finetune(fc.resolve_config("segmentation", layer), out, seeds=[0])
    run = doc["runs"][0]
    assert run["class_names"] == ["background", "water"] and run["num_pixels"] == 2 * 256 * 256
    assert run["data"]["mask_values"] == [0, 255]
    model, meta = load_model(out)
    assert isinstance(model, Segmenter) and meta.tile == {"size": 64, "overlap": 16}
    assert meta.head["refine"] == 4 and model.head.refiner.out.weight.abs().sum() > 0  # it trained
    assert meta.training["mask_values"] == [0, 255]
    r = invoke("evaluate", val, "--weights", out, "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["confusion_matrix"] == run["confusion_matrix"] and m["miou"] == pytest.approx(run["miou"])
    r = invoke("evaluate", val, "--weights", out, "--tta", "6", "-o", tmp_path / "m.json")
    _one_line(r, 2, "--tta applies to classification weights")
    assert not (tmp_path / "m.json").exists()


def test_negative_refine_is_refused(tmp_path):
    cfg = fc.resolve_config("segmentation", {"model": {"refine": -1}, "data": {"train": str(tmp_path)}})
    with pytest.raises(UsageError, match="model.refine must be >= 0"):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists()


def test_param_groups_layer_decay():
    model = Classifier(preset("tiny", depth=3, img_size=32), 4)
    groups = param_groups_lrd(model, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["head.weight"])] == 1.0
    assert scale[id(named["encoder.norm.weight"])] == 1.0
    assert scale[id(named["encoder.blocks.2.attn.qkv.weight"])] == 0.5
    assert scale[id(named["encoder.blocks.0.attn.qkv.weight"])] == 0.5**3
    assert scale[id(named["encoder.patch_embed.proj.weight"])] == 0.5**4
    assert decay[id(named["encoder.blocks.0.attn.qkv.bias"])] == 0.0
    assert decay[id(named["encoder.cls_token"])] == 0.0 and decay[id(named["head.weight"])] == 0.05
    assert id(named["encoder.pos_embed"]) not in scale  # fixed sin-cos: not trained


def test_segmentation_loss_ignores_pixels():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    ignored = target.clone()
    ignored[:, :4] = -1
    loss = SegmentationLoss(ignore_index=-1, dice_weight=0.5)
    keep = ignored != -1
    ce = torch.nn.functional.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    probs = logits.softmax(1).permute(0, 2, 3, 1)[keep]  # [N, K]
    onehot = torch.nn.functional.one_hot(target[keep], 3).float()
    dice = 1 - (2 * (probs * onehot).sum(0) / (probs.sum(0) + onehot.sum(0)).clamp_min(1e-7))
    dice = (dice * (onehot.sum(0) > 0)).mean()
    assert loss(logits, ignored).item() == pytest.approx((ce + 0.5 * dice).item(), rel=1e-4)


def test_class_weights_weight_the_cross_entropy():
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    target[:, :2] = -1
    weight = ft.class_weight_tensor([1.0, 3.0], 2)
    loss = SegmentationLoss(ignore_index=-1, dice_weight=0.0, weight=weight)
    keep = target != -1
    flat, t = logits.permute(0, 2, 3, 1)[keep], target[keep]  # [N, K], [N]
    nll = -flat.log_softmax(1).gather(1, t[:, None])[:, 0]
    w = weight[t]
    assert loss(logits, target).item() == pytest.approx(((w * nll).sum() / w.sum()).item(), rel=1e-5)
    assert ft.class_weight_tensor(None, 2) is None
    for bad in ([1.0], [1.0, 0.0], [1.0, 2.0, 3.0]):
        with pytest.raises(UsageError, match="one positive weight per class"):
            ft.class_weight_tensor(bad, 2)


# ---------------------------------------------------------------- bad input, through the CLI


def _one_line(r, code, *fragments):
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: ")
    for f in fragments:
        assert f in r.stderr, r.stderr


def test_cli_bad_inputs(mstar, tmp_path, invoke, monkeypatch):
    train, val = mstar
    out = tmp_path / "x.safetensors"
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    r = invoke("finetune", "--task", "classification", train, "-o", out)
    _one_line(r, 1, "shipped encoder is missing", "git checkout", "--init random")
    r = invoke(
        "finetune",
        "--task",
        "classification",
        train,
        "--val",
        val,
        "--init",
        "random",
        "--shots",
        "50",
        "-o",
        out,
    )
    _one_line(r, 1, "too few training images for --shots 50", "'2S1' has 12", "at most 12")
    assert not out.exists()
    (train / "EMPTY").mkdir()
    r = invoke("finetune", "--task", "classification", train, "--init", "random", "-o", out)
    _one_line(r, 1, "class folder", "EMPTY has no images")
    (train / "EMPTY").rmdir()
    r = invoke("finetune", train, "-o", out)
    _one_line(r, 2, "--task is required")
    r = invoke("finetune", "--task", "classification", train, "--init", "nope.safetensors", "-o", out)
    _one_line(r, 2, "--init nope.safetensors: no such weights file")
    (tmp_path / "bad.yaml").write_text("loop:\n  bogus: 1\n")
    r = invoke("finetune", "--task", "classification", train, "--config", tmp_path / "bad.yaml", "-o", out)
    _one_line(r, 2, "unknown config key(s) loop.bogus")
    r = invoke("evaluate", val)
    _one_line(r, 2, "Missing option '--weights' / '-w'")
    r = invoke("finetune", "--task", "classification", train, "--tta", "6", "-o", out)
    _one_line(r, 2, "No such option: --tta")
    assert not out.exists()

    # weights whose classes, bands or task cannot serve the dataset
    enc = preset("tiny", in_chans=1, img_size=32, depth=2)
    norm = {"mean": [0.5], "std": [0.5]}
    meta = WeightsMeta(
        "classification", enc.to_dict(), ["SAR"], {"mode": "uint8"}, norm, class_names=["2S1", "BMP2"]
    )
    save_model(tmp_path / "two.safetensors", Classifier(enc, 2), meta)
    r = invoke("evaluate", val, "-w", tmp_path / "two.safetensors")
    _one_line(r, 1, "class 'T72'", "is unknown to the model")
    enc2 = preset("tiny", in_chans=2, img_size=32, depth=2)
    norm2 = {"mean": [0.5] * 2, "std": [0.5] * 2}
    meta2 = WeightsMeta(
        "classification", enc2.to_dict(), ["VV", "VH"], {"mode": "db"}, norm2, class_names=list(CLASSES)
    )
    save_model(tmp_path / "vvvh.safetensors", Classifier(enc2, 3), meta2)
    r = invoke("evaluate", val, "-w", tmp_path / "vvvh.safetensors")
    _one_line(r, 2, "gives 1 band(s) but the weights expect 2 (VV, VH)")
    meta3 = WeightsMeta("encoder", enc.to_dict(), ["SAR"], {"mode": "uint8"}, {"mean": [0.5], "std": [0.5]})
    save_model(tmp_path / "enc.safetensors", EncoderModel(SarViT(enc)), meta3)
    r = invoke("evaluate", val, "-w", tmp_path / "enc.safetensors")
    _one_line(r, 1, "'encoder' weights without a task head")


def test_cli_refuses_to_overwrite_and_overlapping_sets(mstar, tmp_path, invoke):
    train, val = mstar
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep")
    r = invoke("finetune", "--task", "classification", train, "--val", val, "--init", "random", "-o", out)
    _one_line(r, 2, "exists; pass --overwrite")
    assert out.read_bytes() == b"keep"
    r = invoke(
        "finetune",
        "--task",
        "classification",
        train,
        "--val",
        train,
        "--init",
        "random",
        "-o",
        tmp_path / "y.safetensors",
    )
    _one_line(r, 1, "validation images are also training images")


def test_cli_segmentation_bad_inputs(ombria, tmp_path, invoke):
    train, val = ombria
    out = tmp_path / "w.safetensors"
    r = invoke("finetune", "--task", "segmentation", train, "--val", train, "--init", "random", "-o", out)
    _one_line(r, 1, "validation images are also training images")
    r = invoke("finetune", "--task", "segmentation", train, "--init", "random", "--shots", "3", "-o", out)
    _one_line(r, 2, "--shots applies to classification")
    pairing = ("--set", "data.pairing=AFTER")
    r = invoke("finetune", "--task", "segmentation", train, "--init", "random", *pairing, "-o", out)
    _one_line(r, 2, "pairing 'AFTER' must be IMAGE_DIR:MASK_DIR")
    mask_values = ("--set", "data.mask_values=[0,1]")
    args = ["--task", "segmentation", train, "--val", val, "--init", "random", *mask_values]
    r = invoke("finetune", *args, "-o", out)
    _one_line(r, 1, "has values [255] outside the class values [0, 1]")
    for body, msg in (
        ("class_weights: [1.0]", "one positive weight per class (2 classes)"),
        ("model: {refine: -2}", "model.refine must be >= 0"),
    ):
        (tmp_path / "bad.yaml").write_text(body)
        r = invoke("finetune", *args[:-2], "--config", tmp_path / "bad.yaml", "--max-steps", "1", "-o", out)
        _one_line(r, 2, msg)
    assert not out.exists() and not (tmp_path / "w.run").exists()


def test_stretch_option_reaches_the_input_spec():
    raws = [np.full((1, 8, 8), 100, np.uint8), np.full((1, 8, 8), 30, np.uint8)]
    cfg = fc.resolve_config("segmentation", {"data": {"stretch": "percentile"}})
    spec = finetune_data.input_spec(cfg, raws, None, 8)
    assert (spec.scaling.mode, spec.scaling.stretch) == ("uint8", "percentile")
    plain = finetune_data.input_spec(fc.resolve_config("segmentation"), raws, None, 8)
    assert plain.scaling.stretch == "fixed"


def test_shift_reaches_the_training_chips_only(mstar):
    train, val = mstar
    cfg = _cls_cfg(train, val)
    cfg.augment.shift = 4
    prep = finetune_data.prepare_classification(cfg, 0, 32)
    assert prep.train.chips[0].shape[-1] == 32 + 8 and prep.train[0][0].shape[-1] == 32
    assert prep.val.chips[0].shape[-1] == 32 and prep.spec.preprocess_meta()["chip_size"] == 32


@pytest.mark.parametrize(
    ("task", "shift", "msg"),
    [
        ("classification", -1, "augment.shift must be >= 0"),
        ("segmentation", 4, "augment.shift applies to classification"),
    ],
)
def test_bad_shift_is_refused(tmp_path, task, shift, msg):
    cfg = fc.resolve_config(task, {"augment": {"shift": shift}, "data": {"train": str(tmp_path)}})
    with pytest.raises(UsageError, match=msg):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize(
    ("key", "value", "msg"),
    [
        ("crop_scale", [0.0, 1.0], "augment.crop_scale must satisfy 0 < low <= high <= 1"),
        ("crop_scale", [0.9, 0.8], "augment.crop_scale must satisfy"),
        ("crop_scale", [0.8, 1.2], "augment.crop_scale must satisfy"),
        ("crop_ratio", [1.3, 0.7], "augment.crop_ratio must satisfy 0 < low <= high"),
        ("crop_ratio", "square", "augment.crop_ratio must be two numbers"),
    ],
)
def test_bad_crop_range_is_refused(tmp_path, key, value, msg):
    cfg = fc.resolve_config("classification", {"augment": {key: value}, "data": {"train": str(tmp_path)}})
    with pytest.raises(UsageError, match=msg):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists()


def test_mixup_and_cutmix_train_on_mixed_chips_with_soft_targets(mstar, tmp_path):
    train, val = mstar
    cfg = _cls_cfg(train, val, max_steps=3)
    cfg.augment.mixup, cfg.augment.cutmix = 0.8, 1.0
    seen: list[torch.Tensor] = []

    class Spy(torch.nn.Module):  # [B, C, S, S] -> [B, 3]: records what the model is given
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return x.mean((1, 2, 3))[:, None] * self.w

    task = ft.FinetuneTask(Spy(), cfg, 3)
    x = torch.stack([torch.full((1, 32, 32), float(i)) for i in range(4)])  # chip i holds the value i
    y = torch.tensor([0, 1, 2, 0])
    np.random.seed(0)  # timm's Mixup draws from numpy's global generator (saved in checkpoints)
    for _ in range(8):
        loss, m = task.training_step(task.model, (x.clone(), y))
        # all-zero logits: the loss is the cross-entropy against a soft target, log 3
        assert loss.item() == pytest.approx(np.log(3), rel=1e-5) and 0 <= m["acc"] <= 1
    first = [v[0] for v in seen]  # chip 0, mixed with chip 3
    assert all(not torch.equal(v, x) for v in seen)  # every batch was mixed (prob 1)
    blended = [c for c in first if len(torch.unique(c)) == 1 and 0 < float(c[0, 0, 0]) < 3]
    pasted = [c for c in first if set(torch.unique(c).tolist()) == {0.0, 3.0}]
    assert blended and pasted and len(blended) + len(pasted) == 8  # mixup and cutmix batches
    # the training accuracy counts the larger component's class (all-zero logits pick class 0)
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.3, 0.7, 0.0], [0.55, 0.0, 0.45], [0.1, 0.0, 0.9]])
    task.mixup = lambda xb, yb: (xb, soft)
    assert task.training_step(task.model, (x.clone(), torch.tensor([1, 0, 2, 0])))[1]["acc"] == 0.5

    out = tmp_path / "mix.safetensors"
    doc = ft.finetune(cfg, out, seeds=[0])  # end to end: trains, evaluates, saves
    assert doc["runs"][0]["steps"] == 3
    assert load_model(out)[1].training["config"]["augment"]["mixup"] == 0.8


@pytest.mark.parametrize(
    ("task", "layer", "msg"),
    [
        ("classification", {"augment": {"mixup": -0.1}}, "alphas >= 0"),
        ("segmentation", {"augment": {"cutmix": 1.0}}, "apply to classification"),
        ("classification", {"augment": {"mixup": 0.8}, "class_weights": [1, 2]}, "class_weights cannot"),
        ("classification", {"augment": {"mixup": 0.8}, "loop": {"batch_size": 7}}, "even --batch-size"),
    ],
)
def test_bad_mixing_is_refused(tmp_path, task, layer, msg):
    cfg = fc.resolve_config(task, {**layer, "data": {"train": str(tmp_path)}})
    with pytest.raises(UsageError, match=msg):
        ft.finetune(cfg, tmp_path / "w.safetensors", seeds=[0])
    assert not (tmp_path / "w.safetensors").exists()
