"""The import picture of `docs/architecture.md`, generated from the code.

Every module of the package is parsed with `ast` (nothing is imported), the imports between
its modules are collected and aggregated to layers, and the result is drawn as a Mermaid
flowchart between the markers `<!-- architecture:begin -->` and `<!-- architecture:end -->`.

$ python -m sarmae_cli.cli.architecture            # print the block
$ python -m sarmae_cli.cli.architecture --write    # rewrite it in docs/architecture.md
$ python -m sarmae_cli.cli.architecture --check    # exit 1 when docs/architecture.md is stale

tests/test_architecture.py keeps the picture in sync and checks the import rules with the same
functions.
"""

import argparse
import ast
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "sarmae_cli"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
DOC = PACKAGE_DIR.parent / "docs" / "architecture.md"
BEGIN = "<!-- architecture:begin -->"
END = "<!-- architecture:end -->"
COMMAND = "python -m sarmae_cli.cli.architecture"

# top to bottom: imports go downwards
LAYERS = ("cli", "demo", "train", "infer", "export", "model", "data", "base")
SUBPACKAGES = ("cli", "data", "model", "train", "infer", "export")
TITLES = {layer: f"{layer}/" for layer in SUBPACKAGES} | {"demo": "demo.py", "base": "base"}
NAMES_PER_LINE = 4


@dataclass(frozen=True)
class Import:
    """One imported module of one import statement."""

    importer: str  # dotted name of the importing module, e.g. "sarmae_cli.cli" for cli/__init__.py
    target: str  # dotted name of the imported module (a submodule where `from X import sub` names one)
    line: int
    in_function: bool  # inside a function or method body (runs on call, not on import)

    @property
    def internal(self) -> bool:
        """Whether the imported module is part of the package."""
        return self.target == PACKAGE or self.target.startswith(PACKAGE + ".")


def modules(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by `__init__`)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (package_dir.name, *path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_package(name: str, mods: dict[str, Path]) -> bool:
    return mods[name].name == "__init__.py"


def _resolve_from(node: ast.ImportFrom, importer: str, mods: dict[str, Path]) -> str:
    """The absolute module name of `from <module> import ...` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer, mods):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _walk(node: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it sits in a function body."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _walk(child, inner)


def imports(package_dir: Path = PACKAGE_DIR) -> list[Import]:
    """Every import of every module of the package, external ones included."""
    mods = modules(package_dir)
    found = []
    for importer, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                module = _resolve_from(node, importer, mods)
                # `from sarmae_cli.x import y` imports the submodule sarmae_cli.x.y where there is one
                subs = [f"{module}.{alias.name}" for alias in node.names]
                targets = [sub if sub in mods else module for sub in subs]
            for target in dict.fromkeys(targets):
                found.append(Import(importer, target, node.lineno, in_function))
    return found


def layer_of(module: str) -> str:
    """The layer of a module of the package: a subpackage, `demo`, or `base` (the package's
    `__init__`, `errors`, `outputs`, `shipped` and any other top-level module). The
    `python -m sarmae_cli` entry point `__main__` belongs to `cli`."""
    parts = module.split(".")
    if len(parts) == 1:
        return "base"
    if parts[1] in SUBPACKAGES:
        return parts[1]
    if parts[1] == "__main__":
        return "cli"
    if parts[1] == "demo":
        return "demo"
    return "base"


def module_graph(found: Iterable[Import], in_functions: bool = False) -> dict[str, set[str]]:
    """Importer -> imported modules of the package; module-level imports only unless
    `in_functions`."""
    graph: dict[str, set[str]] = {}
    for imp in found:
        if imp.internal and (in_functions or not imp.in_function) and imp.target != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of two or more
    modules (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(set(graph) | {t for targets in graph.values() for t in targets}):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_edges(found: Iterable[Import]) -> dict[tuple[str, str], bool]:
    """(importing layer, imported layer) -> whether some import of that edge is at module level
    (False: only imports inside functions)."""
    edges: dict[tuple[str, str], bool] = {}
    for imp in found:
        if not imp.internal:
            continue
        edge = (layer_of(imp.importer), layer_of(imp.target))
        if edge[0] != edge[1]:
            edges[edge] = edges.get(edge, False) or not imp.in_function
    return edges


def _label(layer: str, names: Sequence[str]) -> str:
    if list(names) == [layer]:  # a layer of one top-level module (demo.py)
        return f"<b>{TITLES[layer]}</b>"
    lines = [", ".join(names[i : i + NAMES_PER_LINE]) for i in range(0, len(names), NAMES_PER_LINE)]
    return "<br/>".join([f"<b>{TITLES[layer]}</b>", *lines])


def render(package_dir: Path = PACKAGE_DIR) -> str:
    """The generated block (without the markers): a Mermaid flowchart of the layers, each
    with its modules, and an arrow from importer to imported layer; dotted where every import
    of that edge sits inside a function."""
    mods = modules(package_dir)
    members: dict[str, list[str]] = {layer: [] for layer in LAYERS}
    for name in mods:
        if not _is_package(name, mods):
            members[layer_of(name)].append(name.split(".")[-1])
    out = [
        f"<!-- generated by `{COMMAND} --write`; tests/test_architecture.py keeps it in sync -->",
        "```mermaid",
        "flowchart TD",
    ]
    out += [f'    {layer}["{_label(layer, sorted(members[layer]))}"]' for layer in LAYERS if members[layer]]
    order = {layer: i for i, layer in enumerate(LAYERS)}
    edges = layer_edges(imports(package_dir))
    for (src, dst), at_module_level in sorted(edges.items(), key=lambda e: (order[e[0][0]], order[e[0][1]])):
        out.append(f"    {src} {'-->' if at_module_level else '-.->'} {dst}")
    out.append("```")
    return "\n".join(out) + "\n"


def current_block(text: str) -> str | None:
    """The text between the markers of a document (without them), or None without markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


def replace_block(text: str, block: str) -> str:
    """`text` with the block between its markers replaced by `block`."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} markers")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """Print, write (`--write`) or check (`--check`) the generated block; 1 when stale."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the block in the document")
    mode.add_argument("--check", action="store_true", help="exit 1 when the block is out of date")
    parser.add_argument("--doc", type=Path, default=DOC, help="the document (default: docs/architecture.md)")
    args = parser.parse_args(argv)
    block = render()
    if not (args.write or args.check):
        sys.stdout.write(block)
        return 0
    text = args.doc.read_text(encoding="utf-8")
    if current_block(text) is None:
        print(f"{args.doc}: no {BEGIN} ... {END} markers", file=sys.stderr)
        return 1
    if args.check:
        if current_block(text) != block:
            print(f"{args.doc} is stale: run `{COMMAND} --write`", file=sys.stderr)
            return 1
        return 0
    args.doc.write_text(replace_block(text, block), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
