"""Scores over time (an agent's calls, the overview's days), as the geometry of a small server-side SVG chart.

The template draws the SVG from these numbers (autoescaped like everything
else); no script and no chart library are needed in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 16, 24, 30
GRID = (0, 60, 80, 100)


@dataclass
class TrendChart:
    """What the template needs to draw the chart."""

    width: int = WIDTH
    """SVG width in user units."""
    height: int = HEIGHT
    """SVG height in user units."""
    points: list[dict] = field(default_factory=list)
    """One dot per scored call (or day), oldest first: ``x``, ``y``, ``score``, ``call_id`` (None for a day),
    ``label`` (the date), ``show_label`` and ``show_value`` (whether there is room to write them), ``anchor``
    (the date's text-anchor: the first and last stay inside the chart)."""
    line: str = ""
    """The polyline through the dots (``x,y x,y …``)."""
    grid: list[dict] = field(default_factory=list)
    """Horizontal guides: ``y`` and the ``score`` they mark."""
    average: float | None = None
    """Mean score of the plotted calls."""


MAX_LABELS = 8
"""At most this many date labels on the x axis (evenly spread), so they never overlap."""
MAX_VALUES = 12
"""Above this many points the score is no longer written over each dot (its tooltip still has it)."""


def trend_chart(calls: list[dict]) -> TrendChart:
    """``calls`` are ``Store.list_calls`` rows (any order); unscored calls are left out."""
    scored = sorted((c for c in calls if c["score"] is not None), key=lambda c: (c["when"], c["id"]))
    return _chart([(c["score"], c["when"].strftime("%m-%d"), c["call_id"]) for c in scored])


def daily_chart(days: list[dict]) -> TrendChart:
    """The overview's daily average score (``Store.overview()["trend"]``); days without calls are left out."""
    return _chart([(d["average"], d["day"].strftime("%m-%d"), None) for d in days if d["average"] is not None])


def _chart(items: list[tuple[float, str, str | None]]) -> TrendChart:
    """Geometry for (score, date label, call id or None) items, oldest first."""
    chart = TrendChart()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(score: float) -> float:
        return round(TOP + plot_h * (1 - score / 100), 1)

    chart.grid = [{"y": y_of(score), "score": score} for score in GRID]
    step = max(1, -(-len(items) // MAX_LABELS))  # every step-th label, the last one always
    for index, (score, label, call_id) in enumerate(items):
        x = LEFT + (plot_w / 2 if len(items) == 1 else plot_w * index / (len(items) - 1))
        shown = index == len(items) - 1 or (index % step == 0 and len(items) - 1 - index >= step)
        chart.points.append({"x": round(x, 1), "y": y_of(score), "score": score, "call_id": call_id, "label": label,
                             "show_label": shown, "show_value": len(items) <= MAX_VALUES,
                             "anchor": "middle" if len(items) == 1 else ("start" if index == 0 else
                                                                      "end" if index == len(items) - 1 else "middle")})
    chart.line = " ".join(f"{p['x']},{p['y']}" for p in chart.points)
    if items:
        chart.average = round(sum(i[0] for i in items) / len(items), 1)
    return chart
