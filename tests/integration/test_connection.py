"""The receiver's own per-thread connections survive Redis going away and coming back."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from engine.runtime.connection import ThreadConnections, receiver_client
from engine.runtime.embedded import EmbeddedRedis


@pytest.fixture()
def own_redis(tmp_path: Path):
    server = EmbeddedRedis(tmp_path / "redis").start()
    yield server
    server.stop()


def test_a_restart_of_redis_is_noticed_before_the_next_command(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    connections = ThreadConnections(receiver_client(own_redis.url))
    connections.IDLE_CHECK_SECONDS = 0.0  # every call counts as after a pause
    assert connections.execute("SET", "k", "before") == b"OK"
    own_redis.stop()
    restarted = EmbeddedRedis(tmp_path / "redis", port=own_redis.port).start()  # same address, old socket closed
    try:
        # Unchecked, this command would go down the dead socket and fail (sending an event to the journal).
        assert connections.execute("GET", "k") == b"before"  # the append-only file kept it
    finally:
        restarted.stop()


def test_a_failed_command_raises_then_the_next_one_reconnects(own_redis: EmbeddedRedis, tmp_path: Path) -> None:
    connections = ThreadConnections(receiver_client(own_redis.url))
    assert connections.execute("PING") == b"PONG"
    own_redis.stop()
    with pytest.raises(redis.ConnectionError):  # the receiver's cue to write to the journal
        connections.execute("PING")
    restarted = EmbeddedRedis(tmp_path / "redis", port=own_redis.port).start()
    try:
        assert connections.execute("PING") == b"PONG"
    finally:
        restarted.stop()


def test_a_script_unknown_to_a_fresh_redis_is_loaded_on_first_use(own_redis: EmbeddedRedis) -> None:
    client = receiver_client(own_redis.url)
    script = client.register_script("return ARGV[1] .. KEYS[1]")
    client.script_flush()
    assert ThreadConnections(client).run_script(script, ["b"], ["a"]) == b"ab"


def test_the_embedded_redis_fsyncs_every_write_unless_told_otherwise(tmp_path) -> None:  # noqa: ANN001
    """SPEC §4: an event is durably stored before the answer; `redis_fsync: everysec` trades that away."""
    from engine.config import load_settings
    from engine.runtime.embedded import EmbeddedRedis

    (tmp_path / "fast.yaml").write_text("redis_fsync: everysec\n")
    for settings, expected in ((load_settings(env={}), "always"), (load_settings(tmp_path / "fast.yaml"), "everysec")):
        with EmbeddedRedis(tmp_path / expected, fsync=settings.redis_fsync) as server:
            assert redis.Redis.from_url(server.url).config_get("appendfsync") == {"appendfsync": expected}
