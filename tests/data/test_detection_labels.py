"""Box labels from COCO JSON, YOLO txt and masks, and every bad input: one warning line per
problem naming the file, the image or box skipped and counted, or an error when nothing is left."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sarmae_cli.data.detection_labels import detect_format, mask_objects, scan_detection
from sarmae_cli.data.labelled import DatasetError
from sarmae_cli.errors import UsageError


def _image(path: Path, h: int = 40, w: int = 60) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w), 80, np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- COCO


def _coco(root: Path, annotations: list[dict], images: list[str] | None = None) -> Path:
    names = images or ["a.png", "b.png"]
    for n in names:
        _image(root / "images" / n)
    doc = {
        "images": [{"id": i + 1, "file_name": n, "width": 60, "height": 40} for i, n in enumerate(names)],
        "annotations": annotations,
        "categories": [{"id": 3, "name": "ship"}, {"id": 7, "name": "rig"}],
    }
    path = root / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_boxes_and_classes(tmp_path):
    ann = [
        {"image_id": 1, "bbox": [10, 5, 20, 10], "category_id": 7},
        {"image_id": 1, "bbox": [0, 0, 4, 4], "category_id": 3},
    ]
    path = _coco(tmp_path, ann)
    for root in (path, tmp_path):  # the file itself, or the folder holding it
        index = scan_detection(root)
        assert index.format == "coco" and index.class_names == ["ship", "rig"]
        a, b = index.samples
        assert a.image.name == "a.png" and a.boxes.tolist() == [[10, 5, 30, 15], [0, 0, 4, 4]]
        assert a.labels.tolist() == [1, 0] and a.labels.dtype == np.int64
        assert b.boxes.shape == (0, 4)  # an image without annotations: background, kept
        assert not index.report.warnings


def test_coco_bad_boxes_unknown_class_and_missing_image(tmp_path):
    ann = [
        {"image_id": 1, "bbox": [50, 30, 20, 20], "category_id": 3},  # partly outside: clipped
        {"image_id": 1, "bbox": [100, 100, 5, 5], "category_id": 3},  # outside
        {"image_id": 1, "bbox": [5, 5, 0, 8], "category_id": 3},  # zero width
        {"image_id": 1, "bbox": [5, 5, 8, 8], "category_id": 99},  # unknown category
    ]
    path = _coco(tmp_path, ann)
    doc = json.loads(path.read_text())
    doc["images"].append({"id": 9, "file_name": "gone.png", "width": 60, "height": 40})
    path.write_text(json.dumps(doc))
    index = scan_detection(path)
    a = index.samples[0]
    assert a.boxes.tolist() == [[50, 30, 60, 40]]
    assert index.report.dropped_boxes == 3 and index.report.num_skipped == 1
    text = "\n".join(index.report.warnings)
    assert "outside the 60x40 image" in text and "zero size" in text
    assert "unknown category 99" in text and "gone.png" in text and "not found" in text
    assert all(line.startswith("warning:") for line in index.report.warnings)


@pytest.mark.parametrize(
    ("content", "match"), [("", "is empty"), ("{not json", "not valid JSON"), ("[]", "no 'images'")]
)
def test_coco_empty_or_malformed_file(tmp_path, content, match):
    (tmp_path / "labels.json").write_text(content)
    with pytest.raises(DatasetError, match=match):
        scan_detection(tmp_path / "labels.json")


def test_coco_naming_only_missing_images_is_an_error(tmp_path):
    path = _coco(tmp_path, [], images=["a.png"])
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(DatasetError, match="no usable labelled image.*a.png"):
        scan_detection(path)


# --------------------------------------------------------------------------- YOLO


def _yolo(root: Path, labels: dict[str, str | None], names: str | None = "ship\nrig\n") -> Path:
    for stem, text in labels.items():
        _image(root / "images" / f"{stem}.png")
        if text is not None:
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{stem}.txt").write_text(text)
    (root / "labels").mkdir(exist_ok=True)
    if names is not None:
        (root / "classes.txt").write_text(names)
    return root


def test_yolo_boxes_names_and_background_images(tmp_path):
    root = _yolo(tmp_path, {"a": "1 0.5 0.5 0.5 0.25\n", "b": ""})
    index = scan_detection(root)
    assert detect_format(root) == "yolo" and index.class_names == ["ship", "rig"]
    a, b = index.samples
    assert a.boxes.tolist() == [[15, 15, 45, 25]] and a.labels.tolist() == [1]
    assert b.boxes.shape == (0, 4)  # empty file: an image without objects
    assert not index.report.warnings


def test_yolo_names_from_data_yaml_or_flag(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.5 0.5\n"}, names=None)
    (root / "data.yaml").write_text("names: {0: vessel}\n")
    assert scan_detection(root).class_names == ["vessel"]
    assert scan_detection(root, ["boat"]).class_names == ["boat"]


def test_yolo_bad_inputs(tmp_path):
    root = _yolo(
        tmp_path,
        {
            "a": "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n0 2.0 2.0 0.1 0.1\n",  # unknown class, outside
            "b": "0 0.5 0.5\n",  # malformed
            "c": None,  # no label file
        },
    )
    index = scan_detection(root)
    assert [s.image.name for s in index.samples] == ["a.png"]
    assert len(index.samples[0].boxes) == 1
    assert index.report.num_skipped == 2 and index.report.dropped_boxes == 2
    text = "\n".join(index.report.warnings)
    assert "b.txt" in text and "line 1 is not 'class cx cy w h'" in text
    assert "c.png" in text and "no label file" in text and "empty file marks an image without objects" in text
    assert "class 5 is unknown" in text and "outside the 60x40 image" in text


def test_yolo_without_names_numbers_the_classes(tmp_path):
    root = _yolo(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n"}, names=None)
    index = scan_detection(root)
    assert index.class_names == ["class_0", "class_1", "class_2"]
    assert any("give --class-names" in w for w in index.report.warnings)


# --------------------------------------------------------------------------- masks


def test_mask_objects_binary_colour_and_instance_ids():
    binary = np.zeros((1, 20, 30), np.uint8)
    binary[0, 2:5, 3:9] = 255
    binary[0, 10:18, 20:22] = 255
    binary[0, 5, 9] = 255  # touches the first blob diagonally: 8-connected, the same object
    assert sorted(b for _, b in mask_objects(binary)) == [(3, 2, 10, 6), (20, 10, 22, 18)]
    colour = np.zeros((3, 20, 30), np.uint8)
    colour[1, 2:5, 3:9] = 255  # green
    colour[0, 10:12, 10:14] = 255  # red
    objs = sorted(mask_objects(colour))
    assert objs == [(0, (3.0, 2.0, 9.0, 5.0)), (1, (10.0, 10.0, 14.0, 12.0))]  # classes in colour order
    ids = np.zeros((1, 20, 30), np.uint16)
    ids[0, 2:5, 3:9] = 1
    ids[0, 5:8, 3:9] = 2  # adjacent instances stay apart
    assert sorted(b for _, b in mask_objects(ids)) == [(3, 2, 9, 5), (3, 5, 9, 8)]


def test_masks_layout_like_hrsid(tmp_path):
    _image(tmp_path / "images" / "P0001_a.jpg")
    _image(tmp_path / "images" / "P0002_b.jpg")  # no mask
    mask = np.zeros((40, 60, 3), np.uint8)
    mask[10:20, 5:25] = (0, 255, 0)
    mask[30, 50] = (0, 255, 0)  # a 1-pixel speck: under min_size
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "P0001_a.png")
    index = scan_detection(tmp_path, ["ship"], min_size=2)
    assert index.format == "masks" and index.class_names == ["ship"]
    (s,) = index.samples
    assert s.boxes.tolist() == [[5, 10, 25, 20]] and s.labels.tolist() == [0]
    assert index.report.num_skipped == 1 and index.report.dropped_boxes == 1
    text = "\n".join(index.report.warnings)
    assert "P0002_b.jpg" in text and "no mask" in text and "detection.min_box_size" in text


def test_no_labels_at_all(tmp_path):
    _image(tmp_path / "x.png")
    with pytest.raises(DatasetError, match="holds no detection labels"):
        scan_detection(tmp_path)
    with pytest.raises(UsageError, match="not found"):
        scan_detection(tmp_path / "missing")
