"""The shipped default weights: where they live, what each holds, how to restore them, and
which weights file a command uses (`resolve_weights`). Plain tables with no heavy imports, so
`sarmae weights list` and `--help` stay fast and a bad `--task` or `--weights` is refused at once."""

from __future__ import annotations

import os
from pathlib import Path

from sarmae_cli.errors import UsageError, WeightsError, WeightsNotFoundError, WrongWeightsError
from sarmae_cli.paths import require_path

#: Shipped weights per task key (files in `shipped_weights_dir()`).
SHIPPED = {
    "encoder": "sarmae_encoder.safetensors",
    "water": "sarmae_water.safetensors",
    "mstar": "sarmae_mstar.safetensors",
    "ships": "sarmae_ships.safetensors",
}
#: What each shipped file holds, and the command it is the default of.
SHIPPED_KIND = {
    "encoder": ("encoder", "embed"),
    "water": ("segmentation", "segment"),
    "mstar": ("classification", "classify"),
    "ships": ("detection", "detect"),
}
#: The weights task each command needs (embed takes the encoder of any weights file).
COMMAND_TASKS = {
    "segment": ("segmentation",),
    "classify": ("classification",),
    "embed": ("encoder", "pretrain", "classification", "segmentation"),
    "detect": ("detection",),
}
#: The shipped weights a command uses without --task or --weights (segment needs one of them).
DEFAULT_TASK = {"embed": "encoder", "classify": "mstar", "segment": None, "detect": "ships"}
#: How to get missing or damaged shipped weights back.
RESTORE_HINT = "restore them with `git checkout -- weights/` in a source checkout or reinstall sarmae"


def shipped_weights_dir() -> Path:
    """Folder of the shipped default weights: $SARMAE_WEIGHTS_DIR, the source checkout's
    `weights/`, or the copy bundled inside an installed wheel."""
    env = os.environ.get("SARMAE_WEIGHTS_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "weights"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "_shipped_weights"


def shipped_path(task: str) -> Path:
    """Where the shipped weights of `task` (a key of `SHIPPED`) live."""
    return shipped_weights_dir() / SHIPPED[task]


def shipped_task(path: Path) -> str | None:
    """The task whose shipped weights file `path` is, or None for any other file."""
    target = Path(path).resolve()
    return next((t for t in SHIPPED if shipped_path(t).resolve() == target), None)


def missing_shipped(task: str, path: Path) -> WeightsError:
    """The error for a shipped weights file that is not there (exit 1: the installation is at
    fault, not the command line)."""
    return WeightsError(
        f"shipped weights for task {task!r} are missing: {path}; {RESTORE_HINT}, or pass --weights FILE"
    )


def resolve_weights(command: str, weights: Path | None, task: str | None) -> Path:
    """The weights file for `command`: `--weights` (which must exist: exit 2 otherwise), else the
    shipped file of `--task` (or the command's default task). A missing shipped file is an error
    naming it and the way back."""
    if weights is not None:
        if task is not None:
            raise UsageError("give either --task or --weights, not both")
        require_path(weights, "weights file", WeightsNotFoundError)
        if Path(weights).is_dir():
            raise WrongWeightsError(f"{weights} is a folder, not a weights file")
        return Path(weights)
    task = task or DEFAULT_TASK[command]
    if task is None:
        raise UsageError(f"sarmae {command} needs --task (e.g. --task water) or --weights FILE")
    fitting = [t for t in SHIPPED if SHIPPED_KIND[t][0] in COMMAND_TASKS[command]]
    if task not in SHIPPED:
        raise UsageError(f"unknown --task {task!r}; sarmae {command} takes --task {' or '.join(fitting)}")
    if task not in fitting:
        kind, used_by = SHIPPED_KIND[task]
        raise UsageError(
            f"--task {task} is the shipped {kind} model, not one for sarmae {command}: "
            f"use `sarmae {used_by}` for it; sarmae {command} takes --task {' or '.join(fitting)}"
        )
    path = shipped_path(task)
    if not path.is_file():
        raise missing_shipped(task, path)
    return path
