"""A call's report after human review (复核): appeals decided, deductions a reviewer added.

Pure functions over the machine's report and the review rows the store keeps;
no I/O. The machine's report is never changed: its ``score.deductions`` keep
their indexes (appeals point at them), an overturned one stays in the list
marked ``overturned`` and counts nothing, and a reviewer's deductions follow
the machine's. The score is then computed the way ``rules.judge`` computes it:
the maximum less every deduction that counts, not below zero.

An appeal applies to the deduction it was filed against only while that
deduction is still at its index with the same source and points; a call scored
again with other deductions leaves earlier appeals aside (listed, not applied).
"""

from __future__ import annotations

import datetime as dt


def applies(appeal: dict, deductions: list[dict]) -> bool:
    """Whether an appeal row still names the deduction at its index."""
    index = appeal["deduction_index"]
    return (0 <= index < len(deductions) and deductions[index].get("source") == appeal["source"]
            and deductions[index]["points"] == appeal["points"])


def reviewed_total(report: dict, appeals: list[dict], added: list[dict]) -> int | None:
    """The score after review; the machine's when nothing was reviewed, None for a call that was not scored."""
    score = report["score"]
    deductions = score["deductions"]
    if score["total"] is None and not added:
        return None
    overturned = {a["deduction_index"] for a in appeals if a["status"] == "overturned" and applies(a, deductions)}
    counted = sum(d["points"] for i, d in enumerate(deductions) if i not in overturned)
    return max(0, score["max"] - counted - sum(a["points"] for a in added))


def reviewed_report(report: dict, appeals: list[dict], added: list[dict], history: list[dict]) -> dict:
    """The report as ``GET /calls/{id}/report.json`` serves it (see CONTRACT.md, "Reviews").

    ``score.total`` is the score after review and ``score.machine_total`` the
    machine's; each machine deduction carries its ``index`` and, when appealed,
    its ``appeal``; ``reviewed`` holds both scores, the appeals and the history.
    """
    machine = report["score"]
    by_index = {a["deduction_index"]: a for a in appeals if applies(a, machine["deductions"])}
    deductions = []
    for index, deduction in enumerate(machine["deductions"]):
        row = {**deduction, "index": index, "overturned": False, "appeal": None, "added_by": None}
        appeal = by_index.get(index)
        if appeal:
            row["appeal"] = appeal_json(appeal)
            row["overturned"] = appeal["status"] == "overturned"
        deductions.append(row)
    for extra in added:
        deductions.append({
            "reason": extra["reason"], "points": extra["points"], "article": extra["article"], "source": extra["source"],
            "severity": None, "coaching": None, "coaching_article": None, "overturned": False, "appeal": None,
            "evidence": None if extra["start"] is None else {"start": extra["start"], "end": extra["start"], "heard": ""},
            "added_by": extra["added_by"], "added_at": _iso(extra["created_at"]),
        })
    total = reviewed_total(report, appeals, added)
    return {
        **report,
        "score": {**machine, "total": total, "machine_total": machine["total"], "deductions": deductions},
        "reviewed": {
            "machine_score": machine["total"],
            "score": total,
            "changed": bool(added) or any(a["status"] == "overturned" for a in by_index.values()),
            "appeals": [appeal_json(a) | {"applies": applies(a, machine["deductions"])} for a in appeals],
            "history": [history_json(h) for h in history],
        },
    }


def counted_deductions(reviewed: dict) -> list[dict]:
    """The deductions of a reviewed report that count (for the HTML page, which lists what was taken off)."""
    return [d for d in reviewed["score"]["deductions"] if not d["overturned"]]


def history_json(row: dict) -> dict:
    """An audit_log row as the report's history shows it: who, when, what, why."""
    return {"at": _iso(row["at"]), "by": row["actor"], "role": row["role"], "action": row["action"],
            "why": row["why"], "subject_id": row["subject_id"], "detail": row["detail"]}


def appeal_json(row: dict) -> dict:
    """An appeals row for the API, the report and the reviewer's queue."""
    return {
        "appeal_id": row["id"], "call_id": row["call_id"], "deduction": row["deduction_index"], "source": row["source"],
        "points": row["points"], "article": row["article"], "start": row["start"],
        "deduction_reason": row["deduction_reason"], "reason": row["reason"], "appealed_by": row["appealed_by"],
        "created_at": _iso(row["created_at"]), "status": row["status"], "decided_by": row["decided_by"],
        "decided_at": _iso(row["decided_at"]), "note": row["note"],
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()
