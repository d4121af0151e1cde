"""Box labels for detection fine-tuning and evaluation, from three layouts:

- COCO JSON: a `.json` file (or a folder holding exactly one, also under `annotations/`);
  image `file_name`s are resolved beside the JSON, then in its `images/` folder;
- YOLO txt: `images/` + `labels/` (one `.txt` per image: `class cx cy w h`, normalised);
  class names from `classes.txt` or a `data.yaml` / `dataset.yaml` `names` entry;
- masks: image/mask folders as for segmentation (`images/` + `masks/`, ...): a single-band
  mask with one non-zero value (binary) or an RGB colour mask is split into connected
  components (8-connected; one class per colour), a single-band mask with several non-zero
  values is an instance-id image (one class).

    index = scan_detection(Path("hrsid_mini"), class_names=["ship"])
    index.samples[0].boxes  # [M, 4] float32 xyxy pixels; .labels [M] int64; .image Path

Bad inputs are skipped with one warning line each (file, what was wrong, what to do), counted
in `index.report`: empty or malformed label files, boxes outside the image or of zero size,
unknown classes, images without labels, COCO entries naming missing images. A dataset left
with no usable image is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from sarmae_cli.data.labelled import KNOWN_PAIRINGS, DatasetError, Pairing
from sarmae_cli.data.raster import IMAGE_SUFFIXES, RasterError, open_raster, read_image
from sarmae_cli.errors import UsageError
from sarmae_cli.paths import is_hidden

FORMATS = ("coco", "yolo", "masks")
#: Label warnings shown one by one; the rest are counted in one line.
MAX_WARNINGS = 50


@dataclass
class BoxSample:
    """One image and its objects: boxes [M, 4] float32 xyxy in pixels, labels [M] int64."""

    image: Path
    boxes: np.ndarray
    labels: np.ndarray


@dataclass
class LabelReport:
    """What reading the labels dropped: skipped images (path, reason), dropped boxes, and
    the warning lines (one per problem, for the user)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped_boxes: int = 0
    warnings: list[str] = field(default_factory=list)

    def skip(self, path: Path | str, reason: str) -> None:
        self.skipped.append((str(path), reason))
        self.warnings.append(f"warning: skipped {path}: {reason}")

    def drop(self, where: str, reason: str) -> None:
        self.dropped_boxes += 1
        self.warnings.append(f"warning: dropped a box in {where}: {reason}")

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


@dataclass
class DetectionIndex:
    """The labelled images of a detection set, its class names (index = label) and format."""

    samples: list[BoxSample]
    class_names: list[str]
    format: str
    report: LabelReport


def shorten(warnings: list[str]) -> list[str]:
    """At most MAX_WARNINGS lines, then one line counting the others."""
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    more = len(warnings) - MAX_WARNINGS
    return [
        *warnings[:MAX_WARNINGS],
        f"warning: {more} more label warnings like these (counts in the metrics JSON)",
    ]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p)


def image_size(path: Path, report: LabelReport) -> tuple[int, int] | None:
    """(height, width) of an image file, from its header; None (skipped) when unreadable."""
    try:
        with open_raster(path) as src:
            return src.height, src.width
    except RasterError as e:
        report.skip(path, f"cannot be read ({e}); replace or remove it")
        return None


def clean_boxes(
    boxes: np.ndarray,
    labels: np.ndarray,
    width: int,
    height: int,
    where: str,
    report: LabelReport,
    min_size: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the image; boxes outside it or smaller than `min_size` px on a side
    after clipping are dropped with a warning."""
    keep = []
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not np.isfinite([x0, y0, x1, y1]).all():
            report.drop(where, "its coordinates are not numbers; fix the label")
            continue
        cx0, cy0, cx1, cy1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
        if cx1 <= cx0 or cy1 <= cy0:
            kind = "zero size" if x1 <= x0 or y1 <= y0 else f"outside the {width}x{height} image"
            report.drop(where, f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has {kind}; fix or delete it")
            continue
        if min(cx1 - cx0, cy1 - cy0) < min_size:
            report.drop(
                where,
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is under {min_size:g} px on a side "
                "(lower --set detection.min_box_size to keep such boxes)",
            )
            continue
        boxes[i] = (cx0, cy0, cx1, cy1)
        keep.append(i)
    return boxes[keep].astype(np.float32).reshape(-1, 4), labels[keep].astype(np.int64)


# --------------------------------------------------------------------------- COCO


def find_coco(root: Path) -> Path | None:
    """The COCO JSON of `root`: the file itself, or the one .json in it or in annotations/."""
    if root.is_file():
        return root if root.suffix.lower() == ".json" else None
    found = sorted(p for d in (root, root / "annotations") if d.is_dir() for p in d.glob("*.json"))
    found = [p for p in found if not is_hidden(p)]
    if len(found) > 1:
        raise UsageError(
            f"{root} holds several JSON files ({', '.join(p.name for p in found[:4])}); "
            "give the COCO file itself"
        )
    return found[0] if found else None


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"cannot read COCO file {path}: {e.strerror}") from e
    if not text.strip():
        raise DatasetError(
            f"COCO file {path} is empty; give a COCO JSON with images, annotations, categories"
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"COCO file {path} is not valid JSON (line {e.lineno}: {e.msg}); fix the file"
        ) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DatasetError(f"COCO file {path} has no 'images' list; give a COCO detection JSON")
    return doc


def read_coco(
    path: Path, class_names: list[str] | None, report: LabelReport, min_size: float
) -> DetectionIndex:
    """Samples of a COCO detection JSON (boxes [x, y, w, h] -> xyxy; category ids -> class
    indices in the order of `categories`, or of `class_names` when given)."""
    doc = _load_json(path)
    cats = {
        c.get("id"): str(c.get("name", c.get("id"))) for c in doc.get("categories", []) if isinstance(c, dict)
    }
    names = list(class_names) if class_names else list(cats.values())
    if not names:
        raise DatasetError(f"COCO file {path} has no categories; add them or give --class-names")
    cat_index = {cid: names.index(n) for cid, n in cats.items() if n in names}
    per_image: dict[object, list[dict]] = {}
    for a in doc.get("annotations", []):
        per_image.setdefault(a.get("image_id") if isinstance(a, dict) else None, []).append(a)
    samples = []
    for im in doc["images"]:
        name = str(im.get("file_name", ""))
        image = next((p for p in (path.parent / name, path.parent / "images" / name) if p.is_file()), None)
        if image is None:
            report.skip(
                path.parent / name, f"named in {path.name} but not found; fix its file_name or add the image"
            )
            continue
        size = image_size(image, report)
        if size is None:
            continue
        h, w = size
        boxes, labels = [], []
        for a in per_image.get(im.get("id"), []):
            bbox = a.get("bbox") if isinstance(a, dict) else None
            if not (isinstance(bbox, list) and len(bbox) == 4):
                report.drop(f"{path.name} (image {name})", f"annotation without a 4-number bbox: {a!r:.80}")
                continue
            cid = a.get("category_id")
            if cid not in cat_index:
                known = ", ".join(names)
                report.drop(
                    f"{path.name} (image {name})",
                    f"unknown category {cats.get(cid, cid)!r} (classes: {known}); "
                    "add it to --class-names or the categories",
                )
                continue
            x, y, bw, bh = (float(v) for v in bbox)
            boxes.append((x, y, x + bw, y + bh))
            labels.append(cat_index[cid])
        b, lab = clean_boxes(
            np.array(boxes, np.float64).reshape(-1, 4),
            np.array(labels, np.int64),
            w,
            h,
            name,
            report,
            min_size,
        )
        samples.append(BoxSample(image, b, lab))
    return DetectionIndex(samples, names, "coco", report)


# --------------------------------------------------------------------------- YOLO


def _yolo_names(root: Path) -> list[str] | None:
    """Class names from classes.txt / obj.names, or `names` in data.yaml / dataset.yaml."""
    for name in ("classes.txt", "obj.names"):
        if (root / name).is_file():
            return [line.strip() for line in (root / name).read_text().splitlines() if line.strip()]
    for name in ("data.yaml", "dataset.yaml"):
        if (root / name).is_file():
            try:
                names = (yaml.safe_load((root / name).read_text()) or {}).get("names")
            except yaml.YAMLError as e:
                raise DatasetError(
                    f"{root / name} is not valid YAML ({e}); fix it or give --class-names"
                ) from e
            if isinstance(names, dict):
                return [str(names[k]) for k in sorted(names)]
            if isinstance(names, list):
                return [str(n) for n in names]
    return None


def read_yolo(
    root: Path, class_names: list[str] | None, report: LabelReport, min_size: float
) -> DetectionIndex:
    """Samples of a YOLO layout: images/*.ext with labels/*.txt of the same stem."""
    image_dir, label_dir = root / "images", root / "labels"
    names = list(class_names) if class_names else _yolo_names(root)
    images = sorted(p for p in image_dir.iterdir() if _is_image(p))
    if not images:
        raise DatasetError(f"image folder {image_dir} has no images")
    rows: list[tuple[Path, np.ndarray, np.ndarray]] = []
    for img in images:
        txt = label_dir / f"{img.stem}.txt"
        if not txt.is_file():
            report.skip(img, f"no label file {txt}; add one (an empty file marks an image without objects)")
            continue
        parsed = _parse_yolo(txt, report)
        if parsed is not None:
            rows.append((img, *parsed))
    top = max((int(lab.max()) for _, _, lab in rows if lab.size), default=0)
    if names is None:
        names = [f"class_{i}" for i in range(top + 1)]
        report.warnings.append(
            f"note: {root} has no classes.txt or data.yaml; classes named {', '.join(names[:5])}"
            + (" ..." if len(names) > 5 else "")
            + " (give --class-names)"
        )
    samples = []
    for img, cxcywh, lab in rows:
        size = image_size(img, report)
        if size is None:
            continue
        h, w = size
        known = lab < len(names)
        for c in lab[~known]:
            report.drop(
                f"{label_dir / (img.stem + '.txt')}",
                f"class {int(c)} is unknown ({len(names)} classes: {', '.join(names)}); "
                "fix the id or --class-names",
            )
        cxcywh, lab = cxcywh[known], lab[known]
        xyxy = np.stack(
            [
                (cxcywh[:, 0] - cxcywh[:, 2] / 2) * w,
                (cxcywh[:, 1] - cxcywh[:, 3] / 2) * h,
                (cxcywh[:, 0] + cxcywh[:, 2] / 2) * w,
                (cxcywh[:, 1] + cxcywh[:, 3] / 2) * h,
            ],
            axis=1,
        )
        b, lab = clean_boxes(xyxy, lab, w, h, f"{label_dir / (img.stem + '.txt')}", report, min_size)
        samples.append(BoxSample(img, b, lab))
    return DetectionIndex(samples, names, "yolo", report)


def _parse_yolo(txt: Path, report: LabelReport) -> tuple[np.ndarray, np.ndarray] | None:
    """(cx, cy, w, h) normalised [M, 4] and class ids [M] of one YOLO file; None (skipped with a
    warning) when a line is malformed. An empty file is an image without objects."""
    boxes, labels = [], []
    for n, line in enumerate(txt.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cls = int(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            cls, vals = -1, []
        if cls < 0 or len(vals) != 4:
            report.skip(txt, f"line {n} is not 'class cx cy w h' (got {line.strip()[:60]!r}); fix the file")
            return None
        boxes.append(vals)
        labels.append(cls)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)


# --------------------------------------------------------------------------- masks


def _colour_codes(mask: np.ndarray) -> np.ndarray | None:
    """An RGB colour mask [C>=3, H, W] as one int64 code per pixel [H, W] (0 = black), or None
    for a single-band mask (or equal bands)."""
    if mask.shape[0] < 3 or all(np.array_equal(mask[0], mask[i]) for i in (1, 2)):
        return None
    m = mask[:3].astype(np.int64)
    return (m[0] << 32) | (m[1] << 16) | m[2]


def mask_objects(mask: np.ndarray) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Objects of a mask [C, H, W] as (class, xyxy box): RGB colour masks -> 8-connected
    components per colour (classes in sorted colour order); a single band with one non-zero
    value -> components; with several non-zero values -> one object per value (instance ids)."""
    structure = np.ones((3, 3), bool)
    codes = _colour_codes(mask)
    if codes is not None:
        out: list[tuple[int, tuple[float, float, float, float]]] = []
        for cls, code in enumerate(c for c in np.unique(codes) if c != 0):
            comp, _ = ndimage.label(codes == code, structure)
            out += [(cls, _box(s)) for s in ndimage.find_objects(comp) if s is not None]
        return out
    band = mask[0]
    values = np.unique(band[band != 0])
    if len(values) <= 1:
        comp, _ = ndimage.label(band != 0, structure)
        return [(0, _box(s)) for s in ndimage.find_objects(comp) if s is not None]
    ids = np.searchsorted(values, band) + 1
    ids[band == 0] = 0
    return [(0, _box(s)) for s in ndimage.find_objects(ids) if s is not None]


def _box(s: tuple[slice, slice]) -> tuple[float, float, float, float]:
    return (float(s[1].start), float(s[0].start), float(s[1].stop), float(s[0].stop))


def mask_classes(mask: np.ndarray) -> int:
    """Number of object classes a mask [C, H, W] shows (distinct non-black colours, else 1)."""
    codes = _colour_codes(mask)
    return 1 if codes is None else int(np.count_nonzero(np.unique(codes)))


def read_masks(
    root: Path, class_names: list[str] | None, report: LabelReport, min_size: float, pairing: Pairing | None
) -> DetectionIndex:
    """Samples of image/mask folders: one box per connected component or instance id."""
    if pairing is None:
        pairing = next(
            p
            for p in KNOWN_PAIRINGS.values()
            if (root / p.image_dir).is_dir() and (root / p.mask_dir).is_dir()
        )
    image_dir, mask_dir = root / pairing.image_dir, root / pairing.mask_dir
    masks = {p.stem: p for p in mask_dir.iterdir() if _is_image(p)}
    images = sorted(p for p in image_dir.iterdir() if _is_image(p))
    if not images:
        raise DatasetError(f"image folder {image_dir} has no images")
    samples, n_classes = [], 1
    for img in images:
        mpath = masks.get(pairing.mask_name(img))
        if mpath is None:
            report.skip(
                img, f"no mask {pairing.mask_name(img)}.* in {mask_dir}; add it or fix --set data.pairing"
            )
            continue
        try:
            mask = read_image(mpath)
        except RasterError as e:
            report.skip(mpath, f"{e}; replace the mask")
            continue
        size = image_size(img, report)
        if size is None:
            continue
        h, w = size
        if mask.shape[1:] != (h, w):
            report.skip(
                mpath, f"mask is {mask.shape[2]}x{mask.shape[1]} but its image is {w}x{h}; fix the mask"
            )
            continue
        n_classes = max(n_classes, mask_classes(mask))
        objs = mask_objects(mask)
        boxes = np.array([b for _, b in objs], np.float64).reshape(-1, 4)
        labels = np.array([c for c, _ in objs], np.int64)
        b, lab = clean_boxes(boxes, labels, w, h, str(mpath), report, min_size)
        samples.append(BoxSample(img, b, lab))
    names = (
        list(class_names)
        if class_names
        else ["object"]
        if n_classes == 1
        else [f"class_{i}" for i in range(n_classes)]
    )
    if len(names) < n_classes:
        raise UsageError(
            f"{len(names)} class names given but the masks of {root} show {n_classes} colours (classes)"
        )
    return DetectionIndex(samples, names, "masks", report)


# --------------------------------------------------------------------------- entry point


def detect_format(root: Path) -> str:
    """The label layout of `root`: coco, yolo or masks (see the module doc)."""
    if find_coco(root) is not None:
        return "coco"
    if root.is_dir() and (root / "images").is_dir() and (root / "labels").is_dir():
        return "yolo"
    if root.is_dir() and any(
        (root / p.image_dir).is_dir() and (root / p.mask_dir).is_dir() for p in KNOWN_PAIRINGS.values()
    ):
        return "masks"
    raise DatasetError(
        f"{root} holds no detection labels: give a COCO .json (or a folder with one), "
        "images/ + labels/ (YOLO txt), or images/ + masks/"
    )


def scan_detection(
    root: Path,
    class_names: list[str] | None = None,
    min_size: float = 1.0,
    pairing: Pairing | None = None,
) -> DetectionIndex:
    """The labelled images under `root` (a folder or a COCO JSON); see the module doc."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"detection dataset {root} not found")
    report = LabelReport()
    fmt = "masks" if pairing is not None else detect_format(root)
    if fmt == "coco":
        path = find_coco(root)
        assert path is not None
        index = read_coco(path, class_names, report, min_size)
    elif fmt == "yolo":
        index = read_yolo(root, class_names, report, min_size)
    else:
        index = read_masks(root, class_names, report, min_size, pairing)
    if not index.samples:
        first = f" (first: {report.skipped[0][0]}: {report.skipped[0][1]})" if report.skipped else ""
        raise DatasetError(f"no usable labelled image in {root}{first}")
    return index
