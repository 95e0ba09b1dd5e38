"""The streaming policy on real audio with the embedded model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitor.asr import Word
from monitor.audio import SAMPLE_RATE, load_call
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.stream import (
    Committed,
    GrowingSpeech,
    Hypothesis,
    PhraseWatch,
    StreamingOptions,
    UtteranceStream,
    agreed_prefix,
    without_repeated_head,
)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


@pytest.fixture(scope="module")
def transcriber():
    from monitor.asr import Transcriber

    return Transcriber()


@pytest.fixture(scope="module")
def broadband_watch_matcher():
    return matcher_for(load_phrasebook("broadband"))


def _words(*pieces: tuple[str, float, float]) -> list[Word]:
    return [Word(start, end, text) for text, start, end in pieces]


def test_agreed_prefix_is_the_shared_head_of_two_hypotheses():
    before = _words(("刚才", 0, 0.4), ("不是", 0.4, 0.8), ("跟你", 0.8, 1.1))
    after = _words(("刚才", 0, 0.4), ("不是", 0.4, 0.8), ("跟他", 0.8, 1.1), ("说了", 1.1, 1.4))
    assert [w.text for w in agreed_prefix(before, after)] == ["刚才", "不是"]
    assert agreed_prefix([], after) == []


def test_a_window_that_hears_the_end_of_the_last_commit_again_drops_it():
    said = _words(("你好,", 0.9, 1.2), ("我是", 1.4, 1.75))
    again = _words(("我是", 1.65, 1.9), ("家庭", 1.9, 2.3), ("宽带", 2.3, 2.6))
    assert [w.text for w in without_repeated_head(said, again)] == ["家庭", "宽带"]
    # Punctuation and word boundaries do not matter; a single repeated character stays.
    assert [w.text for w in without_repeated_head(said, _words(("是", 1.7, 1.8), ("的", 1.8, 2.0)))] == ["是", "的"]
    split = _words(("我", 1.65, 1.75), ("是。", 1.75, 1.9), ("家庭", 1.9, 2.3))
    assert [w.text for w in without_repeated_head(said, split)] == ["家庭"]
    # Said again much later, it is new speech.
    later = _words(("我是", 5.0, 5.3), ("小吴", 5.3, 5.7))
    assert without_repeated_head(said, later) == later
    assert without_repeated_head([], again) == again


def test_phrase_split_across_two_committed_pieces_is_found_once(broadband_watch_matcher):
    watch = PhraseWatch(broadband_watch_matcher)
    first = _words(("刚才", 14.6, 15.0), ("不是", 15.0, 15.4), ("跟你", 15.4, 15.7), ("说了,", 15.7, 16.0))
    second = _words(("怎么", 16.1, 16.4), ("又问?", 16.4, 16.9))
    assert watch.check(first, "agent", commit=True) == []
    hits = watch.check(second, "agent", commit=True)
    assert [h.phrase_id for h in hits] == ["bb.forbidden.asked_again"]
    assert hits[0].start == pytest.approx(14.6) and hits[0].end > 16.4  # spans both pieces
    # The same utterance decoded again (timestamps shifted a little) is not a new alert.
    again = _words(("刚才不是跟你说了,", 14.55, 16.0), ("怎么又问?", 16.0, 17.0))
    assert watch.check(again, "agent", commit=True) == []


def test_hypothesis_hits_wait_until_the_phrase_is_clear_of_the_audio_end(broadband_watch_matcher):
    watch = PhraseWatch(broadband_watch_matcher)
    heard = _words(("不知道,这事不归我管。", 20.0, 22.2))
    assert watch.check(heard, "agent", commit=False, heard_until=21.5) == []
    assert [h.phrase_id for h in watch.check(heard, "agent", commit=False, heard_until=22.5)] == [
        "bb.forbidden.not_my_job"
    ]


def test_a_provisional_phrase_followed_by_more_words_is_heard_within_the_margin(broadband_watch_matcher):
    """The margin is for a last word the window may cut off: a phrase with a word
    decoded after it is whole, however close to the end of the audio it ends."""
    phrase = _words(("你们", 12.7, 13.1), ("必须", 13.1, 13.56))
    assert PhraseWatch(broadband_watch_matcher).check(phrase, "agent", commit=False, heard_until=13.5) == []
    followed = phrase + _words(("在", 13.56, 13.7))
    assert [h.phrase_id for h in PhraseWatch(broadband_watch_matcher).check(
        followed, "agent", commit=False, heard_until=13.5)] == ["bb.forbidden.you_must"]
    # One character is enough only when asked for one.
    strict = PhraseWatch(broadband_watch_matcher, followed_chars=2)
    assert strict.check(followed, "agent", commit=False, heard_until=13.5) == []


def test_provisional_rule_hits_wait_for_a_politeness_guard_that_may_follow(broadband_watch_matcher):
    shirk = _words(("这事", 3.0, 3.4), ("我真", 3.4, 3.8), ("管不了,", 3.8, 4.4))
    guard = _words(("但我", 4.6, 4.9), ("马上", 4.9, 5.2), ("帮您", 5.2, 5.5), ("转给", 5.5, 5.8), ("负责的同事处理。", 5.8, 6.9))
    # Provisional text ending on the rule's words: no alert yet, the guard may still come.
    watch = PhraseWatch(broadband_watch_matcher)
    assert watch.check(shirk, "agent", commit=False) == []
    # It came: nothing, provisional or committed.
    assert watch.check(shirk + guard, "agent", commit=False) == []
    assert watch.check(shirk + guard, "agent", commit=True) == []
    # Without a guard, the committed utterance alerts, and so does provisional text long enough after it.
    assert [h.method for h in PhraseWatch(broadband_watch_matcher).check(shirk, "agent", commit=True)] == ["rule"]
    rest = _words(("你自己", 4.6, 5.0), ("去找别人吧", 5.0, 5.8), ("我这边", 5.9, 6.3), ("真的没时间", 6.3, 7.0), ("处理这种事情了", 7.0, 8.0),
                  ("那就这样吧", 8.2, 8.9), ("说了也", 9.0, 9.4), ("没用", 9.4, 9.8))
    assert [h.method for h in PhraseWatch(broadband_watch_matcher).check(shirk + rest, "agent", commit=False)] == ["rule"]


def test_stream_commits_each_utterance_and_bounds_the_window(transcriber, broadband_watch_matcher):
    """d02 fed in 0.1 s blocks: every agent turn is committed, no decode window exceeds max_window_s."""
    options = StreamingOptions(max_window_s=4.0)  # shorter than d02's first turn (0.5-10.2 s, short pauses only)
    stream = UtteranceStream("agent", options)
    audio = load_call(str(SAMPLES / "d02_fault_rude.wav")).agent
    windows: list[float] = []
    original = stream._decode

    def measured(transcriber, samples):
        windows.append(len(samples) / SAMPLE_RATE)
        return original(transcriber, samples)

    stream._decode = measured
    events = []
    block = SAMPLE_RATE // 10
    for offset in range(0, len(audio), block):
        stream.feed(audio[offset : offset + block])
        if stream.has_work(1.0):  # every second of audio keeps the test short
            events += stream.step(transcriber)
    stream.end()
    while not stream.drained():
        events += stream.step(transcriber)

    committed = [e.segment for e in events if isinstance(e, Committed)]
    text = "".join(s.text for s in committed)
    assert "不归我管" in text and "什么时候能修好" in text
    assert all(a.end <= b.start + 0.05 for a, b in zip(committed, committed[1:])), "commits overlap"
    assert max(windows) <= options.max_window_s + 1e-6
    assert any(isinstance(e, Hypothesis) for e in events)
    assert stream.drained()
    watch = PhraseWatch(broadband_watch_matcher)
    found = {h.phrase_id for s in committed for h in watch.check(s.words, "agent", commit=True)}
    assert {"bb.forbidden.asked_again", "bb.forbidden.not_my_job"} <= found
    # Live reports measure coverage too: the speech the stream found is (almost) all covered by its commits.
    coverage = stream.coverage(committed)
    assert coverage.speech_s > 10 and coverage.share >= 0.9, coverage
    assert stream.coverage([]).share < 0.05


def test_stream_keeps_soft_onsets_and_one_word_utterances(transcriber):
    """d08 fed and looked at every 0.1 s, as a live call is.

    The greeting's 您好 is a short utterance of its own, and 故障 starts with a
    soft g that Silero detects late: both must reach the committed text.
    """
    stream = UtteranceStream("agent")
    audio = load_call(str(SAMPLES / "d08_phone_blame.wav")).agent[: 19 * SAMPLE_RATE]
    committed = []
    block = SAMPLE_RATE // 10
    for offset in range(0, len(audio), block):
        stream.feed(audio[offset : offset + block])
        committed += [e.segment for e in stream.step(transcriber) if isinstance(e, Committed)]
    stream.end()
    while not stream.drained():
        committed += [e.segment for e in stream.step(transcriber) if isinstance(e, Committed)]
    text = "".join(s.text for s in committed)
    assert "好" in committed[0].text and committed[0].start < 1.5, text  # 您好 / 你好
    assert "故障" in text.split("用不了")[-1], text  # the agent's turn at 13.4 s, not only the earlier 处理故障


def test_vad_of_a_growing_buffer_finds_what_a_fresh_vad_finds():
    """A stream's buffer grows by a block at a time and now and then loses its
    head; ``GrowingSpeech`` runs Silero only over what is new, yet finds the
    same spans, sample for sample, as Silero run over the whole buffer."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(threshold=0.5, min_silence_duration_ms=400, speech_pad_ms=100)
    audio = load_call(str(SAMPLES / "d02_fault_rude.wav")).agent[: 40 * SAMPLE_RATE]
    growing, start, end, found = GrowingSpeech(vad), 0, 0, 0
    rng = np.random.default_rng(0)
    while end < len(audio):
        end += int(rng.integers(1, SAMPLE_RATE // 4))  # blocks that end anywhere in a frame
        if rng.random() < 0.05:  # a commit or a silence dropped the buffer's head
            start = min(end, start + int(rng.integers(1, 3 * SAMPLE_RATE)))
            growing.restart()
        region = audio[start : min(end, start + 12 * SAMPLE_RATE)]
        expected = get_speech_timestamps(region, vad)
        assert growing.spans(region) == expected, (start, end)
        found += len(expected)
    assert found > 50  # (speech was there to find)


# --- several streams on one model: batched passes and load shedding -----------------------


def _utterances(call: str, count: int) -> list:
    """The first ``count`` agent turns of a sample call as (start, first-pass window), onset pad included."""
    import json

    labels = json.loads((SAMPLES / f"{call}.labels.json").read_text())
    audio = load_call(str(SAMPLES / f"{call}.wav")).agent
    turns = [t for t in labels["turns"] if t["speaker"] == "agent"][:count]
    return [(t["start"] - 0.4, audio[int((t["start"] - 0.4) * SAMPLE_RATE) : int((t["end"] + 0.2) * SAMPLE_RATE)])
            for t in turns]


def _first_pass(samples, prompt: str):
    from dataclasses import replace

    from monitor.stream import streaming_transcription_options

    return replace(streaming_transcription_options(), initial_prompt=prompt,
                   max_new_tokens=8 + int(12 * len(samples) / SAMPLE_RATE))


def test_windows_of_several_streams_share_a_pass_and_each_gets_its_own_words(transcriber):
    """Three streams' windows (two calls, different prompts) wait while the model is
    busy, then go as one pass: each stream hears its own utterance, at its own times,
    as it would alone."""
    import threading

    from rapidfuzz.distance import Levenshtein

    from monitor.text import spoken

    windows = _utterances("d02_fault_rude", 2) + _utterances("d06_no_greeting_rude", 1)
    prompts = ["您好，请问有什么可以帮您？", "好的，我看一下。", "喂？"]
    alone = [spoken("".join(s.text for s in transcriber.decode_window_alone(w, _first_pass(w, p), "agent", start)))
             for (start, w), p in zip(windows, prompts)]
    shared = transcriber.batched(max_batch=4)
    batcher = shared.batcher
    batcher.max_padding = 10.0  # any lengths: this test is about mapping, not cost
    heard: dict[int, list] = {}
    with batcher._cond:
        batcher._running = batcher.slots  # the model is busy: windows queue
    threads = [threading.Thread(target=lambda i=i: heard.__setitem__(
        i, shared.decode_window(windows[i][1], _first_pass(windows[i][1], prompts[i]), "agent", windows[i][0])))
        for i in range(3)]
    for thread in threads:
        thread.start()
    while len(batcher._waiting) < 3:
        threading.Event().wait(0.01)
    with batcher._cond:
        batcher._running = 0
        batcher._cond.notify_all()
    for thread in threads:
        thread.join(timeout=120)
    assert batcher.passes == 1 and batcher.windows == 3
    for i, (start, samples) in enumerate(windows):
        text = spoken("".join(s.text for s in heard[i]))
        assert text, f"window {i} heard nothing"
        # Its own utterance: close to what it hears alone, further from the others'.
        distances = [Levenshtein.normalized_distance(text, other) for other in alone]
        assert distances[i] <= 0.15 and distances[i] == min(distances), (text, alone)
        words = [w for s in heard[i] for w in s.words]
        assert all(start - 0.05 <= w.start and w.end <= start + len(samples) / SAMPLE_RATE + 0.3 for w in words)


def test_second_pass_windows_wait_for_first_pass_windows():
    from monitor.asr import TranscriptionOptions, Window, WindowBatcher

    batcher = WindowBatcher(transcriber=None, max_batch=4)
    second = Window(np.zeros(SAMPLE_RATE, np.float32), TranscriptionOptions(), "agent", 0.0)
    short = np.zeros(2 * SAMPLE_RATE, np.float32)
    firsts = [Window(short, _first_pass(short, p), "agent", 0.0) for p in ("你好", None, "好的")]
    long = np.zeros(12 * SAMPLE_RATE, np.float32)
    longer = Window(long, _first_pass(long, "嗯"), "agent", 0.0)
    batcher._waiting = [second, firsts[0], longer, firsts[1], firsts[2]]
    # The oldest first-pass window, with those that share its options (a prompt, like
    # its own) and whose padding to the longest stays small; the 12 s window would cost too much.
    assert batcher._take() == [firsts[0], firsts[2]]
    assert batcher._take() == [longer]
    assert batcher._take() == [firsts[1]]
    assert batcher._take() == [second]


def test_a_busy_scheduler_spaces_out_look_ahead_and_closes_up_when_idle():
    import time

    from monitor.stream import DecodeScheduler, LoadOptions

    class Call:  # a call with nothing to decode
        streams = [UtteranceStream("agent")]

        def backlog_s(self) -> float:
            return 0.0

        def refine_due(self) -> bool:
            return False

    scheduler = DecodeScheduler(transcriber=None, load=LoadOptions(every_s=1.0))
    try:
        scheduler.add(Call())
        with scheduler._cond:
            scheduler._load_checked = time.monotonic() - 1.0
            scheduler._busy_s = 0.95  # busy 95% of the last second
            scheduler._pace_lookahead()
            assert scheduler.lookahead_scale == 1.5 and Call.streams[0].lookahead_scale == 1.5
            for _ in range(5):
                scheduler._load_checked, scheduler._busy_s = time.monotonic() - 1.0, 1.0
                scheduler._pace_lookahead()
            assert Call.streams[0].lookahead_scale == scheduler.load.max_scale
            scheduler._load_checked, scheduler._busy_s = time.monotonic() - 1.0, 0.7  # between the marks: stays
            scheduler._pace_lookahead()
            assert Call.streams[0].lookahead_scale == scheduler.load.max_scale
            for _ in range(6):
                scheduler._load_checked, scheduler._busy_s = time.monotonic() - 1.0, 0.1
                scheduler._pace_lookahead()
            assert Call.streams[0].lookahead_scale == 1.0
    finally:
        scheduler.close()


def test_a_second_pass_never_takes_the_last_free_worker():
    """Two workers: while one refines a call's group, the other stays free for
    first passes, and the next call's group waits for the first to finish."""
    import threading

    from monitor.stream import DecodeScheduler

    class Call:  # a call with a group to refine and nothing else to decode
        call_id = "call"

        def __init__(self):
            self.streams, self.refining, self.release = [], threading.Event(), threading.Event()

        def backlog_s(self) -> float:
            return 0.0

        def refine_due(self) -> bool:
            return not self.refining.is_set()

        def refine_waiting_since(self) -> float:
            return 0.0

        def refine(self, transcriber) -> None:
            self.refining.set()
            self.release.wait(timeout=30)

    scheduler = DecodeScheduler(transcriber=None, workers=2)
    calls = [Call(), Call()]
    try:
        for call in calls:
            scheduler.add(call)
        assert any(call.refining.wait(timeout=10) for call in calls)
        first = next(call for call in calls if call.refining.is_set())
        other = calls[1 - calls.index(first)]
        assert not other.refining.wait(timeout=0.5)  # the free worker did not take it
        first.release.set()
        assert other.refining.wait(timeout=10)  # the same worker, once free again, did
        other.release.set()
    finally:
        for call in calls:
            call.release.set()
        scheduler.close()


def test_trailing_silence_is_measured_on_the_last_vad_frames_only():
    from faster_whisper.vad import VadOptions

    from monitor.stream import GrowingSpeech

    vad = GrowingSpeech(VadOptions(threshold=0.5))
    audio = load_call(str(SAMPLES / "d02_fault_rude.wav")).agent
    speech = audio[int(20.3 * SAMPLE_RATE) : int(21.5 * SAMPLE_RATE)]  # 不知道，这事不归我管: mid-sentence
    vad.spans(speech)
    assert vad.trailing_silence_s(0.2) < 0.1
    vad.spans(np.concatenate([speech, np.zeros(SAMPLE_RATE // 2, np.float32)]))  # the buffer grew
    assert 0.2 <= vad.trailing_silence_s(0.2) <= 0.25, "looked for within 0.2 s (whole frames)"
    assert 0.4 <= vad.trailing_silence_s(1.0) <= 0.55
    vad.spans(np.zeros(300, np.float32))  # a new, shorter buffer: not a whole frame
    assert vad.trailing_silence_s(0.2) == 0.0


def _until_commit_of(transcriber, phrase: str, start: float, scale: float = 1.0, pending: bool = False):
    """d02's agent channel from ``start`` (stream times count from there), stepped every
    0.1 s until ``phrase`` is committed: (fed when first in a hypothesis, fed at its commit,
    fed at each decode, whether the last hypothesis was decoded at a pause). ``pending``:
    every hypothesis leaves a phrase to report (as ``LiveCall`` says when the watch does)."""
    stream = UtteranceStream("agent")
    stream.lookahead_scale = scale
    audio = load_call(str(SAMPLES / "d02_fault_rude.wav")).agent[int(start * SAMPLE_RATE) :]
    decodes: list[float] = []
    original = stream._decode

    def counted(transcriber, samples):
        decodes.append(stream.fed_until)
        return original(transcriber, samples)

    stream._decode = counted
    heard = at_pause = None
    block = SAMPLE_RATE // 10
    for offset in range(0, len(audio), block):
        stream.feed(audio[offset : offset + block])
        for event in stream.step(transcriber):
            if isinstance(event, Hypothesis):
                at_pause = event.at_pause
                stream.phrase_pending = pending
                if heard is None and phrase in "".join(w.text for w in event.words):
                    heard = stream.fed_until
            elif phrase in event.segment.text:
                return heard, stream.fed_until, decodes, at_pause
    raise AssertionError(f"{phrase} never committed")


def test_a_phrase_that_ends_a_sentence_is_heard_at_the_pause_onset_and_its_commit_reuses_the_decode(transcriber):
    """d02's agent says 不知道，这事不归我管。 (20.17-22.17 s, then silence): a look-ahead
    starts once the speaker has been silent ``pause_lookahead_s``, not when the
    pause ends the utterance, and the commit that follows decodes nothing again."""
    start = 19.8  # the silence before the turn
    turn_end = 22.165 - start
    heard, committed, decodes, at_pause = _until_commit_of(transcriber, "归我管", start)
    assert heard is not None and heard <= turn_end + 0.45, (heard, decodes)
    assert heard < committed <= turn_end + 0.6, (heard, committed)
    # The last decode came off the cadence, at the pause's onset, and the commit reused it.
    assert decodes[-1] - decodes[-2] < StreamingOptions().partial_every_s - 1e-6, decodes
    assert decodes[-1] < committed - 1e-6, (decodes, committed)
    assert at_pause, "the hypothesis says it was decoded at a pause"
    assert sum(d > turn_end for d in decodes) == 1, ("the pause is decoded once, heard whole", decodes)
    # A loaded node (look-ahead spaced 2x) sheds the decode at the pause first.
    _, _, loaded, _ = _until_commit_of(transcriber, "归我管", start, scale=2.0)
    assert all(b - a >= 2 * StreamingOptions().partial_every_s - 1e-6 for a, b in zip(loaded, loaded[1:-1])), loaded


def test_a_look_ahead_that_left_a_phrase_unreported_is_followed_sooner_and_sheds_under_load(transcriber):
    """After a hypothesis whose phrase could not be reported yet (``phrase_pending``), the
    next look-ahead comes ``recheck_every_s`` later, not ``partial_every_s``; spaced by the
    load factor like the rest."""
    options = StreamingOptions()
    assert options.recheck_every_s < options.partial_every_s
    _, _, usual, _ = _until_commit_of(transcriber, "归我管", 19.8)
    _, committed, sooner, _ = _until_commit_of(transcriber, "归我管", 19.8, pending=True)
    gaps = [b - a for a, b in zip(sooner, sooner[1:])]
    assert min(gaps) < options.partial_every_s - 1e-6 <= min(b - a for a, b in zip(usual, usual[1:-1])), (usual, sooner)
    assert all(gap >= options.recheck_every_s - 1e-6 for gap in gaps[:-1]), sooner  # (the last: at the pause)
    assert committed <= 22.165 - 19.8 + 0.6
    _, _, loaded, _ = _until_commit_of(transcriber, "归我管", 19.8, scale=2.0, pending=True)
    assert all(b - a >= 2 * options.recheck_every_s - 1e-6 for a, b in zip(loaded, loaded[1:-1])), loaded


SHIRK = _words(("这事", 3.0, 3.4), ("我真", 3.4, 3.8), ("管不了,", 3.8, 4.4))


@pytest.mark.parametrize(("after", "commit_with_it", "withdrawn"), [
    # A polite continuation heard by a later look-ahead: the alert goes.
    (_words(("但我", 4.6, 4.9), ("马上", 4.9, 5.2), ("帮您", 5.2, 5.5), ("转给同事。", 5.5, 6.3)), False, True),
    # ... or only by the sentence's commit.
    (_words(("不过", 4.7, 5.0), ("我这边", 5.0, 5.4), ("帮您", 5.4, 5.7), ("登记一下。", 5.7, 6.4)), True, True),
    # No continuation: the alert stays.
    ([], True, False),
    # More words, none of them a guard: it stays.
    (_words(("你自己", 4.6, 5.0), ("去找物业吧。", 5.0, 5.9)), True, False),
    # The guard word beyond the rule's reach (its whole reach heard first): it stays.
    (_words(("你去找物业", 4.6, 5.6), ("或者居委会", 5.6, 6.6), ("问问他们吧,", 6.6, 7.6), ("这种事", 7.7, 8.1),
            ("一直都是", 8.1, 8.6), ("他们在管的,", 8.6, 9.4), ("下次", 9.5, 9.8), ("我帮您看看。", 9.8, 10.6)), False, False),
])
def test_a_guard_pending_hit_is_withdrawn_only_when_its_guard_follows(broadband_watch_matcher, after, commit_with_it,
                                                                      withdrawn):
    watch = PhraseWatch(broadband_watch_matcher, guard_wait_chars=0)
    hits = watch.check(SHIRK, "agent", commit=False)
    assert [h.phrase_id for h in hits] == ["lexicon.shirking.cannot_handle"] and watch.pending == hits
    if after:  # a look-ahead that heard more
        watch.check(SHIRK + after, "agent", commit=False)
    if commit_with_it and not watch.withdrawn:
        watch.check(SHIRK + after, "agent", commit=True)
    assert [h.phrase_id for h in watch.withdrawn] == (["lexicon.shirking.cannot_handle"] if withdrawn else [])
    assert (hits[0] in watch.reported) is not withdrawn
    # Whatever stays pending settles once the speaker pauses: a later sentence's guard cannot withdraw it.
    later = _words(("我帮您", 12.0, 12.6), ("看看。", 12.6, 13.0))
    watch.check(later, "agent", commit=False)
    assert watch.pending == [] and (hits[0] in watch.reported) is not withdrawn


def test_guard_wait_chars_holds_a_rule_hit_that_many_characters_first(broadband_watch_matcher):
    assert PhraseWatch(broadband_watch_matcher, guard_wait_chars=4).check(SHIRK, "agent", commit=False) == []
    more = SHIRK + _words(("那个线路", 4.6, 5.4))
    watch = PhraseWatch(broadband_watch_matcher, guard_wait_chars=4)
    assert [h.phrase_id for h in watch.check(more, "agent", commit=False)] == ["lexicon.shirking.cannot_handle"]
    assert watch.pending, "four characters are less than the rule's reach: its guard may still come"
    # The whole reach (None, the default) waits and never withdraws.
    default = PhraseWatch(broadband_watch_matcher)
    assert default.check(more, "agent", commit=False) == [] and default.pending == []


def test_a_pending_hit_is_withdrawn_by_the_next_utterance_only_within_a_short_pause(broadband_watch_matcher):
    """这事我真管不了，(pause) 我帮您转过去: the commit does not end the guard's reach, a long pause does."""
    for pause_s, withdrawn, wait in ((0.6, True, None), (1.2, False, None), (0.6, True, 0), (1.2, False, 0)):
        watch = PhraseWatch(broadband_watch_matcher, guard_wait_chars=wait)
        alerted = watch.check(SHIRK, "agent", commit=False)  # (None: held while provisional, alerted at the commit)
        alerted += watch.check(SHIRK, "agent", commit=True)
        assert [h.phrase_id for h in alerted] == ["lexicon.shirking.cannot_handle"]
        assert watch.pending, "committed, its guard may still come in the next words"
        start = SHIRK[-1].end + pause_s
        watch.check(_words(("我帮您", start, start + 0.6), ("转过去。", start + 0.6, start + 1.2)), "agent", commit=False)
        assert bool(watch.withdrawn) is withdrawn and watch.pending == []


def test_a_pending_hit_its_committed_sentence_hears_otherwise_is_left_to_the_second_pass(broadband_watch_matcher):
    """A look-ahead heard 这事我真管不了; the sentence's commit heard other words there. No guard cancelled
    it: the first pass does not withdraw it on its own rehearing (the second pass judges it)."""
    watch = PhraseWatch(broadband_watch_matcher, guard_wait_chars=0)
    hits = watch.check(SHIRK, "agent", commit=False)
    misheard = _words(("这是", 3.0, 3.4), ("我真", 3.4, 3.8), ("馆布料。", 3.8, 4.4))
    watch.check(misheard, "agent", commit=False)
    watch.check(misheard, "agent", commit=True)
    assert watch.withdrawn == [] and hits[0] in watch.reported


def test_at_a_pause_the_words_of_a_decode_that_reached_the_end_of_speech_are_heard_without_decoding_again(transcriber):
    """d02's 不知道，这事不归我管。 fed from several offsets, so that the cadence's look-ahead lands
    at different points of it. Where the last look-ahead already reached the end of the speech,
    the pause's onset reports its words as heard at the pause (``Hypothesis.at_pause``, all of it
    heard) without decoding the same speech again; where it did not, the pause is decoded."""
    turn_end = 22.165
    reused = decoded = 0
    for tenth in range(7):
        start = 19.8 - tenth / 10
        stream = UtteranceStream("agent")
        audio = load_call(str(SAMPLES / "d02_fault_rude.wav")).agent[int(start * SAMPLE_RATE) :]
        decodes: list[float] = []
        original = stream._decode

        def counted(transcriber, samples, stream=stream, decodes=decodes, original=original):
            decodes.append(stream.fed_until)
            return original(transcriber, samples)

        stream._decode = counted
        last: list = []
        block = SAMPLE_RATE // 10
        for offset in range(0, len(audio), block):
            stream.feed(audio[offset : offset + block])
            before = len(decodes)
            events = list(stream.step(transcriber))
            if any(isinstance(e, Committed) and "归我管" in e.segment.text for e in events):
                break
            for event in [e for e in events if isinstance(e, Hypothesis)]:
                if event.at_pause and len(decodes) == before:
                    reused += 1
                    assert [w.text for w in event.words] == [w.text for w in last], "the last decode's words"
                    assert event.heard_until == event.audio_end, "all heard: the speaker has paused"
                    assert "归我管" in "".join(w.text for w in event.words)
                elif event.at_pause:
                    decoded += 1
                last = event.words
        assert decodes and all(d <= turn_end - start + StreamingOptions().pause_s + 0.3 for d in decodes)
    assert reused and decoded, (reused, decoded)


def test_prompt_chars_zero_prompts_with_batch_decodings_prompt_not_the_committed_text():
    """``StreamingOptions.prompt_chars`` 0: every window gets the transcription's own prompt
    (以下是普通话的句子。), not the whole committed text (a slice [-0:] is all of it)."""
    said = _words(("这事", 1.0, 1.4), ("我真", 1.4, 1.8), ("管不了。", 1.8, 2.4))
    for chars, prompt in ((0, StreamingOptions().transcription.initial_prompt), (4, "管不了。")):
        stream = UtteranceStream("agent", StreamingOptions(prompt_chars=chars))
        stream._commit(said, final=True)
        assert stream._decoding(SAMPLE_RATE).initial_prompt == prompt, chars
