"""The test tiers tell the truth: `pytest -m "not integration"` starts no process and runs no `xtune train`.

A static scan of tests/test_*.py (nothing is imported or run): every test that starts a subprocess (uses
`subprocess`, `Popen` or `sys.executable`) or calls `main(["train", ...])`, itself or through a helper
function or fixture of its module (or a conftest.py fixture), must carry an `integration`, `slow` or `gpu`
mark, on the test or as the module's `pytestmark` (conftest.py counts slow and gpu tests as integration
too). A train call whose exit code is asserted to be 2 is a refusal in preflight, before any model loads,
and may stay in the unit tier. What this cannot see (a test that is merely slow, a CLI command that loads a
model) is marked by hand; see the markers in pyproject.toml.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
TIER_MARKS = {"integration", "slow", "gpu"}


def _marks(node: ast.AST) -> set[str]:
    """The names X of every `pytest.mark.X` / `mark.X` reference inside `node`."""
    return {n.attr for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"}


def _is_fixture(fn: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in fn.decorator_list)


def _is_train_call(node: ast.AST) -> bool:
    """`main(["train", ...])` (or `something.main(["train", ...])`)."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.List):
        return False
    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
    first = node.args[0].elts[0] if node.args[0].elts else None
    return name == "main" and isinstance(first, ast.Constant) and first.value == "train"


def _is_two(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value == 2


def _refusals(fn: ast.FunctionDef) -> set[int]:
    """ids of the train calls whose exit code is asserted to be 2: refused in preflight, before any model
    loads (`assert main(["train", ...]) == 2`, or `code = main([...])` ... `code == 2`): unit tests."""
    refused, names = set(), {}
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and _is_train_call(node.value) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = node.value
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq) \
                and _is_two(node.comparators[0]):
            if _is_train_call(node.left):
                refused.add(id(node.left))
            elif isinstance(node.left, ast.Name) and node.left.id in names:
                refused.add(id(names[node.left.id]))
    return refused


def _starts_work(fn: ast.FunctionDef) -> bool:
    """Whether `fn` itself starts a process, or runs `main(["train", ...])` that is not a refusal."""
    refused = _refusals(fn)
    for node in ast.walk(fn):
        if isinstance(node, ast.Import) and any(a.name == "subprocess" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "subprocess":
            return True
        if isinstance(node, ast.Name) and node.id in ("subprocess", "Popen"):
            return True
        if isinstance(node, ast.Attribute) and node.attr == "executable" \
                and getattr(node.value, "id", "") == "sys":
            return True  # a command line for another Python process, whoever starts it
        if _is_train_call(node) and id(node) not in refused:
            return True
    return False


def _calls_and_params(fn: ast.FunctionDef) -> set[str]:
    """Names `fn` calls by their plain name, and its parameters (the fixtures it asks for)."""
    called = {n.func.id for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    return called | {a.arg for a in fn.args.args + fn.args.kwonlyargs}


def _functions(path: Path) -> tuple[ast.Module, dict[str, ast.FunctionDef]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return tree, {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _heavy(functions: dict[str, ast.FunctionDef], seeds: set[str]) -> set[str]:
    """Functions that start work, themselves or through the module's functions and fixtures they use."""
    heavy = set(seeds) | {name for name, fn in functions.items() if _starts_work(fn)}
    changed = True
    while changed:
        changed = False
        for name, fn in functions.items():
            if name not in heavy and _calls_and_params(fn) & heavy:
                heavy.add(name)
                changed = True
    return heavy


def unmarked_heavy_tests() -> list[str]:
    _, conftest = _functions(TESTS / "conftest.py")
    heavy_fixtures = {n for n in _heavy(conftest, set()) if _is_fixture(conftest[n])}
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree, functions = _functions(path)
        module_marks = set().union(*(_marks(node.value) for node in tree.body if isinstance(node, ast.Assign)
                                     and any(getattr(t, "id", "") == "pytestmark" for t in node.targets)))
        if module_marks & TIER_MARKS:
            continue
        local = {name for name in heavy_fixtures if name not in functions}
        for name in sorted(_heavy(functions, local)):
            fn = functions.get(name)
            if fn is None or not name.startswith("test_"):
                continue
            if not (set().union(*map(_marks, fn.decorator_list)) & TIER_MARKS):
                found.append(f"{path.name}::{name}")
    return found


def test_every_test_that_starts_a_process_or_trains_is_marked_integration():
    found = unmarked_heavy_tests()
    assert not found, ("these tests start a subprocess or run `xtune train` but are in the unit tier; "
                       "mark them @pytest.mark.integration (or the whole module: "
                       "pytestmark = pytest.mark.integration):\n" + "\n".join(found))


def test_the_scan_sees_helpers_fixtures_and_marks():
    source = '''
import subprocess
import pytest
from xtune.cli.main import main

@pytest.fixture
def run():
    return main(["train", "r"])

def helper():
    return subprocess.run(["true"])

def python(): return [sys.executable, "-c", "pass"]

def test_fixture(run): pass
def test_helper(): helper()
def test_fast(): assert main(["list-cfg"]) == 0
def test_python(): tools.time_command(python())
def test_refused(): assert main(["train", "r", "--cfg-options", "lr=x"]) == 2
def test_refused_later():
    code = main(["train", "r"])
    assert code == 2
def test_trains(): assert main(["train", "r"]) == 0
@pytest.mark.integration
def test_marked(run): pass
'''
    tree = ast.parse(source)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    heavy = _heavy(functions, set())
    assert {"run", "helper", "python", "test_fixture", "test_helper", "test_python", "test_marked"} <= heavy
    assert "test_trains" in heavy
    assert not {"test_fast", "test_refused", "test_refused_later"} & heavy
    assert _marks(functions["test_marked"].decorator_list[0]) == {"integration"}
