"""Text the way Vietnamese users compare it: NFC always, optionally case- and accent-blind."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from functools import lru_cache

# đ/Đ are letters of their own, not d with a combining mark: NFD leaves them alone.
_STROKES = str.maketrans({"đ": "d", "Đ": "D"})


def unaccent(text: str) -> str:
    """`Hương` → `Huong`, `Đà Nẵng` → `Da Nang`."""
    decomposed = unicodedata.normalize("NFD", text.translate(_STROKES))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


@lru_cache(maxsize=16384)
def _folded(text: str) -> str:
    return unaccent(text).casefold()


@lru_cache(maxsize=16384)
def _unaccented(text: str) -> str:
    return unaccent(text)


def nfc(text: str) -> str:
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def normalizer(*, ignore_case: bool = False, ignore_accents: bool = False) -> Callable[[str], str]:
    """The one function every text test applies to both sides.

    Accent folding is cached: one event's note is tested by many rules, and folding
    costs far more than a cache lookup.
    """
    if ignore_accents and ignore_case:
        return _folded
    if ignore_accents:
        return _unaccented
    if ignore_case:
        return lambda text: nfc(text).casefold()
    return nfc
