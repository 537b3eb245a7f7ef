"""The package layout stays acyclic: no module of meit (incl. meit.encoders/fusion/eval) imports, even inside a
function, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, Path]:
    """Module name -> file, from pyproject's `package-dir` mapping (the eval modules' loader scripts excluded)."""
    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in dirs.items():
        for file in (REPO / folder).rglob("*.py"):
            parts = [p for p in file.relative_to(REPO / folder).with_suffix("").parts if p != "__init__"]
            if "modules" in parts or (package == "meit" and parts and f"meit.{parts[0]}" in dirs):
                continue
            modules[".".join([package, *parts])] = file
    return modules


def imported_modules(name: str, file: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `file` imports anywhere (module level, functions, methods), `TYPE_CHECKING` included."""
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles_even_through_function_local_imports():
    modules = package_modules()
    assert {"meit.fit", "meit.fusion.prefix_kv", "meit.eval.labels", "meit.encoders.resnet1d"} <= set(modules)
    graph = {name: imported_modules(name, file, modules) for name, file in modules.items()}
    assert cycles(graph) == []


def local_package_imports(file: Path) -> set[int]:
    """Line numbers of the imports of package modules made inside a function of `file` (nested ones included)."""
    lines = set()
    for function in ast.walk(ast.parse(file.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == "meit"):
                    lines.add(node.lineno)
                elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "meit" for a in node.names):
                    lines.add(node.lineno)
    return lines


def test_function_local_imports_of_the_package_say_they_are_for_start_up_time():
    """A local import of a meit module is allowed only for start-up time, said in a comment on the line or in the
    module's comments; a local import that dodges a cycle would be found by the test above anyway."""
    unexplained = []
    for name, file in package_modules().items():
        lines = file.read_text().splitlines()
        if any(line.lstrip().startswith("#") and "start-up time" in line for line in lines):
            continue
        unexplained += [f"{name}:{n}" for n in sorted(local_package_imports(file))
                        if "start-up time" not in lines[n - 1]]
    assert unexplained == []
