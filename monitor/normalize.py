"""Text normalisation for matching, with a map back to the original string.

Whisper's Chinese differs from the code's wording in ways that carry no
meaning: traditional characters, full-width forms, punctuation that comes and
goes, and numbers written as digits or spoken as words (六六六一六五六七 for
66616567). ``normalize`` removes those differences and remembers, for every
character it keeps, which character of the input it came from, so a match in
normalised text can be reported as the words actually heard.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from monitor.text import to_simplified

CHINESE_DIGITS = {"零": "0", "〇": "0", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4",
                  "五": "5", "六": "6", "七": "7", "八": "8", "九": "9", "幺": "1"}
MIN_SPOKEN_NUMBER = 3
"""A run of at least this many Chinese digit characters is a spoken number
(a phone number, an account); shorter runs are words (一下, 两个, 五一)."""


@dataclass
class Normalized:
    """Normalised text and where each of its characters came from."""

    text: str
    """Simplified, half-width, lower-case, without punctuation or spaces, spoken
    digit runs as Arabic digits."""
    offsets: list[int]
    """``offsets[i]`` is the index in the original string of ``text[i]``."""
    clause_starts: list[bool]
    """``clause_starts[i]`` is true when ``text[i]`` opens a clause: it is the first
    character, or punctuation or a space was dropped just before it."""

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original ``[start, end)`` span covered by normalised ``[start, end)``."""
        return self.offsets[start], self.offsets[end - 1] + 1


def _is_kept(char: str) -> bool:
    # Letters (CJK included) and digits carry speech; everything else is punctuation or space.
    return char.isalnum()


def _simplified_chars(text: str) -> str:
    """t2s, keeping one output character per input character.

    OpenCC converts by phrase; t2s nearly always keeps the length, in which case
    the whole-string result is used, otherwise each character is converted alone.
    """
    converted = to_simplified(text)
    if len(converted) == len(text):
        return converted
    return "".join(c if len(c) == 1 else ch for ch, c in ((ch, to_simplified(ch)) for ch in text))


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for matching; see ``Normalized``."""
    chars: list[str] = []
    offsets: list[int] = []
    clause_starts: list[bool] = []
    pending_break = True
    for index, char in enumerate(_simplified_chars(text)):
        # NFKC folds full-width letters, digits and punctuation to ASCII (Ｐ→P, ６→6, ，→,).
        for folded in unicodedata.normalize("NFKC", char).lower():
            if not _is_kept(folded):
                pending_break = True
                continue
            chars.append(folded)
            offsets.append(index)
            clause_starts.append(pending_break)
            pending_break = False
    _spoken_digits_to_arabic(chars)
    return Normalized("".join(chars), offsets, clause_starts)


def _spoken_digits_to_arabic(chars: list[str]) -> None:
    """Rewrite runs of Chinese digit characters (六六六一…) as Arabic digits, in place."""
    run_start = None
    for i in range(len(chars) + 1):
        inside = i < len(chars) and chars[i] in CHINESE_DIGITS
        if inside and run_start is None:
            run_start = i
        elif not inside and run_start is not None:
            if i - run_start >= MIN_SPOKEN_NUMBER:
                chars[run_start:i] = [CHINESE_DIGITS[c] for c in chars[run_start:i]]
            run_start = None
