"""Output-path policy: refuse to clobber, never write over an input, outputs are local files,
atomic writes, usual file mode, leftovers of a killed run cleaned up."""

import os
import stat
import zipfile
from pathlib import Path

import pytest

from sarmae_cli.errors import OutputExistsError, UsageError
from sarmae_cli.outputs import atomic_output, check_output, refuse_input_as_output, remove_stale_temporaries


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
