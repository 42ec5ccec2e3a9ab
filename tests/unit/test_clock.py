"""Times on the console readers' clock (engine/clock.py, console.timezone)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from engine.clock import FIXED, local_time, zone
from engine.config import load_settings
from engine.errors import ConfigError


@pytest.mark.parametrize(("name", "shown"), [
    ("Asia/Ho_Chi_Minh", "2026-12-02 08:55:39 (UTC+7)"),
    ("UTC", "2026-12-02 01:55:39 (UTC)"),
    ("Asia/Kolkata", "2026-12-02 07:25:39 (UTC+5:30)"),
])  # fmt: skip
def test_a_stored_time_reads_on_the_readers_clock_with_its_offset(name: str, shown: str) -> None:
    assert local_time("2026-12-02T01:55:39.830Z", name) == shown


def test_vietnams_clock_needs_no_time_zone_database_and_what_is_not_a_time_is_shown_as_it_is() -> None:
    for known in (zone("Asia/Ho_Chi_Minh"), FIXED["Asia/Ho_Chi_Minh"]):  # the database's, and the one without it
        assert datetime(2026, 6, 1, tzinfo=known).utcoffset() == timedelta(hours=7)
    assert local_time(None, "UTC") == "—" and local_time("soon", "UTC") == "soon"


def test_an_unknown_time_zone_is_a_settings_error_saying_what_to_write(tmp_path) -> None:
    config = tmp_path / "hana-rules.yaml"
    config.write_text("console: {timezone: Mars/Olympus}\n")
    with pytest.raises(ConfigError, match="Asia/Ho_Chi_Minh"):
        load_settings(config)
    config.write_text("console: {timezone: UTC}\n")
    assert load_settings(config).console.timezone == "UTC"
    assert load_settings(None).console.timezone == "Asia/Ho_Chi_Minh"
