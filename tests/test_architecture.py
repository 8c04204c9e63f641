"""The package's shape: imports run one way (no cycle, counting imports inside functions)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import gradloop

SRC = Path(gradloop.__file__).parent


def _module_name(path):
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """{module: the package's modules it imports}, from every import statement, at any depth."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                # "from . import x" imports the submodule x; "from .m import x" imports m (or m.x).
                found = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                targets.update(found or [module])
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_package():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_callbacks_do_not_import_the_loop_and_no_module_imports_the_package():
    graph = import_graph()
    assert "gradloop.loop" not in graph["gradloop.callbacks"]
    assert [m for m, targets in graph.items() if "gradloop" in targets] == []


# ---------------------------------------------------------------- size
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
ROOT = SRC.parent.parent  # the repository: src/, tests/, bench/
CHECKED = [ROOT / "src", ROOT / "tests", ROOT / "bench"]


def python_files():
    return sorted(p for folder in CHECKED if folder.is_dir() for p in folder.rglob("*.py"))


def oversized(paths, max_module=MAX_MODULE_LINES, max_function=MAX_FUNCTION_LINES):
    """["path: N lines" for a module over max_module lines, "path:line name: N lines" for a function
    (or method) over max_function], in file order."""
    found = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        if (lines := len(text.splitlines())) > max_module:
            found.append(f"{path}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    found.append(f"{path}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_module_over_500_lines_and_no_function_over_80():
    assert SRC.is_relative_to(ROOT / "src"), "the size check reads the source tree, not an installed copy"
    assert oversized(python_files()) == []


def test_the_size_check_finds_a_long_module_and_a_long_function(tmp_path):
    long_function = "def f():\n" + "    x = 1\n" * 80
    (tmp_path / "a.py").write_text(long_function)
    (tmp_path / "b.py").write_text("x = 1\n" * 501)
    (tmp_path / "c.py").write_text("def g():\n" + "    x = 1\n" * 79)
    found = oversized(sorted(tmp_path.glob("*.py")))
    assert found == [f"{tmp_path / 'a.py'}:1 f: 81 lines", f"{tmp_path / 'b.py'}: 501 lines"]


# ---------------------------------------------------------------- declared protocols
# hasattr(x, ...) or getattr(x, name, default) on a callback, a source, a kernel or a layer: probing.
PROBES = re.compile(r"\bhasattr\((cb|callback|source|self\.source|base|self\.base|kernel|self\.kernel|layer|light)\b"
                    r"|\bgetattr\((cb|callback|source|self\.source|base|self\.base|kernel|self\.kernel|layer|light),"
                    r"[^,()]+,")


def test_the_loop_asks_callbacks_sources_and_layers_only_what_they_declare():
    """Everything the loop asks of a callback is on Callback, of a source on Source: no probing."""
    found = [f"{p.relative_to(SRC)}:{n}: {line.strip()}" for p in SRC.rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if PROBES.search(line)]
    assert found == []


def test_no_module_reaches_into_another_class_for_the_generators_or_chunks():
    private = re.compile(r"\w\._rng\b|\._chunk_index\b|\.gram_sums\b")
    found = [f"{p.relative_to(SRC)}:{n}" for p in SRC.rglob("*.py") if p.name != "layers.py"
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if private.search(line) and "self._rng" not in line]
    assert found == []
