"""`--set KEY=VALUE` and the options of `finetune` and `pretrain` reach the resolved config:
precedence (recipe, --config, --set, options), YAML values, unknown keys refused with close
matches. The training itself is replaced by a recorder: nothing trains here."""

import pytest

from sarmae_cli.errors import UsageError
from sarmae_cli.train import finetune as ft
from sarmae_cli.train import pretrain as pt
from sarmae_cli.train.config import set_layer
from sarmae_cli.train.finetune_config import FinetuneConfig


@pytest.fixture
def finetune_calls(monkeypatch, tmp_path):
    """Records what `sarmae finetune` passes to the library instead of training (the dataset,
    `tmp_path`, holds one chip: an empty folder is refused before the library is called)."""
    (tmp_path / "A").mkdir()
    (tmp_path / "A" / "x.png").write_bytes(b"")
    calls = []

    def record(cfg, output, seeds, resume=False, overwrite=False, run_dir=None, command=None, log=None):
        calls.append({"cfg": cfg, "output": output, "seeds": seeds, "resume": resume, "overwrite": overwrite})
        return {"summary": {"overall_accuracy": {"mean": 0.5, "std": 0.0, "n": 1}}}

    monkeypatch.setattr(ft, "finetune", record)
    return calls


def test_set_layer_reads_yaml_values_into_a_nested_layer():
    layer = set_layer(
        [
            "augment.crop_scale=[0.85,1.0]",
            "augment.speckle=0.5",
            "model.freeze_encoder=true",
            "data.pairing=AFTER:MASK",
            "loop.max_steps=5",
            "augment.speckle=0.25",  # a later pair wins
        ],
        FinetuneConfig,
    )
    assert layer == {
        "augment": {"crop_scale": [0.85, 1.0], "speckle": 0.25},
        "model": {"freeze_encoder": True},
        "data": {"pairing": "AFTER:MASK"},
        "loop": {"max_steps": 5},
    }
    assert set_layer(None) == {} and set_layer(["a.b=x"]) == {"a": {"b": "x"}}  # unchecked without a class


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("augment.specle=0.5", "unknown config key(s) augment.specle in --set augment.specle=0.5 "
         "(did you mean augment.speckle?); known in augment: "),
        ("data.val_fractoin=0.1", "(did you mean data.val_fraction"),
        ("lop.epochs=1", "unknown config key(s) lop in --set lop.epochs=1 (did you mean loop?)"),
        ("lr.peak=1", "config key lr has no sub-keys in --set lr.peak=1"),
        ("augment.speckle", "--set 'augment.speckle' must be KEY=VALUE"),
        ("=1", "must be KEY=VALUE"),
        ("blr=[1", "--set blr=[1: the value is not valid YAML"),
    ],
)  # fmt: skip
def test_set_layer_refuses_bad_pairs(pair, message):
    with pytest.raises(UsageError) as e:
        set_layer([pair], FinetuneConfig)
    assert message in str(e.value)


def test_finetune_options_set_and_config_in_order(invoke, tmp_path, finetune_calls):
    conf = tmp_path / "c.yaml"
    conf.write_text("augment: {speckle: 0.1, intensity: 0.3}\nloop: {epochs: 7, batch_size: 16}\n")
    out = tmp_path / "m.safetensors"
    r = invoke(
        "finetune", "--task", "classification", tmp_path, "-o", out, "--config", conf,
        "--set", "augment.speckle=0.5", "--set", "loop.epochs=9", "--epochs", "11",
        "--set", "augment.crop_scale=[0.85,1.0]", "--set", "model.decoder=fpn",
        "--set", "data.class_names=[land,water]", "--set", "model.freeze_encoder=true",
        "--workers", "2", "--ckpt-minutes", "2.5", "--chip-size", "64", "--fit", "center_crop",
        "--input-scale", "db", "--val-fraction", "0.25", "--seeds", "3,4", "--init", "random",
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    (call,) = finetune_calls
    cfg = call["cfg"]
    assert call["output"] == out and call["seeds"] == [3, 4]
    assert cfg.augment.speckle == 0.5 and cfg.augment.intensity == 0.3  # --set over --config
    assert cfg.loop.epochs == 11 and cfg.loop.batch_size == 16  # the option over --set
    assert cfg.augment.crop_scale == (0.85, 1.0) and cfg.model.decoder == "fpn"
    assert cfg.data.class_names == ["land", "water"] and cfg.model.freeze_encoder is True
    assert cfg.loop.num_workers == 2 and cfg.loop.ckpt_minutes == 2.5
    assert (cfg.data.chip_size, cfg.data.fit, cfg.data.scaling) == (64, "center_crop", "db")
    assert cfg.data.val_fraction == 0.25 and cfg.model.init == "random"
    assert r.stdout.splitlines()[0] == "overall_accuracy: 50.00 ± 0.00 (n=1)"


def test_finetune_input_scale_auto_detects_whatever_the_config_says(invoke, tmp_path, finetune_calls):
    out = tmp_path / "m.safetensors"
    base = ("finetune", "--task", "segmentation", tmp_path, "-o", out, "--set", "data.scaling=db")
    assert invoke(*base).exit_code == 0
    assert invoke(*base, "--input-scale", "auto").exit_code == 0
    assert [c["cfg"].data.scaling for c in finetune_calls] == ["db", "auto"]  # auto: detected
    assert finetune_calls[0]["cfg"].loop.ckpt_minutes == 10.0  # the default


def test_finetune_unknown_set_key_is_a_usage_error(invoke, tmp_path, finetune_calls):
    r = invoke(
        "finetune", "--task", "classification", tmp_path, "-o", tmp_path / "m.safetensors",
        "--set", "augment.specle=0.5",
    )  # fmt: skip
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("Error: unknown config key(s) augment.specle in --set augment.specle=0.5")
    assert "did you mean augment.speckle?" in r.stderr and finetune_calls == []


def test_pretrain_renamed_options_and_set(invoke, tmp_path, monkeypatch):
    seen = []

    def record(cfg, output, resume=False, command=None):
        seen.append(cfg)
        raise UsageError("recorded")

    monkeypatch.setattr(pt, "run_pretrain", record)
    (tmp_path / "x.png").write_bytes(b"")  # a source folder without images is refused up front
    r = invoke(
        "pretrain", tmp_path, "-o", tmp_path / "run", "--workers", "3", "--chip-size", "96",
        "--fit", "center_crop", "--input-scale", "uint16", "--ckpt-minutes", "0", "--ckpt-every", "50",
        "--set", "loop.warmup_epochs=2", "--set", "sare.mode=lognormal", "--seed", "5",
    )  # fmt: skip
    assert r.exit_code == 2 and r.stderr == "Error: recorded\n"
    (cfg,) = seen
    assert cfg.loop.num_workers == 3 and cfg.model.img_size == 96 and cfg.data.chip_fit == "center_crop"
    assert cfg.data.scaling == "uint16" and cfg.loop.ckpt_minutes == 0 and cfg.loop.ckpt_every == 50
    assert cfg.loop.warmup_epochs == 2 and cfg.sare.mode == "lognormal" and cfg.loop.seed == 5
    r = invoke("pretrain", tmp_path, "-o", tmp_path / "run", "--set", "sarc.wieght=0.5")
    assert r.exit_code == 2 and "did you mean sarc.weight?" in r.stderr and len(seen) == 1
