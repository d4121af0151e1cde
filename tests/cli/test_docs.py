"""docs/cli.md is generated from the app and must stay in sync with it."""

from pathlib import Path

from sarmae_cli.cli.docs import render

ROOT = Path(__file__).resolve().parents[2]


def test_cli_reference_in_sync():
    current = (ROOT / "docs" / "cli.md").read_text()
    assert current == render(), "docs/cli.md is stale: run `python -m sarmae_cli.cli.docs docs/cli.md`"


def test_cli_reference_names_every_command():
    text = render()
    for cmd in (
        "pretrain",
        "finetune",
        "evaluate",
        "embed",
        "classify",
        "segment",
        "export",
        "weights list",
        "weights info",
        "weights import",
    ):
        assert f"## `sarmae {cmd}`" in text or f"### `sarmae {cmd}`" in text, cmd
