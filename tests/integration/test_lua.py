"""Constants written into Lua sources reach Redis byte for byte."""

from __future__ import annotations

import pytest
import redis

from engine.runtime import lua


def test_a_literal_carries_any_bytes_exactly(redis_client: redis.Redis) -> None:
    every_byte = bytes(range(256))
    tricky = ["", "it's", 'say "hi"', "a\\b", "]]", "--[[", "${x}", "Tiếng Việt", every_byte]
    for value in tricky:
        expected = value if isinstance(value, bytes) else value.encode()
        assert redis_client.eval(f"return {lua.literal(value)}", 0) == expected


def test_a_forgotten_placeholder_fails_in_python_not_in_redis() -> None:
    with pytest.raises(KeyError, match="received"):  # the first placeholder not given
        lua.render("accept.lua", event_key_prefix="hr:event:", duplicate_window=600)
