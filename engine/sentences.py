"""A traced condition in words, in the reader's language (English or Vietnamese).

"lead.baseSourceInput contains one of [Youtube, Facebook Ads]: saw [Youtube, Sendo] ✓" /
"lead.baseSourceInput chứa một trong [Youtube, Facebook Ads]: thấy [Youtube, Sendo] ✓".

The one place conditions become sentences: the console, `hana-rules simulate` and the admin
API (`text` beside each condition) all call `describe`. Messages are whole sentences with
named placeholders, translated through the gettext catalogues in `engine/translations`
(the console reads the same ones through Flask-Babel), because Vietnamese word order is
not English word order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.support import NullTranslations, Translations

from engine.rules.explain import Explanation, explain

TRANSLATIONS = Path(__file__).parent / "translations"
LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "en"


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "translate later": extraction finds it
    return message


#: What each operator claims, `subject` (a field or a JSONPath) first.
CLAIMS = {
    "equals": N_("%(subject)s equals %(operand)s"),
    "not_equals": N_("%(subject)s does not equal %(operand)s"),
    "in": N_("%(subject)s is one of %(operand)s"),
    "not_in": N_("%(subject)s is none of %(operand)s"),
    "contains": N_("%(subject)s contains %(operand)s"),
    "not_contains": N_("%(subject)s does not contain %(operand)s"),
    "contains_any": N_("%(subject)s contains one of %(operand)s"),
    "contains_all": N_("%(subject)s contains all of %(operand)s"),
    "starts_with": N_("%(subject)s starts with %(operand)s"),
    "ends_with": N_("%(subject)s ends with %(operand)s"),
    "matches": N_("%(subject)s matches the pattern %(operand)s"),
    "not_matches": N_("%(subject)s does not match the pattern %(operand)s"),
    "gt": N_("%(subject)s is greater than %(operand)s"),
    "gte": N_("%(subject)s is at least %(operand)s"),
    "lt": N_("%(subject)s is less than %(operand)s"),
    "lte": N_("%(subject)s is at most %(operand)s"),
    "between": N_("%(subject)s is between %(low)s and %(high)s"),
    "exists": N_("%(subject)s has a value"),
    "not_exists": N_("%(subject)s has no value"),
    "empty": N_("%(subject)s is empty"),
    "not_empty": N_("%(subject)s is not empty"),
    "before": N_("%(subject)s is before %(operand)s"),
    "after": N_("%(subject)s is after %(operand)s"),
    "within": N_("%(subject)s is within the last %(operand)s"),
    "changed": N_("%(subject)s changed"),
    "changed_from_to": N_("%(subject)s changed from %(before)s to %(after)s"),
    "changed_to": N_("%(subject)s changed to %(after)s"),
    "changed_from": N_("%(subject)s changed from %(before)s"),
    "template": N_("the template %(operand)s is true"),
    "all": N_("all of the following hold"),
    "any": N_("at least one of the following holds"),
    "not": N_("the following does not hold"),
    "": N_("condition %(path)s"),
}
MODIFIER_WORDS = {
    frozenset({"ignore_case"}): N_("ignoring case"),
    frozenset({"ignore_accents"}): N_("ignoring accents"),
    frozenset({"ignore_case", "ignore_accents"}): N_("ignoring case and accents"),
}
NEGATED = N_("it is not true that %(claim)s")
SAW = N_("saw %(value)s")
SAW_CHANGE = N_("saw %(before)s → %(after)s")
NO_CHANGE = N_("it did not change in this event (now %(value)s)")
ABSENT = N_("no value")
HAS_NO_VALUE = N_("it has no value")
COULD_NOT = N_("could not be evaluated: %(error)s")
TEMPLATE_GAVE = N_("the template gave %(value)s")


@dataclass(frozen=True)
class Sentence:
    """`claim` ("lead.x equals VIP"), `seen` ("saw Thường", empty for a group), the verdict."""

    claim: str
    seen: str
    result: bool
    depth: int

    @property
    def text(self) -> str:
        mark = "✓" if self.result else "✗"
        return f"{self.claim}: {self.seen} {mark}" if self.seen else f"{self.claim} {mark}"


def language_of(accepted: str | None) -> str:
    """`vi-VN` → `vi`; anything we do not speak → English."""
    code = (accepted or "").replace("_", "-").split("-")[0].strip().lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


@lru_cache(maxsize=len(LANGUAGES) + 1)
def translations(language: str) -> NullTranslations:
    if language == DEFAULT_LANGUAGE:
        return NullTranslations()  # the messages are English
    return Translations.load(str(TRANSLATIONS), [language], domain="messages")


def describe(entry: dict[str, Any], language: str = DEFAULT_LANGUAGE) -> Sentence:
    """One trace entry (`{path, result, value, expected, op, field|jsonpath, ...}`) in words."""
    parts = _plain_negation(explain(entry))
    words = translations(language_of(language))
    claim = _claim(parts, words)
    if parts.modifiers:
        modifier = MODIFIER_WORDS.get(frozenset(parts.modifiers))
        if modifier:
            claim = f"{claim} ({words.gettext(modifier)})"
    if parts.negated:
        claim = words.gettext(NEGATED) % {"claim": claim}
    return Sentence(claim=claim, seen=_seen(parts, words), result=parts.result, depth=parts.depth)


#: Operators with a word for their opposite: `not: {equals: VIP}` reads "does not equal", not "it is not
#: true that … equals" (which is right, but read twice by everyone).
OPPOSITES = {"equals": "not_equals", "in": "not_in", "contains": "not_contains", "matches": "not_matches"}
OPPOSITES.update({negated: plain for plain, negated in OPPOSITES.items()})


def _plain_negation(parts: Explanation) -> Explanation:
    if not parts.negated:
        return parts
    if parts.op in OPPOSITES:
        return replace(parts, op=OPPOSITES[parts.op], negated=False)
    if parts.op in ("exists", "empty") and isinstance(parts.operand, bool):
        return replace(parts, operand=not parts.operand, negated=False)
    return parts


def _claim(parts: Explanation, words: NullTranslations) -> str:
    subject = parts.subject or parts.path
    operand = parts.operand
    if parts.op in ("exists", "empty"):
        key = parts.op if operand is not False else f"not_{parts.op}"
        return words.gettext(CLAIMS[key]) % {"subject": subject}
    if parts.op == "between" and isinstance(operand, list) and len(operand) == 2:
        low, high = (value_text(v, words) for v in operand)
        return words.gettext(CLAIMS["between"]) % {"subject": subject, "low": low, "high": high}
    if parts.op == "changed":
        sides = operand if isinstance(operand, dict) else {}
        key = "changed" + ("_from" if "from" in sides else "") + ("_to" if "to" in sides else "")
        return words.gettext(CLAIMS[key]) % {"subject": subject, "before": value_text(sides.get("from"), words),
                                             "after": value_text(sides.get("to"), words)}  # fmt: skip
    message = CLAIMS.get(parts.op, CLAIMS[""])
    return words.gettext(message) % {"subject": subject, "operand": value_text(operand, words), "path": parts.path}


def _seen(parts: Explanation, words: NullTranslations) -> str:
    if parts.op in ("all", "any", "not"):
        return ""
    if parts.error:
        return words.gettext(COULD_NOT) % {"error": parts.error}
    if parts.op == "changed" and isinstance(parts.seen, dict):
        before = value_text(parts.seen.get("from"), words)
        after = value_text(parts.seen.get("to"), words)
        if not parts.seen.get("changed"):
            return words.gettext(NO_CHANGE) % {"value": after}
        return words.gettext(SAW_CHANGE) % {"before": before, "after": after}
    if parts.op == "template":
        return words.gettext(TEMPLATE_GAVE) % {"value": value_text(parts.seen, words)}
    if parts.missing:
        return words.gettext(HAS_NO_VALUE)
    return words.gettext(SAW) % {"value": value_text(parts.seen, words)}


def value_text(value: Any, words: NullTranslations | None = None) -> str:
    """A value as a reader writes it: [Youtube, Sendo], "VIP", 3, true; nothing as "no value"."""
    if value is None:
        return (words or NullTranslations()).gettext(ABSENT)
    if isinstance(value, str):
        return f"“{value}”"
    if isinstance(value, list):
        return "[" + ", ".join(_inner(item) for item in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _inner(value: Any) -> str:
    return value if isinstance(value, str) else value_text(value)
