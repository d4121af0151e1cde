"""Output-path policy shared by every command: refuse to clobber, write atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sarmae_cli.errors import OutputExistsError, SarmaeError, UsageError


def check_output(path: Path, overwrite: bool = False) -> None:
    """Fail early if `path` exists (without `overwrite`) or its folder cannot take it."""
    if path.is_dir():
        raise UsageError(f"output {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} exists; pass --overwrite to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"output folder {parent} does not exist; create it first")
    if not parent.is_dir():
        raise UsageError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {path}: folder {parent} is not writable")


@contextlib.contextmanager
def atomic_output(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    On any exception (or interruption) the temporary file is removed and `path` is left
    as it was, so a destination never holds a partial file.
    """
    check_output(path, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise SarmaeError(f"cannot write {path}: {e.strerror}") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except OSError as e:
        raise SarmaeError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
