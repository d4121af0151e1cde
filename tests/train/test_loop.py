"""The shared training loop on a toy regression task: schedule, parameter groups,
accumulation, exact resume (in-process interruption and SIGKILL), NaN stop, config refusal,
a batch size lowered to a small dataset, time-based checkpoints."""

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sarmae_cli.errors import OutputExistsError, UsageError
from sarmae_cli.model import MAE, preset
from sarmae_cli.train import loop
from sarmae_cli.train.config import config_diff, from_dict, load_config_file, merge_config, to_dict
from sarmae_cli.train.loop import (
    CHECKPOINT,
    LoopConfig,
    SeededDataset,
    TrainingDiverged,
    TrainTask,
    default_param_groups,
    fit_batch_size,
    get_lr,
    load_checkpoint,
    train,
)

ROOT = Path(__file__).resolve().parents[2]


class NoisyLinearData(Dataset):
    """y = x.w + noise, where x and the noise are drawn at __getitem__ time from the global
    torch generator (the loop must make this reproducible)."""

    def __init__(self, n: int = 64) -> None:
        self.n = n
        self.w = torch.arange(1.0, 5.0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(4) + i / self.n
        return x, (x @ self.w + 0.1 * torch.randn(())).reshape(1)


class Interrupted(Exception):
    pass


class ToyTask(TrainTask):
    """Linear model with dropout (model-side randomness); can fail at a given step."""

    def __init__(self, dropout: float = 0.2, stop_at: int | None = None, nan_at: int | None = None) -> None:
        torch.manual_seed(123)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(dropout), nn.Linear(16, 1))
        self.calls = 0
        self.stop_at, self.nan_at = stop_at, nan_at
        self.epochs_seen: list[int] = []
        self.batch_sizes: list[int] = []

    def training_step(self, model, batch):
        self.calls += 1
        self.batch_sizes.append(len(batch[0]))
        if self.stop_at is not None and self.calls == self.stop_at:
            if os.environ.get("TOY_SIGKILL"):
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return loss, {"mse": loss.item()}

    def on_epoch_end(self, epoch, run_dir):
        self.epochs_seen.append(epoch)
        return {"val": float(epoch)}


def cfg(**kw) -> LoopConfig:
    base = dict(max_steps=12, batch_size=8, lr=1e-2, warmup_steps=3, ckpt_every=5, log_every=1)
    base["progress"] = False
    return LoopConfig(**(base | kw))


def losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def run_toy(run_dir: str, stop_at: int | None = None, resume: bool = False) -> None:
    """Entry point for the SIGKILL test's subprocess."""
    train(ToyTask(stop_at=stop_at), NoisyLinearData(), cfg(), Path(run_dir), resume=resume)


def test_lr_schedule_warmup_then_cosine():
    lr = [get_lr(s, 1.0, 0.1, warmup=10, total=110) for s in range(111)]
    assert lr[0] == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr[4] == pytest.approx(0.5)
    assert lr[9] == pytest.approx(1.0)
    assert lr[10] == pytest.approx(1.0)  # cosine starts at the peak
    assert lr[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: midpoint
    assert lr[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:], strict=False))  # monotone decay
    assert get_lr(0, 1.0, 0.0, warmup=0, total=10) == pytest.approx(1.0)


def test_param_groups_no_decay_on_bias_norm_pos_cls():
    model = MAE(preset("tiny", img_size=32, depth=1), mask_ratio=0.75)
    groups = default_param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert "encoder.blocks.0.attn.qkv.weight" in decay
    assert "encoder.patch_embed.proj.weight" in decay
    for n in ("encoder.cls_token", "decoder.mask_token", "encoder.norm.weight", "encoder.norm.bias"):
        assert n in no_decay
    assert not any("pos_embed" in n for n in decay)  # frozen sin-cos: in neither group
    assert not decay & no_decay


def test_uninterrupted_run_writes_log_checkpoint_and_epoch_hook(tmp_path):
    task = ToyTask()
    res = train(task, NoisyLinearData(), cfg(), tmp_path / "run", full_config={"job": "toy"})
    assert res.step == 12 and res.epoch == 1  # 64 samples / 8 = 8 steps per epoch
    assert task.epochs_seen == [0]
    log = losses(tmp_path / "run")
    assert sorted(log) == list(range(1, 13))
    assert log[12] < log[1]
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ck["step"] == 12 and ck["config"]["job"] == "toy" and ck["config"]["loop"]["lr"] == 1e-2
    assert (tmp_path / "run" / "epochs.csv").read_text().startswith("epoch,step,val")


def test_accumulation_equals_larger_batch(tmp_path):
    # on CPU: exact equality needs fp32 (CUDA runs under bf16 autocast)
    a, b = ToyTask(dropout=0.0), ToyTask(dropout=0.0)
    train(a, NoisyLinearData(), cfg(batch_size=8, accum_steps=2, max_steps=4, device="cpu"), tmp_path / "a")
    train(b, NoisyLinearData(), cfg(batch_size=16, accum_steps=1, max_steps=4, device="cpu"), tmp_path / "b")
    torch.testing.assert_close(params(a.model), params(b.model), rtol=1e-5, atol=1e-6)
    assert losses(tmp_path / "a") == pytest.approx(losses(tmp_path / "b"), rel=1e-5)


@pytest.mark.parametrize("accum", [1, 2])
def test_resume_after_interruption_equals_uninterrupted(tmp_path, accum):
    ref = ToyTask()
    train(ref, NoisyLinearData(), cfg(accum_steps=accum), tmp_path / "ref")
    with pytest.raises(Interrupted):  # dies during step 7 (after the checkpoint of step 5)
        train(ToyTask(stop_at=7 * accum), NoisyLinearData(), cfg(accum_steps=accum), tmp_path / "cut")
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 5
    resumed = ToyTask()
    res = train(resumed, NoisyLinearData(), cfg(accum_steps=accum), tmp_path / "cut", resume=True)
    assert res.step == 12
    torch.testing.assert_close(params(resumed.model), params(ref.model), rtol=1e-6, atol=1e-7)
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "ref"), rel=1e-6)


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    ref = ToyTask()
    train(ref, NoisyLinearData(), cfg(), tmp_path / "ref")
    code = f"from tests.train.test_loop import run_toy; run_toy({str(tmp_path / 'cut')!r}, stop_at=9)"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "TOY_SIGKILL": "1"}, capture_output=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT)["step"] == 8  # epoch end
    resumed = ToyTask()
    train(resumed, NoisyLinearData(), cfg(), tmp_path / "cut", resume=True)
    torch.testing.assert_close(params(resumed.model), params(ref.model), rtol=1e-6, atol=1e-7)
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "ref"), rel=1e-6)


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at step 7 .*last good checkpoint"):
        train(ToyTask(nan_at=7), NoisyLinearData(), cfg(), tmp_path / "run")
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ck["step"] == 5
    assert all(math.isfinite(v.float().sum()) for v in ck["model"].values())


def test_resume_with_another_config_is_refused_naming_the_keys(tmp_path):
    train(ToyTask(), NoisyLinearData(), cfg(max_steps=5), tmp_path / "run", full_config={"model": "tiny"})
    with pytest.raises(UsageError, match=r"loop\.lr: 0\.01 -> 0\.02.*model: \"tiny\" -> \"base\""):
        train(
            ToyTask(),
            NoisyLinearData(),
            cfg(max_steps=5, lr=2e-2),
            tmp_path / "run",
            resume=True,
            full_config={"model": "base"},
        )
    # settings that do not change results may differ
    train(ToyTask(), NoisyLinearData(), cfg(max_steps=5, log_every=2), tmp_path / "run", resume=True,
          full_config={"model": "tiny"})  # fmt: skip
    # a setting newer than the checkpoint resumes at its default, and only there
    newer = {"model": "tiny", "zip_members": "*/Patch/*"}
    with pytest.raises(UsageError, match=r"zip_members: <absent> -> \"\*/Patch/\*\""):
        train(ToyTask(), NoisyLinearData(), cfg(max_steps=5), tmp_path / "run", resume=True,
              full_config=newer, config_defaults={"zip_members": "*"})  # fmt: skip
    res = train(ToyTask(), NoisyLinearData(), cfg(max_steps=5), tmp_path / "run", resume=True,
                full_config={**newer, "zip_members": "*"}, config_defaults={"zip_members": "*"})  # fmt: skip
    assert res.step == 5


def test_existing_run_needs_resume_and_resume_needs_a_run(tmp_path):
    train(ToyTask(), NoisyLinearData(), cfg(max_steps=2), tmp_path / "run")
    with pytest.raises(OutputExistsError, match="pass --resume"):
        train(ToyTask(), NoisyLinearData(), cfg(max_steps=2), tmp_path / "run")
    with pytest.raises(UsageError, match="no checkpoint.pt"):
        train(ToyTask(), NoisyLinearData(), cfg(max_steps=2), tmp_path / "new", resume=True)


def test_too_small_dataset_and_bad_config_are_usage_errors(tmp_path):
    # 4 samples cannot fill 8 accumulated micro-batches even at batch size 1
    with pytest.raises(UsageError, match="fewer than one optimizer step needs even at batch size 1"):
        train(ToyTask(), NoisyLinearData(n=4), cfg(accum_steps=8), tmp_path / "run")
    with pytest.raises(UsageError, match="--epochs N or --max-steps N"):
        train(ToyTask(), NoisyLinearData(), cfg(max_steps=None), tmp_path / "run2")
    with pytest.raises(UsageError, match="min_lr"):
        LoopConfig(epochs=1, lr=1e-4, min_lr=1e-3)
    for bad in (-1, float("nan")):
        with pytest.raises(UsageError, match="ckpt_minutes must be >= 0"):
            LoopConfig(epochs=1, ckpt_minutes=bad)
    assert LoopConfig(epochs=1, ckpt_minutes=0).ckpt_minutes == 0  # 0: off


def test_fit_batch_size_lowers_only_what_one_step_cannot_fill():
    assert fit_batch_size(cfg(batch_size=8), 64) == 8
    assert fit_batch_size(cfg(batch_size=64), 50) == 50
    assert fit_batch_size(cfg(batch_size=64), 51) == 50  # an even batch stays even (mixup pairs)
    assert fit_batch_size(cfg(batch_size=63), 51) == 51
    assert fit_batch_size(cfg(batch_size=64), 1) == 1
    # per process (the sampler drops the remainder) and per accumulated micro-batch: 50 // 2 // 2
    assert fit_batch_size(cfg(batch_size=64, accum_steps=2), 50, world_size=2) == 12
    assert fit_batch_size(cfg(batch_size=64, accum_steps=8), 4) == 0  # refused by train()


def test_batch_larger_than_dataset_is_lowered_with_one_note_and_resumes(tmp_path, capsys):
    """`--shots 5` gives a few dozen samples, fewer than the default batch of 64: the run uses
    the whole dataset per batch, says so once, stores that batch size and resumes with it."""
    data = NoisyLinearData(n=20)  # one step per epoch: a checkpoint at every step
    task = ToyTask(stop_at=4)
    with pytest.raises(Interrupted):
        train(task, data, cfg(batch_size=64, max_steps=6, progress=True), tmp_path / "run")
    notes = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("note:")]
    assert notes == ["note: batch size 64 does not fit the 20 training samples; training with batch size 20"]
    assert task.batch_sizes == [20] * 4
    ck = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    assert ck["step"] == 3 and ck["config"]["loop"]["batch_size"] == 20
    # the same command resumes (the same lowering, no config difference); quiet: no note
    resumed = ToyTask()
    res = train(resumed, data, cfg(batch_size=64, max_steps=6), tmp_path / "run", resume=True)
    assert res.step == 6 and resumed.batch_sizes == [20] * 3
    assert "note:" not in capsys.readouterr().err
    # and equals a run asked for batch size 20 in the first place
    ref = ToyTask()
    train(ref, data, cfg(batch_size=20, max_steps=6), tmp_path / "ref")
    torch.testing.assert_close(params(resumed.model), params(ref.model), rtol=1e-6, atol=1e-7)
    assert losses(tmp_path / "run") == pytest.approx(losses(tmp_path / "ref"), rel=1e-6)


def test_time_based_checkpoints_are_written_mid_run(tmp_path, monkeypatch):
    """With `ckpt_every=0`, a checkpoint every `ckpt_minutes` minutes besides the epoch end
    (step 8) and the end (step 12); the clock restarts at every checkpoint."""
    now = [0.0]  # loop.py's monotonic clock, in seconds; each step takes a minute
    fake_time = SimpleNamespace(monotonic=lambda: now[0], perf_counter=time.perf_counter)
    monkeypatch.setattr(loop, "time", fake_time)
    saved: list[tuple[int, bool]] = []
    real_save = loop.save_checkpoint

    def save(path: Path, state: dict) -> None:
        real_save(path, state)
        saved.append((state["step"], load_checkpoint(path)["step"] == state["step"]))

    monkeypatch.setattr(loop, "save_checkpoint", save)

    class MinuteSteps(ToyTask):
        def training_step(self, model, batch):
            now[0] += 60.0
            return super().training_step(model, batch)

    run = tmp_path / "run"
    res = train(MinuteSteps(), NoisyLinearData(), cfg(ckpt_every=0, ckpt_minutes=2.5), run)
    assert res.step == 12
    assert saved == [(3, True), (6, True), (8, True), (11, True), (12, True)]
    saved.clear()
    train(MinuteSteps(), NoisyLinearData(), cfg(ckpt_every=0, ckpt_minutes=0), tmp_path / "off")
    assert [s for s, _ in saved] == [8, 12]  # 0: off
    saved.clear()
    train(MinuteSteps(), NoisyLinearData(), cfg(ckpt_every=5, ckpt_minutes=2.5), tmp_path / "both")
    assert [s for s, _ in saved] == [3, 5, 8, 10, 12]  # either trigger; each restarts the clock
    # ckpt_minutes does not change results: a run may resume with another value
    res = train(ToyTask(), NoisyLinearData(), cfg(ckpt_every=0, ckpt_minutes=30), run, resume=True)
    assert res.step == 12


def test_config_files_overrides_and_diff(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("loop:\n  lr: 2.0e-4\n  betas: [0.9, 0.99]\n  epochs: 3\n")
    t = tmp_path / "c.toml"
    t.write_text("[loop]\nlr = 3e-4\nepochs = 3\n")
    merged = merge_config(load_config_file(y), {"loop": {"batch_size": 4, "lr": None}, "x": {"y": None}})
    assert merged["x"] == {}
    loop = from_dict(LoopConfig, merged["loop"])
    assert loop.lr == 2e-4 and loop.betas == (0.9, 0.99) and loop.batch_size == 4
    assert from_dict(LoopConfig, load_config_file(t)["loop"]).lr == 3e-4
    with pytest.raises(UsageError, match="unknown config key.*loop.lrr"):
        from_dict(LoopConfig, {"lrr": 1, "epochs": 1}, where="loop")
    bad = tmp_path / "bad.yaml"
    bad.write_text("loop: [unclosed\n")
    with pytest.raises(UsageError, match="not valid"):
        load_config_file(bad)
    with pytest.raises(UsageError, match="not found"):
        load_config_file(tmp_path / "missing.toml")
    d = to_dict(loop)
    assert config_diff(d, d) == []
    assert config_diff(d, {**d, "seed": 1}) == ["seed: 0 -> 1"]
    # a setting added after the checkpoint was saved: fine at its default, a difference otherwise
    newer = {**d, "zip_members": "*"}
    assert config_diff(d, newer, defaults={"zip_members": "*"}) == []
    assert config_diff(d, {**d, "zip_members": "*/Patch/*"}, defaults={"zip_members": "*"}) == [
        'zip_members: <absent> -> "*/Patch/*"'
    ]
    assert config_diff(d, newer) == ['zip_members: <absent> -> "*"']


def test_sample_seeding_leaves_the_cuda_generator_alone(monkeypatch):
    # torch.manual_seed also reseeds CUDA; in the main process (num_workers=0) that made the
    # model's randomness on GPU (dropout, masks) a function of the last sample's seed
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: calls.append(seed))
    before = torch.get_rng_state()
    x, _ = SeededDataset(NoisyLinearData())[(3, 1234)]
    again, _ = SeededDataset(NoisyLinearData())[(3, 1234)]
    assert calls == []
    torch.testing.assert_close(x, again)  # still a pure function of the seed
    assert torch.equal(torch.get_rng_state(), before)  # CPU state restored


def test_data_randomness_does_not_depend_on_worker_count(tmp_path):
    a, b = ToyTask(), ToyTask()
    # 12 steps of 8 over 64 samples: two epochs, so the (persistent) workers serve a second one
    train(a, NoisyLinearData(), cfg(max_steps=12), tmp_path / "w0")
    train(b, NoisyLinearData(), cfg(max_steps=12, num_workers=2), tmp_path / "w2")
    torch.testing.assert_close(params(a.model), params(b.model))


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Under `nohup ... > log` (stderr not a terminal) the loop prints a plain line at every
    5 % of the run and at the end, instead of a live bar; a resumed run goes on from its step."""
    task = ToyTask(stop_at=9)
    with pytest.raises(Interrupted):
        train(task, NoisyLinearData(), cfg(max_steps=40, progress=True), tmp_path / "run")
    first = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("step ")]
    assert [ln.split(" (")[0] for ln in first] == ["step 2/40", "step 4/40", "step 6/40", "step 8/40"]
    assert "mse " in first[0] and "so far, about " in first[0] and first[0].endswith(" left")
    train(ToyTask(), NoisyLinearData(), cfg(max_steps=40, progress=True), tmp_path / "run", resume=True)
    err = capsys.readouterr().err
    steps = [int(ln.split()[1].split("/")[0]) for ln in err.splitlines() if ln.startswith("step ")]
    assert steps == list(range(10, 41, 2)) and "━" not in err  # no rich bar in a log file
