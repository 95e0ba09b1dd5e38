"""Per-call reports: the ``monitor.report/1`` JSON and a self-contained HTML page.

The JSON shape is a contract (see CONTRACT.md): its keys stay, extensions are
added alongside (``checks[].article``, ``events[].severity``, ``coaching``...).
The HTML is rendered from the JSON alone, so a stored report can be re-rendered
without the audio or the phrasebook. Both files are written atomically, so a
batch that is killed never leaves a half-written report that resume would trust.

Transcripts and heard texts are redacted by default: runs of 7 or more digits
(Arabic, full-width or Chinese numerals, as ASR writes phone and ID-card
numbers) become ``*``, except numbers the phrasebook itself prescribes (the
service hotline), which agents are supposed to say.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from functools import lru_cache
from pathlib import Path

import jinja2

from monitor.asr import Coverage, Segment
from monitor.phrasebook import Phrasebook
from monitor.rules import CONDUCT_INSTEAD, CONDUCT_LABELS, ConductEvent, Judgement
from monitor.text import NOT_SPOKEN, spoken

SCHEMA = "monitor.report/1"
REQUIRED_KEYS = (
    "schema", "call_id", "audio", "agent_id", "duration_s", "phrasebook", "transcript",
    "events", "checks", "score", "metrics", "timing",
)  # fmt: skip

_DIGITS = "0-9０-９零〇一二三四五六七八九幺"
# 7+ digits, optionally split by single spaces or hyphens (139-0012-3456), and
# the check letter that ends an ID-card number.
_NUMBER_RUN = re.compile(rf"[{_DIGITS}](?:[-\s]?[{_DIGITS}]){{6,}}[Xx]?")
_DIGIT_VALUES = str.maketrans("０１２３４５６７８９零〇一二三四五六七八九幺", "012345678900123456789" + "1")
SEVERITY_LABELS = {"critical": "严重", "major": "较重", "minor": "轻微"}
REVIEW_BELOW_COVERAGE = 0.95
"""A call whose words cover less of its speech than this is flagged for review:
its score may miss what was not transcribed."""


def build_report(
    call_id: str,
    audio_path: str | os.PathLike,
    agent_id: str | None,
    duration_s: float,
    phrasebook: Phrasebook,
    segments: list[Segment],
    judgement: Judgement,
    timing: dict,
    redact: bool = True,
    coverage: Coverage | None = None,
) -> dict:
    """The report of one call, as the JSON contract describes it.

    ``coverage`` (of the call's speech by its words) adds the top-level
    ``coverage`` and, below ``REVIEW_BELOW_COVERAGE``, a ``review`` item.
    """
    keep = phrasebook_numbers(phrasebook)

    def clean(text: str) -> str:
        return redact_text(text, keep) if redact else text

    def clean_evidence(evidence: dict | None) -> dict | None:
        return evidence and {**evidence, "heard": clean(evidence["heard"])}

    events = []
    for hit in judgement.events:
        phrase = phrasebook.by_id(hit.phrase_id)
        events.append(
            {
                "kind": hit.kind,
                "phrase_id": hit.phrase_id,
                "category": hit.category,
                "canonical": hit.canonical,
                "heard": clean(hit.heard),
                "start": _round(hit.start),
                "end": _round(hit.end),
                "speaker": hit.speaker,
                "confidence": round(hit.confidence, 3),
                "article": hit.article,
                "method": hit.method,
                "severity": phrase.severity,
                "instead": phrase.instead,
                "instead_article": phrase.instead_article,
                "uncertain_speaker": any(hit is held for held in judgement.held),
                **({} if hit.detected_by is None else {
                    "detected_by": hit.detected_by,
                    "model_probability": hit.model_probability,
                    "held_for_review": any(hit is held for held in judgement.meaning_review),
                }),
            }
        )
    events += [conduct_event_json(event, clean) for event in judgement.conduct]
    events.sort(key=lambda e: e["start"] if e["start"] is not None else float("inf"))
    checks = None
    if judgement.checks is not None:
        checks = []
        for result in judgement.checks:
            row = result.to_json()
            row["evidence"] = [clean_evidence(e) for e in row["evidence"]]
            checks.append(row)
    deductions = []
    for deduction in judgement.deductions:
        row = deduction.to_json()
        row["evidence"] = clean_evidence(row["evidence"])
        deductions.append(row)
    coaching = [
        {
            "source": d["source"],
            "severity": d["severity"],
            "start": d["evidence"]["start"] if d["evidence"] else None,
            "heard": d["evidence"]["heard"] if d["evidence"] else None,
            "say": d["coaching"],
            "article": d["coaching_article"],
            "reason": d["reason"],
        }
        for d in deductions
        if d["coaching"]
    ]
    metrics = dict(judgement.metrics)
    metrics["interruption_events"] = [clean_evidence(e) for e in metrics.get("interruption_events", [])]
    transcript = []
    for segment in segments:
        row = segment.to_json()
        row["text"] = clean(row["text"])
        transcript.append(row)
    return {
        "schema": SCHEMA,
        "call_id": call_id,
        "audio": str(audio_path),
        "agent_id": agent_id,
        "duration_s": _round(duration_s),
        "phrasebook": {"id": phrasebook.id, "version": phrasebook.version, "title": phrasebook.title},
        "transcript": transcript,
        "events": events,
        "checks": checks,
        "score": {"total": judgement.score_total, "max": judgement.score_max, "deductions": deductions},
        "coaching": coaching,
        "metrics": metrics,
        "timing": dict(timing),
        "redacted": redact,
        "coverage": _round(coverage.share, 3) if coverage else None,
        "review": (coverage_review(coverage) if coverage else [])
        + [{**item, "text": clean(item["text"])} for item in judgement.review],
    }


def conduct_event_json(event: ConductEvent, clean=lambda text: text) -> dict:
    """A ``voice:`` rule's event as a report event: kind ``conduct``, ``phrase_id`` ``voice.<kind>``."""
    return {
        "kind": "conduct",
        "phrase_id": event.rule_id,
        "category": event.kind,
        "canonical": CONDUCT_LABELS[event.kind],
        "heard": clean(event.heard),
        "start": _round(event.start),
        "end": _round(event.end),
        "speaker": event.speaker,
        "confidence": round(event.confidence, 3),
        "article": event.rule.article,
        "method": "voice",
        "severity": event.rule.severity,
        "instead": event.rule.instead or CONDUCT_INSTEAD[event.kind],
        "instead_article": event.rule.instead_article or event.rule.article,
        "uncertain_speaker": event.uncertain_speaker,
        "detail": event.detail,
        "points": 0 if event.uncertain_speaker else event.rule.points,
    }


def coverage_review(coverage: Coverage) -> list[dict]:
    """A ``partial_transcript`` review item when too little speech was transcribed."""
    share = coverage.share
    if share is None or share >= REVIEW_BELOW_COVERAGE:
        return []
    unheard_s = sum(end - start for start, end in coverage.unheard)
    return [
        {
            "kind": "partial_transcript",
            "label": "部分语音未识别",
            "detail": f"{unheard_s:.1f} 秒语音（{1 - share:.0%}）未转写出文字，评分可能遗漏其中的用语",
            "spans": [[_round(start), _round(end)] for start, end in coverage.unheard],
        }
    ]


def redact_text(text: str, keep: set[str]) -> str:
    """Mask phone and ID-card numbers: runs of 7+ digits or Chinese numerals.

    A run stays when it reads as one of ``keep`` (normalised digit strings),
    also with one digit doubled, as ASR tends to write 66616567 as 666616567.
    """

    def mask(match: re.Match) -> str:
        run = match.group()
        return run if _reads_as(_normalise_number(run), keep) else "*" * len(run)

    return _NUMBER_RUN.sub(mask, text)


def phrasebook_numbers(phrasebook: Phrasebook) -> set[str]:
    """The numbers (hotlines) the phrasebook's own wording contains, as digit strings."""
    texts = [c.instead or "" for c in phrasebook.checks]
    for phrase in phrasebook.phrases:
        texts += [phrase.text, phrase.instead or "", *phrase.variants]
    return {_normalise_number(m.group()) for text in texts for m in _NUMBER_RUN.finditer(text)}


def write_json(report: dict, path: str | os.PathLike) -> None:
    """Write the report atomically: readers see the old file or the whole new one."""
    _write_atomic(path, json.dumps(report, ensure_ascii=False, indent=2) + "\n")


def write_html(report: dict, path: str | os.PathLike, audio_src: str | None) -> None:
    """Render the report as HTML and write it atomically."""
    _write_atomic(path, render_html(report, audio_src))


def is_violation(event: dict) -> bool:
    """A forbidden phrase that counts against the agent: not one held for review
    because its speaker is uncertain (``uncertain_speaker``, mono calls) or the meaning
    model was not sure enough to deduct (``held_for_review``). A
    ``conduct`` event (高声, 争吵...) counts only where its rule deducts points."""
    if event.get("uncertain_speaker") or event.get("held_for_review"):
        return False
    return event["kind"] == "forbidden" or (event["kind"] == "conduct" and event.get("points", 0) > 0)


def is_complete_report(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a finished ``monitor.report/1`` report (for batch resume)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("schema") == SCHEMA and all(k in report for k in REQUIRED_KEYS)


def render_html(report: dict, audio_src: str | None) -> str:
    """A self-contained HTML page for the agent and the supervisor.

    ``audio_src`` is put as is into the page's ``<audio>`` element: a path
    relative to where the HTML will be written, or a URL. None leaves the
    player out.
    """
    duration = report["duration_s"] or max((t["end"] for t in report["transcript"]), default=0) or 1
    return _templates().get_template("report.html.j2").render(
        report=report,
        audio_src=audio_src,
        duration=duration,
        lanes=_lanes(report),
        rows=_transcript_rows(report),
        failed_checks=[c for c in report["checks"] or [] if not c["passed"]],
        severity_labels=SEVERITY_LABELS,
    )


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("monitor", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["clock"] = _clock
    return environment


def _lanes(report: dict) -> list[dict]:
    """Timeline lanes: the agent's speech, and the customer's when there is any."""
    speakers = ["agent"] + (["customer"] if any(t["speaker"] == "customer" for t in report["transcript"]) else [])
    return [
        {"speaker": s, "label": "坐席" if s == "agent" else "客户", "spans": [t for t in report["transcript"] if t["speaker"] == s]}
        for s in speakers
    ]


def _transcript_rows(report: dict) -> list[dict]:
    """Transcript rows cut into pieces, with each event's heard text marked,
    and rows whose speaker is uncertain flagged ``doubtful`` (待复核).

    An event belongs to the row of the same speaker whose time span contains
    its start; the heard text is located ignoring punctuation, since the
    matcher compares without it.
    """
    doubtful = {(r["start"], r["end"]) for r in report.get("review", []) if r.get("kind") == "uncertain_speaker"}
    rows = []
    for index, turn in enumerate(report["transcript"]):
        text = turn["text"]
        marks = []
        for number, event in enumerate(report["events"]):
            if event["speaker"] != turn["speaker"] or event["start"] is None:
                continue
            if not turn["start"] - 0.5 <= event["start"] <= turn["end"] + 0.5:
                continue
            span = _locate(event["heard"], text)
            if span and not any(span[0] < end and start < span[1] for start, end, _, _ in marks):
                marks.append((span[0], span[1], event, number))
        pieces, position = [], 0
        for start, end, event, number in sorted(marks, key=lambda m: m[0]):
            pieces.append({"text": text[position:start], "event": None, "number": None})
            pieces.append({"text": text[start:end], "event": event, "number": number})
            position = end
        pieces.append({"text": text[position:], "event": None, "number": None})
        doubt = (turn["start"], turn["end"]) in doubtful
        rows.append({**turn, "index": index, "doubtful": doubt, "pieces": [p for p in pieces if p["text"]]})
    return rows


def _locate(heard: str, text: str) -> tuple[int, int] | None:
    """Span of ``heard`` in ``text``, comparing spoken characters only."""
    kept = [(i, c) for i, c in enumerate(text) if not NOT_SPOKEN.fullmatch(c)]
    needle = spoken(heard)
    if not needle:
        return None
    at = "".join(c for _, c in kept).find(needle)
    if at < 0:
        return None
    return kept[at][0], kept[at + len(needle) - 1][0] + 1


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    target = Path(path)
    handle = tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def _normalise_number(run: str) -> str:
    return re.sub(r"[-\s]", "", run).translate(_DIGIT_VALUES).upper()


def _reads_as(digits: str, keep: set[str]) -> bool:
    if digits in keep:
        return True
    return any(
        digits[i] == digits[i - 1] and digits[:i] + digits[i + 1 :] in keep for i in range(1, len(digits))
    )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None
