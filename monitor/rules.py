"""Rules and scoring: what the phrase hits of one call mean for the agent.

Pure functions over transcribed segments and matcher hits; no I/O. The rules
themselves live in the phrasebook (``Check`` records and the points of each
forbidden ``Phrase``); this module only knows how to evaluate them:

- a check passes when a hit of its expected category comes where it says
  (within the first seconds of agent speech, within the last seconds, within
  some seconds after a cue such as a customer complaint, or anywhere); a
  greeting or farewell also counts by its kind, however worded (``text.COURTESY_SHAPES``);
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
- Conduct heard in the voice (the phrasebook's ``voice:`` block: 高声, 争吵,
  讲普通话, 长话短说, 打断) gives ``ConductEvent``s, judged the same way: only
  the agent's sentences count, uncertain ones are held for review, and each
  rule deducts its points per event up to ``MAX_DEDUCTIONS_PER_PHRASE`` times.
  Loudness is only compared with the same speaker's own baseline in the call
  (recordings are gain-controlled); the measuring is in ``acoustics.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from monitor.acoustics import SentenceSound, baseline
from monitor.asr import Segment
from monitor.phrasebook import (
    ArgumentRule, Check, ConductRule, Limits, LongCallRule, LoudRule, MandarinRule, Phrasebook, VoiceRules,
)
from monitor.match import Hit
from monitor.roles import most_overlapping, uncertain
from monitor.text import courtesy_acts, spoken

if TYPE_CHECKING:
    from monitor.meaning import MeaningModel

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
    "speaker", "speaker_confidence", "forbidden": [phrase ids not deducted]}``, and
    ``"conduct": [voice.<kind>, ...]`` when conduct events are held there."""
    held: list = field(default_factory=list)
    """Forbidden hits in those sentences: listed among ``events`` but not deducted."""
    meaning_review: list = field(default_factory=list)
    """The meaning model's hits below its deduct threshold: listed among ``events`` and in
    ``review`` (``{"kind": "meaning_model", ...}``) but not deducted."""
    conduct: list[ConductEvent] = field(default_factory=list)
    """Conduct heard in the voice and the timing (``voice:`` rules), in time order."""


CONDUCT_LABELS = {
    "loud": "高声/吵闹",
    "argument": "与客户争辩、争吵",
    "non_mandarin": "未讲普通话",
    "long_call": "通话过长（长话短说）",
    "monologue": "单方讲话过长（长话短说）",
    "interruption": "打断对方讲话",
}
"""The report's name for each kind of conduct event."""
CONDUCT_INSTEAD = {
    "loud": "音量恰当，语气平和",
    "argument": "耐心听取客户意见，不与客户争辩",
    "non_mandarin": "讲普通话",
    "long_call": "长话短说，简洁明了",
    "monologue": "长话短说，留出时间听客户讲",
    "interruption": "等客户讲完再回应",
}
"""What to do instead, when the phrasebook's rule does not say."""


@dataclass
class ConductEvent:
    """One instance of conduct a ``voice:`` rule flags: a loud sentence, a quarrel, a long monologue..."""

    kind: str
    """loud, argument, non_mandarin, long_call, monologue or interruption (see ``CONDUCT_LABELS``)."""
    rule: ConductRule
    """The phrasebook rule that asked for it (article, points, coaching)."""
    start: float
    """Seconds from the start of the recording."""
    end: float
    """Seconds from the start of the recording."""
    heard: str
    """What was said there (the sentence, or the stretch's sentences joined)."""
    detail: str
    """One line for the report, in Chinese: the measurement behind it."""
    speaker: str = "agent"
    """``agent``, or ``both`` for an argument."""
    confidence: float = 1.0
    """How sure the speaker is (the lowest speaker confidence of its sentences; 1.0 stereo)."""
    uncertain_speaker: bool = False
    """On a mono call, a sentence of it may not be the agent's: shown, held for review, not deducted."""

    @property
    def rule_id(self) -> str:
        """``voice.<kind>``: the event's ``phrase_id`` and its deductions' ``source``."""
        return f"voice.{self.kind}"


def judge(
    segments: list[Segment],
    hits: list[Hit],
    phrasebook: Phrasebook,
    duration_s: float,
    stereo: bool,
    sounds: list[tuple[Segment, SentenceSound]] | None = None,
    meaning: MeaningModel | None = None,
) -> Judgement:
    """Evaluate a call's hits against the phrasebook's checks and forbidden phrases.

    ``stereo`` says the customer had a channel of their own. On mono calls the
    speakers come from role separation (``roles.py``), with a confidence per
    sentence; without it, all mono speech is labelled agent. ``sounds`` pairs
    segments with what they sounded like, for the ``voice:`` rules that need it
    (``pipeline.sentence_sounds``); without it, those rules judge nothing.
    ``meaning`` judges the agent's sentences where no phrase or rule fired
    (``meaning.model_for``); without it, only the phrases and rules find forbidden talk.
    """
    call_metrics = metrics(segments, duration_s, phrasebook.limits, stereo)
    conduct, conduct_metrics = judge_conduct(segments, phrasebook.voice, duration_s, stereo, sounds)
    call_metrics.update(conduct_metrics)
    agent_segments = _spoken(segments, "agent")
    doubtful = [s for s in segments if uncertain(s)]
    # The meaning model adds what the phrases and rules missed in the agent's sentences;
    # below its deduct threshold a hit is only listed for review.
    by_meaning = meaning.hits(phrasebook, segments, hits) if meaning is not None else []
    meaning_review = [h for h in by_meaning if not meaning.deducts(h)]
    hits = sorted(hits + [h for h in by_meaning if meaning.deducts(h)], key=_time_key)
    agent_hits = [h for h in hits if h.speaker != "customer"]
    # An uncertain sentence is matched as the agent's whichever side it leans to
    # (``roles.match_by_role``): its forbidden phrases are held, never lost.
    held = [h for h in agent_hits if h.kind == "forbidden" and _within_any(h, doubtful, any_speaker=True)]
    agent_hits = [h for h in agent_hits if h not in held]
    # A held phrase names the side its sentence leans to, as the transcript does, so a report never
    # shows the customer's words as the agent's; ``uncertain_speaker`` says the side is not sure.
    held = [replace(h, speaker=most_overlapping(doubtful, h.start, h.end).speaker) for h in held]
    review = [
        _review_item(s, [h for h in held if _within_any(h, [s], any_speaker=True)], [c for c in conduct if c.uncertain_speaker and _overlaps(c, s)])
        for s in doubtful
    ]
    # Held events over speech the transcript has no doubtful sentence for (wordless speech on a mono call).
    review += [
        _review_item(Segment(c.start, c.end, c.heard, "agent", speaker_confidence=c.confidence), [], [c])
        for c in conduct
        if c.uncertain_speaker and not any(_overlaps(c, s) for s in doubtful)
    ]
    review += [_meaning_review_item(h) for h in meaning_review]
    if not agent_segments:
        return Judgement(events=[], checks=None, deductions=[], score_total=None, metrics=call_metrics, review=review)

    # Held phrases stay events, marked, so the report shows what may have been
    # said; only the deductions leave them out.
    events = sorted((h for h in agent_hits + held + meaning_review if h.kind in ("forbidden", "mandated")),
                    key=_time_key)
    # The codes' scenario checks answer the customer (客户抱怨…时，应使用…): a cue in a sentence
    # surely the agent's (保证以后不会再上不了网) is no complaint. Where no side is known, any speech may be.
    sides_known = stereo or _roles_known(segments)
    cues = sorted(
        (h for h in hits if h.kind == "cue"
         and (not sides_known or h.speaker != "agent" or _within_any(h, doubtful, any_speaker=True))),
        key=_time_key,
    )  # fmt: skip
    agent_start = agent_segments[0].start
    agent_end = max(s.end for s in agent_segments)

    said = agent_hits + _courtesies(agent_segments)
    checks = [_evaluate(check, said, cues, agent_start, agent_end, doubtful) for check in phrasebook.checks]
    deductions = [_check_deduction(check, result, phrasebook) for check, result in zip(phrasebook.checks, checks)]
    deductions = [d for d in deductions if d is not None]
    deductions += _violations([h for h in agent_hits if h.kind == "forbidden"], phrasebook)
    deductions += _conduct_deductions(conduct)
    total = max(0, SCORE_MAX - sum(d.points for d in deductions))
    return Judgement(
        events=events, checks=checks, deductions=deductions, score_total=total, metrics=call_metrics, review=review,
        held=held, conduct=conduct, meaning_review=meaning_review,
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
    # On a mono call only sentences whose roles are certain can tell who spoke over whom.
    certain = stereo or _roles_known(segments)
    interruptions = (
        _interruptions([s for s in agent if not uncertain(s)], [s for s in customer if not uncertain(s)]) if certain else None
    )
    return {
        "duration_s": _round(duration_s),
        "agent_talk_s": _round(agent_talk_s),
        "customer_talk_s": _round(_covered(customer)) if certain else None,
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


def judge_conduct(
    segments: list[Segment],
    rules: VoiceRules,
    duration_s: float,
    stereo: bool,
    sounds: list[tuple[Segment, SentenceSound]] | None = None,
) -> tuple[list[ConductEvent], dict]:
    """The events of the phrasebook's ``voice:`` rules, in time order, and the metrics behind them.

    ``sounds`` pairs segments with what they sounded like: loudness for
    ``loud`` and ``argument``, language for ``non_mandarin``. It may also hold
    speech that has no words (text ""): speech Whisper, told to expect Chinese,
    did not transcribe, which is often exactly the other language.
    """
    pairs = sounds if sounds is not None else [(s, SentenceSound()) for s in segments]
    heard = sorted(
        ((s, sound) for s, sound in pairs if s.text.strip() or sound.language is not None), key=lambda pair: pair[0].start
    )
    worded = [(s, sound) for s, sound in heard if s.text.strip()]
    events: list[ConductEvent] = []
    found: dict = {}
    if rules.needs_levels and any(sound.level_db is not None for _, sound in heard):
        own = {speaker: _baseline_of(worded, speaker) for speaker in ("agent", "customer")}
        found["loudness"] = _loudness_metrics(worded, own)
        calm = {speaker: _baseline_of(worded, speaker, CALM_SHARE) for speaker in ("agent", "customer")}
        if rules.loud is not None:
            call = found["loudness"]["call_baseline_db"]
            events += _loud_sentences(worded, own["agent"], calm["customer"][0], call, rules.loud, stereo)
        if rules.argument is not None:
            events += _arguments(worded, calm, rules.argument)
    if rules.non_mandarin is not None:
        checked = [(s, sound) for s, sound in heard if s.speaker == "agent" and sound.language is not None]
        found["language"] = {
            "checked": len(checked),
            "sentences": [
                {"start": _round(s.start), "end": _round(s.end), "language": sound.language,
                 "probability": _round(sound.language_probability), "zh_probability": _round(sound.mandarin_probability)}
                for s, sound in checked
            ],
        }  # fmt: skip
        events += _other_languages(checked, rules.non_mandarin)
    if rules.long_call is not None:
        events += _long_talk([s for s, _ in worded], duration_s, rules.long_call)
    if rules.interruption is not None and (stereo or _roles_known(segments)):
        for agent_turn, talking in _interruption_pairs(_spoken(segments, "agent"), _spoken(segments, "customer")):
            events.append(
                _conduct_event(
                    "interruption", rules.interruption, [agent_turn, talking], agent_turn.start, agent_turn.end,
                    agent_turn.text, f"客户讲话至 {_clock(talking.end)}，坐席在 {_clock(agent_turn.start)} 开口", "agent",
                )
            )  # fmt: skip
    return sorted(events, key=lambda e: e.start), found


CALM_SHARE = 0.25
"""An argument is judged against each speaker's calm level, the level a quarter of
their speech time stays under: a customer angry for most of the call has a loud
median, and only their calmer sentences show what raised means for them."""


def _baseline_of(
    heard: list[tuple[Segment, SentenceSound]], speaker: str, share: float = 0.5
) -> tuple[float | None, int]:
    """A speaker's baseline level from their sentences whose speaker is certain, and how many there were."""
    mine = [(s, sound.level_db) for s, sound in heard if s.speaker == speaker and sound.level_db is not None and not uncertain(s)]
    return baseline([level for _, level in mine], [s.end - s.start for s, _ in mine], share), len(mine)


def _loudness_metrics(heard: list[tuple[Segment, SentenceSound]], own: dict) -> dict:
    levelled = [(s, sound.level_db) for s, sound in heard if sound.level_db is not None]
    call = baseline([level for _, level in levelled], [s.end - s.start for s, _ in levelled])
    rows = []
    for s, level in levelled:
        mine = own.get(s.speaker, (None, 0))[0]
        rows.append({
            "start": _round(s.start), "end": _round(s.end), "speaker": s.speaker, "level_db": _round(level),
            "above_own_db": _round(level - mine) if mine is not None else None, "above_call_db": _round(level - call),
        })  # fmt: skip
    return {
        "agent_baseline_db": _round(own["agent"][0]),
        "customer_baseline_db": _round(own["customer"][0]),
        "call_baseline_db": _round(call),
        "loudest_above_own_db": max((r["above_own_db"] for r in rows if r["speaker"] == "agent" and r["above_own_db"] is not None), default=None),
        "sentences": rows,
    }  # fmt: skip


def _loud_sentences(
    heard: list[tuple[Segment, SentenceSound]],
    own: tuple[float | None, int],
    customer_calm: float | None,
    call: float,
    rule: LoudRule,
    stereo: bool,
) -> list[ConductEvent]:
    """Agent sentences ``rule.above_own_db`` above the agent's baseline (高声/吵闹).

    The call's baseline (both voices) is reported beside it, not judged on: the two
    sides of a call are often recorded at unrelated gains. On a mono call, a loud
    sentence within ``BOTH_LOUD_WITHIN_S`` of a loud customer sentence is held for
    review: who raised their voice then rests on role separation, which is weakest
    exactly there (a raised voice changes the spectrum the voices are told by, and
    in a noisy call so does its better signal-to-noise). The customer's loudness is
    taken against their calm level (``CALM_SHARE``): a customer loud for most of the
    call has a loud median. A quarrel is the ``argument`` rule's to judge, and that
    one needs no roles to be right."""
    mine, count = own
    if mine is None or count < rule.min_sentences:
        return []
    loud_customer = [
        s for s, sound in heard
        if not stereo and customer_calm is not None and s.speaker == "customer" and sound.level_db is not None
        and sound.level_db - customer_calm >= rule.above_own_db
    ]  # fmt: skip
    events = []
    for s, sound in heard:
        if s.speaker != "agent" or sound.level_db is None or s.end - s.start < rule.min_sentence_s:
            continue
        above = sound.level_db - mine
        if above >= rule.above_own_db:
            detail = f"音量比本人平时高 {above:.1f} dB（比全通话中位高 {sound.level_db - call:.1f} dB）"
            both = any(c.start - BOTH_LOUD_WITHIN_S < s.end and s.start < c.end + BOTH_LOUD_WITHIN_S for c in loud_customer)
            if both:
                detail += "；单声道录音中客户同时段也在高声，说话人待复核"
            events.append(_conduct_event("loud", rule, [s], s.start, s.end, s.text, detail, doubtful=both))
    return events


BOTH_LOUD_WITHIN_S = 5.0
"""On a mono call, an agent's loud sentence this close to a loud customer sentence is held for review."""


def _arguments(heard: list[tuple[Segment, SentenceSound]], calm: dict, rule: ArgumentRule) -> list[ConductEvent]:
    """Stretches of quick, short, crowding turns where both speakers are louder than their calm level (争吵)."""
    if calm["agent"][0] is None or calm["customer"][0] is None:
        return []
    turns: list[list[tuple[Segment, SentenceSound]]] = []
    for pair in heard:
        if turns and turns[-1][-1][0].speaker == pair[0].speaker:
            turns[-1].append(pair)
        else:
            turns.append([pair])

    def span(turn):
        return turn[0][0].start, max(s.end for s, _ in turn)

    runs, run = [], []
    for turn in turns:
        start, end = span(turn)
        if end - start > rule.max_turn_s:
            runs.append(run)
            run = []
            continue
        if run and start - max(span(t)[1] for t in run) > rule.max_gap_s:
            runs.append(run)
            run = []
        run.append(turn)
    runs.append(run)

    def is_raised(turn) -> bool:
        above = _mean_above(turn, turn[0][0].speaker, calm[turn[0][0].speaker][0])
        return above is not None and above >= rule.above_own_db

    events = []
    for run in runs:
        # The stretch begins and ends with a raised voice: the calm turns that led into it are not the quarrel.
        while run and not is_raised(run[0]):
            run = run[1:]
        while run and not is_raised(run[-1]):
            run = run[:-1]
        if len(run) < rule.min_turns:
            continue
        start, end = run[0][0][0].start, max(span(t)[1] for t in run)
        pairs = [pair for turn in run for pair in turn]
        raised = {speaker: _mean_above(pairs, speaker, calm[speaker][0]) for speaker in ("agent", "customer")}
        if end - start < rule.min_span_s or any(r is None or r < rule.above_own_db for r in raised.values()):
            continue
        detail = (
            f"{len(run)} 个回合、{end - start:.0f} 秒内双方抢话，"
            f"坐席音量高于平时 {raised['agent']:.1f} dB，客户高于平时 {raised['customer']:.1f} dB"
        )
        heard_text = " / ".join(s.text for s, _ in pairs)
        # Either voice may be mislabelled in a quarrel; what is held for review is whether the agent took part.
        # The agent's sure sentences settle it when they are raised on their own: a crowded turn
        # whose side is doubtful (我态度怎么了 run into 规定就是这样) does not unsettle it.
        agent_part = [s for s, _ in pairs if s.speaker == "agent"]
        surely_agent = [(s, sound) for s, sound in pairs if s.speaker == "agent" and not uncertain(s)]
        surely_raised = _mean_above(surely_agent, "agent", calm["agent"][0])
        if surely_raised is not None and surely_raised >= rule.above_own_db:
            agent_part = [s for s, _ in surely_agent]
        events.append(_conduct_event("argument", rule, agent_part, start, end, heard_text, detail, "both"))
    return events


def _mean_above(pairs: list[tuple[Segment, SentenceSound]], speaker: str, own: float | None) -> float | None:
    """How far above their own baseline a speaker was in these sentences (duration-weighted dB)."""
    mine = [(s.end - s.start, sound.level_db) for s, sound in pairs if s.speaker == speaker and sound.level_db is not None]
    total = sum(d for d, _ in mine)
    if own is None or total <= 0:
        return None
    return sum(d * (level - own) for d, level in mine) / total


def _other_languages(checked: list[tuple[Segment, SentenceSound]], rule: MandarinRule) -> list[ConductEvent]:
    """Agent sentences Whisper hears as another language than Chinese, by ``rule.margin``."""
    events = []
    for s, sound in checked:
        if s.end - s.start < rule.min_sentence_s or sound.language == "zh":
            continue
        if sound.language_probability - (sound.mandarin_probability or 0.0) >= rule.margin:
            detail = f"语种识别为 {sound.language}（{sound.language_probability:.0%}），普通话/中文 {sound.mandarin_probability or 0:.0%}"
            events.append(_conduct_event("non_mandarin", rule, [s], s.start, s.end, s.text or UNWORDED, detail))
    return events


UNWORDED = "（未转写出文字的语音）"
"""The evidence text of speech Whisper gave no words for."""


def _long_talk(heard: list[Segment], duration_s: float, rule: LongCallRule) -> list[ConductEvent]:
    """The call over ``max_call_s``, and agent talk without the customer over ``max_monologue_s`` (长话短说)."""
    events = []
    if rule.max_call_s is not None and duration_s > rule.max_call_s:
        detail = f"通话 {duration_s:.0f} 秒，超过 {rule.max_call_s:g} 秒"
        events.append(_conduct_event("long_call", rule, [], rule.max_call_s, duration_s, "", detail))
    if rule.max_monologue_s is None:
        return events
    runs: list[list[Segment]] = []
    for s in heard:
        if s.speaker == "agent" and runs and runs[-1][-1].speaker == "agent":
            runs[-1].append(s)
        else:
            runs.append([s])
    for run in runs:
        start, end = run[0].start, max(s.end for s in run)
        if run[0].speaker == "agent" and end - start > rule.max_monologue_s:
            detail = f"坐席连续讲话 {end - start:.0f} 秒，客户未插话，超过 {rule.max_monologue_s:g} 秒"
            events.append(_conduct_event("monologue", rule, run, start, end, "".join(s.text for s in run), detail))
    return events


def _conduct_event(
    kind: str, rule: ConductRule, sentences: list[Segment], start: float, end: float, heard: str, detail: str,
    speaker: str = "agent", doubtful: bool = False,
) -> ConductEvent:
    """An event over ``sentences``: uncertain when any of them has an uncertain speaker, or when ``doubtful``."""
    confidences = [s.speaker_confidence for s in sentences if s.speaker_confidence is not None]
    return ConductEvent(
        kind=kind, rule=rule, start=start, end=end, heard=heard, detail=detail, speaker=speaker,
        confidence=min(confidences, default=1.0), uncertain_speaker=doubtful or any(uncertain(s) for s in sentences),
    )  # fmt: skip


def _conduct_deductions(conduct: list[ConductEvent]) -> list[Deduction]:
    """Each rule's points per event, up to ``MAX_DEDUCTIONS_PER_PHRASE`` times; held events deduct nothing."""
    deductions = []
    counted: dict[str, int] = {}
    for event in conduct:
        if event.uncertain_speaker or event.rule.points <= 0:
            continue
        counted[event.kind] = counted.get(event.kind, 0) + 1
        if counted[event.kind] > MAX_DEDUCTIONS_PER_PHRASE:
            continue
        deductions.append(
            Deduction(
                reason=f"{CONDUCT_LABELS[event.kind]}：{event.detail}",
                points=event.rule.points,
                article=event.rule.article,
                source=event.rule_id,
                severity=event.rule.severity,
                evidence=Evidence(event.start, event.end, event.heard, event.speaker),
                coaching=event.rule.instead or CONDUCT_INSTEAD[event.kind],
                coaching_article=event.rule.instead_article or event.rule.article,
            )
        )
    return deductions


def _roles_known(segments: list[Segment]) -> bool:
    """True for a mono call whose sentences were given roles (``roles.py``)."""
    return any(s.speaker_confidence is not None for s in segments)


def _overlaps(event: ConductEvent, segment: Segment) -> bool:
    return event.start < segment.end and segment.start < event.end


def _courtesies(agent_segments: list[Segment]) -> list[Hit]:
    """The agent's sentences that greet or take leave (``text.COURTESY_SHAPES``), as hits of those categories."""
    hits = []
    for segment in agent_segments:
        for category, words in courtesy_acts(segment.text).items():
            hits.append(Hit(
                phrase_id=f"courtesy.{category}", kind="mandated", category=category, canonical=words,
                heard=segment.text.strip(), confidence=1.0, article="", start=segment.start, end=segment.end,
                speaker="agent", method="rule",
            ))  # fmt: skip
    return hits


def _evaluate(
    check: Check, agent_hits: list[Hit], cues: list[Hit], agent_start: float, agent_end: float, doubtful: list[Segment]
) -> CheckResult:
    """``doubtful`` are the sentences whose side is unsure: a passed check shows evidence
    from the agent's sure sentences where it has any (not a customer's 喂，你好 taken for the agent's)."""
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
            answer = _surest(answers, doubtful)
            return result(True, f"“{triggers[0].heard}”之后已按规范回应", [_evidence(answer)])
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
            shown = _surest(in_time, doubtful)
            return result(True, f"{_clock(shown.start)} 已说规范用语", [_evidence(shown)])
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
            shown = _surest(in_time, doubtful, last=True)
            return result(True, f"{_clock(shown.start)} 已说规范用语", [_evidence(shown)])
        if expected:
            early = expected[-1]
            return result(
                False,
                f"规范用语出现在 {_clock(early.start)}，不在结束前{check.within_last_s:g}秒内",
                [_evidence(early)],
            )
        return result(False, f"结束前{check.within_last_s:g}秒内未听到规范用语", [])

    if expected:
        said = _surest(expected, doubtful)
        return result(True, f"{_clock(said.start)} 已说规范用语", [_evidence(said)])
    return result(False, "通话中未听到规范用语", [])


def _surest(hits: list[Hit], doubtful: list[Segment], last: bool = False) -> Hit:
    """The first (``last``: the last) of ``hits`` outside the doubtful sentences, else of all of them."""
    sure = [h for h in hits if not _within_any(h, doubtful, any_speaker=True)] or hits
    return sure[-1] if last else sure[0]


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
    return [
        {"start": _round(turn.start), "customer_until": _round(talking.end), "heard": turn.text}
        for turn, talking in _interruption_pairs(agent, customer)
    ]


def _interruption_pairs(agent: list[Segment], customer: list[Segment]) -> list[tuple[Segment, Segment]]:
    """(agent sentence, customer sentence it started over) for each interruption."""
    found = []
    for turn in agent:
        talking = next((c for c in customer if c.start < turn.start < c.end - INTERRUPTION_TOLERANCE_S), None)
        if talking is not None:
            found.append((turn, talking))
    return found


def _within_any(hit: Hit, segments: list[Segment], any_speaker: bool = False) -> bool:
    """True when the hit was heard (at least partly) inside one of the segments of its speaker
    (of anyone's, with ``any_speaker``)."""
    if hit.start is None:
        return False
    end = hit.end if hit.end is not None else hit.start
    return any((any_speaker or s.speaker == hit.speaker) and hit.start < s.end and s.start < end for s in segments)


def _review_item(segment: Segment, held: list[Hit], conduct: list[ConductEvent]) -> dict:
    item = {
        "kind": "uncertain_speaker",
        "label": "待复核",
        "start": _round(segment.start),
        "end": _round(segment.end),
        "text": segment.text,
        "speaker": segment.speaker,
        "speaker_confidence": segment.speaker_confidence,
        "forbidden": [h.phrase_id for h in held],
    }
    if conduct:  # conduct events (高声, 争吵...) held in this sentence
        item["conduct"] = [c.rule_id for c in conduct]
    return item


def _meaning_review_item(hit: Hit) -> dict:
    """A sentence the meaning model found perhaps forbidden, for a person to hear (待复核)."""
    return {
        "kind": "meaning_model",
        "label": "待复核",
        "start": _round(hit.start),
        "end": _round(hit.end),
        "text": hit.heard,
        "speaker": hit.speaker,
        "category": hit.category,
        "model_probability": hit.model_probability,
        "forbidden": [hit.phrase_id],
    }


def _evidence(hit: Hit) -> Evidence:
    return Evidence(start=hit.start, end=hit.end, heard=hit.heard, speaker=hit.speaker)


def _time_key(hit: Hit) -> float:
    return hit.start if hit.start is not None else float("inf")


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
