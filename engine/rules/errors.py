"""Rule errors are data: gathered over a whole rule set, printed one per line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import HanaRulesError

#: Line breaks and other control characters, which a key or a quoted value may hold (`"a\nb": 1`).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with its control characters escaped, so that an error is always one line."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


@dataclass(frozen=True)
class RuleError:
    """One mistake in a rule file, located to the character."""

    file: str
    line: int
    column: int
    message: str
    rule_id: str | None = None
    path: str = ""
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        path = f" {self.path}:" if self.path else ""
        hint = f" ({self.hint})" if self.hint else ""
        return one_line(f"{where}{rule}{path} {self.message}{hint}")

    def as_json(self) -> dict[str, object]:
        return {
            "file": self.file, "line": self.line, "column": self.column, "rule": self.rule_id,
            "path": self.path, "message": self.message, "hint": self.hint, "text": str(self),
        }  # fmt: skip


class RuleSetError(HanaRulesError):
    """A rule set with any error is refused as a whole."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file, e.line, e.column))
        count = len(self.errors)
        super().__init__(f"{count} error{'s' if count != 1 else ''} in the rules:\n" + "\n".join(map(str, self.errors)))
