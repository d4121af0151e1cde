"""Shipped default weights: a missing, truncated or corrupted file is one error line that
names it and says how to restore it; `sarmae weights list --verify` checks every file."""

import json
import shutil
from pathlib import Path

import pytest

from sarmae_cli.errors import WeightsError
from sarmae_cli.infer.models import Models
from sarmae_cli.shipped import SHIPPED, shipped_path
from tests.infer.conftest import db_scene, flip_byte, make_shipped, write_scene


@pytest.fixture(scope="session")
def good_shipped(tmp_path_factory) -> Path:
    return make_shipped(tmp_path_factory.mktemp("shipped"))


@pytest.fixture
def shipped(good_shipped, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the good shipped folder, used as $SARMAE_WEIGHTS_DIR."""
    folder = shutil.copytree(good_shipped, tmp_path / "weights")
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(folder))
    return folder


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run_default(invoke, command: str, tmp_path: Path):
    """Run `command` with its default shipped weights on a small 1-band input."""
    scene = write_scene(tmp_path / "scene.tif", db_scene(40, 40)[:1])
    if command == "segment":
        return invoke("segment", "--task", "water", scene, "-o", tmp_path / "out.tif", "-q")
    if command == "embed":
        return invoke("embed", scene, "-o", tmp_path / "out.parquet", "-q")
    return invoke("classify", scene, "-o", tmp_path / "out.csv", "-q")


TASK_OF = {"segment": "water", "embed": "encoder", "classify": "mstar"}


def assert_restore_error(r, path: Path, *needles: str) -> None:
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    assert r.stderr.startswith("Error: shipped weights for task ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in (
        str(path),
        "restore them with `git checkout -- weights/`",
        "reinstall sarmae",
        "--weights FILE",
    ):
        assert n in r.stderr, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["segment", "embed", "classify"])
def test_missing_shipped_weights(invoke, command, tmp_path, monkeypatch):
    monkeypatch.setenv("SARMAE_WEIGHTS_DIR", str(tmp_path / "weights"))
    r = run_default(invoke, command, tmp_path)
    path = tmp_path / "weights" / SHIPPED[TASK_OF[command]]
    assert_restore_error(r, path, f"task '{TASK_OF[command]}' are missing: ")
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize("command", ["segment", "embed", "classify"])
@pytest.mark.parametrize("damage", [truncate, flip_byte], ids=["truncated", "checksum"])
def test_damaged_shipped_weights(invoke, shipped, command, damage, tmp_path):
    path = shipped / SHIPPED[TASK_OF[command]]
    damage(path)
    r = run_default(invoke, command, tmp_path)
    assert_restore_error(r, path, f"task '{TASK_OF[command]}' are damaged: ")
    if damage is flip_byte:
        assert "do not match the checksum" in r.stderr
    assert "restore the file from its source" not in r.stderr  # one piece of advice, not two
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_good_shipped_weights_run(invoke, shipped, tmp_path):
    for command in ("segment", "embed", "classify"):
        r = run_default(invoke, command, tmp_path)
        assert r.exit_code == 0, (command, r.stderr)


def test_library_errors(shipped, tmp_path):
    flip_byte(shipped_path("water"))
    models = Models("segment", shipped_path("water"), device="cpu")  # the header is fine
    with pytest.raises(WeightsError, match=r"are damaged: .*; restore them with `git checkout"):
        models.backend(1)
    shipped_path("encoder").unlink()
    with pytest.raises(WeightsError, match=r"task 'encoder' are missing: .*sarmae_encoder"):
        Models("embed", shipped_path("encoder"))
    other = shutil.copy(shipped_path("water"), tmp_path / "mine.safetensors")  # not a shipped file
    with pytest.raises(WeightsError, match="restore the file from its source") as e:
        Models("segment", other, device="cpu").backend(1)
    assert "git checkout" not in str(e.value)


def test_list_verify_good(invoke, shipped):
    r = invoke("weights", "list", "--verify")
    assert r.exit_code == 0, r.stderr
    for name in SHIPPED.values():
        assert name in r.stdout
    assert r.stdout.count("OK") == len(SHIPPED) and "status" in r.stdout
    r = invoke("weights", "list", "--verify", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.stdout)["weights"]
    assert [(Path(w["path"]).name, w["status"]) for w in rows] == sorted(
        (name, "OK") for name in SHIPPED.values()
    )


def test_list_verify_bad(invoke, shipped):
    flip_byte(shipped / SHIPPED["water"])
    truncate(shipped / SHIPPED["mstar"])
    (shipped / SHIPPED["encoder"]).unlink()
    r = invoke("weights", "list", "--verify")
    assert r.exit_code == 1
    assert r.stdout.count("CORRUPTED") == 2 and "MISSING" in r.stdout
    assert r.stderr.startswith("Error: 3 shipped weights file(s)") and r.stderr.count("\n") == 1, r.stderr
    for text in (
        "sarmae_water.safetensors (corrupted)",
        "sarmae_mstar.safetensors (corrupted)",
        "sarmae_encoder.safetensors (missing)",
        "git checkout -- weights/",
    ):
        assert text in r.stderr, r.stderr
    rows = json.loads(invoke("weights", "list", "--verify", "--json").stdout)["weights"]
    status = {Path(w["path"]).name: (w["status"], w["error"]) for w in rows}
    assert status["sarmae_water.safetensors"][0] == "CORRUPTED"
    assert "checksum" in status["sarmae_water.safetensors"][1]
    assert status["sarmae_encoder.safetensors"][0] == "MISSING"
    # without --verify the tensors are not read: only the file with an unreadable header is flagged
    r = invoke("weights", "list")
    assert r.exit_code == 1 and r.stdout.count("CORRUPTED") == 1 and "MISSING" not in r.stdout
    assert "sarmae_water.safetensors" in r.stdout and "sarmae_mstar.safetensors (corrupted)" in r.stderr


MSTAR_FOR_SEGMENT = "--task mstar is the shipped classification model, not one for sarmae segment"
ENCODER_FOR_SEGMENT = "--task encoder is the shipped encoder model, not one for sarmae segment"


@pytest.mark.parametrize(
    ("task", "needles"),
    [
        ("mstar", (MSTAR_FOR_SEGMENT, ": use `sarmae classify` for it;")),
        ("encoder", (ENCODER_FOR_SEGMENT, ": use `sarmae embed` for it;")),
        ("lava", ("unknown --task 'lava'",)),
    ],
)
def test_segment_task_of_another_command(invoke, shipped, task, needles, tmp_path):
    """A shipped task that is not a segmentation model is a usage error, not 'damaged weights'."""
    scene = write_scene(tmp_path / "scene.tif", db_scene(40, 40)[:1])
    r = invoke("segment", "--task", task, scene, "-o", tmp_path / "out.tif", "-q")
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert r.stderr.startswith("Error: " + needles[0]) and r.stderr.count("\n") == 1, r.stderr
    assert all(n in r.stderr for n in needles), r.stderr
    assert r.stderr.rstrip().endswith("sarmae segment takes --task water")
    assert "damaged" not in r.stderr and not list(tmp_path.glob("out*"))
