"""One call through the whole pipeline: audio → asr → match → rules → report.

Batch scoring (``batch.py``) and the live monitor (``live.py``) both end here,
so a call scored live and the same call scored from its recording get the
same kind of report.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

from monitor.acoustics import SAMPLE_RATE, SentenceSound, sentence_levels, speech_level
from monitor.asr import Coverage, Segment, Transcriber, TranscriptionOptions
from monitor.audio import CallAudio, is_url, load_call
from monitor.language import sentence_languages
from monitor.callid import report_path
from monitor.match import matcher_for
from monitor.meaning import model_for
from monitor.phrasebook import Phrasebook
from monitor.report import build_report, write_html, write_json
from monitor.roles import match_by_role, separate_roles
from monitor.rules import judge


@dataclass
class ScoreOptions:
    """How each call of a batch is scored."""

    agent_channel: str = "left"
    """Which side of a stereo recording is the agent: left, right, or mono (mix both)."""
    separate_roles: bool = True
    """On a mono call, tell the agent's sentences from the customer's (``roles.py``).
    Off: all mono speech is the agent's, for recordings of the agent's side only."""
    redact: bool = True
    """Mask phone and ID-card numbers in the report (the phrasebook's hotline stays)."""
    use_hotwords: bool = False
    """Bias Whisper towards the phrasebook's vocabulary (see ``hotwords_for``).
    Off by default: on the sample calls detection was already complete without
    it, and decoding took 3.6x as long with it (bench/evaluate.py --hotwords)."""
    transcription: TranscriptionOptions = field(default_factory=TranscriptionOptions)
    """Decoding options."""


def report_for_segments(
    call_id: str,
    audio_path: str,
    agent_id: str | None,
    duration_s: float,
    phrasebook: Phrasebook,
    segments: list[Segment],
    stereo: bool,
    timing: dict,
    redact: bool = True,
    coverage: Coverage | None = None,
    sounds: list[tuple[Segment, SentenceSound]] | None = None,
) -> dict:
    """Match, judge and build the report of an already transcribed call.

    ``sounds`` (what each segment sounded like, ``sentence_sounds``) feeds the
    phrasebook's ``voice:`` rules of loudness and language; without it they judge nothing.
    """
    matcher = matcher_for(phrasebook)
    separated = not stereo and any(s.speaker_confidence is not None for s in segments)
    hits = match_by_role(matcher, segments) if separated else matcher.match_segments(segments)
    judgement = judge(segments, hits, phrasebook, duration_s, stereo, sounds, meaning=model_for(phrasebook))
    return build_report(
        call_id, audio_path, agent_id, duration_s, phrasebook, segments, judgement, timing, redact, coverage
    )


def score_call(
    path: str,
    transcriber: Transcriber,
    phrasebook: Phrasebook,
    options: ScoreOptions,
    call_id: str | None = None,
    agent_id: str | None = None,
) -> dict:
    """Transcribe and score one recording; returns its report (contract ``monitor.report/1``)."""
    started = time.perf_counter()
    call = load_call(path, options.agent_channel)
    decoding = options.transcription
    if options.use_hotwords:
        decoding = TranscriptionOptions(**{**decoding.__dict__, "hotwords": hotwords_for(phrasebook)})
    asr_started = time.perf_counter()
    heard = transcriber.hear(call, decoding)
    asr_s = time.perf_counter() - asr_started
    segments = with_roles(call, heard.segments, phrasebook, options.separate_roles)
    voice_started = time.perf_counter()
    sounds = sentence_sounds(call, segments, phrasebook, transcriber, heard.coverage.unheard)
    timing = {"asr_s": asr_s, "voice_s": time.perf_counter() - voice_started}
    report = report_for_segments(
        call_id or call_id_for(path),
        path,
        agent_id,
        call.duration_s,
        phrasebook,
        segments,
        stereo=call.customer is not None,
        timing=timing,
        redact=options.redact,
        coverage=heard.coverage,
        sounds=sounds,
    )
    total_s = time.perf_counter() - started
    # The report dict holds the timing it was built with; complete it in place.
    report["timing"] = {
        "asr_s": round(asr_s, 3),
        "voice_s": round(timing["voice_s"], 3),
        "total_s": round(total_s, 3),
        "rtf": round(total_s / call.duration_s, 4) if call.duration_s else None,
        "model": transcriber.model_name,
    }
    return report


def with_roles(call: CallAudio, segments: list[Segment], phrasebook: Phrasebook, separate: bool) -> list[Segment]:
    """Speakers and their confidence: a stereo channel is its role for certain;
    a mono mix is separated into agent and customer by voice and words."""
    if call.customer is not None:
        return [replace(s, speaker_confidence=1.0) for s in segments]
    if not separate:
        return segments
    return separate_roles(call.agent, segments, phrasebook)


def sentence_sounds(
    call: CallAudio,
    segments: list[Segment],
    phrasebook: Phrasebook,
    transcriber: Transcriber,
    unheard: list[tuple[float, float]] = (),
) -> list[tuple[Segment, SentenceSound]] | None:
    """Each segment with what it sounded like, measured only as far as the phrasebook's ``voice:``
    rules ask: loudness (``acoustics.py``) for 高声/争吵; Whisper's language (``language.py``) for
    讲普通话, on the agent's sentences long enough and on ``unheard`` speech (call seconds VAD found
    but no word covers: Whisper, told to expect Chinese, often leaves another language out)."""
    rules = phrasebook.voice
    if not rules.needs_levels and rules.non_mandarin is None:
        return None
    levels = sentence_levels(call.agent, call.customer, segments) if rules.needs_levels else [None] * len(segments)
    pairs = [(s, SentenceSound(level_db=level)) for s, level in zip(segments, levels)]
    if rules.non_mandarin is None:
        return pairs
    shortest = rules.non_mandarin.min_sentence_s
    asked = [i for i, (s, _) in enumerate(pairs) if s.speaker == "agent" and s.text.strip() and s.end - s.start >= shortest]
    roles_known = any(s.speaker_confidence is not None for s in segments)
    for start, end in unheard:
        if end - start >= shortest and _unheard_speech_speaker(call, start, end) == "agent":
            # On a mono call nobody can say whose the wordless speech was: it is held for review.
            confidence = 1.0 if call.customer is not None else (0.5 if roles_known else None)
            pairs.append((Segment(start, end, "", "agent", speaker_confidence=confidence), SentenceSound()))
            asked.append(len(pairs) - 1)
    spans = [(round(pairs[i][0].start * SAMPLE_RATE), round(pairs[i][0].end * SAMPLE_RATE)) for i in asked]
    for i, probabilities in zip(asked, sentence_languages(transcriber, call.agent, spans)):
        language = max(probabilities, key=probabilities.get)
        pairs[i] = (
            pairs[i][0],
            replace(pairs[i][1], language=language, language_probability=probabilities[language],
                    mandarin_probability=probabilities.get("zh", 0.0)),
        )  # fmt: skip
    return pairs


def _unheard_speech_speaker(call: CallAudio, start: float, end: float) -> str:
    """Whose channel carries the speech between ``start`` and ``end``: the louder one (stereo);
    ``agent`` on a mono call (the mix is in ``call.agent``)."""
    if call.customer is None:
        return "agent"
    first, last = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
    agent, customer = speech_level(call.agent[first:last]), speech_level(call.customer[first:last])
    if agent is None:
        return "customer"
    return "agent" if customer is None or agent >= customer else "customer"


def write_report(report: dict, out_dir: str, audio_path: str | None) -> tuple[str, str]:
    """Write ``<call_id>.json`` and ``<call_id>.html`` into ``out_dir``; return their paths.

    The HTML's audio player points at the recording by a path relative to the
    report, so a report directory and its recordings can be moved together.
    """
    os.makedirs(out_dir, exist_ok=True)
    json_path = report_path(out_dir, report["call_id"], ".json")  # refuses ids that leave out_dir
    html_path = report_path(out_dir, report["call_id"], ".html")
    if not audio_path or is_url(audio_path):
        audio_src = audio_path
    else:
        audio_src = os.path.relpath(os.path.abspath(audio_path), os.path.abspath(out_dir))
    # HTML first: a JSON report on disk is what marks the call as done on resume.
    write_html(report, html_path, audio_src)
    write_json(report, json_path)
    return json_path, html_path


def call_id_for(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@lru_cache(maxsize=16)
def _hotwords(phrasebook_id: str, texts: tuple[str, ...]) -> str:
    import jieba
    import jieba.analyse

    jieba.setLogLevel(logging.WARNING)  # it announces its dictionary build on stderr
    # The distinctive words of the code (宽带, 维护工程师, 故障…), not its
    # function words; Whisper's prompt has room for a few dozen.
    return " ".join(jieba.analyse.extract_tags("。".join(texts), topK=30))


def hotwords_for(phrasebook: Phrasebook) -> str:
    """Key vocabulary of a phrasebook, for Whisper's ``hotwords`` bias."""
    texts = tuple(p.text.replace("*", "") for p in phrasebook.phrases if p.kind != "cue")
    return _hotwords(phrasebook.id, texts)
