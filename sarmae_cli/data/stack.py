"""One scene given as one file per polarisation: which inputs of a run belong together.

Files in one folder whose names differ only by a polarisation word (`data/bands.polarisation_token`:
`scene_VV.tif` and `scene_VH.tif`; ASF HyP3 `..._VV.tif`; Planetary Computer `vv.tif` and
`vh.tif`; Sentinel-1 SAFE `s1a-iw-grd-vv-...-001.tiff` and `s1a-iw-grd-vh-...-002.tiff`) make one
`paths.Stack`: one scene of one band per file, bands in the order VV, VH, HH, HV, named after the
common name (`scene`; the folder's name when nothing is left, as for `vv.tif`). Files that pair
with no other stay inputs of their own. Two files of one polarisation for one scene are refused.

Names only, no raster library, so the command line plans its outputs before loading anything;
`data/raster.open_raster` reads a `Stack` through a GDAL VRT and refuses files whose grids differ.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from sarmae_cli.data.bands import POLARISATIONS, polarisation_token
from sarmae_cli.errors import UsageError
from sarmae_cli.paths import Stack, VirtualPath, distinct

Input = Path | VirtualPath | Stack


def _folder(p: Path | VirtualPath) -> str:
    """The folder an input is in, as a key: absolute for local files, the text before the last
    component for virtual ones."""
    if isinstance(p, VirtualPath):
        return str(p)[: len(str(p)) - len(p.name)]
    return os.path.dirname(os.path.abspath(p))


def stack_inputs(inputs: Sequence[Path | VirtualPath]) -> list[Input]:
    """The inputs with files of one scene, one per polarisation, grouped into `Stack`s (at the
    place of the first of them); other inputs as they are. Two files of one polarisation for
    one scene, and a group named like another input, are usage errors."""
    groups: dict[tuple[str, str], list[tuple[str, Path | VirtualPath]]] = {}
    keys: list[tuple[str, str] | Path | VirtualPath] = []
    for p in inputs:
        split = polarisation_token(p.stem)
        if split is None:
            keys.append(p)
            continue
        key = (_folder(p), split[1])
        if key not in groups:
            groups[key] = []
            keys.append(key)
        groups[key].append((split[0], p))
    out: list[Input] = []
    for key in keys:
        if not isinstance(key, tuple):
            out.append(key)
            continue
        members = groups[key]
        if len(members) == 1:
            out.append(members[0][1])
            continue
        out.append(_stack(key, members))
    return distinct(out)


def _stack(key: tuple[str, str], members: list[tuple[str, Path | VirtualPath]]) -> Stack:
    """A `Stack` of the files of one scene, bands in the order of `POLARISATIONS`."""
    seen: dict[str, Path | VirtualPath] = {}
    for pol, p in members:
        if pol in seen:
            raise UsageError(
                f"{seen[pol]} and {p} are both {pol} files of one scene; give one of them (or "
                "process them in separate runs)"
            )
        seen[pol] = p
    pols = sorted(seen, key=POLARISATIONS.index)
    stem = key[1] or Path(key[0].rstrip("/!")).name or "scene"
    return Stack([seen[p] for p in pols], pols, stem)
