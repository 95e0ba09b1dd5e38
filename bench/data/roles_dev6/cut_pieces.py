"""Cut four single-recording corpus/real speakers not used by the earlier dev sets (AISHELL-3 SSB0913,
SSB0241, SSB0671, SSB1056) into pieces of 1.2-2.6 s at their quietest moments: real customers taking short turns.

    python bench/data/roles_dev6/cut_pieces.py [OUT_DIR]   (default /tmp/roles6/pieces)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles_heldout"))
from cut_real import write_pieces  # noqa: E402

SPEAKERS = {"SSB0913": "aishell3_SSB09130033", "SSB0241": "aishell3_SSB02410161",
            "SSB0671": "aishell3_SSB06710128", "SSB1056": "aishell3_SSB10560454"}  # fmt: skip


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roles6/pieces")
    for name, stem in SPEAKERS.items():
        write_pieces(out_dir, name, stem, 1.2, 2.6)


if __name__ == "__main__":
    main()
