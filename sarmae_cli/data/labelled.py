"""Labelled datasets for fine-tuning and evaluation: classification chips (class folders or
a CSV manifest) and segmentation image/mask pairs (PNG folders such as OMBRIA, or GeoTIFF
image/label pairs such as Sen1Floods11), with the paper's few-shot / fraction protocols.

Chips become model input through `data/preprocess.py` (`InputSpec.chip`), the route that
inference and export share; the choices are stored in the weights.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from sarmae_cli.data.preprocess import InputSpec
from sarmae_cli.data.raster import IMAGE_SUFFIXES, RasterError, read_image
from sarmae_cli.errors import SarmaeError, UsageError
from sarmae_cli.paths import is_hidden

IGNORE_INDEX = -1  # label of pixels that take no part in the loss or the metrics


class DatasetError(SarmaeError):
    """A labelled dataset is empty, inconsistent or does not fit the requested protocol."""


# --------------------------------------------------------------------------- classification


@dataclass
class Sample:
    """One labelled chip: its file and class index."""

    path: Path
    label: int


@dataclass
class ClassificationIndex:
    """The files of a classification set and its class names (index = label)."""

    samples: list[Sample]
    class_names: list[str]
    source: str

    def counts(self) -> dict[str, int]:
        c = Counter(s.label for s in self.samples)
        return {name: c.get(i, 0) for i, name in enumerate(self.class_names)}


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(p)


def scan_classification(root: Path, class_names: list[str] | None = None) -> ClassificationIndex:
    """Index a folder-per-class dataset (`root/<CLASS>/*.png|jpeg|tif`) or a CSV manifest with
    `path,label` columns (paths relative to the CSV). With `class_names` (a model's classes),
    every class found must be one of them and labels follow that order."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"dataset not found: {root}")
    if root.is_file():
        found = _read_manifest(root)
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_hidden(p))
        if not folders:
            raise DatasetError(f"{root} has no class folders; expected {root}/<CLASS>/<image files>")
        found = []
        for folder in folders:
            files = sorted(p for p in folder.iterdir() if _is_image(p))
            if not files:
                raise DatasetError(
                    f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                    "add images or remove the folder"
                )
            found += [(f, folder.name) for f in files]
    names = sorted({c for _, c in found})
    if class_names is not None:
        unknown = [c for c in names if c not in class_names]
        if unknown:
            raise DatasetError(
                f"class {unknown[0]!r} in {root} is unknown to the model (its classes: "
                f"{', '.join(class_names)}); evaluate with weights trained on these classes"
            )
        names = list(class_names)
    index = {c: i for i, c in enumerate(names)}
    return ClassificationIndex([Sample(p, index[c]) for p, c in found], names, str(root))


def _read_manifest(path: Path) -> list[tuple[Path, str]]:
    """Rows of a `path,label` CSV manifest, paths resolved against the CSV's folder."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise DatasetError(f"manifest {path} needs a header with columns 'path' and 'label'")
    out = []
    for n, row in enumerate(rows, start=2):
        p = Path(row["path"])
        p = p if p.is_absolute() else path.parent / p
        if not row["label"]:
            raise DatasetError(f"manifest {path} line {n}: empty label")
        out.append((p, row["label"].strip()))
    return out


def holdout_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded per-class split into (train, validation) with `fraction` of each class held out
    (at least one chip per class when the class has two or more)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted({s.label for s in samples}):
        group = [s for s in samples if s.label == label]
        order = rng.permutation(len(group))
        n_val = min(len(group) - 1, max(1, round(fraction * len(group)))) if len(group) > 1 else 0
        val += [group[i] for i in order[:n_val]]
        train += [group[i] for i in order[n_val:]]
    return train, val


def holdout_pairs(
    pairs: list[tuple[Path, Path]], fraction: float, seed: int
) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """Seeded split of image/mask pairs into (train, validation), `fraction` held out (at least
    one), each part in its original order."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(fraction * len(pairs)))
    return [pairs[i] for i in sorted(order[n_val:])], [pairs[i] for i in sorted(order[:n_val])]


def select_protocol(
    index: ClassificationIndex,
    samples: list[Sample],
    shots: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> list[Sample]:
    """The training chips of a protocol: `shots` K per class or a `fraction` per class (seeded,
    without replacement), or all of them. Raises when a class has fewer than K chips."""
    if shots is not None and fraction is not None:
        raise UsageError("give either --shots or --fraction, not both")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise UsageError(f"--fraction must be in (0, 1], got {fraction}")
    if shots is None and fraction is None:
        return list(samples)
    groups = [[s for s in samples if s.label == label] for label in range(len(index.class_names))]
    if shots is not None:
        names = index.class_names
        short = [f"{n!r} has {len(g)}" for n, g in zip(names, groups, strict=True) if len(g) < shots]
        if short:
            raise DatasetError(
                f"too few training images for --shots {shots}: class {', '.join(short)}; "
                f"lower --shots to at most {min(len(g) for g in groups)} or add images"
            )
    rng = np.random.default_rng(seed)
    out = []
    for group in groups:
        k = shots if shots is not None else (max(1, round(fraction * len(group))) if group else 0)
        out += [group[i] for i in sorted(rng.choice(len(group), size=k, replace=False))]
    return out


@dataclass
class LoadReport:
    """What loading found: decoded items and the files that failed (skipped and counted)."""

    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def load_chips(samples: list[Sample], report: LoadReport) -> tuple[list[np.ndarray], list[int]]:
    """Decode the chips of `samples` (raw [C, H, W]); undecodable files are skipped and counted."""
    raws, labels = [], []
    for s in samples:
        try:
            raws.append(read_image(s.path))
        except RasterError as e:
            report.skipped.append((str(s.path), str(e)))
            continue
        labels.append(s.label)
    if not raws:
        raise DatasetError(
            f"none of the {len(samples)} images could be decoded (first: {report.skipped[0][1]})"
        )
    bands = Counter(r.shape[0] for r in raws)
    if len(bands) > 1:
        raise DatasetError(f"chips have different band counts {dict(bands)}; give chips with one band count")
    return raws, labels


class ChipDataset(Dataset):
    """Classification chips in memory: item -> (x [C, S, S] float32, label int64)."""

    def __init__(
        self,
        raws: list[np.ndarray],
        labels: list[int],
        spec: InputSpec,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        margin: int = 0,
        rerender: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if margin and augment is None:
            raise ValueError("a chip margin needs an augmentation that cuts the chips back to size")
        # each [C, S + 2 * margin, S + 2 * margin], prepared once; `augment` must cut S x S
        self.chips = [spec.chip(r, margin) for r in raws]
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.augment = augment
        # a raw-chip augmentation (a new display rendering) re-prepares the chip when it applies
        self.rerender, self.raws, self.spec, self.margin = rerender, (raws if rerender else []), spec, margin

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.chips[i]
        if self.rerender is not None:
            raw = self.rerender(self.raws[i])
            if raw is not self.raws[i]:
                x = self.spec.chip(raw, self.margin)
        if self.augment is not None:
            x = self.augment(x)
        return x, self.labels[i]


def balanced_indices(labels: Sequence[int], seed: int) -> list[int]:
    """Indices that oversample every class to the largest class's count (seeded), for class
    balancing of imbalanced sets with any sampler."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    top = int(np.bincount(labels).max())
    out: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        extra = rng.choice(idx, size=top - len(idx), replace=True) if top > len(idx) else []
        out += [*idx.tolist(), *np.asarray(extra, dtype=np.int64).tolist()]
    return sorted(out)


# --------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class Pairing:
    """How a mask is found for an image: folders under the dataset root, and a substring
    of the image's file name replaced to give the mask's name (same stem when empty)."""

    image_dir: str
    mask_dir: str
    image_token: str = ""
    mask_token: str = ""

    @classmethod
    def parse(cls, text: str) -> Pairing:
        """`IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN]`, e.g. `AFTER:MASK:_after_:_mask_`."""
        parts = text.split(":")
        if len(parts) not in (2, 4) or not all(parts[:2]):
            raise UsageError(
                f"pairing {text!r} must be IMAGE_DIR:MASK_DIR or IMAGE_DIR:MASK_DIR:IMAGE_TOKEN:MASK_TOKEN"
            )
        return cls(*parts)

    def mask_name(self, image: Path) -> str:
        if not self.image_token:
            return image.stem
        return image.stem.replace(self.image_token, self.mask_token)


#: Layouts recognised without --pairing, tried in order.
KNOWN_PAIRINGS = {
    "ombria": Pairing("AFTER", "MASK", "_after_", "_mask_"),
    "sen1floods11": Pairing("S1", "Labels", "S1Hand", "LabelHand"),
    "images-masks": Pairing("images", "masks"),
}


def scan_segmentation(root: Path, pairing: Pairing | None = None) -> tuple[list[tuple[Path, Path]], Pairing]:
    """(image, mask) file pairs under `root` (PNG/JPEG/TIFF), by `pairing` or a known layout.
    Every image needs its mask."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"segmentation dataset {root} is not a folder")
    if pairing is None:
        found = [
            p
            for p in KNOWN_PAIRINGS.values()
            if (root / p.image_dir).is_dir() and (root / p.mask_dir).is_dir()
        ]
        if not found:
            known = "; ".join(f"{p.image_dir}/ + {p.mask_dir}/" for p in KNOWN_PAIRINGS.values())
            raise DatasetError(
                f"{root} has no known image/mask folders ({known}); "
                "name them with --pairing IMAGE_DIR:MASK_DIR[:IMAGE_TOKEN:MASK_TOKEN] "
                "(finetune: --set data.pairing=...)"
            )
        pairing = found[0]
    image_dir, mask_dir = root / pairing.image_dir, root / pairing.mask_dir
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DatasetError(f"folder {d} not found (pairing {pairing.image_dir}:{pairing.mask_dir})")
    masks = {p.stem: p for p in mask_dir.iterdir() if _is_image(p)}
    images = sorted(p for p in image_dir.iterdir() if _is_image(p))
    if not images:
        raise DatasetError(f"image folder {image_dir} has no images")
    pairs = []
    for img in images:
        name = pairing.mask_name(img)
        if name not in masks:
            raise DatasetError(
                f"no mask {name}.* in {mask_dir} for image {img.name}; fix the pairing rule "
                "with --pairing (finetune: --set data.pairing=...)"
            )
        pairs.append((img, masks[name]))
    return pairs, pairing


@dataclass(frozen=True)
class MaskCoding:
    """Mask pixel values of each class (index = class id) and the value meaning 'ignore'."""

    values: tuple[int, ...]
    ignore_value: int | None = -1

    def encode(self, mask: np.ndarray, where: str) -> np.ndarray:
        """Raw mask values -> class ids [H, W] int64, IGNORE_INDEX where ignored.
        Raises on values outside the class list."""
        m = mask.astype(np.int64)
        out = np.full(m.shape, IGNORE_INDEX, np.int64)
        known = np.zeros(m.shape, bool)
        for cls, v in enumerate(self.values):
            hit = m == v
            out[hit] = cls
            known |= hit
        if self.ignore_value is not None:
            known |= m == self.ignore_value
        if not known.all():
            bad = sorted(set(np.unique(m[~known]).tolist()))[:5]
            raise DatasetError(
                f"mask {where} has values {bad} outside the class values {list(self.values)}"
                + (f" (ignore value {self.ignore_value})" if self.ignore_value is not None else "")
                + "; set the class values with --mask-values (finetune: --set data.mask_values=)"
            )
        return out


def detect_coding(masks: list[np.ndarray], ignore_value: int | None = -1) -> MaskCoding:
    """Class values from the masks: {0, 255} binary masks -> (0, 255); else 0..max."""
    values: set[int] = set()
    for m in masks:
        values |= set(np.unique(m).tolist())
    values.discard(ignore_value)
    if values <= {0, 255}:
        return MaskCoding((0, 255), ignore_value)
    bad = [v for v in values if v < 0 or v != int(v)]
    if bad:
        raise DatasetError(
            f"masks have values {sorted(bad)[:5]} that are not class ids; "
            "set --mask-values and --ignore-value (finetune: data.mask_values, data.ignore_value)"
        )
    return MaskCoding(tuple(range(int(max(values)) + 1)), ignore_value)


def read_mask(path: Path) -> np.ndarray:
    """A single-band label raster as [H, W] (identical RGB bands are accepted)."""
    m = read_image(path)  # [C, H, W]
    if m.shape[0] > 1 and not all(np.array_equal(m[0], m[i]) for i in range(1, m.shape[0])):
        raise DatasetError(f"mask {path} has {m.shape[0]} different bands; give single-band class masks")
    return m[0]


def load_pairs(
    pairs: list[tuple[Path, Path]], report: LoadReport
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Decode image/mask pairs: (raw images [C, H, W], raw masks [H, W], names). Undecodable
    pairs are skipped and counted; a mask whose size differs from its image is an error."""
    images, masks, names = [], [], []
    for img_path, mask_path in pairs:
        try:
            img, mask = read_image(img_path), read_mask(mask_path)
        except RasterError as e:
            report.skipped.append((str(img_path), str(e)))
            continue
        if img.shape[1:] != mask.shape:
            raise DatasetError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image {img_path} is "
                f"{img.shape[2]}x{img.shape[1]}; masks must match their images pixel for pixel"
            )
        images.append(img)
        masks.append(mask)
        names.append(img_path.name)
    if not images:
        raise DatasetError(f"none of the {len(pairs)} image/mask pairs could be decoded")
    bands = Counter(i.shape[0] for i in images)
    if len(bands) > 1:
        raise DatasetError(
            f"images have different band counts {dict(bands)}; give images with one band count"
        )
    return images, masks, names


def random_crop(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random `size` crop (torch RNG, so resume restores it) of an image [C, H, W] and its
    labels [H, W]; smaller images are padded (image 0, labels IGNORE_INDEX)."""
    c, h, w = x.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
        y = F.pad(y, (0, pw, 0, ph), value=IGNORE_INDEX)
        h, w = h + ph, w + pw
    top, left = (int(v) for v in torch.randint(0, 2**31 - 1, (2,)))
    top, left = top % (h - size + 1), left % (w - size + 1)
    return x[:, top : top + size, left : left + size], y[top : top + size, left : left + size]


class SegmentationDataset(Dataset):
    """Image/label pairs in memory: item -> (x [C, S, S] float32, labels [S, S] int64) from a
    random crop (training) or the whole image (`crop=None`, for sliding-window evaluation)."""

    def __init__(
        self,
        raws: list[np.ndarray],
        labels: list[np.ndarray],
        spec: InputSpec,
        crop: int | None = None,
        augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        rerender: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.images = [torch.from_numpy(spec.prepare(r)) for r in raws]  # each [C, H, W]
        self.labels = [torch.from_numpy(m) for m in labels]  # each [H, W] int64
        self.crop = crop
        self.augment = augment
        self.rerender, self.raws, self.spec = rerender, (raws if rerender else []), spec

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.images[i], self.labels[i]
        if self.rerender is not None:
            raw = self.rerender(self.raws[i])
            if raw is not self.raws[i]:
                x = torch.from_numpy(self.spec.prepare(raw))  # [C, H, W]
        if self.crop is not None:
            x, y = random_crop(x, y, self.crop)
        if self.augment is not None:
            x, y = self.augment(x, y)
        return x, y
