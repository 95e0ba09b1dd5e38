"""Cut corpus/real thchs30 D4 recordings into short pieces at their quietest moments,
so a real customer can take short turns (as in a phone call) in the scripts here.

    python bench/data/roles_heldout/cut_real.py [OUT_DIR]   (default /tmp/roles_heldout/pieces)

Writes D4_<n>_<k>.wav (16 kHz), each piece 1.5-3.5 s long, and SSB1711_<k>.wav: AISHELL-3's
speaker SSB1711 (one 5.5 s recording) in three pieces of 1.2-2.2 s, for a second real customer.
"""

import sys
from pathlib import Path

import numpy as np
from faster_whisper.audio import decode_audio
from scipy.io import wavfile

REAL = Path("/work/shared/corpus/real/wav")
RATE = 16000


def pieces(samples: np.ndarray, shortest: float = 1.5, longest: float = 3.5) -> list[np.ndarray]:
    hop = RATE // 20
    energy = np.array([np.square(samples[i : i + hop]).mean() for i in range(0, len(samples) - hop, hop)])
    out, start = [], 0
    while (len(samples) - start) / RATE > longest:
        lo, hi = start // hop + int(shortest * 20), start // hop + int(longest * 20)
        cut = (lo + int(np.argmin(energy[lo:hi]))) * hop
        out.append(samples[start:cut])
        start = cut
    out.append(samples[start:])
    return out


def write_pieces(out_dir: Path, name: str, stem: str, shortest: float = 1.5, longest: float = 3.5) -> None:
    """Write corpus/real ``stem``'s pieces as ``name``_<k>.wav in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, piece in enumerate(pieces(decode_audio(str(REAL / f"{stem}.wav"), RATE), shortest, longest)):
        path = out_dir / f"{name}_{k}.wav"
        wavfile.write(path, RATE, (piece * 32767).astype(np.int16))
        print(path, round(len(piece) / RATE, 2))


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roles_heldout/pieces")
    for n in range(750, 755):
        write_pieces(out_dir, f"D4_{n}", f"thchs30_D4_{n}")
    write_pieces(out_dir, "SSB1711", "aishell3_SSB17110468", shortest=1.2, longest=2.2)


if __name__ == "__main__":
    main()
