"""Names of inputs: local files, GDAL virtual paths (`/vsizip//data/x.zip/a.tif`, `/vsis3/...`)
and the URIs rasterio accepts (`zip:///data/x.zip!/a.tif`, `s3://...`, `https://...`).

A virtual name is kept verbatim as a string (`VirtualPath`): `Path()` would collapse the
double slash of `/vsizip//abs/x.zip` and the one of `s3://`, and GDAL would then look for a
relative file. Standard library only, so that every layer may use it."""

from __future__ import annotations

import re
from pathlib import Path

#: A GDAL virtual file system prefix (`/vsizip/`, `/vsicurl/`, ...) or a URI scheme (`zip://`,
#: `s3://`, `https://`; also `s3:/` as `Path()` leaves it). Two letters at least: not `C:/`.
_VIRTUAL = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9+.\-]+:/)")
#: Virtual file systems and URI schemes whose container is a local file (an archive).
_LOCAL_VSI = re.compile(r"^/vsi(zip|tar|gzip|7z|rar)/(.*)$")
_LOCAL_URI = re.compile(r"^(zip|tar|gzip|file)(\+file)?://([^!]*)")


def is_virtual(name: str | Path) -> bool:
    """Whether `name` is a GDAL virtual path or a URI (not a plain local file name)."""
    return _VIRTUAL.match(str(name)) is not None


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


def as_input(name: str | Path) -> Path | VirtualPath:
    """An input as given: a `VirtualPath` for a virtual name, else a `Path`."""
    return VirtualPath(str(name)) if is_virtual(name) else Path(name)


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
