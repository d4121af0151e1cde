"""Output-path policy: refuse to clobber, atomic writes, usual file mode."""

import os
import stat

import pytest

from sarmae_cli.errors import OutputExistsError, UsageError
from sarmae_cli.outputs import atomic_output, check_output


def test_atomic_output_success_and_mode(tmp_path):
    dst = tmp_path / "out.txt"
    with atomic_output(dst) as tmp:
        assert tmp.parent == tmp_path and tmp != dst
        tmp.write_text("done")
        assert not dst.exists()
    assert dst.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_output_failure_leaves_nothing(tmp_path):
    dst = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(dst) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_check_output_rules(tmp_path):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output(tmp_path / "x")
    check_output(tmp_path / "x", overwrite=True)
    with pytest.raises(UsageError, match="is a directory"):
        check_output(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "missing" / "y")
    with pytest.raises(UsageError, match="not a folder"):
        check_output(tmp_path / "x" / "y")
