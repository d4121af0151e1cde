"""Output-path policy shared by every command: refuse to clobber, never write over an input,
outputs are local files, write atomically (and clean up what a killed run left)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from sarmae_cli.errors import OutputExistsError, SarmaeError, UsageError
from sarmae_cli.paths import is_virtual, local_file


def refuse_virtual_output(path: str | Path, what: str = "output") -> None:
    """Outputs are local files: a GDAL virtual path or URL is a usage error."""
    if is_virtual(path):
        raise UsageError(
            f"outputs are written to local files; {what} {path} is a GDAL virtual path or URL: "
            "give a local file name (and copy the result with your storage's tools)"
        )


def refuse_input_as_output(outputs: Iterable[str | Path], inputs: Iterable[str | Path]) -> None:
    """Refuse an output that is (after symlinks) one of the run's inputs, or the archive holding
    one (`/vsizip//d/x.zip/a.tif`), with or without --overwrite: writing it would destroy it."""
    files = {}
    for src in inputs:
        f = local_file(src)
        if f is not None:
            files.setdefault(f.resolve(), src)
    for out in outputs:
        src = files.get(Path(out).resolve())
        if src is not None:
            what = "the archive holding input" if is_virtual(src) else "the input scene"
            raise UsageError(f"output {out} is {what} {src}; choose another output")


def check_output(path: Path, overwrite: bool = False, inputs: Iterable[str | Path] = ()) -> None:
    """Fail early if `path` is virtual, one of `inputs` (even with `overwrite`), exists (without
    `overwrite`) or its folder cannot take it."""
    refuse_virtual_output(path)
    refuse_input_as_output([path], inputs)
    path = Path(path)
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


def temporary_pattern(path: Path) -> re.Pattern[str]:
    """Names of sarmae's temporary files for destination `path`: `.NAME.<8 random>.part`
    (`atomic_output`) and `.NAME.<8 random>.tmp.tif` (`writers.temp_beside`), and what GDAL
    adds to them (`.aux.xml`, `.ovr.tmp`, ...)."""
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.(part|tmp)(\..*)?")


def _locked(path: Path) -> bool:
    """Whether a running `atomic_output` holds `path` (its lock cannot be taken)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files a killed run left beside destination `path` (only names of
    `temporary_pattern(path)`), unless a running writer of the same destination holds one."""
    pattern = temporary_pattern(path)
    try:
        found = [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]
    except OSError:
        return []
    if any(p.name.endswith(".part") and _locked(p) for p in found):
        return []
    for p in found:
        with contextlib.suppress(OSError):
            p.unlink()
    return found


@contextlib.contextmanager
def atomic_output(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    On any exception (or interruption: Ctrl-C, SIGTERM, SIGHUP) the temporary file is removed
    and `path` is left as it was, so a destination never holds a partial file. Temporary files
    a killed run left for the same destination are removed first; the temporary file is locked
    while in use, so that a concurrent run does not take it for a leftover.
    """
    check_output(path, overwrite)
    remove_stale_temporaries(path)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as e:
        raise SarmaeError(f"cannot write {path}: {e.strerror}") from e
    tmp = Path(tmp_name)
    try:
        with contextlib.suppress(OSError):  # a file system without locks: no protection, no error
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except OSError as e:
        raise SarmaeError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)
