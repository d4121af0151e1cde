"""Many scenes in one run: input expansion (folders, globs), output naming, sharding across
torchrun ranks, skip-existing, and a done/skipped/failed summary."""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sarmae_cli.data.raster import require_input
from sarmae_cli.errors import SarmaeError, UsageError

SCENE_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")


def expand_inputs(inputs: list[Path], suffixes: tuple[str, ...] = SCENE_SUFFIXES) -> list[Path]:
    """Files of the inputs: a folder gives its rasters (sorted), a glob pattern its matches.
    A named file that does not exist is refused here, before any input is processed."""
    out: list[Path] = []
    for p in inputs:
        s = str(p)
        if not Path(s).exists() and any(ch in s for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {s!r}")
            out.extend(matches)
        elif Path(s).is_dir():
            files = sorted(q for q in Path(s).iterdir() if q.suffix.lower() in suffixes)
            if not files:
                raise UsageError(f"folder {s} holds no scenes ({', '.join(suffixes)})")
            out.extend(files)
        else:
            require_input(Path(s))
            out.append(Path(s))
    return out


def shard(paths: list[Path]) -> list[Path]:
    """This process's share of the inputs when launched by torchrun (RANK / WORLD_SIZE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return paths[rank::world] if world > 1 else paths


def output_for(
    src: Path, output: Path | None, output_dir: Path | None, suffix: str, many: bool, option: str = "-o"
) -> Path | None:
    """Destination of one input: `output` (may contain `{stem}`), or `output_dir/STEM+suffix`."""
    if output is not None and output_dir is not None and option == "-o":
        raise UsageError("give either -o or --output-dir, not both")
    if output is not None:
        if "{stem}" in str(output):
            return Path(str(output).replace("{stem}", src.stem))
        if many:
            raise UsageError(f"several inputs: {option} needs '{{stem}}' in its name, or use --output-dir")
        return Path(output)
    if output_dir is not None and option == "-o":
        if not output_dir.is_dir():
            raise UsageError(f"--output-dir {output_dir} does not exist; create it first")
        return output_dir / f"{src.stem}{suffix}"
    return None


def run_many(
    jobs: list[tuple[Path, list[Path]]],
    run: Callable[[Path], dict[str, Any]],
    overwrite: bool,
) -> list[dict[str, Any]]:
    """Run `run(input)` for every (input, outputs) job. With one job, errors propagate (one
    line, exit code of the error); with several, a failure is recorded and the batch goes on.
    Jobs whose outputs all exist are skipped unless `overwrite`."""
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
