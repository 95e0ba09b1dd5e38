"""Text helpers shared by transcription, matching, rules and reports.

Whisper writes Chinese in traditional characters, or a mix, unless steered.
OpenCC's ``t2s`` converts by phrase as well as by character, which a plain
character table gets wrong (乾/干, 後/后, 著/着 depend on the word).
"""

from __future__ import annotations

import re
from functools import lru_cache

NOT_SPOKEN = re.compile(r"[\s\W_]+", re.UNICODE)
"""Punctuation, spaces and symbols: what no one says aloud."""


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional (or mixed) Chinese to Simplified Chinese."""
    return _t2s().convert(text) if text else text


def simplified_pieces(pieces: list[str]) -> list[str]:
    """Convert consecutive pieces of one text (words, characters) to simplified script.

    The joined text is converted at once, so OpenCC sees whole phrases. t2s
    nearly always keeps the length, which lets the result be cut back into the
    same pieces; when it does not, each piece is converted alone.
    """
    joined = to_simplified("".join(pieces))
    if len(joined) != sum(map(len, pieces)):
        return [to_simplified(piece) for piece in pieces]
    out, offset = [], 0
    for piece in pieces:
        out.append(joined[offset : offset + len(piece)])
        offset += len(piece)
    return out


def spoken(text: str) -> str:
    """The text without punctuation, spaces or symbols."""
    return NOT_SPOKEN.sub("", text)
