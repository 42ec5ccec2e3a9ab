"""The engine's error texts in the reader's language, on the console's pages.

Delivery errors and quarantine reasons are written once, in English, where they happen
(engine/actions, engine/runtime/intake.py): the CLI, the admin API and the logs carry them
as they are, and a test elsewhere pins their wording. The console puts the ones a business
user meets most into the reader's words here, at the edge, keeping the engine's exact words
one click away (they are what an admin searches the logs for). A text no pattern knows is
shown as it is and marked as the engine's own words.

Patterns are anchored and linear (no nested repetition): part of a text can come from a
partner's answer, cut to 200 characters where it is made.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from flask_babel import get_locale
from flask_babel import gettext as _

#: Long enough for every text the engine writes; a longer one is shown untouched.
LONGEST = 2000


@dataclass(frozen=True)
class Problem:
    shown: str  # what the page says
    original: str | None  # the engine's exact words, when `shown` differs from them
    untranslated: bool  # the reader reads another language, and no pattern knew this text


Words = Callable[[dict[str, str]], str]
Table = tuple[tuple[re.Pattern[str], Words], ...]


def _table(entries: tuple[tuple[str, Words], ...]) -> Table:
    """(anchored pattern, words) pairs, compiled once."""
    return tuple((re.compile(pattern, re.DOTALL), words) for pattern, words in entries)


def _reworded(text: str, table: Table) -> str | None:
    """`text` in the reader's words by the first pattern of `table` it matches whole; None if none does
    (or the reader reads English, the engine's own language, or the text is too long to be the engine's)."""
    if not text or str(get_locale() or "en") == "en" or len(text) > LONGEST:
        return None
    for pattern, words in table:
        match = pattern.fullmatch(text)
        if match:
            return words(match.groupdict())
    return None


def _known() -> Table:
    """(pattern, words) for the texts a business user meets most; `words` calls gettext with
    literal messages, so `pybabel extract` finds them."""
    return _table((
        (r"no hana_update_url/access_token configured for (?P<app>.+)", lambda m: _(
            "No Hana update URL or access token is set for %(app)s: add hana_update_url and access_token "
            "to its application in the settings, then retry.", **m)),
        (r"Hana refused the access token of (?P<app>.+?) \((?P<status>\d{3})\); its hana_update actions are "
         r"parked until an admin fixes the token and retries them", lambda m: _(
            "Hana refused the access token of %(app)s (%(status)s). Its updates to Hana wait (parked) until an "
            "admin fixes the token and resumes them.", **m)),
        (r"could not connect: (?P<detail>.*)", lambda m: _(
            "Could not connect to the partner (%(detail)s); it is tried again.", **m)),
        (r"request failed: (?P<detail>.*)", lambda m: _("The request failed on the way (%(detail)s).", **m)),
        (r"no complete answer within (?P<seconds>[0-9.]+)s", lambda m: _(
            "The partner did not answer completely within %(seconds)s s; it is tried again.", **m)),
        (r"answered (?P<status>\d{3}) redirect to (?P<location>[^;]*); redirects are not followed", lambda m: _(
            "The partner answered %(status)s and sent us elsewhere (%(location)s); redirects are not followed: "
            "put the final address in the rule.", **m)),
        (r"answered (?P<status>\d{3}): (?P<answer>.*)", lambda m: _(
            "The partner answered %(status)s: %(answer)s", **m)),
        (r"host (?P<host>'[^']*') is not in outbound\.allow_hosts; add it there to allow calls to it", lambda m: _(
            "Host %(host)s is not on the allowed list (outbound.allow_hosts); an admin adds it there to allow "
            "calls to it.", **m)),
        (r"the job ran out of time before the delivery ended", lambda m: _(
            "The delivery took longer than its job may run; it is tried again.")),
        (r"interrupted: the worker stopped during delivery \(its lease expired\)", lambda m: _(
            "Interrupted: the worker stopped while sending; it is tried again.")),
        (r"email: no smtp settings configured", lambda m: _(
            "Email cannot be sent: no SMTP server is set in the settings.")),
        (r"email: every recipient was refused", lambda m: _("The mail server refused every recipient.")),
        (r"email: the SMTP server answered (?P<code>\d+).*", lambda m: _(
            "The mail server answered %(code)s.", **m)),
        (r"the body is empty; Hana sends a JSON object", lambda m: _(
            "The body was empty; Hana always sends a JSON object.")),
        (r"the body is not valid JSON \((?P<detail>.*)\)", lambda m: _(
            "The body is not valid JSON (%(detail)s).", **m)),
        (r"the body is a JSON (?P<kind>[a-z]+), not an object", lambda m: _(
            "The body is a JSON %(kind)s, not the object Hana sends.", **m)),
        (r"the body is nested more than (?P<depth>\d+) levels deep", lambda m: _(
            "The body is nested more than %(depth)s levels deep.", **m)),
        (r"the body names application (?P<named>.+), but the token belongs to (?P<owner>.+); a token never lets "
         r"one application act as another", lambda m: _(
            "The body names application %(named)s, but the token belongs to %(owner)s; one application's token "
            "never acts for another.", **m)),
    ))  # fmt: skip


_KNOWN = _known()


def _rule_known() -> Table:
    """The rule mistakes the editor underlines most, and their hints (engine/rules/compiler.py, loader.py)."""
    return _table((
        (r"unknown event type (?P<name>'[^']*'); use lead\.created … opportunity\.deleted, ticket\.\*, or "
         r"wildcards lead\.\*, \*\.created, \*", lambda m: _(
            "unknown event type %(name)s; use lead.created … opportunity.deleted, ticket.*, or wildcards lead.*, "
            "*.created, *", **m)),
        (r"did you mean (?P<name>'[^']*')\?", lambda m: _("did you mean %(name)s?", **m)),
        (r"unknown key (?P<name>'[^']*') here", lambda m: _("unknown key %(name)s here", **m)),
        (r"unknown operator or key (?P<name>'[^']*') in a condition", lambda m: _(
            "unknown operator or key %(name)s in a condition", **m)),
        (r"not valid YAML: (?P<detail>.*)", lambda m: _("not valid YAML: %(detail)s",
                                                         detail=_yaml_words().get(m["detail"], m["detail"]))),
        (r"(?P<name>\S+) has never been seen in (?P<entity>lead|opportunity) events; did you mean (?P<close>\S+)\?",
         lambda m: _("%(name)s has never been seen in %(entity)s events; did you mean %(close)s?", **m)),
        (r"(?P<name>\S+) has never been seen in (?P<entity>lead|opportunity) events", lambda m: _(
            "%(name)s has never been seen in %(entity)s events", **m)),
        (r"the names come from the (?P<entity>\w+) events received so far \(hana-rules fields\); check the "
         r"spelling, or ignore this if Hana has not sent this attribute yet", lambda m: _(
            "the names come from the %(entity)s events received so far; check the spelling, or ignore this if "
            "Hana has not sent this attribute yet", **m)),
        (r"expected (?P<rule>\S+) to match, but there is no rule with that id", lambda m: _(
            "expected %(rule)s to match, but there is no rule with that id", **m)),
        (r"expected (?P<rule>\S+) to match, but it did not: (?P<why>.*)", lambda m: _(
            "expected %(rule)s to match, but it did not: %(why)s", **m)),
        (r"expected (?P<rule>\S+) not to match, but it did", lambda m: _(
            "expected %(rule)s not to match, but it did", **m)),
        (r"(?P<name>'[^']*') is required here", lambda m: _("%(name)s is required here", **m)),
        (r"template syntax error: (?P<detail>.*)", lambda m: _("template syntax error: %(detail)s", **m)),
        (r"duplicate rule id (?P<name>'[^']*') \(first defined at (?P<where>[^)]*)\)", lambda m: _(
            "duplicate rule id %(name)s (first defined at %(where)s)", **m)),
        (r"rule ids must be unique across all files", lambda m: _("rule ids must be unique across all files")),
        (r"(?P<operator>[a-z_]+) expects a list of values", lambda m: _(
            "%(operator)s expects a list of values", **m)),
        (r"expected a text or a list, got a (?P<kind>[a-z]+)", lambda m: _(
            "expected a text or a list, got a %(kind)s", **m)),
    ))  # fmt: skip


def _yaml_words() -> dict[str, str]:
    """PyYAML's most frequent complaints, which come after "not valid YAML: "."""
    return {
        "could not find expected ':'": _("a ':' is missing after a key"),
        "did not find expected '-' indicator": _("a list item's '-' is missing (is the indentation right?)"),
        "mapping values are not allowed here": _(
            "a value cannot go here (a space missing after ':', or the indentation is off?)"),
        "did not find expected key": _("a key is missing here (is the indentation right?)"),
        "found character that cannot start any token": _(
            "a character that cannot start a value here (a Tab? YAML indents with spaces only)"),
        "did not find expected ',' or ']'": _("a ',' or the closing ']' of a list is missing"),
        "did not find expected ',' or '}'": _("a ',' or the closing '}' is missing"),
        "found unexpected end of stream": _("the file ends inside a quoted text or a bracket"),
    }  # fmt: skip


_RULE_KNOWN = _rule_known()


def rule_problem(text: str) -> str:
    """A rule mistake or its hint in the reader's language when it is one the editor meets most; else as written."""
    return _reworded(text, _RULE_KNOWN) or text


def in_words(text: str | None) -> Problem:
    """`text` as the reader should see it (see the module's docstring)."""
    text = text or ""
    shown = _reworded(text, _KNOWN)
    if shown is not None:
        return Problem(shown, text, False)
    return Problem(text, None, bool(text) and str(get_locale() or "en") != "en" and len(text) <= LONGEST)


def _history_known() -> Table:
    """The messages the engine itself gives a published version (supervisor.py, rule_files.py, versions.py)."""
    return _table((
        (r"rules at start", lambda m: _("the rule files when the server started")),
        (r"published before history was kept", lambda m: _("running before the history was kept")),
        (r"edited (?P<file>\S+)", lambda m: _("%(file)s edited", **m)),
        (r"(?P<state>enabled|disabled) (?P<rule>\S+) \(console\)", lambda m: (
            _("rule %(rule)s turned on", rule=m["rule"]) if m["state"] == "enabled"
            else _("rule %(rule)s turned off", rule=m["rule"]))),
        (r"test from event (?P<event>\S+) \(console\)", lambda m: _("a test made from event %(event)s", **m)),
        (r"rollback to (?P<version>\S+) \((?P<source>[\w-]+)\)(?:: (?P<why>.*))?", lambda m: (
            _("back to version %(version)s: %(why)s", version=m["version"][:12], why=m["why"]) if m["why"]
            else _("back to version %(version)s", version=m["version"][:12]))),
    ))  # fmt: skip


_HISTORY_KNOWN = _history_known()


def history_message(text: str) -> str:
    """A version's message in the reader's language when the engine wrote it; a person's words as written."""
    return _reworded(text, _HISTORY_KNOWN) or text
