"""Cut three single-recording corpus/real speakers (AISHELL-1 S0764, AISHELL-3 SSB1607 and SSB1956) into
pieces of 1.2-2.4 s at their quietest moments, so each can be a real customer taking short turns.

    python bench/data/roles_dev5/cut_pieces.py [OUT_DIR]   (default /tmp/roles5/pieces)
"""

import sys
from pathlib import Path

import numpy as np
from faster_whisper.audio import decode_audio
from scipy.io import wavfile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles_heldout"))
from cut_real import RATE, REAL, pieces  # noqa: E402

SPEAKERS = {"S0764": "aishell1_BAC009S0764W0121", "SSB1607": "aishell3_SSB16070259", "SSB1956": "aishell3_SSB19560155"}


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roles5/pieces")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, stem in SPEAKERS.items():
        for k, piece in enumerate(pieces(decode_audio(str(REAL / f"{stem}.wav"), RATE), 1.2, 2.4)):
            wavfile.write(out_dir / f"{name}_{k}.wav", RATE, (piece * 32767).astype(np.int16))
            print(out_dir / f"{name}_{k}.wav", round(len(piece) / RATE, 2))


if __name__ == "__main__":
    main()
