"""Character error rate and real-time factor of our transcription on a labelled corpus.

    python bench/cer.py [--corpus ../shared/corpus/real] [--model base] [--hotwords-from broadband]

Runs bare faster-whisper (int8, beam 5, Silero VAD, prompt 以下是普通话的句子。, the
measured baseline) and our ``Transcriber`` on the same files in the same process,
and prints CER (corpus-level: total edits / total reference characters) and RTF
for both, with their ratio. Both run as ``monitor score`` runs a call, on one
CTranslate2 thread (``--threads 0``: CTranslate2's choice), and both wall and CPU
seconds are shown: on a shared machine wall times are noisy, so compare the
ratios, and CPU time most of all. The THCHS-30 references in the shared corpus are unverified (see its
SOURCES.md), so CER is also shown without them.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

from rapidfuzz.distance import Levenshtein

from monitor.asr import DEFAULT_PROMPT, Transcriber, TranscriptionOptions
from monitor.audio import load_call
from monitor.batch import SCORING_ENVIRONMENT, SCORING_THREADS
from monitor.text import spoken, to_simplified



def cer_text(text: str) -> str:
    """What CER compares: simplified script, no punctuation or spaces."""
    return spoken(to_simplified(text))


def read_manifest(corpus: str) -> list[dict]:
    with open(os.path.join(corpus, "manifest.tsv"), encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(here, "..", "..", "shared", "corpus", "real"))
    parser.add_argument("--model", default=None, help="model name or directory (default: embedded base)")
    parser.add_argument("--hotwords-from", metavar="PB", help="also run with this phrasebook's vocabulary as hotwords")
    parser.add_argument("--threads", type=int, default=SCORING_THREADS, help="CTranslate2 threads (0: its own choice)")
    args = parser.parse_args()

    rows = read_manifest(args.corpus)
    if args.threads == SCORING_THREADS:
        os.environ.update(SCORING_ENVIRONMENT)  # as in a scoring process, before the model loads
    transcriber = Transcriber(args.model, cpu_threads=args.threads)
    configs = {
        "bare faster-whisper": None,
        "monitor Transcriber": TranscriptionOptions(),
    }
    if args.hotwords_from:
        from monitor.phrasebook import load_phrasebook
        from monitor.pipeline import hotwords_for

        configs["monitor + hotwords"] = TranscriptionOptions(hotwords=hotwords_for(load_phrasebook(args.hotwords_from)))

    results = {}
    for name, options in configs.items():
        edits = edits_strict = ref_chars = ref_chars_strict = 0
        audio_s = asr_s = cpu_s = 0.0
        for row in rows:
            call = load_call(os.path.join(args.corpus, row["file"]))
            started, cpu_started = time.perf_counter(), time.process_time()
            if options is None:
                segments, _ = transcriber.model.transcribe(
                    call.agent, language="zh", beam_size=5, vad_filter=True, initial_prompt=DEFAULT_PROMPT
                )
                hypothesis = "".join(s.text for s in segments)
            else:
                hypothesis = "".join(s.text for s in transcriber.transcribe(call.agent, options))
            asr_s += time.perf_counter() - started
            cpu_s += time.process_time() - cpu_started
            audio_s += call.duration_s
            reference, heard = cer_text(row["reference_text"]), cer_text(hypothesis)
            distance = Levenshtein.distance(reference, heard)
            edits += distance
            ref_chars += len(reference)
            if not row["file"].startswith("wav/thchs30"):
                edits_strict += distance
                ref_chars_strict += len(reference)
        results[name] = (edits / ref_chars, edits_strict / ref_chars_strict, asr_s / audio_s, asr_s, cpu_s, audio_s)

    print(f"corpus: {os.path.normpath(args.corpus)} ({len(rows)} files), model: {transcriber.model_name}, "
          f"threads: {args.threads or 'CTranslate2 default'}")
    print(f"{'config':24} {'CER':>7} {'CER w/o THCHS':>14} {'RTF':>6} {'asr s':>7} {'CPU s':>7} {'audio s':>8}")
    for name, (cer, cer_strict, rtf, asr_s, cpu_s, audio_s) in results.items():
        print(f"{name:24} {cer:7.3f} {cer_strict:14.3f} {rtf:6.3f} {asr_s:7.1f} {cpu_s:7.1f} {audio_s:8.1f}")
    base_cer, _, base_rtf, _, base_cpu, _ = results["bare faster-whisper"]
    ours_cer, _, ours_rtf, _, ours_cpu, _ = results["monitor Transcriber"]
    print(f"ratio monitor/bare: CER {ours_cer / base_cer:.2f}x, RTF {ours_rtf / base_rtf:.2f}x, CPU {ours_cpu / base_cpu:.2f}x "
          f"(targets: CER <= 0.185 absolute, our RTF well under bare)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
