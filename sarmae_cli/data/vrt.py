"""A scene given as one file per polarisation (`paths.Stack`, grouped by `data/stack.py`) read
as one raster: a GDAL VRT held in memory (an XML text GDAL opens directly) with one band per file,
so windowed reads stay windowed reads of the files and memory stays bounded. rasterio has no
function that builds such a VRT (GDAL's `gdalbuildvrt -separate` is not in its API), hence the
short XML here. Files that cannot be bands of one raster (another grid, pixel type or band
count) are refused with a usage error naming them."""

from __future__ import annotations

import math
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from sarmae_cli.data.bands import polarisation
from sarmae_cli.data.raster import RasterError, check_dtype, open_raster, read_gcps, uses_mask
from sarmae_cli.errors import UsageError
from sarmae_cli.paths import Stack, VirtualPath


class StackError(RasterError, UsageError):
    """Files given as one scene per polarisation that cannot be one raster (other grids, pixel
    types or band counts): a usage error (exit 2), fixed by giving them in separate runs."""

    exit_code = 2


#: GDAL's names of the pixel types a stack of files may have (`SUPPORTED_DTYPES`).
_GDAL_TYPES = {
    "uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
    "float32": "Float32", "float64": "Float64", "complex64": "CFloat32", "complex128": "CFloat64",
    "complex_int16": "CInt16",
}  # fmt: skip


def _difference(a: rasterio.DatasetReader, b: rasterio.DatasetReader) -> str | None:
    """What keeps two files from being bands of one raster (pixel type, size, CRS,
    geotransform to 1 % of a pixel, GCPs), or None."""
    if a.dtypes[0] != b.dtypes[0]:
        return f"pixel types ({a.dtypes[0]} and {b.dtypes[0]})"
    if (a.width, a.height) != (b.width, b.height):
        return f"sizes ({a.width} x {a.height} and {b.width} x {b.height} pixels)"
    if a.crs != b.crs:
        return f"CRSs ({a.crs.to_string() if a.crs else 'none'} and {b.crs.to_string() if b.crs else 'none'})"
    tol = 0.01 * max(min(abs(a.transform.a), abs(a.transform.e)), 1e-12)
    if not a.transform.almost_equals(b.transform, precision=tol):
        return "geotransforms (origin or pixel size)"
    (ga, ca), (gb, cb) = read_gcps(a), read_gcps(b)
    key = [(round(g.row, 2), round(g.col, 2), g.x, g.y) for g in ga]
    if ca != cb or key != [(round(g.row, 2), round(g.col, 2), g.x, g.y) for g in gb]:
        return "GCPs"
    return None


def _check_members(stack: Stack, members: list[rasterio.DatasetReader]) -> None:
    """Refuse files of one scene that cannot be one raster: a file of several bands, or files
    that differ in pixel type or grid (`_difference`)."""
    for path, src in zip(stack.members, members, strict=True):
        if src.count != 1:
            raise StackError(
                f"{path} has {src.count} bands, but files given as one scene, one per polarisation "
                f"({stack.name}), need one band each; give {path} in a run of its own"
            )
    for path, src in zip(stack.members[1:], members[1:], strict=True):
        diff = _difference(members[0], src)
        if diff is not None:
            raise StackError(
                f"{stack.members[0]} and {path} (one scene by their names) have different {diff}; "
                "warp one onto the other's grid (gdalwarp) or give them in separate runs"
            )


#: The band tag of a stack's VRT that holds the polarisation its file's name gives.
FILE_POLARISATION = "FILE_POLARISATION"


def stack_vrt(stack: Stack, members: list[rasterio.DatasetReader]) -> str:
    """The GDAL VRT (XML) of one band per file, on the files' common grid: the files' tags;
    band description the file's own, followed by the file name's polarisation unless it names
    one (`Amplitude` -> `Amplitude VV`); band tag FILE_POLARISATION the file name's; each file's
    nodata (a common value where they differ); their masks combined (the minimum: valid where
    every file is) when any file has a mask or alpha."""
    first = members[0]
    root = ET.Element("VRTDataset", rasterXSize=str(first.width), rasterYSize=str(first.height))
    tags = {k: v for m in reversed(members) for k, v in m.tags().items()}  # the first file's win
    if tags:
        meta = ET.SubElement(root, "Metadata")
        for k, v in tags.items():
            ET.SubElement(meta, "MDI", key=k).text = v
    gcps, gcp_crs = read_gcps(first)
    if first.crs is not None:
        ET.SubElement(root, "SRS").text = first.crs.to_wkt()
    if not first.transform.is_identity:
        ET.SubElement(root, "GeoTransform").text = ", ".join(repr(v) for v in first.transform.to_gdal())
    if gcps:
        gcp_list = ET.SubElement(root, "GCPList", Projection=gcp_crs.to_wkt() if gcp_crs else "")
        for g in gcps:
            attrs = {
                "Id": str(g.id or ""),
                "Info": str(g.info or ""),
                "Pixel": repr(g.col),
                "Line": repr(g.row),
            }
            ET.SubElement(gcp_list, "GCP", **attrs, X=repr(g.x), Y=repr(g.y), Z=repr(g.z or 0.0))
    dtype = _GDAL_TYPES.get(first.dtypes[0])
    if dtype is None:
        check_dtype(first)
    common = next((m.nodata for m in members if m.nodata is not None), None)
    for i, (pol, src) in enumerate(zip(stack.pols, members, strict=True), start=1):
        band = ET.SubElement(root, "VRTRasterBand", dataType=dtype, band=str(i))
        own = (src.descriptions[0] or "").strip()
        ET.SubElement(band, "Description").text = own if polarisation(own) else f"{own} {pol}".strip()
        meta = ET.SubElement(band, "Metadata")
        ET.SubElement(meta, "MDI", key=FILE_POLARISATION).text = pol
        if common is not None:
            ET.SubElement(band, "NoDataValue").text = repr(float(common))
        differs = src.nodata is not None and not _same_value(src.nodata, common)
        source = ET.SubElement(band, "ComplexSource" if differs else "SimpleSource")
        _source(source, src, "1")
        if differs:
            ET.SubElement(source, "NODATA").text = repr(float(src.nodata))
    if any(uses_mask(m) for m in members):
        mask = ET.SubElement(ET.SubElement(root, "MaskBand"), "VRTRasterBand", dataType="Byte")
        mask.set("subClass", "VRTDerivedRasterBand")
        ET.SubElement(mask, "PixelFunctionType").text = "min"
        for src in members:
            _source(ET.SubElement(mask, "SimpleSource"), src, "mask,1")
    return ET.tostring(root, encoding="unicode")


def _same_value(a: float, b: float | None) -> bool:
    return b is not None and (a == b or (math.isnan(a) and math.isnan(b)))


def _source(el: ET.Element, src: rasterio.DatasetReader, band: str) -> None:
    # GDAL's own name of the file (a `zip://` URI as `/vsizip/...`, a relative path as given)
    ET.SubElement(el, "SourceFilename", relativeToVRT="0").text = src.files[0] if src.files else src.name
    ET.SubElement(el, "SourceBand").text = band


def open_stack(stack: Stack) -> rasterio.DatasetReader:
    """One raster of the files of a `Stack` (one band each, on one grid), read through a GDAL
    VRT held in memory: windowed reads stay windowed reads of the files."""
    members: list[rasterio.DatasetReader] = []
    try:
        for m in stack.members:
            members.append(open_raster(m))
        _check_members(stack, members)
        xml = stack_vrt(stack, members)
    finally:
        for m in members:
            m.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(xml)


def check_stacks(inputs: list) -> None:
    """Refuse, before any input is processed, every `Stack` of a run whose files cannot be one
    raster (`open_stack`)."""
    for p in inputs:
        if isinstance(p, Stack):
            open_stack(p).close()


def open_input(path: Path | VirtualPath | Stack) -> rasterio.DatasetReader:
    """Open an input scene: a `Stack` of files as one raster (`open_stack`), else the file
    (`raster.open_raster`)."""
    return open_stack(path) if isinstance(path, Stack) else open_raster(path)
