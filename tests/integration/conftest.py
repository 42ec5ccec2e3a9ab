from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from engine.config import Settings
from engine.runtime.connection import receiver_client
from engine.web.app import create_app
from tests.deployment import deploy  # noqa: F401 - a fixture for every integration test
from tests.helpers import live_server


@pytest.fixture
def receiver(settings: Settings, redis_client: redis.Redis) -> Iterator[str]:
    """The real Flask app over real HTTP on 127.0.0.1, against the test Redis."""
    assert settings.redis_url
    app = create_app(settings, connection=receiver_client(settings.redis_url))
    with live_server(app) as url:
        yield url
    app.extensions["hana_rules.drainer"].stop()
