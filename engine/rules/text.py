"""Text the way Vietnamese users compare it: NFC always, optionally case- and accent-blind."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

# đ/Đ are letters of their own, not d with a combining mark: NFD leaves them alone.
_STROKES = str.maketrans({"đ": "d", "Đ": "D"})


def unaccent(text: str) -> str:
    """`Hương` → `Huong`, `Đà Nẵng` → `Da Nang`."""
    decomposed = unicodedata.normalize("NFD", text.translate(_STROKES))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def normalizer(*, ignore_case: bool = False, ignore_accents: bool = False) -> Callable[[str], str]:
    """The one function every text test applies to both sides."""
    if ignore_accents and ignore_case:
        return lambda text: unaccent(text).casefold()
    if ignore_accents:
        return unaccent
    if ignore_case:
        return lambda text: unicodedata.normalize("NFC", text).casefold()
    return lambda text: unicodedata.normalize("NFC", text) if not text.isascii() else text
