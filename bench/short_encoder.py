"""Streaming decodes with the encoder on the window only, against Whisper's fixed 30 s.

Decodes every clip of ``corpus/real`` (a few seconds each, like a streaming
window) with the live path's options, once with the encoder input padded to
30 s and once cut to the audio plus ``encoder_padding_s``, and prints CER and
decode time of each, and their ratio.

    python bench/short_encoder.py [--corpus DIR] [--padding 3] [--repeat 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from cer import cer_text, read_manifest
from rapidfuzz.distance import Levenshtein

from monitor.asr import Transcriber
from monitor.audio import SAMPLE_RATE, load_call
from monitor.stream import streaming_transcription_options


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=os.path.join(here, "..", "..", "shared", "corpus", "real"))
    parser.add_argument("--padding", type=float, default=streaming_transcription_options().encoder_padding_s)
    parser.add_argument("--repeat", type=int, default=2, help="passes over the corpus, alternating the configs")
    args = parser.parse_args()

    rows = read_manifest(args.corpus)
    clips = [(load_call(os.path.join(args.corpus, row["file"])).agent, cer_text(row["reference_text"])) for row in rows]
    transcriber = Transcriber(cpu_threads=2)
    live = streaming_transcription_options()
    configs = {
        "encoder on 30 s": dataclasses.replace(live, encoder_padding_s=None),
        f"encoder on audio + {args.padding:g} s": dataclasses.replace(live, encoder_padding_s=args.padding),
    }
    list(transcriber.transcribe(clips[0][0], live))  # warm-up
    seconds = dict.fromkeys(configs, 0.0)
    errors = dict.fromkeys(configs, 0)
    for _ in range(args.repeat):
        for name, options in configs.items():  # alternate, so machine noise hits both alike
            for samples, reference in clips:
                started = time.perf_counter()
                heard = "".join(s.text for s in transcriber.decode_window(samples, options))
                seconds[name] += time.perf_counter() - started
                errors[name] += Levenshtein.distance(reference, cer_text(heard))
    audio_s = sum(len(samples) for samples, _ in clips) / SAMPLE_RATE * args.repeat
    characters = sum(len(reference) for _, reference in clips) * args.repeat
    print(f"{len(clips)} clips, {audio_s / args.repeat:.1f} s of audio, {args.repeat} passes, the live path's decoding")
    print(f"{'config':28} {'CER':>6} {'decode s':>9} {'RTF':>6}")
    for name in configs:
        print(f"{name:28} {errors[name] / characters:6.3f} {seconds[name]:9.1f} {seconds[name] / audio_s:6.3f}")
    full, short = configs
    print(f"speed-up {seconds[full] / seconds[short]:.2f}x, CER ratio {errors[short] / max(errors[full], 1):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
