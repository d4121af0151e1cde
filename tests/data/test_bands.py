"""Band roles (`data/bands.py`) and their use when a scene is opened: polarisations from band
descriptions, band tags and file names; co/cross-pol roles; which bands feed a model."""

import numpy as np
import pytest
import rasterio

from sarmae_cli.data.bands import model_roles, polarisation, polarisation_token, select_bands
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.scene import open_scene
from tests.infer.conftest import tiny_meta, write_scene


@pytest.mark.parametrize(
    ("text", "pol"),
    [
        ("VV", "VV"),
        ("vh", "VH"),
        ("Sigma0_VV_db", "VV"),
        ("Gamma0_VH", "VH"),
        ("Amplitude_HH", "HH"),
        ("sigma0vv", "VV"),
        ("S1A_IW_GRDH_20200101_HV", "HV"),
        ("s1a-iw-grd-vh-20200101t055102-20200101t055127-030610-0381b7-002.tiff", "VH"),
        ("scene_VV.tif", "VV"),
        ("vv.tif", "VV"),
        ("VV/VH ratio", None),  # two polarisations: not a band of one
        ("angle", None),
        ("", None),
        (None, None),
        ("HB03333.015.png", None),
    ],
)
def test_polarisation_spellings(text, pol):
    assert polarisation(text) == pol


SAFE = "20200101t055102-20200101t055127-030610-0381b7"  # start, stop, orbit, datatake


@pytest.mark.parametrize(
    ("stem", "split"),
    [
        ("scene_VV", ("VV", "scene")),
        ("S1A_IW_GRDH_1SDV_20170613T165043_87_48_VH", ("VH", "S1A_IW_GRDH_1SDV_20170613T165043_87_48")),
        ("vh", ("VH", "")),
        ("HH_scene", ("HH", "scene")),
        ("scene-hv-2020", ("HV", "scene-2020")),
        ("Sigma0VV", ("VV", "Sigma0")),
        (f"s1b-iw-grd-vh-{SAFE}-002", ("VH", f"s1b-iw-grd-{SAFE}")),  # image number dropped
        ("x_VV_VH", None),  # two polarisations: no file of one
        ("scene", None),
        ("vvh", None),
    ],
)  # fmt: skip
def test_polarisation_token_of_file_names(stem, split):
    assert polarisation_token(stem) == split


def test_model_roles():
    assert model_roles(["VV", "VH"]) == ["co", "cross"]
    assert model_roles(["HV"]) == ["cross"]
    assert model_roles(["SAR"]) == ["co"]
    assert model_roles(["SAR", "SAR", "SAR"]) == ["co", "co", "co"]
    assert model_roles(["band1", "band2"]) == ["co", "cross"]  # the Sentinel-1 order
    assert model_roles(["a", "b", "c"]) == []  # matched by count


def test_dual_pol_quad_pol_and_single_pol_choices():
    dual = select_bands(["VV", "VH"], ["VV", "VH"], ["co"])
    assert dual.indexes == [1] and dual.note == "bands: VV (band 1) as co-pol; VH (band 2) unused"
    assert select_bands(["VH", "VV"], ["", ""], ["co", "cross"]).indexes == [2, 1]
    quad = select_bands(["HH", "HV", "VH", "VV"], [""] * 4, ["co", "cross"], prefer=["VV", "VH"])
    assert quad.indexes == [4, 3]
    assert select_bands(["HH", "HV", "VH", "VV"], [""] * 4, ["co", "cross"]).indexes == [1, 2]
    cross_only = select_bands(["VH"], ["VH"], ["co"])
    assert cross_only.indexes == [1] and "no co-pol band: VH stands in" in cross_only.note
    dup = select_bands(["VV", "VV"], ["VV", "vv"], ["co"])
    assert dup.indexes == [1] and "bands 1, 2 are all VV: band 1 used" in dup.note


def test_bands_without_names():
    assert select_bands([None], [""], ["co"]).indexes == [1]
    two = select_bands([None, None], ["", ""], ["co"])
    assert two.indexes == [1] and "Sentinel-1 order" in two.note
    assert select_bands([None, None], ["", ""], ["cross"]).indexes == [2]
    with pytest.raises(UsageError, match=r"3 bands without polarisation names \(band 1, band 2, band 3\)"):
        select_bands([None] * 3, [""] * 3, ["co"])  # e.g. an RGB picture
    with pytest.raises(
        UsageError, match="the weights need co-pol and cross-pol bands; found VV \\(band 1\\)"
    ):
        select_bands(["VV"], ["VV"], ["co", "cross"])
    assert select_bands([None] * 3, [""] * 3, []).indexes == [1, 2, 3]  # roles unknown: by count


def test_scenes_choose_by_description_tag_and_file_name(tmp_path):
    data = np.random.default_rng(0).normal(-12, 3, (2, 32, 32)).astype(np.float32)
    meta = tiny_meta("encoder", 1)  # one co-pol band
    vh_vv = write_scene(tmp_path / "s.tif", data)
    with rasterio.open(vh_vv, "r+") as dst:
        dst.descriptions = ("Sigma0_VH_db", "Sigma0_VV_db")
    with open_scene(vh_vv, meta) as sc:
        assert sc.indexes == [2] and sc.notes[0].startswith("bands: VV (band 2) as co-pol")
    tagged = write_scene(tmp_path / "t.tif", data)
    with rasterio.open(tagged, "r+") as dst:
        dst.descriptions = (None, None)
        dst.update_tags(1, POLARISATION="VH")
        dst.update_tags(2, POLARISATION="VV")
    with open_scene(tagged, meta) as sc:
        assert sc.indexes == [2]
    single = write_scene(tmp_path / "scene_VH.tif", data[:1])
    with open_scene(single, meta) as sc:
        assert sc.indexes == [1] and "no co-pol band: VH stands in" in sc.notes[0]
    with open_scene(vh_vv, meta, bands="1") as sc:  # --bands wins
        assert sc.indexes == [1] and not any(n.startswith("bands:") for n in sc.notes)
    colour = np.random.default_rng(1).integers(0, 255, (3, 32, 32), dtype=np.uint8)  # bands differ
    rgb = write_scene(tmp_path / "rgb.tif", colour, crs=None)
    with pytest.raises(UsageError, match="3 bands without polarisation names"):
        open_scene(rgb, meta)
