"""Role separation of a mono stream while it plays (``roles.LiveRoles`` in a ``LiveCall``).

r01 is a mono call with a TTS agent and a real human customer (corpus/real
thchs30 D4); h01 is a stereo TTS call whose customer says forbidden-like words
(你有没有搞错, 你问我我问谁, 这事不归我管), mixed down to mono here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor.asr import Segment
from monitor.audio import SAMPLE_RATE, load_call
from monitor.livecall import LiveCall
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.report import is_violation
from monitor.roles import LIVE_WINDOW_S, REVIEW_BELOW, LiveRoles, uncertain_or_unknown

DATA = Path(__file__).resolve().parent / "data" / "roles"
BLOCK = SAMPLE_RATE // 10


def _labels(name: str) -> dict:
    return json.loads((DATA / f"{name}.labels.json").read_text(encoding="utf-8"))


def _turn_at(labels: dict, t: float) -> dict:
    return min(labels["turns"], key=lambda turn: max(turn["start"] - t, t - turn["end"], 0.0))


def _commit_turns(name: str, speakers: tuple[str, ...] = ("agent", "customer")) -> tuple[LiveRoles, list[Segment], list[Segment], int]:
    """Feed a labelled call to ``LiveRoles`` in blocks, committing each labelled turn of
    ``speakers`` half a second after it ends: (roles, sentences as committed, relabelled ones, samples)."""
    labels = _labels(name)
    samples = load_call(str(DATA / f"{name}.flac"), "mono").agent
    roles = LiveRoles(matcher_for(load_phrasebook(labels["phrasebook"])))
    turns = [turn for turn in labels["turns"] if turn["speaker"] in speakers]
    committed, relabelled = [], []
    for at in range(0, len(samples), BLOCK):
        roles.feed(samples[at : at + BLOCK])
        fed_until = (at + BLOCK) / SAMPLE_RATE
        while turns and turns[0]["end"] + 0.5 <= fed_until:
            turn = turns.pop(0)
            segment, changed = roles.commit(Segment(turn["start"], turn["end"], turn["text"]))
            committed.append(segment)
            relabelled += changed
    return roles, committed, relabelled, len(samples)


def test_turns_are_uncertain_until_two_voices_are_heard_then_labelled_and_relabelled():
    roles, committed, relabelled, samples = _commit_turns("h01_customer_rude")
    assert committed[0].speaker_confidence is None, "one sentence cannot tell two voices apart"
    assert committed[-1].speaker_confidence is not None
    # Earlier sentences were announced again once the voices were told apart.
    assert any(s.start == committed[0].start and s.speaker_confidence is not None for s in relabelled)
    truth = [t["speaker"] for t in _labels("h01_customer_rude")["turns"]]
    assert [s.speaker for s in roles.sentences] == truth
    # A voice heard for under a second (the customer's 好吧) may be left for review.
    assert all(s.speaker_confidence >= REVIEW_BELOW for s in roles.sentences if s.end - s.start >= 1.0)
    # Only a window of audio is kept, however long the call.
    assert roles.audio.between(0.0, 1.0) is None or samples < LIVE_WINDOW_S * SAMPLE_RATE
    assert roles.audio._ring.nbytes == int(LIVE_WINDOW_S * SAMPLE_RATE) * 4


def test_voices_are_told_apart_live_by_their_turns_and_words_and_a_headset_stream_never_is():
    # r01's real customer reads news: nothing she says is a customer's (你们, a complaint), but
    # the two voices take turns and the agent's words fit one of them, so live the sentences
    # are named surely once that is heard (roles.LIVE_RELIABLE), and named right.
    roles, committed, _, _ = _commit_turns("r01_real_customer")
    truth = [t["speaker"] for t in _labels("r01_real_customer")["turns"]]
    sure = [(s.speaker, said_by) for s, said_by in zip(committed, truth) if not uncertain_or_unknown(s)]
    assert sure, "the voices were never told apart live"
    assert all(speaker == said_by for speaker, said_by in sure), sure
    assert [s.speaker for s in roles.label(roles.sentences)] == truth
    # The agent's turns alone (a headset stream): two clusters are found in one voice as
    # well, but they neither take turns nor split the agent's words, so they never count as
    # two speakers and no sentence of the agent's is named the customer's.
    for name in ("r01_real_customer", "h01_customer_rude"):
        _, agent_only, _, _ = _commit_turns(name, speakers=("agent",))
        assert all(s.speaker_confidence is None and s.speaker == "agent" for s in agent_only), name


def test_speech_that_tells_the_voices_apart_is_judged_before_its_commit_as_its_commit_judges_it():
    # h01's customer says 你问我，我问谁？… : committing it tells the two voices apart and names it
    # surely the customer's; judged while still provisional, it must be named so already, not left
    # to its words (which read like an agent's forbidden phrase) with the speaker unknown.
    labels = _labels("h01_customer_rude")
    samples = load_call(str(DATA / "h01_customer_rude.flac"), "mono").agent
    roles = LiveRoles(matcher_for(load_phrasebook(labels["phrasebook"])))
    turns, told_apart = list(labels["turns"]), []
    for at in range(0, len(samples), BLOCK):
        roles.feed(samples[at : at + BLOCK])
        while turns and turns[0]["end"] + 0.5 <= (at + BLOCK) / SAMPLE_RATE:
            turn = turns.pop(0)
            before = roles.named
            judged = roles.judge(turn["start"], turn["end"], turn["text"])
            committed, _ = roles.commit(Segment(turn["start"], turn["end"], turn["text"]))
            if before is None and roles.named is not None:
                told_apart.append((turn["speaker"], judged, committed))
    assert len(told_apart) == 1
    speaker, (judged_speaker, judged_confidence), committed = told_apart[0]
    assert speaker == committed.speaker == judged_speaker == "customer"
    assert judged_confidence >= REVIEW_BELOW and abs(judged_confidence - committed.speaker_confidence) < 0.05


class _Collect:
    def __init__(self):
        self.events: list[dict] = []

    def send(self, event: dict) -> None:
        self.events.append(event)


@pytest.fixture(scope="module")
def h01_live(transcriber):
    book = load_phrasebook("broadband")
    sink = _Collect()
    call = LiveCall("h01", book, matcher_for(book), [sink], stereo=False)
    samples = load_call(str(DATA / "h01_customer_rude.flac"), "mono").agent
    for at in range(0, len(samples), BLOCK):
        call.feed(samples[at : at + BLOCK, None])
        call.catch_up(transcriber)
    call.end()
    call.catch_up(transcriber)
    return sink.events, call.report()


def test_a_customers_forbidden_words_raise_no_sure_agent_alert_on_a_mono_stream(h01_live):
    events, report = h01_live
    labels = _labels("h01_customer_rude")
    alerts = [e for e in events if e["type"] == "alert"]
    for alert in alerts:
        turn = _turn_at(labels, (alert["start"] + alert["end"]) / 2)
        # Every alert on a customer's words says its speaker is uncertain, or names the customer.
        if turn["speaker"] == "customer":
            assert alert["uncertain_speaker"] or alert["speaker"] == "customer", alert
        assert alert["uncertain_speaker"] == (alert["speaker_confidence"] is None
                                              or alert["speaker_confidence"] < REVIEW_BELOW)
    customer_turns = [t for t in labels["turns"] if "customer_forbidden_like" in t["tags"]]
    # Once the voices are told apart, the customer's second outburst raises no alert at all.
    assert not any(customer_turns[-1]["start"] - 0.5 <= a["start"] <= customer_turns[-1]["end"] for a in alerts)
    assert any(e["type"] == "speakers" for e in events)


def test_a_live_mono_report_separates_roles_like_batch(h01_live):
    _, report = h01_live
    labels = _labels("h01_customer_rude")
    transcript = report["transcript"]
    wrong = [t for t in transcript if t["speaker"] != _turn_at(labels, (t["start"] + t["end"]) / 2)["speaker"]]
    # A voice heard for under a second (the customer's 好吧) may be put on either side, but only for review.
    assert all(t["speaker_confidence"] < REVIEW_BELOW and t["end"] - t["start"] < 1.0 for t in wrong), wrong
    assert all(t["speaker_confidence"] >= REVIEW_BELOW for t in transcript if t["end"] - t["start"] >= 1.0)
    assert not any(is_violation(e) for e in report["events"]), "the customer's words cost the agent nothing"


def test_an_uncommitted_sentence_judged_again_as_it_grows_is_described_once():
    """A phrase held for its role is judged at every look-ahead until its pause: the
    sentence's voice vector is reused while its description covers 3/4 of it, and made
    again for a sentence that grew past that, for another sentence, or for a shorter stretch."""
    labels = _labels("r01_real_customer")
    samples = load_call(str(DATA / "r01_real_customer.flac"), "mono").agent
    roles = LiveRoles(matcher_for(load_phrasebook(labels["phrasebook"])))
    turn = max(labels["turns"], key=lambda t: t["end"] - t["start"])
    for at in range(0, int((turn["end"] + 0.5) * SAMPLE_RATE), BLOCK):
        roles.feed(samples[at : at + BLOCK])
    start, length = turn["start"], turn["end"] - turn["start"]
    assert length > 2.0

    def judged(from_s: float, to_s: float):
        roles.judge(from_s, to_s, turn["text"])
        return roles._open[2]

    first = judged(start, start + 0.5 * length)
    assert first is not None
    assert judged(start + 0.05, start + 0.6 * length) is first, "a little more of the same sentence: the same vector"
    grown = judged(start, start + length)
    assert grown is not first and not np.array_equal(grown, first)
    shorter = judged(start, start + 0.7 * length)
    assert shorter is not grown, "never a longer stretch's vector"
    assert judged(start + 0.5, start + 0.7 * length) is not shorter, "another start is another stretch"
