"""The cloud's layout holds: the import-linter contracts in .importlinter are kept, no module is in an import
cycle (function-local imports included: grimp reads them too), and no function-local import hides one."""

import ast
import os
import pathlib
import subprocess
import sys

import grimp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
CLOUD = REPO / "cloud"


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_import_contracts_hold():
    linter = pathlib.Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(linter), "--config", str(REPO / ".importlinter")], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_of_the_cloud_is_in_an_import_cycle():
    assert cycles(grimp.build_graph("cloud")) == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check itself can fail: two modules that import each other (one of them inside a function)."""
    pkg = tmp_path / "loop_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from loop_pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from loop_pkg import a\n")
    (pkg / "c.py").write_text("from loop_pkg import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cycles(grimp.build_graph("loop_pkg", cache_dir=None)) == [["loop_pkg.a", "loop_pkg.b"]]


def local_imports(path: pathlib.Path) -> list[str]:
    """Imports of the project's own packages inside a function, without a comment on the line saying why."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = []
    for fn in ast.walk(ast.parse(text)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            ours = [n for n in names if n.split(".")[0] in ("cloud", "controller", "hw", "protocol")]
            if ours and "#" not in lines[node.end_lineno - 1]:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {', '.join(ours)}")
    return found


@pytest.mark.parametrize("package", ["cloud", "controller", "hw", "protocol"])
def test_no_function_local_import_without_a_reason(package):
    found = [hit for path in sorted((REPO / package).rglob("*.py")) if "migrations" not in path.parts
             for hit in local_imports(path)]
    assert not found, "a function-local import hides a cycle; import at the top, or say why on the line:\n" + \
        "\n".join(found)


def test_modules_stay_readable():
    """Modules of 100 to 500 lines are the aim; none may pass 800 (split it)."""
    long = {str(p.relative_to(REPO)): n for package in ("cloud", "controller", "hw", "protocol")
            for p in (REPO / package).rglob("*.py") if (n := len(p.read_text(encoding="utf-8").splitlines())) > 800}
    assert not long, long
