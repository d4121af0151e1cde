"""Many inputs: expansion of folders and globs, output naming, torchrun sharding, and the
plan's checks (issue 31: no result lost, no input destroyed)."""

from pathlib import Path

import pytest

from sarmae_cli.data.raster import InputNotFoundError
from sarmae_cli.errors import NotFoundError, UsageError
from sarmae_cli.infer.batch import expand_inputs, run_many, shard
from sarmae_cli.outputs import check_jobs, output_for
from sarmae_cli.paths import VirtualPath
from tests.infer.conftest import db_scene, write_scene


def test_expand_folders_and_globs(tmp_path):
    for n in ("b.tif", "a.tif", "c.txt"):
        (tmp_path / n).write_text("x")
    assert expand_inputs([tmp_path]) == [tmp_path / "a.tif", tmp_path / "b.tif"]
    assert expand_inputs([tmp_path / "*.tif"]) == [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(NotFoundError, match="input not found: missing.tif") as e:
        expand_inputs([tmp_path / "a.tif", Path("missing.tif")])  # refused before any input runs
    assert e.value.exit_code == 2
    with pytest.raises(InputNotFoundError, match="input not found: /vsizip/x.zip/a.tif"):  # GDAL checks
        expand_inputs([Path("/vsizip/x.zip/a.tif")])
    with pytest.raises(UsageError, match="no file matches"):
        expand_inputs([tmp_path / "*.jp2"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no scenes"):
        expand_inputs([tmp_path / "empty"])


def test_output_names(tmp_path):
    src = Path("in/scene_1.tif")
    assert output_for(src, Path("o.tif"), None, ".tif", many=False) == Path("o.tif")
    assert output_for(src, Path("out/{stem}_w.tif"), None, ".tif", many=True) == Path("out/scene_1_w.tif")
    assert output_for(src, None, tmp_path, ".parquet", many=True) == tmp_path / "scene_1.parquet"
    assert output_for(src, None, tmp_path, "", many=True, option="--vector") is None
    with pytest.raises(UsageError, match="needs '\\{stem\\}'"):
        output_for(src, Path("o.tif"), None, ".tif", many=True)
    with pytest.raises(UsageError, match="not both"):
        output_for(src, Path("o.tif"), tmp_path, ".tif", many=False)
    with pytest.raises(UsageError, match="does not exist"):
        output_for(src, None, tmp_path / "nope", ".tif", many=False)


def test_shard_by_torchrun_rank(monkeypatch):
    paths = [Path(f"{i}.tif") for i in range(5)]
    assert shard(paths) == paths
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert shard(paths) == [Path("1.tif"), Path("3.tif")]


def test_run_many_single_job_raises(tmp_path):
    def boom(src):
        raise UsageError("bad")

    with pytest.raises(UsageError, match="bad"):
        run_many([(Path("a"), [])], boom, overwrite=False)
    res = run_many([(Path("a"), []), (Path("b"), [])], boom, overwrite=False)
    assert [r["status"] for r in res] == ["failed", "failed"]


def test_folders_skip_hidden_and_temporary_files(tmp_path):
    """Issue 31 defect 5: what an interrupted run left (hidden temporaries) is no scene."""
    for n in ("a.tif", ".b.tif", ".a.tif.k9x8y7z6.tmp.tif", ".w.tif.abc_1234.part"):
        (tmp_path / n).write_text("x")
    (tmp_path / "dir.tif").mkdir()
    assert expand_inputs([tmp_path]) == [tmp_path / "a.tif"]


def test_same_file_twice_is_one_input(tmp_path):
    (tmp_path / "a.tif").write_text("x")
    (tmp_path / "b.tif").write_text("x")
    (tmp_path / "sub").mkdir()
    got = expand_inputs([tmp_path, tmp_path / "a.tif", tmp_path / "sub" / ".." / "b.tif"])
    assert got == [tmp_path / "a.tif", tmp_path / "b.tif"]


def test_two_inputs_with_one_name_are_refused(tmp_path):
    """Issue 31 defect 1: `a/x.tif b/x.tif --output-dir d` would write d/x.tif twice: refused
    up front (before sharding, so for every torchrun rank), naming both inputs."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.tif").write_text("x")
    (tmp_path / "a" / "x.vrt").write_text("x")
    with pytest.raises(UsageError) as e:
        expand_inputs([tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"])
    a, b = tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"
    assert str(e.value) == (
        f"inputs {a} and {b} have the same name 'x', so their outputs would overwrite each other; "
        "rename one, or process them in separate runs (each with its own --output-dir)"
    )
    with pytest.raises(UsageError, match="x.tif and .*x.vrt have the same name 'x'"):
        expand_inputs([tmp_path / "a"])


def test_plan_checks(tmp_path):
    """An output named twice, or naming an input, is refused before any job runs."""
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    ran = []

    def run(src):
        ran.append(src)
        return {}

    o = tmp_path / "o.tif"
    with pytest.raises(UsageError, match=f"inputs {b} and {a} would both write {o}; rename one"):
        run_many([(a, [tmp_path / "a.w.tif"]), (b, [o]), (a, [o])], run, True)
    with pytest.raises(UsageError, match="output .*p.tif is named twice for .*a.tif; give each"):
        check_jobs([(a, [tmp_path / "p.tif", tmp_path / "p.tif"])])
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=f"^output {b} is the input scene {b}; choose another output$"):
            run_many([(a, [tmp_path / "a.w.tif"]), (b, [b])], run, overwrite)
        with pytest.raises(UsageError, match=f"output {a} is the input scene {a}"):  # another job's input
            run_many([(a, [tmp_path / "a.w.tif"]), (b, [a])], run, overwrite)
    with pytest.raises(UsageError, match="outputs are written to local files"):
        check_jobs([(a, [Path("s3://bucket/o.tif")])])
    assert ran == []


def test_output_names_from_virtual_inputs_and_virtual_outputs(tmp_path):
    src = VirtualPath("/vsizip//data/scenes.zip/S1A_x.tif")
    assert output_for(src, None, tmp_path, ".parquet", many=True) == tmp_path / "S1A_x.parquet"
    assert output_for(src, Path("o/{stem}.w.tif"), None, "", many=True) == Path("o/S1A_x.w.tif")
    with pytest.raises(UsageError, match="^outputs are written to local files; -o s3:/b/o.tif is a GDAL"):
        output_for(src, Path("s3://b/o.tif"), None, ".tif", many=False)
    with pytest.raises(UsageError, match="--output-dir /vsis3/b is a GDAL virtual path"):
        output_for(src, None, Path("/vsis3/b"), ".tif", many=False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="is a file; give a folder"):
        output_for(src, None, tmp_path / "f", ".tif", many=False)


@pytest.mark.parametrize("command,weights", [("segment", "seg"), ("embed", "enc"), ("classify", "cls")])
def test_cli_refuses_colliding_names_and_input_as_output(invoke, weights_dir, tmp_path, command, weights):
    """Issue 31 defects 1 and 3 end to end: exit 2, one line, nothing written, inputs intact."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_scene(tmp_path / d / "x.tif", db_scene(40, 40))
    out = tmp_path / "out"
    out.mkdir()
    w = ("-w", weights_dir / f"{weights}.safetensors", "-q", "--overwrite")
    a, b = tmp_path / "a" / "x.tif", tmp_path / "b" / "x.tif"
    before = a.read_bytes()
    r = invoke(command, a, b, "--output-dir", out, *w)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"Error: inputs {a} and {b} have the same name 'x'")
    assert list(out.iterdir()) == []
    r = invoke(command, a, "-o", a, *w)
    assert r.exit_code == 2, r.stderr
    assert r.stderr == f"Error: output {a} is the input scene {a}; choose another output\n"
    if command != "embed":  # --output-dir of the inputs' own folder: x.tif would replace x.tif
        r = invoke(command, tmp_path / "a", "--output-dir", tmp_path / "a", *w)
        assert r.exit_code == 2 and "is the input scene" in r.stderr, r.stderr
    assert a.read_bytes() == before
