"""Every config file the docs publish (model cards, GPU stage) resolves with the command that
uses it, so a typo in a published recipe fails here rather than in a user's run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sarmae_cli.train import finetune as ft
from sarmae_cli.train.config import from_dict, load_config_file
from sarmae_cli.train.pretrain import PretrainConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "docs" / "model_cards" / "configs").glob("*.yaml")) + [
    ROOT / "benchmarks" / "gpu_stage" / "stage.yaml"
]


def test_the_published_configs_are_all_found():
    names = {p.name for p in CONFIGS}
    assert {"ft_cls.yaml", "ft_water.yaml", "ft_water_cw15.yaml", "pt.yaml", "stage.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_published_config_resolves(path: Path):
    layers = load_config_file(path)
    if path.name.startswith("ft_"):
        task = "classification" if path.name.startswith("ft_cls") else "segmentation"
        cfg = ft.resolve_config(task, layers)
        if "class_weights" in layers:  # one positive weight per class (land, water)
            assert ft.class_weight_tensor(cfg.class_weights, 2) is not None
    else:  # pretraining configs (`sarmae pretrain --config`); sources come from the command line
        cfg = from_dict(PretrainConfig, {"sources": ["chips/"], **layers})
    assert cfg is not None
