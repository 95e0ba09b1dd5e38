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


COURTESY_SHAPES = {
    "greeting": re.compile(r"(?<!不)(您|你)好(?![好像看些多久])|(早上|上午|中午|下午|晚上)好|早安"),
    "farewell": re.compile(
        r"再见|拜拜|回见|(明天|改天|下次|下回|回头)见|慢走|好走|(祝|祝您|祝你).{0,8}(愉快|顺利|开心|快乐|健康|平安)|不打扰(您|你)(了|啦)"
        r"|(感谢|谢谢)(您的|你的|您|你)?(来电|致电)|今后(如|若|要是)有(问题|需要)|有(问题|事|需要).{0,3}随时"
    ),
}
"""The kind of greeting and farewell the codes ask for, however it is worded: a check expecting
``greeting`` or ``farewell`` also passes on the agent's sentence that holds one, not only on the
phrasebook's own wording. The codes list their 问候语 (您好、早上好、下午好) and 告别语 (再见、请好走、
感谢您使用…、希望我们合作愉快) as examples; agents say 喂您好，宽带维修这边, 祝您周末愉快，再见 or
有问题随时联系我们, and Whisper hears 喂您好 as 为您好 and 联系 as 连信 (so the verb after 随时 is not
required). Only the words the two acts are made of, over spoken simplified text: not 你好好想想,
您好像…, 不打扰 alone, or a call's last sentence that merely ends it (行了，就这样). Role separation
(``roles.text_evidence``) takes them as the agent's words too."""


def courtesy_acts(text: str) -> dict[str, str]:
    """The acts of courtesy ``text`` holds (``COURTESY_SHAPES``: greeting, farewell), each with the words it is made of."""
    plain = spoken(to_simplified(text))
    return {act: found.group(0) for act, shape in COURTESY_SHAPES.items() if (found := shape.search(plain))}
