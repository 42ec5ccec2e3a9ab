"""From matched rules to action records and the jobs that run them, written by one event's commit.

Actions before a rule's first `delay` are pending with a job now; the delay
itself is an action of its own, scheduled with a job at its end; what follows
it waits, `scheduled`, until the delay's end renders it with the rule as it is
then (`delivery.resume`), from the event's context (rebuilt from its body and
the state before it, secrets included), so a delayed action sends the same
values an immediate one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.hana import now_iso
from engine.rules.ruleset import RenderedAction, RuleResult
from engine.runtime.action_state import GRACE_MS, ActionStatus, action_id, action_key, first_job_id, record_fields
from engine.runtime.queues import JobTemplate
from engine.runtime.state_store import JobWrite


@dataclass(frozen=True)
class RecordWrite:
    """An action record the commit writes; `due_in_ms`: when the sweeper must look (None: never on its own)."""

    key: str
    fields: dict[str, str]
    due_in_ms: int | None = None


@dataclass
class ActionPlan:
    records: list[RecordWrite] = field(default_factory=list)
    jobs: list[JobWrite] = field(default_factory=list)
    listing: list[dict[str, Any]] = field(default_factory=list)  # the event's `actions`: what was rendered

    @property
    def open(self) -> int:
        """Actions the event waits for: it is finished (and may be trimmed) only when none is left."""
        return sum(r.fields["status"] not in _CLOSED for r in self.records)


_CLOSED = frozenset((ActionStatus.DONE, ActionStatus.FAILED, ActionStatus.DROPPED))


def new_record(event_id: str, rule_id: str, action: RenderedAction, *, status: ActionStatus,
               application_id: str | None, entity_key: str | None, **extra: Any) -> dict[str, str]:  # fmt: skip
    return record_fields(
        event_id=event_id, rule=rule_id, index=action.index, kind=action.kind, status=status.value,
        payload=action.payload, application_id=application_id or "", entity_key=entity_key or "", attempts=[],
        attempt_base=0, error=action.error or "", created_at=now_iso(), **extra,
    )  # fmt: skip


def listing_entry(rule_id: str, action: RenderedAction, status: ActionStatus) -> dict[str, Any]:
    return {"rule": rule_id, **action.as_json(), "status": status.value, "attempts": []}


def plan_actions(
    results: list[RuleResult],
    *,
    event_id: str,
    application_id: str | None,
    entity_key: str | None,
    template: JobTemplate,
) -> ActionPlan:
    plan = ActionPlan()
    for result in results:
        if result.skipped:
            continue
        waiting = False
        for action in result.actions:
            identifier = action_id(event_id, result.rule.id, action.index)
            record: dict[str, Any] = {"application_id": application_id, "entity_key": entity_key}
            due_in_ms: int | None = None
            if action.kind == "delay":
                status = ActionStatus.SCHEDULED
                if not waiting:  # the first delay of the rule starts now; a later one when this one ends
                    seconds = float(action.payload["delay"])
                    due_in_ms = int(seconds * 1000) + GRACE_MS
                    record.update(job=first_job_id(identifier), tickets=1)
                    plan.jobs.append(_job(template, identifier, delay=seconds))
                waiting = True
            elif waiting:
                status = ActionStatus.SCHEDULED
            elif action.error:
                status = ActionStatus.FAILED  # a template error: clear in the trace, not retried
            else:
                status = ActionStatus.PENDING
                due_in_ms = GRACE_MS
                record.update(job=first_job_id(identifier), tickets=1)
                plan.jobs.append(_job(template, identifier))
            fields = new_record(event_id, result.rule.id, action, status=status, **record)
            plan.records.append(RecordWrite(action_key(identifier), fields, due_in_ms))
            plan.listing.append(listing_entry(result.rule.id, action, status))
    return plan


def _job(template: JobTemplate, identifier: str, *, delay: float | None = None) -> JobWrite:
    job_id = first_job_id(identifier)
    event_id, rule_id, index = identifier.rsplit(":", 2)
    status = "queued" if delay is None else "scheduled"
    return JobWrite(key=f"{template.job_key_prefix}{job_id}", id=job_id, queue_key=template.queue_key,
                    scheduled_key=template.scheduled_key, fields=template.job_fields(event_id, rule_id, index,
                    status=status), delay=delay)  # fmt: skip
