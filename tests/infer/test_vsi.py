"""GDAL virtual paths and URIs as inputs (issue 31): `/vsizip//abs/x.zip/a.tif` and
`zip:///abs/x.zip!/a.tif` reach GDAL verbatim (`Path()` would collapse the double slash and
make the archive's path relative); outputs named after them are sensible; outputs themselves
stay local files. A zip written in the test: no network."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarmae_cli.data.raster import InputNotFoundError, RasterError, open_raster, require_input
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.api import Options, list_chips, segment_scene
from sarmae_cli.infer.batch import expand_inputs, run_many
from sarmae_cli.infer.models import Models
from sarmae_cli.outputs import output_for
from sarmae_cli.paths import VirtualPath, is_virtual, local_file
from tests.infer.conftest import db_scene, write_scene


@pytest.fixture
def archive(tmp_path) -> Path:
    """scenes.zip holding scene.tif (a small georeferenced scene) and readme.txt."""
    write_scene(tmp_path / "scene.tif", db_scene(40, 50))
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as z:
        z.write(tmp_path / "scene.tif", "scene.tif")
        z.writestr("readme.txt", "not a raster")
    (tmp_path / "scene.tif").unlink()
    return tmp_path / "scenes.zip"


def names(archive: Path, member: str) -> list[str]:
    return [f"/vsizip/{archive}/{member}", f"zip://{archive}!/{member}"]


def test_virtual_names():
    for name in (
        "/vsizip//d/x.zip/a.tif",
        "/vsis3/b/k.tif",
        "zip:///d/x.zip!/a.tif",
        "s3://b/k.tif",
        "s3:/b/k",
    ):
        assert is_virtual(name)
    for name in ("/data/x.tif", "x.tif", "C:/x.tif", "/vsi.tif", "my:file.tif"):
        assert not is_virtual(name)
    v = VirtualPath("/vsicurl/https://h.org/s/S1A_x.tif?sig=1#f")
    assert (v.name, v.stem, v.suffix) == ("S1A_x.tif", "S1A_x", ".tif")
    assert VirtualPath("/vsigzip//d/x.tif.gz").stem == "x"
    assert VirtualPath("/vsizip/{/d/x.zip}/a.tif").name == "a.tif"
    assert local_file("/vsizip/{/d/x.zip}/a.tif") == Path("/d/x.zip")
    assert local_file("zip:///d/x.zip!/a.tif") == Path("/d/x.zip")
    assert local_file("/vsis3/b/k.tif") is None and local_file("https://h.org/x.tif") is None


def test_zip_member_through_the_library(archive, tmp_path):
    for name in names(archive, "scene.tif"):
        (src,) = expand_inputs([name])
        assert isinstance(src, VirtualPath) and src == name  # verbatim: the double slash kept
        with open_raster(src) as ds:
            assert ds.shape == (40, 50) and ds.crs == rasterio.crs.CRS.from_epsg(32631)
        assert output_for(src, None, tmp_path, ".tif", many=True) == tmp_path / "scene.tif"
        assert output_for(src, Path("o/{stem}.water.tif"), None, "", many=True) == Path("o/scene.water.tif")
        assert list_chips([name]) == [name]


def test_missing_or_unreadable_members(archive, tmp_path):
    for name in [*names(archive, "nope.tif"), *names(tmp_path / "missing.zip", "scene.tif")]:
        with pytest.raises(InputNotFoundError, match=f"^input not found: {name}$") as e:
            expand_inputs([name])
        assert e.value.exit_code == 2
    for name in names(archive, "readme.txt"):
        require_input(name)  # there: that it is no raster is said when it is read
        with pytest.raises(RasterError, match="is not a readable raster"):
            open_raster(name)


def test_outputs_stay_local_and_never_the_archive(archive, tmp_path):
    src = VirtualPath(names(archive, "scene.tif")[0])
    with pytest.raises(UsageError, match="is the archive holding input /vsizip//"):
        run_many([(src, [archive])], lambda s: {}, overwrite=True)
    with pytest.raises(UsageError, match="outputs are written to local files"):
        run_many([(src, [Path(f"/vsizip/{tmp_path}/out.zip/w.tif")])], lambda s: {}, overwrite=True)


def test_segment_a_zip_member(archive, tmp_path, weights_dir):
    """The whole route: a scene inside a zip, segmented, georeferenced like the scene."""
    models = Models("segment", weights_dir / "seg.safetensors", device="cpu")
    for i, name in enumerate(names(archive, "scene.tif")):
        (src,) = expand_inputs([name])
        out = tmp_path / f"w{i}.tif"
        summary = segment_scene(src, out, models, Options(tile=32))
        assert summary["tiles"] >= 1
        with rasterio.open(out) as o:
            assert o.shape == (40, 50) and o.crs == rasterio.crs.CRS.from_epsg(32631)
            assert set(np.unique(o.read(1))) <= {0, 1}


@pytest.mark.parametrize("command,weights", [("segment", "seg"), ("embed", "enc"), ("classify", "cls")])
def test_cli_takes_virtual_inputs(invoke, archive, tmp_path, weights_dir, command, weights):
    """Issue 31: `sarmae segment /vsizip//abs/x.zip/scene.tif` failed with '... does not exist'
    (the double slash collapsed). Needs the inputs declared as `list[str]` in cli/."""
    out = tmp_path / "out"
    out.mkdir()
    w = ("-w", weights_dir / f"{weights}.safetensors", "-q", "--tile", "32")
    for name in names(archive, "scene.tif"):
        r = invoke(command, name, "--output-dir", out, *w, "--overwrite")
        assert r.exit_code == 0, r.stderr
        assert [p.name for p in out.iterdir()] == [f"scene.{'parquet' if command == 'embed' else 'tif'}"]
    r = invoke(command, names(archive, "nope.tif")[0], "--output-dir", out, *w)
    assert r.exit_code == 2 and r.stderr == f"Error: input not found: {names(archive, 'nope.tif')[0]}\n"
    r = invoke(command, names(archive, "scene.tif")[1], "-o", "s3://bucket/o.tif", *w)
    assert r.exit_code == 2 and r.stderr.startswith("Error: outputs are written to local files;"), r.stderr
