"""Phrasebooks: a code of conduct as data.

A phrasebook is a YAML file (see ``phrasebooks/``) with the phrases the code
mandates or forbids, each tied to its article (第N条), and the checks that say
where mandated phrases must come (greeting in the first seconds, an apology
after a complaint, ...). This module holds the records and the loader; the
loader validates the YAML and reports file, line and reason for any mistake.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

from monitor.errors import MonitorError

KINDS = ("mandated", "forbidden", "cue")
SEVERITIES = ("minor", "major", "critical")
SPEAKERS = ("agent", "customer", "any")


@dataclass
class Phrase:
    """One phrase of the code."""

    id: str
    """Unique within the phrasebook, e.g. ``bb.forbidden.ask_me``."""
    kind: str
    """``mandated`` (the code prescribes it), ``forbidden`` (a 服务禁语) or
    ``cue`` (not judged itself; a trigger for checks, e.g. a customer complaint)."""
    category: str
    """greeting, farewell, apology, rude, vague, complaint, ... Checks refer to these."""
    text: str
    """The canonical wording as the code gives it. ``**`` marks a slot the
    speaker fills (a name, a device), matched as a bounded gap."""
    article: str
    """Where the code states it, e.g. ``第36条``."""
    variants: list[str] = field(default_factory=list)
    """Other wordings that count as the same phrase."""
    severity: str = "major"
    """minor, major or critical; drives alert emphasis."""
    points: int = 0
    """Deducted from the score when a forbidden phrase is said."""
    instead: str | None = None
    """For forbidden phrases: what the code prescribes instead (coaching)."""
    instead_article: str | None = None
    """The article of ``instead``."""
    threshold: float | None = None
    """Minimum fuzzy-match confidence (0-1) for this phrase; None uses the matcher default."""
    speaker: str = "agent"
    """Whose speech the phrase is looked for in: agent, customer or any."""
    standalone: bool = False
    """Short, generic phrases (不知道, 可能是) only count when they stand as their
    own clause or open one, not inside a longer sentence; see ``match.py``."""
    rule: Rule | None = None
    """Set for a kind-level rule from the lexicon: the phrase is then found by
    its word groups (``monitor.kinds``), and ``text`` names the kind."""


SHAPE_WORD = "re:"
"""A rule's group word that starts with this is a shape: a regular expression over one clause
(``monitor.kinds``), heard where it matches."""


@dataclass
class Rule:
    """A kind of forbidden talk told by words that come together, not by one wording.

    Fires where a word of every group in ``groups`` is heard, in that order,
    within ``within`` characters, unless a guard word is near (see ``monitor.kinds``).
    """

    id: str
    """Unique within the lexicon, e.g. ``shirking.not_mine``."""
    groups: list[list[str]]
    """All of these groups, in order (unless ``any_order``); any word of a group will do. A word
    written ``re:PATTERN`` (``SHAPE_WORD``) is a shape: heard where the pattern matches in one clause."""
    within: int = 10
    """The first word's start and the last word's end lie within this many characters."""
    any_order: bool = False
    """The groups may come in any order: reordered clauses (明天再说吧，快下班了)."""
    unless: list[str] = field(default_factory=list)
    """Politeness guard: any of these words within ``guard_within`` characters
    before or after the match means the agent is helping (马上帮您转给同事)."""
    not_after: list[str] = field(default_factory=list)
    """Negation guard: any of these words just before the match (不是说, 并没有) cancels it."""
    not_in: list[str] = field(default_factory=list)
    """Longer words a matched word may be part of without counting: 我操 in 我操作一下,
    滚开 in 水滚开了."""
    guard_within: int = 12
    """How far (characters) the politeness guard looks either side of the match."""
    guard_before: int | None = None
    """How far the politeness guard looks before the match, if less than ``guard_within``:
    a refusal just before counts (不能收，心意我收下了), one before a change of mind does
    not (东西您拿回去。那好吧，红包我收下了)."""
    negate_each: bool = False
    """The negation guard cancels the match before any of its words, not only the first
    (您太客气了，这个红包我不能收下)."""
    by_sound: list[str] = field(default_factory=list)
    """Short words of its groups that also match by their toneless pinyin, as longer words
    always do (``monitor.kinds.SOUND_MIN_CHARS``): words Whisper writes as a homophone
    (红包 → 哄包, 回扣 → 回口, 肝癌 → 干挨) whose sound is no everyday word."""
    shapes: list[str] = field(default_factory=list)
    """Regular expressions over normalised text, each matched within one clause: the
    structure word groups cannot say (到底(.)不\\1 for 到底修不修, 不是.{0,10}吗). The
    rule also fires where one matches; the same guards apply."""


@dataclass
class Check:
    """A rule about where mandated phrases must occur."""

    id: str
    """Check id in reports: ``greeting``, ``farewell``, ``apology_after_complaint``..."""
    expect: str
    """The phrase category that satisfies the check."""
    article: str
    """The article that requires it."""
    points: int
    """Deducted when the check fails."""
    description: str = ""
    """One line for reports."""
    within_first_s: float | None = None
    """The expected phrase must start within this many seconds of the agent's first speech."""
    within_last_s: float | None = None
    """The expected phrase must end within this many seconds of the agent's last speech."""
    after: str | None = None
    """A cue category (e.g. ``complaint``) that triggers the check; without a
    trigger in the call the check passes as not applicable."""
    within_s: float | None = None
    """With ``after``: the expected phrase must follow the trigger within this many seconds."""
    instead: str | None = None
    """What to say to pass it (coaching); defaults to the first phrase of the expected category."""


@dataclass
class Limits:
    """Thresholds for call metrics."""

    speech_rate_max_cpm: float = 280.0
    """Agent speech faster than this many characters per minute is flagged (语速)."""
    max_silence_s: float = 10.0
    """Dead air longer than this is flagged."""


@dataclass
class ConductRule:
    """A rule about how the agent speaks, heard in the voice or the timing (``voice:``).

    Without ``points`` its events are flags in the report that deduct nothing.
    """

    article: str
    """The article of this code that asks for it, e.g. ``3.1.3``."""
    severity: str = "minor"
    """minor, major or critical."""
    points: int = 0
    """Deducted per event (at most three times per rule); 0 only flags."""
    instead: str | None = None
    """What the code prescribes instead (coaching)."""
    instead_article: str | None = None
    """The article of ``instead``."""


@dataclass
class LoudRule(ConductRule):
    """高声/吵闹: an agent sentence markedly louder than the agent's own usual level."""

    above_own_db: float = 8.0
    """A sentence this many dB above the agent's baseline (``acoustics.baseline``) is loud."""
    min_sentence_s: float = 1.0
    """Shorter sentences are not judged: a loud 喂 is not a raised voice."""
    min_sentences: int = 4
    """The agent's baseline needs at least this many sentences with a level; fewer judge nothing."""


@dataclass
class ArgumentRule(ConductRule):
    """争辩、争吵: both speakers loud, in quick short turns that crowd or overlap, for a stretch."""

    above_own_db: float = 6.0
    """Each speaker's sentences in the stretch are on average this many dB above their own calm
    level (the level a quarter of their speech stays under, ``rules.CALM_SHARE``)."""
    min_span_s: float = 8.0
    """The stretch lasts at least this long."""
    min_turns: int = 4
    """And holds at least this many turns (a turn: one speaker's sentences in a row)."""
    max_turn_s: float = 10.0
    """No turn in it is longer than this (on a mono call, role separation often joins both
    voices of a quarrel into one long turn)."""
    max_gap_s: float = 0.5
    """Each turn starts at most this long after the previous ones end (negative: overlap).
    Sentence edges from ASR are fuzzy by a few hundred ms, and on a mono mix overlapped
    speech is heard one voice at a time, so a crowding reply rarely shows a gap under 0.3 s."""


@dataclass
class MandarinRule(ConductRule):
    """讲普通话: agent sentences that Whisper hears as another language than Chinese."""

    min_sentence_s: float = 2.0
    """Shorter sentences are not asked: short Mandarin is often taken for Japanese or Korean."""
    margin: float = 0.5
    """The other language must be this much more likely than Chinese (``zh``)."""


@dataclass
class LongCallRule(ConductRule):
    """长话短说: a call, or an agent's stretch of talk without the customer, that goes on too long."""

    max_call_s: float | None = None
    """Calls longer than this (seconds of recording) are flagged; None: no limit."""
    max_monologue_s: float | None = None
    """Agent talk with no customer speech in between longer than this is flagged; None: no limit."""


@dataclass
class VoiceRules:
    """The conduct rules a phrasebook asks for (its ``voice:`` block); None: not checked."""

    loud: LoudRule | None = None
    """高声/吵闹 (loudness against the agent's own baseline)."""
    argument: ArgumentRule | None = None
    """争辩、争吵."""
    non_mandarin: MandarinRule | None = None
    """讲普通话 (Whisper's language probabilities; costs a small extra pass per sentence)."""
    long_call: LongCallRule | None = None
    """长话短说."""
    interruption: ConductRule | None = None
    """不得轻易打断: each agent turn started over the customer's speech becomes an event."""

    @property
    def needs_levels(self) -> bool:
        """True when sentence loudness must be measured."""
        return self.loud is not None or self.argument is not None


VOICE_RULE_TYPES = {
    "loud": LoudRule, "argument": ArgumentRule, "non_mandarin": MandarinRule,
    "long_call": LongCallRule, "interruption": ConductRule,
}  # fmt: skip


@dataclass
class ForbiddenKind:
    """What a phrasebook's code says about one kind of forbidden talk (``forbidden_kinds``)."""

    article: str
    """The article that forbids the kind in this code, e.g. ``第36条``."""
    severity: str = "major"
    """minor, major or critical, for every phrase of the kind."""
    points: int = 0
    """Deducted per occurrence; 0 deducts by severity."""
    instead: str | None = None
    """What the code prescribes instead (coaching)."""
    instead_article: str | None = None
    """The article of ``instead``."""


@dataclass
class Phrasebook:
    """A loaded, validated phrasebook."""

    id: str
    """Short name, e.g. ``broadband``."""
    version: str
    """Edition of the phrasebook, reported with every score."""
    title: str
    """Human-readable name of the code."""
    phrases: list[Phrase]
    """All phrases, in file order."""
    checks: list[Check] = field(default_factory=list)
    """Position and scenario rules."""
    limits: Limits = field(default_factory=Limits)
    """Metric thresholds."""
    voice: VoiceRules = field(default_factory=VoiceRules)
    """Conduct heard in the voice and the timing (loudness, argument, language, length)."""
    source: str = ""
    """Where the code comes from (document and part)."""
    path: str = ""
    """The YAML file it was loaded from."""
    forbidden_kinds: dict[str, ForbiddenKind] = field(default_factory=dict)
    """Kinds of forbidden talk (category → article) the code forbids as a class."""
    lexicon: str = ""
    """The lexicon file the kinds' phrases come from; empty without ``forbidden_kinds``."""
    kind_phrases: list[Phrase] = field(default_factory=list)
    """Forbidden phrases of those kinds: the lexicon's expressions and rules, with
    this code's article. Kept apart from ``phrases`` (the code's own wordings),
    which also steer Whisper's vocabulary; ids start ``lexicon.``."""
    include: dict[str, dict[str, dict]] = field(default_factory=dict)
    """Included parts (``include:``): part name → its kinds' overrides by this code
    (category → article, severity, points, instead, instead_article)."""
    included: list[str] = field(default_factory=list)
    """The files of the included parts, nested ones too, in the order they were read."""
    included_phrases: list[Phrase] = field(default_factory=list)
    """Forbidden phrases of the included parts' kinds (gifts, private deals, ...), with
    this code's article where it has one, else the part's; ids start ``<part>.``."""
    meaning_model: bool = True
    """Whether the meaning model (``monitor.meaning``) also looks for the forbidden kinds,
    beside the lexicon's rules (``meaning_model: false`` turns it off)."""
    meaning_phrases: list[Phrase] = field(default_factory=list)
    """One phrase per forbidden kind, the code's and its included parts', that the meaning
    model's hits of that kind stand for (ids ``meaning.<kind>``, the article and points this
    code gives the kind); not matched as wordings."""

    def all_phrases(self) -> list[Phrase]:
        """Everything the matcher looks for: the code's phrases, its kinds', the included ones."""
        return self.phrases + self.kind_phrases + self.included_phrases

    def by_id(self, phrase_id: str) -> Phrase:
        return next(p for p in self.all_phrases() + self.meaning_phrases if p.id == phrase_id)

    def in_category(self, category: str) -> list[Phrase]:
        return [p for p in self.phrases if p.category == category]


# ---------------------------------------------------------------------------
# Loading

PHRASEBOOK_DIR = Path(__file__).resolve().parent / "phrasebooks"

_ARTICLE = {"type": "string", "minLength": 1}
_PHRASE_SCHEMA = {
    "type": "object",
    "required": ["id", "kind", "category", "article", "text"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"},
        "kind": {"enum": list(KINDS)},
        "category": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
        "article": _ARTICLE,
        "text": {"type": "string", "minLength": 1},
        "variants": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "severity": {"enum": list(SEVERITIES)},
        "points": {"type": "integer", "minimum": 0},
        "instead": {"type": ["string", "null"]},
        "instead_article": {"type": ["string", "null"]},
        "threshold": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "speaker": {"enum": list(SPEAKERS)},
        "standalone": {"type": "boolean"},
    },
}
_CHECK_SCHEMA = {
    "type": "object",
    "required": ["id", "expect", "article", "points"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
        "expect": {"type": "string"},
        "article": _ARTICLE,
        "points": {"type": "integer", "minimum": 0},
        "description": {"type": "string"},
        "within_first_s": {"type": "number", "exclusiveMinimum": 0},
        "within_last_s": {"type": "number", "exclusiveMinimum": 0},
        "after": {"type": "string"},
        "within_s": {"type": "number", "exclusiveMinimum": 0},
        "instead": {"type": "string"},
    },
}
_FORBIDDEN_KIND_SCHEMA = {
    "type": "object",
    "required": ["article"],
    "additionalProperties": False,
    "properties": {
        "article": _ARTICLE,
        "severity": {"enum": list(SEVERITIES)},
        "points": {"type": "integer", "minimum": 0},
        "instead": {"type": ["string", "null"]},
        "instead_article": {"type": ["string", "null"]},
    },
}
"""What a phrasebook's code says about one kind of forbidden talk (shirking,
scolding, ...): the article that forbids it, and what to say instead."""
_PART_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-/]{1,200}$"}
"""An included part: a file name next to the including file (``compliance`` for compliance.yaml)."""
_INCLUDE_SCHEMA = {
    "anyOf": [
        {"type": "array", "items": _PART_NAME},
        {
            "type": "object",
            "propertyNames": _PART_NAME,
            "additionalProperties": {
                "type": ["object", "null"],
                "additionalProperties": {**_FORBIDDEN_KIND_SCHEMA, "required": []},
            },
        },
    ]
}
"""``include: [compliance]``, or with this code's own articles for the part's kinds:
``include: {compliance: {bribery: {article: 第14条}}}``."""
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
_VOICE_EXTRA = {
    "loud": {"above_own_db": _SECONDS, "min_sentence_s": {"type": "number", "minimum": 0},
             "min_sentences": {"type": "integer", "minimum": 2}},
    "argument": {"above_own_db": {"type": "number"}, "min_span_s": _SECONDS, "min_turns": {"type": "integer", "minimum": 2},
                 "max_turn_s": _SECONDS, "max_gap_s": {"type": "number"}},
    "non_mandarin": {"min_sentence_s": {"type": "number", "minimum": 0},
                     "margin": {"type": "number", "minimum": 0, "maximum": 1}},
    "long_call": {"max_call_s": _SECONDS, "max_monologue_s": _SECONDS},
    "interruption": {},
}  # fmt: skip
_VOICE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        name: {
            "type": "object",
            "required": ["article"],
            "additionalProperties": False,
            "properties": {**_FORBIDDEN_KIND_SCHEMA["properties"], **extra},
        }
        for name, extra in _VOICE_EXTRA.items()
    },
}
"""The ``voice:`` block: each rule the code asks for, its article, points and thresholds."""
SCHEMA = {
    "type": "object",
    "required": ["id", "version", "title", "checks", "phrases"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"},
        "version": {"type": "string"},
        "title": {"type": "string"},
        "source": {"type": "string"},
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "speech_rate_max_cpm": {"type": "number", "exclusiveMinimum": 0},
                "max_silence_s": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "checks": {"type": "array", "items": _CHECK_SCHEMA},
        "phrases": {"type": "array", "minItems": 1, "items": _PHRASE_SCHEMA},
        "lexicon": {"type": "string", "minLength": 1},
        "forbidden_kinds": {"type": "object", "additionalProperties": _FORBIDDEN_KIND_SCHEMA},
        "meaning_model": {"type": "boolean"},
        "include": _INCLUDE_SCHEMA,
        "voice": _VOICE_SCHEMA,
    },
}
"""JSON schema of a phrasebook file (YAML parsed to plain data)."""

_WORDS = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}
_GROUP = {"anyOf": [{"type": "string", "minLength": 1}, _WORDS]}
"""A word group: a group name from the lexicon's ``groups`` or a list of words."""
LEXICON_SCHEMA = {
    "type": "object",
    "required": ["labels", "groups", "rules"],
    "additionalProperties": False,
    "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
        "groups": {"type": "object", "additionalProperties": _WORDS},
        "expressions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "category", "text"],
                "additionalProperties": False,
                "properties": {
                    "id": _PHRASE_SCHEMA["properties"]["id"],
                    "category": _PHRASE_SCHEMA["properties"]["category"],
                    "text": {"type": "string", "minLength": 1},
                    "variants": _PHRASE_SCHEMA["properties"]["variants"],
                    "threshold": _PHRASE_SCHEMA["properties"]["threshold"],
                },
            },
        },
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "category", "text"],
                "anyOf": [{"required": ["all"]}, {"required": ["shapes"]}],
                "additionalProperties": False,
                "properties": {
                    "id": _PHRASE_SCHEMA["properties"]["id"],
                    "category": _PHRASE_SCHEMA["properties"]["category"],
                    "text": {"type": "string", "minLength": 1},
                    "all": {"type": "array", "minItems": 1, "items": _GROUP},
                    "shapes": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                    "within": {"type": "integer", "minimum": 1},
                    "unless": {"type": "array", "items": _GROUP},
                    "not_after": {"type": "array", "items": _GROUP},
                    "not_in": {"type": "array", "items": _GROUP},
                    "guard_within": {"type": "integer", "minimum": 0},
                    "guard_before": {"type": "integer", "minimum": 0},
                    "negate_each": {"type": "boolean"},
                    "any_order": {"type": "boolean"},
                    "by_sound": {"type": "array", "items": {"type": "string", "minLength": 1}},
                },
            },
        },
    },
}
"""JSON schema of the shared lexicon (``phrasebooks/lexicon.yaml``)."""

PART_SCHEMA = copy.deepcopy(LEXICON_SCHEMA)
PART_SCHEMA["required"].append("kinds")
PART_SCHEMA["properties"]["kinds"] = {
    "type": "object", "minProperties": 1, "additionalProperties": _FORBIDDEN_KIND_SCHEMA,
}
PART_SCHEMA["properties"]["include"] = {"type": "array", "items": _PART_NAME}
"""JSON schema of an included part (``phrasebooks/compliance.yaml``): a lexicon whose
kinds come with a default article (where the rule comes from), for codes without one."""

LEXICON_ID_PREFIX = "lexicon."
"""Phrases from the lexicon have ids ``lexicon.<entry id>``."""
DEFAULT_LEXICON = "lexicon.yaml"
"""The lexicon a phrasebook with ``forbidden_kinds`` uses unless it names another
(resolved next to the phrasebook file, then in the bundled directory)."""

REQUIRED_CHECKS = ("greeting", "farewell")
"""Reports always carry these two checks, so every phrasebook must define them."""


_PHRASES_KEY = re.compile(r"^phrases:", re.MULTILINE)
"""A phrasebook file has a top-level ``phrases:``; the lexicon and included parts have none."""


def bundled_phrasebooks() -> list[str]:
    """Names of the phrasebooks shipped with the package (``broadband``, ...): the YAML files
    with phrases, not the lexicon or the parts they include (``compliance``)."""
    return sorted(
        p.stem for p in PHRASEBOOK_DIR.glob("*.yaml")
        if _PHRASES_KEY.search(p.read_text(encoding="utf-8", errors="replace"))
    )


def load_phrasebook(name_or_path: str) -> Phrasebook:
    """Load and validate a phrasebook: a bundled name (``broadband``) or a YAML path.

    Raises ``MonitorError("<path>:<line>: <reason>")`` for any problem.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and os.sep not in name_or_path and "/" not in name_or_path:
        path = PHRASEBOOK_DIR / f"{name_or_path}.yaml"
        if name_or_path not in bundled_phrasebooks():
            raise MonitorError(
                f"{name_or_path}: no such phrasebook (bundled: {', '.join(bundled_phrasebooks())})"
            )
    path = path.resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise MonitorError(f"{path}: cannot read phrasebook: {exc.strerror or exc}") from None
    phrasebook = _load_cached(str(path), mtime)
    if not phrasebook.lexicon and not phrasebook.include:
        return phrasebook
    lexicon_mtime = 0
    if phrasebook.lexicon:
        try:
            lexicon_mtime = Path(phrasebook.lexicon).stat().st_mtime_ns
        except OSError as exc:
            raise MonitorError(
                f"{phrasebook.lexicon}: cannot read lexicon (named by {path}): {exc.strerror or exc}"
            ) from None
    parts = _included_files(path, list(phrasebook.include))
    return _with_kinds(str(path), mtime, phrasebook.lexicon, lexicon_mtime, parts)


MAX_PHRASEBOOK_BYTES = 1024 * 1024
"""The bundled phrasebooks are under 20 kB; a file far larger is not a phrasebook."""
MAX_ERROR_CHARS = 300
"""Longest reason in an error line (a schema message quotes the offending value)."""


class _PlainLoader(yaml.SafeLoader):
    """The safe loader without aliases: a phrasebook has no use for them, and a few
    hundred bytes of nested aliases expand to gigabytes ("billion laughs")."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a phrasebook",
                                              event.start_mark)
        return super().compose_node(parent, index)


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> Phrasebook:
    # mtime_ns is part of the cache key only: an edited file is loaded afresh.
    root, data = _read_yaml(path, "phrasebook")

    fail = _failure(path, root)

    if not isinstance(data, dict):
        raise fail([], "a phrasebook is a mapping with id, version, title, checks and phrases")
    _check_schema(data, SCHEMA, fail)

    phrases = [Phrase(**entry) for entry in data["phrases"]]
    seen: dict[str, int] = {}
    for index, phrase in enumerate(phrases):
        if phrase.id in seen:
            raise fail(["phrases", index, "id"], f"duplicate phrase id {phrase.id!r} (first at entry {seen[phrase.id] + 1})")
        seen[phrase.id] = index
        if "/" in phrase.text and not phrase.variants:
            raise fail(["phrases", index, "text"],
                       f"{phrase.id}: text with '/' alternatives needs variants that spell them out")
    checks = [Check(**entry) for entry in data["checks"]]
    categories = {p.category for p in phrases}
    check_ids = [c.id for c in checks]
    for index, check in enumerate(checks):
        if check_ids.count(check.id) > 1:
            raise fail(["checks", index, "id"], f"duplicate check id {check.id!r}")
        for field_name in ("expect", "after"):
            category = getattr(check, field_name)
            if category is not None and category not in categories:
                raise fail(["checks", index, field_name],
                           f"check {check.id!r}: no phrase has category {category!r}")
    for required in REQUIRED_CHECKS:
        if required not in check_ids:
            raise fail(["checks"], f"missing required check {required!r}")
    long_call = (data.get("voice") or {}).get("long_call")
    if long_call is not None and not {"max_call_s", "max_monologue_s"} & set(long_call):
        raise fail(["voice", "long_call"], "voice.long_call: give max_call_s, max_monologue_s or both")
    return Phrasebook(
        id=data["id"],
        version=data["version"],
        title=data["title"],
        phrases=phrases,
        checks=checks,
        limits=Limits(**data.get("limits", {})),
        voice=VoiceRules(**{name: VOICE_RULE_TYPES[name](**entry) for name, entry in (data.get("voice") or {}).items()}),
        source=data.get("source", ""),
        path=path,
        forbidden_kinds={name: ForbiddenKind(**entry) for name, entry in data.get("forbidden_kinds", {}).items()},
        lexicon=_lexicon_path(Path(path), data.get("lexicon")) if "forbidden_kinds" in data else "",
        include=_include_of(data.get("include", [])),
        meaning_model=data.get("meaning_model", True),
    )


def _include_of(include: list | dict) -> dict[str, dict[str, dict]]:
    """``include:`` as part name → overrides of its kinds, whichever way it was written."""
    if isinstance(include, list):
        return {name: {} for name in include}
    return {name: overrides or {} for name, overrides in include.items()}


def _check_schema(data: dict, schema: dict, fail) -> None:
    """Raise ``fail`` at the most relevant schema violation, if any."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise fail(list(error.absolute_path), f"{where}: {error.message}")


def _read_yaml(path: str, what: str) -> tuple[yaml.Node | None, object]:
    """A YAML file's node tree (for line numbers) and its plain data; bounded in size, no aliases."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PHRASEBOOK_BYTES + 1)
        if len(raw) > MAX_PHRASEBOOK_BYTES:
            raise MonitorError(f"{path}: larger than {MAX_PHRASEBOOK_BYTES // 1024} kB; not a {what}")
        source = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MonitorError(f"{path}: cannot read {what}: {exc}") from None
    try:
        root = yaml.compose(source, Loader=_PlainLoader)
        data = yaml.load(source, Loader=_PlainLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise MonitorError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise MonitorError(f"{path}:1: YAML error: {exc}") from None
    return root, data


def _failure(path: str, root: yaml.Node | None):
    """The error for a mistake at a location of a YAML file: ``file:line: reason``,
    the reason cut short (a schema message quotes the offending value)."""

    def fail(location: list, reason: str) -> MonitorError:
        if len(reason) > MAX_ERROR_CHARS:
            reason = reason[: MAX_ERROR_CHARS - 3] + "..."
        return MonitorError(f"{path}:{_line_of(root, location)}: {reason}")

    return fail


def _line_of(root: yaml.Node | None, location: list) -> int:
    """1-based line of the YAML node at ``location`` (keys and list indices), or
    of its deepest existing ancestor."""
    node = root
    line = node.start_mark.line + 1 if node is not None else 1
    for step in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == step:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


# ---------------------------------------------------------------------------
# The shared lexicon: kinds of forbidden talk


@dataclass
class LexiconEntry:
    """An expression or a rule of the lexicon, before a phrasebook gives it an article."""

    id: str
    """Unique within the lexicon; phrases get ``lexicon.<id>``."""
    category: str
    """The kind: shirking, scolding, mocking, swearing, perfunctory, rhetorical."""
    text: str
    """An expression's wording, or what a rule catches (for reports)."""
    variants: list[str] = field(default_factory=list)
    """Other wordings of an expression."""
    threshold: float | None = None
    """Minimum fuzzy-match confidence of an expression; None uses the matcher default."""
    rule: Rule | None = None
    """The word groups of a rule; None for an expression."""


@dataclass
class Lexicon:
    """Expressions and word-group rules of forbidden kinds, shared by phrasebooks."""

    labels: dict[str, str]
    """Category → its name in the codes (shirking → 推诿)."""
    entries: list[LexiconEntry]
    """Expressions first, then rules, in file order."""


def _lexicon_path(phrasebook_path: Path, name: str | None) -> str:
    """The lexicon file a phrasebook names (or the default), next to the phrasebook or bundled."""
    name = name or DEFAULT_LEXICON
    for candidate in (phrasebook_path.parent / name, PHRASEBOOK_DIR / name):
        if candidate.is_file():
            return str(candidate.resolve())
    return str(phrasebook_path.parent / name)  # missing: load_phrasebook names it in the error


@lru_cache(maxsize=8)
def _load_lexicon(path: str, mtime_ns: int) -> Lexicon:
    # mtime_ns is part of the cache key only: an edited file is loaded afresh.
    root, data = _read_yaml(path, "lexicon")

    fail = _failure(path, root)

    if not isinstance(data, dict):
        raise fail([], "a lexicon is a mapping with labels, groups and rules")
    _check_schema(data, LEXICON_SCHEMA, fail)
    return _lexicon_of(data, fail)


def _lexicon_of(data: dict, fail) -> Lexicon:
    """The expressions and rules of validated lexicon data (a lexicon's or an included part's)."""
    groups = data["groups"]

    def words(location: list, refs: list) -> list[list[str]]:
        resolved = []
        for index, ref in enumerate(refs):
            if isinstance(ref, str) and ref not in groups:
                raise fail(location + [index], f"no word group named {ref!r} in groups")
            resolved.append(groups[ref] if isinstance(ref, str) else ref)
        return resolved

    entries = [LexiconEntry(**entry) for entry in data.get("expressions", [])]
    for index, entry in enumerate(data["rules"]):
        where = ["rules", index]
        rule = Rule(
            id=entry["id"],
            groups=words(where + ["all"], entry.get("all", [])),
            within=entry.get("within", Rule.within),
            unless=[w for group in words(where + ["unless"], entry.get("unless", [])) for w in group],
            not_after=[w for group in words(where + ["not_after"], entry.get("not_after", [])) for w in group],
            not_in=[w for group in words(where + ["not_in"], entry.get("not_in", [])) for w in group],
            guard_within=entry.get("guard_within", Rule.guard_within),
            guard_before=entry.get("guard_before"),
            negate_each=entry.get("negate_each", False),
            any_order=entry.get("any_order", False),
            shapes=entry.get("shapes", []),
            by_sound=entry.get("by_sound", []),
        )
        grouped = {w for group in rule.groups for w in group}
        for sound_index, word in enumerate(rule.by_sound):
            if word not in grouped:
                raise fail(where + ["by_sound", sound_index], f"rule {rule.id!r}: by_sound {word!r} is in none of its groups")
        for shape_index, shape in enumerate(rule.shapes):
            try:
                re.compile(shape)
            except re.error as error:
                raise fail(where + ["shapes", shape_index],
                           f"rule {rule.id!r}: bad pattern {shape!r}: {error}") from None
        for word in (w for w in grouped if w.startswith(SHAPE_WORD)):  # a group word may be a shape
            try:
                re.compile(word[len(SHAPE_WORD):])
            except re.error as error:
                raise fail(where + ["all"], f"rule {rule.id!r}: bad pattern {word!r}: {error}") from None
        if rule.within < sum(min(1 if w.startswith(SHAPE_WORD) else len(w) for w in group) for group in rule.groups):
            raise fail(where + ["within"],
                       f"rule {rule.id!r}: within {rule.within} is shorter than its shortest words together")
        entries.append(LexiconEntry(entry["id"], entry["category"], entry["text"], rule=rule))
    locations = [["expressions", i] for i in range(len(data.get("expressions", [])))]
    locations += [["rules", i] for i in range(len(data["rules"]))]
    seen: set[str] = set()
    for entry, where in zip(entries, locations):
        if entry.id in seen:
            raise fail(where + ["id"], f"duplicate lexicon id {entry.id!r}")
        seen.add(entry.id)
        if entry.category not in data["labels"]:
            raise fail(where + ["category"], f"{entry.id}: category {entry.category!r} has no entry in labels")
    return Lexicon(labels=data["labels"], entries=entries)


# ---------------------------------------------------------------------------
# Included parts: kinds that several codes share (gifts, private deals, promises)


@dataclass
class Part:
    """An included part (``include:``): a lexicon whose kinds carry a default article."""

    lexicon: Lexicon
    """Its labels, expressions and rules."""
    kinds: dict[str, ForbiddenKind]
    """Category → where the rule comes from, its severity, points and what to say
    instead; an including code may give its own article for any of them."""
    include: list[str]
    """The parts it includes in turn."""


@lru_cache(maxsize=16)
def _load_part(path: str, mtime_ns: int) -> Part:
    # mtime_ns is part of the cache key only: an edited file is loaded afresh.
    root, data = _read_yaml(path, "included part")
    fail = _failure(path, root)
    if not isinstance(data, dict):
        raise fail([], "an included part is a mapping with labels, groups, rules and kinds")
    _check_schema(data, PART_SCHEMA, fail)
    lexicon = _lexicon_of(data, fail)
    kinds = {category: ForbiddenKind(**entry) for category, entry in data["kinds"].items()}
    for category in kinds:
        if category not in lexicon.labels:
            raise fail(["kinds", category], f"kind {category!r} has no entry in labels")
    for category in sorted({e.category for e in lexicon.entries} - kinds.keys()):
        raise fail(["kinds"], f"no entry for kind {category!r} (its article and points)")
    return Part(lexicon=lexicon, kinds=kinds, include=list(data.get("include", [])))


def _resolve_include(owner: Path, name: str) -> Path:
    """The file an ``include`` names: next to the including file, else bundled; a name
    that leads out of that directory (``../x``, an absolute path, a symlink) is refused."""
    relative = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    for directory in dict.fromkeys((owner.parent.resolve(), PHRASEBOOK_DIR.resolve())):
        candidate = (directory / relative).resolve()
        if not candidate.is_relative_to(directory):
            raise MonitorError(f"{owner}: include {name!r}: outside the phrasebook directory {directory}")
        if candidate.is_file():
            return candidate
    raise MonitorError(f"{owner}: include {name!r}: no such file next to it or among the bundled phrasebooks")


def _included_files(path: Path, names: list[str]) -> tuple[tuple[str, str, int], ...]:
    """Every part a phrasebook includes, nested ones too, each file once: (the phrasebook's
    include it came through, file, mtime). A part that includes itself, directly or not, is refused."""
    found: dict[str, tuple[str, str, int]] = {}

    def visit(owner: Path, name: str, top: str, trail: tuple[str, ...]) -> None:
        part_path = _resolve_include(owner, name)
        key = str(part_path)
        if key in trail:
            cycle = " -> ".join(Path(p).name for p in (*trail, key))
            raise MonitorError(f"{owner}: include {name!r}: an include cycle ({cycle})")
        if key in found:
            return
        try:
            mtime = part_path.stat().st_mtime_ns
        except OSError as exc:
            raise MonitorError(
                f"{part_path}: cannot read included part (named by {owner}): {exc.strerror or exc}"
            ) from None
        found[key] = (top, key, mtime)
        for nested in _load_part(key, mtime).include:
            visit(part_path, nested, top, (*trail, key))

    for name in names:
        visit(path, name, name, (str(path),))
    return tuple(found.values())


def _kind_phrase(prefix: str, entry: LexiconEntry, labels: dict[str, str], kind: ForbiddenKind) -> Phrase:
    """A lexicon or part entry as a forbidden phrase of a code, with the code's article for its kind."""
    return Phrase(
        id=prefix + entry.id,
        kind="forbidden",
        category=entry.category,
        text=f"{labels[entry.category]}：{entry.text}" if entry.rule else entry.text,
        article=kind.article,
        variants=list(entry.variants),
        severity=kind.severity,
        points=kind.points,
        instead=kind.instead,
        instead_article=kind.instead_article,
        threshold=entry.threshold,
        rule=entry.rule,
    )


def _meaning_phrase(category: str, label: str, kind: ForbiddenKind) -> Phrase:
    """What the meaning model's hits of a kind stand for: the kind itself, as the code forbids it."""
    return Phrase(
        id=f"meaning.{category}",
        kind="forbidden",
        category=category,
        text=f"{label}（按语义识别）",
        article=kind.article,
        severity=kind.severity,
        points=kind.points,
        instead=kind.instead,
        instead_article=kind.instead_article,
    )


@lru_cache(maxsize=32)
def _with_kinds(path: str, mtime_ns: int, lexicon_path: str, lexicon_mtime_ns: int,
                parts: tuple[tuple[str, str, int], ...]) -> Phrasebook:
    """The phrasebook with the lexicon's entries of its forbidden kinds and its included
    parts' entries as forbidden phrases.

    Cached on every file's time, so one object stands for one edition of them all.
    """
    base = _load_cached(path, mtime_ns)
    kind_phrases, meaning_phrases = [], []
    if lexicon_path:
        lexicon = _load_lexicon(lexicon_path, lexicon_mtime_ns)
        known = {e.category for e in lexicon.entries}
        for category in base.forbidden_kinds:
            if category not in known:
                raise MonitorError(
                    f"{path}: forbidden_kinds.{category}: {lexicon_path} has no expression or rule of this kind"
                )
        kind_phrases = [_kind_phrase(LEXICON_ID_PREFIX, entry, lexicon.labels, base.forbidden_kinds[entry.category])
                        for entry in lexicon.entries if entry.category in base.forbidden_kinds]
        meaning_phrases = [_meaning_phrase(category, lexicon.labels[category], kind)
                           for category, kind in base.forbidden_kinds.items() if category in lexicon.labels]
    included = []
    for top, overrides in base.include.items():
        below = [_load_part(part_path, mtime) for through, part_path, mtime in parts if through == top]
        below_paths = [part_path for through, part_path, _ in parts if through == top]
        known = {category for part in below for category in part.kinds}
        for category in overrides:
            if category not in known:
                raise MonitorError(f"{path}: include.{top}.{category}: the part has no such kind "
                                   f"(it has {', '.join(sorted(known)) or 'none'})")
        for part, part_path in zip(below, below_paths):
            prefix = Path(part_path).stem + "."
            kinds = {category: dataclasses.replace(kind, **overrides.get(category, {}))
                     for category, kind in part.kinds.items()}
            for entry in part.lexicon.entries:
                included.append(_kind_phrase(prefix, entry, part.lexicon.labels, kinds[entry.category]))
            # the meaning model judges an included part's kinds too, cited by this code's article
            meaning_phrases += [_meaning_phrase(category, part.lexicon.labels[category], kind)
                                for category, kind in kinds.items()
                                if not any(m.category == category for m in meaning_phrases)]
    seen: set[str] = set()
    for phrase in base.phrases + kind_phrases + included:
        if phrase.id in seen:
            raise MonitorError(f"{path}: phrase id {phrase.id!r} comes twice (from an included part?)")
        seen.add(phrase.id)
    return dataclasses.replace(base, kind_phrases=kind_phrases, included=[p for _, p, _ in parts],
                               included_phrases=included,
                               meaning_phrases=meaning_phrases if base.meaning_model else [])


def _phrasebook(text: str) -> str:
    """A bundled phrasebook's name or an existing YAML file; anything else is a usage error."""
    if os.path.isfile(text) or text in bundled_phrasebooks():
        return text
    raise argparse.ArgumentTypeError(
        f"{text}: no such phrasebook (bundled: {', '.join(bundled_phrasebooks())}; or the path of a YAML file)"
    )


def add_phrasebook_argument(parser: argparse.ArgumentParser, default: str | None, help: str) -> None:
    """``--phrasebook/-p``, spelt and checked the same way on every command."""
    parser.add_argument("--phrasebook", "-p", type=_phrasebook, default=default, metavar="PB", help=help)
