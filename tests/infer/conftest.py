"""Fixtures for the inference tests: tiny random weights and small georeferenced scenes."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from sarmae_cli.model.checkpoint import WeightsMeta
from sarmae_cli.model.config import preset
from sarmae_cli.model.detector import Detector
from sarmae_cli.model.encoder import SarViT
from sarmae_cli.model.factory import EncoderModel, save_model
from sarmae_cli.model.heads import Classifier, Segmenter
from sarmae_cli.shipped import SHIPPED

TRANSFORM = from_origin(500000.0, 4_650_000.0, 10.0, 10.0)


def tiny_meta(task: str, in_chans: int = 2, classes: list[str] | None = None, **kw) -> WeightsMeta:
    enc = preset("tiny", in_chans=in_chans, img_size=32, depth=4, embed_dim=48, num_heads=2)
    bands = ["VV", "VH"][:in_chans] if in_chans <= 2 else ["SAR"] * in_chans
    return WeightsMeta(
        task=task,
        encoder=enc.to_dict(),
        bands=bands,
        input_scaling={"mode": "db", "stretch": "fixed", "db_range": [-30.0, 5.0]},
        normalization={"mean": [0.5] * in_chans, "std": [0.25] * in_chans},
        class_names=classes,
        tile={"size": 32, "overlap": 8},
        **kw,
    )


def make_weights(path: Path, task: str, in_chans: int = 2, classes: list[str] | None = None) -> Path:
    """Tiny random weights of `task` (fixed seed)."""
    torch.manual_seed(0)
    meta = tiny_meta(task, in_chans, classes)
    cfg = meta.encoder_config
    if task == "segmentation":
        model = Segmenter(cfg, len(classes), decoder="fpn", channels=16)
        with torch.no_grad():  # random heads give near-uniform maps; make classes differ
            model.head.classifier.bias.copy_(torch.linspace(-0.2, 0.2, len(classes)))
    elif task == "classification":
        model = Classifier(cfg, len(classes))
        with torch.no_grad():
            model.head.weight.normal_(0, 0.5)
    else:
        model = EncoderModel(SarViT(cfg))
    save_model(path, model, meta)
    return path


def make_detector(
    path: Path,
    in_chans: int = 1,
    classes: list[str] | None = None,
    tile: int = 64,
    overlap: int = 32,
    prior: int = 0,
) -> Path:
    """A tiny random FCOS detector (fixed seed; strides 8-32 on 16-px patches). Untrained, its
    boxes score about 0.07 everywhere. With `prior` > 0 it has a spatial prior of that width
    whose projections are random (as if trained), so the prior counts."""
    torch.manual_seed(0)
    classes = classes or ["ship"]
    meta = tiny_meta("detection", in_chans, classes)
    meta.tile = {"size": tile, "overlap": overlap}
    model = Detector(meta.encoder_config, len(classes), (8, 16, 32), channels=32, num_convs=1, prior=prior)
    if model.head.prior is not None:
        for conv in model.head.prior.proj:
            torch.nn.init.normal_(conv.weight, std=0.05)
    save_model(path, model, meta)
    return path


def write_scene(
    path: Path, data: np.ndarray, crs="EPSG:32631", nodata=None, transform=TRANSFORM, **kw
) -> Path:
    """A georeferenced GeoTIFF of `data` [C, H, W]."""
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=transform)
    with rasterio.open(path, "w", **profile, **kw) as dst:
        dst.write(data)
        if c == 2:
            dst.descriptions = ("VV", "VH")
    return path


def db_scene(h: int = 90, w: int = 130, seed: int = 0) -> np.ndarray:
    """Speckled dB backscatter with a dark 'water' rectangle, [2, H, W] float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-9, 2.5, (2, h, w)).astype(np.float32)
    x[1] -= 6
    x[:, h // 4 : h // 2, w // 5 : w // 2] -= 12
    return x


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    make_weights(d / "seg.safetensors", "segmentation", classes=["not water", "water"])
    make_weights(d / "cls.safetensors", "classification", classes=["a", "b", "c", "d"])
    make_weights(d / "enc.safetensors", "encoder")
    make_weights(d / "seg1.safetensors", "segmentation", in_chans=1, classes=["not water", "water"])
    make_weights(d / "enc1.safetensors", "encoder", in_chans=1)
    make_weights(d / "cls1.safetensors", "classification", in_chans=1, classes=["a", "b", "c"])
    return d


@pytest.fixture
def scene(tmp_path) -> Path:
    return write_scene(tmp_path / "scene.tif", db_scene())


MSTAR_CLASSES = ["2S1", "BMP2", "BRDM2", "BTR60", "BTR70", "D7", "T62", "T72", "ZIL131", "ZSU234"]


def make_shipped(folder: Path) -> Path:
    """A shipped-weights folder of tiny 1-band models under the shipped file names."""
    folder.mkdir(parents=True, exist_ok=True)
    make_weights(folder / SHIPPED["encoder"], "encoder", in_chans=1)
    make_weights(folder / SHIPPED["water"], "segmentation", in_chans=1, classes=["land", "water"])
    make_weights(folder / SHIPPED["mstar"], "classification", in_chans=1, classes=MSTAR_CLASSES)
    make_detector(folder / SHIPPED["ships"], in_chans=1, classes=["ship"])
    return folder


def flip_byte(path: Path) -> None:
    """Change one byte of tensor data (the file's last byte): the header stays readable, the
    checksum no longer matches."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
