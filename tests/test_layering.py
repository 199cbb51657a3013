"""The import contract: keras_coatnet (the library) <- training, export (neither imports the other) <- examples,
benchmarks; and no import cycle inside the library, counting imports inside functions too. Read from the source
(AST), so a lazy import counts like a top-level one."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("keras_coatnet", "training", "export", "examples", "benchmarks")
# package -> the project packages it may import
ALLOWED = {"keras_coatnet": set(), "training": {"keras_coatnet"}, "export": {"keras_coatnet"},
           "examples": {"keras_coatnet", "training", "export", "examples"},
           "benchmarks": {"keras_coatnet", "training", "export", "benchmarks"}}


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _imports(path):
    """Project modules imported anywhere in the file at `path`: [(line, dotted name)]."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    package = _module_name(path).rsplit(".", 0 if path.endswith("__init__.py") else 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] in PACKAGES]


def _sources(package):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_go_one_way(package):
    bad = [f"{os.path.relpath(p, ROOT)}:{line} imports {name}" for p in _sources(package)
           for line, name in _imports(p)
           if name.split(".")[0] != package and name.split(".")[0] not in ALLOWED[package]]
    assert not bad, "\n".join(bad)


def test_the_library_has_no_import_cycle():
    modules = {_module_name(p): p for p in _sources("keras_coatnet")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for _, imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + ".") and imported != "keras_coatnet":
                deps.add(imported)
        graph[name] = deps
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_contract_check_sees_a_violation(tmp_path):
    """The checker itself: a file importing across the layers is reported."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from export.cli import run_main\n    import training.data\n")
    assert [n for _, n in _imports(str(path))] == ["export.cli", "export.cli.run_main", "training.data"]
