"""Recall and precision of the phrase matcher on real Whisper transcripts.

Reads a JSON of ASR transcripts ({"<call>.wav": [{"ch", "start", "end", "text"}]},
as Whisper base produced them on the sample calls) and the calls' labels
(``<call>.labels.json``: turns tagged forbidden / greeting / farewell /
customer_forbidden_like). A labelled forbidden turn is found when a forbidden
hit overlaps it within ±1 s; a forbidden hit is correct when it overlaps a
forbidden turn so. Channel 1 is the customer (stereo calls); on mono calls all
speech is on channel 0 and counts as the agent's, as in the scorer.

Then the kind-level case table (tests/meaning_cases.yaml: forbidden talk by kind
and paraphrase, and polite near misses): a case is found when a forbidden hit of
its expected category or phrase id is; a polite case is a false alarm when any
forbidden hit is raised. Recall and precision overall, per phrasebook and per kind.

Then the blind set (tests/meaning_blind_cases.yaml: batches written before the
lexicon was changed for them), where any forbidden hit finds a forbidden line:
each batch's recorded first look (bench/data/blind_first_look.yaml) beside the
figures now. Only first-look figures say how the kinds generalise.

    python bench/match_eval.py [--asr bench/data/sample_calls_asr.json] [--labels DIR] [--cases YAML]
                               [--blind YAML] [--first-look YAML]
    python bench/match_eval.py --batch blind7 [-v]   # one blind batch alone, per kind
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import yaml

from labelled import forbidden_agent_turns, overlaps

from monitor.asr import Segment
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook

HERE = Path(__file__).resolve().parent
def segments_of(entries: list[dict]) -> list[Segment]:
    return [
        Segment(start=e["start"], end=e["end"], text=e["text"], speaker="customer" if e.get("ch", 0) == 1 else "agent")
        for e in entries
    ]


def evaluate(asr: dict, labels_dir: Path, verbose: bool = False) -> dict:
    totals = {"forbidden_turns": 0, "forbidden_found": 0, "forbidden_hits": 0, "forbidden_hits_correct": 0,
              "position_turns": 0, "position_found": 0}
    for audio_name, entries in sorted(asr.items()):
        labels = json.loads((labels_dir / f"{Path(audio_name).stem}.labels.json").read_text(encoding="utf-8"))
        hits = matcher_for(load_phrasebook(labels["phrasebook"])).match_segments(segments_of(entries))
        forbidden_hits = [h for h in hits if h.kind == "forbidden"]
        forbidden_turns = forbidden_agent_turns(labels)
        found = [t for t in forbidden_turns if any(overlaps(h.start, h.end, t) for h in forbidden_hits)]
        correct = [h for h in forbidden_hits if any(overlaps(h.start, h.end, t) for t in forbidden_turns)]
        totals["forbidden_turns"] += len(forbidden_turns)
        totals["forbidden_found"] += len(found)
        totals["forbidden_hits"] += len(forbidden_hits)
        totals["forbidden_hits_correct"] += len(correct)
        for tag in ("greeting", "farewell"):
            for turn in (t for t in labels["turns"] if tag in t["tags"]):
                totals["position_turns"] += 1
                totals["position_found"] += any(h.category == tag and overlaps(h.start, h.end, turn) for h in hits)
        if verbose:
            print(f"{labels['call_id']}: {len(found)}/{len(forbidden_turns)} forbidden turns found, "
                  f"{len(correct)}/{len(forbidden_hits)} forbidden hits correct")
            for h in hits:
                print(f"    {h.start:6.2f}-{h.end:6.2f} {h.speaker:8} {h.kind:9} {h.phrase_id:32} "
                      f"{h.method:8} {h.confidence:.3f} {h.heard}")
    totals["recall"] = totals["forbidden_found"] / max(1, totals["forbidden_turns"])
    totals["precision"] = totals["forbidden_hits_correct"] / max(1, totals["forbidden_hits"])
    totals["greeting_farewell_recall"] = totals["position_found"] / max(1, totals["position_turns"])
    return totals


def evaluate_cases(cases: list[dict], verbose: bool = False, any_category: bool = False) -> dict:
    """Figures overall, per phrasebook and per expected kind; with ``any_category`` any
    forbidden hit finds a case, and the figures are also given per batch (``type`` up to '/')."""
    found, missed, false_alarms, polite = Counter(), Counter(), Counter(), Counter()
    for case in cases:
        hits = [h for h in matcher_for(load_phrasebook(case["phrasebook"])).match_text(case["text"]) if h.kind == "forbidden"]
        batch = [case["type"].split("/")[0]] if any_category else []
        if "expect" in case:
            ok = bool(hits) if any_category else any(case["expect"] in (h.category, h.phrase_id) for h in hits)
            for key in ("all", *batch, case["phrasebook"], case["expect"]):
                (found if ok else missed)[key] += 1
            if verbose and not ok:
                print(f"    missed {case['expect']}: {case['text']}  {[h.phrase_id for h in hits]}")
        else:
            for key in ("all", *batch, case["phrasebook"]):
                polite[key] += 1
                false_alarms[key] += bool(hits)
            if verbose and hits:
                print(f"    false alarm: {case['text']}  {[h.phrase_id for h in hits]}")

    def figures(key: str) -> dict:
        hits = found[key] + false_alarms[key]
        return {"found": f"{found[key]}/{found[key] + missed[key]}",
                "recall": round(found[key] / max(1, found[key] + missed[key]), 3),
                **({"false_alarms": f"{false_alarms[key]}/{polite[key]}",
                    "precision": round(found[key] / max(1, hits), 3)} if polite[key] else {})}

    books = {c["phrasebook"] for c in cases}
    batches = {c["type"].split("/")[0] for c in cases} if any_category else set()
    keys = ["all", *sorted(batches), *sorted(books), *sorted((set(found) | set(missed)) - {"all"} - books - batches)]
    return {key: figures(key) for key in dict.fromkeys(keys)}


def per_category(cases: list[dict]) -> dict:
    """Per kind: recall (a line of that kind raised any forbidden hit) and precision of
    the hits of that category (lines it was raised on that are forbidden at all)."""
    found, lines, raised, right = Counter(), Counter(), Counter(), Counter()
    for case in cases:
        matcher = matcher_for(load_phrasebook(case["phrasebook"]))
        hits = [h for h in matcher.match_text(case["text"]) if h.kind == "forbidden"]
        if "expect" in case:
            lines[case["expect"]] += 1
            found[case["expect"]] += bool(hits)
        for category in {h.category for h in hits}:
            raised[category] += 1
            right[category] += "expect" in case
    return {c: {"recall": f"{found[c]}/{lines[c]} = {found[c] / max(1, lines[c]):.2f}",
                "precision": f"{right[c]}/{raised[c]} = {right[c] / max(1, raised[c]):.2f}"}
            for c in sorted(set(lines) | set(raised))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr", type=Path, default=HERE / "data" / "sample_calls_asr.json")
    parser.add_argument("--labels", type=Path, default=HERE.parent / "samples")
    parser.add_argument("--cases", type=Path, default=HERE.parent / "tests" / "meaning_cases.yaml")
    parser.add_argument("--blind", type=Path, default=HERE.parent / "tests" / "meaning_blind_cases.yaml")
    parser.add_argument("--first-look", type=Path, default=HERE / "data" / "blind_first_look.yaml")
    parser.add_argument("--batch", action="append", help="only this blind batch, with figures per kind (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.batch:  # one batch, alone: a sealed batch is not seen before its first look
        cases = [c for c in yaml.safe_load(args.blind.read_text(encoding="utf-8"))
                 if c["type"].split("/")[0] in args.batch]
        for key, figures in evaluate_cases(cases, args.verbose, any_category=True).items():
            print(f"  {key:18} " + "  ".join(f"{name} {value}" for name, value in figures.items()))
        for category, figures in per_category(cases).items():
            print(f"  {category:18} recall {figures['recall']}  precision {figures['precision']}")
        return
    totals = evaluate(json.loads(args.asr.read_text(encoding="utf-8")), args.labels, args.verbose)
    print(json.dumps(totals, ensure_ascii=False, indent=1))
    cases = yaml.safe_load(args.cases.read_text(encoding="utf-8"))
    print(f"kind-level cases ({args.cases.name}):")
    for key, figures in evaluate_cases(cases, args.verbose).items():
        print(f"  {key:18} " + "  ".join(f"{name} {value}" for name, value in figures.items()))
    blind = evaluate_cases(yaml.safe_load(args.blind.read_text(encoding="utf-8")), args.verbose, any_category=True)
    first_look = yaml.safe_load(args.first_look.read_text(encoding="utf-8"))
    print(f"blind set ({args.blind.name}), any forbidden hit finds a line:")
    for key, figures in blind.items():
        print(f"  {key:18} " + "  ".join(f"{name} {value}" for name, value in figures.items()))
    before = {name: sum(batch[name] for batch in first_look.values())
              for name in ("found", "forbidden", "false_alarms", "polite")}
    for batch, recorded in [*first_look.items(), ("all", before)]:
        now = blind.get(batch)
        if now is None:
            continue
        print(f"blind set {batch:6} first look: {rate(recorded)}; after: R {now['found']} = {now['recall']}, "
              f"P {now['precision']} ({now['false_alarms']} polite lines raised)")


def rate(recorded: dict) -> str:
    """Recall and precision of recorded first-look counts."""
    found, false_alarms = recorded["found"], recorded["false_alarms"]
    return (f"R {found}/{recorded['forbidden']} = {found / recorded['forbidden']:.3f}, "
            f"P {found / max(1, found + false_alarms):.3f} ({false_alarms}/{recorded['polite']} polite lines raised)")


if __name__ == "__main__":
    main()
