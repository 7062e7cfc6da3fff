"""The prompt policy: a configurable list of blocked terms.

A prompt is compared in a folded form — NFKC (full-width and other compatibility letters become
plain ones), case-folded, invisible format characters (zero-width spaces and joiners) removed — so
"ＢＡＤ", "Bad" and "b\u200bad" are all "bad". A term matches as a whole word, also when its letters
are spread out with simple separators ("b.a.d", "b-a-d", "b a d", "b_a_d"). The rejection never
names the term: echoing it would tell the client what to misspell next.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Final

from core.errors import DomainError, ErrorCode

# What may stand between the letters of a spread-out term, and how much of it.
_SEPARATORS: Final = r"[\s.\-_*·•|/\\+~'\"`,:;!]{0,3}"


def fold(text: str) -> str:
    """The form in which prompts and terms are compared."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(char for char in folded if unicodedata.category(char) != "Cf")


class PromptPolicy:
    """Rejects prompts that contain any of `blocked_terms` (see the module's docstring)."""

    def __init__(self, blocked_terms: Iterable[str] = ()) -> None:
        patterns: list[str] = []
        for term in blocked_terms:
            letters = [char for char in fold(term) if char.isalnum()]
            if not letters:
                raise ValueError(f"blocked term {term!r} has no letters or digits")
            patterns.append(_SEPARATORS.join(re.escape(char) for char in letters))
        # Longest first, so a longer term is reported by the same single pass.
        patterns.sort(key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<![^\W_])(?:" + "|".join(patterns) + r")(?![^\W_])") if patterns else None
        )
        self.size = len(patterns)

    def is_allowed(self, prompt: str) -> bool:
        return self._pattern is None or self._pattern.search(fold(prompt)) is None

    def check(self, prompt: str) -> None:
        """Return when the prompt is allowed; `prompt_rejected` (422) otherwise."""
        if not self.is_allowed(prompt):
            raise DomainError(ErrorCode.PROMPT_REJECTED, "The prompt contains a term that is not allowed")


def parse_blocked_terms(text: str) -> list[str]:
    """Terms from a configuration file: one a line; blank lines and `#` comments ignored."""
    terms: list[str] = []
    for line in text.splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(term)
    return terms
