"""Cut three single-recording corpus/real speakers (AISHELL-1 S0764, AISHELL-3 SSB1607 and SSB1956) into
pieces of 1.2-2.4 s at their quietest moments, so each can be a real customer taking short turns.

    python bench/data/roles_dev5/cut_pieces.py [OUT_DIR]   (default /tmp/roles5/pieces)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles_heldout"))
from cut_real import write_pieces  # noqa: E402

SPEAKERS = {"S0764": "aishell1_BAC009S0764W0121", "SSB1607": "aishell3_SSB16070259", "SSB1956": "aishell3_SSB19560155"}


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roles5/pieces")
    for name, stem in SPEAKERS.items():
        write_pieces(out_dir, name, stem, 1.2, 2.4)


if __name__ == "__main__":
    main()
