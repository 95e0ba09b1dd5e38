"""An agent's score over time, as the geometry of a small server-side SVG chart.

The template draws the SVG from these numbers (autoescaped like everything
else); no script and no chart library are needed in the browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 16, 14, 30
GRID = (0, 60, 80, 100)


@dataclass
class TrendChart:
    """What the template needs to draw the chart."""

    width: int = WIDTH
    """SVG width in user units."""
    height: int = HEIGHT
    """SVG height in user units."""
    points: list[dict] = field(default_factory=list)
    """One dot per scored call, oldest first: ``x``, ``y``, ``score``, ``call_id``, ``label``."""
    line: str = ""
    """The polyline through the dots (``x,y x,y …``)."""
    grid: list[dict] = field(default_factory=list)
    """Horizontal guides: ``y`` and the ``score`` they mark."""
    average: float | None = None
    """Mean score of the plotted calls."""


def trend_chart(calls: list[dict]) -> TrendChart:
    """``calls`` are ``Store.list_calls`` rows (any order); unscored calls are left out."""
    scored = sorted((c for c in calls if c["score"] is not None), key=lambda c: (c["when"], c["id"]))
    chart = TrendChart()
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def y_of(score: float) -> float:
        return round(TOP + plot_h * (1 - score / 100), 1)

    chart.grid = [{"y": y_of(score), "score": score} for score in GRID]
    for index, call in enumerate(scored):
        x = LEFT + (plot_w / 2 if len(scored) == 1 else plot_w * index / (len(scored) - 1))
        chart.points.append({"x": round(x, 1), "y": y_of(call["score"]), "score": call["score"],
                             "call_id": call["call_id"], "label": call["when"].strftime("%m-%d")})
    chart.line = " ".join(f"{p['x']},{p['y']}" for p in chart.points)
    if scored:
        chart.average = round(sum(c["score"] for c in scored) / len(scored), 1)
    return chart
