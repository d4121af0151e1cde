"""Many inputs: expansion of folders and globs, output naming, torchrun sharding."""

from pathlib import Path

import pytest

from sarmae_cli.data.raster import InputNotFoundError, RasterError
from sarmae_cli.errors import UsageError
from sarmae_cli.infer.batch import expand_inputs, output_for, run_many, shard


def test_expand_folders_and_globs(tmp_path):
    for n in ("b.tif", "a.tif", "c.txt"):
        (tmp_path / n).write_text("x")
    assert expand_inputs([tmp_path]) == [tmp_path / "a.tif", tmp_path / "b.tif"]
    assert expand_inputs([tmp_path / "*.tif"]) == [tmp_path / "a.tif", tmp_path / "b.tif"]
    with pytest.raises(InputNotFoundError, match="input not found: missing.tif") as e:
        expand_inputs([tmp_path / "a.tif", Path("missing.tif")])  # refused before any input runs
    assert e.value.exit_code == 2 and isinstance(e.value, RasterError)
    assert expand_inputs([Path("/vsizip/x.zip/a.tif")]) == [Path("/vsizip/x.zip/a.tif")]  # GDAL checks
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
