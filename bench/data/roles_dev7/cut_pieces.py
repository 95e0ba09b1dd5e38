"""Cut four single-recording corpus/real speakers into pieces of 1.0-2.0 s at their quietest moments: real
customers taking short turns (AISHELL-3 SSB1567, SSB1575, SSB0341: the least used by the earlier dev sets;
SSB1711 again, in shorter pieces than roles_heldout's).

    python bench/data/roles_dev7/cut_pieces.py [OUT_DIR]   (default /tmp/roles7/pieces)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles_heldout"))
from cut_real import write_pieces  # noqa: E402

SPEAKERS = {"SSB1567": "aishell3_SSB15670405", "SSB1575": "aishell3_SSB15750377",
            "SSB0341": "aishell3_SSB03410265", "SSB1711": "aishell3_SSB17110468"}  # fmt: skip


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/roles7/pieces")
    for name, stem in SPEAKERS.items():
        write_pieces(out_dir, name, stem, 1.0, 2.0)


if __name__ == "__main__":
    main()
