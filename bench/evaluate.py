"""Detection quality and pipeline overhead of batch scoring on a labelled set of calls.

    python bench/evaluate.py [CALLS_DIR] [--hotwords] [--model M]

CALLS_DIR holds ``*.wav`` with ``*.labels.json`` (turns with speaker, start,
end and tags, plus the call's phrasebook), as ``../shared/samples/calls`` and
``samples/`` do. Prints per call and overall:

- forbidden-phrase recall and precision: a labelled ``forbidden`` agent turn
  is found when a forbidden event overlaps it within ±1 s; an event that
  overlaps no such turn is a false alarm;
- greeting and farewell checks against the ``greeting``/``farewell`` tags;
- coverage: the report's share of VAD speech covered by words, and labelled
  turns heard (a turn is heard when the transcript of its speaker around it
  holds a quarter of its characters), for the pipeline and for bare
  faster-whisper;
- the whole pipeline's time against bare faster-whisper (int8, beam 5, VAD,
  same prompt, no word timestamps) on the same audio in the same run.

Held-out style calls (noisy, telephone band, long gaps, a sparse agent
channel) are made from ``bench/data/heldout/*.json`` with
``synth_call.py SCRIPT.json OUT_DIR`` (see the shared tools' README) and
evaluated by passing OUT_DIR.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import Counter

from labelled import forbidden_agent_turns, overlaps

from monitor.asr import DEFAULT_PROMPT, Transcriber
from monitor.audio import load_call
from monitor.phrasebook import load_phrasebook
from monitor.report import is_violation
from monitor.pipeline import ScoreOptions, score_call
from monitor.text import spoken

HEARD_SHARE = 0.25
"""A labelled turn is heard when the transcript around it holds this share of its characters:
low, because this counts turns lost, not misheard (digits, for one, come out as numerals)."""


def bare_whisper(transcriber: Transcriber, path: str) -> tuple[float, list[dict]]:
    """Time bare faster-whisper takes on the same audio (both channels of a stereo call), and its transcript."""
    started = time.perf_counter()
    call = load_call(path)
    transcript = []
    for speaker, channel in (("agent", call.agent), ("customer", call.customer)):
        if channel is not None:
            segments, _ = transcriber.model.transcribe(
                channel, language="zh", beam_size=5, vad_filter=True, initial_prompt=DEFAULT_PROMPT
            )
            transcript += [{"speaker": speaker, "start": s.start, "end": s.end, "text": s.text} for s in segments]
    return time.perf_counter() - started, transcript


def turns_heard(labels: dict, transcript: list[dict], stereo: bool) -> int:
    """Labelled turns whose words the transcript holds (by speaker on a stereo call)."""
    heard = 0
    for turn in labels["turns"]:
        said = Counter(spoken(turn["text"]))
        around = "".join(
            t["text"] for t in transcript
            if (not stereo or t["speaker"] == turn["speaker"]) and overlaps(t["start"], t["end"], turn, 0.5)
        )  # fmt: skip
        heard += sum((said & Counter(spoken(around))).values()) >= HEARD_SHARE * sum(said.values())
    return heard


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", nargs="?", default=os.path.join(here, "..", "..", "shared", "samples", "calls"))
    parser.add_argument("--hotwords", action="store_true", help="bias decoding with the phrasebook's vocabulary")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    transcriber = Transcriber(args.model)
    options = ScoreOptions(use_hotwords=args.hotwords)
    found = labelled = events_ok = events_all = held = 0
    checks_agree = checks_all = 0
    pipeline_s = bare_s = audio_s = 0.0
    turns = heard = heard_bare = 0
    coverages = []
    print(f"{'call':30} {'forbidden found':>15} {'false alarms':>12} {'greeting':>9} {'farewell':>9} {'score':>5} "
          f"{'coverage':>8} {'turns heard':>11} {'bare':>5}")  # fmt: skip
    for label_path in sorted(glob.glob(os.path.join(args.calls, "*.labels.json"))):
        with open(label_path, encoding="utf-8") as handle:
            labels = json.load(handle)
        audio = label_path.replace(".labels.json", ".wav")
        phrasebook = load_phrasebook(labels["phrasebook"])
        started = time.perf_counter()
        report = score_call(audio, transcriber, phrasebook, options, labels["call_id"], labels.get("agent_id"))
        pipeline_s += time.perf_counter() - started
        seconds, bare_transcript = bare_whisper(transcriber, audio)
        bare_s += seconds
        audio_s += report["duration_s"]
        stereo = load_call(audio).customer is not None
        call_heard = turns_heard(labels, report["transcript"], stereo)
        call_heard_bare = turns_heard(labels, bare_transcript, stereo)
        turns, heard, heard_bare = turns + len(labels["turns"]), heard + call_heard, heard_bare + call_heard_bare
        if report["coverage"] is not None:
            coverages.append(report["coverage"])

        wanted = forbidden_agent_turns(labels)
        forbidden = [e for e in report["events"] if e["kind"] == "forbidden"]
        hit_turns = sum(1 for t in wanted if any(overlaps(e["start"], e["end"], t) for e in forbidden))
        true_events = sum(1 for e in forbidden if any(overlaps(e["start"], e["end"], t) for t in wanted))
        found, labelled = found + hit_turns, labelled + len(wanted)
        events_ok, events_all = events_ok + true_events, events_all + len(forbidden)
        held += sum(1 for e in forbidden if not is_violation(e))

        checks = {c["id"]: c["passed"] for c in report["checks"] or []}
        verdicts = []
        for check in ("greeting", "farewell"):
            expected = any(check in t["tags"] and t["speaker"] == "agent" for t in labels["turns"])
            agree = checks.get(check) == expected
            checks_agree, checks_all = checks_agree + agree, checks_all + 1
            verdicts.append(f"{'ok' if agree else 'WRONG'}:{checks.get(check)}")
        false_alarms = [e["heard"] for e in forbidden if not any(overlaps(e["start"], e["end"], t) for t in wanted)]
        flagged = " 部分语音未识别" if any(r["kind"] == "partial_transcript" for r in report["review"]) else ""
        print(f"{labels['call_id']:30} {hit_turns:>7}/{len(wanted):<7} {len(false_alarms):>12} "
              f"{verdicts[0]:>9} {verdicts[1]:>9} {report['score']['total']!s:>5} {report['coverage']!s:>8} "
              f"{call_heard:>5}/{len(labels['turns']):<5} {call_heard_bare:>5}{flagged}"
              + (f"  false alarms: {false_alarms}" if false_alarms else ""))  # fmt: skip

    recall = found / labelled if labelled else 1.0
    precision = events_ok / events_all if events_all else 1.0
    print(f"\nforbidden phrases: recall {recall:.3f} ({found}/{labelled}), precision {precision:.3f} "
          f"({events_ok}/{events_all})  target >= 0.95 each")
    print(f"  of the {events_all} forbidden events, {held} held for review (speaker uncertain, no deduction)")
    print(f"greeting/farewell checks agree with labels: {checks_agree}/{checks_all} = "
          f"{checks_agree / checks_all:.3f}  target >= 0.95")
    print(f"labelled turns heard: {heard}/{turns} (bare faster-whisper {heard_bare}/{turns}); coverage of VAD speech "
          f"min {min(coverages, default=float('nan')):.3f}, mean {sum(coverages) / max(len(coverages), 1):.3f}")
    print(f"time: pipeline {pipeline_s:.1f} s, bare faster-whisper {bare_s:.1f} s, audio {audio_s:.1f} s; "
          f"pipeline/bare ratio {pipeline_s / bare_s:.2f}x (target <= 0.60x), RTF pipeline {pipeline_s / audio_s:.3f}, "
          f"bare {bare_s / audio_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
