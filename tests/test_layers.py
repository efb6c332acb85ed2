"""Imports go one way (STYLE.md): losses → capture → signals/terms → engine → tasks → api/cli, with report
beside the engine. Read from the source with ``ast``, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kdkit

PACKAGE = Path(kdkit.__file__).parent

# package (first path part under src/kdkit, or module name without .py) -> kdkit packages it must never import
FORBIDDEN = {
    "losses": {"capture", "signals", "terms", "engine", "tasks", "report", "students", "api", "cli", "config"},
    "capture": {"signals", "terms", "engine", "tasks", "report", "api", "cli"},
    "signals": {"terms", "engine", "tasks", "report", "api", "cli"},
    "terms": {"engine", "tasks", "report", "api", "cli"},
    "engine": {"tasks", "api", "cli"},
    "report": {"tasks", "api", "cli"},
    "tasks": {"api", "cli"},
}


def _imports(path: Path) -> set[str]:
    """The kdkit packages ``path`` imports (``kdkit.x.y`` → ``x``; ``from kdkit import a, b`` → ``a``, ``b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("kdkit"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("kdkit.")}
    return found


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0].removesuffix(".py")


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(layer):
    files = [p for p in PACKAGE.rglob("*.py") if _package_of(p) == layer]
    assert files, f"no source files for layer '{layer}'"
    wrong = {f"{p.relative_to(PACKAGE)} imports kdkit.{name}" for p in files for name in _imports(p) & FORBIDDEN[layer]}
    assert not wrong, sorted(wrong)


def test_the_checker_sees_module_level_and_lazy_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("from kdkit.tasks.retrieval.data import x\nimport kdkit.api\n"
                      "def f():\n    from kdkit import cli, errors\n")
    assert _imports(source) == {"tasks", "api", "cli", "errors"}
