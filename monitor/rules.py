"""Rules and scoring: what the phrase hits of one call mean for the agent.

Pure functions over transcribed segments and matcher hits; no I/O. The rules
themselves live in the phrasebook (``Check`` records and the points of each
forbidden ``Phrase``); this module only knows how to evaluate them:

- a check passes when a hit of its expected category comes where it says
  (within the first seconds of agent speech, within the last seconds, within
  some seconds after a cue such as a customer complaint, or anywhere);
- every forbidden phrase the agent says is a violation;
- customer speech never counts against the agent, but its cues can trigger
  scenario checks.

Decisions a reader would otherwise have to guess:

- When the agent said nothing at all, the call is not scored: ``checks`` and
  ``score_total`` are None. A silent agent channel is as often a wiring or
  channel-assignment fault as a silent agent, and a 0 would look like a verdict.
- Each occurrence of a forbidden phrase deducts its points, up to
  ``MAX_DEDUCTIONS_PER_PHRASE`` times per phrase, so one habit cannot empty the
  score on its own while saying it twice still costs twice. All occurrences
  stay events.
- A forbidden phrase without points in the phrasebook deducts by severity
  (``SEVERITY_POINTS``).
- Metrics are flagged (too fast, dead air, interruptions) but never deduct:
  the phrasebook gives no points for them.
- On a mono call a sentence's role is a guess with a confidence
  (``roles.py``). A forbidden phrase heard in a sentence whose role is
  uncertain stays an event, marked, but deducts nothing; the sentence is
  listed in ``Judgement.review`` (待复核) for a person to hear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor.asr import Segment
from monitor.phrasebook import Check, Limits, Phrasebook
from monitor.roles import uncertain
from monitor.text import spoken

if TYPE_CHECKING:
    from monitor.match import Hit

SCORE_MAX = 100
SEVERITY_POINTS = {"minor": 5, "major": 10, "critical": 20}
MAX_DEDUCTIONS_PER_PHRASE = 3
# Segment edges from ASR are fuzzy by a few hundred milliseconds; an agent
# turn that starts this close to the end of the customer's is a quick reply,
# not 抢话.
INTERRUPTION_TOLERANCE_S = 0.3


@dataclass
class Evidence:
    """Where in the call a rule was decided."""

    start: float | None
    """Seconds from the start of the recording; None for text without timing."""
    end: float | None
    """Seconds from the start of the recording."""
    heard: str
    """What was said there, as transcribed."""
    speaker: str = "agent"
    """``agent`` or ``customer``."""

    def to_json(self) -> dict:
        return {"start": _round(self.start), "end": _round(self.end), "heard": self.heard, "speaker": self.speaker}


@dataclass
class CheckResult:
    """The outcome of one phrasebook check."""

    id: str
    """The check id, e.g. ``greeting``."""
    passed: bool
    """True when the expected phrase came where the check requires it, or the
    check did not apply (see ``applicable``)."""
    detail: str
    """One line for the report, in Chinese."""
    article: str
    """The article that requires it."""
    description: str
    """The check's one-line description from the phrasebook."""
    points: int
    """Deducted for this check: its points when failed, else 0."""
    applicable: bool = True
    """False for a scenario check whose trigger never occurred in the call."""
    evidence: list[Evidence] = field(default_factory=list)
    """The phrase that passed it, or the triggers left unanswered."""

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "passed": self.passed,
            "detail": self.detail,
            "article": self.article,
            "description": self.description,
            "points": self.points,
            "applicable": self.applicable,
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass
class Deduction:
    """Points taken off the score, with the reason and what to say instead."""

    reason: str
    """One line for the report, in Chinese."""
    points: int
    """Points deducted."""
    article: str
    """The article broken."""
    source: str
    """The phrase id (violations) or check id (failed checks) behind it."""
    severity: str
    """minor, major or critical; failed checks count as major."""
    evidence: Evidence | None = None
    """What was heard, and when; None for a check failed by absence."""
    coaching: str | None = None
    """The wording the code prescribes instead."""
    coaching_article: str | None = None
    """The article of ``coaching``."""

    def to_json(self) -> dict:
        return {
            "reason": self.reason,
            "points": self.points,
            "article": self.article,
            "source": self.source,
            "severity": self.severity,
            "evidence": self.evidence.to_json() if self.evidence else None,
            "coaching": self.coaching,
            "coaching_article": self.coaching_article,
        }


@dataclass
class Judgement:
    """Everything the rules concluded about one call."""

    events: list[Hit]
    """The agent's forbidden and mandated phrase hits, in time order."""
    checks: list[CheckResult] | None
    """One result per phrasebook check; None when the agent said nothing."""
    deductions: list[Deduction]
    """Failed checks first, then violations in time order."""
    score_total: int | None
    """0-100; None when the agent said nothing (the call is not scored)."""
    metrics: dict
    """Talk time, speech rate, silence and interruptions; see ``metrics``."""
    score_max: int = SCORE_MAX
    """The score of a call without deductions."""
    review: list[dict] = field(default_factory=list)
    """Sentences whose speaker is uncertain (mono calls), for a person to hear:
    ``{"kind": "uncertain_speaker", "label": "待复核", "start", "end", "text",
    "speaker", "speaker_confidence", "forbidden": [phrase ids not deducted]}``."""
    held: list = field(default_factory=list)
    """Forbidden hits in those sentences: listed among ``events`` but not deducted."""


def judge(
    segments: list[Segment],
    hits: list[Hit],
    phrasebook: Phrasebook,
    duration_s: float,
    stereo: bool,
) -> Judgement:
    """Evaluate a call's hits against the phrasebook's checks and forbidden phrases.

    ``stereo`` says the customer had a channel of their own. On mono calls the
    speakers come from role separation (``roles.py``), with a confidence per
    sentence; without it, all mono speech is labelled agent.
    """
    call_metrics = metrics(segments, duration_s, phrasebook.limits, stereo)
    agent_segments = _spoken(segments, "agent")
    doubtful = [s for s in segments if uncertain(s)]
    agent_hits = [h for h in hits if h.speaker != "customer"]
    # An uncertain sentence is matched as the agent's whichever side it leans to
    # (``roles.match_by_role``): its forbidden phrases are held, never lost.
    held = [h for h in agent_hits if h.kind == "forbidden" and _within_any(h, doubtful, any_speaker=True)]
    agent_hits = [h for h in agent_hits if h not in held]
    review = [_review_item(s, [h for h in held if _within_any(h, [s], any_speaker=True)]) for s in doubtful]
    if not agent_segments:
        return Judgement(events=[], checks=None, deductions=[], score_total=None, metrics=call_metrics, review=review)

    # Held phrases stay events, marked, so the report shows what may have been
    # said; only the deductions leave them out.
    events = sorted((h for h in agent_hits + held if h.kind in ("forbidden", "mandated")), key=_time_key)
    cues = sorted((h for h in hits if h.kind == "cue"), key=_time_key)
    agent_start = agent_segments[0].start
    agent_end = max(s.end for s in agent_segments)

    checks = [_evaluate(check, agent_hits, cues, agent_start, agent_end) for check in phrasebook.checks]
    deductions = [_check_deduction(check, result, phrasebook) for check, result in zip(phrasebook.checks, checks)]
    deductions = [d for d in deductions if d is not None]
    deductions += _violations([h for h in agent_hits if h.kind == "forbidden"], phrasebook)
    total = max(0, SCORE_MAX - sum(d.points for d in deductions))
    return Judgement(
        events=events, checks=checks, deductions=deductions, score_total=total, metrics=call_metrics, review=review,
        held=held,
    )


def metrics(segments: list[Segment], duration_s: float, limits: Limits, stereo: bool) -> dict:
    """Talk time, speech rate, dead air and (stereo only) interruptions.

    Speech rate counts spoken characters (no punctuation or spaces) per minute
    of agent segment time. Silence is measured between speech of either party,
    from the first word to the last: ring time before and hang-up time after
    are not dead air.
    """
    agent = _spoken(segments, "agent")
    customer = _spoken(segments, "customer")
    agent_talk_s = _covered(agent)
    characters = sum(len(spoken(s.text)) for s in agent)
    speech_rate = characters / (agent_talk_s / 60) if agent_talk_s > 0 else None
    gaps = _gaps(agent + customer)
    longest = max(gaps, key=lambda g: g[1] - g[0], default=None)
    dead_air = [g for g in gaps if g[1] - g[0] > limits.max_silence_s]
    interruptions = _interruptions(agent, customer) if stereo else None
    return {
        "duration_s": _round(duration_s),
        "agent_talk_s": _round(agent_talk_s),
        "customer_talk_s": _round(_covered(customer)) if stereo else None,
        "agent_talk_ratio": _round(agent_talk_s / duration_s) if duration_s > 0 else None,
        "agent_characters": characters,
        "speech_rate_cpm": round(speech_rate) if speech_rate is not None else None,
        "speech_rate_max_cpm": limits.speech_rate_max_cpm,
        "speech_rate_too_fast": speech_rate is not None and speech_rate > limits.speech_rate_max_cpm,
        "longest_silence_s": _round(longest[1] - longest[0]) if longest else 0.0,
        "longest_silence_at": _round(longest[0]) if longest else None,
        "max_silence_s": limits.max_silence_s,
        "dead_air": [{"start": _round(a), "end": _round(b), "duration_s": _round(b - a)} for a, b in dead_air],
        "interruptions": len(interruptions) if interruptions is not None else None,
        "interruption_events": interruptions or [],
    }


def _evaluate(check: Check, agent_hits: list[Hit], cues: list[Hit], agent_start: float, agent_end: float) -> CheckResult:
    expected = sorted(
        (h for h in agent_hits if h.kind != "forbidden" and h.category == check.expect and h.start is not None),
        key=_time_key,
    )

    def result(passed: bool, detail: str, evidence: list[Evidence], applicable: bool = True) -> CheckResult:
        points = 0 if passed else check.points
        return CheckResult(check.id, passed, detail, check.article, check.description, points, applicable, evidence)

    if check.after is not None:
        triggers = [c for c in cues if c.category == check.after and c.start is not None]
        if not triggers:
            return result(True, f"未出现触发情形（{check.after}），不适用", [], applicable=False)
        window = check.within_s if check.within_s is not None else float("inf")
        unanswered = [
            t for t in triggers if not any(t.start <= h.start <= (t.end or t.start) + window for h in expected)
        ]
        if not unanswered:
            answers = [h for h in expected if h.start >= triggers[0].start]
            return result(True, f"“{triggers[0].heard}”之后已按规范回应", [_evidence(answers[0])])
        first = unanswered[0]
        limit = f"{window:g}秒内" if check.within_s is not None else "之后"
        return result(
            False,
            f"{_clock(first.start)} 听到“{first.heard}”，{limit}未听到规范用语",
            [_evidence(t) for t in unanswered],
        )

    if check.within_first_s is not None:
        deadline = agent_start + check.within_first_s
        in_time = [h for h in expected if h.start <= deadline]
        if in_time:
            return result(True, f"{_clock(in_time[0].start)} 已说规范用语", [_evidence(in_time[0])])
        if expected:
            late = expected[0]
            return result(
                False, f"规范用语出现在 {_clock(late.start)}，晚于开口后{check.within_first_s:g}秒", [_evidence(late)]
            )
        return result(False, f"开口后{check.within_first_s:g}秒内未听到规范用语", [])

    if check.within_last_s is not None:
        earliest = agent_end - check.within_last_s
        in_time = [h for h in expected if (h.end if h.end is not None else h.start) >= earliest]
        if in_time:
            return result(True, f"{_clock(in_time[-1].start)} 已说规范用语", [_evidence(in_time[-1])])
        if expected:
            early = expected[-1]
            return result(
                False,
                f"规范用语出现在 {_clock(early.start)}，不在结束前{check.within_last_s:g}秒内",
                [_evidence(early)],
            )
        return result(False, f"结束前{check.within_last_s:g}秒内未听到规范用语", [])

    if expected:
        return result(True, f"{_clock(expected[0].start)} 已说规范用语", [_evidence(expected[0])])
    return result(False, "通话中未听到规范用语", [])


def _check_deduction(check: Check, result: CheckResult, phrasebook: Phrasebook) -> Deduction | None:
    if result.passed:
        return None
    prescribed = phrasebook.in_category(check.expect)
    coaching = check.instead or (prescribed[0].text if prescribed else None)
    coaching_article = check.article if check.instead or not prescribed else prescribed[0].article
    return Deduction(
        reason=f"{check.description or check.id}：{result.detail}",
        points=check.points,
        article=check.article,
        source=check.id,
        severity="major",
        evidence=result.evidence[0] if result.evidence else None,
        coaching=coaching,
        coaching_article=coaching_article,
    )


def _violations(forbidden: list[Hit], phrasebook: Phrasebook) -> list[Deduction]:
    deductions = []
    counted: dict[str, int] = {}
    for hit in forbidden:
        counted[hit.phrase_id] = counted.get(hit.phrase_id, 0) + 1
        if counted[hit.phrase_id] > MAX_DEDUCTIONS_PER_PHRASE:
            continue
        phrase = phrasebook.by_id(hit.phrase_id)
        deductions.append(
            Deduction(
                reason=f"服务禁语：“{phrase.text}”",
                points=phrase.points or SEVERITY_POINTS[phrase.severity],
                article=hit.article or phrase.article,
                source=hit.phrase_id,
                severity=phrase.severity,
                evidence=_evidence(hit),
                coaching=phrase.instead,
                coaching_article=phrase.instead_article,
            )
        )
    return deductions


def _spoken(segments: list[Segment], speaker: str) -> list[Segment]:
    return sorted((s for s in segments if s.speaker == speaker and s.text.strip()), key=lambda s: s.start)


def _covered(segments: list[Segment]) -> float:
    """Seconds covered by the segments, counting overlaps once."""
    return sum(end - start for start, end in _union(segments))


def _union(segments: list[Segment]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    for s in sorted(segments, key=lambda s: s.start):
        if spans and s.start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], s.end))
        else:
            spans.append((s.start, s.end))
    return spans


def _gaps(segments: list[Segment]) -> list[tuple[float, float]]:
    spans = _union(segments)
    return [(a[1], b[0]) for a, b in zip(spans, spans[1:])]


def _interruptions(agent: list[Segment], customer: list[Segment]) -> list[dict]:
    """Agent turns that start while the customer is still speaking (抢话)."""
    found = []
    for turn in agent:
        talking = next(
            (c for c in customer if c.start < turn.start < c.end - INTERRUPTION_TOLERANCE_S), None
        )
        if talking is not None:
            found.append(
                {"start": _round(turn.start), "customer_until": _round(talking.end), "heard": turn.text}
            )
    return found


def _within_any(hit: Hit, segments: list[Segment], any_speaker: bool = False) -> bool:
    """True when the hit was heard (at least partly) inside one of the segments of its speaker
    (of anyone's, with ``any_speaker``)."""
    if hit.start is None:
        return False
    end = hit.end if hit.end is not None else hit.start
    return any((any_speaker or s.speaker == hit.speaker) and hit.start < s.end and s.start < end for s in segments)


def _review_item(segment: Segment, held: list[Hit]) -> dict:
    return {
        "kind": "uncertain_speaker",
        "label": "待复核",
        "start": _round(segment.start),
        "end": _round(segment.end),
        "text": segment.text,
        "speaker": segment.speaker,
        "speaker_confidence": segment.speaker_confidence,
        "forbidden": [h.phrase_id for h in held],
    }


def _evidence(hit: Hit) -> Evidence:
    return Evidence(start=hit.start, end=hit.end, heard=hit.heard, speaker=hit.speaker)


def _time_key(hit: Hit) -> float:
    return hit.start if hit.start is not None else float("inf")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
