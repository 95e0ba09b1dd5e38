"""Forbidden talk told by kind: word groups that come together.

The codes forbid whole classes (凡脏话、粗话、讽刺、训斥客户的话; 不要责备或训斥客户;
不允许一推了之) and give a few sentences as examples. Agents seldom say the
example word for word: 这事儿我真管不了 is 推诿 without any listed wording. A
``Rule`` (``monitor.phrasebook``) says what such talk is made of: a word of
each of its groups, in order, within a few characters (我/我们 … 管不了/不负责).
Two guards keep helpful talk out: a politeness guard (帮您, 马上, 转给…同事
near the match: 这个不归我们这边，但我马上帮您转给负责的同事) and a negation
guard (不是说 just before: 我不是说您不懂).

Words are found in normalised text (``monitor.normalize``), and words of at
least ``SOUND_MIN_CHARS`` characters also by their toneless pinyin, the
matcher's own symbols, so a misheard homophone (管不了 → 馆不了) still counts.
Shorter words must be heard as written: two syllables alike in sound are too
often another word (傻逼 / 啥比较), unless a rule names them ``by_sound``: words
Whisper writes as a homophone (红包 → 哄包, 回扣 → 回口, 肝癌 → 干挨) whose sound
is no everyday word.

Word lists alone memorise: each new batch of unseen wordings brought mostly new
words. A rule's ``shapes`` say the structure instead (到底V不V, 不是…吗, 连…都不会,
跟物业说去): regular expressions over one clause at a time, with the same guards.
Spoken spellings (啥/什么, 咋/怎么, 自个儿/自己) stand for one another in words and
shapes alike, and a guard word that is the customer's own errand (你自个儿联系吧)
guards nothing.

A shape may also stand in a group, as one of its words (``re:`` before it): each part of
a talk that comes in two clauses then says its structure, not its examples. A favour asked
in return is something for me (给我(拿|带|弄|整)…(盒|条|瓶)) and a favour for you
(我…给你(提前|优先|加急)) in either order; a leak is someone else (他/她/户主/王经理) and a
number read out (手机是13905712288).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict
from functools import lru_cache
from itertools import permutations, product
from dataclasses import dataclass
from typing import NamedTuple

import ahocorasick

from monitor.normalize import normalize, to_symbols
from monitor.phrasebook import SHAPE_WORD, Rule

SOUND_MIN_CHARS = 3
"""Words of at least this many characters also match by sound."""
SOUND_CONFIDENCE = 0.9
"""Confidence of a rule hit when some of its words were only heard alike."""
NEGATION_REACH = 1
"""A negation guard word counts when it ends at most this many characters before the
match, in the same clause: 我不是说你脑子有问题 (one character, 你, between), but not
我又不是神仙，我怎么知道, nor 不是我们的问题就不是 你说破天也没用."""
YOU = str.maketrans("你您", "您你")
"""你 and 您 swapped: Whisper writes either, so a word with one also stands for the other."""
SPOKEN = (("什么", "啥"), ("怎么", "咋"), ("干嘛", "干啥", "干什么"), ("自己", "自个儿", "自个"))
"""Spellings that stand for one another in speech: a word or shape written with one also
matches the others (怪得着谁 said 你自个儿没交费; 磨叽什么 said 磨叽啥), so no list
has to spell each word twice."""
_ALIKE = {one: sorted(alike, key=len, reverse=True) for alike in SPOKEN for one in alike}
_SPOKEN_WORD = re.compile("(" + "|".join(sorted(_ALIKE, key=len, reverse=True)) + ")")
SELF_HELP = ("自己", "自个儿", "自个", "你去", "您去", "你得", "您得")
"""Shortly before a politeness guard word, in its clause, these make it the customer's own
errand, not the agent's help: 你自个儿联系吧 is no 联系 (we contact them), nor 你就不能自己
动动手查一下 a 查一下, and they guard nothing."""
SELF_HELP_REACH = 6
"""How many characters before a guard word ``SELF_HELP`` is looked for."""


class Occurrence(NamedTuple):
    """A word heard in the text, in normalised-text characters (a tuple: thousands
    are made per hour of speech)."""

    start: int
    end: int
    exact: bool
    """Heard as written (not only alike in sound)."""


@dataclass
class RuleMatch:
    """Where a rule fired."""

    rule: int
    """Index into the rules the ``KindRules`` was built from."""
    start: int
    end: int
    confidence: float


class KindRules:
    """Rules compiled for matching: one pass per automaton over a speaker's text."""

    def __init__(self, rules: list[Rule]):
        self.rules = rules
        self._word_ids: dict[str, int] = {}
        # Each rule's groups in every order it may be heard in.
        self._orders = [
            [list(order) for order in permutations(self._ids(group) for group in rule.groups)]
            if rule.any_order else [[self._ids(group) for group in rule.groups]]
            for rule in rules
        ]
        self._unless = [self._ids(rule.unless) for rule in rules]
        self._not_after = [self._ids(rule.not_after) for rule in rules]
        self._not_in = [self._ids(rule.not_in) for rule in rules]
        self._shapes = [[re.compile(_spoken(shape)) for shape in rule.shapes] for rule in rules]
        self._word_shapes = [(word_id, re.compile(_spoken(word[len(SHAPE_WORD):])))
                             for word, word_id in self._word_ids.items() if word.startswith(SHAPE_WORD)]
        """Group words that are shapes, by id."""
        named = {form for rule in rules for word in rule.by_sound for form in _forms(word)}
        self._sound_ids = {word_id for word, word_id in self._word_ids.items()
                           if len(word) >= SOUND_MIN_CHARS or word in named}
        """The words also heard by sound."""
        self._by_text = ahocorasick.Automaton()
        self._by_sound = ahocorasick.Automaton()
        for word, word_id in self._word_ids.items():
            if word.startswith(SHAPE_WORD):
                continue
            self._by_text.add_word(word, (word_id, len(word)))
            if word_id in self._sound_ids:
                symbols = to_symbols(word)
                entries = self._by_sound.get(symbols, [])
                entries.append((word_id, len(word)))
                self._by_sound.add_word(symbols, entries)
        for automaton in (self._by_text, self._by_sound):
            if len(automaton):
                automaton.make_automaton()

    def _ids(self, words: list[str]) -> frozenset[int]:
        return frozenset(self._word_ids.setdefault(form, len(self._word_ids))
                         for word in words for form in ((word,) if word.startswith(SHAPE_WORD) else _forms(word)))

    def find(self, text: str, symbols: str, clause_starts: list[bool] | None = None,
             sentence_starts: list[bool] | None = None) -> list[RuleMatch]:
        """Every place a rule fires in normalised ``text`` (``symbols`` are its pinyin
        symbols; ``clause_starts`` where its clauses open, which a negation guard does
        not reach across; ``sentence_starts`` where its sentences open, which a
        politeness guard does not reach back across)."""
        if not self.rules:
            return []
        if clause_starts:
            clause_starts = _number_kept_whole(text, clause_starts)
        # Shapes see one clause at a time: ^ and $ are its ends.
        opens = [i for i, opening in enumerate(clause_starts or ()) if opening and i] + [len(text)]
        clauses = list(zip([0] + opens[:-1], opens))
        heard = self._occurrences(text, symbols, clauses)
        if clause_starts:  # a word is heard within one clause: 有本事 | 您放心 is no 有本事你
            heard = {word: kept for word, found in heard.items()
                     if (kept := [o for o in found if not any(clause_starts[o.start + 1:o.end])])}
        merged: dict[frozenset[int], tuple[list[int], list[Occurrence]]] = {}

        def group(ids: frozenset[int]) -> tuple[list[int], list[Occurrence]]:
            # Rules share groups (me, you, helping): merge each once per text.
            if ids not in merged:
                found = _merged(heard, ids)
                merged[ids] = ([o.start for o in found], found)
            return merged[ids]

        def guarded(index: int, chosen: list[Occurrence]) -> bool:
            """Whether a guard of rule ``index`` cancels a match of the ``chosen`` words."""
            rule, start, end = self.rules[index], chosen[0].start, chosen[-1].end
            before = rule.guard_within if rule.guard_before is None else min(rule.guard_before, rule.guard_within)
            # Help offered before excuses only its own sentence: 我马上帮您转到账务组。那要等多久？我哪知道！
            # (a customer's question between, on a mono stream) is no polite 我帮您问问，我哪知道具体多久.
            # Help offered after reaches on (这个不归我们管。不过我马上帮您转给负责的同事).
            low = _opening(sentence_starts, start, start - before)
            helping = [g for g in group(self._unless[index])[1] if not _own_errand(text, g.start, clause_starts)]
            if _near(helping, low, end + rule.guard_within, chosen):
                return True
            negations = group(self._not_after[index])[1]
            if any(_negated(negations, word.start, clause_starts, text)
                   for word in (chosen if rule.negate_each else chosen[:1])):
                return True
            # part of a longer, innocent word, heard as written: 保证今天 only sounds like 保证金
            return any(o.exact and _overlap(o, m) and (o.start, o.end) != (m.start, m.end)
                       for o in group(self._not_in[index])[1] for m in chosen)

        matches = []
        for index, rule in enumerate(self.rules):
            found = []
            for shape in self._shapes[index]:
                for low, high in clauses:
                    for m in shape.finditer(text[low:high]):
                        chosen = [Occurrence(low + m.start(), low + m.end(), True)]
                        if m.end() > m.start() and not guarded(index, chosen):
                            found.append(RuleMatch(index, low + m.start(), low + m.end(), 1.0))
            if rule.groups and all(ids & heard.keys() for ids in self._orders[index][0]):
                for order in self._orders[index]:
                    groups = [group(ids) for ids in order]
                    reach = -1
                    for first in groups[0][1]:
                        if first.start < reach:
                            continue  # inside the previous match
                        chosen = _chain(first, groups[1:], rule.within)
                        if chosen is None or guarded(index, chosen):
                            continue
                        confidence = 1.0 if all(o.exact for o in chosen) else SOUND_CONFIDENCE
                        found.append(RuleMatch(index, first.start, chosen[-1].end, confidence))
                        reach = chosen[-1].end
            matches += _apart(found)
        return matches

    def _occurrences(self, text: str, symbols: str, clauses: list[tuple[int, int]]) -> dict[int, list[Occurrence]]:
        """Word id → where it was heard, as written or (long words, and those named ``by_sound``) alike in sound;
        shape words where they match within one of the ``clauses`` (start, end)."""
        heard: defaultdict[int, list[Occurrence]] = defaultdict(list)
        for word_id, shape in self._word_shapes:
            found = [Occurrence(low + m.start(), low + m.end(), True)
                     for low, high in clauses for m in shape.finditer(text[low:high]) if m.end() > m.start()]
            if found:
                heard[word_id] = found
        exact = set()  # (word, start) of words heard by sound too, heard as written
        if len(self._by_text):
            for end, (word_id, length) in self._by_text.iter(text):
                heard[word_id].append(Occurrence(end + 1 - length, end + 1, True))
                if word_id in self._sound_ids:
                    exact.add((word_id, end + 1 - length))
        if len(self._by_sound):
            for end, entries in self._by_sound.iter(symbols):
                for word_id, length in entries:
                    start = end + 1 - 2 * length
                    if start % 2 or (word_id, start // 2) in exact:
                        continue  # a symbol pair split across characters, or already heard as written
                    heard[word_id].append(Occurrence(start // 2, start // 2 + length, False))
        return heard


@lru_cache(maxsize=None)
def _forms(word: str) -> frozenset[str]:
    """The normalised forms a rule's word stands for: every spoken spelling, with 你 and 您 alike.

    Cached: rules share their words (me, you, helping), and compiling the broadband
    lexicon's rules asked for 9,719 words, 3,210 of them different."""
    key = normalize(word).text
    spoken = _spellings(key) if key else set()
    return frozenset(spoken | {s.translate(YOU) for s in spoken})


def _spellings(word: str) -> set[str]:
    """``word`` in every spoken spelling (``SPOKEN``): 磨叽什么 → 磨叽啥."""
    pieces = _SPOKEN_WORD.split(word)  # odd pieces are spoken words
    return {"".join(choice) for choice in product(*((piece,) if i % 2 == 0 else _ALIKE[piece]
                                                     for i, piece in enumerate(pieces)))}


def _spoken(shape: str) -> str:
    """A shape's spoken words (``SPOKEN``) widened to all their spellings, outside
    look-behinds (which must keep one width): 怪得着谁 after 你自己 or 你自个儿."""
    return "".join(piece if piece.startswith("(?<") else _SPOKEN_WORD.sub(
        lambda m: "(?:" + "|".join(_ALIKE[m.group()]) + ")", piece)
        for piece in re.split(r"(\(\?<[!=][^)]*\))", shape))


def _own_errand(text: str, start: int, clause_starts: list[bool] | None) -> bool:
    """Whether the guard word at ``start`` is the customer's own errand (``SELF_HELP`` shortly
    before it, in its clause)."""
    low = _opening(clause_starts, start, max(0, start - SELF_HELP_REACH))
    return any(cue in text[low:start] for cue in SELF_HELP)


def _number_kept_whole(text: str, clause_starts: list[bool]) -> list[bool]:
    """``clause_starts`` without the openings between two digits: a number read in groups
    (手机是138 0571 2288, 139-0571-2288) is one number, not three clauses."""
    return [start and not (0 < i < len(text) and text[i].isdigit() and text[i - 1].isdigit())
            for i, start in enumerate(clause_starts)]


def _opening(starts: list[bool] | None, start: int, low: int) -> int:
    """``low``, or the opening of the clause or sentence (``starts``) holding ``start`` when that is later."""
    if starts:
        low = max([low] + [i for i in range(max(low, 0), start + 1) if starts[i]])
    return low


def _asks(text: str, start: int) -> bool:
    """Whether the 不/没 at ``start`` is the middle of an A不A question (你是不是脑子有问题:
    是不是 asks, it does not deny)."""
    return 0 < start < len(text) - 1 and text[start] in "不没" and text[start - 1] == text[start + 1]


def _apart(found: list[RuleMatch]) -> list[RuleMatch]:
    """One match per place: where two orders of a rule matched overlapping words, the first by start."""
    kept: list[RuleMatch] = []
    for match in sorted(found, key=lambda m: (m.start, m.end)):
        if not kept or match.start >= kept[-1].end:
            kept.append(match)
    return kept


def _merged(heard: dict[int, list[Occurrence]], ids: frozenset[int]) -> list[Occurrence]:
    """The occurrences of any of a group's words, by start."""
    return sorted(
        (o for word_id in ids for o in heard.get(word_id, ())), key=lambda o: (o.start, -o.end, not o.exact)
    )


def _chain(first: Occurrence, rest: list[tuple[list[int], list[Occurrence]]], within: int) -> list[Occurrence] | None:
    """The earliest words of the later groups (given with their starts), each after
    the previous, all within reach of ``first``."""
    chosen = [first]
    for starts, group in rest:
        i = bisect_left(starts, chosen[-1].end)
        if i == len(group) or group[i].end - first.start > within:
            return None
        chosen.append(group[i])
    return chosen


def _negated(not_after: list[Occurrence], start: int, clause_starts: list[bool] | None, text: str) -> bool:
    """Whether a negation guard word ends just before ``start``, in the same clause, and is not a question."""
    return any(start - NEGATION_REACH <= o.end <= start
               and not (clause_starts and any(clause_starts[o.end:start + 1]))
               and not _asks(text, o.start)
               for o in not_after)


def _near(guards: list[Occurrence], low: int, high: int, matched: list[Occurrence]) -> bool:
    """Whether a guard word lies within [low, high) and not mostly inside a matched word
    (不是我们负责的 is no politeness though 负责的 is a guard word; 带您 still guards
    a match of 您)."""
    return any(g.start >= low and g.end <= high
               and not any(2 * (min(g.end, m.end) - max(g.start, m.start)) > g.end - g.start for m in matched)
               for g in guards)


def _overlap(a: Occurrence, b: Occurrence) -> bool:
    return a.start < b.end and b.start < a.end
