"""The live second pass on real sample calls: refined text replaces the first pass's, alerts are revised."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.asr import Segment, Word
from monitor.livecall import LiveCall
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.sources import FileSource
from monitor.stream import DecodeScheduler, RefineOptions, StreamingOptions

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def transcriber():
    from monitor.asr import Transcriber

    return Transcriber()


@pytest.fixture(scope="module")
def broadband():
    phrasebook = load_phrasebook("broadband")
    return phrasebook, matcher_for(phrasebook)


class Events:
    """A sink that keeps every event, and may act on one as it passes (on the decoding thread)."""

    def __init__(self, on_event=None):
        self.events: list[dict] = []
        self.on_event = on_event

    def send(self, event: dict) -> None:
        self.events.append(event)
        if self.on_event:
            self.on_event(event)

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]


def lockstep(call: LiveCall, name: str, transcriber) -> LiveCall:
    for frames in FileSource(str(SAMPLES / f"{name}.wav")):
        call.feed(frames)
        call.catch_up(transcriber)
    call.end()
    call.catch_up(transcriber)
    assert call.done
    return call


def test_refined_text_replaces_the_first_pass_in_transcript_report_and_events(transcriber, broadband):
    phrasebook, matcher = broadband
    sink = Events()
    call = lockstep(LiveCall("d06", phrasebook, matcher, [sink], stereo=False), "d06_no_greeting_rude", transcriber)
    first_pass = [(e["start"], e["text"]) for e in sink.of("segment")]
    revised = sink.of("revised")
    assert revised and call.refinement["refined"] == len(revised) == call.refinement["groups"]
    # Every first-pass segment lies in a revised span and was replaced by that span's refined segments.
    assert all(any(r["start"] <= start < r["end"] for r in revised) for start, _ in first_pass)
    refined = [(s["start"], s["text"]) for r in revised for s in r["segments"]]
    assert [(round(s.start, 2), s.text) for s in call.segments] == sorted(refined)
    report = call.report()
    assert [line["text"] for line in report["transcript"]] == [text for _, text in sorted(refined)]
    assert report["live"]["refinement"]["not_refined"] == []
    # The refined text still holds both phrases the agent said, and no first-pass alert was withdrawn.
    alerts = report["live"]["alerts"]
    standing = [a for a in alerts if not a["retracted"]]
    assert {"你问我，我问谁？", "快下班了，明天再说。"} <= {a["canonical"] for a in standing}
    assert not sink.of("retracted") and all(a["pass"] in (1, 2) for a in alerts)
    # Every standing alert lies on words the report holds a forbidden event on (a live alert may name the
    # lexicon's rule that heard the words first, where the report names the code's own wording).
    events = [e for e in report["events"] if e["kind"] == "forbidden"]
    assert all(any(e["start"] < a["end"] and a["start"] < e["end"] for e in events) for a in standing)


def test_refinement_raises_the_alert_a_first_pass_missed_as_pass_2(transcriber, broadband):
    """With 1.5 s windows, the first pass cuts every sentence of d02 where two decodes
    agree (as it cuts long unbroken speech) and hears 刚才不是跟你你说能怎么要问; the
    second pass hears the sentence whole and raises its alert."""
    phrasebook, matcher = broadband
    sink = Events()
    options = StreamingOptions(max_window_s=1.5, tail_keep_s=0.3)
    call = lockstep(LiveCall("d02", phrasebook, matcher, [sink], stereo=False, options=options), "d02_fault_rude",
                    transcriber)
    first = {a["canonical"] for a in sink.of("alert") if a["pass"] == 1}
    second = [a for a in sink.of("alert") if a["pass"] == 2]
    assert "刚才不是跟你说了，怎么又问？" not in first
    assert "刚才不是跟你说了，怎么又问？" in {a["canonical"] for a in second}
    assert all(a["latency_s"] >= 0 and a["call_id"] == "d02" and a["kind"] == "forbidden" for a in second)
    live = call.report()["live"]["alerts"]
    assert {a["canonical"] for a in live if a["pass"] == 2} == {a["canonical"] for a in second}
    # Every alert of the code's phrases the agent's two rude sentences raised stands; only a word-group rule's
    # alert on a look-ahead's fragment (guard_pending) may have been withdrawn since.
    assert all(a["guard_pending"] for a in live if a["retracted"])
    assert len(sink.of("retracted")) == sum(a["retracted"] for a in live)


def test_a_first_pass_alert_the_refined_text_does_not_hear_again_stands(transcriber, broadband):
    """d01 (a polite installation call) is given a first-pass alert at its first agent
    sentence, as a mishearing would raise; the second pass hears the sentence otherwise.
    The alert stands (the second pass mishears noisy speech as often as the first:
    ``LiveCall._revise_alerts``), and the report's verdict is the refined text's."""
    phrasebook, matcher = broadband
    raised = []

    def mishear(event):
        if event["type"] == "segment" and not raised:
            words = [Word(event["start"], event["end"], "你问我，我问谁？")]
            hits = matcher.match_segments([Segment(event["start"], event["end"], words[0].text, event["speaker"], words)])
            raised.append(hits)
            call._alert([h for h in hits if h.kind == "forbidden"], [], commit=True)

    sink = Events(mishear)
    call = LiveCall("d01", phrasebook, matcher, [sink], stereo=False)
    lockstep(call, "d01_install_ok", transcriber)
    assert raised and sink.of("alert")
    assert sink.of("retracted") == []
    report = call.report()
    (alert,) = report["live"]["alerts"]
    assert alert["canonical"] == "你问我，我问谁？" and not alert["retracted"] and alert["pass"] == 1
    assert not [e for e in report["events"] if e["kind"] == "forbidden"]


def test_under_load_refinement_waits_and_is_skipped_and_the_report_says_so(transcriber, broadband):
    """Three calls fed at once on one decoder: first passes go first, and groups that
    waited longer than ``max_wait_s`` keep their first-pass text; alerts are all there."""
    phrasebook, matcher = broadband
    options = StreamingOptions(refine=RefineOptions(max_wait_s=0.5))
    scheduler = DecodeScheduler(transcriber)
    calls = []
    try:
        for name in ("d06_no_greeting_rude", "d02_fault_rude", "d03_gas_busy"):
            call = LiveCall(name, phrasebook, matcher, [], stereo=False, options=options)
            call.scheduler = scheduler
            scheduler.add(call)
            calls.append(call)
        for call in calls:  # faster than real time: the decoder is behind all along
            for frames in FileSource(str(SAMPLES / f"{call.call_id}.wav")):
                call.feed(frames)
            call.end()
        assert all(call.wait(120) for call in calls)
    finally:
        scheduler.close()
    skipped = [item for call in calls for item in call.report()["live"]["refinement"]["not_refined"]]
    assert skipped and all(item["reason"] == "the decoder was busy with first passes" for item in skipped)
    assert all(item["end"] > item["start"] for item in skipped)
    d06 = calls[0]
    assert "你问我，我问谁？" in {a["canonical"] for a in d06.alerts if a["pass"] == 1}
    for call in calls:
        summary = call.report()["live"]["refinement"]
        assert summary["groups"] == summary["refined"] + len(summary["not_refined"])


def test_dashboard_and_whisper_live_clients_show_the_refined_text_in_place_of_the_first(tmp_path, broadband):
    from monitor.ingest import WebSocketSink
    from monitor.store import open_store
    from monitor.web.live import Hub, LiveOptions

    phrasebook, matcher = broadband
    hub = Hub(open_store(str(tmp_path / "live.db")), LiveOptions())
    call = LiveCall("c1", phrasebook, matcher, [], stereo=True)
    hub.call_started(call)
    client = WebSocketSink("u1", websocket=None, loop=None)
    client.gone = True  # (no connection: what it would send is in .completed)
    first = [{"start": 0.5, "end": 1.5, "speaker": "agent", "text": "你好我是"},
             {"start": 1.6, "end": 2.5, "speaker": "agent", "text": "小账"},
             {"start": 1.0, "end": 2.0, "speaker": "customer", "text": "喂"}]
    revised = {"type": "revised", "call_id": "c1", "speaker": "agent", "start": 0.4, "end": 2.6,
               "segments": [{"start": 0.5, "end": 2.5, "speaker": "agent", "text": "您好，我是小赵。"}]}
    for event in [*({"type": "segment", "call_id": "c1", **s} for s in first), revised]:
        hub.send(event)
        client.send(event)
    (entry,) = hub.snapshot()
    assert [(line["speaker"], line["text"]) for line in entry["lines"]] == [("agent", "您好，我是小赵。"),
                                                                          ("customer", "喂")]
    assert [(s["text"], s["completed"]) for s in client.completed] == [("您好，我是小赵。", True), ("喂", True)]


def test_a_retraction_and_new_speakers_are_stored_and_reach_a_dashboard_opened_later(tmp_path, broadband):
    """The dashboard shows an alert withdrawn and a mono call's relabelled lines, also when it (re)connects
    after those events: the retraction is in the alerts table, the new speakers in the call's entry."""
    from monitor.store import open_store
    from monitor.web.app import _alert_json
    from monitor.web.live import Hub, LiveOptions

    phrasebook, matcher = broadband
    store = open_store(str(tmp_path / "live.db"))
    hub = Hub(store, LiveOptions())
    call = LiveCall("m1", phrasebook, matcher, [], stereo=False)
    hub.call_started(call)
    forbidden = next(p for p in phrasebook.phrases if p.kind == "forbidden")
    alert = {"type": "alert", "call_id": "m1", "kind": "forbidden", "phrase_id": forbidden.id,
             "canonical": forbidden.text, "heard": "你问我我问谁", "start": 3.25, "end": 4.5,
             "article": "第36条", "latency_s": 0.8, "speaker": "agent", "speaker_confidence": None,
             "uncertain_speaker": True, "pass": 1}
    lines = [{"start": 1.0, "end": 2.0, "speaker": "agent", "text": "您好"},
             {"start": 3.25, "end": 4.5, "speaker": "agent", "text": "你问我我问谁"}]
    for event in [*({"type": "segment", "call_id": "m1", **s} for s in lines), alert]:
        hub.send(event)
    (stored,) = [_alert_json(a) for a in store.alerts_after(0, call_id="m1")]
    assert stored["uncertain_speaker"] and stored["pass"] == 1 and stored["phrasebook"] == phrasebook.id
    assert not stored["retracted"]

    hub.send({"type": "speakers", "call_id": "m1", "segments": [
        {"start": 3.25, "end": 4.5, "text": "你问我我问谁", "speaker": "customer", "speaker_confidence": 0.9}]})
    hub.send({"type": "retracted", "call_id": "m1", "speaker": "agent", "phrase_id": forbidden.id,
              "canonical": forbidden.text, "start": 3.25, "end": 4.5, "heard_again": "您问的问题我来查"})
    (entry,) = hub.snapshot()
    assert [line["speaker"] for line in entry["lines"]] == ["agent", "customer"]
    (stored,) = [_alert_json(a) for a in store.alerts_after(0, call_id="m1")]
    assert stored["retracted"] and stored["retracted_heard"] == "您问的问题我来查" and stored["retracted_reason"] is None
    # A retraction of nothing stored (another call, another start) changes nothing.
    assert store.retract_alert({"call_id": "m1", "phrase_id": forbidden.id, "start": 9.0}) is None
    assert store.retract_alert({"call_id": "m2", "phrase_id": forbidden.id, "start": 3.25}) is None


def test_a_live_call_is_filed_under_when_it_began_not_when_it_ended(tmp_path, broadband):
    import datetime as dt

    from monitor.store import open_store
    from monitor.web.live import Hub, LiveOptions

    phrasebook, matcher = broadband
    store = open_store(str(tmp_path / "live.db"))
    hub = Hub(store, LiveOptions())
    call = LiveCall("long1", phrasebook, matcher, [], stereo=True)
    call.started_at -= dt.timedelta(minutes=30)  # as if it had been streaming for half an hour
    hub.call_started(call)
    for frames in FileSource(str(SAMPLES / "d03_gas_busy.wav")):
        call.feed(frames)
    call.end()
    hub.call_finished(call)
    row = store.call_row("long1")
    started, scored = (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for t in (row["started_at"], row["scored_at"]))
    assert abs(started - call.started_at) < dt.timedelta(seconds=1)
    assert scored - started > dt.timedelta(minutes=29)
