"""The shape of the source tree: no import cycles among its modules, and one module that reads the
environment. The layers themselves are import-linter's contract in pyproject.toml (``lint-imports``)."""

from __future__ import annotations

import ast
import tomllib

import grimp
import pytest

from medroute.config import REPO_ROOT

# The same packages import-linter checks, so that a new top-level package is covered by both.
_PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PACKAGES: list[str] = _PYPROJECT["tool"]["importlinter"]["root_packages"]

# Settings are read in one place (medroute.config and the settings modules built on its helpers), so
# that what configures a process is listed in one place and tests can set it there.
READS_ENVIRONMENT = {"medroute/config.py"}
_ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})


def test_no_import_cycles() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def environment_reads(source: str) -> list[int]:
    """The lines of ``source`` that touch ``os.environ`` / ``os.getenv`` and their kin."""
    tree = ast.parse(source)
    os_names = {
        alias.asname or "os"
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "os" or (alias.name.startswith("os.") and alias.asname is None)
    }
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(alias.name in _ENVIRONMENT for alias in node.names):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _ENVIRONMENT
            and isinstance(node.value, ast.Name)
            and node.value.id in os_names
        ):
            lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import os\nos.environ.get('X')\n", [2]),
        ("import os as system\nsystem.getenv('X')\n", [2]),
        ("import os.path\nos.environ['X'] = '1'\n", [2]),
        ("from os import environ\n", [1]),
        ("import os\nos.path.join('a')\nsettings.environ\n", []),
    ],
)
def test_environment_reads_are_found(source: str, lines: list[int]) -> None:
    assert environment_reads(source) == lines


def test_only_config_reads_the_environment() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative not in READS_ENVIRONMENT:
                found += [f"{relative}:{line}" for line in environment_reads(path.read_text(encoding="utf-8"))]
    assert not found, "read the environment through medroute.config instead:\n" + "\n".join(found)


def test_every_package_is_seen() -> None:
    # A top-level package missing from root_packages escapes both checks; a directory without
    # __init__.py is skipped by grimp (and by setuptools' package finder).
    top = {path.name for path in REPO_ROOT.iterdir() if (path / "__init__.py").is_file()}
    assert top - {"tests"} == set(PACKAGES)
    bare = [
        directory.relative_to(REPO_ROOT).as_posix()
        for package in PACKAGES
        for directory in (REPO_ROOT / package).rglob("*")
        if directory.is_dir() and any(directory.glob("*.py")) and not (directory / "__init__.py").is_file()
    ]
    assert not bare, f"directories of modules without __init__.py: {bare}"
