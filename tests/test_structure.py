"""The shape of the code: layers without circles, no reaching into private names, small classes.

docs/ARCHITECTURE.md draws the layers; these checks keep the drawing true. They read the
source with ``ast`` and import nothing.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"
CLIENT_CODE = [*ENGINE.rglob("*.py"), *(ROOT / "console").rglob("*.py"), *(ROOT / "pages").glob("*.py"),
               ROOT / "worker.py", ROOT / "app.py"]
LARGEST_CLASS_LINES = 250


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def engine_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported engine module, whether the import sits inside a function) of one file,
    leaving out imports made for type annotations only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    skipped = {id(n) for block in ast.walk(tree) if is_type_checking_block(block)
               for n in ast.walk(block)}
    inner = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            targets = [".".join(base + [node.module])] if node.module else \
                [".".join(base + [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            targets = [node.module or ""]
        else:
            targets = [alias.name for alias in node.names]
        for target in targets:
            if target == "engine" or target.startswith("engine."):
                found.append((_existing_module(target), id(node) in inner))
    return found


def _existing_module(name: str) -> str:
    """``name``, or its package when ``name`` is a name inside a module (``engine.clock``
    imported as ``from . import clock`` is a module; ``engine.queue.X`` is not)."""
    parts = name.split(".")
    while parts:
        candidate = ROOT.joinpath(*parts)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return ".".join(parts)
        parts.pop()
    return name


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ENGINE.rglob("*.py"):
        name = module_name(path)
        graph[name] = {target for target, _ in engine_imports(path) if target != name}
    return graph


def test_the_engine_imports_no_module_inside_a_function_to_dodge_a_circle():
    inner = [(module_name(path), target) for path in ENGINE.rglob("*.py")
             for target, in_function in engine_imports(path) if in_function]
    assert inner == []


def test_the_engine_import_graph_has_no_cycle():
    graph = import_graph()
    # The package itself re-exports its modules: leave out the edges into "engine".
    graph = {name: {t for t in targets if t != "engine"} for name, targets in graph.items()}
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_reaches_into_another_modules_private_names():
    found = []
    for path in CLIENT_CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(ROOT)}:{node.lineno} import {alias.name}"
                          for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert found == []


def test_no_class_is_over_the_size_a_newcomer_reads_in_one_sitting():
    sizes = {}
    for path in CLIENT_CODE:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(ROOT)}:{node.name}"] = node.end_lineno - node.lineno + 1
    too_big = {name: lines for name, lines in sizes.items() if lines >= LARGEST_CLASS_LINES}
    assert too_big == {}
