"""Where the batch pipeline's CPU goes while it decodes, by kind of decode.

    python bench/decode_costs.py CALLS_DIR [CALLS_DIR ...] [--temperatures 0,0.4,0.8] [--windows]

Scores every ``*.wav`` of the directories as ``bench/evaluate.py`` does (one
CTranslate2 thread, ``score_call``) with the Whisper model behind a proxy that
clocks each of its calls, and prints, for the whole run:

- windows decoded, and of them how many fell back to a temperature above 0
  (a compression ratio over 2.4 or a log-probability under -1.0), with the
  CPU of the generation at each temperature;
- the same for the windows decoded again for coverage (``decode_unheard``:
  speech a first pass left without words), apart from the first pass;
- the encoder's and the word alignment's CPU, split the same way;
- the rest of ``score_call`` (VAD, roles and the speaker encoder, matching,
  rules, the report).

CPU seconds of this process (``time.process_time``), so comparable as shares
within one run. ``--temperatures`` tries another fallback schedule without
editing the code; ``--windows`` prints every window decoded: where, how long,
each generation's temperature, tokens and CPU, and the text kept.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace

from monitor.asr import Transcriber
from monitor.batch import SCORING_ENVIRONMENT, SCORING_THREADS
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, score_call


class Costs:
    """CPU seconds and counts by (phase, what) while the model works."""

    def __init__(self) -> None:
        self.cpu = defaultdict(float)
        self.count = defaultdict(int)
        self.phase = "first pass"
        self.generations: list[tuple[float, int, float]] = []
        """(temperature, tokens, CPU s) of each generation of the window being decoded."""

    def add(self, what: str, cpu_s: float) -> None:
        self.cpu[(self.phase, what)] += cpu_s
        self.count[(self.phase, what)] += 1


class ClockedModel:
    """The CTranslate2 Whisper model, each generate / encode / align call clocked into ``costs``."""

    def __init__(self, model, costs: Costs) -> None:
        self._model, self._costs = model, costs

    def __getattr__(self, name):
        return getattr(self._model, name)

    def _clocked(self, what: str, method, *args, **kwargs):
        started = time.process_time()
        try:
            return method(*args, **kwargs)
        finally:
            self._costs.add(what, time.process_time() - started)

    def generate(self, *args, **kwargs):
        # faster-whisper samples (a temperature above 0) with sampling_topk=0; it decodes at 0 without it.
        temperature = kwargs.get("sampling_temperature", 1.0) if "sampling_topk" in kwargs else 0.0
        started = time.process_time()
        results = self._clocked(f"generate T={temperature:.1f}", self._model.generate, *args, **kwargs)
        self._costs.generations.append((temperature, len(results[0].sequences_ids[0]), time.process_time() - started))
        return results

    def encode(self, *args, **kwargs):
        return self._clocked("encode", self._model.encode, *args, **kwargs)

    def align(self, *args, **kwargs):
        return self._clocked("align", self._model.align, *args, **kwargs)

    def detect_language(self, *args, **kwargs):
        return self._clocked("detect_language", self._model.detect_language, *args, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+")
    parser.add_argument("--temperatures", help="comma-separated fallback schedule (default: TranscriptionOptions')")
    parser.add_argument("--windows", action="store_true", help="print each window's generations and text")
    args = parser.parse_args()

    os.environ.update(SCORING_ENVIRONMENT)
    transcriber = Transcriber(None, cpu_threads=SCORING_THREADS)
    costs = Costs()
    transcriber.model.model = ClockedModel(transcriber.model.model, costs)
    options = ScoreOptions()
    if args.temperatures:
        schedule = tuple(float(t) for t in args.temperatures.split(","))
        options = replace(options, transcription=replace(options.transcription, temperatures=schedule))

    decode_unheard = transcriber.decode_unheard

    def decode_unheard_clocked(*a, **k):
        costs.phase = "coverage re-decode"
        try:
            return decode_unheard(*a, **k)
        finally:
            costs.phase = "first pass"

    transcriber.decode_unheard = decode_unheard_clocked
    decode_window_alone = transcriber.decode_window_alone

    def decode_window_logged(samples, options, speaker="agent", offset=0.0):
        costs.generations = []
        heard = decode_window_alone(samples, options, speaker, offset)
        if args.windows:
            tries = " ".join(f"T{t:.1f}:{n}tok/{cpu:.2f}s" for t, n, cpu in costs.generations)
            text = "".join(s.text for s in heard)
            print(f"    {costs.phase[:5]} {offset:7.1f}+{len(samples) / 16000:4.1f}s {tries}  {text[:40]}")
        return heard

    transcriber.decode_window_alone = decode_window_logged
    total = 0.0
    for directory in args.dirs:
        for audio in sorted(glob.glob(os.path.join(directory, "*.wav"))):
            labels = audio.replace(".wav", ".labels.json")
            with open(labels, encoding="utf-8") as handle:
                phrasebook = load_phrasebook(json.load(handle)["phrasebook"])
            if args.windows:
                print(os.path.basename(audio))
            started = time.process_time()
            score_call(audio, transcriber, phrasebook, options)
            total += time.process_time() - started

    print(f"score_call CPU {total:.1f} s over {', '.join(args.dirs)}")
    model_s = sum(costs.cpu.values())
    for (phase, what), cpu_s in sorted(costs.cpu.items()):
        print(f"  {phase:20} {what:18} {costs.count[(phase, what)]:5} calls {cpu_s:7.2f} s  {cpu_s / total:6.1%}")
    print(f"  {'rest of score_call':39} {' ':11} {total - model_s:7.2f} s  {(total - model_s) / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
