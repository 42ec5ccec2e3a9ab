"""Draft rule files checked as reload would check them, without touching the disk or the running set.

The editor sends the file being typed (or several); the rest of the set is what
is on disk now, so a draft that reuses an id of another file, or breaks nothing
alone but something together, is caught as the reload would catch it. Drafts
are named by their path inside `rules_dir` (`vip.yaml`, `team/sales.yaml`): the
only names a browser may give, refused when they could point anywhere else.
Errors come back under the same names, so the editor finds its own.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from engine.config import Settings
from engine.rules.errors import RuleError, RuleSetError
from engine.rules.loader import display_name, read_texts, rule_files
from engine.rules.reads import Seen, unseen_attributes
from engine.rules.ruleset import RuleSet
from engine.runtime.loading import compile_rules

RULE_SUFFIXES = (".yaml", ".yml")
PATH_REFUSED = "path must be a rule file inside rules_dir (a relative path ending in .yaml or .yml, without ..)"


class DraftPathError(ValueError):
    """A draft named by a path that is not a rule file inside rules_dir."""


class ChecksBusy(Exception):
    """Another draft is being compiled in this process: answer "try again in a moment" (429)."""


#: Compiling a draft is CPU work on the receiver's own request threads (SPEC §10: one process and port),
#: so a process compiles one draft at a time: Hana's webhooks keep the other threads, and a burst of
#: typing pauses from several editors cannot take them all (bench/dry_run_load.py).
_ONE_CHECK = threading.BoundedSemaphore(1)


@contextmanager
def one_check_at_a_time() -> Iterator[None]:
    if not _ONE_CHECK.acquire(blocking=False):
        raise ChecksBusy("another draft is being checked in this process; try again in a moment")
    try:
        yield
    finally:
        _ONE_CHECK.release()


@dataclass(frozen=True)
class ValidationResult:
    """What the editor underlines: every error, named by rules_dir-relative path; the candidate when valid."""

    errors: tuple[RuleError, ...]
    rule_set: RuleSet | None
    warnings: tuple[RuleError, ...] = ()  # attributes no event ever carried: worth a look, never a refusal

    @property
    def version(self) -> str | None:
        return self.rule_set.version if self.rule_set is not None else None

    def as_json(self) -> dict[str, Any]:
        keys = ("file", "line", "column", "rule", "path", "message", "hint", "text")
        return {
            "errors": [{key: error.as_json().get(key) for key in keys} for error in self.errors],
            "warnings": [{key: warning.as_json().get(key) for key in keys} for warning in self.warnings],
            "rules": len(self.rule_set.rules) if self.rule_set is not None else None,
            "version": self.version,
        }


def checked_path(rules_dir: Path, path: object) -> str:
    """`path` as a clean rules_dir-relative POSIX path, or DraftPathError.

    Refused: anything not a text, absolute paths, `..`, backslashes, control characters,
    other suffixes, spellings other than the plain one (`./a.yaml`), and a path whose
    existing parts lead outside rules_dir (a symlink).
    """
    if not isinstance(path, str) or not path or len(path) > 1024 or "\\" in path:
        raise DraftPathError(PATH_REFUSED)
    if any(ord(c) < 32 or ord(c) == 127 or unicodedata.category(c) in ("Cs", "Cf", "Co") for c in path):
        raise DraftPathError(PATH_REFUSED)  # control, invisible or direction-changing characters, half characters
    if unicodedata.normalize("NFC", path) != path:
        raise DraftPathError(PATH_REFUSED)  # a second spelling of the same letters: one name per file
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or pure.suffix not in RULE_SUFFIXES or pure.as_posix() != path:
        raise DraftPathError(PATH_REFUSED)  # as_posix differs for `./a.yaml`, `a//b.yaml`: one name per file
    base = rules_dir.resolve()
    try:
        (base / pure).resolve().relative_to(base)
    except (ValueError, OSError, RuntimeError) as exc:  # outside, or a symlink loop
        raise DraftPathError(PATH_REFUSED) from exc
    return pure.as_posix()


def draft_texts(settings: Settings, files: Mapping[str, str]) -> tuple[dict[str, str], list[RuleError], dict[str, str]]:
    """The set as reload would read it with the drafts in place: (texts, read errors, display name → path).

    Each draft replaces the file of the same path, or joins the set as a new file. A draft's
    unreadable twin on disk (say, not UTF-8) is replaced, so its read error goes too.
    DraftPathError when a draft's path is not a rule file inside rules_dir.
    """
    rules_dir = settings.rules_dir
    drafts: dict[str, tuple[str, str]] = {}
    for path, text in files.items():
        relative = checked_path(rules_dir, path)
        drafts[display_name(rules_dir / relative)] = (relative, text)
    texts, read_errors = read_texts(rules_dir)
    names = {display_name(p): p.relative_to(rules_dir).as_posix() for p in rule_files(rules_dir)}
    for name, (relative, text) in drafts.items():
        texts[name] = text
        names[name] = relative
    return texts, [e for e in read_errors if e.file not in drafts], names


def compile_draft_texts(settings: Settings, files: Mapping[str, str]) -> tuple[RuleSet, dict[str, str]]:
    """The candidate set and the texts it was compiled from (what a worker compiles again for a dry run)."""
    rule_set, texts, _ = _compiled_draft(settings, files)
    return rule_set, texts


def _compiled_draft(settings: Settings, files: Mapping[str, str]) -> tuple[RuleSet, dict[str, str], dict[str, str]]:
    """(candidate set, its texts, display name → path), or RuleSetError named by path inside rules_dir."""
    texts, read_errors, names = draft_texts(settings, files)
    unwritable = [error for path, text in files.items() if (error := _surrogate(path, text))]
    if unwritable:
        raise RuleSetError(unwritable)
    try:
        return compile_rules(texts, settings, read_errors=read_errors), texts, names
    except RuleSetError as exc:
        raise RuleSetError([_renamed(error, names) for error in exc.errors]) from exc


def validate_draft(settings: Settings, files: Mapping[str, str], *, seen: Seen | None = None) -> ValidationResult:
    """Every error of the set with the drafts in place (none: the candidate set); DraftPathError for a bad path.

    `seen`, the attribute catalogue's names (fields.Catalogue.seen): a valid set also gets a warning for
    each attribute a rule reads that no event of its applications ever carried.
    """
    try:
        rule_set, _, names = _compiled_draft(settings, files)
    except RuleSetError as exc:
        return ValidationResult(errors=tuple(exc.errors), rule_set=None)
    if not seen:
        return ValidationResult(errors=(), rule_set=rule_set)
    drafted = {name for name, path in names.items() if path in files}  # warn about the drafts, not the rest
    own = SimpleNamespace(rules=[rule for rule in rule_set.rules if rule.file in drafted])
    warnings = tuple(_renamed(warning, names) for warning in unseen_attributes(own, seen))
    return ValidationResult(errors=(), rule_set=rule_set, warnings=warnings)


def files_from_body(body: object) -> dict[str, str]:
    """The drafts of a request body `{files: {path: text}}` or `{path, text}`; ValueError says what to send.

    Only the types are checked here; each path is checked against rules_dir when merged (DraftPathError).
    """
    if not isinstance(body, dict):
        raise ValueError('the body must be a JSON object: {"files": {"<path>": "<text>"}} or {"path": …, "text": …}')
    if "files" in body:
        if "path" in body or "text" in body:
            raise ValueError("send either files or path and text, not both")
        files = body["files"]
        if not isinstance(files, dict):
            raise ValueError('files must be an object of rule file paths to their text: {"vip.yaml": "rules: …"}')
    elif "path" in body:
        if not isinstance(body["path"], str):
            raise DraftPathError(PATH_REFUSED)
        files = {body["path"]: body.get("text")}
    else:
        raise ValueError('send {"files": {"<path>": "<text>"}} or {"path": "<path>", "text": "<text>"}')
    for path, text in files.items():
        if not isinstance(text, str):
            raise ValueError(f"the text of {path!r} must be a string: the whole file")
    return files


def _surrogate(path: str, text: str) -> RuleError | None:
    """JSON can carry half a character (`"\\ud800"`) that no UTF-8 file can hold: where it stands, if any."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        column = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        return RuleError(path, line, column, f"half a character ({text[exc.start]!r}) that no file can hold",
                         hint="delete it and type the character again")  # fmt: skip
    return None


def _renamed(error: RuleError, names: Mapping[str, str]) -> RuleError:
    relative = names.get(error.file)
    return replace(error, file=relative) if relative is not None else error
