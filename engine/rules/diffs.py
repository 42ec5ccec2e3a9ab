"""Line diffs between two versions of a rule set, file by file (pure: texts in, diffs out).

The history page and `GET /admin/history/<version>` show what a published
version changed; the same function gives the +/- counts of the history list, so
the list and the page can never disagree.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    CHANGED = "changed"


@dataclass(frozen=True)
class FileDiff:
    """One file's change: a unified diff (`--- a/name`, `+++ b/name`, hunks) and its line counts."""

    file: str
    change: Change
    added: int
    removed: int
    diff: str

    def summary(self) -> dict[str, Any]:
        return {"file": self.file, "change": self.change.value, "added": self.added, "removed": self.removed}

    def as_json(self) -> dict[str, Any]:
        return {**self.summary(), "diff": self.diff}


def diff_files(older: Mapping[str, str], newer: Mapping[str, str], *, context: int = 3) -> list[FileDiff]:
    """Every file added, removed or changed from `older` to `newer`, by file name; unchanged files are left out."""
    diffs = []
    for name in sorted(older.keys() | newer.keys()):
        before, after = older.get(name), newer.get(name)
        if before == after:
            continue
        change = Change.ADDED if before is None else Change.REMOVED if after is None else Change.CHANGED
        lines = list(difflib.unified_diff(_lines(before), _lines(after), fromfile=f"a/{name}", tofile=f"b/{name}",
                                          n=context, lineterm=""))  # fmt: skip
        hunks = lines[2:]  # past the two header lines, a line's first character says what it is
        added = sum(line.startswith("+") for line in hunks)
        removed = sum(line.startswith("-") for line in hunks)
        diffs.append(FileDiff(name, change, added, removed, "\n".join(lines)))
    return diffs


def _lines(text: str | None) -> list[str]:
    """The lines of `text`; a last line without its newline is marked as `diff` marks it."""
    if not text:
        return []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    else:
        lines[-1] += "\n\\ No newline at end of file"
    return lines
