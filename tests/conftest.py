"""Shared fixtures: tiny model configs, a CLI runner, synthetic official checkpoints."""

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sarmae_cli.cli import app
from tests.helpers import official_checkpoint

DATA_DIR = Path(os.environ.get("SARMAE_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


@pytest.fixture
def data_dir() -> Path:
    """Real SAR data beside the project ($SARMAE_DATA); tests needing it skip without it."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real SAR data not found at {DATA_DIR} (set SARMAE_DATA)")
    return DATA_DIR


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run the CLI in-process; returns the click Result (exit_code, stdout, stderr)."""

    def _invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _invoke


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_official(tmp_path_factory) -> Path:
    """A synthetic official-layout checkpoint of a ViT-Tiny SARMAE (with extras)."""
    path = tmp_path_factory.mktemp("official") / "SARMAE_vitt_checkpoint-last.pth"
    official_checkpoint(path, "vit_tiny_patch16_224", with_extras=True)
    return path
