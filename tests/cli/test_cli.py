"""Every command has help; exit codes; one-line errors; version; planned commands."""

import subprocess
import sys

import pytest
import typer

from sarmae_cli import __version__
from sarmae_cli.cli import app


def _all_commands(group=None, prefix=()):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        yield (*prefix, name)
        if hasattr(cmd, "commands"):
            yield from _all_commands(cmd, (*prefix, name))


def test_command_tree_is_complete():
    names = {" ".join(c) for c in _all_commands()}
    assert names == {
        "pretrain",
        "finetune",
        "embed",
        "classify",
        "segment",
        "export",
        "weights",
        "demo",
        "weights list",
        "weights info",
        "weights import",
        "weights convert",
        "weights snapshot",
    }


@pytest.mark.parametrize("cmd", [" ".join(c) for c in _all_commands()])
def test_every_command_has_help(invoke, cmd):
    r = invoke(*cmd.split(), "--help")
    assert r.exit_code == 0
    assert "Usage" in r.stdout and "--help" in r.stdout
    cli_cmd = typer.main.get_command(app)
    for part in cmd.split():
        cli_cmd = cli_cmd.commands[part]
    assert cli_cmd.help and len(cli_cmd.help.strip()) > 10


def test_version(invoke):
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"sarmae {__version__}"


def test_usage_errors_are_one_line_exit_2(invoke):
    r = invoke("embed")
    assert r.exit_code == 2
    assert r.stderr == "Error: Missing argument 'inputs'. (see 'sarmae embed --help')\n"
    r = invoke("weights", "import", "x.pth", "-o", "y.safetensors", "--in-chans", "0")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "--in-chans" in r.stderr
    r = invoke("no-such-command")
    assert r.exit_code == 2
    assert r.stderr == "Error: No such command 'no-such-command'. (see 'sarmae --help')\n"


def test_no_args_shows_help(invoke):
    r = invoke()
    assert r.exit_code == 2 and "Usage" in r.stdout + r.stderr


def test_console_script_and_module_entry_points():
    r = subprocess.run(
        [sys.executable, "-m", "sarmae_cli", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0 and r.stdout.strip() == f"sarmae {__version__}"
    r = subprocess.run(
        [sys.executable, "-m", "sarmae_cli", "weights", "info", "missing.safetensors"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["segment", "embed", "classify"])
def test_error_without_quiet_is_one_line_in_a_pipe(command, tmp_path):
    """With stderr piped (a shell pipeline, a log file) and no -q, an error is still exactly one
    line: no progress bar and no blank line before it."""
    missing = tmp_path / "missing.tif"
    args = ["--task", "water"] if command == "segment" else []
    r = subprocess.run(
        [sys.executable, "-m", "sarmae_cli", command, *args, str(missing), "-o", str(tmp_path / "out.x")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and r.stderr == f"Error: input not found: {missing}\n", repr(r.stderr)
