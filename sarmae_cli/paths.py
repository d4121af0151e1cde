"""Names of inputs: local files, GDAL virtual paths (`/vsizip//data/x.zip/a.tif`, `/vsis3/...`)
and the URIs rasterio accepts (`zip:///data/x.zip!/a.tif`, `s3://...`, `https://...`).

A virtual name is kept verbatim as a string (`VirtualPath`): `Path()` would collapse the
double slash of `/vsizip//abs/x.zip` and the one of `s3://`, and GDAL would then look for a
relative file.

Also the checks of input names that need no library: a named local path exists and is
readable (`require_path`), folders and globs give their files (`expand_paths`, `list_images`).
GDAL checks the virtual names later (`data/raster.py`). Standard library only, so that every
layer may use it, and the CLI may refuse a bad command line before it imports torch."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from sarmae_cli.errors import NotFoundError, UsageError

#: File suffixes, in one place: chips (renderings), GeoTIFFs, scenes inference reads, any image.
CHIP_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GEOTIFF_SUFFIXES = (".tif", ".tiff")
SCENE_SUFFIXES = (*GEOTIFF_SUFFIXES, ".vrt", ".img", ".jp2")
IMAGE_SUFFIXES = (*CHIP_SUFFIXES, *GEOTIFF_SUFFIXES)

#: A GDAL virtual file system prefix (`/vsizip/`, `/vsicurl/`, ...) or a URI scheme (`zip://`,
#: `s3://`, `https://`; also `s3:/` as `Path()` leaves it). Two letters at least: not `C:/`.
_VIRTUAL = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9+.\-]+:/)")
#: Virtual file systems and URI schemes whose container is a local file (an archive).
_LOCAL_VSI = re.compile(r"^/vsi(zip|tar|gzip|7z|rar)/(.*)$")
_LOCAL_URI = re.compile(r"^(zip|tar|gzip|file)(\+file)?://([^!]*)")


def is_virtual(name: str | Path) -> bool:
    """Whether `name` is a GDAL virtual path or a URI (not a plain local file name; a `Stack` of
    files is none either)."""
    return not isinstance(name, Stack) and _VIRTUAL.match(str(name)) is not None


class VirtualPath(str):
    """A GDAL virtual path or URI, kept verbatim; `name`, `stem` and `suffix` are those of its
    last component, as for a `Path` (`zip:///d/x.zip!/a.tif` -> `a.tif`, `a`, `.tif`)."""

    @property
    def name(self) -> str:
        """The last component, without a URL's query or fragment."""
        s = self.split("?", 1)[0].split("#", 1)[0] if "://" in self else str(self)
        parts = [p for p in re.split(r"[/!]", s.strip("{}")) if p.strip("{}")]
        return parts[-1].strip("{}") if parts else str(self)

    @property
    def suffix(self) -> str:
        """The last suffix of `name` (`.tif`), or ''."""
        return Path(self.name).suffix

    @property
    def stem(self) -> str:
        """`name` without its suffix (and without `.gz` first: `x.tif.gz` -> `x`)."""
        name = self.name
        if name.lower().endswith(".gz") and "." in name[:-3]:
            name = name[:-3]
        return Path(name).stem


class Stack(str):
    """One scene given as one file per polarisation (`scene_VV.tif scene_VH.tif`, grouped by
    `data/stack.stack_inputs`), read as one raster of one band per file (`data/raster.py`).
    Its text is the files' folder and names joined by '+' (`d/scene_VV.tif+scene_VH.tif`);
    `stem`, which names its outputs, is their common name without the polarisation (`scene`)."""

    members: tuple[Path | VirtualPath, ...]  # in band order
    pols: tuple[str, ...]  # each member's polarisation, from its file name

    def __new__(cls, members: Sequence[Path | VirtualPath], pols: Sequence[str], stem: str) -> Stack:
        first = str(members[0])
        folder = first[: len(first) - len(members[0].name)]
        self = super().__new__(cls, folder + "+".join(m.name for m in members))
        self.members, self.pols, self._stem = tuple(members), tuple(pols), stem
        return self

    def __reduce__(self) -> tuple:  # pickle and copy rebuild it from its parts
        return Stack, (self.members, self.pols, self._stem)

    @property
    def name(self) -> str:
        """The members' names joined by '+' (`scene_VV.tif+scene_VH.tif`)."""
        return "+".join(m.name for m in self.members)

    @property
    def stem(self) -> str:
        return self._stem

    @property
    def suffix(self) -> str:
        return self.members[0].suffix


def as_input(name: str | Path) -> Path | VirtualPath | Stack:
    """An input as given: a `VirtualPath` for a virtual name, a `Stack` as it is, else a `Path`."""
    if isinstance(name, Stack):
        return name
    return VirtualPath(str(name)) if is_virtual(name) else Path(name)


def local_files(name: str | Path) -> list[Path]:
    """The local files an input reads (`local_file` of it, or of each member of a `Stack`)."""
    found = [local_file(m) for m in (name.members if isinstance(name, Stack) else [name])]
    return [f for f in found if f is not None]


def local_file(name: str | Path) -> Path | None:
    """The local file an input reads: itself, the archive holding a `/vsizip/`, `/vsitar/`,
    `/vsigzip/` ... or `zip://` member, or None for a remote one (`/vsis3/`, `https://`)."""
    s = str(name)
    if not is_virtual(s):
        return Path(s)
    m = _LOCAL_URI.match(s)
    if m:
        return Path(m.group(3)) if m.group(3) else None
    m = _LOCAL_VSI.match(s)
    if not m or m.group(2).startswith("/vsi"):
        return None
    rest = m.group(2)
    if rest.startswith("{"):  # /vsizip/{/path/x.zip}/member
        return Path(rest[1 : rest.index("}")]) if "}" in rest else None
    parts = rest.split("/")
    for i in range(1, len(parts) + 1):  # the shortest prefix that is a file: the archive
        p = Path("/".join(parts[:i]) or "/")
        if p.is_file():
            return p
    return None


def is_hidden(path: Path, root: Path | None = None) -> bool:
    """Whether `path`, or a folder between `root` and it, is hidden (a name starting with '.'),
    as sarmae's own temporary files (`.X.tif.<random>.part`) are."""
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(p.startswith(".") and p not in (".", "..") for p in parts)


def require_path(path: str | Path, what: str = "input", error: type[NotFoundError] = NotFoundError) -> None:
    """Refuse a local path named on the command line that does not exist or cannot be read
    (`error`, exit 2: "input not found: x.tif"). Virtual names are left to GDAL."""
    if is_virtual(path):
        return
    p = Path(path)
    if not p.exists():
        raise error(f"{what} not found: {path}")
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        raise error(f"cannot read {what} {path}: permission denied")


def find_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files under `folder` (recursively, sorted) with one of `suffixes`, hidden files and
    folders (sarmae's own temporary files among them) left out."""
    suffixes = tuple(suffixes)
    return sorted(
        p
        for p in Path(folder).rglob("*")
        if p.suffix.lower() in suffixes and p.is_file() and not is_hidden(p, Path(folder))
    )


def expand_paths(
    inputs: Sequence[str | Path], suffixes: tuple[str, ...] = SCENE_SUFFIXES
) -> list[Path | VirtualPath]:
    """Files of the inputs: a folder gives its files of `suffixes` (sorted, not recursive;
    hidden files and sarmae's temporary files left out), a glob pattern its matches, a GDAL
    virtual path or URI itself (unchecked: GDAL checks it). A local name that does not exist,
    a glob without matches and a folder without such files are refused; an input named twice
    is kept once; two inputs with the same stem are refused (their outputs would collide)."""
    out: list[Path | VirtualPath] = []
    for p in inputs:
        s = str(p)
        if is_virtual(p):
            out.append(VirtualPath(s))
        elif not Path(s).exists() and any(ch in s for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(s, recursive=True))
            if not matches:
                raise NotFoundError(f"no file matches {s!r}")
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
            require_path(s)
            out.append(Path(s))
    return distinct(out)


def distinct(paths: Sequence[Path | VirtualPath | Stack]) -> list[Path | VirtualPath | Stack]:
    """`paths` without repeats of one file; two different inputs with one stem are refused,
    since their outputs would have the same names."""
    seen: dict[object, Path | VirtualPath | Stack] = {}
    stems: dict[str, Path | VirtualPath | Stack] = {}
    out = []
    for p in paths:
        key = p.resolve() if isinstance(p, Path) else str(p)
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


def list_images(inputs: Sequence[str | Path]) -> list[Path | VirtualPath]:
    """Image files of the inputs (chips): folders are listed recursively (sorted, hidden files
    and folders left out), files kept in order, GDAL virtual paths kept verbatim (unchecked).
    A local name that does not exist and a folder without images are refused."""
    out: list[Path | VirtualPath] = []
    for name in inputs:
        p = as_input(name)
        if isinstance(p, Path) and p.is_dir():
            files = find_files(p, IMAGE_SUFFIXES)
            if not files:
                raise UsageError(f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(files)
        else:
            require_path(p)
            out.append(p)
    return out


def require_files(folder: str | Path, suffixes: Iterable[str], what: str) -> None:
    """Refuse a folder named on the command line that holds no file of `suffixes` (searched
    recursively, hidden files and folders left out; stops at the first found): an empty input
    folder is a usage error, "no {what} found in {folder}"."""
    folder, suffixes = Path(folder), tuple(suffixes)
    found = (p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not is_hidden(p, folder))
    if not any(p.is_file() for p in found):
        raise UsageError(f"no {what} found in {folder}")


def require_dataset(path: str | Path, what: str = "dataset") -> None:
    """A labelled dataset named on the command line: it exists, and a folder holds images."""
    require_path(path, what)
    if Path(path).is_dir():
        require_files(path, IMAGE_SUFFIXES, "images (PNG, JPEG, TIFF)")


def require_source(src: str | Path) -> None:
    """A pretraining source named on the command line: it exists, and a folder holds images or
    ZIP archives of them."""
    require_path(src, "source")
    if Path(src).is_dir():
        require_files(src, (*IMAGE_SUFFIXES, ".zip"), "images (PNG, JPEG, TIFF or ZIPs of them)")
