"""`sarmae evaluate` on a tiny classifier (MSTAR) and segmenter (OMBRIA) trained by `sarmae
finetune` here: the metrics equal those of the training run's validation, the library writes
the JSON and the confusion plot, and bad inputs fail with one line and exit 2."""

import json

import pytest
from typer.testing import CliRunner

from sarmae_cli.cli import app
from tests.conftest import DATA_DIR
from tests.train.conftest import CLASSES, _link_subset

TINY = ["--init", "random", "--set", "model.preset=tiny", "--set", "model.depth=2", "--seeds", "0", "-q"]


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _one_line(r, code, *fragments):
    assert r.exit_code == code, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in r.stderr, r.stderr


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A 2-block ViT-Tiny classifier of 3 MSTAR classes (3 steps), its validation set and the
    metrics the training run measured on it."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real SAR data not found at {DATA_DIR} (set SARMAE_DATA)")
    root = tmp_path_factory.mktemp("mstar")
    train = _link_subset(DATA_DIR / "mstar10" / "train", root / "train", 12)
    val = _link_subset(DATA_DIR / "mstar10" / "test", root / "val", 6)
    out = root / "cls.safetensors"
    r = _run(
        "finetune", "--task", "classification", train, "--val", val, *TINY, "--chip-size", "32",
        "--max-steps", "3", "-b", "12", "--set", "augment.crop_scale=[1.0,1.0]", "-o", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    run = json.loads((root / "cls.metrics.json").read_text())["runs"][0]
    return out, val, run


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A 2-block segmenter of OMBRIA water (2 steps), its validation pairs and their metrics."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real SAR data not found at {DATA_DIR} (set SARMAE_DATA)")
    root = tmp_path_factory.mktemp("ombria")
    src = DATA_DIR / "ombria_s1"
    for split, n in (("train", 4), ("test", 2)):
        for d in ("AFTER", "MASK"):
            (root / split / d).mkdir(parents=True)
        for img in sorted((src / split / "AFTER").iterdir())[:n]:
            mask = src / split / "MASK" / img.name.replace("after", "mask")
            (root / split / "AFTER" / img.name).symlink_to(img)
            (root / split / "MASK" / mask.name).symlink_to(mask)
    out = root / "seg.safetensors"
    r = _run(
        "finetune", "--task", "segmentation", root / "train", "--val", root / "test", *TINY,
        "--set", "model.decoder=fpn", "--set", "model.channels=32", "--chip-size", "64",
        "--max-steps", "2", "-b", "4", "-o", out,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    run = json.loads((root / "seg.metrics.json").read_text())["runs"][0]
    return out, root / "test", run


def test_classifier_metrics_json_and_plot(classifier, tmp_path):
    weights, val, run = classifier
    report = tmp_path / "m.json"
    r = _run("evaluate", val, "-w", weights, "-o", report)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("overall accuracy ") and r.stdout.count("\n") == 1
    for name in CLASSES:
        assert name in r.stdout
    m = json.loads(report.read_text())
    assert m["confusion_matrix"] == run["confusion_matrix"]  # what the training run measured
    assert m["weights"] == str(weights) and m["data"] == str(val) and m["tta"] == 1
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert r.stderr == f"wrote {report} and {tmp_path / 'm.png'}\n"

    r = _run("evaluate", val, "-w", weights, "--json", "--tta", "6", "-q")
    assert r.exit_code == 0 and r.stderr == ""
    m6 = json.loads(r.stdout)
    assert m6["tta"] == 6 and sum(map(sum, m6["confusion_matrix"])) == 18


def test_existing_output_needs_overwrite(classifier, tmp_path):
    weights, val, _ = classifier
    report = tmp_path / "m.json"
    report.write_text("keep")
    _one_line(_run("evaluate", val, "-w", weights, "-o", report), 2, "exists; pass --overwrite")
    assert report.read_text() == "keep" and not (tmp_path / "m.png").exists()
    r = _run("evaluate", val, "-w", weights, "-o", report, "--overwrite", "-q")
    assert r.exit_code == 0 and json.loads(report.read_text())["num_samples"] == 18


def test_segmenter_metrics_and_tta_refused(segmenter, tmp_path):
    weights, val, run = segmenter
    r = _run("evaluate", val, "-w", weights, "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["confusion_matrix"] == run["confusion_matrix"] and m["miou"] == pytest.approx(run["miou"])
    report = tmp_path / "w.json"
    r = _run("evaluate", val, "-w", weights, "-o", report, "-q")
    assert r.exit_code == 0 and r.stdout.startswith("mIoU ") and (tmp_path / "w.png").is_file()
    r = _run("evaluate", val, "-w", weights, "--tta", "6", "-o", tmp_path / "t.json")
    _one_line(r, 2, "--tta applies to classification weights")
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Missing option '--weights' / '-w'"),
        (["-w", "W", "-o", "metrics.txt"], "-o metrics.txt: a metrics JSON (the plot goes beside it)"),
        (["-w", "nope.safetensors"], "weights file not found: nope.safetensors"),
        (["-w", "W", "--tta", "7"], "Invalid value for '--tta'"),
        (["-w", "W", "--mask-values", "0,x"], "--mask-values must be comma-separated integers"),
    ],
)
def test_bad_inputs_are_one_line_usage_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "W").write_bytes(b"")
    (tmp_path / "x.png").write_bytes(b"")  # an image: a folder without any is refused first
    r = _run("evaluate", tmp_path, *args)
    _one_line(r, 2, message)
    assert not (tmp_path / "metrics.txt").exists()
