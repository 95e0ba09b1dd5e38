"""Finding a phrasebook's phrases in what Whisper heard.

Whisper base mishears Mandarin predictably: homophones (宽带→宽代, 拨→播,
又问→又闻), near-homophones (预约→一约, 界面→见面, 家庭→家平), dropped particles
and punctuation, traditional script, numbers as words or with a digit doubled
(66616567 → 六六六一六五六七 or 666616567). Matching runs in three stages on
normalised text (``monitor.normalize``):

1. exact: every form of every phrase in one Aho-Corasick automaton;
2. template: forms with ``**`` slots are matched piece by piece, each slot a
   gap of at most ``MAX_SLOT_CHARS`` characters;
3. fuzzy: text and phrases are spelt as toneless pinyin, two symbols per
   character (initial, final), so homophones are equal and near-homophones
   differ by one symbol. Syllable bigrams shared with a phrase vote for an
   alignment; where enough agree, rapidfuzz aligns the phrase to that window
   and the similarity is the hit's confidence;
4. rule: the phrasebook's forbidden kinds (推诿, 训斥, ... from the shared
   lexicon) are also found by word groups that come together, with politeness
   and negation guards (``monitor.kinds``), on the same normalised text and
   pinyin symbols.

Short generic phrases marked ``standalone`` (不知道, 可能是) count only where
they open a clause (after optional fillers such as 嗯/那) or follow a
first-person subject (我, 我们, 也: 我也不清楚), perhaps with an adverb between
(我真不清楚). 您不知道的话…, 看不清楚 and 这个可能是最好的选择 are therefore not hits.

Overlapping hits of the same kind are resolved in favour of the one with more
evidence, confidence × matched length: 对不起 inside a full 第22条 apology
yields the apology, and of two similar greetings the better heard one wins. A
rule hit has no wording to have heard, so any phrase it overlaps wins: where
the agent says the code's own 禁语, the report names it.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ahocorasick
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from monitor.kinds import KindRules
from monitor.normalize import Normalized, char_symbols, normalize, to_symbols
from monitor.phrasebook import Phrase, Phrasebook

if TYPE_CHECKING:
    from monitor.asr import Segment

MAX_SLOT_CHARS = 8
"""A ``**`` slot (a name, a device, a time) stands for at most this many characters."""
SLOT = re.compile(r"\*\*|×+")
ASIDE = re.compile(r"（[^）]*）|\([^)]*\)")
"""（…） asides in the code explain a slot or list alternatives; they are not spoken
as such, so they are dropped, and alternatives are spelt out as variants."""
SEGMENT_JOINER = " "
"""Put between joined segments: dropped by normalisation, so a phrase split across
segments still matches, but it marks a clause start for standalone phrases."""
FILLERS = "嗯呃额啊哦唉哎那"
"""Characters that may precede a standalone phrase at a clause start (嗯，不知道)."""
FIRST_PERSON = ("我", "也", "我们", "咱们", "我还")
"""Subjects after which a standalone phrase counts anywhere in a clause (具体时间我也不清楚)."""
ADVERB = re.compile("(?:真的|确实|实在|暂时|目前|现在|真|是|都|就)+$")
"""Adverbs that may stand between the subject and a standalone phrase (我真不清楚, 我确实不知道)."""
VOTE_MARGIN = 0.25
"""How far below a phrase's threshold the share of agreeing syllable bigrams may fall (see ``_votes_needed``)."""
KIND_GAP_CHARS = 4
"""Rule hits of one kind at most this many characters apart are one stretch (``_one_per_stretch``)."""
FUZZY_CEILING = 0.99
"""Fuzzy hits never claim the certainty of a character-exact match."""


@dataclass
class Hit:
    """One phrase found in a transcript."""

    phrase_id: str
    """``Phrase.id``."""
    kind: str
    """mandated, forbidden or cue."""
    category: str
    """``Phrase.category``."""
    canonical: str
    """``Phrase.text``: the code's wording."""
    heard: str
    """The span of the original transcript text that matched (not normalised)."""
    confidence: float
    """0..1: 1 for a character-exact match, pinyin similarity for a fuzzy one."""
    article: str
    """``Phrase.article``."""
    start: float | None
    """Seconds from the start of the recording; None when matching bare text."""
    end: float | None
    """Seconds from the start of the recording; None when matching bare text."""
    speaker: str
    """agent or customer; agent for bare text."""
    method: str
    """exact, template, fuzzy, rule (a forbidden kind's word groups, ``monitor.kinds``) or
    meaning (the meaning model, ``monitor.meaning``)."""
    detected_by: str | None = None
    """``meaning_model`` for the meaning model's hits; None for the phrasebook's and the lexicon's."""
    model_probability: float | None = None
    """The meaning model's probability that the sentence is forbidden talk (its hits only)."""

    def to_json(self) -> dict:
        extra = {} if self.detected_by is None else {
            "detected_by": self.detected_by, "model_probability": self.model_probability}
        return {
            "kind": self.kind,
            "phrase_id": self.phrase_id,
            "category": self.category,
            "canonical": self.canonical,
            "heard": self.heard,
            "confidence": round(self.confidence, 3),
            "article": self.article,
            "start": None if self.start is None else round(self.start, 2),
            "end": None if self.end is None else round(self.end, 2),
            "speaker": self.speaker,
            "method": self.method,
            **extra,
        }


@dataclass
class _Form:
    """One matchable wording of a phrase (its text or a variant), compiled."""

    phrase: Phrase
    """The phrase it belongs to."""
    pieces: list[str]
    """Normalised text between ``**`` slots, empty pieces dropped."""
    symbols: str
    """Pinyin symbols of the pieces joined (slots removed), two per character."""
    threshold: float
    """Minimum fuzzy similarity to count."""
    negations: int = 0
    """Negation syllables (不, 没, 别) in the form; a fuzzy hit must hear as many."""
    votes_needed: int = 1
    """Agreeing syllable bigrams needed before an alignment is tried."""

    @property
    def length(self) -> int:
        return len(self.symbols) // 2


@dataclass
class _Candidate:
    """A hit before overlaps are resolved, in normalised-text coordinates."""

    form: _Form
    start: int
    end: int
    confidence: float
    method: str

    @property
    def evidence(self) -> float:
        # Characters' worth of the phrase that was heard; rounded so equal evidence ties exactly.
        return round(self.confidence * self.form.length, 6)


NEGATION_SYLLABLES = ("不", "没", "别")


def _negations(symbols: str) -> int:
    """Negation syllables in a symbol string (by sound, so a homophone 步 still counts)."""
    pairs = {char_symbols(c) for c in NEGATION_SYLLABLES}
    return sum(symbols[i : i + 2] in pairs for i in range(0, len(symbols) - 1, 2))


# ---------------------------------------------------------------------------
# Compilation


def _default_threshold(phrase: Phrase, length: int) -> float:
    """How similar a fuzzy match must be, by phrase length.

    Up to three characters only homophones count (a near-homophone 2-syllable
    phrase is a different word). Long mandated phrases (greetings with slots and
    several misheard words) count when most of them is heard.
    """
    if length <= 3:
        return 1.0
    if length <= 5:
        return 0.88
    if phrase.kind == "mandated" and length >= 12:
        return 0.7
    return 0.8


def _forms(phrase: Phrase) -> list[str]:
    """The wordings to match: the text (unless it has ``/`` alternatives) and the variants."""
    texts = ([] if "/" in phrase.text else [phrase.text]) + phrase.variants
    return [ASIDE.sub("", text) for text in texts]


class Matcher:
    """A phrasebook compiled for matching. Build once (``matcher_for``), use from any thread."""

    def __init__(self, phrasebook: Phrasebook):
        self.phrasebook = phrasebook
        self.forms: list[_Form] = []
        # Kind-level rules (monitor.kinds): found by word groups, not by wording.
        phrases = phrasebook.all_phrases()
        ruled = [p for p in phrases if p.rule is not None]
        self._rule_forms = [_Form(p, [], "", 1.0) for p in ruled]
        self._kinds = KindRules([p.rule for p in ruled])
        for phrase in phrases:
            if phrase.rule is not None:
                continue
            for wording in _forms(phrase):
                pieces = [p for p in (normalize(piece).text for piece in SLOT.split(wording)) if p]
                if not pieces:
                    continue
                symbols = to_symbols("".join(pieces))
                threshold = phrase.threshold if phrase.threshold is not None else _default_threshold(
                    phrase, len(symbols) // 2
                )
                form = _Form(phrase, pieces, symbols, threshold, _negations(symbols))
                form.votes_needed = _votes_needed(form)
                self.forms.append(form)

        # Stage 1 and 2: every piece of every form, exact.
        self._automaton = ahocorasick.Automaton()
        for form_index, form in enumerate(self.forms):
            for piece_index, piece in enumerate(form.pieces):
                entries = self._automaton.get(piece, [])
                entries.append((form_index, piece_index))
                self._automaton.add_word(piece, entries)
        self._automaton.make_automaton()

        # Stage 3: syllable bigram → (form, character position) postings.
        self._seeds: dict[str, list[tuple[int, int]]] = {}
        for form_index, form in enumerate(self.forms):
            for position in range(max(1, form.length - 1)):
                key = form.symbols[2 * position : 2 * position + 4]
                self._seeds.setdefault(key, []).append((form_index, position))

    # -- public -------------------------------------------------------------

    def match_text(self, text: str) -> list[Hit]:
        """Hits in bare text (no timing); all of it is taken as the agent's."""
        normalized = normalize(text)
        return [self._hit(c, text, normalized, "agent", None) for c in self._candidates(normalized, "agent")]

    def match_segments(self, segments: list[Segment]) -> list[Hit]:
        """Hits in a transcript, each timed by word timestamps.

        A speaker's segments are joined into one stream in time order, so a
        phrase Whisper split across segments is still found.
        """
        hits: list[Hit] = []
        for speaker in sorted({s.speaker for s in segments}):
            own = sorted((s for s in segments if s.speaker == speaker), key=lambda s: (s.start, s.end))
            text, timeline = _stream(own)
            normalized = normalize(text)
            for candidate in self._candidates(normalized, speaker):
                hits.append(self._hit(candidate, text, normalized, speaker, timeline))
        return sorted(hits, key=lambda h: (h.start, h.end, h.phrase_id))

    # -- stages -------------------------------------------------------------

    def _candidates(self, normalized: Normalized, speaker: str) -> list[_Candidate]:
        wanted = [f.phrase.speaker in (speaker, "any") for f in self.forms]
        symbols = to_symbols(normalized.text)
        found = self._exact(normalized.text, wanted)
        found += self._fuzzy(symbols, wanted, found)
        found = [c for c in found if not c.form.phrase.standalone or _stands_alone(normalized, c.start)]
        found += _one_per_stretch([
            _Candidate(self._rule_forms[m.rule], m.start, m.end, m.confidence, "rule")
            for m in self._kinds.find(normalized.text, symbols, normalized.clause_starts,
                                         normalized.sentence_starts)
            if self._rule_forms[m.rule].phrase.speaker in (speaker, "any")
        ])
        return _resolve_overlaps(found)

    def _exact(self, text: str, wanted: list[bool]) -> list[_Candidate]:
        """Stage 1 (whole forms) and stage 2 (slot templates, piece by piece)."""
        found: list[_Candidate] = []
        piece_starts: dict[tuple[int, int], list[int]] = {}
        for end, entries in self._automaton.iter(text):
            for form_index, piece_index in entries:
                if not wanted[form_index]:
                    continue
                form = self.forms[form_index]
                start = end + 1 - len(form.pieces[piece_index])
                if len(form.pieces) == 1:
                    found.append(_Candidate(form, start, end + 1, 1.0, "exact"))
                else:
                    piece_starts.setdefault((form_index, piece_index), []).append(start)
        for (form_index, piece_index), starts in piece_starts.items():
            if piece_index == 0:
                found += self._chain(form_index, starts, piece_starts)
        return found

    def _chain(self, form_index: int, first_starts: list[int], piece_starts: dict) -> list[_Candidate]:
        """Template hits: each next piece begins within ``MAX_SLOT_CHARS`` of the previous one's end."""
        form = self.forms[form_index]
        found = []
        for start in first_starts:
            end = start + len(form.pieces[0])
            for piece_index in range(1, len(form.pieces)):
                starts = piece_starts.get((form_index, piece_index), [])
                i = bisect_left(starts, end)
                if i == len(starts) or starts[i] - end > MAX_SLOT_CHARS:
                    break
                end = starts[i] + len(form.pieces[piece_index])
            else:
                found.append(_Candidate(form, start, end, 1.0, "template"))
        return found

    def _fuzzy(self, symbols: str, wanted: list[bool], exact: list[_Candidate]) -> list[_Candidate]:
        """Stage 3: pinyin alignment where enough syllable bigrams agree (``symbols``: the text's)."""
        diagonals: defaultdict[int, list[int]] = defaultdict(list)
        seeds = self._seeds
        bigrams = [symbols[i : i + 4] for i in range(0, len(symbols) - 2, 2)]
        for position, postings in enumerate(map(seeds.get, bigrams)):
            if postings:
                for form_index, form_position in postings:
                    diagonals[form_index].append(position - form_position)
        covered: defaultdict[int, list[int]] = defaultdict(list)
        for c in sorted(exact, key=lambda c: c.start):
            covered[id(c.form)].append(c.start)

        found = []
        for form_index, starts in diagonals.items():
            form = self.forms[form_index]
            if not wanted[form_index] or len(starts) < form.votes_needed:
                continue
            # Slot content and dropped words shift later syllables: one occurrence, one cluster.
            slack = 2 + form.length // 8 + 4 * (len(form.pieces) - 1)
            for low, high, votes in _clusters(sorted(starts), slack):
                if votes < form.votes_needed:
                    continue
                if _covered(covered.get(id(form)), low, high + form.length):
                    continue  # this wording was heard exactly there
                candidate = self._align(form, symbols, low, high)
                if candidate is not None:
                    found.append(candidate)
        return found

    def _align(self, form: _Form, symbols: str, low: int, high: int) -> _Candidate | None:
        slots = len(form.pieces) - 1
        slack = 2 + form.length // 4 + slots * 3
        window_start = max(0, low - slack)
        window = symbols[2 * window_start : 2 * (high + form.length + slack)]
        alignment = fuzz.partial_ratio_alignment(form.symbols, window, score_cutoff=form.threshold * 100 - 5)
        if alignment is None or alignment.score == 0:
            return None
        best = None
        # Slot content makes the heard span longer than the form: also try a wider span.
        for pad in (0, 2 * MAX_SLOT_CHARS * slots) if slots else (0,):
            span = _trim(form.symbols, window, alignment.dest_start, min(len(window), alignment.dest_end + pad))
            if span is None:
                continue
            similarity = max(0.0, 1 - Levenshtein.distance(form.symbols, window[span[0] : span[1]]) / len(form.symbols))
            if best is None or similarity > best[0]:
                best = (similarity, span)
        if best is None or best[0] < form.threshold:
            return None
        similarity, (start, end) = best
        # Symbols come in pairs; widen to whole characters.
        first, last = window_start + start // 2, window_start + (end + 1) // 2
        if form.negations and _negations(symbols[2 * first : 2 * last]) < form.negations:
            return None  # 这个问题我会处理 is one edit from 这个问题我不会处理, and its opposite
        return _Candidate(form, first, last, similarity, "fuzzy")

    def _hit(self, c: _Candidate, text: str, normalized: Normalized, speaker: str, timeline: _Timeline | None) -> Hit:
        first, last = normalized.original_span(c.start, c.end)
        phrase = c.form.phrase
        return Hit(
            phrase_id=phrase.id,
            kind=phrase.kind,
            category=phrase.category,
            canonical=phrase.text,
            heard=text[first:last],
            confidence=round(c.confidence if c.method != "fuzzy" else min(c.confidence, FUZZY_CEILING), 3),
            article=phrase.article,
            start=None if timeline is None else timeline.at(first)[0],
            end=None if timeline is None else timeline.at(last - 1)[1],
            speaker=speaker,
            method=c.method,
        )


def _one_per_stretch(rule_hits: list[_Candidate]) -> list[_Candidate]:
    """Rule hits of one kind that follow each other within ``KIND_GAP_CHARS`` are one
    stretch of that talk, reported (and deducted) once: 这事我管不了，你自己想办法吧
    is one act of 推诿, though two rules see it."""
    joined: list[_Candidate] = []
    for c in sorted(rule_hits, key=lambda c: (c.start, c.end)):
        last = next((j for j in reversed(joined) if j.form.phrase.category == c.form.phrase.category), None)
        if last is not None and c.start - last.end <= KIND_GAP_CHARS:
            last.end = max(last.end, c.end)
            last.confidence = min(last.confidence, c.confidence)
        else:
            joined.append(c)
    return joined


def _votes_needed(form: _Form) -> int:
    """Agreeing syllable bigrams needed before aligning.

    Up to three characters, all of them (homophones only). Longer phrases need
    a share that grows with the threshold: a wrong syllable breaks at most two
    bigrams, so a phrase heard well enough to pass keeps well over this share,
    while a different phrase that merely opens the same way (您好，我是…) does not.
    """
    bigrams = max(1, form.length - 1)
    if form.length <= 3:
        return bigrams
    return min(bigrams, max(2, math.ceil(bigrams * (form.threshold - VOTE_MARGIN))))


def _covered(starts: list[int] | None, low: int, high: int) -> bool:
    """Whether an exact hit of a form (given by its sorted starts) begins in [low, high)."""
    return bool(starts) and bisect_left(starts, low) < bisect_left(starts, high)


def _clusters(diagonals: list[int], slack: int):
    """Group sorted alignment offsets that lie within ``slack`` of each other:
    yields (lowest, highest, count)."""
    low = high = diagonals[0]
    count = 0
    for d in diagonals:
        if d - high > slack:
            yield low, high, count
            low, count = d, 0
        high = d
        count += 1
    yield low, high, count


def _trim(pattern: str, window: str, start: int, end: int) -> tuple[int, int] | None:
    """Narrow ``window[start:end]`` to what aligns with ``pattern`` (drop extra symbols at either end)."""
    ops = Levenshtein.opcodes(pattern, window[start:end])
    aligned = [op for op in ops if op.tag != "insert"]
    if not aligned:
        return None
    new_start, new_end = start + aligned[0].dest_start, start + aligned[-1].dest_end
    return (new_start, new_end) if new_end > new_start else None


def _stands_alone(normalized: Normalized, start: int) -> bool:
    """The context rule for standalone phrases (see the module docstring)."""
    clause = start
    while clause > 0 and not normalized.clause_starts[clause]:
        clause -= 1
    before = normalized.text[clause:start]
    return not before.lstrip(FILLERS) or ADVERB.sub("", before).endswith(FIRST_PERSON)


def _resolve_overlaps(candidates: list[_Candidate]) -> list[_Candidate]:
    """One hit per phrase per place, then one hit per overlapping group of a kind.

    Both steps rank by evidence, similarity × wording length (ties: the more
    confident). The same phrase found twice over the same words (exact and
    fuzzy, or two of its wordings) keeps its best hit, so a full wording heard
    with one homophone beats an exact hit of a shorter variant. Different
    phrases of the same kind that share at least half of the shorter span keep
    the best one.
    """
    kept: list[_Candidate] = []
    for group in _overlapping_groups(candidates):
        best_per_phrase: list[_Candidate] = []
        for c in sorted(group, key=_rank):
            if not any(k.form.phrase is c.form.phrase and _overlap(k, c) > 0 for k in best_per_phrase):
                best_per_phrase.append(c)
        winners: list[_Candidate] = []
        for c in sorted(best_per_phrase, key=_rank):
            if not any(
                k.form.phrase.kind == c.form.phrase.kind
                and 2 * _overlap(k, c) >= min(k.end - k.start, c.end - c.start)
                for k in winners
            ):
                winners.append(c)
        kept += winners
    return sorted(kept, key=lambda c: (c.start, c.end, c.form.phrase.id))


def _rank(c: _Candidate):
    return -c.evidence, -c.confidence, c.start, c.end, c.form.phrase.id


def _overlap(a: _Candidate, b: _Candidate) -> int:
    return min(a.end, b.end) - max(a.start, b.start)


def _overlapping_groups(candidates: list[_Candidate]):
    """Split candidates into runs whose spans chain together, so overlaps are
    only looked for among neighbours."""
    group: list[_Candidate] = []
    reach = -1
    for c in sorted(candidates, key=lambda c: (c.start, c.end)):
        if group and c.start >= reach:
            yield group
            group = []
        group.append(c)
        reach = max(reach, c.end) if len(group) > 1 else c.end
    if group:
        yield group


@dataclass
class _Timeline:
    """Times of a joined stream's characters, looked up only for the hits."""

    offsets: list[int]
    """Stream offset where each timed piece (a word, or a segment without words) begins."""
    pieces: list[tuple[int, float, float]]
    """(length, start, end) of each piece: its characters share the span in equal parts."""

    def at(self, index: int) -> tuple[float, float]:
        """(start, end) seconds of the stream's character ``index``."""
        piece = bisect_right(self.offsets, index) - 1
        length, start, end = self.pieces[piece]
        step = (end - start) / max(1, length)
        within = index - self.offsets[piece]
        return start + within * step, start + (within + 1) * step


def _stream(segments: list[Segment]) -> tuple[str, _Timeline]:
    """Join one speaker's segments and time every character.

    Characters of a word share its time span in equal parts; a segment without
    words spreads its span over its text; a joiner takes the gap between segments.
    """
    parts: list[str] = []
    timeline = _Timeline([], [])
    offset = 0
    for index, segment in enumerate(segments):
        if index:
            timeline.offsets.append(offset)
            timeline.pieces.append((len(SEGMENT_JOINER), timeline.pieces[-1][2], segment.start))
            parts.append(SEGMENT_JOINER)
            offset += len(SEGMENT_JOINER)
        words = [(w.text, w.start, w.end) for w in segment.words] or [(segment.text, segment.start, segment.end)]
        for text, start, end in words:
            timeline.offsets.append(offset)
            timeline.pieces.append((len(text), start, end))
            parts.append(text)
            offset += len(text)
    return "".join(parts), timeline


_matchers: dict[int, tuple[Phrasebook, Matcher]] = {}
_matchers_lock = threading.Lock()


def matcher_for(phrasebook: Phrasebook) -> Matcher:
    """The compiled matcher for a phrasebook object, built once.

    ``load_phrasebook`` returns the same object for an unchanged file, so this is
    one matcher per phrasebook edition. Keyed by identity (the record is mutable,
    hence unhashable); the entry keeps the phrasebook alive so the id stays unique.
    """
    with _matchers_lock:
        entry = _matchers.get(id(phrasebook))
        if entry is None:
            entry = _matchers[id(phrasebook)] = (phrasebook, Matcher(phrasebook))
        return entry[1]
