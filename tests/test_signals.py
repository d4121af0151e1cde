"""SIGTERM and SIGHUP handled like Ctrl-C (issue 31 defect 5): the process unwinds, atomic
outputs remove their temporary files, the exit code is 128 + the signal number."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sarmae_cli import signals

#: A small long-running write: the library part of `sarmae segment`'s interruption handling.
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sarmae_cli import signals
    from sarmae_cli.outputs import atomic_output

    signals.install_signal_handlers()
    dst = Path(sys.argv[1])
    try:
        with atomic_output(dst) as tmp:
            tmp.write_text("partial")
            try:
                print("writing", flush=True)
                while True:
                    time.sleep(0.05)
            finally:
                if len(sys.argv) > 2:  # a slow cleanup, to be cut short by a second signal
                    print("unwinding", flush=True)
                    time.sleep(30)
    except KeyboardInterrupt:
        message, code = signals.interruption()
        print(message, file=sys.stderr)
        sys.exit(code)
    """
)


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in signals.HANDLED}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_handler_raises_terminated(restore_handlers):
    signals.install_signal_handlers()
    assert signals.interruption() == ("Interrupted.", 130)
    with pytest.raises(KeyboardInterrupt) as e:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert isinstance(e.value, signals.Terminated) and e.value.signum == signal.SIGTERM
    assert signals.interruption() == ("Interrupted (SIGTERM).", 143)
    assert signals.interruption(signal.SIGHUP) == ("Interrupted (SIGHUP).", 129)
    signals.install_signal_handlers()  # a new run starts afresh
    assert signals.received() == signal.SIGINT


def _start(tmp_path: Path, *extra: str, preexec=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-c", SCRIPT, str(tmp_path / "out.tif"), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=preexec)
    assert proc.stdout.readline() == b"writing\n", proc.stderr.read().decode()
    assert [p.name.endswith(".part") for p in tmp_path.iterdir()] == [True]
    return proc


@pytest.mark.parametrize(
    "sig,code,message",
    [
        (signal.SIGTERM, 143, "Interrupted (SIGTERM)."),
        (signal.SIGHUP, 129, "Interrupted (SIGHUP)."),
        (signal.SIGINT, 130, "Interrupted."),
    ],
)
def test_signal_removes_temporary_files(tmp_path, sig, code, message):
    # A job started in the background inherits SIGINT as ignored: give the child the default.
    proc = _start(tmp_path, preexec=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err.decode()) == (code, message + "\n")
    assert list(tmp_path.iterdir()) == []


def test_second_signal_ends_at_once(tmp_path):
    proc = _start(tmp_path, "slow cleanup")
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout.readline() == b"unwinding\n"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGTERM


def test_ignored_hangup_stays_ignored(tmp_path):
    """Under `nohup` SIGHUP is ignored on entry: it stays so; SIGTERM still stops cleanly."""
    proc = _start(tmp_path, preexec=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and list(tmp_path.iterdir()) == []
