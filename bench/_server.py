"""Run one of the benchmarked WSGI apps under hana-rules' own gunicorn settings.

Usage: python bench/_server.py {bare,one-write,hana-rules,hana-rules-lpush} PORT REDIS_URL DATA_DIR [WORKERS THREADS]

WORKERS and THREADS override the settings' web_workers and web_threads, for every app alike.

hana-rules-lpush is a diagnosis, not a product: hana-rules whose accept script is
replaced by one LPUSH of the raw body, so the difference to hana-rules is the
script's cost and the difference to one-write is everything else the receiver does.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from flask import Flask, jsonify, request
from gunicorn.app.base import BaseApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from engine.config import load_settings, with_generated_tokens  # noqa: E402
from engine.web.server import server_options  # noqa: E402


def bare_app() -> Flask:
    app = Flask("bare")

    @app.post("/hooks/<event_type>")
    def hook(event_type: str) -> Any:
        return jsonify({})

    return app


def one_write_app(redis_url: str) -> Flask:
    """The floor of any durable acknowledgement: parse the body, one Redis write."""
    app = Flask("one_write")
    client = redis.Redis.from_url(redis_url)

    @app.post("/hooks/<event_type>")
    def hook(event_type: str) -> Any:
        body = json.loads(request.get_data())
        client.lpush("bench:events", json.dumps(body))
        return jsonify({"status": "accepted"})

    return app


class Server(BaseApplication):  # type: ignore[misc]
    def __init__(
        self, kind: str, port: int, redis_url: str, data_dir: Path, shape: tuple[int, int] | None = None
    ) -> None:
        self.kind, self.redis_url = kind, redis_url
        base = replace(load_settings(env={}), data_dir=data_dir, redis_url=redis_url)
        if shape:
            base = replace(base, web_workers=shape[0], web_threads=shape[1])
        self.settings = with_generated_tokens(base)
        self.options = {**server_options(self.settings, host="127.0.0.1", port=port), "loglevel": "warning"}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        if self.kind == "bare":
            return bare_app()
        if self.kind == "one-write":
            return one_write_app(self.redis_url)
        from engine.runtime.metrics_folder import prepare_multiprocess_dir
        from engine.web.app import create_app

        prepare_multiprocess_dir(self.settings.data_dir, fresh=False)  # as `hana-rules web` runs
        app = create_app(self.settings)
        if self.kind == "hana-rules-lpush":
            from engine.runtime.events import Outcome
            from engine.runtime.intake import Intake, Receipt

            def keep(intake: Intake, event: Any) -> Receipt:
                intake.store.connection.lpush("bench:events", event.body)
                return Receipt(Outcome.ACCEPTED, event.id)

            Intake.keep = keep  # type: ignore[method-assign]
        return app


if __name__ == "__main__":
    kind, port, redis_url, data_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    shape = (int(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else None
    Server(kind, port, redis_url, data_dir, shape).run()
