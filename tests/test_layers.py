"""The layers hold: every import of the project's packages, read with ``ast`` (nothing is
imported), against the layer table below.

* (a) no import runs up the layers (at module level, under ``if TYPE_CHECKING:``, inside a
  function, relative or absolute: each counts);
* (b) no project module is imported inside a function, the way an import cycle is dodged, except
  in the files of ``LAZY_IMPORTS_ALLOWED``, each for its start-up reason, which the test checks:
  every module such a file imports lazily must itself load one of ``HEAVY_LIBRARIES``. Third-party
  libraries may be imported lazily anywhere;
* (c) no import cycle between project modules (every import counts here too, so that a lazy
  import the allow-list lets through still cannot close a cycle);
* (d) no module imports a private name (``_name``) of another project module, nor reads one off
  an imported module (``run._instance()``).

``check`` takes the source texts and returns every violation; ``test_the_layers_hold`` runs it on
the real tree, and the tests after it plant a violation of each kind and expect it found.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dmg_ml", "dmg_resources", "dmg_assets", "warehouse")
#: Bottom to top; a module may import its own layer and those below it. ``dmg_ml`` stands for
#: the modules directly under it (``dmg_ml/__init__.py``, ``dmg_ml/defaults.py``): the bottom.
LAYERS = (
    "dmg_ml",
    "dmg_ml.data",
    "dmg_ml.synthetic",
    "dmg_ml.models",
    "dmg_ml.training",
    "dmg_ml.evaluation",
    "dmg_ml.prediction",
    "dmg_resources",
    "warehouse",
    "dmg_assets",
)
#: The files that may import project modules inside functions, each with why. The one reason
#: that counts is start-up speed: the module imported late loads a heavy library that the
#: importing module's other callers should not pay for. Never to dodge an import cycle.
LAZY_IMPORTS_ALLOWED: dict[str, str] = {
    "dmg_assets/cli.py": (
        "the `dmg` entry point imports nothing heavy, so that `dmg SUBCOMMAND --help` and a "
        "refused option answer at once; each subcommand's module (Dagster, torch, DuckDB) is "
        "imported by the function that runs it"
    ),
    "dmg_ml/training/stacked.py": (
        "stacked_forward imports dmg_ml.training.fused, which loads Triton, only when "
        "kernels='fused' is asked for: the CPU paths do not pay for Triton's import (and "
        "CPU-only torch builds have no Triton)"
    ),
    "dmg_ml/training/batched.py": (
        "the trainer imports dmg_ml.training.fused, which loads Triton, only for a group that "
        "runs the fused kernels: CPU training does not pay for Triton's import (and CPU-only "
        "torch builds have no Triton)"
    ),
}
#: What makes a lazy import worth it: a module whose module-level imports load one of these.
HEAVY_LIBRARIES = frozenset({"dagster", "torch", "triton", "matplotlib", "duckdb"})


@dataclass(frozen=True)
class Import:
    """One module an import statement loads (one per name of a ``from`` import that is a
    module of its own)."""

    path: str  # the importing file, relative to the root
    line: int
    source: str  # the statement as written
    target: str  # the project module it loads, as far as the tree has it
    dotted: str  # what it names, e.g. ``dmg_ml.evaluation.metrics.r2`` (for its layer)
    lazy: bool  # inside a function body
    type_only: bool  # under ``if TYPE_CHECKING:``


def module_name(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_project(dotted: str) -> bool:
    return dotted.split(".")[0] in PACKAGES


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def layer(module: str) -> str | None:
    """The layer of ``module``: the longest entry of ``LAYERS`` it sits in."""
    found = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(found, key=len, default=None)


class _Collector(ast.NodeVisitor):
    """Every import statement of a file with where it sits, and every ``name.attr`` read."""

    def __init__(self) -> None:
        self.imports: list[tuple[ast.Import | ast.ImportFrom, bool, bool]] = []
        self.attributes: list[ast.Attribute] = []
        self._functions = 0
        self._type_checking = 0

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append((node, self._functions > 0, self._type_checking > 0))

    visit_ImportFrom = visit_Import

    def _function(self, node: ast.AST) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.attr if isinstance(test, ast.Attribute) else getattr(test, "id", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self.visit(test)
        self._type_checking += 1
        for child in node.body:
            self.visit(child)
        self._type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self.attributes.append(node)
        self.generic_visit(node)


@dataclass
class _File:
    path: str
    module: str
    is_package: bool
    tree: ast.Module


def _resolve(dotted: str, modules: Mapping[str, _File]) -> str:
    """The longest prefix of ``dotted`` that is a module of the tree (the package otherwise)."""
    while dotted not in modules and "." in dotted:
        dotted = dotted.rsplit(".", 1)[0]
    return dotted


def _base(file: _File, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from ... import`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = file.module if file.is_package else file.module.rsplit(".", 1)[0]
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _imports(
    file: _File, collector: _Collector, modules: Mapping[str, _File]
) -> Iterator[tuple[Import | None, str, ast.Import | ast.ImportFrom, bool, bool]]:
    """Every name an import statement brings in: the project ``Import`` it is (None for a
    third-party one), what it names, the statement, lazy, type-only."""
    for node, lazy, type_only in collector.imports:
        source = ast.unparse(node)
        if isinstance(node, ast.Import):
            named = [alias.name for alias in node.names]
        else:
            base = _base(file, node)
            named = [base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names]
        for dotted in named:
            found = None
            if is_project(dotted):
                target = _resolve(dotted, modules)
                found = Import(file.path, node.lineno, source, target, dotted, lazy, type_only)
            yield found, dotted, node, lazy, type_only


def _cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def check(
    sources: Mapping[str, str], allowed: Mapping[str, str] = LAZY_IMPORTS_ALLOWED
) -> list[str]:
    """Every violation of (a)-(d) in ``sources`` (path relative to the root → source text), one
    line each, ``path:line: what``; empty if the layers hold."""
    files: dict[str, _File] = {}
    for path, text in sorted(sources.items()):
        module = module_name(path)
        files[module] = _File(path, module, path.endswith("__init__.py"), ast.parse(text, path))
    upward, lazy, cycles, private, unplaced = [], [], [], [], []
    graph: dict[str, set[str]] = {m: set() for m in files}
    edges: dict[tuple[str, str], list[Import]] = {}
    eager: dict[str, set[str]] = {m: set() for m in files}  # module-level project imports
    libraries: dict[str, set[str]] = {m: set() for m in files}  # module-level third-party ones
    lazily: dict[str, list[Import]] = {}
    for module, file in files.items():
        own = layer(module)
        if own is None or (own == "dmg_ml" and (file.is_package and module != "dmg_ml"
                                                or module.count(".") > 1)):  # fmt: skip
            unplaced.append(f"{file.path}: {module} is in no layer of LAYERS")
            own = None
        collector = _Collector()
        collector.visit(file.tree)
        bound: dict[str, str] = {}  # local name → the project module it is bound to
        taken: dict[tuple[str, str], list[str]] = {}  # (statement, module) → its private names
        for found, dotted, node, is_lazy, type_only in _imports(file, collector, files):
            if found is None:
                if not is_lazy and not type_only:
                    libraries[module].add(dotted.split(".")[0])
                continue
            where = f"{file.path}:{found.line}: `{found.source}`"
            if found.target != module:
                graph[module].add(found.target)
                edges.setdefault((module, found.target), []).append(found)
                if not is_lazy and not type_only:
                    eager[module].add(found.target)
            theirs = layer(found.dotted)
            if own is not None and theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                upward.append(f"{where} imports {found.target} ({theirs} is above {own})")
            if is_lazy:
                if file.path in allowed:
                    lazily.setdefault(file.path, []).append(found)
                else:
                    lazy.append(f"{where} imports {found.target} inside a function")
            if isinstance(node, ast.ImportFrom):
                name = found.dotted.rsplit(".", 1)[1]
                if is_private(name) and found.target != found.dotted:
                    taken.setdefault((where, found.target), []).append(name)
                for alias in node.names:
                    if f"{_base(file, node)}.{alias.name}" == found.dotted and (
                        found.dotted in files
                    ):
                        bound[alias.asname or alias.name] = found.dotted
            else:
                alias = next(a for a in node.names if a.name == found.dotted)
                if alias.asname:
                    bound[alias.asname] = found.target
                else:
                    bound[found.dotted.split(".")[0]] = found.dotted.split(".")[0]
        for (where, target), names in taken.items():
            private.append(f"{where} takes the private {', '.join(names)} of {target}")
        for node in collector.attributes:
            owner = _dotted(node.value, bound)
            if owner is not None and owner in files and is_private(node.attr):
                name = ast.unparse(node)
                private.append(f"{file.path}:{node.lineno}: `{name}` reads the private "
                               f"{node.attr} of {owner}")  # fmt: skip
    for path, reason in sorted(allowed.items()):
        module = module_name(path)
        if module not in files:
            continue
        if not reason.strip():
            lazy.append(f"{path}: in LAZY_IMPORTS_ALLOWED without a reason")
        if not lazily.get(path):
            lazy.append(f"{path}: in LAZY_IMPORTS_ALLOWED but imports no project module lazily")
        for found in lazily.get(path, []):
            if not HEAVY_LIBRARIES & _loads(found.target, eager, libraries):
                lazy.append(f"{path}:{found.line}: `{found.source}` imports {found.target} "
                            f"inside a function, though it loads none of "
                            f"{sorted(HEAVY_LIBRARIES)}: no start-up reason")  # fmt: skip
    for component in _cycles(graph):
        members = set(component)
        how = {  # one line per statement, in file order
            f"    {found.path}:{found.line}: `{found.source}`"
            + (" (in a function)" if found.lazy else "")
            + (" (TYPE_CHECKING)" if found.type_only else ""): (found.path, found.line)
            for (a, b), imports in edges.items()
            if a in members and b in members
            for found in imports
        }
        lines = sorted(how, key=how.__getitem__)
        cycles.append("cycle between " + ", ".join(component) + ":\n" + "\n".join(lines))
    sections = [
        ("modules in no layer", unplaced),
        ("(a) imports up the layers", upward),
        ("(b) project modules imported inside functions", lazy),
        ("(c) import cycles", cycles),
        ("(d) private names taken from other modules", private),
    ]
    # A statement naming one module twice (``from m import a, b``) is one violation.
    return list(dict.fromkeys(f"{title}: {item}" for title, items in sections for item in items))


def _dotted(node: ast.expr, bound: Mapping[str, str]) -> str | None:
    """The module an expression such as ``run`` or ``dmg_ml.training.stacked`` names, by the
    file's imports (None if it is not one)."""
    if isinstance(node, ast.Name):
        return bound.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _dotted(node.value, bound)
        return None if owner is None else f"{owner}.{node.attr}"
    return None


def _loads(module: str, eager: Mapping[str, set[str]], libraries: Mapping[str, set[str]]) -> set:
    """The third-party libraries importing ``module`` loads (its module-level imports, and those
    of every project module they load in turn)."""
    seen, todo, found = set(), [module], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        found |= libraries.get(current, set())
        todo.extend(eager.get(current, ()))
        parts = current.split(".")  # importing a module runs its packages' __init__ first
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return found


def project_sources(root: Path = ROOT) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): path.read_text(encoding="utf-8")
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def _report(violations: list[str]) -> str:
    return f"{len(violations)} layering violations:\n" + "\n".join(violations)


def test_the_layers_hold() -> None:
    violations = check(project_sources())
    assert not violations, _report(violations)


def test_the_table_and_the_allow_list_name_what_is_there() -> None:
    sources = project_sources()
    assert set(LAZY_IMPORTS_ALLOWED) <= set(sources)
    packages = {module_name(p) for p in sources if p.endswith("__init__.py")}
    assert set(LAYERS) <= packages


# The checker itself, on planted trees: each kind of violation is found, with file and line.


def test_an_upward_import_is_found_wherever_it_is_written() -> None:
    lower = "dmg_ml/models/cnn.py"
    for line, statement in [
        (1, "from dmg_ml.training.batched import fit"),
        (1, "import dmg_ml.training.batched"),
        (1, "from ..training import batched"),
        (4, "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
            "    from dmg_ml.training.batched import fit"),
        (2, "def f():\n    from dmg_ml.training.batched import fit\n    return fit"),
    ]:  # fmt: skip
        sources = {
            "dmg_ml/__init__.py": "",
            "dmg_ml/models/__init__.py": "",
            lower: statement + "\n",
            "dmg_ml/training/__init__.py": "",
            "dmg_ml/training/batched.py": "from dmg_ml.models.cnn import Net\n",
        }
        found = [v for v in check(sources, allowed={}) if v.startswith("(a)")]
        assert len(found) == 1, (statement, found)
        assert f"{lower}:{line}:" in found[0] and "dmg_ml.training.batched" in found[0]
        assert "dmg_ml.training is above dmg_ml.models" in found[0]


def test_imports_down_and_across_one_layer_pass() -> None:
    sources = {
        "dmg_ml/__init__.py": "",
        "dmg_ml/defaults.py": "",
        "dmg_ml/data/__init__.py": "from dmg_ml import defaults\n",
        "dmg_ml/models/__init__.py": "",
        "dmg_ml/models/cnn.py": "from dmg_ml.data import windows\nfrom . import base\n",
        "dmg_ml/models/base.py": "import dmg_ml.defaults\nimport numpy\n",
        "dmg_ml/data/windows.py": "import torch\n\ndef f():\n    import matplotlib\n",
    }
    assert check(sources, allowed={}) == []


def test_a_bottom_module_importing_a_layer_is_upward_and_an_unknown_package_is_unplaced() -> None:
    sources = {
        "dmg_ml/__init__.py": "from dmg_ml.training.runtime import configure\n",
        "dmg_ml/training/__init__.py": "",
        "dmg_ml/training/runtime.py": "",
        "dmg_ml/extras/__init__.py": "",
    }
    found = check(sources, allowed={})
    assert any(v.startswith("(a)") and "dmg_ml/__init__.py:1:" in v for v in found), found
    assert any("dmg_ml/extras/__init__.py: dmg_ml.extras is in no layer" in v for v in found)


def test_a_project_import_inside_a_function_is_found_unless_allowed_for_speed() -> None:
    sources = {
        "dmg_ml/__init__.py": "",
        "dmg_ml/models/__init__.py": "",
        "dmg_ml/models/best.py": (
            "import numpy\n\n\nclass Best:\n    def fit(self):\n"
            "        from dmg_ml.models.registry import build\n        import torch\n"
        ),
        "dmg_ml/models/registry.py": "from dmg_ml.models.best import Best\n",
        "dmg_ml/models/heavy.py": "import dagster\n",
        "dmg_ml/models/cli.py": "def run():\n    from dmg_ml.models import heavy\n",
    }
    found = [v for v in check(sources, allowed={}) if v.startswith("(b)")]
    assert len(found) == 2, found
    assert "dmg_ml/models/best.py:6: `from dmg_ml.models.registry import build`" in found[0]
    allowed = {"dmg_ml/models/cli.py": "start-up speed"}
    found = [v for v in check(sources, allowed=allowed) if v.startswith("(b)")]
    assert len(found) == 1 and "dmg_ml/models/best.py:6:" in found[0], found
    # An allowed file gains nothing from importing a light module late, and an entry outlives
    # no lazy import.
    sources["dmg_ml/models/heavy.py"] = "import json\n"
    found = [v for v in check(sources, allowed=allowed) if v.startswith("(b)")]
    assert any("dmg_ml/models/cli.py:2:" in v and "no start-up reason" in v for v in found)
    sources["dmg_ml/models/cli.py"] = "from dmg_ml.models import heavy\n"
    found = [v for v in check(sources, allowed=allowed) if v.startswith("(b)")]
    assert any("cli.py: in LAZY_IMPORTS_ALLOWED but imports no project module lazily" in v
               for v in found)  # fmt: skip


def test_an_import_cycle_is_found_with_its_members_and_imports() -> None:
    sources = {
        "dmg_ml/__init__.py": "",
        "dmg_ml/training/__init__.py": "",
        "dmg_ml/training/fused.py": "from dmg_ml.training.stacked import dense\n",
        "dmg_ml/training/stacked.py": (
            "import torch\n\n\ndef forward():\n    from dmg_ml.training import fused\n"
        ),
        "dmg_ml/training/a.py": "from . import b\n",
        "dmg_ml/training/b.py": "import dmg_ml.training.c\n",
        "dmg_ml/training/c.py": "from dmg_ml.training.a import x\n",
        "dmg_ml/training/d.py": "from dmg_ml.training import a, fused\n",
    }
    # The lazy side is allowed here, and still closes the cycle.
    allowed = {"dmg_ml/training/stacked.py": "start-up speed"}
    found = [v for v in check(sources, allowed=allowed) if v.startswith("(c)")]
    assert len(found) == 2, found
    assert "cycle between dmg_ml.training.a, dmg_ml.training.b, dmg_ml.training.c:" in found[0]
    assert "dmg_ml/training/c.py:1: `from dmg_ml.training.a import x`" in found[0]
    assert "cycle between dmg_ml.training.fused, dmg_ml.training.stacked:" in found[1]
    assert (
        "dmg_ml/training/stacked.py:5: `from dmg_ml.training import fused` (in a function)"
        in (found[1])
    )


def test_a_private_name_of_another_module_is_found_imported_or_read() -> None:
    sources = {
        "dmg_assets/__init__.py": "",
        "dmg_assets/run.py": "def _instance():\n    pass\n\n\ndef __getattr__(name):\n    pass\n",
        "dmg_assets/predict.py": "from dmg_assets.run import _instance, __getattr__\n",
        "dmg_assets/cli.py": (
            "import dmg_assets.run\nfrom dmg_assets import run as r\n\n"
            "r._instance()\ndmg_assets.run._instance()\nr.public()\n"
        ),
        "dmg_assets/own.py": "import json\n\n\ndef _mine():\n    json._default_decoder\n",
    }
    found = [v for v in check(sources, allowed={}) if v.startswith("(d)")]
    assert found == [
        "(d) private names taken from other modules: dmg_assets/cli.py:4: `r._instance` reads "
        "the private _instance of dmg_assets.run",
        "(d) private names taken from other modules: dmg_assets/cli.py:5: "
        "`dmg_assets.run._instance` reads the private _instance of dmg_assets.run",
        "(d) private names taken from other modules: dmg_assets/predict.py:1: "
        "`from dmg_assets.run import _instance, __getattr__` takes the private _instance of "
        "dmg_assets.run",
    ]


def test_every_violation_is_in_the_one_message() -> None:
    sources = {
        "dmg_ml/__init__.py": "",
        "dmg_ml/data/__init__.py": "",
        "dmg_ml/data/a.py": "from dmg_ml.models import b\n",
        "dmg_ml/data/c.py": "from dmg_assets.cli import main\n",
        "dmg_ml/models/__init__.py": "",
        "dmg_ml/models/b.py": "def f():\n    from dmg_ml.data import a\n",
        "dmg_assets/__init__.py": "",
        "dmg_assets/cli.py": "",
    }
    message = _report(check(sources, allowed={}))
    for expected in ("dmg_ml/data/a.py:1:", "dmg_ml/data/c.py:1:", "dmg_ml/models/b.py:2:",
                     "cycle between dmg_ml.data.a, dmg_ml.models.b"):  # fmt: skip
        assert expected in message, message
