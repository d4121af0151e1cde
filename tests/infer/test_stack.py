"""One scene given as one file per polarisation (`scene_VV.tif scene_VH.tif`): grouping by file
name (`data/stack.py`), reading as one raster through a GDAL VRT (`data/vrt.py`), the refusals,
and the same maps and embeddings as from the one dual-pol file."""

import pickle
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from sarmae_cli.data import raster
from sarmae_cli.data.stack import stack_inputs
from sarmae_cli.data.vrt import StackError, open_input
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.api import Options, segment_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.paths import Stack, expand_paths
from tests.infer.conftest import db_scene, write_scene
from tests.infer.test_gcps import _gcps, write_gcp_scene


def _split(dual: Path, folder: Path, stem: str, pols=("VV", "VH"), sep: str = "_") -> list[Path]:
    """The bands of a dual-pol file as one-band files `folder/{stem}{sep}{POL}.tif` (no band
    descriptions: the polarisation is in the name only, as in BigEarthNet-S1 or ASF HyP3)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    with rasterio.open(dual) as src:
        for i, pol in enumerate(pols, start=1):
            profile = {**src.profile, "count": 1}
            gcps, gcp_crs = src.gcps
            if gcps:  # georeferenced only by GCPs: the files carry the same GCPs
                del profile["transform"]
                profile.update(gcps=gcps, crs=gcp_crs)
            path = folder / f"{stem}{sep}{pol}.tif"
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(i), 1)
                if src.tags():
                    dst.update_tags(**src.tags())
            out.append(path)
    return out


def _touch(folder: Path, *names: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")
    return [folder / n for n in names]


def test_files_of_one_scene_are_grouped_by_name(tmp_path):
    a_vh, a_vv, b_vv, c = _touch(tmp_path, "a_VH.tif", "a_VV.tif", "b_VV.tif", "c.tif")
    got = stack_inputs(expand_paths([tmp_path]))
    assert got[1:] == [b_vv, c] and isinstance(got[0], Stack)
    stack = got[0]
    assert stack.members == (a_vv, a_vh) and stack.pols == ("VV", "VH")  # band order VV, VH
    assert stack.stem == "a" and stack.name == "a_VV.tif+a_VH.tif" and stack.suffix == ".tif"
    assert str(stack) == f"{tmp_path}/a_VV.tif+a_VH.tif"
    assert pickle.loads(pickle.dumps(stack)).members == stack.members  # rebuilt from its parts
    # Planetary Computer style: vv.tif and vh.tif in the item's folder, named after the folder
    (pc,) = stack_inputs(_touch(tmp_path / "item7", "vh.tif", "vv.tif"))
    assert isinstance(pc, Stack) and pc.stem == "item7" and pc.pols == ("VV", "VH")
    # Sentinel-1 SAFE measurement TIFFs: the image number differs between the polarisations
    safe = _touch(
        tmp_path / "measurement",
        "s1a-iw-grd-vh-20200101t055102-20200101t055127-030610-0381b7-002.tiff",
        "s1a-iw-grd-vv-20200101t055102-20200101t055127-030610-0381b7-001.tiff",
    )
    (s1,) = stack_inputs(safe)
    assert s1.stem == "s1a-iw-grd-20200101t055102-20200101t055127-030610-0381b7" and s1.pols == ("VV", "VH")
    quad = stack_inputs(_touch(tmp_path / "q", "x_HH.tif", "x_HV.tif", "x_VH.tif", "x_VV.tif"))
    assert quad[0].pols == ("VV", "VH", "HH", "HV")
    # other folders, or a lone file: separate scenes, named as before
    apart = [*_touch(tmp_path / "f1", "s_VV.tif"), *_touch(tmp_path / "f2", "s_VH.tif")]
    assert stack_inputs(apart) == apart
    assert stack_inputs([b_vv]) == [b_vv]


def test_grouping_refusals(tmp_path):
    twice = _touch(tmp_path / "t", "a_VV.tif", "a-vv.tif")
    with pytest.raises(UsageError, match=r"a_VV.tif and .*a-vv.tif are both VV files of one scene"):
        stack_inputs(twice)
    clash = _touch(tmp_path / "c", "a_VV.tif", "a_VH.tif", "a.tif")
    with pytest.raises(UsageError, match="have the same name 'a'"):
        stack_inputs(clash)


def test_a_stack_reads_as_the_dual_pol_file(tmp_path):
    dual = write_scene(tmp_path / "dual.tif", db_scene(40, 50), nodata=-99.0)
    vv, vh = _split(dual, tmp_path / "s", "scene")
    (stack,) = stack_inputs([vh, vv])
    with open_input(stack) as st, rasterio.open(dual) as d:
        assert st.count == 2 and st.descriptions == ("VV", "VH")
        assert st.tags(1)["FILE_POLARISATION"] == "VV" and st.nodata == -99.0
        assert (st.crs, st.transform, st.shape) == (d.crs, d.transform, d.shape)
        np.testing.assert_array_equal(st.read(), d.read())
        a = raster.read_window(st, [1, 2], -5, 30, 20, 30, -99.0)  # boundless, as the engine reads
        b = raster.read_window(d, [1, 2], -5, 30, 20, 30, -99.0)
        np.testing.assert_array_equal(a[0], b[0]) and np.testing.assert_array_equal(a[1], b[1])
        assert raster.label(st) == str(stack)
        assert raster.band_indexes(st, "VH") == [2]


def test_nodata_and_masks_of_the_files_are_kept(tmp_path):
    data = db_scene(20, 20)
    vv = write_scene(tmp_path / "m_VV.tif", data[:1].copy(), nodata=-99.0)
    vh_data = data[1:].copy()
    vh_data[0, :3] = 0.0  # the VH file's own nodata value
    vh = write_scene(tmp_path / "m_VH.tif", vh_data, nodata=0.0)
    with rasterio.open(vv, "r+") as f:
        f.write(np.where(np.arange(20)[None, :, None] == 5, -99.0, data[:1]).astype(np.float32))
    (stack,) = stack_inputs([vv, vh])
    with open_input(stack) as st:
        _, valid = raster.read_window(st, [1, 2], 0, 0, 20, 20, st.nodata)
    assert not valid[:3].any() and not valid[5].any() and valid[3:5].all() and valid[6:].all()
    # an internal mask on one file: the stack is valid where every file is
    masked = write_scene(tmp_path / "k_VV.tif", data[:1].copy())
    with rasterio.open(masked, "r+") as f:
        mask = np.full((20, 20), 255, np.uint8)
        mask[:, :4] = 0
        f.write_mask(mask)
    other = write_scene(tmp_path / "k_VH.tif", data[1:].copy(), nodata=0.0)
    (stack,) = stack_inputs([masked, other])
    with open_input(stack) as st:
        _, valid = raster.read_window(st, [1, 2], 0, 0, 20, 20, st.nodata)
    assert not valid[:, :4].any() and valid[:, 4:].all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shape": (20, 24)}, "have different sizes (24 x 24 and 24 x 20 pixels)"),
        ({"transform": from_origin(500010.0, 4_650_000.0, 10.0, 10.0)}, "different geotransforms"),
        ({"crs": "EPSG:32632"}, "different CRSs (EPSG:32631 and EPSG:32632)"),
        ({"dtype": np.float64}, "different pixel types (float32 and float64)"),
        ({"bands": 2}, "has 2 bands, but files given as one scene"),
    ],
)
def test_files_that_are_not_one_raster_are_refused(invoke, weights_dir, tmp_path, change, message):
    vv = write_scene(tmp_path / "p_VV.tif", db_scene(24, 24)[:1].copy())
    shape = change.get("shape", (24, 24))
    vh_data = db_scene(*shape)[: change.get("bands", 1)].astype(change.get("dtype", np.float32))
    kw = {k: change[k] for k in ("transform", "crs") if k in change}
    vh = write_scene(tmp_path / "p_VH.tif", vh_data, **kw)
    (stack,) = stack_inputs([vv, vh])
    with pytest.raises(StackError, match="p_VV.tif|p_VH.tif") as e:
        open_input(stack)
    assert message in str(e.value) and e.value.exit_code == 2
    ok = write_scene(tmp_path / "ok.tif", db_scene(24, 24))
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("segment", "-w", weights_dir / "seg.safetensors", ok, vv, vh, "--output-dir", out)
    assert r.exit_code == 2 and r.stderr.startswith("Error: ") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and list(out.iterdir()) == []  # refused before any input ran


def test_dual_pol_file_and_single_pol_files_give_the_same_outputs(invoke, weights_dir, tmp_path):
    """The same scene as one dual-pol GeoTIFF and as two single-pol files: the same class map
    and probabilities (two-band and one-band weights, and the threshold baseline), the same
    per-tile classes and the same embeddings; outputs named after the common name."""
    dual = write_scene(tmp_path / "scene.tif", db_scene(70, 90))
    vv, vh = _split(dual, tmp_path / "split", "scene")
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    runs = [
        ("segment", "-w", weights_dir / "seg.safetensors"),
        ("segment", "-w", weights_dir / "seg1.safetensors"),
        ("segment", "--method", "threshold"),
    ]
    for i, cmd in enumerate(runs):
        r1 = invoke(*cmd, dual, "-o", a / f"m{i}_{{stem}}.tif", "--probabilities", a / f"p{i}_{{stem}}.tif")
        r2 = invoke(*cmd, vv, vh, "-o", b / f"m{i}_{{stem}}.tif", "--probabilities", b / f"p{i}_{{stem}}.tif")
        assert r1.exit_code == 0 and r2.exit_code == 0, (r1.stderr, r2.stderr)
        bands = "as co-pol; VH as cross-pol" if i == 0 else "as co-pol; VH unused"
        assert f"scene_VV.tif+scene_VH.tif: bands: VV {bands}\n" in r2.stderr, r2.stderr
        for name in (f"m{i}_scene.tif", f"p{i}_scene.tif"):
            with rasterio.open(a / name) as x, rasterio.open(b / name) as y:
                np.testing.assert_array_equal(x.read(), y.read())
                assert (x.crs, x.transform) == (y.crs, y.transform)
        with rasterio.open(a / f"p{i}_scene.tif") as x:
            assert np.nanstd(x.read(1)) > 1e-4  # the output varies: the comparison can fail
    r = invoke("classify", "-w", weights_dir / "cls.safetensors", vv, vh, "-o", b / "c.tif", "-q")
    assert r.exit_code == 0, r.stderr
    invoke("classify", "-w", weights_dir / "cls.safetensors", dual, "-o", a / "c.tif", "-q")
    with rasterio.open(a / "c.tif") as x, rasterio.open(b / "c.tif") as y:
        np.testing.assert_array_equal(x.read(), y.read())
    for d, inputs in ((a, [dual]), (b, [vv, vh])):
        r = invoke("embed", "-w", weights_dir / "enc.safetensors", *inputs, "--output-dir", d, "-q")
        assert r.exit_code == 0, r.stderr
    ea, eb = gpd.read_parquet(a / "scene.parquet"), gpd.read_parquet(b / "scene.parquet")
    np.testing.assert_array_equal(np.stack(ea.embedding), np.stack(eb.embedding))
    assert ea.geometry.geom_equals(eb.geometry).all() and eb.source[0] == "scene_VV.tif+scene_VH.tif"


def test_bands_option_and_contradictory_names(weights_dir, tmp_path):
    dual = write_scene(tmp_path / "scene.tif", db_scene(40, 40))
    vv, vh = _split(dual, tmp_path / "s", "scene")
    (stack,) = stack_inputs([vv, vh])
    models = Models("segment", weights_dir / "seg1.safetensors", device="cpu")
    r = segment_scene(stack, tmp_path / "vh.tif", models, Options(bands="VH"))
    assert r["bands"] == ["VH"]
    r = segment_scene(stack, tmp_path / "vv.tif", models, Options())
    assert r["notes"][0] == "bands: VV as co-pol; VH unused"
    with rasterio.open(vv, "r+") as f:  # the VV file says it holds VH
        f.descriptions = ("VH",)
    r = segment_scene(stack, tmp_path / "x.tif", models, Options())
    note = r["notes"][0]
    assert "band 1: description VH, file name VV; VH used (the description)" in note
    assert "bands 1, 2 are all VH: band 1 used" in note
    one = write_scene(tmp_path / "one_VH.tif", db_scene(40, 40)[:1].copy())
    with rasterio.open(one, "r+") as f:
        f.descriptions = ("Sigma0_VV_db",)
    r = segment_scene(one, tmp_path / "y.tif", models, Options())
    assert "band 1: description VV, file name VH; VV used (the description)" in r["notes"][0]


def test_bigearthnet_patches_as_files_per_polarisation(invoke, data_dir, tmp_path):
    """The six BigEarthNet-S1 patches (one float32 dB file per polarisation, 10 m UTM) through
    the shipped water model: one map per patch, named after it, equal to the map of the same
    patch written as one dual-pol file."""
    patches = sorted(p for p in (data_dir / "bigearthnet_s1").iterdir() if p.is_dir())
    assert len(patches) == 6
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    r = invoke("segment", "--task", "water", *patches, "--output-dir", b, "--json", "-q")
    assert r.exit_code == 0, r.stderr
    duals = []
    for p in patches:
        vv, vh = (rasterio.open(next(p.glob(f"*_{pol}.tif"))) for pol in ("VV", "VH"))
        profile = {**vv.profile, "count": 2}
        duals.append(tmp_path / "duals" / f"{p.name}.tif")
        duals[-1].parent.mkdir(exist_ok=True)
        with rasterio.open(duals[-1], "w", **profile) as dst:
            dst.write(np.stack([vv.read(1), vh.read(1)]))
            dst.descriptions = ("VV", "VH")
        vv.close(), vh.close()
    assert invoke("segment", "--task", "water", *duals, "--output-dir", a, "-q").exit_code == 0
    assert sorted(f.name for f in b.iterdir()) == sorted(f"{p.name}.tif" for p in patches)
    for p in patches:
        with rasterio.open(a / f"{p.name}.tif") as x, rasterio.open(b / f"{p.name}.tif") as y:
            np.testing.assert_array_equal(x.read(), y.read())
            assert y.crs == x.crs and y.shape == (120, 120)


def test_transform_is_kept_for_degrees(tmp_path):
    """A grid in EPSG:4326 keeps its CRS and transform through the VRT."""
    t = from_origin(-3.0, 40.0, 9e-5, 9e-5)
    dual = write_scene(tmp_path / "g.tif", db_scene(30, 30), crs="EPSG:4326", transform=t)
    (stack,) = stack_inputs(_split(dual, tmp_path / "s", "g"))
    with open_input(stack) as st:
        assert st.crs.to_epsg() == 4326 and st.transform.almost_equals(t)
        assert raster.pixel_size(st) == pytest.approx((9.95, 7.67), rel=0.01)


def test_gcp_only_files_and_virtual_files(invoke, weights_dir, tmp_path):
    """Sentinel-1 SAFE measurement TIFFs (GCPs only, one per polarisation, image numbers 001 and
    002) and files inside a ZIP archive group and read as their dual-pol file does."""
    dual = write_gcp_scene(tmp_path / "dual.tif", db_scene(48, 64))
    name = "s1a-iw-grd-{}-20200101t055102-20200101t055127-030610-0381b7-00{}"
    vv, vh = (tmp_path / "m" / f"{name.format(p, n)}.tiff" for p, n in (("vv", 1), ("vh", 2)))
    _split(dual, tmp_path / "m", "x")
    (tmp_path / "m" / "x_VV.tif").rename(vv)
    (tmp_path / "m" / "x_VH.tif").rename(vh)
    with rasterio.open(vv) as f:
        assert len(f.gcps[0]) == 5 and f.transform.is_identity  # GCPs only, as in a SAFE product
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("segment", "-w", weights_dir / "seg.safetensors", tmp_path / "m", "--output-dir", out, "-q")
    assert r.exit_code == 0, r.stderr
    (written,) = out.iterdir()
    assert written.name == "s1a-iw-grd-20200101t055102-20200101t055127-030610-0381b7.tif"
    invoke("segment", "-w", weights_dir / "seg.safetensors", dual, "-o", tmp_path / "d.tif", "-q")
    with rasterio.open(written) as x, rasterio.open(tmp_path / "d.tif") as y:
        np.testing.assert_array_equal(x.read(), y.read())
        assert len(x.gcps[0]) == len(_gcps()) and x.gcps[1].to_epsg() == 4326
    dual2 = write_scene(tmp_path / "z.tif", db_scene(40, 40))
    files = _split(dual2, tmp_path / "zsrc", "z")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as z:
        for f in files:
            z.write(f, f"in/{f.name}")
    names = [f"/vsizip/{tmp_path}/z.zip/in/z_VH.tif", f"zip://{tmp_path}/z.zip!/in/z_VV.tif"]
    for given in ([names[0], names[0].replace("VH", "VV")], [names[1], names[1].replace("VV", "VH")]):
        r = invoke("segment", "-w", weights_dir / "seg.safetensors", *given, "-o", tmp_path / "zz.tif",
                   "--overwrite", "-q")  # fmt: skip
        assert r.exit_code == 0, r.stderr
        invoke("segment", "-w", weights_dir / "seg.safetensors", dual2, "-o", tmp_path / "zd.tif",
               "--overwrite", "-q")  # fmt: skip
        with rasterio.open(tmp_path / "zz.tif") as x, rasterio.open(tmp_path / "zd.tif") as y:
            np.testing.assert_array_equal(x.read(), y.read())
