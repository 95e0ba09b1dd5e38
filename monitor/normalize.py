"""Text normalisation for matching, with a map back to the original string.

Whisper's Chinese differs from the code's wording in ways that carry no
meaning: traditional characters, full-width forms, punctuation that comes and
goes, and numbers written as digits or spoken as words (六六六一六五六七 for
66616567). ``normalize`` removes those differences and remembers, for every
character it keeps, which character of the input it came from, so a match in
normalised text can be reported as the words actually heard.

It also spells normalised text as sounds (``to_symbols``: toneless pinyin, two
symbols per character) for the matchers that must hear homophones alike.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache

from pypinyin import Style, lazy_pinyin

from monitor.text import simplified_pieces

CHINESE_DIGITS = {"零": "0", "〇": "0", "一": "1", "二": "2", "两": "2", "三": "3", "四": "4",
                  "五": "5", "六": "6", "七": "7", "八": "8", "九": "9", "幺": "1"}
MIN_SPOKEN_NUMBER = 3
"""A run of at least this many Chinese digit characters is a spoken number
(a phone number, an account); shorter runs are words (一下, 两个, 五一)."""


@dataclass
class Normalized:
    """Normalised text and where each of its characters came from."""

    text: str
    """Simplified, half-width, lower-case, without punctuation, spaces or the
    sounds in ``UNSAID``, spoken digit runs as Arabic digits."""
    offsets: list[int]
    """``offsets[i]`` is the index in the original string of ``text[i]``."""
    clause_starts: list[bool]
    """``clause_starts[i]`` is true when ``text[i]`` opens a clause: it is the first
    character, or punctuation or a space was dropped just before it."""
    sentence_starts: list[bool]
    """``sentence_starts[i]`` is true when ``text[i]`` opens a sentence: it is the
    first character, or a sentence's end (``SENTENCE_ENDS``) was dropped just before it."""

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The original ``[start, end)`` span covered by normalised ``[start, end)``."""
        return self.offsets[start], self.offsets[end - 1] + 1


@lru_cache(maxsize=4096)
def _fold(char: str) -> str:
    """What a non-ideograph character becomes: NFKC folds full-width forms to ASCII
    (Ｐ→p, ６→6), letters are lower-cased, and punctuation and spaces vanish
    (only letters and digits carry speech)."""
    return "".join(c for c in unicodedata.normalize("NFKC", char).lower() if c.isalnum())


def _simplified_chars(text: str) -> str:
    """t2s, keeping one output character per input character (a character whose
    own conversion changes the length stays as it was)."""
    return "".join(c if len(c) == 1 else ch for ch, c in zip(text, simplified_pieces(list(text))))


UNSAID = re.compile("(?<=[这那哪事点会块边天明今昨玩样空劲活门味头片])儿|[啊呀呢]")
"""Sounds that carry no words: the 儿 of 儿化 (这事儿不归我管 is 这事不归我管; the 儿 of
儿子 or 女儿 is a word and stays) and the tone particles 啊, 呀, 呢 that speakers
sprinkle anywhere (你问我呢，我问谁去). 吗 and 吧 stay: they make a question or a
suggestion, and 嘛 is part of 干嘛."""
SENTENCE_ENDS = frozenset("。！？!?；;")
"""Punctuation that ends a sentence (a comma only ends a clause)."""
CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
"""Common CJK ideographs: kept as they are, a run at a time (the bulk of any transcript)."""
SPOKEN_NUMBER = re.compile(f"[{''.join(CHINESE_DIGITS)}]{{{MIN_SPOKEN_NUMBER},}}")
TO_ARABIC = str.maketrans(CHINESE_DIGITS)


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for matching; see ``Normalized``."""
    chars: list[str] = []
    offsets: list[int] = []
    clause_starts: list[bool] = []
    sentence_starts: list[bool] = []
    pending_break = pending_sentence = True
    simplified = _simplified_chars(text)
    unsaid = [m.start() for m in UNSAID.finditer(simplified)]
    position = 0
    for run in CJK_RUN.finditer(simplified + "\u4e00"):  # a sentinel run flushes the tail
        for index in range(position, run.start()):
            folded = _fold(simplified[index])
            if not folded:
                pending_break = True
                pending_sentence = pending_sentence or simplified[index] in SENTENCE_ENDS
                continue
            chars.append(folded)
            offsets.extend([index] * len(folded))
            clause_starts.append(pending_break)
            clause_starts.extend([False] * (len(folded) - 1))
            sentence_starts.append(pending_sentence)
            sentence_starts.extend([False] * (len(folded) - 1))
            pending_break = pending_sentence = False
        start, end = run.span()
        end = min(end, len(simplified))
        # The run's pieces between unsaid characters (usually the whole run).
        first, last = bisect_left(unsaid, start), bisect_left(unsaid, end)
        starts = [start] + [i + 1 for i in unsaid[first:last]]
        ends = unsaid[first:last] + [end]
        for piece_start, piece_end in zip(starts, ends):
            if piece_end > piece_start:
                chars.append(simplified[piece_start:piece_end])
                offsets.extend(range(piece_start, piece_end))
                clause_starts.append(pending_break)
                clause_starts.extend([False] * (piece_end - piece_start - 1))
                sentence_starts.append(pending_sentence)
                sentence_starts.extend([False] * (piece_end - piece_start - 1))
                pending_break = pending_sentence = False
        position = end
    normalized = SPOKEN_NUMBER.sub(lambda m: m.group().translate(TO_ARABIC), "".join(chars))
    return Normalized(normalized, offsets, clause_starts, sentence_starts)


# ---------------------------------------------------------------------------
# Sounds: toneless pinyin as symbols


_symbol_codes: dict[str, str] = {}


def _symbol(sound: str) -> str:
    """One private-use character per distinct initial or final (so rapidfuzz compares sounds)."""
    code = _symbol_codes.get(sound)
    if code is None:
        code = _symbol_codes[sound] = chr(0xE000 + len(_symbol_codes))
    return code


DIGIT_READINGS = dict(zip("0123456789", "零一二三四五六七八九"))
HEARD_ALIKE = {"您": "你"}
"""Characters Whisper writes for one another so often that they are read as one sound:
on phone audio 您好 is mostly transcribed 你好 (the two differ by a nasal coda), and
an agent who greeted must not lose the points for it."""


@lru_cache(maxsize=None)
def char_symbols(char: str) -> str:
    """Two symbols for one normalised character: its toneless initial and final.

    Characters are read one at a time, the same way in phrases and in text, so a
    polyphone gets the same reading on both sides. Digits are read as spoken.
    """
    spoken = DIGIT_READINGS.get(char, HEARD_ALIKE.get(char, char))
    initial = lazy_pinyin(spoken, style=Style.INITIALS, strict=False)[0]
    final = lazy_pinyin(spoken, style=Style.FINALS, strict=False)[0]
    if final == spoken:  # not Chinese: a letter stands for itself
        return _symbol("#" + char) + _symbol("")
    return _symbol("i:" + initial) + _symbol("f:" + final)


def to_symbols(normalized_text: str) -> str:
    """Pinyin symbols of normalised text, two per character."""
    return "".join(map(char_symbols, normalized_text))
