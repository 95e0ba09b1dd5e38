"""Peak memory of scoring one long recording (issue 12).

    python bench/memory.py [--minutes 60] [--calls DIR] [--keep FILE]

Builds a mono recording of ``--minutes`` by repeating the sample calls with 5 s
of silence between them (16 kHz, 16-bit WAV in a temp directory), scores it
with ``python -m monitor score`` in a subprocess, and prints the child's peak
resident set size (ru_maxrss) with the audio's own size for comparison: the
decoded audio (16 kHz float32) stays in memory, everything else should be
bounded by a decoding window. Target: a 60-minute recording under 700 MB.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np

from monitor.audio import SAMPLE_RATE, load_call

GAP_S = 5.0


def build_recording(path: str, calls_dir: str, minutes: float) -> float:
    """Write a mono WAV of at least ``minutes`` made of the sample calls; return its length in seconds."""
    pieces = []
    for wav in sorted(glob.glob(os.path.join(calls_dir, "*.wav"))):
        call = load_call(wav, agent_channel="mono")
        pieces.append((np.clip(call.agent, -1, 1) * 32767).astype("<i2"))
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), dtype="<i2")
    target = int(minutes * 60 * SAMPLE_RATE)
    written = 0
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        while written < target:
            for piece in pieces:
                out.writeframes(piece.tobytes() + gap.tobytes())
                written += len(piece) + len(gap)
                if written >= target:
                    break
    return written / SAMPLE_RATE


def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--calls", default=os.path.join(here, "..", "samples"))
    parser.add_argument("--keep", metavar="FILE", help="also keep the built recording here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="monitor-memory-") as scratch:
        audio = args.keep or os.path.join(scratch, "long_call.wav")
        duration_s = build_recording(audio, args.calls, args.minutes)
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "monitor", "score", audio, "--out", os.path.join(scratch, "out"),
             "--agent-channel", "mono", "--no-progress"],
            capture_output=True, text=True,
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kB on Linux
        if result.returncode != 0:
            print(f"monitor score failed ({result.returncode}): {result.stderr.strip()[-2000:]}", file=sys.stderr)
            return 1
    audio_mb = duration_s * SAMPLE_RATE * 4 / 2**20
    print(f"recording: {duration_s / 60:.1f} min mono; decoded audio alone {audio_mb:.0f} MB (16 kHz float32)")
    print(f"monitor score: {elapsed:.0f} s (RTF {elapsed / duration_s:.3f}), peak RSS {peak_mb:.0f} MB "
          f"(target < 700 MB), {peak_mb - audio_mb:.0f} MB beyond the decoded audio")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
