"""What the benches share about labelled calls (``*.labels.json``) and latencies."""

from __future__ import annotations

import numpy as np

TOLERANCE_S = 1.0
"""An event counts for a labelled turn when it lies within this much of it (issue 4's ±1 s)."""


def overlaps(start: float, end: float, turn: dict, tolerance_s: float = TOLERANCE_S) -> bool:
    """True when [start, end] overlaps the labelled turn widened by ``tolerance_s``."""
    return start <= turn["end"] + tolerance_s and end >= turn["start"] - tolerance_s


def forbidden_agent_turns(labels: dict) -> list[dict]:
    """The turns where the agent says a forbidden phrase."""
    return [t for t in labels["turns"] if "forbidden" in t["tags"] and t["speaker"] == "agent"]


def latency_summary(latencies: list[float]) -> str:
    p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2
    return f"latency_s p50={p50:.2f} p95={p95:.2f} max={max(latencies, default=0):.2f}"
