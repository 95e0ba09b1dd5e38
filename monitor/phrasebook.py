"""Phrasebooks: a code of conduct as data.

A phrasebook is a YAML file (see ``phrasebooks/``) with the phrases the code
mandates or forbids, each tied to its article (第N条), and the checks that say
where mandated phrases must come (greeting in the first seconds, an apology
after a complaint, ...). This module holds the records and the loader; the
loader validates the YAML and reports file, line and reason for any mistake.
"""

from __future__ import annotations

import os
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
    source: str = ""
    """Where the code comes from (document and part)."""
    path: str = ""
    """The YAML file it was loaded from."""

    def by_id(self, phrase_id: str) -> Phrase:
        return next(p for p in self.phrases if p.id == phrase_id)

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
    },
}
"""JSON schema of a phrasebook file (YAML parsed to plain data)."""

REQUIRED_CHECKS = ("greeting", "farewell")
"""Reports always carry these two checks, so every phrasebook must define them."""


def bundled_phrasebooks() -> list[str]:
    """Names of the phrasebooks shipped with the package (``broadband``, ...)."""
    return sorted(p.stem for p in PHRASEBOOK_DIR.glob("*.yaml"))


def load_phrasebook(name_or_path: str) -> Phrasebook:
    """Load and validate a phrasebook: a bundled name (``broadband``) or a YAML path.

    Raises ``MonitorError("<path>:<line>: <reason>")`` for any problem.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and os.sep not in name_or_path and "/" not in name_or_path:
        path = PHRASEBOOK_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise MonitorError(
                f"{name_or_path}: no such phrasebook (bundled: {', '.join(bundled_phrasebooks())})"
            )
    path = path.resolve()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise MonitorError(f"{path}: cannot read phrasebook: {exc.strerror or exc}") from None
    return _load_cached(str(path), mtime)


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
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PHRASEBOOK_BYTES + 1)
        if len(raw) > MAX_PHRASEBOOK_BYTES:
            raise MonitorError(f"{path}: larger than {MAX_PHRASEBOOK_BYTES // 1024} kB; not a phrasebook")
        source = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MonitorError(f"{path}: cannot read phrasebook: {exc}") from None
    try:
        root = yaml.compose(source, Loader=_PlainLoader)
        data = yaml.load(source, Loader=_PlainLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise MonitorError(f"{path}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise MonitorError(f"{path}:1: YAML error: {exc}") from None

    def fail(location: list, reason: str) -> MonitorError:
        if len(reason) > MAX_ERROR_CHARS:
            reason = reason[: MAX_ERROR_CHARS - 3] + "..."
        return MonitorError(f"{path}:{_line_of(root, location)}: {reason}")

    if not isinstance(data, dict):
        raise fail([], "a phrasebook is a mapping with id, version, title, checks and phrases")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "top level"
        raise fail(list(error.absolute_path), f"{where}: {error.message}")

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
    return Phrasebook(
        id=data["id"],
        version=data["version"],
        title=data["title"],
        phrases=phrases,
        checks=checks,
        limits=Limits(**data.get("limits", {})),
        source=data.get("source", ""),
        path=path,
    )


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
