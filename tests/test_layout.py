"""The package's shape (docs/design.md, "Layers"): no import cycle, no upward import, no source file over the
size a reader can hold. Imports inside functions and under TYPE_CHECKING count: they are dependencies too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "elasticdit"
MAX_LINES = 450
# (importer prefix, imported prefix) pairs that must not occur: a lower layer never reaches up
FORBIDDEN = [
    ("elasticdit.profile", "elasticdit.verify"),
    ("elasticdit.devices_registry", "elasticdit.profile"),
    ("elasticdit.targets", "elasticdit.profile"),
    ("elasticdit.targets", "elasticdit.verify"),
    ("elasticdit.targets", "elasticdit.exporter"),
    ("elasticdit.targets", "elasticdit.bundle.reader"),
    ("elasticdit.lowering", "elasticdit.targets"),
    ("elasticdit.quant", "elasticdit.targets"),
    ("elasticdit.recipes", "elasticdit.targets"),
    ("elasticdit.bundle.manifest", "elasticdit.targets"),
    ("elasticdit.model", "elasticdit.targets"),
    ("elasticdit.ssba", "elasticdit.targets"),
    ("elasticdit.kernels", "elasticdit.targets"),
    ("elasticdit.kernels", "elasticdit.bundle"),
    ("elasticdit.kernels", "elasticdit.ssba"),
    ("elasticdit.native.", "elasticdit.targets"),
    ("elasticdit.native.", "elasticdit.bundle"),
    ("elasticdit.native.", "elasticdit.profile"),
    ("elasticdit.native.", "elasticdit.generation"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]


@pytest.mark.parametrize(("importer", "imported"), FORBIDDEN)
def test_no_upward_import(importer, imported):
    edges = graph()
    pairs = [(a, b) for a, targets in edges.items() for b in targets]
    bad = sorted(f"{a} -> {b}" for a, b in pairs if a.startswith(importer) and b.startswith(imported))
    assert bad == []


def test_source_files_stay_small():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


# modules where these words name something else than a target
NOT_TARGETS = {
    "elasticdit.cli.bundle_cmds": "the --target option's default value",
    "elasticdit.devices_registry": "device kinds (an Android phone, an iPhone), not bundle targets",
    "elasticdit.profile.core": "`--device ios`, a transport",
    "elasticdit.profile.adb": "a phone's Android version field",
}


def test_targets_are_named_in_one_place():
    """A target's name appears as a string only in its own folder: everything else asks the registry
    (`elasticdit.targets.TARGETS`), so a new backend is a folder and a line there."""
    names = ("android", "ios", "onnx")
    where = {}
    for name, path in modules().items():
        if name.startswith("elasticdit.targets") or name in NOT_TARGETS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                where.setdefault(name, []).append(node.value)
    assert where == {}
