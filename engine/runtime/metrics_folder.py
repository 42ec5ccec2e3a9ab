"""Where every process of one machine writes its counters, for one /metrics page to add them up.

Its own module, importing nothing of prometheus_client: the client picks its
multiprocess value class when it is first imported, so the folder must be
named (PROMETHEUS_MULTIPROC_DIR) before anything imports `engine.runtime.metrics`.
A `web` or `worker` that imported it first counted in memory only, where no
/metrics page of another process could see it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(data_dir: Path, *, fresh: bool) -> None:
    """Point this process (and its children) at the shared metrics folder; `fresh` empties it.

    Only `serve` empties it, at its start, when every process writing there starts anew.
    A `web` or `worker` never does: workers (or other containers sharing the folder) may be
    running, and counters of processes gone must stay counted.
    """
    folder = Path(os.environ.get(MULTIPROCESS_ENV) or data_dir / "metrics")
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
