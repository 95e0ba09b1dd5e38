"""Conduct heard in the voice: recall and precision of 高声, 争吵 and 讲普通话, and what they cost.

    PYTHONPATH=. python bench/voice_conduct.py [CALL.flac ...]

Scores each labelled call (default: ``tests/data/voice/*.flac``, which carry
loud, argument and other-language turns, and as calls that carry none the
shared sample calls and ``tests/data/roles`` (real human customers on mono
calls, customers who say rude things)) with ``tests/data/voice/voice_rules.yaml`` (every ``voice:`` rule
on), and prints:

1. per call: the labelled turns of each rule and the events raised;
2. per rule: recall (labelled agent turns, or argument stretches, that an event
   covers) and precision (events that cover a labelled one); events held for
   review (uncertain speaker) are counted apart, neither hit nor false alarm,
   and how many labelled turns were found or held (not lost);
3. the language check on the real Mandarin voices of corpus/real (16 readers):
   how many recordings long enough to be asked would be called another language;
   and how much one real reader's level varies from sentence to sentence (thchs30
   speaker D4, five recordings of one session): the spread a loud threshold must clear;
4. cost: seconds spent on loudness and on language, as a ratio of transcription
   time, measured in the same run.

Labels: a turn tagged ``loud`` (agent), ``non_mandarin`` (agent), ``argument``
(either speaker; the tagged turns of a call form its one quarrel stretch); an
interruption is an agent turn that starts more than ``INTERRUPTION_TOLERANCE_S``
before the customer's turn before it ends (a negative pause in the script).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.acoustics import sentence_levels, speech_level  # noqa: E402
from monitor.asr import Transcriber  # noqa: E402
from monitor.audio import SAMPLE_RATE, load_call  # noqa: E402
from monitor.language import sentence_languages  # noqa: E402
from monitor.phrasebook import load_phrasebook  # noqa: E402
from monitor.pipeline import sentence_sounds, with_roles  # noqa: E402
from monitor.rules import INTERRUPTION_TOLERANCE_S, judge_conduct  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONITOR_SHARED", "/work/shared"))
RULES = ROOT / "tests" / "data" / "voice" / "voice_rules.yaml"
TOLERANCE_S = 0.3
"""An event covers a labelled turn when they overlap, give or take ASR's fuzzy sentence edges."""


def covers(event, start: float, end: float) -> bool:
    return event.start <= end + TOLERANCE_S and event.end >= start - TOLERANCE_S


def labelled_spans(labels: dict) -> dict[str, list[tuple[float, float]]]:
    """Per rule, the labelled spans: agent turns for loud/non_mandarin, the quarrel's whole stretch for argument."""
    turns = labels["turns"]
    spans = {
        "loud": [(t["start"], t["end"]) for t in turns if "loud" in t["tags"] and t["speaker"] == "agent"],
        "non_mandarin": [(t["start"], t["end"]) for t in turns if "non_mandarin" in t["tags"] and t["speaker"] == "agent"],
    }  # fmt: skip
    spans["interruption"] = [
        (t["start"], t["end"])
        for before, t in zip(turns, turns[1:])
        if t["speaker"] == "agent" and before["speaker"] == "customer" and t["start"] < before["end"] - INTERRUPTION_TOLERANCE_S
    ]
    quarrel = [t for t in turns if "argument" in t["tags"]]
    spans["argument"] = [(min(t["start"] for t in quarrel), max(t["end"] for t in quarrel))] if quarrel else []
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="*")
    args = parser.parse_args()
    calls = args.calls or sorted(glob.glob(str(ROOT / "tests/data/voice/*.flac"))) + sorted(
        glob.glob(str(SHARED / "samples/calls/*.wav"))
    ) + sorted(glob.glob(str(ROOT / "tests/data/roles/*.flac")))
    phrasebook = load_phrasebook(str(RULES))
    transcriber = Transcriber(cpu_threads=1)
    counts = {rule: {"labelled": 0, "found": 0, "found_or_held": 0, "events": 0, "right": 0, "held": 0} for rule in ("loud", "argument", "non_mandarin", "interruption")}
    asr_s = voice_s = 0.0
    print("== calls")
    for path in calls:
        labels = json.loads(Path(path).with_suffix(".labels.json").read_text(encoding="utf-8"))
        call = load_call(path, "left")
        started = time.perf_counter()
        heard = transcriber.hear(call)
        asr_s += time.perf_counter() - started
        segments = with_roles(call, heard.segments, phrasebook, True)
        started = time.perf_counter()
        sounds = sentence_sounds(call, segments, phrasebook, transcriber, heard.coverage.unheard)
        voice_s += time.perf_counter() - started
        events, _metrics = judge_conduct(segments, phrasebook.voice, call.duration_s, call.customer is not None, sounds)
        spans = labelled_spans(labels)
        line = []
        for rule, tally in counts.items():
            mine = [e for e in events if e.kind == rule]
            judged = [e for e in mine if not e.uncertain_speaker]
            tally["labelled"] += len(spans[rule])
            tally["found"] += sum(any(covers(e, a, b) for e in judged) for a, b in spans[rule])
            tally["found_or_held"] += sum(any(covers(e, a, b) for e in mine) for a, b in spans[rule])
            tally["events"] += len(judged)
            tally["right"] += sum(any(covers(e, a, b) for a, b in spans[rule]) for e in judged)
            tally["held"] += len(mine) - len(judged)
            if spans[rule] or mine:
                line.append(f"{rule} labelled {len(spans[rule])} events {len(judged)} held {len(mine) - len(judged)}")
        print(f"{Path(path).stem:28s} {'mono' if call.customer is None else 'stereo'}  " + ("; ".join(line) or "-"))

    print("\n== per rule (events held for review are neither hits nor false alarms)")
    for rule, t in counts.items():
        recall = t["found"] / t["labelled"] if t["labelled"] else float("nan")
        precision = t["right"] / t["events"] if t["events"] else float("nan")
        print(f"{rule:13s} recall {t['found']}/{t['labelled']} = {recall:.2f}   precision {t['right']}/{t['events']} = "
              f"{precision:.2f}   held for review {t['held']} (labelled found or held: {t['found_or_held']}/{t['labelled']})")

    print("\n== language check on real Mandarin voices (corpus/real, whole recordings)")
    rule = phrasebook.voice.non_mandarin
    flagged, asked, lang_s, audio_s = 0, 0, 0.0, 0.0
    for wav in sorted(glob.glob(str(SHARED / "corpus/real/wav/*.wav"))):
        samples = load_call(wav, "mono").agent
        if len(samples) / SAMPLE_RATE < rule.min_sentence_s:
            continue
        started = time.perf_counter()
        probabilities = sentence_languages(transcriber, samples, [(0, len(samples))])[0]
        lang_s += time.perf_counter() - started
        audio_s += len(samples) / SAMPLE_RATE
        asked += 1
        top = max(probabilities, key=probabilities.get)
        if top != "zh" and probabilities[top] - probabilities.get("zh", 0.0) >= rule.margin:
            flagged += 1
            print(f"  called {top}: {Path(wav).name} ({probabilities[top]:.2f}, zh {probabilities.get('zh', 0):.2f})")
    print(f"recordings asked {asked}, called another language {flagged}; {lang_s / max(audio_s, 1e-9):.4f} s per second of speech")

    reader = [speech_level(load_call(wav, "mono").agent) for wav in sorted(glob.glob(str(SHARED / "corpus/real/wav/thchs30_D4_*.wav")))]
    if reader:
        middle = float(np.median(reader))
        print(f"one real reader (thchs30 D4), level of each recording above their median: "
              f"{', '.join(f'{level - middle:+.1f}' for level in reader)} dB")

    print("\n== cost (same run)")
    print(f"transcription {asr_s:.1f} s, voice measurements {voice_s:.1f} s: ratio {voice_s / asr_s:.3f}")
    # Loudness alone, on one call, to split the cost.
    call = load_call(calls[0], "left")
    segments = with_roles(call, transcriber.hear(call).segments, phrasebook, True)
    started = time.perf_counter()
    for _ in range(5):
        sentence_levels(call.agent, call.customer, segments)
    print(f"loudness alone: {(time.perf_counter() - started) / 5 * 1000:.1f} ms for a {call.duration_s:.0f} s call "
          f"({len(segments)} sentences)")


if __name__ == "__main__":
    main()
