"""docker-compose.yml and the Dockerfile, read as a user's `docker compose up` would use them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_needs_environment_variables_only() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.endswith((".yaml", ".yml")), f"a settings file a user may not have: {volume}"
    # Every variable has a default or says what to set.
    for variable in re.findall(r"\$\{([^}]*)\}", text):
        assert ":-" in variable or ":?" in variable, variable


def test_every_process_writes_its_counters_where_the_web_process_reads_them() -> None:
    services = compose()["services"]
    folders = set()
    for name in ("web", "worker"):
        folder = services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in services[name]["volumes"]}
        assert folder in mounts, f"{name} writes its counters to {folder}, which is not shared"
        folders.add(mounts[folder])
    assert len(folders) == 1 and folders <= set(compose()["volumes"])  # one named volume for both
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "/app/metrics" in dockerfile and "chown hana:hana /app/var /app/metrics" in dockerfile
