"""Output-path policy: names with the extension of what is written, refuse to clobber, never
write over an input, outputs are local files, atomic writes, usual file mode, leftovers of a
killed run cleaned up; the error classes' exit codes and the light input checks."""

import os
import stat
import zipfile
from pathlib import Path

import pytest

from sarmae_cli.errors import (
    NotFoundError,
    OutputExistsError,
    UsageError,
    WeightsError,
    WeightsNotFoundError,
    WrongWeightsError,
)
from sarmae_cli.outputs import (
    EXTENSIONS,
    atomic_output,
    check_extension,
    check_output,
    plan_outputs,
    refuse_input_as_output,
    remove_stale_temporaries,
)
from sarmae_cli.paths import require_dataset, require_path, require_source
from sarmae_cli.shipped import resolve_weights


def test_check_extension_table():
    """One table of kinds -> extensions (issue 31, item 6): case-insensitive, the kind found is
    returned, anything else names the option, the name and every extension allowed."""
    assert check_extension("a/X.TIFF", "geotiff") == "geotiff"
    assert check_extension("r.jsonl", ("csv", "jsonl", "geotiff")) == "jsonl"
    assert check_extension("out/{stem}.png", "png", "--preview") == "png"
    with pytest.raises(UsageError) as e:
        check_extension("p.xyz", "png", "--preview", "a PNG quicklook")
    assert str(e.value) == "--preview p.xyz: a PNG quicklook needs a .png name"
    assert e.value.exit_code == 2
    with pytest.raises(
        UsageError, match=r"^-o c\.json: the output needs a \.csv, \.jsonl, \.tif or \.tiff name$"
    ):
        check_extension("c.json", ("csv", "jsonl", "geotiff"), "-o", "the output")
    with pytest.raises(UsageError, match="^-o x: an ONNX model needs a .onnx name$"):
        check_extension("x", "onnx")
    assert {k: v[1] for k, v in EXTENSIONS.items()} == {
        "geotiff": (".tif", ".tiff"),
        "png": (".png",),
        "parquet": (".parquet",),
        "vector": (".gpkg", ".geojson", ".json"),
        "csv": (".csv",),
        "jsonl": (".jsonl",),
        "json": (".json",),
        "onnx": (".onnx",),
        "safetensors": (".safetensors",),
    }


def test_plan_outputs_checks_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    a.write_text("x")
    b.write_text("x")
    (tmp_path / "out").mkdir()
    (tmp_path / "p").mkdir()
    specs = [
        ("-o", None, tmp_path / "out", "geotiff", "a map"),
        ("--probabilities", None, None, "geotiff", "probabilities"),
        ("--preview", Path("p/{stem}.png"), None, "png", "a PNG quicklook"),
    ]
    assert plan_outputs([a, b], specs, False) == [
        (a, [tmp_path / "out" / "a.tif", None, Path("p/a.png")]),
        (b, [tmp_path / "out" / "b.tif", None, Path("p/b.png")]),
    ]
    with pytest.raises(UsageError, match="is the input scene"):  # --output-dir: the inputs' folder
        plan_outputs([a, b], [("-o", None, tmp_path, "geotiff", "a map")], True)
    with pytest.raises(UsageError, match="is the input scene"):
        plan_outputs([a], [("-o", a, None, "geotiff", "a map")], True)
    with pytest.raises(UsageError, match="^--preview q.jpg: a PNG quicklook needs a .png name$"):
        plan_outputs([a], [("--preview", Path("q.jpg"), None, "png", "a PNG quicklook")], False)
    out = tmp_path / "o.tif"
    out.write_text("old")
    with pytest.raises(OutputExistsError):  # one input: an existing output is refused up front
        plan_outputs([a], [("-o", out, None, "geotiff", "a map")], False)
    outs = plan_outputs([a, b], [("-o", Path(f"{tmp_path}/{{stem}}_w.tif"), None, "geotiff", "a map")], False)
    assert [o for _, (o,) in outs] == [tmp_path / "a_w.tif", tmp_path / "b_w.tif"]


def test_error_classes_decide_the_exit_code():
    assert WeightsNotFoundError("x").exit_code == 2 and isinstance(WeightsNotFoundError("x"), WeightsError)
    assert isinstance(WeightsNotFoundError("x"), NotFoundError) and isinstance(
        WeightsNotFoundError("x"), UsageError
    )
    assert WrongWeightsError("x").exit_code == 2 and isinstance(WrongWeightsError("x"), WeightsError)
    assert WeightsError("x").exit_code == 1 and NotFoundError("x").exit_code == 2


def test_named_paths_are_checked_without_the_library(tmp_path):
    with pytest.raises(NotFoundError, match="^input not found: nope.tif$"):
        require_path("nope.tif")
    require_path("/vsizip//no/such.zip/a.tif")  # virtual names are GDAL's to check
    with pytest.raises(WeightsNotFoundError, match=f"^weights file not found: {tmp_path}/w.safetensors$"):
        resolve_weights("segment", tmp_path / "w.safetensors", None)
    with pytest.raises(WrongWeightsError, match="is a folder, not a weights file"):
        resolve_weights("segment", tmp_path, None)
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    (tmp_path / "empty" / ".hidden" / "x.png").write_bytes(b"")
    with pytest.raises(UsageError, match="^no images \\(PNG, JPEG, TIFF\\) found in"):
        require_dataset(tmp_path / "empty")
    with pytest.raises(UsageError, match="or ZIPs of them"):
        require_source(tmp_path / "empty")
    (tmp_path / "empty" / "sub").mkdir()
    (tmp_path / "empty" / "sub" / "x.zip").write_bytes(b"")
    require_source(tmp_path / "empty")


def test_atomic_output_success_and_mode(tmp_path):
    dst = tmp_path / "out.txt"
    with atomic_output(dst) as tmp:
        assert tmp.parent == tmp_path and tmp != dst
        tmp.write_text("done")
        assert not dst.exists()
    assert dst.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(dst.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_output_failure_leaves_nothing(tmp_path):
    dst = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(dst) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_check_output_rules(tmp_path):
    (tmp_path / "x").write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output(tmp_path / "x")
    check_output(tmp_path / "x", overwrite=True)
    with pytest.raises(UsageError, match="is a directory"):
        check_output(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "missing" / "y")
    with pytest.raises(UsageError, match="not a folder"):
        check_output(tmp_path / "x" / "y")


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path):
    """Issue 31 defect 3: `-o` naming the input scene (or a symlink to it, or the archive that
    holds it) is refused with --overwrite too, and before the 'exists' refusal that would lead
    the user to --overwrite."""
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"keep")
    (tmp_path / "link.tif").symlink_to(scene)
    for out in (scene, tmp_path / "link.tif", tmp_path / "sub" / ".." / "scene.tif"):
        for overwrite in (False, True):
            with pytest.raises(UsageError) as e:
                check_output(out, overwrite, inputs=[scene])
            assert str(e.value) == f"output {out} is the input scene {scene}; choose another output"
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("a.tif", b"x")
    member = f"/vsizip/{tmp_path / 'x.zip'}/a.tif"
    with pytest.raises(UsageError, match="is the archive holding input /vsizip//"):
        check_output(tmp_path / "x.zip", True, inputs=[member])
    with pytest.raises(UsageError, match="archive holding input zip://"):
        refuse_input_as_output([tmp_path / "x.zip"], [f"zip://{tmp_path / 'x.zip'}!/a.tif"])
    refuse_input_as_output([tmp_path / "other.tif"], [scene, member, "/vsis3/bucket/a.tif"])
    assert scene.read_bytes() == b"keep"


@pytest.mark.parametrize("name", ["/vsis3/bucket/x.tif", "s3://bucket/x.tif", "/vsizip//d/x.zip/a.tif"])
def test_virtual_output_is_refused(name):
    with pytest.raises(UsageError, match="^outputs are written to local files; output .* GDAL virtual path"):
        check_output(name)
    with pytest.raises(UsageError, match="outputs are written to local files"):  # as typer gives it
        check_output(Path(name))


def _leftovers(folder, name):
    """Temporary files of a run killed while writing `name` (SIGKILL: no cleanup ran)."""
    made = [
        f".{name}.abc_1234.part",
        f".{name}.k9x8y7z6.tmp.tif",
        f".{name}.k9x8y7z6.tmp.tif.aux.xml",
        f".{name}.zz00zz00.part.ovr.tmp",
    ]
    for n in made:
        (folder / n).write_text("partial")
    return made


def test_next_run_removes_leftovers_of_a_killed_run(tmp_path):
    """Issue 31 defect 5: the next write of the same destination removes what a killed run
    left for it, and only that (other destinations' temporaries and look-alikes stay)."""
    _leftovers(tmp_path, "w.tif")
    others = [
        ".w.tif.notes",
        ".w.tif.abc.part",
        ".v.tif.abcdefgh.part",
        "w.tif.abcdefgh.part",
        ".ww.tif.abcdefgh.part",
    ]
    for n in others:
        (tmp_path / n).write_text("not ours")
    with atomic_output(tmp_path / "w.tif") as tmp:
        tmp.write_text("done")
    assert sorted(os.listdir(tmp_path)) == sorted(["w.tif", *others])


def test_leftovers_of_a_running_writer_are_kept(tmp_path):
    """A `.part` locked by a live `atomic_output` of the same destination is not a leftover."""
    dst = tmp_path / "w.tif"
    with atomic_output(dst, overwrite=True) as tmp:
        made = _leftovers(tmp_path, "w.tif")
        assert remove_stale_temporaries(dst) == []
        assert tmp.exists() and all((tmp_path / n).exists() for n in made)
        tmp.write_text("done")
    assert sorted(p.name for p in remove_stale_temporaries(dst)) == sorted(made)
    assert os.listdir(tmp_path) == ["w.tif"]
