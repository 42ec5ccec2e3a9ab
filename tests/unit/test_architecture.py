"""Imports point one way (cli → web → runtime → actions → rules); the rule core stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[2] / "engine"
FORBIDDEN = {
    "rules": {"flask", "redis", "rq", "requests", "gunicorn", "engine.runtime", "engine.web", "engine.actions",
              "engine.cli"},
    "actions": {"flask", "engine.web", "engine.cli"},
    "runtime": {"flask", "engine.web", "engine.cli"},
    "web": {"engine.cli", "click"},
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_point_one_way(layer: str) -> None:
    offenders = []
    for path in sorted((ENGINE / layer).rglob("*.py")):
        for name in imports_of(path):
            if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[layer]):
                offenders.append(f"{path.relative_to(ENGINE)} imports {name}")
    assert offenders == []


def test_pure_modules_shared_by_every_layer_do_no_io() -> None:
    shared = ("hana.py", "durations.py", "envsubst.py", "errors.py", "redaction.py", "state.py", "config_schema.py")
    for module in shared:
        banned = {"flask", "redis", "rq", "requests"}
        assert not {n.split(".")[0] for n in imports_of(ENGINE / module)} & banned, module


def test_the_commands_name_the_metrics_folder_before_prometheus_client_is_imported() -> None:
    """prometheus_client picks its multiprocess mode at its first import: a `web` or `worker` that
    imported it before the folder was named counted in memory, where no /metrics page could see it."""
    import subprocess
    import sys

    check = "import sys, engine.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
