"""The layer rules of the code base, checked over the import graph.

- `extractors` and `storage` import no other project package;
- `trainers` imports only `storage`;
- `pipeline` outside its CLI package never imports `flows` or the CLI;
- `flows` never imports the CLI.

Every import counts: module level, inside functions and under `TYPE_CHECKING`, because a lazy import
still couples the packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("extractors", "storage", "trainers", "pipeline", "flows")
CLI = "pipeline.cli"

ALLOWED = {
    "extractors": set(),
    "storage": set(),
    "trainers": {"storage"},
    "flows": {"extractors", "storage", "trainers", "pipeline"},
    "pipeline": {"extractors", "storage", "trainers"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Absolute names of every project module `path` (or `source` standing for it) imports."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] in PACKAGES}


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def is_cli(name: str) -> bool:
    return name == CLI or name.startswith(CLI + ".")


def violations(path: Path, source: str | None = None) -> list[str]:
    importer = module_name(path)
    top = importer.split(".")[0]
    found = []
    for name in sorted(imported_modules(path, source)):
        target = name.split(".")[0]
        if is_cli(importer):
            continue
        if is_cli(name):
            found.append(f"{importer} imports {name}: only the CLI package may")
        elif target != top and target not in ALLOWED[top]:
            found.append(
                f"{importer} imports {name}: {top} may import only {sorted(ALLOWED[top]) or 'no project package'}"
            )
    return found


def test_every_project_module_keeps_to_its_layer():
    found = [line for path in project_files() for line in violations(path)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import pipeline.manifest\n", "extractors.fake imports pipeline.manifest"),
        ("def f():\n    from flows import extract\n", "extractors.fake imports flows"),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from trainers.train import x\n",
            "extractors.fake imports trainers",
        ),
    ],
)
def test_the_checker_sees_every_kind_of_import(source, expected):
    fake = ROOT / "extractors" / "fake.py"
    assert any(v.startswith(expected) for v in violations(fake, source))


def test_relative_imports_are_resolved_and_only_the_cli_may_import_the_cli():
    path = ROOT / "pipeline" / "adapters" / "fake.py"
    source = "from ..cli import app\nfrom . import common\n"
    assert imported_modules(path, source) == {
        "pipeline.cli",
        "pipeline.cli.app",
        "pipeline.adapters",
        "pipeline.adapters.common",
    }
    assert violations(path, source) == [
        "pipeline.adapters.fake imports pipeline.cli: only the CLI package may",
        "pipeline.adapters.fake imports pipeline.cli.app: only the CLI package may",
    ]
    assert violations(ROOT / "pipeline" / "cli" / "fake.py", "import flows.extract\nimport trainers\n") == []
    assert violations(ROOT / "flows" / "fake.py", "from pipeline.cli import app\n")[0].startswith(
        "flows.fake imports pipeline.cli: only the CLI"
    )
