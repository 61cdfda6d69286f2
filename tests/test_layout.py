"""The layout rules of the code, read from its source (no import of what is checked):

- no import circle inside reid_tf/ (every import counts, at module level or inside a function);
- a recipe's name is compared only inside reid_tf/pairs/ (the recipe objects); elsewhere code asks
  the recipe;
- layer names are read only in reid_tf/model.py: outside it no `get_layer` / `find_layer` call and
  no string operation (str methods, `in`, `re`) on a `.name` or `.path`;
- no "session N" / "issue N" in code (history belongs to the commit log and docs/RESULTS.md);
- no module in reid_tf/ over MAX_LINES lines unless its docstring names the one concept it holds in
  a line "One concept: ..." (a long file is then long for a reason a reader is told, not by accretion).

Each rule has an allow-list of today's exceptions in files that other work is changing; the
exceptions are to be fixed there and their entries deleted — a test fails when an entry no longer
matches anything, so the lists only shrink. Each rule's checker is also run on a planted violation.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from reid_tf import config

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "reid_tf"
CODE_DIRS = ("reid_tf", "data_tools", "experiments", "benchmarks")

# Import circles of today, each the set of modules of one strongly connected component. The
# list only shrinks, as the circles are cut.
KNOWN_CIRCLES: list[set[str]] = []  # none left; a new one is cut, not listed
# (file, source line) where a recipe's name is still compared outside reid_tf/pairs/:
KNOWN_RECIPE_BRANCHES: list[tuple[str, str]] = []  # none left; a recipe's property goes to the recipe
# (file, source line) of string operations on a `.name` that is no layer's, weight's or op's:
NOT_LAYER_NAMES = [
    ("experiments/common.py", 'if info.name.startswith(f"table{table}_"):'),  # a module's name
    ("reid_tf/provenance.py", 'argv = ["python", "-m", spec.name.removesuffix(".__main__"), *argv[1:]]'),  # a module's name
    ("benchmarks/profile_train.py", 'if not plane.name.startswith("/host:"):'),  # a profiler plane
]
# (file, source line) of string operations on a layer's or a tensor's name outside model.py:
KNOWN_NAME_PARSING: list[tuple[str, str]] = []  # none left
# (file, source line) with a session or issue number:
KNOWN_HISTORY: list[tuple[str, str]] = []  # none left; why goes in the code, when in the logbook


def _sources(*dirs: str) -> dict[str, str]:
    """relative path -> text of every .py file under these folders of the repository."""
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8")
            for d in dirs for p in sorted((ROOT / d).rglob("*.py"))}


def _module_name(path: str) -> str:
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _line(source: str, node: ast.AST) -> str:
    return source.splitlines()[node.lineno - 1].strip()


# ------------------------------------------------------------------------------------ import circles
def import_graph(sources: dict[str, str], package: str = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of `package` it imports anywhere in its file (the module itself when a
    name is imported from a package's __init__, the submodule when a submodule is)."""
    modules = {_module_name(path): path for path in sources}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(sources[path])):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, `level` folders up
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan), each a set."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def package_circles():
    return circles(import_graph(_sources(PACKAGE)))


def test_no_import_circle_but_the_known_ones(package_circles):
    new = [c for c in package_circles if c not in KNOWN_CIRCLES]
    assert not new, f"import circles inside {PACKAGE}/: {[sorted(c) for c in new]}"


def test_every_known_circle_still_exists(package_circles):
    gone = [c for c in KNOWN_CIRCLES if c not in package_circles]
    assert not gone, f"cut: delete {[sorted(c) for c in gone]} from KNOWN_CIRCLES"


def test_import_graph_sees_every_kind_of_import():
    """A planted circle through a function-level `from reid_tf import b`, and one through a relative
    import, are found; a one-way import and a name imported from a package are not circles."""
    sources = {
        "reid_tf/__init__.py": "",
        "reid_tf/a.py": "import reid_tf.b\n",
        "reid_tf/b.py": "def f():\n    from reid_tf import a\n",
        "reid_tf/c.py": "from reid_tf.pkg import x\n",
        "reid_tf/pkg/__init__.py": "from .d import x\n",
        "reid_tf/pkg/d.py": "from . import e\nx = 1\n",
        "reid_tf/pkg/e.py": "from reid_tf.pkg.d import x\n",
    }
    graph = import_graph(sources)
    assert graph["reid_tf.c"] == {"reid_tf.pkg"} and graph["reid_tf.pkg"] == {"reid_tf.pkg.d"}
    assert sorted(map(sorted, circles(graph))) == [["reid_tf.a", "reid_tf.b"], ["reid_tf.pkg.d", "reid_tf.pkg.e"]]


# ------------------------------------------------------------------------------------ rule checkers
def _found(rule, sources: dict[str, str]) -> list[tuple[str, str]]:
    return [hit for path, text in sources.items() for hit in rule(path, text)]


def recipe_branches(path: str, source: str) -> list[tuple[str, str]]:
    """(path, line) of every comparison (==, !=, in, not in, is, is not) or match-case with a recipe's
    name (config.RECIPES) as an operand."""
    names = set(config.RECIPES)

    def is_recipe_name(node):
        return isinstance(node, ast.Constant) and node.value in names or (
            isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(map(is_recipe_name, node.elts)))

    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(map(is_recipe_name, [node.left, *node.comparators])):
            hits.append((path, _line(source, node)))
        elif isinstance(node, ast.MatchValue) and is_recipe_name(node.value):
            hits.append((path, _line(source, node)))
    return hits


STR_METHODS = {"startswith", "endswith", "removeprefix", "removesuffix", "split", "rsplit", "partition",
               "rpartition", "find", "rfind", "index", "rindex", "count", "replace"}


def name_parsing(path: str, source: str) -> list[tuple[str, str]]:
    """(path, line) of every `get_layer(...)` / `find_layer(...)` call and every string operation on
    a `.name` or `.path` attribute: a str method called on it, `in` / `not in` with it as an operand,
    or a `re` function given it."""
    def is_name(node):  # x.name, x.path, but not the module os.path
        return isinstance(node, ast.Attribute) and node.attr in ("name", "path") and not (
            isinstance(node.value, ast.Name) and node.value.id == "os")

    hits = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("get_layer", "find_layer"):
                hits.append((path, _line(source, node)))
            elif isinstance(func, ast.Attribute) and func.attr in STR_METHODS and is_name(func.value):
                hits.append((path, _line(source, node)))
            elif (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "re"
                  and any(map(is_name, node.args))):
                hits.append((path, _line(source, node)))
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(map(is_name, [node.left, *node.comparators])):
            hits.append((path, _line(source, node)))
    return hits


HISTORY = re.compile(r"\b(session|issue)s?\s+\d", re.IGNORECASE)


def history_numbers(path: str, source: str) -> list[tuple[str, str]]:
    """(path, line) of every line that cites a session or an issue by number."""
    return [(path, line.strip()) for line in source.splitlines() if HISTORY.search(line)]


def _not_in(hits, allowed) -> list:
    return sorted(set(hits) - set(allowed))


def _stale(hits, allowed) -> list:
    return [entry for entry in allowed if entry not in set(hits)]


@pytest.fixture(scope="module")
def code():
    return _sources(*CODE_DIRS)


def test_recipe_names_are_compared_only_in_the_pairs_package(code):
    outside = {p: t for p, t in code.items() if not p.startswith("reid_tf/pairs/")}
    hits = _found(recipe_branches, outside)
    assert not _not_in(hits, KNOWN_RECIPE_BRANCHES), "ask reid_tf.pairs.get_recipe(name) instead"
    assert not _stale(hits, KNOWN_RECIPE_BRANCHES), "fixed: delete from KNOWN_RECIPE_BRANCHES"


def test_layer_names_are_read_only_in_model_py(code):
    outside = {p: t for p, t in code.items() if p != "reid_tf/model.py"}
    hits = _found(name_parsing, outside)
    allowed = NOT_LAYER_NAMES + KNOWN_NAME_PARSING
    assert not _not_in(hits, allowed), "use reid_tf.model.structure / blocks / op_blocks"
    assert not _stale(hits, allowed), "fixed: delete from KNOWN_NAME_PARSING / NOT_LAYER_NAMES"


def test_no_session_or_issue_numbers_in_code(code):
    tests = {p: s for p, s in _sources("tests").items() if p != "tests/test_layout.py"}  # its plants
    hits = _found(history_numbers, {**code, **tests})
    assert not _not_in(hits, KNOWN_HISTORY), "say why, not when: history goes to commits and RESULTS"
    assert not _stale(hits, KNOWN_HISTORY), "fixed: delete from KNOWN_HISTORY"


MAX_LINES = 400
ONE_CONCEPT = re.compile(r"^One concept: \S", re.MULTILINE)


def long_modules(path: str, source: str, max_lines: int = MAX_LINES) -> list[tuple[str, str]]:
    """(path, line count) of a module longer than max_lines whose docstring has no "One concept:" line."""
    lines = source.count("\n") + (not source.endswith("\n"))
    if lines <= max_lines or ONE_CONCEPT.search(ast.get_docstring(ast.parse(source)) or ""):
        return []
    return [(path, f"{lines} lines")]


def test_no_long_module_without_its_one_concept(code):
    hits = _found(long_modules, {p: t for p, t in code.items() if p.startswith(f"{PACKAGE}/")})
    assert not hits, (f"split these modules (or, if each is one concept, say which in a docstring line "
                      f"'One concept: ...'): {hits}")


def test_the_long_module_rule_reads_line_counts_and_docstrings():
    body = "x = 1\n" * 5
    assert long_modules("m.py", '"""A module."""\n' + body, max_lines=5) == [("m.py", "6 lines")]
    assert not long_modules("m.py", '"""A module.\n\nOne concept: the run loop."""\n' + body, max_lines=5)
    assert not long_modules("m.py", body, max_lines=5)
    assert long_modules("m.py", "# One concept: a comment is not the docstring\n" + body, max_lines=5)


@pytest.mark.parametrize("rule, planted, clean", [
    (recipe_branches, 'if opts.recipe == "shifted_copies":\n    pass\n', "recipe = get_recipe(name)\n"),
    (recipe_branches, 'k = 1 if recipe in ("cross_camera", "x") else 2\n', 'table = {"shifted_copies": 1}\n'),
    (recipe_branches, 'match recipe:\n    case "shifted_copies":\n        pass\n', "match k:\n    case 1:\n        pass\n"),
    (name_parsing, 'if layer.name.startswith("csn_"):\n    pass\n', "layer = structure(model).trunk[0]\n"),
    (name_parsing, 'n = sum(1 for w in model.weights if "/rank_conv2/" in w.path)\n', "n = model.name\n"),
    (name_parsing, 'm = re.fullmatch(r"csn_\\d", layer.name)\n', 'm = re.fullmatch(r"\\d", text)\n'),
    (name_parsing, 'head = model.get_layer("pair_head")\n', "head = pair_head_of(model)\n"),
    (name_parsing, 'stem = tensor.name.split(":")[0]\n', "folder, name = os.path.split(path)\n"),
    (history_numbers, "# K became 1 in session 4\n", "# K = 1 learned more per pair\n"),
    (history_numbers, '"""Export (Issue 12)."""\n', '"""Export for serving."""\n'),
])
def test_each_rule_finds_a_planted_violation(rule, planted, clean):
    assert rule("x.py", planted) and not rule("x.py", clean)
