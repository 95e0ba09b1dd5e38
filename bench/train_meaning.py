"""Train the meaning model (``monitor/meaning.py``) and choose its thresholds on held-out lines.

Labelled lines, all with 您 read as 你 (``monitor.meaning.model_text``):

- tests/meaning_cases.yaml: ``expect: <kind>`` (or a lexicon phrase id of a kind) is that
  kind; ``absent_kind: forbidden`` (polite near misses, everyday and ordinary talk) is ``none``;
  expectations of a code's own phrases of other categories (rude, vague...) are left out;
- tests/meaning_blind_cases.yaml: the fourteen blind batches, the same way;
- tests/compliance_cases.yaml and the sealed office batches 1–4 (bench/data/office/sealed/): the
  office, hospital and compliance kinds (bribery, private deals, over-promising, refusing contact
  details, refusing outright, disclosure) and their polite near misses, the same way; a line the
  customer says (``speaker: customer``) is left out: the model judges only the agent's;
- bench/data/ordinary_agent_lines.txt: ordinary agent talk, ``none``;
- the bundled codes' own non-forbidden phrases (greetings, apologies...), ``none``.

The sample calls' agent turns (samples/) are NOT trained on: they are the held-out
ordinary talk of bench/kind_classifier.py. Nor is sealed batch 5 (``HELD_OUT``) nor any call
script: they judge the model.

Thresholds are chosen on out-of-fold probabilities: each blind batch and each sealed office
batch held out in turn (the model trained on everything else), and the ordinary lines split into as many folds
alongside. ``deduct_threshold`` is the lowest probability at which the held-out hits are
at least ``DEDUCT_PRECISION`` precise and at most ``DEDUCT_ORDINARY_RATE`` of ordinary lines
fire; ``review_threshold`` the lowest at which they are at least ``REVIEW_PRECISION``
precise and at most ``REVIEW_ORDINARY_RATE`` of ordinary lines fire. Both go into the
model file.

Run 2026-11-28 (2609 lines, C=30, about 3 minutes on the shared machine): deduct 0.83 (held-out
recall 374/697, precision 0.992 counting ordinary lines, 1/371 ordinary lines fire), review 0.61
(537/697, precision 0.971, 11/371 ordinary); bench/kind_classifier.py has the rest.

Run 2026-11-28, s20, with the compliance kinds (3050 lines, 13 classes, C=30; 6.5 CPU minutes, 29 min
on the loaded machine): deduct 0.83 (held-out recall 441/832, precision 0.991 counting ordinary lines,
3/746 polite and 1/371 ordinary lines fire), review 0.57 (643/832, precision 0.970, 9/746 polite,
11/371 ordinary). Of the sealed office batches' compliance-kind lines, each batch held out in turn,
28/97 deduct and 42/97 reach review (kind right 26). Sealed batch 5, never trained on: 24/44 deduct,
29/44 review, no polite line of 34.

Run 2026-11-28, s20, second (3090 lines: 40 short replies added to the ordinary lines, since the model read
我知道了, 真的, 为什么 as forbidden; thresholds counted only over lines of at least ``MIN_CHARS``, as the monitor
judges no shorter sentence): deduct 0.80 (held-out recall 458/829, precision 0.991, 3/746 polite and 1/381
ordinary lines fire), review 0.50 (675/829, precision 0.967, 12/746 polite, 11/381 ordinary). (The thresholds
were computed from this run's ``--dump`` after adding that count to ``choose_thresholds`` and written into the
model's settings: the same function over the same out-of-fold probabilities, rounded to 4 decimals.) Sealed
batch 5, never trained on: the model alone 24/44 deducting, 34/44 reaching review, 1/34 polite at review.

Run 2026-11-28, s20, third (3539 lines: 448 more ordinary agent lines, scheduling, short closings and polite
limits, after 250 sealed ordinary lines showed the model deducting 那就周四吧; ``REVIEW_ORDINARY_RATE`` 0.015;
3 minutes on a quiet machine): deduct 0.70 (held-out recall 523/829, precision 0.983, 6/746 polite and 3/828
ordinary lines fire), review 0.51 (652/829, precision 0.967, 10/746 polite, 12/828 ordinary). Sealed ordinary
lines (bench/data/ordinary_sealed_lines.txt, never trained on): 1/249 deducts (4 without the monitor's
``meaning.DEDUCT_MIN_CHARS``), 9/249 reach review.

Run 2026-11-28, conduct3, fourth (4658 lines: 1094 of them the compliance lines, their near misses and the ordinary
lines again with homophones written in, ``HEARD_ALIKE_RATE``; ``--rounds 6`` on the loaded machine, 8 minutes): deduct
0.67 (held-out recall 516/829, precision 0.983, 5/746 polite and 4/828 ordinary lines fire), review 0.48 (646/829,
precision 0.966, 11/746 polite, 12/828 ordinary). Sealed ordinary lines: 1/249 deducts (the same line as before,
鞋套我自己带了 您不用忙活), 6/249 reach review (9 before). Sealed batch 5, rules or model: 37/44 deducting, 40/44
counting review (36 and 37 with the third model and the same rules), polite 1/36 deducting, 2/36 review.

Run 2026-11-28, lead, fifth (4671 lines: the verdict helper's 17 new cases in tests/meaning_cases.yaml merged with
the fourth run's data; ``--rounds 6``, 2.5 minutes on a loaded machine): deduct 0.68 (held-out recall 509/829,
precision 0.983, 5/746 polite and 4/828 ordinary lines fire), review 0.49 (635/829, precision 0.968). Sealed
ordinary lines: 1/249 deducts (the same 鞋套 line), 6/249 reach review.

Run 2026-11-28, conduct5, seventh (4803 lines: conduct5's 67 new cases in tests/compliance_cases.yaml, from dev6 and
Whisper's transcripts of calls1-5; ``--rounds 6``, 8 minutes on a loaded machine): deduct 0.64 (held-out recall
542/829, precision 0.982, 6/746 polite and 4/828 ordinary lines fire), review 0.46 (658/829, precision 0.963, 13/746
polite, 12/828 ordinary). Sealed ordinary lines, as the monitor judges them (rules first, ``MIN_CHARS``,
``DEDUCT_MIN_CHARS``): 0/250 deduct (the 鞋套 line falls to review), 8/250 reach review (6 before: 您喝点什么 我给您倒杯温水吧
at 0.47 and 那就周四吧 at 0.49 are new, under the lower review threshold). A sixth run on the same data less the last
eight cases had chosen review 0.49 and put 6/250 to review.

Run 2026-11-28, conduct6, tenth (4974 lines: conduct6's 70 new cases in tests/compliance_cases.yaml and 29 in
tests/meaning_cases.yaml: accepted dinners, a sign to read alone, drugs through a rep, other bidders' prices, irony
whose blame is in its second sentence and its first half alone as praise, invitations turned down, a polite transfer;
``--rounds 6``, 6 minutes on a loaded machine): deduct 0.65 (held-out recall 558/829, precision 0.984, 5/746 polite
and 4/828 ordinary lines fire), review 0.48 (655/829, precision 0.966, 11/746 polite, 12/828 ordinary). Sealed
ordinary lines, judged alone: see phrasebooks/README.md (conduct6). The eighth and ninth runs (without the praise
halves and the invitations) read 您可真准时 alone at 0.60 and a patient's invitation, given to the agent by role
separation, as bribery at 0.49.

Run 2026-11-28, precision7 (5137 lines: 92 near misses and their twins in tests/meaning_cases.yaml, written before
the lexicon's help-after-refusal change, and 71 written after: offers to go along, numbers handed over, self-blame, jokes,
repeats for the customer; ``--rounds 6``, 7 minutes on a loaded machine): deduct 0.60 (held-out recall 582/829, precision
0.983, 6/746 polite and 4/828 ordinary lines fire), review 0.49 (646/829, precision 0.971, 8/746 polite, 11/828
ordinary). Runs with 3-13 fewer of these lines chose 0.61-0.63 and 0.47-0.49: the thresholds move by a hundredth
or two with each new case.

    python bench/train_meaning.py            # cross-validate, choose thresholds, write the model
    python bench/train_meaning.py --check    # only print the training data's sha256 and the model's
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pypinyin import lazy_pinyin
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.meaning import MIN_CHARS, MODEL_PATH, NONE, vectorizer  # noqa: E402
from monitor.normalize import normalize  # noqa: E402
from monitor.phrasebook import bundled_phrasebooks, load_phrasebook  # noqa: E402

KINDS = ("shirking", "scolding", "mocking", "swearing", "perfunctory", "rhetorical",
         "bribery", "private_deal", "over_promising", "refusing_contact", "refusing_outright", "disclosure")
"""The kinds the model tells apart (plus ``none``): the lexicon's six and the compliance part's six."""
TUNED = ROOT / "tests" / "meaning_cases.yaml"
BLIND = ROOT / "tests" / "meaning_blind_cases.yaml"
COMPLIANCE = ROOT / "tests" / "compliance_cases.yaml"
SEALED = ROOT / "bench" / "data" / "office" / "sealed"
SEALED_TRAINED = tuple(SEALED / f"batch{i}.yaml" for i in range(1, 5))
"""Sealed office batches trained on (each its own held-out fold when choosing thresholds)."""
HELD_OUT = SEALED / "batch5.yaml"
"""Never trained on: measured by bench/kind_classifier.py and bench/conduct_rules.py."""
ORDINARY = ROOT / "bench" / "data" / "ordinary_agent_lines.txt"
N_FEATURES = 2 ** 20
"""Hashed feature space; only the columns seen in training get weights, and only those are shipped."""
NGRAM_MAX = 3
C = 30.0
"""Inverse regularisation strength of the logistic regression (of 1, 3, 10, 30 and 100, the
best recall at a held-out precision of 0.95)."""
DEDUCT_PRECISION = 0.95
"""Held-out precision the deducting hits must reach (blind batches and ordinary talk pooled)."""
DEDUCT_ORDINARY_RATE = 0.005
"""At most this share of held-out ordinary agent sentences may deduct: a call has some fifty."""
HEARD_ALIKE_RATE = 0.2
"""Each training line is also trained on as Whisper might write it: this share of its characters
replaced by another character of the same toneless sound (购物卡我拿了 → 购物卡我拿乐, 意思意思 → 意思意死).
On noisy phone calls Whisper writes the key words of bribes and leaks as homophones (红包 → 哄包, 肝癌 →
干挨, 先收着 → 先收证), and the model, reading characters, saw none of its words. Ordinary and polite
lines get the same treatment, so that odd characters alone say nothing."""
HEARD_ALIKE_SEED = 14
REVIEW_PRECISION = 0.90
REVIEW_ORDINARY_RATE = 0.015
"""At most this share of ordinary sentences may be listed for review (under one a call). At 0.03 the
threshold fell to 0.35, and 15 of 249 sealed ordinary lines (bench/data/ordinary_sealed_lines.txt, never
trained on) went to review: the sealed lines fire about twice as often as the ordinary folds do."""


@dataclass
class Line:
    text: str
    label: str
    """A kind of ``KINDS`` or ``none``."""
    fold: str
    """The held-out unit: a blind batch (``blind7``), ``ordinary<k>``, or ``train`` (always trained on)."""
    heard_alike: bool = False
    """A copy of another line with homophones written in (``heard_alike``): trained on with its
    line's fold, never counted among the held-out lines that choose the thresholds."""


def batch_of(case: dict) -> str:
    return case["type"].split("/")[0]


def kind_of(case: dict) -> str | None:
    """The case's label: a kind, ``none``, or None when it names no kind of the model."""
    expect = case.get("expect")
    if expect is None:
        return NONE if case.get("absent_kind") == "forbidden" else None
    if expect in KINDS:
        return expect
    if expect.startswith("lexicon.") and expect.split(".")[1] in KINDS:
        return expect.split(".")[1]
    return None  # a code's own phrase of another category (rude, vague, commanding)


def ordinary_lines() -> list[str]:
    return [line.strip() for line in ORDINARY.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def agents(path: Path) -> list[dict]:
    """A case file's lines the agent says."""
    return [c for c in yaml.safe_load(path.read_text(encoding="utf-8")) if c.get("speaker", "agent") == "agent"]


def labelled_lines() -> list[Line]:
    tuned = yaml.safe_load(TUNED.read_text(encoding="utf-8"))
    blind = yaml.safe_load(BLIND.read_text(encoding="utf-8"))
    lines: list[Line] = []
    ordinary = [c["text"] for c in tuned if c["type"] == "ordinary"] + ordinary_lines()
    lines += [Line(c["text"], label, "train") for c in tuned if c["type"] != "ordinary" and (label := kind_of(c))]
    lines += [Line(c["text"], label, batch_of(c)) for c in blind if (label := kind_of(c))]
    first_compliance = len(lines)
    lines += [Line(c["text"], label, "train") for c in agents(COMPLIANCE) if (label := kind_of(c))]
    lines += [Line(c["text"], label, f"sealed{path.stem.removeprefix('batch')}")
              for path in SEALED_TRAINED for c in agents(path) if (label := kind_of(c))]
    folds = len({line.fold for line in lines if line.fold != "train"})
    lines += [Line(text, NONE, f"ordinary{i % folds}") for i, text in enumerate(ordinary)]
    # Homophones where Whisper's mishearings cost most, on the compliance kinds' key words (the lexicon's kinds are
    # mostly whole phrases of common words): their lines, their polite near misses and ordinary talk.
    alike = heard_alike(lines[first_compliance:])
    for name in bundled_phrasebooks():
        lines += [Line(p.text.replace("**", ""), NONE, "train")
                  for p in load_phrasebook(name).phrases if p.kind != "forbidden"]
    return lines + alike


def heard_alike(lines: list[Line]) -> list[Line]:
    """Each line again, with ``HEARD_ALIKE_RATE`` of its characters swapped for another of the same
    toneless sound, drawn from the characters of all the lines (seeded: the same copies each run)."""
    chars = sorted({c for line in lines for c in line.text if "\u4e00" <= c <= "\u9fff"})
    sound = dict(zip(chars, lazy_pinyin(chars)))
    alike: dict[str, list[str]] = {}
    for char in chars:
        alike.setdefault(sound[char], []).append(char)
    random = np.random.default_rng(HEARD_ALIKE_SEED)
    copies = []
    for line in lines:
        text = "".join(
            random.choice(others) if char in sound and random.random() < HEARD_ALIKE_RATE
            and (others := [o for o in alike[sound[char]] if o != char]) else char
            for char in line.text)
        if text != line.text:
            copies.append(Line(text, line.label, line.fold, heard_alike=True))
    return copies


def training_sha256(lines: list[Line]) -> str:
    """Of the lines and labels trained on, in order: the model file records it."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(f"{line.label}\t{line.text}\n".encode("utf-8"))
    return digest.hexdigest()


@dataclass
class Fitted:
    model: LogisticRegression
    columns: np.ndarray
    """The hashed feature columns the training lines use (the model sees only these: the
    others would get zero weight anyway, and leaving them out makes fitting fast)."""

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self.model.predict_proba(vectorizer(N_FEATURES, NGRAM_MAX).transform(texts)[:, self.columns])


def fit(lines: list[Line]) -> Fitted:
    x = vectorizer(N_FEATURES, NGRAM_MAX).transform([line.text for line in lines])
    columns = np.unique(x.indices)
    model = LogisticRegression(C=C, max_iter=2000).fit(x[:, columns], [line.label for line in lines])
    return Fitted(model, columns)


def out_of_fold(lines: list[Line], rounds: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Each held-out line's forbidden probability and predicted kind, from a model that never saw it:
    each batch held out in turn, or with ``rounds``, that many rounds each holding out every
    ``rounds``-th batch (fewer fits, each on less)."""
    probability = np.full(len(lines), np.nan)
    kinds = [""] * len(lines)
    blind_batches = sorted({l.fold for l in lines if l.fold.startswith(("blind", "sealed"))})
    folds = [f"ordinary{k}" for k in range(len(blind_batches))]
    rounds = rounds or len(blind_batches)
    for k in range(rounds):
        held_folds = set(blind_batches[k::rounds]) | set(folds[k::rounds])
        held = [i for i, l in enumerate(lines) if l.fold in held_folds]
        held_set = set(held)
        fitted = fit([l for i, l in enumerate(lines) if i not in held_set])
        model = fitted.model
        p = fitted.probabilities([lines[i].text for i in held])
        none = list(model.classes_).index(NONE)
        for row, i in enumerate(held):
            if lines[i].heard_alike:
                continue  # trained on with its fold, never judged as held out
            probability[i] = 1.0 - p[row, none]
            ranked = [(p[row, j], c) for j, c in enumerate(model.classes_) if c != NONE]
            kinds[i] = max(ranked)[1]
    return probability, kinds


def judged(lines: list[Line]) -> np.ndarray:
    """Which lines the monitor would judge at all: not those under ``MIN_CHARS`` (monitor.meaning)."""
    return np.array([len(normalize(line.text).text) >= MIN_CHARS for line in lines])


def choose_thresholds(lines: list[Line], probability: np.ndarray) -> tuple[float, float]:
    held = ~np.isnan(probability) & judged(lines)
    forbidden = np.array([l.label != NONE for l in lines]) & held
    ordinary = np.array([l.fold.startswith("ordinary") for l in lines]) & held
    deduct = review = None
    for t in np.round(np.arange(0.30, 0.991, 0.01), 2):
        fired = held & (probability >= t)
        precision = (fired & forbidden).sum() / max(1, fired.sum())
        ordinary_rate = (fired & ordinary).sum() / max(1, ordinary.sum())
        if review is None and precision >= REVIEW_PRECISION and ordinary_rate <= REVIEW_ORDINARY_RATE:
            review = float(t)
        if deduct is None and precision >= DEDUCT_PRECISION and ordinary_rate <= DEDUCT_ORDINARY_RATE:
            deduct = float(t)
    if deduct is None:
        raise SystemExit("no threshold reaches the deduct precision on held-out lines")
    return deduct, min(review if review is not None else deduct, deduct)


def held_out_figures(lines: list[Line], probability: np.ndarray, kinds: list[str], threshold: float) -> str:
    held = ~np.isnan(probability) & judged(lines)
    fired = held & (probability >= threshold)
    forbidden = np.array([l.label != NONE for l in lines]) & held
    ordinary = np.array([l.fold.startswith("ordinary") for l in lines]) & held
    polite = held & ~forbidden & ~ordinary
    found = (fired & forbidden).sum()
    right_kind = sum(1 for i in np.flatnonzero(fired & forbidden) if kinds[i] == lines[i].label)
    return (f"≥{threshold:.2f}: recall {found}/{forbidden.sum()} = {found / forbidden.sum():.3f}, "
            f"precision {found / max(1, fired.sum()):.3f}, polite fired {(fired & polite).sum()}/{polite.sum()}, "
            f"ordinary fired {(fired & ordinary).sum()}/{ordinary.sum()}, kind right {right_kind}/{found}")


def export(fitted: Fitted, path: Path, settings: dict) -> None:
    """The weights as plain arrays: the hashed columns training used, and their weights per class."""
    np.savez_compressed(
        path,
        classes=np.array(list(fitted.model.classes_), dtype=str),
        columns=fitted.columns.astype(np.int32),
        values=fitted.model.coef_.T.astype(np.float32),
        intercept=fitted.model.intercept_.astype(np.float32),
        settings=np.array(json.dumps(settings, ensure_ascii=False)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the training data's sha256 and the model's, and stop")
    parser.add_argument("--out", type=Path, default=MODEL_PATH)
    parser.add_argument("--C", type=float, default=C, help="inverse regularisation strength (to compare settings)")
    parser.add_argument("--dry-run", action="store_true", help="cross-validate only; write no model")
    parser.add_argument("--dump", type=Path, help="write the out-of-fold probabilities here (JSON lines)")
    parser.add_argument("--rounds", type=int, help="out-of-fold rounds, each holding out every N-th batch "
                        "(default: one round per batch; fewer to save time on a loaded machine)")
    args = parser.parse_args()
    globals()["C"] = args.C
    lines = labelled_lines()
    sha = training_sha256(lines)
    if args.check:
        from monitor.meaning import MeaningModel
        print(f"training data {sha}\nmodel trained on {MeaningModel.load(args.out).training_sha256}")
        return
    started = time.perf_counter()
    probability, kinds = out_of_fold(lines, args.rounds)
    deduct, review = choose_thresholds(lines, probability)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as out:
            for line, p, kind in zip(lines, probability, kinds):
                if not np.isnan(p):
                    out.write(json.dumps({"text": line.text, "label": line.label, "fold": line.fold,
                                          "probability": round(float(p), 4), "kind": kind}, ensure_ascii=False) + "\n")
    print(f"{len(lines)} lines; out-of-fold in {time.perf_counter() - started:.0f} s")
    print(f"deduct threshold {deduct}, review threshold {review}")
    for t in sorted({0.5, review, deduct, 0.9}):
        print("  " + held_out_figures(lines, probability, kinds, t))
    if args.dry_run:
        return
    export(fit(lines), args.out, {
        "n_features": N_FEATURES, "ngram_max": NGRAM_MAX, "C": C,
        "deduct_threshold": deduct, "review_threshold": review,
        "training_sha256": sha, "training_lines": len(lines),
        "trained_by": "bench/train_meaning.py", "sklearn": __import__("sklearn").__version__,
    })
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
