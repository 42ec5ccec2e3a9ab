"""Small edits of a rule file's text for the console's quick actions: enable/disable a rule, add a test.

A rule file belongs to the business user who wrote it: comments, blank lines, quoting,
key order, indentation and line endings are theirs. So these edits never load and re-dump
the file. They find the spot with the parser's positions, splice a few characters there,
then load the result again and compare its data with what the edit meant; anything else
is refused with EditRefused, which says what to do by hand, rather than written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from engine.errors import HanaRulesError
from engine.hana import canonical_event_type
from engine.rules.schema import SCHEMA
from engine.rules.yaml_loader import YamlError, load_yaml, resolve_scalar

#: Characters PyYAML ends a line at; offsets computed here must agree with its line numbers.
_BREAKS = "\r\n\x85\u2028\u2029"
_TEST_SCHEMA = Draft202012Validator(SCHEMA["$defs"]["test"])
#: Absent keys, told apart from keys whose value is null.
_ABSENT = object()
#: A `$` the loader would read as the start of `${NAME}` or `$$`; written `$$`, it reads back as `$`.
_DOLLAR = re.compile(r"\$(?=[{$])")


class EditRefused(HanaRulesError):
    """The edit cannot be made without touching more than it should; the message says why and what to do."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        super().__init__(f"line {line}: {message}" if line is not None else message)


class _AnyVariable(Mapping[str, str]):
    """An environment where every `${NAME}` is set: an edit must work without the server's secrets."""

    def __getitem__(self, name: str) -> str:
        return ""

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:  # empty to iterate, yet never taken for "no environment given"
        return True


def set_enabled(text: str, rule_id: str, enabled: bool) -> str:
    """`text` with rule `rule_id`'s `enabled:` set; unchanged when it already says so.

    An existing value is rewritten in place (its comment kept, aligned as before); a missing
    key is written as `enabled: false` on the line after `id:` (absent already means true).
    """
    data = _data(text)
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        raise EditRefused("this file has no `rules:` list")
    found = [i for i, rule in enumerate(rules) if isinstance(rule, dict) and rule.get("id") == rule_id]
    if not found:
        raise EditRefused(f"there is no rule {rule_id!r} in this file")
    if len(found) > 1:
        raise EditRefused(f"rule {rule_id!r} is written {len(found)} times in this file; give each rule its own id")
    rule = rules[found[0]]
    current = rule.get("enabled", _ABSENT)
    if current is enabled or (current is _ABSENT and enabled):
        return text
    node = _rule_node(text, found[0], rule_id)
    word = "true" if enabled else "false"
    if current is _ABSENT:
        edited = _insert_after_id(text, node, f"enabled: {word}")
    else:
        edited = _replace_scalar(text, _value(node, "enabled"), word)
    expected = {**data, "rules": [*rules[: found[0]], {**rule, "enabled": enabled}, *rules[found[0] + 1 :]]}
    _verify(edited, expected, f"{'enable' if enabled else 'disable'} rule {rule_id!r}")
    return edited


def new_test(name: str, event: str, payload: Mapping[str, Any], *, previous: Mapping[str, Any] | None = None,
             matched: list[str] | tuple[str, ...] = (), not_matched: list[str] | tuple[str, ...] = ()
             ) -> dict[str, Any]:  # fmt: skip
    """A `tests:` entry in the order people read one: what happens, to what, what should follow."""
    test: dict[str, Any] = {"name": name, "event": event}
    if previous:
        test["previous"] = dict(previous)
    test["payload"] = dict(payload)
    expect: dict[str, Any] = {}
    if matched:
        expect["matched"] = list(matched)
    if not_matched:
        expect["not_matched"] = list(not_matched)
    test["expect"] = expect
    return test


def add_test(text: str, test: Mapping[str, Any]) -> str:
    """`text` with `test` appended to its top-level `tests:` list (created at the end when absent).

    The entry is written as block YAML indented like the file's own lists; the rest of the
    file is kept byte for byte.
    """
    entry = _checked_test(test)
    data = _data(text)
    if data is None:
        data = {}  # an empty file, or one holding only comments
    if not isinstance(data, dict):
        raise EditRefused("this file is not a mapping with `rules:` and `tests:`")
    root = _tree(text)
    if isinstance(root, yaml.MappingNode) and root.flow_style:
        raise EditRefused("this file is written in flow style ({rules: …}); add the test by hand",
                          *_where(root))  # fmt: skip
    existing = data.get("tests", _ABSENT)
    newline = _newline(text)
    rules = _value(root, "rules") if isinstance(root, yaml.MappingNode) else None
    if existing is _ABSENT:
        edited = _append_tests_key(text, root, rules, entry, newline)
    else:
        node = _value(root, "tests")
        if isinstance(node, yaml.SequenceNode) and node.value and not node.flow_style:
            lines = [""] * _spaced(text, node) + _entry_lines(entry, *_list_style(node))
            edited = _insert_lines(text, _content_end(node.value[-1]), lines, newline)
        elif existing is None or existing == []:
            edited = _fill_empty_tests(text, root, node, rules, entry, newline)
        else:
            line, column = _where(node) if node is not None else (None, None)
            what = "written in flow style ([…])" if isinstance(node, yaml.SequenceNode) else "not a list"
            raise EditRefused(f"`tests:` is {what}; write each test as a `- name: …` item under it", line, column)
    expected = {**data, "tests": [*(existing if isinstance(existing, list) else []), entry]}
    _verify(edited, expected, "add the test")
    return edited


# --- reading -------------------------------------------------------------------------------------


def _data(text: str) -> Any:
    """The file's data as the rule loader reads it: a file it refuses is not edited either."""
    try:
        return load_yaml(text, _AnyVariable()).value
    except YamlError as exc:
        raise EditRefused(f"the file is not valid as it is: {exc.message}; fix it in the editor first",
                          exc.line, exc.column) from None  # fmt: skip


def _tree(text: str) -> yaml.Node | None:
    """The file as nodes with exact start and end offsets (the pure-Python parser counts characters)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:  # the loader accepted it: unexpected, but never a traceback for the user
        raise EditRefused(f"the file could not be read for editing: {exc}") from None


def _value(node: yaml.Node | None, name: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for key, value in node.value if isinstance(key, yaml.ScalarNode) and key.value == name), None)


def _where(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _rule_node(text: str, index: int, rule_id: str) -> yaml.MappingNode:
    root = _tree(text)
    if not isinstance(root, yaml.MappingNode) or root.flow_style:
        raise EditRefused("this file is written in flow style ({rules: …}); change the rule by hand")
    rules = _value(root, "rules")
    if not isinstance(rules, yaml.SequenceNode) or rules.flow_style:
        raise EditRefused("`rules:` is written in flow style ([…]); write each rule as a `- id: …` item to change "
                          "it here", *(_where(rules) if rules is not None else ()))  # fmt: skip
    node = rules.value[index]
    if not isinstance(node, yaml.MappingNode) or node.flow_style:
        raise EditRefused(f"rule {rule_id!r} is written on one line ({{id: …}}); write one key per line to change "
                          "it here", *_where(node))  # fmt: skip
    return node


def _content_end(node: yaml.Node) -> int:
    """Where a node's last character is: a block collection's own end mark lies past trailing comments."""
    while isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.value and not node.flow_style:
        last = node.value[-1]
        node = last[1] if isinstance(node, yaml.MappingNode) else last
    return int(node.end_mark.index)


def _next_line(text: str, index: int) -> tuple[int, str]:
    """Where the line after the one ending at `index` starts, and that line's break ("" at the end of the file).

    A block scalar's end is already the start of the next line.
    """
    if index > 0 and text[index - 1] in _BREAKS:
        return index, "\r\n" if text[max(0, index - 2) : index] == "\r\n" else _usual(text[index - 1])
    end = index
    while end < len(text) and text[end] not in _BREAKS:
        end += 1
    if end == len(text):
        return end, ""
    brk = "\r\n" if text.startswith("\r\n", end) else text[end]
    return end + len(brk), _usual(brk)


def _usual(brk: str) -> str:
    return brk if brk in ("\n", "\r\n", "\r") else "\n"


def _newline(text: str) -> str:
    """The file's own line break, for new lines: a CRLF file stays CRLF."""
    for index, char in enumerate(text):
        if char in _BREAKS:
            return "\r\n" if text.startswith("\r\n", index) else _usual(char)
    return "\n"


def _list_style(node: yaml.SequenceNode) -> tuple[int, int]:
    """(column of `-`, column of the item's keys) of a block list, 0-based."""
    dash = int(node.start_mark.column)
    first = node.value[0]
    key = int(first.start_mark.column) if first.start_mark.line == node.start_mark.line else dash + 2
    return dash, max(key, dash + 2)


def _spaced(text: str, node: yaml.SequenceNode | None) -> bool:
    """Whether the list's items are separated by blank lines, so a new one follows suit."""
    if not isinstance(node, yaml.SequenceNode) or len(node.value) < 2 or node.flow_style:
        return False
    between = text[_content_end(node.value[-2]) : node.value[-1].start_mark.index]
    lines = between.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return any(not line.strip() for line in lines[1:-1])


# --- writing -------------------------------------------------------------------------------------


def _insert_lines(text: str, index: int, lines: list[str], nl: str) -> str:
    """`lines` after the line that holds `index`, ended like it; a file without a final line break stays so."""
    at, brk = _next_line(text, index)
    if not brk:
        return text + nl + nl.join(lines)
    return text[:at] + "".join(line + brk for line in lines) + text[at:]


def _replace_scalar(text: str, node: yaml.Node | None, word: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.style in ("|", ">") or node.start_mark.line != node.end_mark.line:
        line, column = _where(node) if node is not None else (None, None)
        raise EditRefused("`enabled:` is not a one-line value; write `enabled: true` or `enabled: false`", line, column)
    start, end = int(node.start_mark.index), int(node.end_mark.index)
    if start == end:  # `enabled:` with nothing after the colon
        word = " " + word
    spaces = 0
    while end + spaces < len(text) and text[end + spaces] == " ":
        spaces += 1
    if end + spaces < len(text) and text[end + spaces] == "#" and spaces:
        # Keep a trailing comment in its column: `true   # why` → `false  # why`.
        shift = len(word) - (end - start)
        if shift > 0:
            end += min(shift, spaces - 1)
        else:
            word += " " * -shift
    return text[:start] + word + text[end:]


def _insert_after_id(text: str, rule: yaml.MappingNode, line: str) -> str:
    key = next(k for k, _ in rule.value if isinstance(k, yaml.ScalarNode) and k.value == "id")
    value = _value(rule, "id")
    assert value is not None
    return _insert_lines(text, _content_end(value), [" " * int(key.start_mark.column) + line], _newline(text))


def _append_tests_key(text: str, root: yaml.Node | None, rules: yaml.Node | None, entry: Any, nl: str) -> str:
    column = int(root.start_mark.column) if isinstance(root, yaml.MappingNode) else 0
    dash, key = _default_style(rules, column)
    prefix = ""
    if text and text[-1] not in _BREAKS:
        prefix = nl
    if text.strip() and not _ends_blank(text + prefix):
        prefix += nl
    return text + prefix + nl.join([" " * column + "tests:", *_entry_lines(entry, dash, key)]) + nl


def _fill_empty_tests(text: str, root: yaml.Node | None, node: yaml.Node | None, rules: yaml.Node | None,
                      entry: Any, nl: str) -> str:  # fmt: skip
    """`tests:`, `tests: ~` or `tests: []` becomes a block list; a comment on its line stays."""
    assert isinstance(root, yaml.MappingNode) and node is not None
    start, end = int(node.start_mark.index), int(node.end_mark.index)
    if node.start_mark.line != node.end_mark.line:
        raise EditRefused("`tests:` spans several lines; write each test as a `- name: …` item under it",
                          *_where(node))  # fmt: skip
    while start > 0 and text[start - 1] == " ":  # `tests: []  # none yet` → `tests:  # none yet`
        start -= 1
    column = next(int(k.start_mark.column) for k, v in root.value if v is node)
    return _insert_lines(text[:start] + text[end:], start, _entry_lines(entry, *_default_style(rules, column)), nl)


def _default_style(rules: yaml.Node | None, column: int) -> tuple[int, int]:
    """A new `tests:` list is indented like the file's `rules:` list, else two spaces past its key."""
    if isinstance(rules, yaml.SequenceNode) and rules.value and not rules.flow_style:
        return _list_style(rules)
    return column + 2, column + 4


def _ends_blank(text: str) -> bool:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return len(lines) < 2 or not lines[-2].strip()


class _Dumper(yaml.SafeDumper):
    """safe_dump, except that lists under a key are indented as people write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML quotes what YAML 1.1 would misread; the rule loader reads `1e5` and `-.5` as numbers too.
    style = None if isinstance(resolve_scalar(value, None, None), str) else "'"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _entry_lines(entry: Any, dash: int, key: int) -> list[str]:
    """One `- name: …` item, as safe_dump writes it, shifted to the list's columns."""
    dumped = yaml.dump(_escape_dollars(entry), Dumper=_Dumper, allow_unicode=True, sort_keys=False,
                       default_flow_style=False, width=4096)  # fmt: skip
    lines = dumped.rstrip("\n").split("\n")
    first = " " * dash + "-" + " " * (key - dash - 1) + lines[0]
    return [first, *((" " * key + line) if line else line for line in lines[1:])]


def _escape_dollars(value: Any) -> Any:
    """`${` → `$${` in values: the loader reads `${NAME}` in every value, and a lead's text is never a reference."""
    if isinstance(value, str):
        return _DOLLAR.sub("$$", value)
    if isinstance(value, Mapping):
        return {key: _escape_dollars(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_dollars(item) for item in value]
    return value


def _checked_test(test: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(test, Mapping):
        raise EditRefused("a test is a mapping with name, event, payload and expect")
    entry = {key: _plain(value) for key, value in test.items()}
    problems = sorted(_TEST_SCHEMA.iter_errors(entry), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        where = "/".join(map(str, problems[0].absolute_path))
        raise EditRefused(f"this test cannot be written: {where + ': ' if where else ''}{problems[0].message}")
    if canonical_event_type(entry["event"]) is None:
        raise EditRefused(f"a test needs one concrete event type such as lead.created, got {entry['event']!r}")
    return entry


def _plain(value: Any) -> Any:
    """Mappings and tuples as the loader gives them back, so the check after writing compares like with like."""
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise EditRefused("this test cannot be written: its keys must be text, as in the JSON Hana sends")
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _verify(edited: str, expected: Any, what: str) -> None:
    """Load the result as the rule loader will: the data must be exactly what the edit meant."""
    try:
        actual = load_yaml(edited, _AnyVariable()).value
    except YamlError as exc:
        raise EditRefused(f"could not {what} without breaking the file ({exc.message}); edit it by hand") from None
    if _canonical(actual, what) != _canonical(expected, what):
        raise EditRefused(f"could not {what} without changing something else; edit the file by hand")


def _canonical(value: Any, what: str) -> str:
    """Types count: `true` is not `1` and `1.0` is not `1`."""
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        raise EditRefused(f"could not {what}: it holds values a rule file cannot keep (keys must be text)") from None
