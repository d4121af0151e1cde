"""`sarmae segment` stopped by SIGTERM or SIGHUP as by Ctrl-C (issue 31 defect 5): exit 128+n,
one line, no temporary file and no destination left; what a SIGKILL leaves is removed by the
next run that writes the same destination."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.infer.conftest import db_scene, write_scene


def _segment(weights_dir, src, out) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sarmae_cli", "segment", str(src), "-o", str(out), "-q", "--tile", "32"]
    cmd += ["-w", str(weights_dir / "seg.safetensors"), "--overlap", "16", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, env=env)


def _interrupt_while_writing(proc: subprocess.Popen, folder, prefix: str, sig: int) -> bytes:
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(prefix) for p in folder.iterdir()):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before it could be interrupted; make the scene larger"
    proc.send_signal(sig)
    return proc.communicate(timeout=60)[1]


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_terminated_run_cleans_up(weights_dir, tmp_path, sig, code):
    src = write_scene(tmp_path / "big.tif", db_scene(1500, 1500))
    proc = _segment(weights_dir, src, tmp_path / "w.tif")
    err = _interrupt_while_writing(proc, tmp_path, ".w.tif.", sig)
    assert proc.returncode == code
    assert err.decode() == f"Interrupted ({signal.Signals(sig).name}).\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


def test_next_run_removes_what_a_killed_run_left(weights_dir, tmp_path):
    src = write_scene(tmp_path / "big.tif", db_scene(1500, 1500))
    proc = _segment(weights_dir, src, tmp_path / "w.tif")
    _interrupt_while_writing(proc, tmp_path, ".w.tif.", signal.SIGKILL)
    assert any(p.name.startswith(".w.tif.") for p in tmp_path.iterdir())  # SIGKILL: no cleanup
    small = write_scene(tmp_path / "small.tif", db_scene(40, 40))
    proc = _segment(weights_dir, small, tmp_path / "w.tif")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "small.tif", "w.tif"]
