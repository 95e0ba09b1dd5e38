"""Forbidden events on mono calls: deducted, held for review (待复核), and why held ones are uncertain.

    PYTHONPATH=. python bench/role_causes.py [--cache DIR] [--verbose] DIR [DIR ...]

Each DIR is a set of labelled calls (``*.wav`` with ``*.labels.json``), scored as mono mixes
(stereo files mixed down) with roles separated, on Whisper's sentences (kept in ``--cache``
between runs, as ``bench/roles.py`` keeps them). Per set it prints:

- the forbidden events, by who said the words (the labelled turn at the event's middle:
  ``true`` when it is the agent's and overlaps an agent turn tagged forbidden, ±1 s;
  ``customer`` when it is the customer's; ``other`` for the agent's words not labelled
  forbidden) and what became of them: ``deducted``, ``held`` (待复核), or ``dropped`` (surely
  the customer's: no deduction, no review); ``lost``: the agent's forbidden turns whose words
  were heard but that no event stands for, put surely on the customer's side (a missed
  violation that the events alone do not show). ``customer deducted`` must stay 0; the customer's
  own 禁语-like lines (我哪知道, 你有没有搞错) should be surely the customer's, ``not raised``
  as events at all, not ``held``: each held one is a review item that is no violation;
- attribution: the share of transcript characters whose speaker is right;
- the customer's sentences' highest confidence as the agent (what ``REVIEW_BELOW`` must stay
  above for no customer's words to cost the agent), over all their sentences and over those
  holding a forbidden phrase.

Then, for every true event held for review, why its sentence's role is uncertain (a sentence
may have several causes):

- ``naming``: the voices are not surely named (which one is the agent, 0.1-0.9);
- ``reliability``: the voices are doubted as the call's two speakers (below 0.8);
- ``voices close``: the voices lie too close to be fully trusted (``TwoVoices.trust`` < 1);
- ``short``: the sentence is shorter than ``FULL_VOICE_S`` and counts for less acoustically;
- ``mixed turn``: a fifth or more of the sentence is the other speaker's labelled speech;
- ``wrong voice``: the sentence sounds like the voice named the customer;
- ``words against``: its own words lean to the customer (你们...).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.labelled import forbidden_agent_turns, overlaps  # noqa: E402
from bench.roles import attribution, cached_transcript, speaker_at  # noqa: E402
from monitor import roles  # noqa: E402
from monitor import voices as acoustic  # noqa: E402
from monitor.audio import load_call  # noqa: E402
from monitor.match import matcher_for  # noqa: E402
from monitor.phrasebook import load_phrasebook  # noqa: E402
from monitor.pipeline import report_for_segments  # noqa: E402
from monitor.report import is_violation  # noqa: E402

CAUSES = ("naming", "reliability", "voices close", "short", "mixed turn", "wrong voice", "words against")


class LazyTranscriber:
    """Whisper, loaded only when a transcript is not in the cache."""

    def __getattr__(self, name):
        from monitor.asr import Transcriber

        self.__dict__["_model"] = self.__dict__.get("_model") or Transcriber()
        return getattr(self.__dict__["_model"], name)


def other_share(sentence, turns: list[dict], speaker: str) -> float:
    """Share of the sentence's time that labelled turns of speakers other than ``speaker`` cover."""
    covered = sum(max(0.0, min(sentence.end, t["end"]) - max(sentence.start, t["start"]))
                  for t in turns if t["speaker"] != speaker)  # fmt: skip
    return covered / max(1e-6, sentence.end - sentence.start)


def causes_of(named: roles.NamedVoices, vector, seconds: float, text_score: float, other: float) -> list[str]:
    voices = named.voices
    found = []
    if voices is not None and 0.1 < named.voice1_is_agent < 0.9:
        found.append("naming")
    if named.reliability < 0.8:
        found.append("reliability")
    if voices is not None and voices.trust < 0.999:
        found.append("voices close")
    if seconds < roles.FULL_VOICE_S:
        found.append("short")
    if other > 0.2:
        found.append("mixed turn")
    if voices is not None and vector is not None:
        agent_side = voices.log_odds(vector) * (1 if named.voice1_is_agent >= 0.5 else -1)
        if agent_side < 0:
            found.append("wrong voice")
    if text_score < 0:
        found.append("words against")
    return found


def measure(path: str, transcriber, cache: Path | None, verbose: bool, tally: Counter, causes: Counter) -> None:
    labels = json.loads(Path(os.path.splitext(path)[0] + ".labels.json").read_text(encoding="utf-8"))
    call = load_call(path, "mono")
    phrasebook = load_phrasebook(labels.get("phrasebook", "broadband"))
    turns = labels["turns"]
    # separate_roles, step by step, to keep what explains each sentence's confidence
    segments = [s for s in cached_transcript(transcriber, call, path, cache) if s.text.strip()]
    recording = acoustic.Recording(call.agent)
    segments = acoustic.sentences_of(recording, segments)
    vectors = acoustic.sentence_voices(recording, segments)
    scores = roles.text_scores(segments, matcher_for(phrasebook))
    voices = roles.voices_of(segments, vectors)
    seconds = [s.end - s.start for s in segments]
    named = roles.name_voices(voices, vectors, scores, seconds)
    labelled = roles.label(segments, vectors, scores, voices)
    report = report_for_segments(labels["call_id"], path, None, call.duration_s, phrasebook, labelled, False, {})

    right, _, characters = attribution(labelled, turns, roles.REVIEW_BELOW)
    tally["characters"] += characters
    tally["right"] += right * characters
    for sentence in labelled:
        if sentence.speaker == "agent" and speaker_at(turns, (sentence.start + sentence.end) / 2) == "customer":
            tally["customer as agent"] = max(tally["customer as agent"], sentence.speaker_confidence)
    wanted = forbidden_agent_turns(labels)
    # The customer's own 禁语-like lines, found as if the agent said them (as match_by_role
    # first matches): those no event stands for were surely the customer's (not raised).
    forbidden = [e for e in report["events"] if e.get("kind") == "forbidden"]
    heard = [h for h in matcher_for(phrasebook).match_segments([replace(s, speaker="agent") for s in labelled])
             if h.kind == "forbidden"]  # fmt: skip
    for hit in heard:
        if speaker_at(turns, (hit.start + hit.end) / 2) == "customer" and not any(
                overlaps(e["start"], e["end"], {"start": hit.start, "end": hit.end}, 0.0) for e in forbidden):
            tally["customer not raised"] += 1
            if verbose:
                print(f"    customer not raised | {hit.heard}")
    # The agent's forbidden turns no event stands for, though the words were heard: put
    # surely on the customer's side (a sentence Whisper ran on from the customer's turn).
    for turn in wanted:
        if not any(overlaps(e["start"], e["end"], turn) for e in forbidden) and any(
                overlaps(h.start, h.end, turn, 0.0) for h in heard):
            tally["true lost to roles"] += 1
            if verbose:
                print(f"    true lost to roles | {turn['text']}")
    if verbose:
        separation = f"{voices.separation:.1f}" if voices else "-"
        print(f"  {labels['call_id']}: separation {separation}, voice 1 is the agent {named.voice1_is_agent:.2f},"
              f" reliability {named.reliability:.2f}, attribution {right:.2f}")  # fmt: skip
    for event in report["events"]:
        if event.get("kind") != "forbidden":
            continue
        who = speaker_at(turns, (event["start"] + event["end"]) / 2)
        true = who == "agent" and any(overlaps(event["start"], event["end"], t) for t in wanted)
        truth = "customer" if who == "customer" else ("true" if true else "other")
        fate = "deducted" if is_violation(event) else ("held" if event.get("uncertain_speaker") else "dropped")
        tally[f"{truth} {fate}"] += 1
        index = roles._most_overlapping_index(labelled, event["start"], event["end"])
        sentence = labelled[index]
        if truth == "customer" and sentence.speaker == "agent":
            tally["customer forbidden as agent"] = max(tally["customer forbidden as agent"], sentence.speaker_confidence)
        found = []
        if truth == "true" and fate == "held":
            other = other_share(sentence, turns, "agent")
            found = causes_of(named, vectors[index], seconds[index], scores[index], other)
            causes.update(found)
            causes["held"] += 1
        if verbose:
            print(f"    {truth:8s} {fate:8s} {sentence.speaker} {sentence.speaker_confidence:.3f}"
                  f" {seconds[index]:.1f}s {' '.join(found)} | {sentence.text[:30]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", help="directories of labelled calls")
    parser.add_argument("--cache", type=Path, help="keep Whisper's transcripts here between runs")
    parser.add_argument("--verbose", action="store_true", help="print every call and event")
    args = parser.parse_args()
    transcriber = LazyTranscriber()
    print(f"review below confidence {roles.REVIEW_BELOW}")
    print(f"{'set':28s} {'true deducted':>13s} {'held':>5s} {'dropped':>7s} {'lost':>4s} {'customer deducted':>17s}"
          f" {'held':>5s} {'not raised':>10s} {'other deducted':>14s} {'attribution':>11s}"
          f" {'customer as agent':>17s}")  # fmt: skip
    everything, all_causes = Counter(), Counter()
    for directory in args.sets:
        tally, causes = Counter(), Counter()
        if args.verbose:
            print(directory)
        for path in sorted(glob.glob(os.path.join(directory, "*.wav")) + glob.glob(os.path.join(directory, "*.flac"))):
            measure(path, transcriber, args.cache, args.verbose, tally, causes)
        print(f"{directory[-28:]:28s} {tally['true deducted']:13d} {tally['true held']:5d} {tally['true dropped']:7d} {tally['true lost to roles']:4d}"
              f" {tally['customer deducted']:17d} {tally['customer held']:5d} {tally['customer not raised']:10d}"
              f" {tally['other deducted']:14d}"
              f" {tally['right'] / max(1, tally['characters']):11.3f}"
              f" {tally['customer as agent']:8.3f} ({tally['customer forbidden as agent']:.3f})")  # fmt: skip
        for key in ("right", "characters"):
            everything[key] += tally.pop(key)
        for key, value in tally.items():
            everything[key] = max(everything[key], value) if key.startswith("customer") and "as agent" in key else (
                everything[key] + value)
        all_causes.update(causes)
    print(f"{'all':28s} {everything['true deducted']:13d} {everything['true held']:5d} {everything['true dropped']:7d} {everything['true lost to roles']:4d}"
          f" {everything['customer deducted']:17d} {everything['customer held']:5d} {everything['customer not raised']:10d}"
              f" {everything['other deducted']:14d}"
          f" {everything['right'] / max(1, everything['characters']):11.3f}"
          f" {everything['customer as agent']:8.3f} ({everything['customer forbidden as agent']:.3f})")  # fmt: skip
    print("(customer as agent: the customer's highest confidence as the agent, all sentences (those with a forbidden"
          " phrase))")
    print(f"why the {all_causes['held']} true events held for review are uncertain (a sentence may have several causes):")
    for cause in CAUSES:
        print(f"  {cause:14s} {all_causes[cause]}")


if __name__ == "__main__":
    main()
