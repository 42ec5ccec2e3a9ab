"""Changing rule files from the editor and the history: one file saved, or a whole version restored.

The guarantees business users asked other tools for, kept here once for the
console, the admin API and the CLI:

- what is saved is exactly what was typed: the bytes, comments, trailing spaces
  and line endings, never a reformatted document;
- a file that changed on disk since the editor opened it is not overwritten: the
  save is refused with both versions, for the user to merge;
- the whole set is validated with the new text before anything is written, so a
  refused save leaves the disk and the running set as they were;
- a write is atomic (a temporary file beside the target, fsync, rename, fsync of
  the folder): a crash leaves the old file or the new one, never half of one;
- only files inside `rules_dir` can be written: a path that is absolute, climbs
  with `..`, leads outside through a symbolic link, is hidden or is not a
  `.yaml`/`.yml` file is refused before anything is read;
- check, write and publish hold this machine's rules lock, so two saves (or a save
  and a reload) cannot interleave.

Files are named by their path inside rules_dir (`vip.yaml`, `team/sales.yaml`),
the one name a browser may give; errors come back under the same names.

A rollback restores a version as the whole set it was: every file of the version
is written, and the rule files it did not have are deleted (a set is the whole
directory; leaving them would make the next reload publish them again). Their
text stays in the history when it was ever published. Line endings of a rolled
back file are those of the published text (`\\n`), since reload reads files in
text mode.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import unicodedata
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import HanaRulesError
from engine.rules.errors import RuleError, RuleSetError
from engine.rules.loader import display_name, read_texts, rule_files
from engine.rules.ruleset import RuleSet
from engine.runtime import history
from engine.runtime.file_lock import rules_lock
from engine.runtime.history import Source
from engine.runtime.loading import RuleRegistry, compile_rules
from engine.runtime.metrics import RELOADS

log = logging.getLogger(__name__)

READ_ONLY = "rules are managed elsewhere (console.read_only is on); change the files and run hana-rules reload"
RULE_SUFFIXES = (".yaml", ".yml")
NEW_FILE_MODE = 0o644
_EXAMPLE = "give its path inside rules_dir, such as vip.yaml or team/sales.yaml"


class RuleFileError(HanaRulesError):
    """A rule file cannot be written as asked; the message says what to do instead."""


class RefusedPath(RuleFileError):
    """The name is not that of a rule file inside rules_dir."""


class RefusedText(RuleFileError):
    """The text cannot be written as a file (not encodable as UTF-8)."""


class ReadOnly(RuleFileError):
    """`console.read_only`: the rule files are managed elsewhere (in git, say)."""


class UnknownVersion(RuleFileError):
    """No such version in the history, or its texts are no longer readable."""


class WriteFailed(RuleFileError):
    """The disk refused the write (full, read-only, permissions); nothing was published."""


class PublishFailed(WriteFailed):
    """Written, but Redis refused the publish: the files were put back as they were, nothing changed."""


class Conflict(RuleFileError):
    """The file changed on disk since the editor opened it; both versions, for the user to merge."""

    def __init__(self, message: str, *, disk: str | None, submitted: str) -> None:
        super().__init__(message)
        self.disk = disk
        self.submitted = submitted


@dataclass(frozen=True)
class RuleFile:
    """A rule file as the editor opens it: its exact text and the sha256 of its bytes (the `expected` of a save)."""

    name: str  # inside rules_dir: what a save is given
    file: str  # as in errors and the published set
    text: str | None
    sha256: str | None
    editable: bool
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        answer = {"name": self.name, "file": self.file, "text": self.text, "sha256": self.sha256,
                  "editable": self.editable}  # fmt: skip
        return answer | ({"error": self.error} if self.error else {})


@dataclass(frozen=True)
class SaveResult:
    name: str
    file: str
    sha256: str
    version: str
    rules: int
    changed: bool  # False when the set published is the one that ran already

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "file": self.file, "sha256": self.sha256, "version": self.version,
                "rules": self.rules, "changed": self.changed}  # fmt: skip


@dataclass(frozen=True)
class RollbackResult:
    version: str
    rules: int
    rolled_back_to: str
    written: tuple[str, ...]
    removed: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "rules": self.rules, "rolled_back_to": self.rolled_back_to,
                "written": list(self.written), "removed": list(self.removed)}  # fmt: skip


def resolve(rules_dir: Path, name: object, *, hidden_ok: bool = False) -> Path:
    """The path of rule file `name` (relative to rules_dir, `/` between folders), or RefusedPath saying why.

    Only one spelling per file is accepted (`./a.yaml` and `a//b.yaml` are refused), so a
    name always means the same file and the same history entry.
    """
    if not isinstance(name, str) or not name:
        raise RefusedPath(f"a rule file needs a name: {_EXAMPLE}")
    if len(name) > 1024 or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise RefusedPath(f"{name[:80]!r} is not a usable file name: {_EXAMPLE}, with / between folders")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise RefusedPath(f"{name[:80]!r} is not a usable file name: {_EXAMPLE}") from None
    if unicodedata.normalize("NFC", name) != name or any(unicodedata.category(c) in ("Cf", "Cs", "Co") for c in name):
        # invisible or direction-changing characters, or a second spelling of the same letters: a name that
        # reads as one file and is another
        raise RefusedPath(f"{name[:80]!r} holds invisible characters or letters spelled two ways: type the name again")
    pure = PurePosixPath(name)
    if pure.is_absolute():
        raise RefusedPath(f"{name!r} is an absolute path; {_EXAMPLE}")
    if ".." in pure.parts:
        raise RefusedPath(f"{name!r} climbs out with ..; {_EXAMPLE}")
    if pure.as_posix() != name:
        raise RefusedPath(f"write {name!r} plainly, as {pure.as_posix()!r}")
    if not hidden_ok and any(part.startswith(".") for part in pure.parts):
        raise RefusedPath(f"{name!r} is hidden (a name starting with .); give the rule file a visible name")
    if pure.suffix not in RULE_SUFFIXES:
        raise RefusedPath(f"{name!r} is not a rule file: its name must end in .yaml or .yml")
    if any(len(part.encode()) > 255 for part in pure.parts):
        raise RefusedPath(f"{name[:80]!r}…: a file or folder name is longer than 255 bytes")
    path = rules_dir / pure
    try:
        path.resolve().relative_to(rules_dir.resolve())
    except (ValueError, OSError, RuntimeError):  # outside, or a loop of symbolic links
        raise RefusedPath(f"{name!r} leads outside rules_dir through a symbolic link; {_EXAMPLE}") from None
    if path.is_dir():
        raise RefusedPath(f"{name!r} is a folder, not a rule file")
    return path


def list_files(rules_dir: Path) -> list[RuleFile]:
    """Every rule file of the set with its exact text (line endings kept), for the editor to open."""
    found = []
    for path in rule_files(rules_dir):
        name = path.relative_to(rules_dir).as_posix()
        try:
            resolve(rules_dir, name)
            editable = True
        except RefusedPath:
            editable = False
        try:
            raw = path.read_bytes()
            found.append(RuleFile(name, display_name(path), raw.decode("utf-8"), _sha256(raw), editable))
        except OSError as exc:
            found.append(RuleFile(name, display_name(path), None, None, False, f"cannot read it: {exc.strerror}"))
        except UnicodeDecodeError:
            found.append(RuleFile(name, display_name(path), None, _sha256(raw), False, "it is not UTF-8 text"))
    return found


def save(registry: RuleRegistry, name: str, text: str, *, expected: str | None, message: str = "",
         source: Source = Source.API) -> SaveResult:  # fmt: skip
    """Write `text` as rule file `name` and publish the set, as reload does; refused with nothing written when
    the file is not what the editor opened (`expected`: its text or sha256; None for a new file), when the
    set would have any error (RuleSetError, named by path inside rules_dir), or when rules are read-only."""
    settings = registry.settings
    if settings.console.read_only:
        raise ReadOnly(READ_ONLY)
    path = resolve(settings.rules_dir, name)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise RefusedText("the text holds characters that cannot be written as UTF-8 (a lone surrogate)") from None
    with rules_lock(settings.data_dir):
        disk = _read(path)
        if not _opened(disk, expected):
            raise _conflict(name, disk, text, new=expected is None)
        file = display_name(path)
        texts, read_errors = read_texts(settings.rules_dir)
        texts[file] = _as_read(text)
        names = _names(settings.rules_dir) | {file: name}
        rule_set = _compiled(texts, registry, [e for e in read_errors if e.file != file], names)
        path = resolve(settings.rules_dir, name)  # again, under the lock: a link swapped in since is refused
        _write(path, data, name)
        before = registry.rule_set.version
        try:
            registry.publish(texts, rule_set, source=source, message=message or f"edited {name}")
        except Exception as exc:  # Redis away or full: the disk goes back to what runs
            _put_back({path: disk})
            raise PublishFailed(f"{name} could not be published ({exc}); the file is back as it was: try again"
                                ) from exc  # fmt: skip
    log.info("rules: %s saved (%d bytes) from %s; version %s", name, len(data), source, rule_set.version)
    return SaveResult(name, file, _sha256(data), rule_set.version, len(rule_set.rules), rule_set.version != before)


def rollback(registry: RuleRegistry, version_id: str, *, message: str = "", source: Source = Source.API
             ) -> RollbackResult:  # fmt: skip
    """Make version `version_id` of the history the rule files and the running set again, recorded as a
    `rollback` entry. Refused (nothing written) for an unknown version, and with the errors (RuleSetError)
    for a version that no longer compiles here (a `${NAME}` unset on this machine, say)."""
    settings = registry.settings
    if settings.console.read_only:
        raise ReadOnly(READ_ONLY)
    rules_dir = settings.rules_dir
    with rules_lock(settings.data_dir):
        found = history.version(registry.connection, version_id)
        if found is None or found.damaged:
            why = "its texts are damaged in Redis" if found else f"the last {history.LIMIT} published versions are kept"
            raise UnknownVersion(f"no version {version_id!r} to roll back to ({why}); see `hana-rules history`")
        targets: dict[str, tuple[Path, str]] = {}  # display name here → (path, text)
        misplaced = []
        for file, text in found.files.items():
            relative = found.paths.get(file) or history.path_in(rules_dir, file)
            try:
                path = resolve(rules_dir, relative, hidden_ok=True)
            except RefusedPath as exc:
                misplaced.append(RuleError(file, 1, 1, f"cannot be restored inside rules_dir: {exc}"))
                continue
            targets[display_name(path)] = (path, text)
        if misplaced:
            raise RuleSetError(misplaced)
        texts = {file: text for file, (_, text) in targets.items()}
        names = {file: path.relative_to(rules_dir).as_posix() for file, (path, _) in targets.items()}
        rule_set = _compiled(texts, registry, [], names)
        keep = {path.resolve() for path, _ in targets.values()}
        gone = [path for path in rule_files(rules_dir) if path.resolve() not in keep]
        originals = {path: _read(path) for path in [*(path for path, _ in targets.values()), *gone]}
        try:
            written = tuple(names[file] for file, (path, text) in sorted(targets.items()) if _restore(path, text))
            removed = []
            for path in gone:
                _remove(path)
                removed.append(path.relative_to(rules_dir).as_posix())
            note = f"rollback to {version_id} ({source})" + (f": {message}" if message else "")
            registry.publish(texts, rule_set, source=Source.ROLLBACK, message=note)
        except Exception as exc:  # a write or the publish failed: every file goes back to what runs
            _put_back(originals)
            if isinstance(exc, WriteFailed):
                raise
            raise PublishFailed(f"the rollback could not be published ({exc}); the files are back as they were: "
                                "try again") from exc  # fmt: skip
    log.info("rules: rolled back to %s from %s (%d written, %d removed); version %s", version_id, source,
             len(written), len(removed), rule_set.version)  # fmt: skip
    return RollbackResult(rule_set.version, len(rule_set.rules), version_id, written, tuple(removed))


def write_atomically(path: Path, data: bytes) -> None:
    """`data` as the whole of `path`, or the old file untouched: temporary file, fsync, rename, fsync the folder.

    Through a symbolic link inside rules_dir, the file it points to is written (the link stays).
    """
    target = path.resolve()
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    # Hidden and ending in .tmp: neither the loader nor the file watch ever reads it as a rule file.
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    """The rename itself is on disk only once its folder is."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write(path: Path, data: bytes, name: str) -> None:
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise WriteFailed(f"could not write {name} ({exc.strerror or exc}); nothing was published") from exc


def _restore(path: Path, text: str) -> bool:
    """Write a version's file unless the disk holds exactly that text already (no needless file-watch reload)."""
    data = text.encode("utf-8")
    if _read(path) == data:
        return False
    try:
        write_atomically(path, data)
    except OSError as exc:
        raise WriteFailed(f"could not write {path.name} ({exc.strerror or exc}) while rolling back; some files "
                          "may be restored already, nothing was published: fix the disk and roll back again"
                          ) from exc  # fmt: skip
    return True


def _put_back(originals: dict[Path, bytes | None]) -> None:
    """Each file as it was before a save or rollback whose publish failed (None: it did not exist)."""
    for path, data in originals.items():
        try:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                write_atomically(path, data)
        except OSError as exc:
            log.error("rules: could not put %s back after a failed publish: %s", path, exc)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
        _fsync_directory(path.parent)
    except OSError as exc:
        raise WriteFailed(f"could not remove {path.name} ({exc.strerror or exc}) while rolling back; nothing was "
                          "published: fix the disk and roll back again") from exc  # fmt: skip


def _compiled(texts: dict[str, str], registry: RuleRegistry, read_errors: list[RuleError],
              names: dict[str, str]) -> RuleSet:  # fmt: skip
    """The candidate set, or RuleSetError with each error named by its path inside rules_dir."""
    try:
        return compile_rules(texts, registry.settings, read_errors=read_errors)
    except RuleSetError as exc:
        RELOADS.labels("refused").inc()
        raise RuleSetError([replace(e, file=names.get(e.file, e.file)) for e in exc.errors]) from exc


def _names(rules_dir: Path) -> dict[str, str]:
    return {display_name(path): path.relative_to(rules_dir).as_posix() for path in rule_files(rules_dir)}


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise WriteFailed(f"cannot read {path.name} ({exc.strerror or exc}); nothing was written") from exc


def _opened(disk: bytes | None, expected: str | None) -> bool:
    """Is the disk what the editor opened? Its text, its sha256, or the same text with other line endings
    (a browser's editor turns CRLF into LF; that alone is no one else's edit)."""
    if expected is None or disk is None:
        return expected is None and disk is None
    if expected == _sha256(disk):
        return True
    try:
        text = disk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return expected == text or _as_read(expected) == _as_read(text)


def _conflict(name: str, disk: bytes | None, submitted: str, *, new: bool) -> Conflict:
    shown = disk.decode("utf-8", errors="replace") if disk is not None else None
    if new:
        message = f"{name} exists already; open it to change it, or give the new file another name"
    elif disk is None:
        message = f"{name} was removed from disk since it was opened; save it as a new file to create it again"
    else:
        message = f"{name} changed on disk since it was opened; both versions are shown: merge them and save again"
    return Conflict(message, disk=shown, submitted=submitted)


def _as_read(text: str) -> str:
    """The text as reload reads the file (text mode: `\\r\\n` and `\\r` become `\\n`), so a save and a later
    reload of the same file publish the same version."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
