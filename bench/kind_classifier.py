"""How well the meaning model (monitor/meaning.py) finds forbidden kinds on talk it never saw.

The model is trained by bench/train_meaning.py (scikit-learn logistic regression over hashed
character 1–3-grams, seven classes: the lexicon's six kinds and ``none``). This bench measures,
at the thresholds the bundled model carries:

1. held-out lines: each of the fourteen blind batches held out in turn (the model trained on
   everything else, ordinary talk split into folds alongside): recall, precision, polite near
   misses and ordinary sentences fired, the kind named right; beside the lexicon's rules as they
   are now (tuned after most batches, so flattering) and the two together (the monitor: the model
   only adds sentences where no rule fired);
2. lines never trained on at all: the polite lines of tests/compliance_cases.yaml and of the
   sealed office batches (``absent_kind: forbidden``);
3. with ``--calls``: the sample calls (samples/) through the real pipeline (Whisper,
   matching, rules): every meaning-model event on an agent turn not tagged forbidden is a false
   alarm; the sample calls' turns are not in the training data;
4. speed: sentences judged per second, one at a time and batched.

Measured 2026-11-28 (C=30, 2609 training lines; the thresholds train_meaning.py chose on the
out-of-fold probabilities: deduct 0.83, review 0.61):

- held-out blind batches (697 forbidden lines, 648 polite near misses), the model alone: at the
  deduct threshold 374/697 = 0.54 found, precision 0.995 (2 polite lines fired), its kind right for
  302/374; at the review threshold 537/697 = 0.77, precision 0.991 (5 polite). Ordinary agent talk
  held out the same way (371 lines): 1 fires at deduct (0.3 per 100 sentences), 11 at review (3.0 per
  100). The rules as they are now find 644/697 with no polite line (tuned after most batches: their
  first looks found 266/697); rules or model: 669/697 = 0.96 at deduct (precision 0.997), 682/697 =
  0.98 counting review hits. At 0.5 the model alone finds 590/697 (11 polite, 15/371 ordinary): the
  old binary model of this bench found 636/697 at 0.5 (17 polite), but one threshold for all kinds
  and no kind.
- never trained on: of 189 polite lines of tests/compliance_cases.yaml and the sealed office batches,
  1 reaches deduct (裁员的事我私下跟你讲不了 等公司通知吧, 0.95 推诿) and 9 review (refusing a gift,
  我不能跟您打包票…: 不能 reads as refusing to help).
- the sample calls through the real pipeline (Whisper base, roles, rules): 0 model events on their 30
  ordinary agent turns, deducted or for review. (One is not clean: the live second pass once heard
  d06's untagged 喂，什么事？ as 脏话 at 0.86; plain phone openings were then added as negatives.)
- synthesized calls after Whisper (bench/data/kinds_e2e/*.json through tools/synth_call.py and
  ``monitor score``): k03 (new wordings, customer_service) 5/5 forbidden turns found, one by the model
  alone (反正我这儿处理不了。爱找谁找谁。 0.996 推诿, one event for the two sentences); k01 4/4 (by the
  rules: the model's 0.95 on one turn's first sentence gives way to a rule's hit in its second); k02
  3/4 (one by the model alone, 0.90); no model event on any of their 15 ordinary agent turns. Live (``monitor.live --file`` k03): the model's alert comes on the committed
  sentence, and the rule that fires there later is no second alert.
- speed: about 3,000 sentences/s one at a time, 50,000/s batched (one core, shared machine); the
  model file is 734 KiB (235,200 weights over hashed n-grams).

Measured 2026-11-28 (s20) after adding the compliance part's six kinds (13 classes, 3050 training lines;
deduct 0.83, review 0.57; held out: the blind batches and the sealed office batches 1–4 in turn):

- held-out lines (832 forbidden, 746 polite, 371 ordinary): at deduct 441/832 = 0.53, precision 0.991
  (3 polite, 1 ordinary fire); at review 643/832 = 0.77 (9 polite, 11 ordinary). The sealed office batches'
  compliance-kind lines: 28/97 deduct, 42/97 review.
- sealed batch 5, never trained on (44 forbidden, 34 polite agent lines): the model alone 24/44 deducting
  (kind right 21; the model before, with the lexicon's kinds only, 15/44), 29/44 reaching review, no polite line;
  rules or model 32/44 deducting, 34/44 counting review, 1/34 polite (a rule's).
- the sample calls through the pipeline: no deduction on their 30 ordinary agent turns, one review (喂,什么事?
  as 脏话 at 0.59); the 16 real recordings' reference transcripts: nothing reaches review.
- speed on the loaded shared machine: 650 sentences/s one at a time, 10,000/s batched; the file is 1.7 MB.

Then retrained (40 short replies among the ordinary lines; thresholds over the sentences the monitor judges,
at least four characters): deduct 0.80, review 0.50; held out 458/829 at deduct (precision 0.991), 675/829 at
review (0.967, 11/381 ordinary). Sealed batch 5: the model alone 24/44 deducting, 34/44 at review, 1/34 polite
at review; rules or model 32/44 and 38/44. The sample calls: no model event on their 30 ordinary agent turns.

    python bench/kind_classifier.py [--calls]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from monitor.match import matcher_for  # noqa: E402
from monitor.meaning import NONE, bundled_model  # noqa: E402
from monitor.phrasebook import load_phrasebook  # noqa: E402
from train_meaning import BLIND, HELD_OUT, SEALED_TRAINED, labelled_lines, out_of_fold  # noqa: E402

HELD_OUT_FOLDS = ("blind", "sealed")
"""The folds held out in turn: the blind batches and the sealed office batches 1–4."""


def rules_fire(phrasebook: str, text: str) -> bool:
    return any(h.kind == "forbidden" for h in matcher_for(load_phrasebook(phrasebook)).match_text(text))


def held_out_lines(deduct: float, review: float) -> None:
    lines = labelled_lines()
    started = time.perf_counter()
    probability, kinds = out_of_fold(lines)
    print(f"out-of-fold probabilities of {int((~np.isnan(probability)).sum())} lines in {time.perf_counter() - started:.0f} s")
    cases = [c for path in (BLIND, *SEALED_TRAINED) for c in yaml.safe_load(path.read_text(encoding="utf-8"))]
    phrasebook_of = {c["text"]: c["phrasebook"] for c in cases}
    rules = {i: rules_fire(phrasebook_of[l.text], l.text) for i, l in enumerate(lines) if l.fold.startswith(HELD_OUT_FOLDS)}
    for name, threshold in (("deduct", deduct), ("review", review)):
        totals = {"found": 0, "forbidden": 0, "raised": 0, "polite": 0, "either": 0, "either_raised": 0,
                  "rules": 0, "rules_raised": 0, "kind": 0}
        for i, line in enumerate(lines):
            if not line.fold.startswith(HELD_OUT_FOLDS):
                continue
            fired = probability[i] >= threshold
            either = rules[i] or fired
            if line.label != NONE:
                totals["forbidden"] += 1
                totals["found"] += fired
                totals["kind"] += fired and kinds[i] == line.label
                totals["either"] += either
                totals["rules"] += rules[i]
            else:
                totals["polite"] += 1
                totals["raised"] += fired
                totals["either_raised"] += either
                totals["rules_raised"] += rules[i]
        ordinary = [i for i, l in enumerate(lines) if l.fold.startswith("ordinary")]
        ordinary_fired = sum(probability[i] >= threshold for i in ordinary)
        t = totals
        print(f"{name} ≥ {threshold}: model {t['found']}/{t['forbidden']} = {t['found'] / t['forbidden']:.3f} "
              f"(kind right {t['kind']}/{t['found']}), precision {t['found'] / max(1, t['found'] + t['raised']):.3f} "
              f"({t['raised']}/{t['polite']} polite); rules now {t['rules']}/{t['forbidden']} "
              f"({t['rules_raised']} polite); rules or model {t['either']}/{t['forbidden']} = "
              f"{t['either'] / t['forbidden']:.3f}, precision {t['either'] / max(1, t['either'] + t['either_raised']):.3f}; "
              f"ordinary {ordinary_fired}/{len(ordinary)} = {100 * ordinary_fired / len(ordinary):.1f} per 100")


def never_trained(deduct: float, review: float) -> None:
    """Sealed batch 5 (never trained on): the bundled model alone, and beside the rules, per line."""
    model = bundled_model()
    cases = [c for c in yaml.safe_load(HELD_OUT.read_text(encoding="utf-8")) if c.get("speaker", "agent") == "agent"]
    forbidden = [c for c in cases if "expect" in c]
    polite = [c for c in cases if c.get("absent_kind") == "forbidden"]
    for name, threshold in (("deduct", deduct), ("review", review)):
        counts = {}
        for label, group in (("forbidden", forbidden), ("polite", polite)):
            fired = [model.judge([c["text"]], {p.category for p in load_phrasebook(c["phrasebook"]).meaning_phrases})
                     for c in group]
            model_hits = [bool(j) and j[0].probability >= threshold for j in fired]
            rule_hits = [rules_fire(c["phrasebook"], c["text"]) for c in group]
            kind_right = sum(h and j[0].category == c["expect"] for h, j, c in zip(model_hits, fired, group)) if label == "forbidden" else 0
            counts[label] = (sum(model_hits), sum(r or m for r, m in zip(rule_hits, model_hits)), sum(rule_hits), kind_right)
        (model_f, either_f, rules_f, kind), (model_p, either_p, rules_p, _) = counts["forbidden"], counts["polite"]
        print(f"sealed batch 5 (never trained on), {name} ≥ {threshold}: model {model_f}/{len(forbidden)} (kind right {kind}), "
              f"{model_p}/{len(polite)} polite; rules {rules_f}/{len(forbidden)}, {rules_p} polite; "
              f"rules or model {either_f}/{len(forbidden)}, {either_p}/{len(polite)} polite")


def sample_calls() -> None:
    from monitor.asr import Transcriber
    from monitor.pipeline import ScoreOptions, score_call

    transcriber = Transcriber()
    sentences = review = deducted = 0
    for labels_path in sorted((ROOT / "samples").glob("*.labels.json")):
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
        report = score_call(str(labels_path.with_suffix("").with_suffix(".wav")), transcriber,
                            load_phrasebook(labels["phrasebook"]), ScoreOptions())
        forbidden_turns = [t for t in labels["turns"] if t["speaker"] == "agent" and "forbidden" in t["tags"]]
        sentences += sum(1 for t in labels["turns"] if t["speaker"] == "agent" and "forbidden" not in t["tags"])
        for event in report["events"]:
            if event.get("detected_by") != "meaning_model":
                continue
            on_forbidden = any(t["start"] - 1 <= event["start"] <= t["end"] + 1 for t in forbidden_turns)
            mark = "" if on_forbidden else "FALSE ALARM "
            print(f"  {labels_path.stem}: {mark}{event['category']} p={event['model_probability']} "
                  f"{'review' if event['held_for_review'] else 'deduct'}: {event['heard']}")
            if not on_forbidden:
                review += event["held_for_review"]
                deducted += not event["held_for_review"]
    print(f"sample calls: {sentences} ordinary agent turns; meaning-model false alarms {deducted} deducted, "
          f"{review} for review ({100 * (deducted + review) / max(1, sentences):.1f} per 100)")


def speed() -> None:
    model = bundled_model()
    texts = [line.strip() for line in (ROOT / "bench" / "data" / "ordinary_agent_lines.txt").read_text(
        encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    started = time.perf_counter()
    for text in texts:
        model.judge([text])
    one = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    model.judge(texts * 10)
    batched = 10 * len(texts) / (time.perf_counter() - started)
    print(f"speed: {one:.0f} sentences/s one at a time, {batched:.0f} batched "
          f"({len(model.classes)} classes, {model.weights.nnz} weights)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", action="store_true", help="also score the sample calls through the pipeline")
    parser.add_argument("--skip-held-out", action="store_true", help="skip the (minutes long) cross-validation")
    args = parser.parse_args()
    model = bundled_model()
    deduct, review = model.deduct_threshold, model.review_threshold
    print(f"bundled model: deduct ≥ {deduct}, review ≥ {review}, trained on {model.settings['training_lines']} lines")
    speed()
    never_trained(deduct, review)
    if not args.skip_held_out:
        held_out_lines(deduct, review)
    if args.calls:
        sample_calls()


if __name__ == "__main__":
    main()
