"""Labelled datasets: class folders, CSV manifests, shot/fraction protocols, image/mask pairs,
and the bad inputs of issue 5, on the real MSTAR, OMBRIA and Sen1Floods11 data."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sarmae_cli.data.labelled import (
    IGNORE_INDEX,
    DatasetError,
    LoadReport,
    MaskCoding,
    Pairing,
    SegmentationDataset,
    balanced_indices,
    detect_coding,
    holdout_pairs,
    holdout_split,
    load_chips,
    load_pairs,
    scan_classification,
    scan_segmentation,
    select_protocol,
)
from sarmae_cli.data.preprocess import InputSpec, detect_scaling
from sarmae_cli.data.scaling import Scaling
from sarmae_cli.errors import UsageError


@pytest.fixture
def mstar(data_dir):
    return data_dir / "mstar10"


def _mini_mstar(src, dst, classes=("2S1", "BMP2", "T72"), n=6):
    """A small class-folder copy of real MSTAR chips in a temporary folder."""
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((src / "train" / c).iterdir())[:n]:
            shutil.copy(f, dst / c / f.name)
    return dst


def test_scan_mstar(mstar):
    index = scan_classification(mstar / "train")
    assert index.class_names == sorted(p.name for p in (mstar / "train").iterdir())
    assert len(index.class_names) == 10 and "ZSU_23_4" in index.class_names
    counts = index.counts()
    assert counts == {c: len(list((mstar / "train" / c).iterdir())) for c in index.class_names}
    assert sum(counts.values()) == len(index.samples) == 2746


def test_shots_are_seeded_per_class_and_disjoint_from_validation(mstar):
    index = scan_classification(mstar / "train")
    train, val = holdout_split(index.samples, 0.2, seed=0)
    assert not {s.path for s in train} & {s.path for s in val}
    a = select_protocol(index, train, shots=40, seed=1)
    b = select_protocol(index, train, shots=40, seed=1)
    c = select_protocol(index, train, shots=40, seed=2)
    assert [s.path for s in a] == [s.path for s in b]
    assert [s.path for s in a] != [s.path for s in c]
    assert np.bincount([s.label for s in a]).tolist() == [40] * 10
    assert not {s.path for s in a} & {s.path for s in val}
    test = scan_classification(mstar / "test", index.class_names)
    assert not {s.path.resolve() for s in a} & {s.path.resolve() for s in test.samples}


def test_holdout_pairs_is_seeded_disjoint_and_ordered():
    pairs = [(Path(f"img_{i:02d}.png"), Path(f"mask_{i:02d}.png")) for i in range(10)]
    train, val = holdout_pairs(pairs, 0.2, seed=0)
    assert len(val) == 2 and len(train) == 8
    assert sorted(train + val) == pairs and not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)  # original order kept
    assert holdout_pairs(pairs, 0.2, seed=0) == (train, val)
    assert holdout_pairs(pairs, 0.2, seed=1)[1] != val
    assert len(holdout_pairs(pairs[:2], 0.01, seed=0)[1]) == 1  # at least one held out


def test_fraction_per_class(mstar):
    index = scan_classification(mstar / "train")
    sel = select_protocol(index, index.samples, fraction=0.3, seed=0)
    counts = np.bincount([s.label for s in sel])
    assert counts.tolist() == [round(0.3 * n) for n in index.counts().values()]
    assert len({s.path for s in sel}) == len(sel)


def test_too_few_shots_says_how_many_exist(mstar):
    index = scan_classification(mstar / "train")
    msg = r"--shots 250: class 'BMP2' has 233, 'BTR70' has 233, 'T72' has 232; lower --shots to at most 232"
    with pytest.raises(DatasetError, match=msg):
        select_protocol(index, index.samples, shots=250)
    with pytest.raises(UsageError, match="not both"):
        select_protocol(index, index.samples, shots=5, fraction=0.5)


def test_bad_class_folders(mstar, tmp_path):
    root = _mini_mstar(mstar, tmp_path / "set")
    (root / "EMPTY").mkdir()
    with pytest.raises(DatasetError, match=r"class folder .*EMPTY has no images"):
        scan_classification(root)
    (root / "EMPTY").rmdir()
    with pytest.raises(DatasetError, match=r"class 'T72' .* is unknown to the model"):
        scan_classification(root, ["2S1", "BMP2"])
    counts = scan_classification(root, ["T72", "BMP2", "2S1", "D7"]).counts()
    assert counts == {"T72": 6, "BMP2": 6, "2S1": 6, "D7": 0}


def test_undecodable_images_are_skipped_and_counted(mstar, tmp_path):
    root = _mini_mstar(mstar, tmp_path / "set")
    (root / "BMP2" / "broken.jpeg").write_bytes(b"\xff\xd8 not really a jpeg")
    index = scan_classification(root)
    report = LoadReport()
    raws, labels = load_chips(index.samples, report)
    assert report.num_skipped == 1 and "broken.jpeg" in report.skipped[0][0]
    assert len(raws) == len(labels) == 18


def test_csv_manifest(mstar, tmp_path):
    files = sorted((mstar / "train" / "D7").iterdir())[:3] + sorted((mstar / "train" / "T62").iterdir())[:2]
    rows = ["path,label"] + [f"{f},{f.parent.name}" for f in files]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    index = scan_classification(tmp_path / "m.csv")
    assert index.class_names == ["D7", "T62"] and index.counts() == {"D7": 3, "T62": 2}
    (tmp_path / "bad.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(DatasetError, match="columns 'path' and 'label'"):
        scan_classification(tmp_path / "bad.csv")


def test_mstar_chips_of_different_sizes_become_one_size(mstar):
    index = scan_classification(mstar / "train")
    picks = [index.samples[i] for i in (0, 500, 1000, 2000)]
    raws, _ = load_chips(picks, LoadReport())
    assert len({r.shape for r in raws}) > 1
    scaling = detect_scaling(raws[0])
    assert scaling.mode == "uint8"
    spec = InputSpec(scaling, [0.5], [0.5], 64)
    chips = [spec.chip(r) for r in raws]
    assert {tuple(c.shape) for c in chips} == {(1, 64, 64)}
    assert all(c.min() >= -1 and c.max() <= 1 for c in chips)


def test_ombria_pairs_and_mask_coding(data_dir):
    pairs, pairing = scan_segmentation(data_dir / "ombria_s1" / "train")
    assert pairing == Pairing("AFTER", "MASK", "_after_", "_mask_") and len(pairs) == 624
    assert all(i.name.replace("after", "mask") == m.name for i, m in pairs)
    images, masks, names = load_pairs(pairs[:4], LoadReport())
    coding = detect_coding(masks)
    assert coding.values == (0, 255)
    labels = coding.encode(masks[0], "m")
    assert set(np.unique(labels)) <= {0, 1} and (labels == 1).sum() == (masks[0] == 255).sum()
    assert Pairing.parse("AFTER:MASK:_after_:_mask_") == pairing
    with pytest.raises(UsageError, match="IMAGE_DIR:MASK_DIR"):
        Pairing.parse("AFTER")
    with pytest.raises(DatasetError, match=r"no mask S1_before_0001\.\* in"):
        scan_segmentation(data_dir / "ombria_s1" / "train", Pairing("BEFORE", "MASK", "_after_", "_mask_"))


def test_sen1floods11_geotiff_with_ignore(data_dir):
    pairs, pairing = scan_segmentation(data_dir / "sen1floods11")
    assert pairing.image_dir == "S1" and len(pairs) == 1
    images, masks, _ = load_pairs(pairs, LoadReport())
    assert images[0].shape == (2, 512, 512) and images[0].dtype == np.float32
    coding = detect_coding(masks)
    assert coding.values == (0, 1)
    labels = coding.encode(masks[0], "m")
    assert (labels == IGNORE_INDEX).sum() == (masks[0] == -1).sum() > 0
    scaling = detect_scaling(images[0])
    assert scaling.mode == "db"
    ds = SegmentationDataset(images, [labels], InputSpec(scaling, [0.5, 0.5], [0.25, 0.25], 128), crop=128)
    x, y = ds[0]
    assert x.shape == (2, 128, 128) and y.shape == (128, 128) and torch.isfinite(x).all()


def test_mask_values_outside_the_class_list():
    with pytest.raises(DatasetError, match=r"values \[7\] outside the class values \[0, 255\]"):
        MaskCoding((0, 255)).encode(np.array([[0, 255], [7, 0]]), "m.png")
    with pytest.raises(DatasetError, match="not class ids"):
        detect_coding([np.array([[0, -3]])])


def test_mask_size_mismatch(data_dir, tmp_path):
    src = data_dir / "ombria_s1" / "train"
    for d in ("AFTER", "MASK"):
        (tmp_path / d).mkdir()
    shutil.copy(src / "AFTER" / "S1_after_0001.png", tmp_path / "AFTER")
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(tmp_path / "MASK" / "S1_mask_0001.png")
    pairs, _ = scan_segmentation(tmp_path)
    with pytest.raises(DatasetError, match=r"is 100x80 but its image .* is 256x256"):
        load_pairs(pairs, LoadReport())


def test_random_crops_pad_small_images_with_ignore():
    spec = InputSpec(Scaling(), [0.0], [1.0], 32)
    image, labels = np.full((1, 20, 40), 255, np.uint8), np.zeros((20, 40), np.int64)
    ds = SegmentationDataset([image], [labels], spec, crop=32)
    x, y = ds[0]
    assert x.shape == (1, 32, 32) and (y == IGNORE_INDEX).sum() == 12 * 32


def test_balanced_indices_oversample_to_the_largest_class():
    labels = [0] * 6 + [1] * 2 + [2] * 3
    idx = balanced_indices(labels, seed=0)
    assert np.bincount(np.asarray(labels)[idx]).tolist() == [6, 6, 6]
    assert set(range(len(labels))) <= set(idx)  # every sample is kept at least once
    assert idx == balanced_indices(labels, seed=0)
