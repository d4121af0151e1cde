"""Many scenes in one run: input expansion (folders, globs, GDAL virtual paths), output
naming, sharding across torchrun ranks, skip-existing, and a done/skipped/failed summary.

Outputs are named after the input's stem (`out/STEM.tif`, or `-o 'out/{stem}.tif'`), so two
different inputs with the same stem are refused up front, as is any output that another
output or an input of the run already names: a batch never loses a result or an input."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sarmae_cli.data import raster
from sarmae_cli.data.raster import require_input
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.outputs import refuse_input_as_output, refuse_virtual_output
from sarmae_cli.paths import VirtualPath, is_hidden, is_virtual

#: An input as named: a local file, or a GDAL virtual path / URI kept verbatim.
Input = Path | VirtualPath


def expand_inputs(
    inputs: Sequence[str | Path], suffixes: tuple[str, ...] = raster.SCENE_SUFFIXES
) -> list[Input]:
    """Files of the inputs: a folder gives its rasters (sorted; hidden files and sarmae's own
    temporary files left out), a glob pattern its matches, a GDAL virtual path or URI itself
    (checked by GDAL). A named file that does not exist is refused here, before any input is
    processed; an input named twice is kept once; two inputs with the same stem are refused."""
    out: list[Input] = []
    for p in inputs:
        s = str(p)
        if is_virtual(p):
            require_input(s)
            out.append(VirtualPath(s))
        elif not Path(s).exists() and any(ch in s for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {s!r}")
            out.extend(matches)
        elif Path(s).is_dir():
            files = sorted(
                q
                for q in Path(s).iterdir()
                if q.suffix.lower() in suffixes and q.is_file() and not is_hidden(q)
            )
            if not files:
                raise UsageError(f"folder {s} holds no scenes ({', '.join(suffixes)})")
            out.extend(files)
        else:
            require_input(s)
            out.append(Path(s))
    return _distinct(out)


def _distinct(paths: list[Input]) -> list[Input]:
    """`paths` without repeats of one file; two different files with one stem are refused,
    since their outputs would have the same names."""
    seen: dict[object, Input] = {}
    stems: dict[str, Input] = {}
    out = []
    for p in paths:
        key = str(p) if isinstance(p, VirtualPath) else p.resolve()
        if key in seen:
            continue
        seen[key] = p
        other = stems.setdefault(p.stem, p)
        if other is not p:
            raise UsageError(
                f"inputs {other} and {p} have the same name {p.stem!r}, so their outputs would "
                "overwrite each other; rename one, or process them in separate runs (each with "
                "its own --output-dir)"
            )
        out.append(p)
    return out


def shard(paths: list[Input]) -> list[Input]:
    """This process's share of the inputs when launched by torchrun (RANK / WORLD_SIZE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return paths[rank::world] if world > 1 else paths


def output_for(
    src: Input, output: Path | None, output_dir: Path | None, suffix: str, many: bool, option: str = "-o"
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


def check_jobs(jobs: Sequence[tuple[Input, Sequence[Path]]]) -> None:
    """Refuse, before any input runs, a plan that would lose a result or destroy an input: an
    output named twice (for two inputs, or twice for one), an output that is an input of the
    run (after symlinks, with or without --overwrite), a virtual output."""
    for _, outs in jobs:
        for out in outs:
            refuse_virtual_output(out)
    refuse_input_as_output([o for _, outs in jobs for o in outs], [src for src, _ in jobs])
    named: dict[Path, Input] = {}
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


def run_many(
    jobs: list[tuple[Input, list[Path]]],
    run: Callable[[Input], dict[str, Any]],
    overwrite: bool,
) -> list[dict[str, Any]]:
    """Run `run(input)` for every (input, outputs) job, once `check_jobs` accepts the plan.
    With one job, errors propagate (one line, exit code of the error); with several, a failure
    is recorded and the batch goes on. Jobs whose outputs all exist are skipped unless
    `overwrite` (a previous run's results: the summary lists them as skipped)."""
    check_jobs(jobs)
    results = []
    for src, outs in jobs:
        if len(jobs) > 1 and not overwrite and outs and all(o.exists() for o in outs):
            results.append({"input": str(src), "status": "skipped", "reason": "outputs exist"})
            continue
        try:
            results.append({**run(src), "input": str(src), "status": "done"})
        except SarmaeError as e:
            if len(jobs) == 1:
                raise
            results.append({"input": str(src), "status": "failed", "error": str(e)})
    return results
