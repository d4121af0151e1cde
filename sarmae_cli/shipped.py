"""The shipped default weights: where they live, what each holds, how to restore them.
Plain tables with no heavy imports, so `sarmae weights list` and `--help` stay fast."""

from __future__ import annotations

import os
from pathlib import Path

#: Shipped weights per task key (files in `shipped_weights_dir()`).
SHIPPED = {
    "encoder": "sarmae_encoder.safetensors",
    "water": "sarmae_water.safetensors",
    "mstar": "sarmae_mstar.safetensors",
}
#: What each shipped file holds, and the command it is the default of.
SHIPPED_KIND = {
    "encoder": ("encoder", "embed"),
    "water": ("segmentation", "segment"),
    "mstar": ("classification", "classify"),
}
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
