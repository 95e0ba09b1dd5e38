"""Recall and precision of each conduct rule of the office and hospital codes and the
shared compliance part, on labelled synthesized calls and on the case table.

    python bench/conduct_rules.py [--calls DIR] [--scripts DIR] [--tts-python PY --synth TOOL] [--cases YAML] [--rejudge]

Calls: ``--scripts`` (default ``bench/data/office/*.json``) are call scripts for the shared
``synth_call.py``; each call missing from ``--calls`` (a cache directory, default
``$XDG_CACHE_HOME/call-conduct-monitor/conduct_calls``) is synthesized there first (about
25 s a call), then every call is scored by the real pipeline (Whisper, role separation on
mono calls, matching, rules); its report is left beside it (``NAME.report.json``). Turns carry tags: ``forbidden`` (the agent breaks a rule),
``near_miss`` (the polite or lawful reading: a refused gift, a qualified promise),
``customer_forbidden_like`` (the customer says it), and ``kind:<category>``.

- a kind's recall: its labelled forbidden agent turns that an event of the kind overlaps (±1 s);
- a kind's precision: its events that overlap a forbidden agent turn of any kind (the verdict
  is right; the kind may be a neighbour's: 今天不看了，快下班了 is 一口拒绝 and 推诿);
- per group (the office calls, the hospital calls, bribery wherever it is): forbidden recall
  and precision as above, any kind for the office and hospital calls, bribery for bribery;
- events on a customer's line (blamed on the agent) are false alarms, and counted apart.
Events held for review (uncertain speaker) count as raised: they are shown in the report.
The same measures on the calls' scripts as text (every word heard) tell the rules' misses from Whisper's.

Call sets: ``bench/data/office/*.json`` (the 19 calls the rules were built on), ``sealed/calls1``–``calls5``
(held out, each written before the changes it judged; their first looks are in ``FIRST_LOOK``), ``dev5/``
(development calls written with conduct3's changes), ``dev6/`` (conduct5's development calls, one real human
customer turn each: made by the shared ``real_customer_call.py``, see its README), ``dev7/`` (conduct6's: accepted
dinners, a sign to read alone, drugs through a rep, other bidders' prices; see its README), ``dev8/`` (conduct7's:
a favour asked in return, money paid to the agent, a stake for a result, someone else's details, the task handed back).

Cases: ``tests/compliance_cases.yaml`` (text only), the same measures per kind, a line
being a turn: a polite line raising anything is a false alarm of that kind.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

from labelled import overlaps

from monitor.asr import Segment, Transcriber
from monitor.match import matcher_for
from monitor.meaning import model_for
from monitor.phrasebook import load_phrasebook
from monitor.pipeline import ScoreOptions, score_call
from monitor.roles import match_by_role
from monitor.rules import judge

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET = 0.8
"""The issue's aim for forbidden recall and precision on office, hospital and bribery."""
GROUPS = ("office", "hospital", "bribery")
SEALED = HERE / "data" / "office" / "sealed"
"""Batches of lines (``batch*.yaml``) and call scripts (``calls*/``) written and committed before
the rules were changed for them and before being run."""
FIRST_LOOK = {
    "blind": {"forbidden": 31, "raised": 8, "polite": 25, "polite_raised": 1},
    # 2026-11-28, issue 14; its five calls (calls1/) at first look: office 2/6, hospital 2/5, bribery 1/2,
    # precision 1.00; their scripts as text 4/6, 3/5, 1/2.
    "batch1": {"forbidden": 46, "raised": 33, "own_kind": 30, "polite": 37, "polite_raised": 2},
    # written after the changes made for batch1, run once as written; its five calls (calls2/) at first
    # look: office 2/6, hospital 5/9, bribery 2/3, precision 1.00; their scripts as text 3/6, 6/9, 2/3.
    "batch2": {"forbidden": 43, "raised": 20, "own_kind": 19, "polite": 32, "polite_raised": 1},
    # written after the changes made for batch2, run once as written
    "batch3": {"forbidden": 26, "raised": 15, "own_kind": 11, "polite": 20, "polite_raised": 0},
    # written after the changes made for batch3, run once as written
    "batch4": {"forbidden": 20, "raised": 7, "own_kind": 5, "polite": 15, "polite_raised": 1},
    # 2026-11-28, s20 (commit e7e5646, written before any change, run once as written): the rules raise
    # 24/44 (21 their own kind) and 3/36 polite lines; the meaning model of that commit (the lexicon's six
    # kinds only) adds to them up to 27/44 deducting and 31/44 counting review, raising no polite line.
    # Its four calls (calls3/, the same commit) at first look after Whisper: office 2/4, hospital 4/7,
    # bribery 1/3, precision 1.00, nothing on a customer's line; their scripts as text (rules only) 4/4, 4/7, 1/3.
    # After the by_sound words and the meaning model's compliance kinds (ac03af9): 3/4, 6/7, 2/3, precision 1.00.
    # calls4/ (three calls written after that commit, run once): office 0/3, hospital 2/4, bribery 0/2, precision
    # 1.00, nothing on a customer's line; scripts as text (rules only) 2/3, 1/4, 1/2. Whisper lost the key words
    # (内部消息 → 妹不消息, 吃顿好的 → 驱动好的, 千万别外传 → 先问别外转) and cut the leak into two sentences.
    # calls5/ (seven calls, conduct3, written at commit 36c5a98 before any change, run once as written on that
    # commit): office 1/4, hospital 3/5, bribery 3/5, precision 1.00, nothing on a customer's line; their scripts
    # as text (rules only) 3/4, 4/5, 2/5. Whisper: 乳腺癌转移 → 祖先来准一, 长没长脑子 → 一兆没兆毛泽, 挨过处分
    # → 爱过除肥; roles gave the agent's 这种事我们不受理 to the customer (s5_05). Measured once after conduct3's
    # changes (0708f71, same transcripts): 2/4, 3/5, 3/5, precision 1.00 (phrasebooks/README.md).
    "batch5": {"forbidden": 44, "raised": 24, "own_kind": 21, "polite": 36, "polite_raised": 3},
    # dev6/ (ten development calls, conduct5, written at commit b07cf27 before any change, run once as written):
    # office 2/10, hospital 7/9, bribery 2/7 (2/6 after one line was relabelled private_deal), precision 1.00,
    # nothing on a customer's line; as text (rules only) 4/10, 8/9, 4/7. After conduct5's changes, the same
    # transcripts: 7/10, 9/9, 6/6; as text 10/10, 9/9, 6/6 (phrasebooks/README.md).
    # dev7/ (ten development calls, conduct6, written at commit 37c053d before any change, run once as written):
    # office 2/8, hospital 3/9, bribery 0/6, precision 1.00, nothing on a customer's line; as text (rules only)
    # 1/8, 1/9, 0/6 (its README; after conduct6's changes, phrasebooks/README.md).
}
"""The case batches written before being run, as they first ran (phrasebooks/README.md)."""


def kinds_of(turn: dict) -> set[str]:
    return {tag.split(":", 1)[1] for tag in turn.get("tags", []) if tag.startswith("kind:")}


def is_forbidden(turn: dict) -> bool:
    return turn["speaker"] == "agent" and "forbidden" in turn.get("tags", [])


class Tally:
    """Recall and precision counts, by kind or group."""

    def __init__(self):
        self.found, self.labelled, self.right, self.raised = Counter(), Counter(), Counter(), Counter()

    def line(self, name: str) -> str:
        recall = self.found[name] / self.labelled[name] if self.labelled[name] else float("nan")
        precision = self.right[name] / self.raised[name] if self.raised[name] else float("nan")
        return (f"{name:18} recall {recall:5.2f} ({self.found[name]}/{self.labelled[name]})   "
                f"precision {precision:5.2f} ({self.right[name]}/{self.raised[name]})")

    def names(self) -> list[str]:
        return sorted(set(self.labelled) | set(self.raised))


def synthesize(scripts: list[str], calls: Path, tts_python: str, synth: str) -> None:
    missing = [s for s in scripts if not (calls / f"{Path(s).stem}.wav").is_file()]
    if not missing:
        return
    print(f"synthesizing {len(missing)} calls into {calls} ...", flush=True)
    calls.mkdir(parents=True, exist_ok=True)
    subprocess.run([tts_python, synth, *missing, str(calls)], check=True, stdout=subprocess.DEVNULL)


def script_events(labels: dict) -> list[dict]:
    """The forbidden events the rules raise on the call's script, as if Whisper had heard every word."""
    matcher = matcher_for(load_phrasebook(labels["phrasebook"]))
    segments = [Segment(t["start"], t["end"], t["text"], t["speaker"]) for t in labels["turns"]]
    return [{"category": h.category, "heard": h.heard, "start": t.start, "end": t.end}
            for t in segments for h in matcher.match_segments([t]) if h.kind == "forbidden"]


def rejudged(report: dict, labels: dict) -> dict:
    """The report's transcript (its speakers as role separation gave them) judged again by today's
    matcher, rules and meaning model, without Whisper: to measure a change of the rules in seconds."""
    phrasebook = load_phrasebook(labels["phrasebook"])
    segments = [Segment(s["start"], s["end"], s["text"], s["speaker"], speaker_confidence=s.get("speaker_confidence"))
                for s in report["transcript"]]
    matcher = matcher_for(phrasebook)
    stereo = bool(labels.get("stereo"))
    hits = matcher.match_segments(segments) if stereo else match_by_role(matcher, segments)
    judgement = judge(segments, hits, phrasebook, report["duration_s"], stereo, meaning=model_for(phrasebook))
    return {**report, "events": [{"kind": e.kind, "category": e.category, "heard": e.heard, "start": e.start,
                                  "end": e.end} for e in judgement.events]}


def judge_calls(calls: Path, names: list[str], by_kind: Tally, by_group: Tally, transcribed: bool = True,
                rejudge: bool = False) -> None:
    """Tallies each call's events against its labels: the pipeline's (``transcribed``; with ``rejudge``, the
    saved reports' transcripts judged again) or the script's."""
    transcriber = Transcriber() if transcribed and not rejudge else None
    options = ScoreOptions()
    blamed = 0
    audio_s = spent_s = 0.0
    for name in names:
        labels = json.loads((calls / f"{name}.labels.json").read_text(encoding="utf-8"))
        if not transcribed:
            tally_call(labels, script_events(labels), by_kind, by_group)
            continue
        started = time.perf_counter()
        if rejudge:
            report = rejudged(json.loads((calls / f"{name}.report.json").read_text(encoding="utf-8")), labels)
        else:
            report = score_call(str(calls / f"{name}.wav"), transcriber, load_phrasebook(labels["phrasebook"]),
                                options, labels["call_id"], labels.get("agent_id"))
            (calls / f"{name}.report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
        spent_s += time.perf_counter() - started
        audio_s += report["duration_s"]
        events = [e for e in report["events"] if e["kind"] == "forbidden"]
        misses, alarms, on_customer = tally_call(labels, events, by_kind, by_group)
        blamed += on_customer
        print(f"{name:28} forbidden turns {sum(map(is_forbidden, labels['turns']))}, events {len(events)}"
              + (f"\n    missed: {misses}" if misses else "") + (f"\n    false alarms: {alarms}" if alarms else ""))
    if transcribed:
        print(f"events on a customer's line: {blamed}; {'re-judging' if rejudge else 'pipeline'} {spent_s:.1f} s for {audio_s:.1f} s of audio "
              f"(RTF {spent_s / max(audio_s, 1e-9):.3f})")


def tally_call(labels: dict, events: list[dict], by_kind: Tally, by_group: Tally) -> tuple[list, list, int]:
    """Counts one call's forbidden events against its labelled turns; returns what was missed,
    the false alarms, and how many of them lie on a customer's line."""
    blamed = 0
    turns = labels["turns"]
    wanted = [t for t in turns if is_forbidden(t)]
    group = labels["phrasebook"] if labels["phrasebook"] in GROUPS else None
    misses, alarms = [], []
    for turn in wanted:
        near = [e for e in events if overlaps(e["start"], e["end"], turn)]
        for kind in kinds_of(turn):
            by_kind.labelled[kind] += 1
            by_kind.found[kind] += any(e["category"] == kind for e in near)
            if not any(e["category"] == kind for e in near):
                misses.append(f"{kind}: {turn['text']}")
        if group:
            by_group.labelled[group] += 1
            by_group.found[group] += bool(near)
        if "bribery" in kinds_of(turn):
            by_group.labelled["bribery"] += 1
            by_group.found["bribery"] += any(e["category"] == "bribery" for e in near)
    for event in events:
        right = any(overlaps(event["start"], event["end"], t) for t in wanted)
        on_customer = any(overlaps(event["start"], event["end"], t, 0.0) for t in turns
                          if t["speaker"] == "customer") and not right
        blamed += on_customer
        by_kind.raised[event["category"]] += 1
        by_kind.right[event["category"]] += right
        for name in ([group] if group else []) + (["bribery"] if event["category"] == "bribery" else []):
            by_group.raised[name] += 1
            by_group.right[name] += right
        if not right:
            alarms.append(f"{event['category']}: {event['heard']}" + (" (customer's line)" if on_customer else ""))
    return misses, alarms, blamed


def judge_cases(path: Path, by_kind: Tally, batches: Counter, batch: str | None = None) -> None:
    """Tallies the cases by kind, and per batch (a case's ``batch``, else ``batch``) the forbidden
    lines raising anything and raising their own kind, and the polite lines raising anything."""
    cases = yaml.safe_load(path.read_text(encoding="utf-8"))
    for case in cases:
        case.setdefault("batch", batch) if batch else None
        phrasebook = load_phrasebook(case["phrasebook"])
        matcher = matcher_for(phrasebook)
        speaker = case.get("speaker", "agent")
        hits = [h for h in matcher.match_segments([Segment(0.0, 1.0, case["text"], speaker)]) if h.kind == "forbidden"]
        if "batch" in case:
            label = "forbidden" if "expect" in case else "polite"
            prefix = "polite_" if label == "polite" else ""
            batches[(case["batch"], label)] += 1
            batches[(case["batch"], f"{prefix}raised")] += bool(hits)
            # the meaning model, as the monitor uses it: on the agent's lines no rule raised anything
            model = model_for(phrasebook)
            verdict = (model.judge([case["text"]], {p.category for p in phrasebook.meaning_phrases})
                       if model is not None and speaker == "agent" and not hits else [])
            probability = verdict[0].probability if verdict else 0.0
            batches[(case["batch"], f"{prefix}with_model")] += bool(hits) or bool(verdict) and probability >= model.deduct_threshold
            batches[(case["batch"], f"{prefix}with_review")] += bool(hits) or bool(verdict) and probability >= model.review_threshold
        expected = case.get("expect")
        kind = expected if expected is None or "." not in expected else load_phrasebook(case["phrasebook"]).by_id(expected).category
        if "batch" in case and kind:
            batches[(case["batch"], "own_kind")] += any(h.category == kind for h in hits)
        if kind:
            by_kind.labelled[kind] += 1
            by_kind.found[kind] += any(h.category == kind or h.phrase_id == expected for h in hits)
        for hit in hits:
            by_kind.raised[hit.category] += 1
            by_kind.right[hit.category] += bool(kind)


def main() -> int:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "call-conduct-monitor" / "conduct_calls"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=Path, default=cache, help="where the synthesized calls are (and are made)")
    parser.add_argument("--scripts", type=Path, default=HERE / "data" / "office", help="call scripts (*.json)")
    parser.add_argument("--tts-python", default=str(REPO.parent / "ttsenv" / "bin" / "python"),
                        help="the Python of the TTS environment (see the shared tools' README)")
    parser.add_argument("--synth", default=str(REPO.parent / "shared" / "tools" / "synth_call.py"))
    parser.add_argument("--cases", type=Path, default=REPO / "tests" / "compliance_cases.yaml")
    parser.add_argument("--sealed", type=Path, nargs="*", default=sorted(SEALED.glob("batch*.yaml")),
                        help="sealed batches of lines (each its own batch, named by its file)")
    parser.add_argument("--no-calls", action="store_true", help="only the case tables")
    parser.add_argument("--rejudge", action="store_true",
                        help="judge the calls' saved reports (NAME.report.json) again, without Whisper")
    args = parser.parse_args()

    if not args.no_calls:
        scripts = sorted(glob.glob(str(args.scripts / "*.json")))
        if not args.rejudge:
            synthesize(scripts, args.calls, args.tts_python, args.synth)
        by_kind, by_group = Tally(), Tally()
        judge_calls(args.calls, [Path(s).stem for s in scripts], by_kind, by_group, rejudge=args.rejudge)
        print("\ncalls, per kind:")
        for name in by_kind.names():
            print("  " + by_kind.line(name))
        print(f"calls, per group (target >= {TARGET} each):")
        for name in GROUPS:
            print("  " + by_group.line(name))
        by_kind, by_group = Tally(), Tally()
        judge_calls(args.calls, [Path(s).stem for s in scripts], by_kind, by_group, transcribed=False)
        print("the same calls' scripts as text (every word heard: what Whisper's mishearings cost):")
        for name in GROUPS:
            print("  " + by_group.line(name))
    by_kind, batches = Tally(), Counter()
    judge_cases(args.cases, by_kind, batches)
    print(f"\ncase table ({args.cases.name}), per kind:")
    for name in by_kind.names():
        print("  " + by_kind.line(name))
    for path in args.sealed:
        sealed = Tally()
        judge_cases(path, sealed, batches, path.stem)
        print(f"sealed batch {path.stem}, per kind:")
        for name in sealed.names():
            print("  " + sealed.line(name))
    for batch in dict.fromkeys([*FIRST_LOOK, *(p.stem for p in args.sealed)]):
        first = FIRST_LOOK.get(batch)
        own = f", their own kind {batches[(batch, 'own_kind')]}" if "own_kind" in (first or {"own_kind": 0}) else ""
        was = (f"first look {first['raised']}/{first['forbidden']}"
               + (f" (own kind {first['own_kind']})" if "own_kind" in first else "") if first else "no first look recorded")
        print(f"batch {batch}: forbidden lines raising anything, {was}, now {batches[(batch, 'raised')]}/"
              f"{batches[(batch, 'forbidden')]}{own}; polite lines raising anything, "
              + (f"first look {first['polite_raised']}/{first['polite']}, " if first else "")
              + f"now {batches[(batch, 'polite_raised')]}/{batches[(batch, 'polite')]}")
        print(f"    with the meaning model: forbidden lines raising anything {batches[(batch, 'with_model')]}/"
              f"{batches[(batch, 'forbidden')]} deducting, {batches[(batch, 'with_review')]} counting review; "
              f"polite lines {batches[(batch, 'polite_with_model')]} deducting, {batches[(batch, 'polite_with_review')]} "
              f"counting review")
    return 0


if __name__ == "__main__":
    sys.exit(main())
