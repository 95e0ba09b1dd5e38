"""What the benches share about labelled calls (``*.labels.json``) and latencies."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOLERANCE_S = 1.0
"""An event counts for a labelled turn when it lies within this much of it (issue 4's ±1 s)."""


def labels_of(audio: Path) -> Path:
    """The labels of a call's recording: ``NAME.labels.json`` beside ``NAME.wav``."""
    return audio.with_suffix("").with_suffix(".labels.json")


def labelled_calls(paths: list[str]) -> list[Path]:
    """The recordings given, and the ``.wav`` and ``.flac`` ones in the folders given, in order;
    ValueError naming the first path that holds none, or one without its labels."""
    calls = []
    for path in map(Path, paths):
        found = sorted([*path.glob("*.wav"), *path.glob("*.flac")]) if path.is_dir() else [path]
        if not found or not all(call.is_file() and labels_of(call).is_file() for call in found):
            raise ValueError(f"{path}: no labelled call (a recording beside its .labels.json) there")
        calls += found
    return calls


def overlaps(start: float, end: float, turn: dict, tolerance_s: float = TOLERANCE_S) -> bool:
    """True when [start, end] overlaps the labelled turn widened by ``tolerance_s``."""
    return start <= turn["end"] + tolerance_s and end >= turn["start"] - tolerance_s


def forbidden_agent_turns(labels: dict) -> list[dict]:
    """The turns where the agent says a forbidden phrase."""
    return [t for t in labels["turns"] if "forbidden" in t["tags"] and t["speaker"] == "agent"]


def latency_summary(latencies: list[float]) -> str:
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    return f"latency_s p50={p50:.2f} p95={p95:.2f} max={max(latencies, default=0):.2f}"
