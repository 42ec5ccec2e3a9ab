"""`hana-rules web`: the Flask app under gunicorn, the production WSGI server.

The access log never contains the query string, which is where Hana puts the
webhook token (`%(U)s` is the path alone).

Each web process listens on its own socket (SO_REUSEPORT), so the kernel spreads
new connections evenly over the processes. On one shared socket, whichever
process woke first took them: a burst of keep-alive connections could all land
in one process, leaving the other cores idle (measured: half the throughput in
one run out of four).
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from engine.config import Settings
from engine.runtime.ports import ensure_port_free

ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


def server_options(settings: Settings, *, host: str, port: int) -> dict[str, Any]:
    """One place for the server settings, so benchmarks run baselines under the same ones."""
    return {
        "bind": f"{host}:{port}",
        "workers": settings.web_workers,
        "worker_class": "gthread",
        "threads": settings.web_threads,
        "keepalive": 5,
        "reuse_port": True,  # one listening socket per process; see the module docstring
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "hana-rules-web",
        # gunicorn ≥ 24 opens a control socket under ~/.gunicorn; we need none and write nothing outside data_dir.
        "control_socket_disable": True,
    }


class WebServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, *, host: str, port: int, options: dict[str, Any] | None = None):
        self.settings = settings
        self.options = {**server_options(settings, host=host, port=port), **(options or {})}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def run(self) -> None:
        """Record where we listen (for `hana-rules reload/events/failed`) while we run, unless `serve` does."""
        import os

        from engine.runtime.supervisor import remove_runtime, write_runtime

        host, port = self.options["bind"].rsplit(":", 1)
        ensure_port_free(host.strip("[]"), int(port))  # before anything with a side effect
        if os.environ.get("HANA_RULES_SUPERVISED"):
            super().run()
            return
        from engine.runtime.connection import describe, worker_client
        from engine.runtime.loading import RuleRegistry

        # The running set stays what it is; these files are published only when none is yet.
        RuleRegistry.boot(worker_client(self.settings.redis_target), self.settings, publish_if_none=True)
        arbiter = os.getpid()
        where = describe(self.settings.redis_target)
        write_runtime(self.settings.data_dir, url=f"http://{host}:{port}", redis_url=where)
        try:
            super().run()
        finally:
            if os.getpid() == arbiter:  # gunicorn's workers leave through here too, when they exit
                remove_runtime(self.settings.data_dir)

    def load(self) -> Any:
        # Runs in each worker after the fork: every process gets its own Redis pool and drainer.
        from engine.web.app import create_app

        return create_app(self.settings)
