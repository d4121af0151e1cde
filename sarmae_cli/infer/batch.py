"""Many scenes in one run: input expansion (folders, globs, GDAL virtual paths), sharding
across torchrun ranks, skip-existing, and a done/skipped/failed summary.

Outputs are named after the input's stem (`out/STEM.tif`, or `-o 'out/{stem}.tif'`:
`outputs.output_for`), so two different inputs with the same stem are refused up front
(`paths.expand_paths`), as is any output that another output or an input of the run already
names (`outputs.check_jobs`): a batch never loses a result or an input."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sarmae_cli.data import raster
from sarmae_cli.data.raster import require_input
from sarmae_cli.errors import SarmaeError
from sarmae_cli.outputs import check_jobs
from sarmae_cli.paths import VirtualPath, expand_paths, is_virtual

#: An input as named: a local file, or a GDAL virtual path / URI kept verbatim.
Input = Path | VirtualPath


def expand_inputs(
    inputs: Sequence[str | Path], suffixes: tuple[str, ...] = raster.SCENE_SUFFIXES
) -> list[Input]:
    """Files of the inputs (`paths.expand_paths`: folders, globs, local names checked without
    GDAL), with every GDAL virtual path or URI checked by GDAL too, so that an input that does
    not exist is refused before any input is processed."""
    out = expand_paths(inputs, suffixes)
    require_virtual(out)
    return out


def require_virtual(inputs: Sequence[Input]) -> None:
    """Refuse a GDAL virtual input that GDAL does not find (local ones are checked already)."""
    for src in inputs:
        if is_virtual(src):
            require_input(str(src))


def shard(paths: list[Input]) -> list[Input]:
    """This process's share of the inputs when launched by torchrun (RANK / WORLD_SIZE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return paths[rank::world] if world > 1 else paths


def run_many(
    jobs: list[tuple[Input, list[Path]]],
    run: Callable[[Input], dict[str, Any]],
    overwrite: bool,
) -> list[dict[str, Any]]:
    """Run `run(input)` for every (input, outputs) job, once `check_jobs` accepts the plan and
    GDAL finds its virtual inputs.
    With one job, errors propagate (one line, exit code of the error); with several, a failure
    is recorded and the batch goes on. Jobs whose outputs all exist are skipped unless
    `overwrite` (a previous run's results: the summary lists them as skipped)."""
    check_jobs(jobs)
    require_virtual([src for src, _ in jobs])
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
