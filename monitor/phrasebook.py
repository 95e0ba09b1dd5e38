"""Phrasebooks: a code of conduct as data.

A phrasebook is a YAML file (see ``phrasebooks/``) with the phrases the code
mandates or forbids, each tied to its article (第N条), and the checks that say
where mandated phrases must come (greeting in the first seconds, an apology
after a complaint, ...). This module holds the records and the loader; the
loader validates the YAML and reports file, line and reason for any mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
