"""No speech lost: every stretch of VAD speech is decoded, and what stays unheard is measured and flagged.

Real model on calls assembled from the sample recordings.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from conftest import encode, labels, sample

from monitor.asr import Coverage, TranscriptionOptions, Word, speech_spans, unheard_speech, utterance_windows
from monitor.audio import SAMPLE_RATE, load_call
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, report_for_segments, score_call, write_report
from monitor.text import spoken


def _turn_audio(call_id: str, start: float) -> tuple[np.ndarray, str]:
    """One labelled turn of a mono sample call: its samples and its text."""
    turn = next(t for t in labels(call_id)["turns"] if abs(t["start"] - start) < 0.05)
    audio = load_call(sample(call_id)).agent
    return audio[int((turn["start"] - 0.2) * SAMPLE_RATE) : int((turn["end"] + 0.2) * SAMPLE_RATE)], turn["text"]


def _place(channel: np.ndarray, at_s: float, audio: np.ndarray) -> None:
    first = int(at_s * SAMPLE_RATE)
    channel[first : first + len(audio)] += audio


def _shared_share(heard: str, said: str) -> float:
    """Share of the characters said that were heard (as a multiset)."""
    said, heard = Counter(spoken(said)), Counter(spoken(heard))
    return sum((said & heard).values()) / max(1, sum(said.values()))


AGENT_TURNS = [  # three short agent turns, placed 15 s apart
    ("d06_no_greeting_rude", 0.5, 1.0),
    ("d02_fault_rude", 20.16, 15.0),
    ("d03_gas_busy", 21.86, 30.0),
]
CUSTOMER_TURNS = [("d04_investment_vague", 6.4, 3.5), ("d03_gas_busy", 6.17, 8.0), ("d02_fault_rude", 10.81, 19.0),
                  ("d09_service_condescending", 12.7, 23.5)]  # fmt: skip


@pytest.fixture(scope="module")
def sparse_agent_call(tmp_path_factory):
    """A stereo call: the agent speaks three short turns between long customer turns."""
    length = 36 * SAMPLE_RATE
    agent, customer = np.zeros(length, np.float32), np.zeros(length, np.float32)
    said = []
    for call_id, start, at in AGENT_TURNS:
        audio, text = _turn_audio(call_id, start)
        _place(agent, at, audio)
        said.append((at, at + len(audio) / SAMPLE_RATE, text))
    for call_id, start, at in CUSTOMER_TURNS:
        _place(customer, at, _turn_audio(call_id, start)[0])
    path = encode(tmp_path_factory.mktemp("sparse") / "sparse_agent.wav", np.stack([agent, customer]), SAMPLE_RATE, "pcm_s16le")
    return path, said


def test_every_short_agent_turn_between_customer_turns_is_transcribed(transcriber, sparse_agent_call, tmp_path):
    path, said = sparse_agent_call
    report = score_call(path, transcriber, load_phrasebook("broadband"), ScoreOptions())
    agent = [t for t in report["transcript"] if t["speaker"] == "agent"]
    for start, end, text in said:
        heard = "".join(t["text"] for t in agent if start - 0.5 <= t["start"] <= end + 0.5)
        assert _shared_share(heard, text) >= 0.6, f"agent turn at {start:.0f} s ({text}) heard as {heard!r}"
    assert report["coverage"] >= 0.95 and report["review"] == []
    # The coverage is in the report a user reads, too.
    json_path, html_path = write_report(report, str(tmp_path), path)
    assert json.loads(open(json_path, encoding="utf-8").read())["coverage"] == report["coverage"]
    assert f"语音转写覆盖 {100 * report['coverage']:.0f}%" in open(html_path, encoding="utf-8").read()


@pytest.fixture(scope="module")
def noisy_long_speech():
    """28 s of one mono call without a pause VAD would split on, in white noise at about 10 dB SNR."""
    audio = load_call(sample("d10_long_ok")).agent[: 28 * SAMPLE_RATE]
    speech_power = np.mean(audio[np.abs(audio) > 0.01] ** 2)
    noise = np.random.default_rng(7).standard_normal(len(audio)) * np.sqrt(speech_power / 10)
    return (audio + noise).astype(np.float32)


def test_a_long_noisy_speech_region_is_covered(transcriber, noisy_long_speech):
    options = TranscriptionOptions()
    speech = speech_spans(noisy_long_speech, options)
    assert sum(end - start for start, end in speech) / SAMPLE_RATE > 20, "VAD hears one long stretch of speech"
    segments, coverage = transcriber.transcribe_covered(noisy_long_speech, options)
    assert coverage.share >= 0.95, coverage.unheard
    assert segments[-1].end >= 24, "the end of the speech is transcribed"


def test_a_call_with_unheard_speech_is_flagged_for_review(transcriber, noisy_long_speech):
    options = TranscriptionOptions()
    segments, _ = transcriber.transcribe_covered(noisy_long_speech, options)
    speech = [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in speech_spans(noisy_long_speech, options)]
    # Lose what was heard between 8 s and 16 s, as a decode that stopped early would.
    kept = [s for s in segments if not 8 <= (s.start + s.end) / 2 <= 16]
    lost = Coverage(sum(e - s for s, e in speech), unheard_speech(speech, kept, options.word_reach_s, options.coverage_gap_s))
    assert lost.share < 0.95
    report = report_for_segments(
        "lost", "lost.wav", None, 28.0, load_phrasebook("broadband"), kept, False, {}, coverage=lost
    )
    assert report["coverage"] == round(lost.share, 3)
    [item] = report["review"]
    assert item["kind"] == "partial_transcript" and item["label"] == "部分语音未识别"
    assert any(start <= 10 and end >= 14 for start, end in item["spans"]), item["spans"]


def test_unheard_speech_is_speech_far_from_every_word():
    words = [Word(1.0, 1.5, "您好"), Word(1.6, 2.0, "请问"), Word(9.0, 9.5, "再见")]
    from monitor.asr import Segment

    segments = [Segment(1.0, 2.0, "您好请问", words=words[:2]), Segment(9.0, 9.5, "再见", words=words[2:])]
    assert unheard_speech([(0.8, 2.2), (8.8, 9.7)], segments, reach_s=0.4, min_gap_s=0.5) == []
    assert unheard_speech([(0.8, 9.7)], segments, reach_s=0.4, min_gap_s=0.5) == [(2.4, 8.6)]
    assert unheard_speech([(0.0, 12.0)], [], reach_s=0.4, min_gap_s=0.5) == [(0.0, 12.0)]
    assert Coverage(10.0, [(2.0, 4.0)]).share == pytest.approx(0.8)
    assert Coverage(0.0).share is None


def test_utterances_are_grouped_into_windows_of_whole_utterances():
    second = SAMPLE_RATE
    spans = [(0, 2 * second), (3 * second, 5 * second), (12 * second, 14 * second), (15 * second, 50 * second)]
    windows = utterance_windows(spans, max_samples=24 * second, max_gap=3 * second)
    assert windows[:2] == [(0, 5 * second), (12 * second, 14 * second)]
    assert [end - start for start, end in windows[2:]] == [17.5 * second, 17.5 * second], "a long span is cut evenly"
