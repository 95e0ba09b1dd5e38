"""Script conversion shared by transcription and matching.

Whisper writes Chinese in traditional characters, or a mix, unless steered.
OpenCC's ``t2s`` converts by phrase as well as by character, which a plain
character table gets wrong (乾/干, 後/后, 著/着 depend on the word).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """Traditional (or mixed) Chinese to Simplified Chinese."""
    return _t2s().convert(text) if text else text
