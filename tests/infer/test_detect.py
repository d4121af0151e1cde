"""`sarmae detect` and its library (`infer/detect.py`, `infer/boxes.py`, `infer/vectors.py`):
tiles shifted to scene pixels, one box per object across tile borders, bounded memory, the
vector / points / preview outputs (empty ones included), GCP-only scenes, atomic outputs and
wrong-task refusals.

Most tests use an oracle backend (`BrightBoxes`) whose dense outputs box every bright blob of a
tile exactly, so that what is checked is the engine, not an untrained detector."""

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import torch
from rasterio.crs import CRS
from scipy import ndimage

from sarmae_cli.errors import SarmaeError
from sarmae_cli.export.box_parity import match, matched_truth, pair_up
from sarmae_cli.infer.api import Options
from sarmae_cli.infer.boxes import Boxes, BoxMerger, trusted
from sarmae_cli.infer.detect import DetectOptions, detect_scene
from sarmae_cli.infer.models import Models
from sarmae_cli.infer.vectors import COLUMNS, POINT_COLUMNS
from sarmae_cli.model.detector import Detector, points
from sarmae_cli.model.factory import save_model
from tests.infer.conftest import TRANSFORM, make_detector, make_weights, tiny_meta, write_scene
from tests.infer.test_gcps import GROUND, write_gcp_scene

TILE, OVERLAP = 64, 32
SEA_DB, SHIP_DB = -25.0, 0.0


class BrightBoxes:
    """An oracle detector backend: for each tile, the dense FCOS outputs whose decoding boxes
    every connected bright blob (channel 0 > 0) exactly, as the tile shows it (cut at the tile
    edge when the blob is); scores 0.9997. Counts the tiles it saw."""

    in_chans, patch_size, out_channels, out_stride, device = 1, 16, 1, None, "cpu"

    def __init__(self, strides=(8, 16, 32)) -> None:
        self.strides = list(strides)
        self.tiles = 0

    def predict(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        b, _, t, _ = batch.shape
        self.tiles += b
        anchors = torch.cat(points((t, t), self.strides)).numpy()  # [N, 4]
        cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
        size = anchors[:, 2] - anchors[:, 0]
        n = len(anchors)
        cls = np.full((b, n, 1), -12.0, np.float32)
        reg = np.ones((b, n, 4), np.float32)
        ctr = np.full((b, n, 1), 8.0, np.float32)
        for i in range(b):
            labels, _ = ndimage.label(batch[i, 0] > 0)
            for sl in ndimage.find_objects(labels):
                y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
                inside = (cx > x0) & (cx < x1) & (cy > y0) & (cy < y1) & (size == self.strides[0])
                cls[i, inside, 0] = 8.0
                reg[i, inside] = (
                    np.stack([cx - x0, cy - y0, x1 - cx, y1 - cy], 1)[inside] / size[inside, None]
                )
        return cls, reg, ctr


class Failing(BrightBoxes):
    """Fails on the third batch."""

    def predict(self, batch):
        if self.tiles >= 2 * len(batch):
            raise SarmaeError("the model failed on purpose")
        return super().predict(batch)


def sea(h: int, w: int, ships: list[tuple[int, int, int, int]]) -> np.ndarray:
    """A dB scene [1, H, W]: dark sea with bright rectangular ships (x0, y0, x1, y1) in pixels."""
    x = np.full((1, h, w), SEA_DB, np.float32)
    x += np.random.default_rng(0).normal(0, 0.5, x.shape).astype(np.float32)
    for x0, y0, x1, y1 in ships:
        x[0, y0:y1, x0:x1] = SHIP_DB
    return x


#: Ships of `sea(150, 200)`; tiles of 64 px step 32 px (columns 0, 32, ..., 136): the first
#: straddles the border at x = 64 (lies inside tiles 1 and 2 whole, cut in tiles 0 and 3), the
#: second the one at y = 96, the third a corner of four tiles, the last touches the scene edge.
SHIPS = [(55, 10, 80, 18), (100, 90, 106, 112), (60, 58, 70, 70), (180, 130, 200, 138)]


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return make_detector(tmp_path_factory.mktemp("det") / "det.safetensors", tile=TILE, overlap=OVERLAP)


def oracle_models(weights: Path, backend=None) -> Models:
    models = Models("detect", weights, "cpu")
    models.use(backend or BrightBoxes(), "detections")
    return models


def run(weights, scene, out, backend=None, **kw) -> dict:
    opts = Options(
        batch_size=kw.pop("batch_size", 4), overwrite=kw.pop("overwrite", False), gsd=kw.pop("gsd", "auto")
    )
    return detect_scene(
        scene, out, oracle_models(weights, backend), opts, DetectOptions(**kw.pop("d", {})), **kw
    )


def test_objects_across_tile_borders_found_once_in_scene_pixels(detector, tmp_path):
    scene = write_scene(tmp_path / "sea.tif", sea(150, 200, SHIPS))
    backend = BrightBoxes()
    s = run(detector, scene, tmp_path / "d.gpkg", backend, points=tmp_path / "d.csv")
    assert backend.tiles == s["tiles"] == 4 * 6 and s["detections"] == len(SHIPS)
    gdf = gpd.read_file(tmp_path / "d.gpkg", layer="detections")
    got = Boxes(gdf[["col_min", "row_min", "col_max", "row_max"]].to_numpy(np.float32),
                gdf["score"].to_numpy(np.float32), gdf["class_id"].to_numpy(np.int64))  # fmt: skip
    truth = Boxes(
        np.array(SHIPS, np.float32), np.ones(len(SHIPS), np.float32), np.zeros(len(SHIPS), np.int64)
    )
    parity = pair_up(truth.as_dict(), got.as_dict())
    assert parity["min_iou"] > 0.999 and parity["boxes_other"] == len(SHIPS)
    # each polygon is its pixel box in the scene CRS; lengths and widths in metres (10 m pixels)
    assert gdf.crs == CRS.from_epsg(32631) and list(gdf.columns) == [*COLUMNS, "geometry"]
    by_col = gdf.set_index(gdf["col_min"].round().astype(int))
    for x0, y0, x1, y1 in SHIPS:
        r = by_col.loc[x0]
        (left, top), (right, bottom) = TRANSFORM @ (x0, y0), TRANSFORM @ (x1, y1)
        assert r.geometry.bounds == pytest.approx((left, bottom, right, top), abs=1e-3)
        assert r.length_m == pytest.approx(10 * max(x1 - x0, y1 - y0), rel=1e-3)
        assert r.width_m == pytest.approx(10 * min(x1 - x0, y1 - y0), rel=1e-3)
        assert r["class"] == "ship" and r.score > 0.99
    pts = pd.read_csv(tmp_path / "d.csv")
    assert list(pts.columns) == POINT_COLUMNS and len(pts) == len(SHIPS)
    assert np.allclose(np.sort(pts["col"]), np.sort([(a + c) / 2 for a, _, c, _ in SHIPS]))
    # the centre lon/lat is the box centre's (EPSG:32631 -> EPSG:4326)
    c = gdf.geometry.centroid.to_crs(4326)
    assert np.allclose(gdf["lon"], c.x, atol=1e-7) and np.allclose(gdf["lat"], c.y, atol=1e-7)


def test_boxes_go_back_to_the_input_grid_when_the_model_runs_at_another_pixel_size(detector, tmp_path):
    """10 m pixels run at --gsd 20: the model sees the scene at half size (the tiling of the
    test above), the boxes come back on the input grid."""
    ships = [tuple(2 * v for v in b) for b in SHIPS]
    scene = write_scene(tmp_path / "sea.tif", sea(300, 400, ships))
    backend = BrightBoxes()
    s = run(detector, scene, tmp_path / "d.gpkg", backend, gsd=20.0)
    assert s["tiles"] == 4 * 6 and "resampled to 20 m" in " ".join(s["notes"])
    gdf = gpd.read_file(tmp_path / "d.gpkg")
    got = {"boxes": gdf[["col_min", "row_min", "col_max", "row_max"]].to_numpy(), "scores": gdf["score"],
           "labels": gdf["class_id"]}  # fmt: skip
    truth = {"boxes": np.array(ships, np.float32), "scores": np.ones(4), "labels": np.zeros(4)}
    assert pair_up(truth, got)["min_iou"] > 0.999 and len(gdf) == len(ships)
    want = sorted(10.0 * max(x1 - x0, y1 - y0) for x0, y0, x1, y1 in ships)
    assert sorted(gdf["length_m"]) == pytest.approx(want, rel=1e-3)  # geodesic: UTM scale 0.9996


def test_a_zoomed_detector_sees_the_scene_enlarged_and_gives_input_grid_boxes(tmp_path):
    """Weights trained with `detection.zoom` 2 run on the scene at twice its size (twice the
    tiles; the model sees each ship twice as long) and the boxes come back on the input grid."""
    meta = tiny_meta("detection", 1, ["ship"])
    meta.tile = {"size": TILE, "overlap": OVERLAP}
    meta.training = {"detection": {"zoom": 2.0, "longest_object": 25.0}}
    weights = tmp_path / "zoom2.safetensors"
    save_model(weights, Detector(meta.encoder_config, 1, (8, 16, 32), channels=32, num_convs=1), meta)
    scene = write_scene(tmp_path / "sea.tif", sea(75, 100, [tuple(v // 2 for v in b) for b in SHIPS]))
    seen = []

    class Sizes(BrightBoxes):
        def predict(self, batch):
            labels, _ = ndimage.label(batch[:, 0] > 0)
            seen.extend(sl[2].stop - sl[2].start for sl in ndimage.find_objects(labels))
            return super().predict(batch)

    backend = Sizes()
    s = run(weights, scene, tmp_path / "d.gpkg", backend)
    assert s["tiles"] == 4 * 6 and "zoomed x2" in " ".join(s["notes"])  # the 150 x 200 grid above
    assert max(seen) >= 2 * 12  # the longest ship, 12 px in the scene, spans 24 or more model px
    gdf = gpd.read_file(tmp_path / "d.gpkg")
    got = {"boxes": gdf[["col_min", "row_min", "col_max", "row_max"]].to_numpy(), "scores": gdf["score"],
           "labels": gdf["class_id"]}  # fmt: skip
    ships = np.array([tuple(v // 2 for v in b) for b in SHIPS], np.float32)
    truth = {"boxes": ships, "scores": np.ones(4), "labels": np.zeros(4)}
    assert len(gdf) == len(ships) and pair_up(truth, got)["min_iou"] > 0.8


def test_cut_boxes_are_left_to_the_neighbour_tile():
    valid = np.ones((64, 64), bool)
    boxes = np.array([[0, 10, 20, 20], [10, 10, 20, 20], [50, 50, 64, 60], [5, 5, 5, 9]], np.float32)
    # left and bottom edges inner: the first box (touches the left edge) goes; the third touches
    # the right edge, which lies on the scene border here, and stays; the zero-width one goes
    keep = trusted(boxes, 64, (True, False, False, True), 3, valid)
    assert keep.tolist() == [False, True, True, False]
    valid[15, 15] = False  # the second box's centre on nodata
    assert trusted(boxes, 64, (False, False, False, False), 3, valid).tolist() == [True, False, True, False]


def test_merger_finalises_as_the_scene_streams_past():
    m = BoxMerger(iou=0.5, max_detections=3)
    a = Boxes(np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 40, 10, 60]], np.float32),
              np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64))  # fmt: skip
    m.add(a)
    m.settle(32)  # the duplicate goes; the first box is final; the third may still meet a later tile
    assert m.n_final == 1 and len(Boxes.concat(m.pending)) == 1
    m.add(Boxes(np.array([[0, 41, 10, 61]], np.float32), np.array([0.95], np.float32), np.zeros(1, np.int64)))
    for y in range(60, 200, 20):
        m.add(
            Boxes(
                np.array([[50, y, 60, y + 5]], np.float32), np.array([0.1], np.float32), np.zeros(1, np.int64)
            )
        )
        m.settle(y)
    out = m.finish()
    assert out.scores.tolist() == pytest.approx([0.95, 0.9, 0.1])  # the best 3, one per object
    assert out.boxes[0].tolist() == [0, 41, 10, 61]


def test_match_counts():
    truth = Boxes(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.ones(2, np.float32),
                  np.zeros(2, np.int64))  # fmt: skip
    pred = Boxes(np.array([[1, 0, 11, 10], [1, 1, 10, 10], [50, 50, 60, 60]], np.float32),
                 np.array([0.9, 0.8, 0.7], np.float32), np.zeros(3, np.int64))  # fmt: skip
    # a duplicate and a false alarm; one ship missed
    assert match(pred.as_dict(), truth.as_dict(), 0.5) == (1, 2, 1)
    assert matched_truth(pred.as_dict(), truth.as_dict(), 0.5).tolist() == [True, False]  # which one
    assert matched_truth(pred.as_dict(), truth.as_dict(), 0.99).tolist() == [False, False]


def test_memory_does_not_grow_with_scene_height(detector, tmp_path, monkeypatch):
    """Pending boxes (waiting for later tiles) stay within about two rows of tiles, however
    tall the scene."""
    ships = [(x, y, x + 12, y + 10) for y in range(8, 1000, 40) for x in range(8, 180, 40)]
    scene = write_scene(tmp_path / "tall.tif", sea(1000, 200, ships))
    seen = []
    add = BoxMerger.add

    def spy(self, b):
        add(self, b)
        seen.append(len(Boxes.concat(self.pending)))

    monkeypatch.setattr(BoxMerger, "add", spy)
    s = run(detector, scene, tmp_path / "d.gpkg")
    assert s["detections"] == len(ships) and len(seen) > 100
    assert max(seen) <= 4 * 2 * 5  # about two rows of ships (5 per row, each seen by up to 4 tiles)


def test_empty_scene_writes_valid_empty_layers(detector, tmp_path):
    scene = write_scene(tmp_path / "calm.tif", sea(100, 120, []))
    outs = {"gpkg": tmp_path / "d.gpkg", "json": tmp_path / "d.geojson", "csv": tmp_path / "p.csv"}
    s = run(detector, scene, outs["gpkg"], points=outs["csv"], preview=tmp_path / "p.png")
    assert s["detections"] == 0 and s["by_class"] == {"ship": 0}
    info = pyogrio.read_info(outs["gpkg"], layer="detections")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon" and info["crs"] == "EPSG:32631"
    assert list(info["fields"]) == list(COLUMNS)
    assert list(info["dtypes"]) == ["object", "int32", "float32", *["float64"] * 4, *["float32"] * 4]
    assert pd.read_csv(outs["csv"]).columns.tolist() == POINT_COLUMNS and len(pd.read_csv(outs["csv"])) == 0
    run(detector, scene, outs["json"])
    doc = json.loads(outs["json"].read_text())
    assert doc["type"] == "FeatureCollection" and doc["features"] == []
    assert len(gpd.read_file(outs["json"])) == 0


def test_geojson_is_wgs84_lonlat(detector, tmp_path):
    scene = write_scene(tmp_path / "sea.tif", sea(150, 200, SHIPS))
    run(detector, scene, tmp_path / "d.geojson")
    run(detector, scene, tmp_path / "d.gpkg")
    doc = json.loads((tmp_path / "d.geojson").read_text())
    assert "crs" not in doc or "CRS84" in json.dumps(doc["crs"])  # RFC 7946: lon/lat on WGS 84
    gj, gp = gpd.read_file(tmp_path / "d.geojson"), gpd.read_file(tmp_path / "d.gpkg")
    assert gj.crs == CRS.from_epsg(4326) and len(gj) == len(SHIPS)
    gj, gp = gj.sort_values("col_min"), gp.sort_values("col_min").to_crs(4326)
    assert np.allclose(gj.geometry.bounds.to_numpy(), gp.geometry.bounds.to_numpy(), atol=1e-6)
    lon, lat = gj.geometry.centroid.x, gj.geometry.centroid.y  # boxes of a few pixels: planar is fine
    assert ((lon > 2.9) & (lon < 3.1) & (lat > 41.9) & (lat < 42.1)).all()  # UTM 31N near 3 E, 42 N


def test_preview_draws_the_boxes(detector, tmp_path):
    scene = write_scene(tmp_path / "sea.tif", sea(150, 200, SHIPS))
    run(detector, scene, tmp_path / "d.gpkg", preview=tmp_path / "p.png")
    with rasterio.open(tmp_path / "p.png") as src:
        img = src.read()  # [3, h, w]
    assert img.shape == (3, 150, 200)
    red = (img[0] > 200) & (img[1] < 100) & (img[2] < 100)
    x0, y0, x1, y1 = SHIPS[0]
    assert red[y0, x0 : x1 - 1].all() and red[y0 : y1 - 1, x0].all()  # the box outline
    assert not red[30:50, 10:40].any()  # open sea


def test_gcp_only_scene_maps_boxes_through_gcps(detector, tmp_path):
    data = sea(70, 100, [(40, 20, 60, 28)])
    scene = write_gcp_scene(tmp_path / "gcp.tif", np.concatenate([data, data - 6]))  # VV, VH: VV used
    run(detector, scene, tmp_path / "d.gpkg", points=tmp_path / "p.csv")
    gdf = gpd.read_file(tmp_path / "d.gpkg")
    assert gdf.crs == CRS.from_epsg(4326) and len(gdf) == 1
    r = gdf.iloc[0]
    want = [GROUND @ xy for xy in ((40, 20), (60, 20), (60, 28), (40, 28))]
    got = np.array(r.geometry.exterior.coords)[:-1]
    assert all(np.abs(got - w).sum(1).min() < 1e-6 for w in want)
    assert (r.lon, r.lat) == pytest.approx(GROUND @ (50, 24), abs=1e-6)
    assert r.length_m > r.width_m > 0  # geodesic sizes of the mapped box


def test_failure_leaves_no_output(detector, tmp_path):
    scene = write_scene(tmp_path / "sea.tif", sea(150, 200, SHIPS))
    with pytest.raises(SarmaeError, match="on purpose"):
        run(
            detector,
            scene,
            tmp_path / "d.gpkg",
            Failing(),
            points=tmp_path / "p.csv",
            preview=tmp_path / "p.png",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sea.tif"]


def test_min_score_and_max_detections(detector, tmp_path):
    scene = write_scene(tmp_path / "sea.tif", sea(150, 200, SHIPS))
    assert run(detector, scene, tmp_path / "a.gpkg", d={"max_detections": 2})["detections"] == 2
    assert run(detector, scene, tmp_path / "b.gpkg", d={"min_score": 0.99999})["detections"] == 0


# ----------------------------------------------------------------- the command, with a tiny real detector


def test_detect_command(invoke, detector, tmp_path):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for name in ("a", "b"):
        write_scene(scenes / f"{name}.tif", sea(90, 130, SHIPS[:1]))
    out = tmp_path / "out"
    out.mkdir()
    r = invoke("detect", "-w", detector, scenes, "--output-dir", out, "--points", f"{out}/{{stem}}.csv",
               "--min-score", "0.07", "--device", "cpu", "--json", "-q")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["done"] == 2 and sorted(p.name for p in out.iterdir()) == [
        "a.csv",
        "a.gpkg",
        "b.csv",
        "b.gpkg",
    ]
    res = doc["results"][0]
    assert res["detections"] == len(gpd.read_file(out / "a.gpkg")) and res["tile"] == TILE
    assert (gpd.read_file(out / "a.gpkg")["score"] >= 0.07).all()
    # done scenes are skipped in a batch; one scene refuses to overwrite without --overwrite
    r = invoke("detect", "-w", detector, scenes, "--output-dir", out, "--device", "cpu", "--json", "-q")
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == 2
    r = invoke("detect", "-w", detector, scenes / "a.tif", "-o", out / "a.gpkg", "--device", "cpu")
    assert r.exit_code == 2 and "exists; pass --overwrite" in r.stderr


def test_detect_shards_scenes_across_torchrun_ranks(invoke, detector, tmp_path, monkeypatch):
    for name in ("a", "b", "c"):
        write_scene(tmp_path / f"{name}.tif", sea(64, 64, []))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    scenes = [tmp_path / f"{n}.tif" for n in "abc"]
    r = invoke("detect", "-w", detector, *scenes, "-o", f"{tmp_path}/{{stem}}.gpkg", "--device", "cpu", "-q")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.gpkg")) == ["b.gpkg"]


@pytest.mark.parametrize(
    ("command", "weights", "task"),
    [
        (["detect", "{scene}", "-o", "d.gpkg"], "seg", "segmentation"),
        (["detect", "{scene}", "-o", "d.gpkg"], "cls", "classification"),
        (["segment", "{scene}", "-o", "s.tif"], "det", "detection"),
        (["classify", "{scene}", "-o", "c.tif"], "det", "detection"),
        (["embed", "{scene}", "-o", "e.parquet"], "det", "detection"),
    ],
)
def test_wrong_task_weights_are_refused(invoke, detector, tmp_path, monkeypatch, command, weights, task):
    monkeypatch.chdir(tmp_path)
    files = {"det": detector}
    files["seg"] = make_weights(tmp_path / "seg.safetensors", "segmentation", 1, ["land", "water"])
    files["cls"] = make_weights(tmp_path / "cls.safetensors", "classification", 1, ["a", "b"])
    scene = write_scene(tmp_path / "sea.tif", sea(64, 64, []))
    args = [a.format(scene=scene) for a in command]
    r = invoke(args[0], "-w", files[weights], *args[1:])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"holds {task} weights but `sarmae {args[0]}` needs" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["sea.tif", "seg.safetensors", "cls.safetensors"]
    )


def test_detect_uses_the_min_score_stored_in_the_weights(invoke, detector, tmp_path):
    """Without --min-score, `detect` takes `training.detection.min_score` (written by `sarmae
    weights convert --min-score`), else 0.5; --min-score overrides the stored cut. The random
    detector's boxes score about 0.07: a stored 0.05 keeps them, 0.5 none."""
    scene = write_scene(tmp_path / "sea.tif", sea(90, 130, SHIPS[:1]))
    low = tmp_path / "low.safetensors"
    assert invoke("weights", "convert", detector, "--min-score", "0.05", "-o", low).exit_code == 0

    def detect(weights: Path, name: str, *extra: str) -> tuple[dict, gpd.GeoDataFrame]:
        out = tmp_path / f"{name}.gpkg"
        r = invoke("detect", "-w", weights, scene, "-o", out, "--device", "cpu", "--json", "-q", *extra)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)["results"][0], gpd.read_file(out)

    stored, gdf = detect(low, "stored")
    assert stored["min_score"] == 0.05 and stored["detections"] == len(gdf) > 0
    assert (gdf["score"] >= 0.05).all()
    plain, gdf = detect(detector, "plain")  # no stored cut: 0.5
    assert plain["min_score"] == 0.5 and plain["detections"] == len(gdf) == 0
    flag, gdf = detect(low, "flag", "--min-score", "0.5")  # the flag wins over the stored cut
    assert flag["min_score"] == 0.5 and flag["detections"] == len(gdf) == 0
    mid = float(np.median(gpd.read_file(tmp_path / "stored.gpkg")["score"]))
    flag, gdf = detect(low, "mid", "--min-score", f"{mid}")
    assert 0 < flag["detections"] < stored["detections"] and (gdf["score"] >= mid - 1e-4).all()
