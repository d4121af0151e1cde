"""The training loop shared by `sarmae pretrain` and `sarmae finetune`, readable top to bottom.

A job describes itself with a `TrainTask` (the model and how one batch becomes a loss) and
hands it, with a map-style dataset and a `LoopConfig`, to `train()`:

    from sarmae_cli.train.loop import LoopConfig, TrainTask, train

    class Regression(TrainTask):
        def __init__(self) -> None:
            self.model = torch.nn.Linear(4, 1)

        def training_step(self, model, batch):
            x, y = batch                                   # already on the task's device
            loss = torch.nn.functional.mse_loss(model(x), y)
            return loss, {"mse": loss.item()}

    cfg = LoopConfig(epochs=3, batch_size=32, lr=1e-3, warmup_epochs=0.5)
    result = train(Regression(), dataset, cfg, Path("runs/reg"), full_config={"job": "reg"})
    # re-running with resume=True after a crash continues from runs/reg/checkpoint.pt exactly

What `train()` does, per optimizer step (`step` counts optimizer steps, from 0):
1. lr of every param group = `get_lr(step, ...) * group["lr_scale"]` (linear warm-up, then
   half-cycle cosine to `min_lr`);
2. `accum_steps` micro-batches of `batch_size` samples (per process; lowered, with one note on
   stderr, when a process's share of the dataset is smaller than one optimizer step needs, see
   `fit_batch_size`): autocast on CUDA (bf16,
   fp16 + GradScaler on older GPUs), fp32 on CPU; `training_step(model, batch)` is called
   with `model` = `task.model` or its DDP wrapper (call it, not `task.model`, so gradients are
   synchronised); gradients of loss / accum_steps are summed;
3. a NaN/inf loss on any process stops the run with `TrainingDiverged` naming the step; the
   optimizer does not step and the last checkpoint (written before) is kept;
4. gradient clipping (`clip_grad`), AdamW step;
5. every `log_every` steps a row in RUN_DIR/log.csv (step, epoch, lr, samples_per_s, the task's
   metrics averaged over the steps since the last row and over processes), TensorBoard too if
   installed, and a rich progress bar on stderr (when stderr is not a terminal, e.g. under
   `nohup ... > log`, a plain line at every 5 % of the run instead: step, metrics, time left);
6. every `ckpt_every` steps, every `ckpt_minutes` minutes (by rank 0's clock, at the next
   step end; the clock restarts at every checkpoint), at each epoch end and at the last step:
   RUN_DIR/checkpoint.pt, written atomically, with model, optimizer, grad-scaler, task state,
   step, every process's RNG state and the resolved config. At each epoch end
   `task.on_epoch_end(epoch, run_dir)` runs on rank 0 first (previews, validation; returned
   metrics go to RUN_DIR/epochs.csv).

Exact resume: sample order and all data randomness are a pure function of (seed, epoch,
sample index): the sampler hands the dataset `(index, seed)` keys and each sample is produced
with the global torch/numpy/random generators seeded from that key (and restored afterwards),
so augmentations in any dataset are reproducible with any number of workers. Model-side
randomness (masking, dropout) uses the global generators, saved in the checkpoint. A run
killed at any point and resumed reproduces the uninterrupted loss curve.

Distributed: under `torchrun` the loop joins the process group (NCCL on GPU, gloo on CPU),
shards the data with a `DistributedSampler`, and only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import math
import random
import time
from collections.abc import Iterator, Sized
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sarmae_cli import __version__
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.model.runtime import autocast
from sarmae_cli.outputs import atomic_output, check_run_folder
from sarmae_cli.train import distributed
from sarmae_cli.train.config import config_diff, to_dict
from sarmae_cli.train.distributed import DistEnv

CHECKPOINT = "checkpoint.pt"
LOG = "log.csv"
EPOCH_LOG = "epochs.csv"
#: log.csv columns that are not the task's metrics (TrainResult.metrics leaves them out).
NOT_METRICS = ("step", "epoch", "lr", "samples_per_s")
#: Loop settings that may change between a run and its resumption (they do not change results).
RESUME_MAY_CHANGE = (
    "loop.num_workers",
    "loop.log_every",
    "loop.progress",
    "loop.device",
    "loop.ckpt_every",
    "loop.ckpt_minutes",
)
#: Parameter names that get no weight decay (besides every 1-d tensor: biases, norm weights).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "dist_token", "reg_token")


class TrainingDiverged(SarmaeError):
    """The loss became NaN or infinite; the run stopped and its last checkpoint is kept."""


@dataclass
class LoopConfig:
    """Optimisation settings. `batch_size` is per process and micro-batch: one optimizer step
    sees batch_size x accum_steps x processes samples (`train()` lowers a batch size that the
    dataset cannot fill, see `fit_batch_size`)."""

    epochs: int | None = None
    max_steps: int | None = None  # caps the run; with `epochs` unset it defines it
    batch_size: int = 64
    accum_steps: int = 1
    lr: float = 1.5e-4  # peak learning rate (after warm-up)
    min_lr: float = 0.0
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None  # overrides warmup_epochs when set
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = 1.0  # max gradient norm; None = no clipping
    amp: bool = True  # autocast on CUDA (bf16, or fp16 + grad scaler); CPU is always fp32
    seed: int = 0
    log_every: int = 10  # steps between log.csv rows
    ckpt_every: int = 500  # steps between checkpoints (0: only at epoch ends and the end)
    ckpt_minutes: float = 10.0  # also a checkpoint when this much time passed since the last (0: off)
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True
    find_unused_parameters: bool = False  # DDP: set when some parameters may get no gradient

    def __post_init__(self) -> None:
        for name in ("epochs", "max_steps"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"{name} must be >= 1, got {v}")
        for name in ("batch_size", "accum_steps", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise UsageError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.ckpt_every < 0 or self.num_workers < 0 or self.warmup_epochs < 0:
            raise UsageError("ckpt_every, num_workers and warmup_epochs must be >= 0")
        if not self.ckpt_minutes >= 0:  # also refuses NaN
            raise UsageError(f"ckpt_minutes must be >= 0 (0: off), got {self.ckpt_minutes}")
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole run."""
        if self.epochs is None and self.max_steps is None:
            raise UsageError("give the run length: --epochs N or --max-steps N")
        by_epochs = self.epochs * steps_per_epoch if self.epochs is not None else None
        if by_epochs is None:
            return int(self.max_steps)
        return min(by_epochs, self.max_steps) if self.max_steps is not None else by_epochs

    def warmup(self, steps_per_epoch: int) -> int:
        """Warm-up length in optimizer steps."""
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        return int(round(self.warmup_epochs * steps_per_epoch))


def fit_batch_size(cfg: LoopConfig, n_samples: int, world_size: int = 1) -> int:
    """The per-process batch size `train()` uses on `n_samples` samples: `cfg.batch_size`, or,
    when one optimizer step (batch_size x accum_steps per process) needs more than a process's
    share of the data (n_samples // world_size, the sampler drops the rest), the largest batch
    size that fits, kept even when `cfg.batch_size` is even (mixup and cutmix pair the chips of a
    batch). 0 when not even batch size 1 fits. A pure function, so a resumed run lowers alike."""
    share = n_samples // world_size
    if cfg.batch_size * cfg.accum_steps <= share:
        return cfg.batch_size
    fit = share // cfg.accum_steps
    if cfg.batch_size % 2 == 0 and fit > 1:
        fit -= fit % 2
    return fit


def get_lr(step: int, lr: float, min_lr: float, warmup: int, total: int) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warm-up to `lr` over `warmup`
    steps, then half-cycle cosine decay to `min_lr` at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on weight matrices/kernels, none on biases, norms, position
    embeddings and CLS/mask tokens. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.split(".")[-1]
        if p.ndim <= 1 or leaf in NO_DECAY_NAMES or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class TrainTask:
    """What a training job provides to `train()`. Subclass it and set `self.model`.

    - `setup(device)`: move the model (and anything else, e.g. a teacher) to the device.
    - `param_groups(cfg)`: AdamW groups; a group may carry `lr_scale` (layer-wise lr decay).
    - `training_step(model, batch) -> (loss, {name: float})`: the batch is on the device;
      call `model` (the DDP wrapper under torchrun), return a scalar loss tensor and floats to log.
    - `on_epoch_end(epoch, run_dir) -> {name: float} | None`: rank 0 only, after the epoch's
      last step; `epoch` is 0-based. Use `self.model`. The model is put back in train mode after.
    - `state_dict()` / `load_state_dict()`: extra task state for checkpoints (e.g. best metric).
    - `collate_fn`: optional DataLoader collate function.
    """

    model: nn.Module
    device: torch.device = torch.device("cpu")
    collate_fn: Any = None

    def setup(self, device: torch.device) -> None:
        self.device = device
        self.model.to(device)

    def param_groups(self, cfg: LoopConfig) -> list[dict[str, Any]]:
        return default_param_groups(self.model, cfg.weight_decay)

    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, run_dir: Path) -> dict[str, float] | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    epoch: int  # epochs completed
    metrics: dict[str, float] = field(default_factory=dict)  # last logged row
    checkpoint: Path | None = None


# ---------------------------------------------------------------- reproducible data


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the randomness of sample `index` in `epoch` (augmentations, noise, crops)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also for one process) that yields `(index, sample_seed)` keys and can
    start an epoch after `skip` of its samples (to resume mid-epoch)."""

    def __init__(self, dataset: Sized, env: DistEnv, seed: int, shuffle: bool = True) -> None:
        super().__init__(
            dataset, num_replicas=env.world_size, rank=env.rank, shuffle=shuffle, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:  # type: ignore[override]
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.skip :]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class SeededDataset(Dataset):
    """Wraps a map-style dataset: item `(index, seed)` is `dataset[index]` computed with the
    global torch, numpy and `random` generators seeded by `seed` and restored afterwards."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        np_state, py_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also reseed CUDA's, so that with
            # num_workers=0 the model's randomness on GPU (dropout, masks) followed the data seeds
            torch.default_generator.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and `random`."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states, in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


# ---------------------------------------------------------------- checkpoints and logs


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (temporary file beside it, then rename)."""
    with atomic_output(Path(path), overwrite=True) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a training checkpoint written by `save_checkpoint` (no pickled code is run)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for unreadable files
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SarmaeError(f"cannot read checkpoint {path} ({first}); start a new run folder") from e


class CheckpointClock:
    """Time-based checkpoints: `due()` once `minutes` have passed since the last `restart()`.
    Only rank 0's clock counts and its answer reaches every process (a collective, so call it at
    the same point on all of them), so all processes checkpoint at the same step."""

    def __init__(self, minutes: float, env: DistEnv) -> None:
        self.seconds = 60.0 * minutes
        self.env = env
        self.restart()

    def restart(self) -> None:
        self.t0 = time.monotonic()

    def due(self) -> bool:
        if not self.seconds:  # the same on every process: no collective
            return False
        late = self.env.is_main and time.monotonic() - self.t0 >= self.seconds
        flag = torch.tensor(float(late), device=self.env.device)
        return float(distributed.all_reduce_max(flag, self.env)) > 0


class CsvLog:
    """A CSV file of rows (dicts); on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, keep_until: int | None = None, key: str = "step") -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if keep_until is not None and path.is_file():
            with open(path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if float(r[key]) <= keep_until]
        self.columns: list[str] = list(self.rows[0]) if self.rows else []
        self._rewrite()

    def _rewrite(self) -> None:
        if not self.columns:
            return
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, self.columns)
            w.writeheader()
            w.writerows(self.rows)

    def append(self, row: dict[str, Any]) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            self.columns += new
            self._rewrite()
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter in RUN_DIR/tb when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


def _progress(show: bool) -> Progress:
    """The rich bar, only on a terminal (in a log file it would leave one garbled line)."""
    console = Console(stderr=True)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        disable=not (show and console.is_terminal),
    )


class LogLines:
    """Progress for a stderr that is not a terminal (`nohup ... > log`, a CI log): one plain line
    each time the run passes another `fraction` of its steps, and at the last step."""

    def __init__(self, show: bool, start: int, total: int, fraction: float = 0.05) -> None:
        self.show = show
        self.start, self.total = start, total
        self.every = max(1, round(total * fraction))
        self.next = (start // self.every + 1) * self.every
        self.t0 = time.perf_counter()

    def line(self, step: int, epoch: int, metrics: dict[str, float]) -> str | None:
        """The line to print at `step` (None between marks); the time left is extrapolated
        from this process's own steps."""
        if not self.show or (step < self.next and step != self.total):
            return None
        while self.next <= step:
            self.next += self.every
        elapsed = time.perf_counter() - self.t0
        left = elapsed / max(step - self.start, 1) * (self.total - step)
        return (
            f"step {step}/{self.total} ({100 * step / self.total:.0f} %), epoch {epoch + 1}: "
            f"{_fmt(metrics)}; {_clock(elapsed)} so far, about {_clock(left)} left"
        )


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4g}" for k, v in metrics.items())


# ---------------------------------------------------------------- the loop


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a folder without a checkpoint; `resume` needs one with a checkpoint."""
    check_run_folder(run_dir, resume, CHECKPOINT)


def train(
    task: TrainTask,
    dataset: Dataset,
    cfg: LoopConfig,
    run_dir: Path,
    resume: bool = False,
    full_config: dict[str, Any] | None = None,
    config_defaults: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `task.model` on `dataset` as `cfg` says, writing to `run_dir` (see module doc).

    `full_config` is the job's resolved config (JSON-able); with `cfg` under `loop` it is saved
    in every checkpoint, and `resume=True` refuses a checkpoint whose config differs.
    `config_defaults` (the job config's defaults) lets checkpoints saved before a setting
    existed resume when that setting keeps its default.
    """
    env = distributed.setup(cfg.device)
    device = env.device
    run_dir = Path(run_dir)
    n_samples = len(dataset)  # type: ignore[arg-type]
    asked = cfg.batch_size
    if 0 < (fit := fit_batch_size(cfg, n_samples, env.world_size)) < asked:
        cfg = replace(cfg, batch_size=fit)  # before `config`: checkpoints hold the batch size used
    config = {**to_dict(full_config or {}), "loop": to_dict(cfg)}
    ckpt_path = run_dir / CHECKPOINT

    check_run_dir(run_dir, resume)
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(ckpt_path)
        defaults = {**to_dict(config_defaults or {}), "loop": to_dict(type(cfg)())}
        diff = config_diff(state.get("config", {}), config, RESUME_MAY_CHANGE, defaults)
        if diff:
            raise UsageError(
                f"cannot resume {run_dir}: its checkpoint was made with another config "
                f"({'; '.join(diff[:6])}); rerun with the same config or use a new run folder"
            )
    if n_samples == 0:
        raise SarmaeError("the training dataset is empty")
    if env.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create run folder {run_dir}: {e.strerror}") from e
    distributed.barrier(env)
    if cfg.batch_size < asked:
        accum = f" (x {cfg.accum_steps} accumulation steps)" if cfg.accum_steps > 1 else ""
        share = f" ({n_samples // env.world_size} per process)" if env.distributed else ""
        Console(stderr=True, quiet=not (cfg.progress and env.is_main)).print(
            f"note: batch size {asked}{accum} does not fit the {n_samples} training samples{share}; "
            f"training with batch size {cfg.batch_size}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )

    # data: one order per (seed, epoch), sharded over processes, micro-batches dropped at the end
    sampler = ResumableSampler(dataset, env, cfg.seed)  # type: ignore[arg-type]
    loader = DataLoader(
        SeededDataset(dataset),
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,  # no worker restart per epoch (small data, many epochs)
        drop_last=True,
        collate_fn=task.collate_fn,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
    )
    micro_per_epoch = len(loader)
    steps_per_epoch = micro_per_epoch // cfg.accum_steps
    if steps_per_epoch == 0:  # fewer samples per process than micro-batches per step
        raise UsageError(
            f"the dataset has {n_samples} samples, fewer than one optimizer step needs even at "
            f"batch size 1 (accumulation {cfg.accum_steps} x {env.world_size} process(es)); "
            "lower --accum-steps, use fewer processes or add data"
        )
    total = cfg.total_steps(steps_per_epoch)
    warmup = min(cfg.warmup(steps_per_epoch), total)

    # model, optimizer, grad scaler
    task.setup(device)
    model = task.model
    groups = task.param_groups(cfg)
    for g in groups:
        g.setdefault("lr_scale", 1.0)
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    fp16 = device.type == "cuda" and cfg.amp and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        task.load_state_dict(state.get("task", {}))
        step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == env.world_size:
            set_rng_state(rngs[env.rank], device)
        else:  # another process count: the data order is the same, model-side noise is not
            seed_everything(cfg.seed + 1000 * step + env.rank)
    else:
        seed_everything(cfg.seed + env.rank)  # different masks on each process
    net = distributed.wrap(model, env, cfg.find_unused_parameters)
    model.train()

    log = CsvLog(run_dir / LOG, keep_until=step) if env.is_main else None
    epoch_log = CsvLog(run_dir / EPOCH_LOG, keep_until=step) if env.is_main else None
    tb = _tensorboard(run_dir) if env.is_main else None
    samples_per_step = cfg.batch_size * cfg.accum_steps * env.world_size
    last_metrics: dict[str, float] = {}
    if log is not None and log.rows:  # a resumed run reports its last row until it logs again
        last_metrics = {k: float(v) for k, v in log.rows[-1].items() if k not in NOT_METRICS and v != ""}
    sums: dict[str, float] = {}
    n_sum = 0
    t_last = time.perf_counter()
    clock = CheckpointClock(cfg.ckpt_minutes, env)

    def checkpoint() -> None:
        rngs = distributed.gather_objects(rng_state(device), env)
        if not env.is_main:
            return
        save_checkpoint(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "task": task.state_dict(),
                "step": step,
                "epoch": step // steps_per_epoch,
                "micro_batches_into_epoch": (step % steps_per_epoch) * cfg.accum_steps,
                "rng": rngs,
                "config": config,
                "sarmae_version": __version__,
            },
        )

    with _progress(cfg.progress and env.is_main) as progress:
        bar = progress.add_task("train", total=total, completed=step, info="")
        lines = LogLines(cfg.progress and env.is_main and not progress.console.is_terminal, step, total)
        while step < total:
            epoch = step // steps_per_epoch
            sampler.set_epoch(epoch, skip=(step % steps_per_epoch) * cfg.accum_steps * cfg.batch_size)
            batches = iter(loader)
            progress.update(bar, description=f"epoch {epoch + 1}")
            while step < total:
                lr = get_lr(step, cfg.lr, cfg.min_lr, warmup, total)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g["lr_scale"]
                step_metrics: dict[str, float] = {}
                bad = torch.zeros((), device=device)
                for micro in range(cfg.accum_steps):
                    batch = to_device(next(batches), device)
                    last = micro == cfg.accum_steps - 1
                    sync = contextlib.nullcontext() if last or not env.distributed else net.no_sync()
                    with sync:
                        with autocast(device, cfg.amp):
                            loss, metrics = task.training_step(net, batch)
                        loss_value = float(loss.detach())
                        if not math.isfinite(loss_value):
                            bad.fill_(1.0)
                        scaler.scale(loss / cfg.accum_steps).backward()
                    for k, v in {"loss": loss_value, **metrics}.items():
                        step_metrics[k] = step_metrics.get(k, 0.0) + float(v) / cfg.accum_steps
                if float(distributed.all_reduce_max(bad, env)) > 0:
                    kept = f"kept the last good checkpoint {ckpt_path}"
                    if not ckpt_path.exists():
                        kept = "no checkpoint was written yet"
                    raise TrainingDiverged(
                        f"loss became NaN or infinite at step {step + 1} (epoch {epoch + 1}); stopped, "
                        f"{kept}; lower the learning rate or check the data"
                    )
                if cfg.clip_grad:
                    scaler.unscale_(optimizer)
                    norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    step_metrics["grad_norm"] = float(norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                progress.advance(bar)

                for k, v in step_metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_sum += 1
                epoch_end = step % steps_per_epoch == 0
                if step % cfg.log_every == 0 or step == total or epoch_end:
                    names = sorted(sums)
                    avg = torch.tensor([sums[k] / n_sum for k in names], dtype=torch.float64)
                    avg = distributed.all_reduce_mean(avg.to(device), env).cpu()
                    now = time.perf_counter()
                    speed = n_sum * samples_per_step / max(now - t_last, 1e-9)
                    last_metrics = {k: float(v) for k, v in zip(names, avg, strict=True)}
                    row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "lr": lr}
                    row |= {"samples_per_s": speed, **last_metrics}
                    if log is not None:
                        log.append(row)
                    if tb is not None:
                        for k, v in row.items():
                            if k != "step":
                                tb.add_scalar(k, v, step)
                    shown = {"lr": lr, **last_metrics, "samples/s": speed}
                    progress.update(bar, info=_fmt(shown))
                    if (text := lines.line(step, epoch, shown)) is not None:
                        progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
                    sums, n_sum, t_last = {}, 0, now
                t_pause = time.perf_counter()
                if epoch_end and env.is_main:
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        epoch_metrics = task.on_epoch_end(epoch, run_dir)
                    model.train()
                    if epoch_metrics and epoch_log is not None:
                        epoch_log.append({"epoch": epoch + 1, "step": step, **epoch_metrics})
                        progress.console.print(f"epoch {epoch + 1}: {_fmt(epoch_metrics)}")
                by_steps = bool(cfg.ckpt_every) and step % cfg.ckpt_every == 0
                # the same on every process up to clock.due(), so all of them call it or none
                if epoch_end or step == total or by_steps or clock.due():
                    checkpoint()
                    clock.restart()  # after the save: a slow save does not eat into the next interval
                t_last += time.perf_counter() - t_pause  # previews and checkpoints are not training time
                if epoch_end:
                    break
    if tb is not None:
        tb.close()
    distributed.barrier(env)
    return TrainResult(step, step // steps_per_epoch, last_metrics, ckpt_path if env.is_main else None)
