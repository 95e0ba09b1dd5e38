"""Detection quality and pipeline overhead of batch scoring on a labelled set of calls.

    python bench/evaluate.py [CALLS_DIR] [--hotwords] [--model M]

CALLS_DIR holds ``*.wav`` with ``*.labels.json`` (turns with speaker, start,
end and tags, plus the call's phrasebook), as ``../shared/samples/calls`` and
``samples/`` do. Prints per call and overall:

- forbidden-phrase recall and precision: a labelled ``forbidden`` agent turn
  is found when a forbidden event overlaps it within ±1 s; an event that
  overlaps no such turn is a false alarm;
- greeting and farewell checks against the ``greeting``/``farewell`` tags;
- the whole pipeline's time against bare faster-whisper (int8, beam 5, VAD,
  same prompt, no word timestamps) on the same audio in the same run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from labelled import forbidden_agent_turns, overlaps

from monitor.asr import DEFAULT_PROMPT, Transcriber
from monitor.audio import load_call
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, score_call

def bare_whisper_seconds(transcriber: Transcriber, path: str) -> float:
    """Time bare faster-whisper takes on the same audio (both channels of a stereo call)."""
    started = time.perf_counter()
    call = load_call(path)
    for channel in (call.agent, call.customer):
        if channel is not None:
            segments, _ = transcriber.model.transcribe(
                channel, language="zh", beam_size=5, vad_filter=True, initial_prompt=DEFAULT_PROMPT
            )
            list(segments)
    return time.perf_counter() - started


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("calls", nargs="?", default=os.path.join(here, "..", "..", "shared", "samples", "calls"))
    parser.add_argument("--hotwords", action="store_true", help="bias decoding with the phrasebook's vocabulary")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()

    transcriber = Transcriber(args.model)
    options = ScoreOptions(use_hotwords=args.hotwords)
    found = labelled = events_ok = events_all = 0
    checks_agree = checks_all = 0
    pipeline_s = bare_s = audio_s = 0.0
    print(f"{'call':28} {'forbidden found':>15} {'false alarms':>12} {'greeting':>9} {'farewell':>9} {'score':>5}")
    for label_path in sorted(glob.glob(os.path.join(args.calls, "*.labels.json"))):
        with open(label_path, encoding="utf-8") as handle:
            labels = json.load(handle)
        audio = label_path.replace(".labels.json", ".wav")
        phrasebook = load_phrasebook(labels["phrasebook"])
        started = time.perf_counter()
        report = score_call(audio, transcriber, phrasebook, options, labels["call_id"], labels.get("agent_id"))
        pipeline_s += time.perf_counter() - started
        bare_s += bare_whisper_seconds(transcriber, audio)
        audio_s += report["duration_s"]

        wanted = forbidden_agent_turns(labels)
        forbidden = [e for e in report["events"] if e["kind"] == "forbidden"]
        hit_turns = sum(1 for t in wanted if any(overlaps(e["start"], e["end"], t) for e in forbidden))
        true_events = sum(1 for e in forbidden if any(overlaps(e["start"], e["end"], t) for t in wanted))
        found, labelled = found + hit_turns, labelled + len(wanted)
        events_ok, events_all = events_ok + true_events, events_all + len(forbidden)

        checks = {c["id"]: c["passed"] for c in report["checks"] or []}
        verdicts = []
        for check in ("greeting", "farewell"):
            expected = any(check in t["tags"] and t["speaker"] == "agent" for t in labels["turns"])
            agree = checks.get(check) == expected
            checks_agree, checks_all = checks_agree + agree, checks_all + 1
            verdicts.append(f"{'ok' if agree else 'WRONG'}:{checks.get(check)}")
        false_alarms = [e["heard"] for e in forbidden if not any(overlaps(e["start"], e["end"], t) for t in wanted)]
        print(f"{labels['call_id']:28} {hit_turns:>7}/{len(wanted):<7} {len(false_alarms):>12} "
              f"{verdicts[0]:>9} {verdicts[1]:>9} {report['score']['total']!s:>5}"
              + (f"  false alarms: {false_alarms}" if false_alarms else ""))  # fmt: skip

    recall = found / labelled if labelled else 1.0
    precision = events_ok / events_all if events_all else 1.0
    print(f"\nforbidden phrases: recall {recall:.3f} ({found}/{labelled}), precision {precision:.3f} "
          f"({events_ok}/{events_all})  target >= 0.95 each")
    print(f"greeting/farewell checks agree with labels: {checks_agree}/{checks_all} = "
          f"{checks_agree / checks_all:.3f}  target >= 0.95")
    print(f"time: pipeline {pipeline_s:.1f} s, bare faster-whisper {bare_s:.1f} s, audio {audio_s:.1f} s; "
          f"ratio {pipeline_s / bare_s:.2f}x (target <= 1.10x), RTF pipeline {pipeline_s / audio_s:.3f}, "
          f"bare {bare_s / audio_s:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
