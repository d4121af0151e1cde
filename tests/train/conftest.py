"""Fixtures of the training tests: small real MSTAR subsets, as links."""

import pytest

CLASSES = ("2S1", "BMP2", "T72")


def _link_subset(src, dst, per_class, classes=CLASSES):
    """A class-folder subset of real chips, as symbolic links (nothing is copied)."""
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:per_class]:
            (dst / c / f.name).symlink_to(f)
    return dst


@pytest.fixture
def mstar(data_dir, tmp_path):
    root = data_dir / "mstar10"
    train = _link_subset(root / "train", tmp_path / "train", 12)
    val = _link_subset(root / "test", tmp_path / "val", 6)
    return train, val
