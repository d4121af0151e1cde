"""The package's architecture rules (docs/architecture.md), checked on the source with `ast`:
the picture is in sync, no import circles, imports go downwards, no hidden function-level
imports, no oversized modules."""

import sys
from pathlib import Path

from sarmae_cli.cli import architecture as arch

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = arch.imports()

#: Layers each layer must not import (any import, inside functions too).
FORBIDDEN = {
    "base": {"data", "model", "train", "infer", "export", "cli", "demo"},
    "data": {"model", "train", "infer", "export", "cli", "demo"},
    "model": {"data", "train", "infer", "export", "cli", "demo"},
    "train": {"cli", "demo"},
    "infer": {"cli", "demo"},
    "export": {"cli", "demo"},
    "demo": {"cli"},
}

#: Modules that may be imported inside a function outside `sarmae_cli/cli/` (a prefix covers its
#: submodules), each with the reason: optional or heavy extras, loaded only when used.
OPTIONAL = {
    "onnx": "heavy; model/ reads ONNX metadata and builds the ONNX teacher only when asked",
    "google.protobuf": "the DecodeError of an unreadable ONNX file (protobuf comes with onnx)",
    "onnxruntime": "heavy; the ONNX teacher's session, `sarmae export --int8` quantisation and the "
    "onnxruntime backend (`export/ort_backend.py`), only when an ONNX model runs",
    "onnxsim": "the `simplify` extra, for `sarmae export --simplify` only",
    "onnxconverter_common": "`sarmae export --fp16` only",
    "matplotlib": "heavy; only when a confusion-matrix plot is written",
    "geopandas": "heavy; only for vector outputs (polygons, GeoParquet)",
    "shapely": "geometry of the vector outputs, beside geopandas",
    "PIL": "optical images of paired pretraining data only",
    "torch.utils.tensorboard": "needs the tensorboard package, which is not a dependency",
}

MAX_LINES = 500
#: Modules allowed past MAX_LINES, with the reason.
LONG_MODULES = {"train/loop.py": "the shared training loop, kept readable top to bottom in one file"}


def _where(imp: arch.Import) -> str:
    return f"{imp.importer}:{imp.line} imports {imp.target}"


def _within(module: str, prefix: str) -> bool:
    """Whether `module` is `prefix` or one of its submodules."""
    return module == prefix or module.startswith(prefix + ".")


def _in_cli(module: str) -> bool:
    return _within(module, "sarmae_cli.cli")


def test_diagram_in_sync():
    block = arch.current_block((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    assert block is not None, "docs/architecture.md has no architecture:begin/end markers"
    assert block == arch.render(), (
        "docs/architecture.md is stale: run `python -m sarmae_cli.cli.architecture --write`"
    )


def test_check_and_write(tmp_path: Path):
    doc = tmp_path / "architecture.md"
    doc.write_text(f"# t\n\n{arch.BEGIN}\nSTALE\n{arch.END}\n\nafter\n", encoding="utf-8")
    assert arch.main(["--check", "--doc", str(doc)]) == 1
    assert arch.main(["--write", "--doc", str(doc)]) == 0
    assert arch.main(["--check", "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# t\n\n") and text.endswith(f"{arch.END}\n\nafter\n") and "STALE" not in text
    doc.write_text("# no markers\n", encoding="utf-8")
    assert arch.main(["--check", "--doc", str(doc)]) == 1


def test_imports_resolved(tmp_path: Path):
    """Relative imports are resolved, `from package import submodule` names the submodule,
    imports in functions are told apart, and circles are found."""
    pkg = tmp_path / "sarmae_cli"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .sub import c, VALUE\n\n\ndef f():\n    import onnx\n")
    (pkg / "b.py").write_text("import sarmae_cli.sub.c\n")
    (pkg / "sub" / "__init__.py").write_text("from .. import a\n")
    (pkg / "sub" / "c.py").write_text("from ..b import thing\nfrom sarmae_cli.sub import a_name\n")
    found = {(i.importer, i.target, i.in_function) for i in arch.imports(pkg)}
    assert found == {
        ("sarmae_cli.a", "sarmae_cli.b", False),
        ("sarmae_cli.a", "sarmae_cli.sub.c", False),
        ("sarmae_cli.a", "sarmae_cli.sub", False),
        ("sarmae_cli.a", "onnx", True),
        ("sarmae_cli.b", "sarmae_cli.sub.c", False),
        ("sarmae_cli.sub", "sarmae_cli.a", False),
        ("sarmae_cli.sub.c", "sarmae_cli.b", False),
        ("sarmae_cli.sub.c", "sarmae_cli.sub", False),
    }
    graph = arch.module_graph(arch.imports(pkg))
    assert arch.cycles(graph) == [["sarmae_cli.a", "sarmae_cli.b", "sarmae_cli.sub", "sarmae_cli.sub.c"]]
    assert arch.cycles({"a": {"b"}, "b": set()}) == []
    assert [arch.layer_of(m) for m in ("sarmae_cli", "sarmae_cli.errors", "sarmae_cli.__main__")] == [
        "base",
        "base",
        "cli",
    ]
    assert [arch.layer_of(m) for m in ("sarmae_cli.demo", "sarmae_cli.data.raster")] == ["demo", "data"]


def test_no_import_circles():
    circles = arch.cycles(arch.module_graph(IMPORTS))
    assert not circles, "import circles between modules (module-level imports): " + "; ".join(
        " <-> ".join(c) for c in circles
    )


def test_imports_go_downwards():
    wrong = [
        _where(i)
        for i in IMPORTS
        if i.internal and arch.layer_of(i.target) in FORBIDDEN.get(arch.layer_of(i.importer), ())
    ]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_base_needs_no_dependencies():
    """errors, outputs, shipped: the standard library only (no torch), so they load fast."""
    heavy = [
        _where(i)
        for i in IMPORTS
        if arch.layer_of(i.importer) == "base"
        and not i.internal
        and i.target.split(".")[0] not in sys.stdlib_module_names
    ]
    assert not heavy, "base modules importing third-party packages:\n" + "\n".join(heavy)


def test_only_cli_imports_cli():
    outside = [
        _where(i)
        for i in IMPORTS
        if i.internal
        and arch.layer_of(i.target) == "cli"
        and not _in_cli(i.importer)
        and i.importer != "sarmae_cli.__main__"
    ]
    assert not outside, "modules outside cli/ that import cli/:\n" + "\n".join(outside)


def test_model_knows_nothing_of_rasters():
    """model/ neither opens rasters itself nor imports data/ (the layering test covers that)."""
    readers = [
        _where(i) for i in IMPORTS if arch.layer_of(i.importer) == "model" and _within(i.target, "rasterio")
    ]
    assert not readers, "model/ imports rasterio:\n" + "\n".join(readers)


def _optional(target: str) -> bool:
    return any(_within(target, name) for name in OPTIONAL)


def test_no_function_level_imports():
    """Imports sit at the top of the module, except optional extras and the CLI's command
    functions (which import the library lazily so that `sarmae --help` stays fast)."""
    hidden = [
        _where(i) for i in IMPORTS if i.in_function and not _in_cli(i.importer) and not _optional(i.target)
    ]
    assert not hidden, "imports inside functions (move them to the top, or add an extra to OPTIONAL):\n" + (
        "\n".join(hidden)
    )


def test_module_size():
    package = ROOT / "sarmae_cli"
    long = {
        path.relative_to(package).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in package.rglob("*.py")
    }
    over = {name: n for name, n in sorted(long.items()) if n > MAX_LINES and name not in LONG_MODULES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
