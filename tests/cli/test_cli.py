"""Every command has help; exit codes; one-line errors; version; help and `weights list`
without torch; one name per concept (renamed options refused)."""

import json
import os
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
        "evaluate",
        "embed",
        "classify",
        "segment",
        "detect",
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
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1  # named, missing


#: Runs argv[1:] and prints its exit code and peak RSS (kB, `os.wait4`) as the last line of
#: stderr. A small process of its own: Linux carries the RSS peak of the process that forks
#: (pytest, with torch loaded) into the child's ru_maxrss.
LAUNCHER = (
    "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, s, u = os.wait4(p.pid, 0); "
    "print(os.waitstatus_to_exitcode(s), u.ru_maxrss, file=sys.stderr)"
)


def _run_main(prelude: str, *args: str) -> tuple[int, str, str, int]:
    """Run `prelude`, then the CLI entry point `main()` with `args`, in a fresh interpreter:
    (exit code, stdout, stderr, peak RSS of that process in kB)."""
    argv = ["sarmae", *args]
    code = f"import sys\n{prelude}\nsys.argv = {argv!r}\nfrom sarmae_cli.cli import main\nmain()\n"
    r = subprocess.run(
        [sys.executable, "-S", "-c", LAUNCHER, sys.executable, "-c", code], capture_output=True, text=True
    )
    *err, last = r.stderr.splitlines(keepends=True)
    rc, peak_kb = (int(v) for v in last.split())
    return rc, r.stdout, "".join(err), peak_kb


def test_entry_point_runs_exit_handlers_and_waits_for_threads():
    """`main()` ends the process itself (`end_process`): Python's atexit handlers still run and
    buffered output is flushed into the pipe; with a non-daemon thread still running it exits
    the normal way, after that thread."""
    rc, out, _, _ = _run_main("import atexit\natexit.register(print, 'handler ran')", "--version")
    assert rc == 0 and out == f"sarmae {__version__}\nhandler ran\n"
    late = "lambda: (time.sleep(0.5), print('thread done'))"
    thread = f"import threading, time\nthreading.Thread(target={late}).start()"
    rc, out, _, _ = _run_main(thread, "--version")
    assert rc == 0 and out.splitlines() == [f"sarmae {__version__}", "thread done"]
    rc, out, err, _ = _run_main("", "weights", "info", "missing.safetensors")
    assert rc == 2 and out == "" and err == "Error: weights file not found: missing.safetensors\n"


def test_exit_after_torch_does_not_raise_the_peak_memory():
    """Exiting must not page in native libraries: with a CUDA build of torch, the destructors
    of the CUDA libraries that a normal interpreter exit runs raised the peak RSS by about
    120 MB (docs/benchmarks.md). The peak of the whole process stays within 40 MB of its RSS
    just before `main()` (printed first)."""
    prelude = "import torch\nprint(open('/proc/self/statm').read().split()[1], flush=True)"
    rc, out, _, peak_kb = _run_main(prelude, "--version")
    pages = int(out.splitlines()[0])  # resident pages before main()
    assert rc == 0
    assert peak_kb - pages * os.sysconf("SC_PAGE_SIZE") // 1024 < 40 * 1024


@pytest.mark.parametrize("command", ["segment", "detect", "embed", "classify"])
def test_error_without_quiet_is_one_line_in_a_pipe(command, tmp_path):
    """With stderr piped (a shell pipeline, a log file) and no -q, an error is still exactly one
    line: no progress bar and no blank line before it."""
    missing = tmp_path / "missing.tif"
    args = ["--task", "water"] if command == "segment" else []
    suffix = {"segment": ".tif", "detect": ".gpkg", "embed": ".parquet", "classify": ".csv"}[command]
    out = tmp_path / f"out{suffix}"
    r = subprocess.run(
        [sys.executable, "-m", "sarmae_cli", command, *args, str(missing), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 2 and r.stderr == f"Error: input not found: {missing}\n", repr(r.stderr)


LIGHT_COMMANDS = [
    ["--help"],
    *[[*c, "--help"] for c in _all_commands()],
    ["weights", "list"],
    ["weights", "list", "--json"],
]


def test_help_and_weights_list_import_neither_torch_nor_timm():
    """`sarmae --help`, `sarmae CMD --help` and `sarmae weights list` stay fast: each is run in
    a fresh interpreter, and after each the heavy libraries must still be unloaded."""
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from sarmae_cli.cli import app\n"
        "out = []\n"
        f"for args in {LIGHT_COMMANDS!r}:\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    heavy = [m for m in ('torch', 'timm', 'rasterio', 'onnx') if m in sys.modules]\n"
        "    out.append([' '.join(args), r.exit_code, heavy])\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(results) == len(LIGHT_COMMANDS)
    for args, code, heavy in results:
        assert code == 0, args
        assert heavy == [], f"`sarmae {args}` imported {heavy}"


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        ("pretrain", ["--num-workers", "1"], "--workers"),
        ("pretrain", ["--img-size", "32"], "--chip-size"),
        ("pretrain", ["--chip-fit", "resize"], "--fit"),
        ("finetune", ["--scaling", "db"], "--input-scale"),
        ("finetune", ["--eval-only"], "sarmae evaluate"),
        ("finetune", ["--tta", "6"], "sarmae evaluate --tta"),
        ("finetune", ["--weights", "w.safetensors"], "sarmae evaluate -w"),
        ("finetune", ["--teacher", "t.safetensors"], "--set data.teacher=..."),
        ("finetune", ["--decoder", "fpn"], "--set model.decoder=fpn"),
        ("finetune", ["--stretch", "percentile"], "--set data.stretch=percentile"),
        ("finetune", ["--run-dir", "r"], "(the run folder is OUT.run)"),
    ],
)
def test_renamed_options_are_refused(invoke, tmp_path, command, old, new):
    """Renamed, not aliased: the old name is a one-line usage error."""
    r = invoke(command, tmp_path, *old, "-o", tmp_path / "out.safetensors")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, (new, r.stderr)
    assert r.stderr.startswith(f"Error: No such option: {old[0]}"), r.stderr


def test_one_name_per_concept():
    """An option name means one thing: every command that has one of these concepts spells it
    the same way, and none keeps an old spelling."""
    concepts = {
        "workers": "--workers",
        "input_scale": "--input-scale",
        "chip_size": "--chip-size",
        "fit": "--fit",
        "ckpt_minutes": "--ckpt-minutes",
        "batch_size": "--batch-size",
        "device": "--device",
        "epochs": "--epochs",
        "max_steps": "--max-steps",
        "lr": "--lr",
        "resume": "--resume",
        "set_": "--set",
        "config": "--config",
        "init": "--init",
    }
    old = {"--num-workers", "--img-size", "--chip-fit", "--scaling", "--eval-only"}
    seen = {}
    for path in _all_commands():
        cmd = typer.main.get_command(app)
        for part in path:
            cmd = cmd.commands[part]
        if hasattr(cmd, "commands"):
            continue
        for p in cmd.params:
            names = set(getattr(p, "opts", [])) | set(getattr(p, "secondary_opts", []))
            assert not names & old, (path, names)
            if p.name in concepts:
                assert concepts[p.name] in names, (path, p.name, names)
                seen.setdefault(p.name, set()).add(" ".join(path))
    assert seen["workers"] == {"pretrain", "finetune"} and seen["ckpt_minutes"] == {"pretrain", "finetune"}
    assert {"pretrain", "finetune", "segment", "detect", "embed", "classify"} <= seen["input_scale"]
    assert seen["fit"] == seen["chip_size"] == {"pretrain", "finetune"}


def test_finetune_has_at_most_26_options():
    """Rarely used settings go through --set; 26 since issue 33 asked for --class-names."""
    cmd = typer.main.get_command(app).commands["finetune"]
    options = [p for p in cmd.get_params(typer.Context(cmd)) if getattr(p, "opts", [""])[0].startswith("-")]
    assert len(options) <= 26, [p.opts for p in options]
