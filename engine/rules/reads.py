"""Which lead/opportunity attributes a rule reads, and the ones real events never carried.

The compiler notes every `field:` and `changed:` of a rule's conditions that names an
attribute (`lead.x`, `opportunity.x`, and `raw.`/`previous.` of them), with where it is
written. `unseen_attributes` compares them with the attribute catalogue (the names
workers saw in real events, engine/runtime/fields.py) and warns about a name Hana never
sent — most often a typo that would make a rule silently never match. A warning, never
an error: a new custom attribute may simply not have been sent yet.

Templates (`template:` conditions, `vars`, action payloads) are not looked into: their
names are only top-level (`lead`), and a wrong attribute there renders as empty, which
the rule's tests and the playground show.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from engine.hana import ENTITIES
from engine.rules.errors import RuleError

#: application id (None: events without one) → entity (lead/opportunity) → attribute names seen.
Seen = Mapping[str | None, Mapping[str, Collection[str]]]


@dataclass(frozen=True)
class FieldRead:
    """One attribute a rule's condition reads, located to the character."""

    field: str  # as written: `lead.cf_x`, `previous.lead.cf_x`, `lead.cf_x.inner`
    entity: str
    attribute: str
    line: int
    column: int
    path: str  # inside the rule: `when/1/field`


def entity_attribute(name: str) -> tuple[str, str] | None:
    """(`lead`, `x`) for `lead.x`, `raw.lead.x`, `previous.lead.x` and deeper (`lead.x.y`); else None."""
    parts = name.split(".")
    if parts[0] in ("raw", "previous"):
        parts = parts[1:]
    if len(parts) >= 2 and parts[0] in ENTITIES and parts[1]:
        return parts[0], parts[1]
    return None


def unseen_attributes(rule_set: object, seen: Seen) -> list[RuleError]:
    """A warning for each attribute a rule reads that no event of its applications ever carried.

    `rule_set`: anything with `rules`, each with `id`, `file`, `applications` (None: any) and
    `reads` (FieldRead). Only where the catalogue has some names for that entity and those
    applications: an empty catalogue means no data yet, not that every name is wrong.
    """
    warnings: list[RuleError] = []
    pools: dict[tuple[frozenset[str] | None, str], tuple[tuple[str, ...], frozenset[str]]] = {}  # made once
    for rule in getattr(rule_set, "rules", ()):
        reads: Iterable[FieldRead] = getattr(rule, "reads", ())
        applications = getattr(rule, "applications", None)
        for read in reads:
            key = (frozenset(applications) if applications is not None else None, read.entity)
            if key not in pools:
                found = _names(seen, applications, read.entity)
                pools[key] = (tuple(sorted(found)), frozenset(found))
            names, known = pools[key]
            if not names or read.attribute in known:
                continue
            wanted = f"{read.entity}.{read.attribute}"
            message = f"{wanted} has never been seen in {read.entity} events"
            close = _closest(read.attribute, names)
            if close:
                message += f"; did you mean {read.entity}.{close[0]}?"
            hint = (
                f"the names come from the {read.entity} events received so far (hana-rules fields); check the "
                "spelling, or ignore this if Hana has not sent this attribute yet"
            )
            warnings.append(RuleError(rule.file, read.line, read.column, message, rule.id, read.path, hint))
    return sorted(warnings, key=lambda w: (w.file, w.line, w.column))


@functools.lru_cache(maxsize=4096)
def _closest(attribute: str, names: tuple[str, ...]) -> list[str]:
    """The seen name nearest to `attribute`: remembered, since the editor asks again at each pause in typing
    (difflib against 500 names costs milliseconds per attribute)."""
    return difflib.get_close_matches(attribute, names, n=1, cutoff=0.6)


def _names(seen: Seen, applications: Collection[str] | None, entity: str) -> set[str]:
    """Every name seen for `entity` in these applications' events (None: every application's)."""
    found: set[str] = set()
    for application, entities in seen.items():
        if applications is None or application in applications:
            found.update(entities.get(entity, ()))
    return found
