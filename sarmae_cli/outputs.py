"""Output-path policy shared by every command: a name with the extension of what is written
(`EXTENSIONS`, `check_extension`), refuse to clobber, never write over an input, outputs are
local files, one output per input in a batch (`output_for`, `check_jobs`), write atomically
(and clean up what a killed run left).

Standard library only: the CLI runs these checks before it imports the library (and torch),
so that a refusal is immediate."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sarmae_cli.errors import OutputExistsError, SarmaeError, UsageError
from sarmae_cli.paths import VirtualPath, is_virtual, local_files

#: Every kind of output file sarmae writes: what it is, and the extensions its name may end in
#: (the first is the one sarmae gives an output it names itself, e.g. under --output-dir).
EXTENSIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "geotiff": ("a GeoTIFF", (".tif", ".tiff")),
    "png": ("a PNG image", (".png",)),
    "parquet": ("a GeoParquet file", (".parquet",)),
    "vector": ("a GeoPackage or GeoJSON file", (".gpkg", ".geojson", ".json")),
    "csv": ("a CSV file", (".csv",)),
    "jsonl": ("a JSON lines file", (".jsonl",)),
    "json": ("a JSON file", (".json",)),
    "onnx": ("an ONNX model", (".onnx",)),
    "safetensors": ("a safetensors weights file", (".safetensors",)),
}


def _either(items: Sequence[str]) -> str:
    """`a`, `a or b`, `a, b or c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def check_extension(
    path: str | Path, kind: str | Sequence[str], option: str = "-o", what: str | None = None
) -> str:
    """The kind (a key of `EXTENSIONS`, or the first of several) whose extensions `path` ends
    in (case-insensitive; a '{stem}' template is checked as written). Anything else is a usage
    error that names the option and the extensions allowed:
    `--preview p.xyz: a PNG quicklook needs a .png name`."""
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    suffix = Path(str(path)).suffix.lower()
    for k in kinds:
        if suffix in EXTENSIONS[k][1]:
            return k
    what = what or _either([EXTENSIONS[k][0] for k in kinds])
    allowed = [e for k in kinds for e in EXTENSIONS[k][1]]
    raise UsageError(f"{option} {path}: {what} needs a {_either(allowed)} name")


def parse_creation_options(co: list[str] | None) -> dict[str, str]:
    """`--co NAME=VALUE` options of GDAL's COG driver -> {NAME: value}."""
    out = {}
    for item in co or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--co {item!r} is not NAME=VALUE (e.g. --co COMPRESS=ZSTD)")
        out[name.strip().upper()] = value.strip()
    return out


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
        for f in local_files(src):  # a scene given as one file per polarisation: each file
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


def check_output_folder(path: Path, what: str) -> None:
    """A folder to write outputs into (created if needed): an existing file there is refused."""
    if Path(path).exists() and not Path(path).is_dir():
        raise UsageError(f"{path} is a file; give a folder for {what}")


def check_run_folder(run_dir: Path, resume: bool, checkpoint: str = "checkpoint.pt") -> None:
    """A training run's folder: a new run needs one without a checkpoint, `resume` one with a
    checkpoint; a file is refused."""
    ckpt = Path(run_dir) / checkpoint
    if resume and not ckpt.is_file():
        raise UsageError(f"cannot resume: no {checkpoint} in {run_dir}; start without --resume")
    if not resume and ckpt.exists():
        raise OutputExistsError(
            f"run folder {run_dir} already holds a checkpoint; pass --resume to continue it "
            "or choose another folder"
        )
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise UsageError(f"run folder {run_dir} is a file; give a folder")


#: One output option of a batch command: (option, name or '{stem}' template or None,
#: --output-dir or None, kind (a key of `EXTENSIONS`), what it is, for the messages).
OutputSpec = tuple[str, Path | None, Path | None, str, str]


def output_for(
    src: Path | VirtualPath,
    output: Path | None,
    output_dir: Path | None,
    suffix: str,
    many: bool,
    option: str = "-o",
) -> Path | None:
    """Destination of one input: `output` (may contain `{stem}`), or `output_dir/STEM+suffix`.
    Outputs are local files: a virtual path or URL is refused."""
    if output is not None and output_dir is not None and option == "-o":
        raise UsageError("give either -o or --output-dir, not both")
    if output is not None:
        refuse_virtual_output(output, option)
        if "{stem}" in str(output):
            return Path(str(output).replace("{stem}", src.stem))
        if many:
            raise UsageError(f"several inputs: {option} needs '{{stem}}' in its name, or use --output-dir")
        return Path(output)
    if output_dir is not None and option == "-o":
        refuse_virtual_output(output_dir, "--output-dir")
        if output_dir.exists() and not output_dir.is_dir():
            raise UsageError(f"--output-dir {output_dir} is a file; give a folder")
        if not output_dir.is_dir():
            raise UsageError(f"--output-dir {output_dir} does not exist; create it first")
        return output_dir / f"{src.stem}{suffix}"
    return None


def check_jobs(jobs: Sequence[tuple[Path | VirtualPath, Sequence[Path]]]) -> None:
    """Refuse, before any input runs, a plan that would lose a result or destroy an input: an
    output named twice (for two inputs, or twice for one), an output that is an input of the
    run (after symlinks, with or without --overwrite), a virtual output."""
    for _, outs in jobs:
        for out in outs:
            refuse_virtual_output(out)
    refuse_input_as_output([o for _, outs in jobs for o in outs], [src for src, _ in jobs])
    named: dict[Path, Path | VirtualPath] = {}
    for src, outs in jobs:
        for out in outs:
            key = Path(out).resolve()
            if key not in named:
                named[key] = src
            elif str(named[key]) == str(src):
                raise UsageError(f"output {out} is named twice for {src}; give each output its own file name")
            else:
                raise UsageError(
                    f"inputs {named[key]} and {src} would both write {out}; rename one, or give outputs "
                    "names that differ (e.g. with '{stem}'), or process them in separate runs"
                )


def plan_outputs(
    inputs: Sequence[Path | VirtualPath], specs: Sequence[OutputSpec], overwrite: bool
) -> list[tuple[Path | VirtualPath, list[Path | None]]]:
    """The outputs of every input of a batch command, one per spec (None for an option not
    given), checked before any work: the names (`output_for`), the plan (`check_jobs`: never
    over an input), each option's extension (`check_extension`), and each destination
    (`check_output`: its folder; with a single input, also that it does not exist without
    `overwrite`; a batch skips the inputs already done instead)."""
    many = len(inputs) > 1
    jobs = []
    for src in inputs:
        outs = [
            output_for(src, name, out_dir, EXTENSIONS[kind][1][0], many, option)
            for option, name, out_dir, kind, _ in specs
        ]
        jobs.append((src, outs))
    named = [(src, [o for o in outs if o is not None]) for src, outs in jobs]
    check_jobs(named)
    for option, name, _, kind, what in specs:
        if name is not None:
            check_extension(name, kind, option, what)
    for src, outs in named:
        for out in outs:
            check_output(out, overwrite or many, inputs=[src])
    return jobs


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
