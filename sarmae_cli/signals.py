"""SIGTERM and SIGHUP handled like Ctrl-C (SIGINT).

`timeout`, batch schedulers and `docker stop` end a process with SIGTERM; a closed terminal
sends SIGHUP. Python's default for both is to die at once, leaving temporary files behind.
`install_signal_handlers()` turns them into a `Terminated` exception (a `KeyboardInterrupt`),
so the process unwinds as on Ctrl-C: every atomic output removes its temporary file, and the
CLI prints one line and exits with 128 + the signal number (130 INT, 143 TERM, 129 HUP).
A second signal of the same kind while unwinding ends the process at once (the next run that
writes the same destination removes what it left).
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

#: Signals handled like Ctrl-C.
HANDLED = (signal.SIGTERM, signal.SIGHUP)

_received: int | None = None


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by signal `signum` (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _handler(signum: int, frame: FrameType | None) -> None:
    """First signal: unwind with `Terminated`. A second one: the default action (die now)."""
    global _received
    if _received == signum:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _received = signum
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """Handle SIGTERM and SIGHUP like Ctrl-C in this process (main thread only; a signal
    ignored on entry, as SIGHUP under `nohup`, stays ignored)."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in HANDLED:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _handler)


def received() -> int:
    """The signal that interrupted the run: SIGTERM or SIGHUP when one was handled, else SIGINT."""
    return _received or signal.SIGINT


def interruption(signum: int | None = None) -> tuple[str, int]:
    """The CLI's line and exit code for an interrupted run: ("Interrupted.", 130) for Ctrl-C,
    ("Interrupted (SIGTERM).", 143), ("Interrupted (SIGHUP).", 129)."""
    signum = int(signum or received())
    if signum == signal.SIGINT:
        return "Interrupted.", 128 + signum
    return f"Interrupted ({signal.Signals(signum).name}).", 128 + signum
