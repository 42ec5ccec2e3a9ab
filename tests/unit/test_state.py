"""The pure state merge: created replaces, updated merges, deleted removes — never over a newer value."""

from __future__ import annotations

from engine.state import apply_known_state, next_state, stale_attributes

KNOWN = {"id": "L1", "status": "won", "note": "old"}
KNOWN_AT = {"id": 100, "status": 300, "note": 100}  # status was received at 300, the rest at 100


def test_an_update_in_order_merges_and_stamps_what_it_carries() -> None:
    state = next_state("lead.updated", {"status": "lost"}, 400, KNOWN, KNOWN_AT)
    assert state.values == {"id": "L1", "status": "lost", "note": "old"}
    assert state.received == {"id": 100, "status": 400, "note": 100}


def test_a_late_update_applies_only_what_nobody_sent_since() -> None:
    attributes = {"status": "new", "note": "from the journal"}  # received at 200: before status, after note
    assert stale_attributes(attributes, KNOWN_AT, 200) == ["status"]
    state = next_state("lead.updated", attributes, 200, KNOWN, KNOWN_AT)
    assert state.values == {"id": "L1", "status": "won", "note": "from the journal"}
    assert state.received == {"id": 100, "status": 300, "note": 200}


def test_a_create_replaces_but_a_late_one_keeps_newer_values() -> None:
    assert next_state("lead.created", {"id": "L1", "x": 1}, 400, KNOWN, KNOWN_AT).values == {"id": "L1", "x": 1}
    late = next_state("lead.created", {"id": "L1", "status": "new"}, 200, KNOWN, KNOWN_AT)
    assert late.values == {"id": "L1", "status": "won"}  # the newer status stays; the rest is the create's


def test_a_delete_removes_unless_the_entity_changed_after_it_was_sent() -> None:
    assert next_state("lead.deleted", {"id": "L1"}, 400, KNOWN, KNOWN_AT).values is None
    assert next_state("lead.deleted", {"id": "L1"}, 200, KNOWN, KNOWN_AT).values == {"status": "won"}


def test_state_from_before_receive_times_were_kept_counts_as_old() -> None:
    state = next_state("lead.updated", {"status": "new"}, 1, KNOWN, {})
    assert state.values == {"id": "L1", "status": "new", "note": "old"}


def test_stale_values_are_neither_seen_by_rules_nor_changes() -> None:
    context = {"event": {"entity": "lead"}, "lead": {"status": "new", "note": "from the journal"}}
    apply_known_state(context, dict(KNOWN), stale=["status"])
    assert context["lead"] == {"id": "L1", "status": "won", "note": "from the journal"}
    assert context["changes"] == ["note"]


def test_a_deleted_entity_remembers_when_and_nothing_older_brings_it_back() -> None:
    deleted = next_state("lead.deleted", {"id": "L1"}, 400, KNOWN, KNOWN_AT)
    assert deleted.values is None and deleted.received == {"__deleted__": 400}
    late = next_state("lead.updated", {"id": "L1", "note": "late"}, 350, None, deleted.received)
    assert late.values is None and late.received == {"__deleted__": 400}
    assert stale_attributes({"id": "L1", "note": "late"}, deleted.received, 350) == ["id", "note"]
    again = next_state("lead.created", {"id": "L1", "note": "new"}, 500, None, deleted.received)
    assert again.values == {"id": "L1", "note": "new"} and again.received == {"id": 500, "note": 500}
