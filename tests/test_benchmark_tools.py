"""Small checks of the benchmark helpers whose output the docs quote."""

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import load_benchmark as _load

ROOT = Path(__file__).resolve().parent.parent


def test_train_accuracy_weights_rows_by_the_steps_they_cover(tmp_path):
    """Rows at steps 10, 12 (an epoch end), 20: the last 10 steps are 2 steps at 0.5 (11-12)
    and 8 steps at 1.0 (13-20), not the mean of the two rows."""
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,acc\n10,0.8,0.0\n12,1,0.5\n20,1.7,1.0\n")
    mod = _load("train_accuracy")
    assert mod.last_steps_mean(log, last=10) == pytest.approx((2 * 0.5 + 8 * 1.0) / 10)
    assert mod.last_steps_mean(log, last=8) == pytest.approx(1.0)
    assert mod.last_steps_mean(log, last=100) == pytest.approx((10 * 0.0 + 2 * 0.5 + 8 * 1.0) / 20)


def test_robustness_variants_round_trip_and_keep_the_label_aligned(tmp_path):
    """eval_robustness.write_variant on a tiny dB raster (VV, VH; 20 x 20 px of 10 m, water in
    2 x 2 blocks): power comes back to the same dB, a VH-only file holds the VH band, and the
    x2 variant has half the pixels per side, twice the pixel size, the same origin and a label
    that still marks the dark blocks."""
    import numpy as np
    import rasterio
    from rasterio.transform import Affine

    mod = _load("eval_robustness")
    rng = np.random.default_rng(0)
    water = np.kron(rng.random((10, 10)) < 0.4, np.ones((2, 2), bool))  # [20, 20]
    vv = np.where(water, -22.0, -8.0) + rng.normal(0, 0.5, (20, 20))
    db = np.stack([vv, vv - 7]).astype(np.float32)  # [2, 20, 20]: VV, VH
    geo = {"driver": "GTiff", "width": 20, "height": 20, "crs": "EPSG:32631"}
    geo["transform"] = Affine(10, 0, 500000, 0, -10, 4000000)
    src, label = tmp_path / "s1.tif", tmp_path / "label.tif"
    with rasterio.open(src, "w", **geo, count=2, dtype="float32", nodata=float("nan")) as ds:
        ds.write(db)
    with rasterio.open(label, "w", **geo, count=1, dtype="int16") as ds:
        ds.write(water.astype(np.int16), 1)
    out = tmp_path / "out"
    out.mkdir()

    scene, _ = mod.write_variant(src, label, mod.Variant(form="power"), out, stem="p")
    with rasterio.open(scene) as ds:
        assert ds.descriptions == ("VV",) and ds.transform == geo["transform"]
        np.testing.assert_allclose(10 * np.log10(ds.read(1)), db[0], atol=1e-4)
    scene, _ = mod.write_variant(src, label, mod.Variant(pol="VH"), out, stem="vh")
    with rasterio.open(scene) as ds:
        assert ds.descriptions == ("VH",)
        np.testing.assert_allclose(ds.read(1), db[1], atol=1e-4)

    scene, lab = mod.write_variant(src, label, mod.Variant(factor=2.0), out, stem="x2")
    with rasterio.open(scene) as ds, rasterio.open(lab) as lds:
        assert (ds.width, ds.height) == (10, 10) and (lds.width, lds.height) == (10, 10)
        assert ds.res == (20.0, 20.0) and ds.transform == lds.transform
        assert (ds.transform.c, ds.transform.f) == (500000, 4000000)
        coarse_db, coarse_label = ds.read(1), lds.read(1)
    np.testing.assert_array_equal(coarse_label, water[::2, ::2])
    np.testing.assert_array_equal(coarse_db < -15, water[::2, ::2])  # block means of power

    scene, lab = mod.write_variant(src, label, mod.Variant(factor=0.1), out, stem="x01")
    with rasterio.open(scene) as ds, rasterio.open(lab) as lds:
        assert (ds.width, ds.height) == (200, 200) and ds.res == pytest.approx((1.0, 1.0))
        fine_label = lds.read(1)
    np.testing.assert_array_equal(fine_label, np.kron(water, np.ones((10, 10), bool)))  # nearest
    assert 0.1 in {v.factor for v in mod.variants()}  # about 1 m: the finest pixel size


def test_ship_variants_keep_the_boxes_on_their_grid(tmp_path):
    """eval_robustness.write_ship_variant on a 40 x 40 8-bit image: the amplitude form is
    (g + 0.5) / 256, dB and power agree with it, the dual-pol file's VH is VV 7 dB lower, the
    log rendering keeps the grey order, and x2 halves the grid and the boxes (pixels twice as
    large, the same origin)."""
    import numpy as np
    import rasterio

    mod = _load("eval_robustness")
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    boxes = np.array([[4.0, 6.0, 20.0, 12.0]], np.float32)
    amp = (grey.astype(np.float64) + 0.5) / 256

    def read(form, **kw):
        path, b = mod.write_ship_variant(
            grey, boxes, mod.ShipVariant(form=form, **kw), tmp_path / f"{form}.tif"
        )
        with rasterio.open(path) as ds:
            return ds.read(), ds.descriptions, ds.transform, (ds.width, ds.height), b

    a, desc, t, size, b = read("amplitude")
    assert desc == ("VV",) and size == (40, 40) and t.a == mod.SHIP_PIXEL_M
    np.testing.assert_allclose(a[0], amp, rtol=1e-6)
    np.testing.assert_array_equal(b, boxes)
    np.testing.assert_allclose(read("db")[0][0], 20 * np.log10(amp), atol=1e-4)
    np.testing.assert_allclose(read("power")[0][0], amp**2, rtol=1e-5)
    dual = read("db", pol="VV+VH")
    assert dual[1] == ("VV", "VH")
    np.testing.assert_allclose(dual[0][1] - dual[0][0], mod.SYNTHETIC_VH_DB, atol=1e-4)
    log8 = read("uint8log")[0][0].astype(int)
    order = np.argsort(grey, axis=None, kind="stable")
    assert (np.diff(log8.ravel()[order]) >= 0).all() and log8.min() >= 1  # nodata 0 unused

    coarse, _, t2, size2, b2 = read("power", factor=2.0)
    assert size2 == (20, 20) and t2.a == 2 * mod.SHIP_PIXEL_M and (t2.c, t2.f) == (t.c, t.f)
    np.testing.assert_allclose(b2, boxes / 2)
    np.testing.assert_allclose(coarse[0], (amp**2).reshape(20, 2, 20, 2).mean(axis=(1, 3)), rtol=1e-4)


def _load_stage(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "gpu_stage" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_payload_parts_fit_one_call_each():
    """First fit in priority order: the most needed wheels go with the first call; a wheel
    over one call's room is refused."""
    mod = _load_stage("make_payload")
    parts = mod.pack({"a": 10, "b": 20, "c": 5, "d": 15}, budget=25)
    assert parts == [["a", "c"], ["b"], ["d"]]
    with pytest.raises(SystemExit, match="over one call's room"):
        mod.pack({"big": 30}, budget=25)


def test_gpu_stage_stores_parts_and_refuses_a_lost_one(tmp_path, monkeypatch):
    """Calls before the last only store their wheels; the last call refuses to run when a part
    is missing (the machine was given back between the calls)."""
    import json
    from argparse import Namespace

    mod = _load_stage("stage34")
    monkeypatch.setattr(mod, "STORE", tmp_path / "store")
    monkeypatch.setattr(mod, "PAYLOAD", tmp_path / "payload")
    for k in (1, 2, 3):
        d = tmp_path / "payload" / f"part{k}"
        d.mkdir(parents=True)
        (d / f"w{k}-1.0-py3-none-any.whl").write_bytes(b"x")
        (d / "parts.json").write_text(json.dumps({"parts": [["w1"], ["w2"], ["w3"]], "part": k}))
    args = Namespace(part=1, out=str(tmp_path / "out"), budget=60, only=None, dry_run=False)
    assert mod.run(args) == 0
    assert (tmp_path / "store" / "whl" / "w1-1.0-py3-none-any.whl").exists()
    args.part = 3  # part 2 never came
    assert mod.run(args) == 1
    assert "parts 2 are not on this machine" in (tmp_path / "out" / "stage.log").read_text()


def test_gpu_stage_groups_pytest_failures():
    mod = _load_stage("stage34")
    log = (
        "FAILED tests/a.py::t1 - ModuleNotFoundError: No module named 'geopandas'\n"
        "FAILED tests/b.py::t2 - ModuleNotFoundError: No module named 'geopandas'\n"
        "ERROR tests/c.py::t3 - Failed: Timeout >120.0s\n"
        "= 2 failed, 1 error, 700 passed in 130.2s =\n"
    )
    text = mod.pytest_summary(log)
    assert text.splitlines()[0].startswith("= 2 failed")
    assert "   2 x ModuleNotFoundError: No module named 'geopandas'" in text
    assert "   1 x Failed: Timeout >N" in text


@pytest.mark.slow
def test_gpu_stage_dry_run_on_cpu(tmp_path):
    """The GPU stage rehearsed on the CPU: every section runs (toy sizes, pytest collects the
    whole suite) and its results are where the GPU call would bring them back from."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "benchmarks/gpu_stage/stage34.py",
        "--dry-run",
        "--out",
        str(tmp_path),
        "--budget",
        "1500",
    ]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: v["rc"] for k, v in summary.items()} == {
        "env": 0,
        "segment": 0,
        "step": 0,
        "ort": 0,
        "pytest": 0,
    }
    assert summary["segment"]["tiles"] == 9 and 0 < summary["segment"]["model_over_end_to_end"]
    assert [r["variant"] for r in summary["step"]["rows"] if "ms_per_step" in r] == ["eager", "compile"]
    assert (
        summary["ort"]["provider"] == "CPUExecutionProvider"
        and summary["ort"]["max_probability_difference"] < 1e-3
    )
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and "pytest_summary.txt" in files  # at most 8 files come back from $OUT
    assert " tests collected" in (tmp_path / "pytest_summary.txt").read_text()


def test_chip_oracle_finds_the_best_single_threshold():
    """eval_water.chip_oracle: a chip whose water lies below -18 dB and land above -8 dB is
    split exactly (IoU 1, a threshold between the two); with a fifth of the water labels moved to
    bright land no threshold of the raw values does better than 0.8."""
    import numpy as np

    mod = _load("eval_water")
    rng = np.random.default_rng(0)
    water = np.zeros((40, 40), bool)
    water[:, :20] = True
    db = np.where(water, rng.uniform(-25, -18, water.shape), rng.uniform(-8, -2, water.shape))
    truth = water.astype(np.int64)
    out = mod.chip_oracle(db, truth)
    assert out["oracle_threshold_db"] == pytest.approx(1.0)
    assert -18 <= out["oracle_threshold_db_at"] <= -8
    truth[:, 20:25] = 1  # labelled water that is bright land
    out = mod.chip_oracle(db, truth)
    assert out["oracle_threshold_db"] == pytest.approx(0.8)


def test_permanent_water_becomes_ignore_and_floods_stay_water():
    """ombria_permanent_water.ambiguous on a 128 x 128 scene with speckle: a river dark in both
    images and labelled land becomes ambiguous, a flood dark only after the event (labelled
    water) and bright land are left alone; a flat BEFORE image (no bimodal tile: a fallback
    threshold) changes nothing."""
    import numpy as np

    mod = _load("ombria_permanent_water")
    rng = np.random.default_rng(0)
    river = np.zeros((128, 128), bool)
    river[:, 20:40] = True
    flood = np.zeros((128, 128), bool)
    flood[:, 80:110] = True

    def grey(dark):
        return np.clip(np.where(dark, 40, 170) + rng.normal(0, 10, dark.shape), 0, 255).astype(np.uint8)

    before, after = grey(river), grey(river | flood)
    mask = np.where(flood, 255, 0).astype(np.uint8)
    amb = mod.ambiguous(before, after, mask, max_share=0.5)
    assert amb[:, 22:38].all() and not amb[:, 45:75].any() and not amb[flood].any()
    assert amb.mean() == pytest.approx(river.mean(), abs=0.02)
    flat = np.full((128, 128), 120, np.uint8)
    assert not mod.ambiguous(flat, after, mask, max_share=0.5).any()
    assert not mod.ambiguous(before, after, mask, max_share=0.1).any()  # more than 10 %: untrusted


def test_permanent_water_touching_keeps_only_regions_next_to_the_flood():
    """ambiguous(touching=3): a river that runs into the flood stays ambiguous, a dark field
    as dark in both images but far from the flood does not; touching=None keeps both."""
    import numpy as np

    mod = _load("ombria_permanent_water")
    rng = np.random.default_rng(1)
    river, field, flood = (np.zeros((128, 128), bool) for _ in range(3))
    river[:, 60:76] = True
    field[10:40, 5:30] = True
    flood[:, 77:110] = True  # one pixel from the river

    def grey(dark):
        return np.clip(np.where(dark, 40, 170) + rng.normal(0, 10, dark.shape), 0, 255).astype(np.uint8)

    before, after = grey(river | field), grey(river | field | flood)
    mask = np.where(flood, 255, 0).astype(np.uint8)
    every = mod.ambiguous(before, after, mask, max_share=0.5)
    near = mod.ambiguous(before, after, mask, max_share=0.5, touching=3)
    assert every[15:35, 10:25].all() and every[:, 62:74].all()
    assert near[:, 62:74].all() and not near[field].any()
    assert not mod.ambiguous(before, after, mask, max_share=0.5, touching=0)[field].any()


def test_self_training_pseudo_mask_keeps_confident_pixels_and_agreement():
    """water_self_training.pseudo_mask: p >= hi water (255), p <= lo land (0), between and NaN
    ignore (128); with a physical map, a label it contradicts becomes ignore."""
    import numpy as np

    mod = _load("water_self_training")
    p = np.array([[0.95, 0.7, 0.5], [0.3, 0.05, np.nan]], np.float32)
    np.testing.assert_array_equal(mod.pseudo_mask(p, 0.3, 0.7), [[255, 255, 128], [0, 0, 128]])
    physical = np.array([[True, False, True], [True, False, True]])
    np.testing.assert_array_equal(mod.pseudo_mask(p, 0.3, 0.7, physical), [[255, 128, 128], [128, 0, 128]])


def test_synthetic_scenes_paint_water_at_the_drawn_contrast(tmp_path):
    """water_synthetic_scenes: statistics of a tiny labelled folder (land 150, water 50 with a
    known spread; an image with too little water is skipped), and a composed scene whose painted
    water sits the contrast below the land median, labelled 255, with land kept where the weak
    label says land and ignore elsewhere."""
    import numpy as np
    from PIL import Image

    mod = _load("water_synthetic_scenes")
    rng = np.random.default_rng(0)
    for sub in ("AFTER", "MASK"):
        (tmp_path / sub).mkdir()
    water = np.zeros((64, 64), bool)
    water[:, :32] = True
    grey = np.where(water, 50 + rng.normal(0, 10, water.shape), 150).clip(0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "AFTER" / "S1_after_0001.png")
    Image.fromarray(np.where(water, 255, 0).astype(np.uint8)).save(tmp_path / "MASK" / "S1_mask_0001.png")
    Image.fromarray(grey).save(tmp_path / "AFTER" / "S1_after_0002.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "MASK" / "S1_mask_0002.png")  # no water
    stats = mod.water_statistics(tmp_path)
    assert stats.shape == (1, 2)
    assert stats[0, 0] == pytest.approx(100, abs=2) and stats[0, 1] == pytest.approx(10, abs=1.5)

    land = np.full((128, 128), 120, np.uint8)
    weak = np.zeros((128, 128), np.uint8)
    weak[:, 100:] = 128  # optically unsure: ignore
    scene, mask = mod.compose(land, weak, contrast=60.0, spread=5.0, rng=np.random.default_rng(1))
    painted = mask == 255
    assert 0 < painted.mean() < 1
    assert np.median(scene[painted]) == pytest.approx(60, abs=3)
    np.testing.assert_array_equal(scene[~painted], 120)
    assert set(np.unique(mask[~painted & (weak == 0)])) == {0}
    assert set(np.unique(mask[~painted & (weak == 128)])) <= {128}


def test_opensarship_ship_box_and_chip_scores():
    """ships_opensarship: a ship's head-tail segment widened by its AIS width, centred in its
    chip; a box on the centre is a hit, one elsewhere an other box; the malformed closing tag of
    some archives' Ship.xml is read."""
    import numpy as np

    mod = _load("ships_opensarship")
    ship = {"Head_x": 110.0, "Head_y": 200.0, "Tail_x": 90.0, "Tail_y": 200.0, "Center_x": 100.0,
            "Center_y": 200.0, "width_m": 20.0}  # fmt: skip
    box = mod.ship_box(ship, (41, 41))  # centre (20, 20): 21 px long, 2 px wide (1 px each side)
    np.testing.assert_allclose(box, [9, 19, 32, 22])
    chip = mod.Chip("c", np.zeros((41, 41), np.float32), box)
    hit, hit30, other = mod.score_chip(np.array([[10, 18, 30, 23], [0, 0, 5, 5]], np.float32), chip)
    assert (hit, hit30, other) == (True, True, 1)
    assert mod.score_chip(np.zeros((0, 4), np.float32), chip) == (False, False, 0)
    xml = (b"<ShipList><ship><SARShipInformation><Head_x>1</Head_x><Head_y>2</Head_y><Tail_x>3</Tail_x>"
           b"<Tail_y>4</Tail_y><Center_x>2</Center_x><Center_y>3</Center_y></SARShipInformation>"
           b"<AISShipInformation><Width>30</Width></AISShipInformation></ship><\\ShipList>")  # fmt: skip
    assert mod._ships(xml)[(2, 3)]["width_m"] == 30.0
    assert mod._ships(xml)[(2, 3)]["length_m"] == 0.0  # no <Length>: unknown
    assert [mod.length_class(v) for v in (0.0, 36.0, 100.0, 199.9, 350.0)] == [
        None, "1-100 m", "100-200 m", "100-200 m", "200-1000 m"
    ]  # fmt: skip


def test_synthetic_sea_counts_add_up(tmp_path):
    """ships_synthetic_sea on one small generated scene with the shipped detector: every true
    ship is counted once (found or missed), in one length class, and the table's pooled row is
    the sum of the scenes."""
    from sarmae_cli.model.checkpoint import read_meta

    mod = _load("ships_synthetic_sea")
    r = mod.run(mod.WEIGHTS, [100, 101], 384, None, tmp_path)
    p = r["pooled"]
    scenes, classes = r["scenes"], r["by_length"].values()
    assert p["ships"] == sum(s["ships"] for s in scenes) == sum(v["ships"] for v in classes)
    assert p["tp"] == sum(s["tp"] for s in scenes) and all(s["tp"] + s["fn"] == s["ships"] for s in scenes)
    stored = read_meta(mod.WEIGHTS).training["detection"]["min_score"]
    assert r["min_score"] == pytest.approx(stored)  # the cut stored in the shipped file
    found = sum(round(v["recall"] * v["ships"]) for v in r["by_length"].values() if v["ships"])
    assert found == p["tp"]
    assert mod.run(mod.WEIGHTS, [100], 384, 0.999, tmp_path)["pooled"]["tp"] == 0  # nothing scores so high


def test_robustness_water_table_gains_a_hybrid_column_only_when_measured():
    """eval_robustness.water_table: model, native, baseline, model − baseline, and the hybrid
    column only when some row measured `--method hybrid`."""
    mod = _load("eval_robustness")
    methods = {"model": {"water_iou": 0.5}, "native": {"water_iou": 0.4}, "baseline": {"water_iou": 0.6}}
    row = {"set": "s", "variant": "v", "pixels": "2×2", "read_as": ["db"], "methods": methods}
    plain = mod.water_table([row])
    assert "hybrid" not in plain and "| s | v | 2×2 | 0.500 | 0.400 | 0.600 | −0.100 | db |" in plain
    row["methods"]["hybrid"] = {"water_iou": 0.55}
    assert "| s | v | 2×2 | 0.500 | 0.400 | 0.600 | −0.100 | 0.550 | db |" in mod.water_table([row])
