"""The house rules, read from the source: one package per stage family, dependencies pointing
downwards only, no import cycle, small modules and functions, rule files mirroring packages, and
the command line (``mripipe.cli``) a layer above every stage package, never imported by one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mripipe.core.codegraph import ROOT, all_modules, closure, direct_imports, module_file

REPO = ROOT.parents[1]
PACKAGES = ("core", "data", "preprocess", "learn", "infer", "evaluate", "track")
# package -> the packages it may import (besides itself). evaluate reads the files of learn and
# infer, never their code; track is below learn and evaluate.
ALLOWED = {
    "core": set(),
    "data": {"core"},
    "track": {"core"},
    "preprocess": {"core", "data"},
    "learn": {"core", "data", "track"},
    "infer": {"core", "data", "preprocess", "learn"},
    "evaluate": {"core", "data", "track"},
}
CLI = "mripipe.cli"  # the command-line layer: it may import every stage package, lazily
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def _is_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".")


def test_every_module_lives_in_a_stage_package() -> None:
    loose = [m for m in all_modules() if _package(m) is None and m != "mripipe" and not _is_cli(m)]
    assert loose == []
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == {*PACKAGES, CLI.split(".")[1]}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 25, f"{package}/__init__.py needs a paragraph on what it owns"


def test_imports_point_downwards_only() -> None:
    wrong = []
    for module in all_modules():
        src = _package(module)
        if src is None:
            continue
        for target in direct_imports(module):
            dst = _package(target)
            if dst is not None and dst != src and dst not in ALLOWED[src]:
                wrong.append(f"{module} -> {target}")
            if _is_cli(target):  # the command line is above every stage
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_cli_imports_stages_only_inside_adapters() -> None:
    """At module level a CLI module imports only the CLI layer and core (``mripipe --help`` stays
    instant); the stage modules are imported inside the adapter functions."""
    wrong = []
    for module in (m for m in all_modules() if _is_cli(m)):
        path = module_file(module)
        assert path is not None
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            wrong += [f"{module} -> {n}" for n in names
                      if n.startswith("mripipe.") and not _is_cli(n) and _package(n) != "core"]
    assert wrong == []


def test_no_import_cycle() -> None:
    # a package's own __init__ is run by its submodules' imports by construction: not an edge here
    graph = {m: {t for t in direct_imports(m) if not m.startswith(t + ".")} for m in all_modules()}
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_graph_sees_lazy_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "mripipe"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "leaf.py").write_text("X = 1\n")
    (pkg / "a" / "mid.py").write_text("def f():\n    from mripipe.a import leaf\n    return leaf.X\n")
    (pkg / "top.py").write_text("from .a.mid import f\n")
    assert closure("mripipe.top", pkg) == ["mripipe", "mripipe.a", "mripipe.a.leaf", "mripipe.a.mid", "mripipe.top"]


def _sources() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert big == {}


def test_functions_stay_short() -> None:
    long = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert long == {}


def test_rule_files_mirror_the_packages() -> None:
    rules = {p.stem for p in (REPO / "workflow" / "rules").glob("*.smk")} - {"common"}
    assert rules <= set(PACKAGES), rules


def test_unit_tests_mirror_the_packages() -> None:
    dirs = {p.name for p in (REPO / "tests" / "unit").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert dirs == set(PACKAGES)


def test_test_modules_have_unique_basenames() -> None:
    """Test folders are not packages: pytest imports each module by its basename, so two test files
    of one name cannot both be collected ("import file mismatch", seen only in a full run)."""
    seen: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def _module_names() -> list[str]:
    """Every module and package under ``src/mripipe`` as a dotted name (``mripipe.learn.loop``)."""
    names = []
    for path in _sources():
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


def test_module_base_names_are_unique() -> None:
    """One concept, one name: no two modules (packages included) share a base name, so
    ``mripipe X`` or a module name in a log leads a reader to exactly one file."""
    seen: dict[str, list[str]] = {}
    for name in _module_names():
        if name != "mripipe":
            seen.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    assert {base: names for base, names in seen.items() if len(names) > 1} == {}


def _listed_modules(doc: str) -> list[str]:
    """The modules a package docstring lists: lines ``- ``name``: what it does``."""
    import re

    return [m.group(1) for line in doc.splitlines() if (m := re.match(r"- ``(\w+)``: \S", line.strip()))]


def _package_dirs() -> list[Path]:
    return sorted(p.parent for p in ROOT.rglob("__init__.py") if p.parent != ROOT)


@pytest.mark.parametrize("package", _package_dirs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_package_docstring_lists_exactly_its_modules(package: Path) -> None:
    """Each package's docstring names exactly its modules (and subpackages), one line on each."""
    doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8"))) or ""
    present = sorted(p.stem for p in package.glob("*.py") if not p.stem.startswith("__"))
    present += sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    listed = _listed_modules(doc)
    assert len(listed) == len(set(listed)), f"{package}: a module is listed twice"
    assert sorted(listed) == sorted(present), f"{package}/__init__.py lists {sorted(listed)}"


def _trial_parameter_names() -> set[str]:
    """Every field of a trial's typed parameters (:mod:`mripipe.learn.trial_params`)."""
    import dataclasses

    from mripipe.learn import trial_params

    groups = [c for c in vars(trial_params).values()
              if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == trial_params.__name__]
    return {f.name for c in groups for f in dataclasses.fields(c)} - {"task"}


def test_no_get_default_for_a_trial_parameter() -> None:
    """Trial parameters are read from the typed object, never as ``d.get("lr", 1e-3)``: a default
    lives in one place (``trial_params``), not at each reader."""
    names = _trial_parameter_names()
    assert {"lr", "epochs", "amp", "label_smoothing", "momentum", "channels"} <= names
    found = []
    for path in sorted((ROOT / "learn").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get" and len(node.args) + len(node.keywords) >= 2
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in names):
                found.append(f"{path.name}:{node.lineno} .get({node.args[0].value!r}, ...)")
    assert found == []
