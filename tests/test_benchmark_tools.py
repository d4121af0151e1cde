"""Small checks of the benchmark helpers whose output the docs quote."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_accuracy_weights_rows_by_the_steps_they_cover(tmp_path):
    """Rows at steps 10, 12 (an epoch end), 20: the last 10 steps are 2 steps at 0.5 (11-12)
    and 8 steps at 1.0 (13-20), not the mean of the two rows."""
    log = tmp_path / "log.csv"
    log.write_text("step,epoch,acc\n10,0.8,0.0\n12,1,0.5\n20,1.7,1.0\n")
    mod = _load("train_accuracy")
    assert mod.last_steps_mean(log, last=10) == pytest.approx((2 * 0.5 + 8 * 1.0) / 10)
    assert mod.last_steps_mean(log, last=8) == pytest.approx(1.0)
    assert mod.last_steps_mean(log, last=100) == pytest.approx((10 * 0.0 + 2 * 0.5 + 8 * 1.0) / 20)
