"""The `sarmae` command line: a thin layer over the library. Errors are mapped to
one-line messages and exit codes here, in one place.

Each command module parses its options (declared once in `options.py`) and makes one library
call; it imports the library inside its command function, so that `sarmae --help`,
`sarmae CMD --help` and `sarmae weights list` load neither torch nor timm."""

import atexit
import contextlib
import os
import sys
import threading
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from sarmae_cli import __version__, signals
from sarmae_cli.cli import (
    classify,
    demo,
    detect,
    embed,
    evaluate,
    export,
    finetune,
    pretrain,
    segment,
    weights,
)
from sarmae_cli.errors import SarmaeError


class SarmaeGroup(TyperGroup):
    """Runs the app and turns every error into one line on stderr and an exit code:
    0 ok, 1 runtime failure, 2 usage error, 128+n stopped by signal n (130 Ctrl-C, 143 SIGTERM,
    129 SIGHUP: `signals.py` turns SIGTERM and SIGHUP into a KeyboardInterrupt)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        signals.install_signal_handlers()
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            code = rv if isinstance(rv, int) else 0
            if code == 130:  # typer turns Ctrl-C (and SIGTERM/SIGHUP, see signals.py) into Exit(130)
                message, code = signals.interruption()
                typer.echo(message, err=True)
        except typer.TyperException as e:  # click-level usage errors
            if type(e).__name__ != "NoArgsIsHelpError":  # that one has shown the help already
                ctx = getattr(e, "ctx", None)
                hint = f" (see '{ctx.command_path} --help')" if ctx else ""
                typer.echo(f"Error: {e.format_message()}{hint}", err=True)
            code = e.exit_code
        except SarmaeError as e:
            typer.echo(f"Error: {e}", err=True)
            code = e.exit_code
        except (typer.Abort, KeyboardInterrupt):
            message, code = signals.interruption()
            typer.echo(message, err=True)
        except Exception as e:
            if os.environ.get("SARMAE_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            typer.echo(
                f"Error: internal error {type(e).__name__}: {msg} "
                "(set SARMAE_DEBUG=1 for a traceback and please report it)",
                err=True,
            )
            code = 1
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="sarmae",
    cls=SarmaeGroup,
    help="SARMAE: a foundation model for synthetic aperture radar, from the command line.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sarmae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """SARMAE: a foundation model for synthetic aperture radar, from the command line."""


app.command()(pretrain.pretrain)
app.command()(finetune.finetune)
app.command()(evaluate.evaluate)
app.command()(embed.embed)
app.command()(classify.classify)
app.command()(segment.segment)
app.command()(detect.detect)
app.command()(export.export)
app.command()(demo.demo)
app.add_typer(weights.app, name="weights")


def main() -> None:
    """Console-script entry point (`sarmae`, `python -m sarmae_cli`)."""
    end_process(app(standalone_mode=False))


def end_process(code: int) -> NoReturn:
    """Exit with `code` once the command is done, without the C-level teardown of the native
    libraries. Python's own exit work still runs first: its atexit handlers (logging's flush,
    multiprocessing's and tempfile's clean-up...) and the flush of stdout and stderr. What is
    skipped are the destructors that the native libraries run after Python has finished: with
    a CUDA build of torch they page in about 120 MB of the CUDA libraries (cuBLASLt,
    cuSPARSELt), even on a CPU-only machine, so the process reached its peak RSS while
    exiting (docs/benchmarks.md). Every output is closed and renamed by then. While a
    non-daemon thread still runs, the normal exit, which waits for it, is used instead."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()  # what Python's exit would run (multiprocessing's children do the same)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(code)
