"""The import graph of the ``mripipe`` package, read statically from its source.

Snakemake does not notice when a module that a job imports changes. Each rule therefore lists as
``code`` inputs the source files its ``mripipe`` command executes: the subcommand's module and
everything it imports from ``mripipe``, transitively, lazy imports inside functions included.
Editing one module then re-runs exactly the jobs that execute it. The unit test of the layering
rules reads the same graph.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

PACKAGE = "mripipe"
ROOT = Path(__file__).resolve().parents[1]  # src/mripipe


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The source file of a dotted ``mripipe`` module (a package maps to its ``__init__.py``)."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def all_modules(root: Path = ROOT) -> list[str]:
    """Every module of the package, dotted (``mripipe.core.utils``, ``mripipe.data``, ...)."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out.append(".".join(parts))
    return out


def _resolve(name: str, root: Path) -> str | None:
    """The longest prefix of ``name`` that is a module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        if module_file(".".join(parts), root) is not None:
            return ".".join(parts)
        parts.pop()
    return None


def _relative_base(module: str, level: int, is_package: bool) -> str:
    parts = module.split(".")
    keep = len(parts) - level + (1 if is_package else 0)
    return ".".join(parts[:keep])


@cache
def direct_imports(module: str, root: Path = ROOT) -> frozenset[str]:
    """The ``mripipe`` modules ``module`` imports anywhere in its source (including in functions).

    ``from mripipe.x import y`` counts ``mripipe.x.y`` when ``y`` is a submodule, else
    ``mripipe.x``; importing a submodule also runs its packages' ``__init__`` files.
    """
    path = module_file(module, root)
    if path is None:
        raise KeyError(f"{module}: no such module under {root}")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = _relative_base(module, node.level, path.name == "__init__.py")
                base = f"{prefix}.{base}" if base else prefix
            names = [f"{base}.{a.name}" for a in node.names] or [base]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name, root)
                if target is not None and target != module:
                    found.add(target)
    # a submodule import executes each enclosing package's __init__
    for target in list(found):
        parts = target.split(".")
        for k in range(1, len(parts)):
            found.add(".".join(parts[:k]))
    found.discard(module)
    return frozenset(found)


def closure(module: str, root: Path = ROOT) -> list[str]:
    """``module`` and every ``mripipe`` module it imports, transitively, sorted."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(direct_imports(current, root) - seen)
    return sorted(seen)


def code_files(modules: list[str], root: Path = ROOT, relative_to: Path | None = None,
               alone: Sequence[str] = ()) -> list[str]:
    """The source files executed by importing ``modules``, and those of the modules ``alone``
    (without what they import), as paths relative to ``relative_to`` (the repository root, so a
    finished run that is moved elsewhere is still up to date)."""
    mods: set[str] = set(alone)
    for module in modules:
        mods.update(closure(module, root))
    files = [module_file(m, root) for m in sorted(mods)]
    base = relative_to or root.parents[1]
    return sorted(os.path.relpath(f, base) for f in files if f is not None)
