"""Streaming policy: when to decode, what to commit, and when to alert.

The ASR backend (``asr.py``) turns a window of samples into words. This module
decides which window to hand it while audio is still arriving, in the manner of
whisper_streaming:

* Silero VAD (from faster-whisper) splits the incoming audio of one speaker into
  utterances. A pause of ``pause_s`` ends an utterance; it is committed as a
  final segment and its audio is dropped. When the last look-ahead decode
  (below) covered the whole utterance and nothing after it, its words are
  committed as they are; otherwise the utterance is decoded once more.
  Speech the words leave unheard (Whisper ended the window early) is decoded
  again on its own before the commit, as in batch decoding (``asr.py``).
* Each window is decoded with the speaker's last committed words as its
  prompt, and a head that repeats them is dropped, so a sentence split by a
  pause reads on rather than restarting.
* While an utterance is still going on, its audio is re-decoded every
  ``partial_every_s``, and once the speaker has been silent
  ``pause_lookahead_s`` (the pause that may end it has begun: the commit
  then reuses that decode). Phrases heard in that hypothesis more than
  ``stable_margin_s`` before the end of the audio, or followed by a word, or
  all of it at a pause, are reported at once, before the utterance ends. A
  look-ahead that heard a phrase it could not report yet (too near the end of
  the audio, or its speaker not known yet) is followed by the next one
  ``recheck_every_s`` later.
* Under load (the stream waited more than ``lookahead_max_lag_s`` for the
  decoder) there is no look-ahead, and all finished utterances in the window
  share one decode, so several calls on one model degrade in latency, not lag.
* The decode window never exceeds ``max_window_s``: an utterance longer than
  that is cut where two consecutive hypotheses agree (LocalAgreement-2), or, if
  they do not, before the last ``tail_keep_s`` seconds.

* Once the speaker has paused ``RefineOptions.group_pause_s`` (or the group
  reaches ``max_group_s``), the utterances finished since the last such pause
  form a group, kept with its audio in ``refine_jobs``: a second pass decodes it
  as batch decoding would (``refined_segments``), and its text replaces the
  first pass's (``livecall.LiveCall.refine``). The first pass stays the fast
  path for alerts; the second pass is the transcript.

``PhraseWatch`` matches committed words (plus the tail of the previous
committed piece, so a phrase split across two pieces is still found) and
reports each forbidden phrase once. ``DecodeScheduler`` shares one loaded model
between several calls, serving the stream whose audio has waited longest, and
spaces look-ahead decodes out while its decoders are nearly always busy.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from monitor.asr import Coverage, Segment, Transcriber, TranscriptionOptions, Word, segment_of, unheard_speech
from monitor.audio import SAMPLE_RATE
from monitor.text import spoken

log = logging.getLogger(__name__)


def streaming_transcription_options() -> TranscriptionOptions:
    """Decoding tuned for short, already endpointed windows.

    Temperature fallback is off: a window cut mid-word decodes "badly" by
    Whisper's measures, and re-decoding it up to five times hotter costs seconds
    for nothing. VAD already ran on the window. Greedy decoding measured as
    accurate as beam 5 on the sample calls at a third less time. The encoder
    sees the window and 3 s of padding, not 30 s, which makes a decode of a
    few seconds twice as fast (``bench/short_encoder.py``); with less padding,
    one-second look-ahead windows often decode to nothing.
    """
    return TranscriptionOptions(
        beam_size=1,
        encoder_padding_s=3.0,
        vad_filter=False,
        compression_ratio_threshold=None,
        log_prob_threshold=None,
        hallucination_silence_threshold=None,
    )


@dataclass
class StreamingOptions:
    """How one speaker's audio is endpointed and decoded while it arrives."""

    pause_s: float = 0.4
    """Silence that ends an utterance; the utterance is then decoded and committed."""
    partial_every_s: float = 0.7
    """New audio needed before an unfinished utterance is decoded again. (It was 0.6,
    compared without a tolerance: fed in blocks of 0.1 s, decodes often came 0.7 s
    or more apart. Compared exactly, 0.7 keeps about the decodes 0.6 cost.)"""
    recheck_every_s: float = 0.3
    """New audio needed before the next look-ahead when the last one heard a forbidden
    phrase that could not be reported yet (``UtteranceStream.phrase_pending``: it ended
    within ``stable_margin_s`` of the audio's end, or its speaker is not known yet):
    the few decodes near a phrase come sooner, the rest keep ``partial_every_s``.
    Scaled like it under load."""
    stable_margin_s: float = 0.2
    """Hypothesis words ending at least this long before the end of the audio
    are taken as heard: the phrase watch sees them before the pause."""
    pause_lookahead_s: float | None = 0.1
    """Silence after speech the last decode did not hear whole that starts a
    look-ahead at once, without waiting for ``partial_every_s``: a phrase that
    ends a sentence is heard this long after it, not when the pause ends the
    utterance (``pause_s`` later, plus a decode), and the commit that follows
    reuses the decode. Scaled like ``partial_every_s`` under load
    (``UtteranceStream.lookahead_scale``), and off from ``pause_lookahead_shed_scale``.
    0.1 s against 0.2 s: sentence-final phrases alerted 0.1-0.2 s sooner
    (bench/live_latency.py). None: look-ahead on the cadence alone."""
    pause_lookahead_shed_scale: float = 2.0
    """Look-ahead spacing from which there is no pause look-ahead: a loaded node
    sheds it first (short pauses within a sentence start it too)."""
    guard_wait_chars: int | None = 0
    """Characters a provisional rule hit waits for after it, when the rule's politeness
    guard (帮您, 马上…, ``phrasebook.Rule.unless``) may still follow and cancel it
    (这个不归我们管，不过我马上帮您联系…), before it alerts; at most the rule's own reach
    (``guard_reach``, up to 24 characters after a refusal). An alert raised before its whole reach was heard is
    ``guard_pending``, and is withdrawn (reason ``guarded``, ``PhraseWatch.withdrawn``) should
    the guard follow before that reach is heard or the speaker pauses 1 s. None: wait
    for the whole reach or the sentence's commit. 0 (alert when heard, withdraw if the
    guard follows) against None, in lockstep on 26 development calls (bench/live_latency.py):
    the first alert of each flagged forbidden turn came p50/p95 0.55/1.80 call seconds
    after its phrase against 0.86/3.34 (4 characters: 0.84/2.27), and 0.24 against 0.60 s
    (p95) after the turn's end; near misses alerted 4 against 3, each withdrawn within
    0.7-2.0 s of call time."""
    min_lookahead_s: float = 1.0
    """Unfinished speech shorter than this is not decoded: Whisper tends to loop
    on a fraction of a word, at the cost of a full decode."""
    lookahead_max_lag_s: float = 1.5
    """No look-ahead when the stream waited longer than this for the decoder:
    under load, decoding time goes to finishing utterances."""
    max_window_s: float = 12.0
    """Longest window ever decoded; bounds latency on long unbroken speech."""
    tail_keep_s: float = 2.0
    """When a long utterance must be cut and hypotheses disagree, the last
    seconds kept for the next window."""
    vad_threshold: float = 0.5
    """Silero speech probability above which a frame is speech."""
    speech_pad_s: float = 0.1
    """Audio kept after detected speech when cutting (Silero's own default,
    0.4 s, would delay every endpoint by as much)."""
    onset_pad_s: float = 0.4
    """Audio kept before detected speech. Silero finds a soft onset (the g of
    故障) up to 0.2 s late, depending on where its 32 ms frames fall; a window
    that starts after the onset hears 不仗 for 故障."""
    prompt_chars: int = 40
    """Characters of the speaker's committed text handed to Whisper as the
    preceding context of each window, as whisper_streaming does. A window that
    starts mid-sentence then continues the sentence, where the default prompt
    (以下是普通话的句子。) would leak in as 以下是. 0: batch decoding's prompt for every
    window; in lockstep on 5 noisy/phone mono calls (/tmp/heldout5) and 12 development
    calls, it flagged the same forbidden turns on the first pass (its text differed by a
    few characters either way; CER not measured; bench/live_latency.py). Nor did beam 3 for the decodes at a pause (pause
    look-ahead and commit; 1.08x the first pass's CPU), on 6 and 21 calls."""
    tokens_per_s: float = 12.0
    """Most tokens decoded per second of window (Mandarin speech is about 6, fast
    speech with punctuation about 8). A window cut mid-word can make Whisper loop until its token
    limit; this bounds what the loop costs."""
    min_utterance_s: float = 0.25
    """Speech shorter than this (a click, a breath) is dropped without decoding."""
    transcription: TranscriptionOptions = field(default_factory=streaming_transcription_options)
    """Decoding options handed to the backend."""
    refine: RefineOptions | None = field(default_factory=lambda: RefineOptions())
    """How finished utterances are decoded a second time, as batch decoding
    would; None: the first pass is final."""


@dataclass
class RefineOptions:
    """The second pass: finished utterances decoded again with batch decoding's context.

    The first pass decodes short windows greedily for fast alerts. Once the
    speaker has paused, the utterances since the last pause (a group of
    sentences) are decoded again as ``Transcriber.transcribe_covered`` decodes a
    recording: VAD windows of whole utterances, beam search, temperature
    fallback, batch decoding's prompt. The refined text replaces the first
    pass's. On 4 sample and 3 held-out calls (``bench/live_accuracy.py
    --designs``): CER 0.160 first pass, 0.121 refined, 0.144 batch; refining
    each utterance alone 0.142; a first pass over 20 s windows with 1 s pauses
    (LocalAgreement over longer windows) 0.228 at 3.5x the CPU.
    """

    group_pause_s: float = 1.0
    """Silence after the last finished utterance that closes the group and
    sends it to the second pass (the next utterance is then at least this far off)."""
    max_group_s: float = 14.0
    """Longest group; longer speech is refined in pieces (batch's window length)."""
    max_wait_s: float = 20.0
    """A group not refined this long after it closed (the decoder was busy with
    first passes) is left as the first pass heard it, and the report says so."""
    prompt_chars: int = 0
    """Characters of the speaker's preceding text given as the prompt instead of
    batch decoding's own. Off: on 4 sample and 3 held-out calls, 60 gave CER
    0.127 against 0.121 without (``bench/live_accuracy.py --designs``)."""
    transcription: TranscriptionOptions = field(default_factory=TranscriptionOptions)
    """Decoding options: batch decoding's (``asr.TranscriptionOptions`` defaults)."""


@dataclass
class RefineJob:
    """A closed group of one speaker's finished utterances, waiting for the second pass."""

    speaker: str
    """``agent`` or ``customer``."""
    start: float
    """Call time (s) of the first sample of ``samples``."""
    samples: np.ndarray
    """The group's audio, silences between its utterances included."""
    first_pass: list[Segment]
    """The committed segments the refined text replaces."""
    closed_at: float = field(default_factory=time.monotonic)
    """Wall time (monotonic) the group closed."""

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / SAMPLE_RATE


@dataclass
class Committed:
    """Words that will not change any more."""

    segment: Segment
    """The committed words, with their times in call seconds."""
    final: bool
    """True when a pause ended the utterance; False for a piece of a long one."""


@dataclass
class Hypothesis:
    """What an utterance still being spoken sounds like so far (may still change)."""

    words: list[Word]
    """All words decoded so far in the utterance."""
    speaker: str
    """``agent`` or ``customer``."""
    audio_end: float
    """Call time of the end of the audio decoded."""
    heard_until: float
    """Call time before which the text is taken as heard: the end of the audio
    less ``stable_margin_s`` (the last word may still be cut off), or all of it
    ``at_pause`` (the speaker has stopped: no word is being cut off)."""
    at_pause: bool = False
    """Decoded once the speaker had been silent ``StreamingOptions.pause_lookahead_s``
    (at the pause's onset, or on the cadence within the pause): what the
    utterance said so far is all heard."""


def agreed_prefix(previous: list[Word], current: list[Word]) -> list[Word]:
    """LocalAgreement-2: the leading words two consecutive hypotheses share."""
    count = 0
    for old, new in zip(previous, current):
        if old.text.strip() != new.text.strip():
            break
        count += 1
    return current[:count]


class GrowingSpeech:
    """Silero VAD over a buffer that grows at its end: the speech
    ``faster_whisper.vad.get_speech_timestamps`` finds in it, without running
    the network again over audio it has already seen.

    A stream looks at its buffer every 0.1 s, and the buffer holds a whole
    utterance (up to ``max_window_s``): run over all of it each time, Silero
    cost 0.028 CPU s per second of audio, 6% of a stream (``bench/capacity.py
    --profile``). Its network is causal: a 32 ms frame's speech probability
    depends on the frame, the 4 ms before it and the state its LSTM carried
    over from the frames before. So the probabilities of whole frames are kept
    with the state after the last of them, and only new frames, and the last
    partial one (padded with zeros, as ``get_speech_timestamps`` pads it), go
    through the network. ``restart`` when the buffer's start moves: the frames
    then start over, as a fresh call of ``get_speech_timestamps`` would. The
    spans are the same, sample for sample (``tests/test_stream.py``).
    """

    FRAME = 512
    """Samples per Silero frame at 16 kHz."""
    CONTEXT = 64
    """Samples of the previous frame each frame is given with."""

    def __init__(self, vad):
        if vad.max_speech_duration_s != float("inf"):
            raise ValueError("GrowingSpeech: speech of any length only (max_speech_duration_s = inf)")
        self.vad = vad
        """``faster_whisper.vad.VadOptions``."""
        self.restart()

    def restart(self) -> None:
        """The buffer now starts elsewhere: forget what was seen."""
        self._probabilities = np.zeros(0, np.float32)
        self._state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))

    def spans(self, audio: np.ndarray) -> list[dict]:
        """``get_speech_timestamps(audio, vad)`` for ``audio``, a buffer that
        holds, since the last ``restart``, what it held at the last call and more."""
        whole = len(audio) // self.FRAME
        seen = len(self._probabilities)
        if whole < seen:  # (not a grown buffer: start over)
            self.restart()
            seen = 0
        if whole > seen:
            new, self._state = self._run(audio[seen * self.FRAME : whole * self.FRAME], self._before(audio, seen), self._state)
            self._probabilities = np.concatenate([self._probabilities, new])
        last = np.zeros(self.FRAME, np.float32)  # the partial frame (or, as Silero pads, one of zeros)
        last[: len(audio) - whole * self.FRAME] = audio[whole * self.FRAME :]
        tail, _ = self._run(last, self._before(audio, whole), self._state)
        return speech_from_probabilities(np.concatenate([self._probabilities, tail]), len(audio), self.vad)

    def trailing_silence_s(self, within_s: float) -> float:
        """Seconds of silence (Silero below the negative threshold) that end the audio of
        the last ``spans``, to its last whole frame, looked for in the last ``within_s``
        only (past it, ``within_s``): the frames' kept probabilities, no network run."""
        count = min(len(self._probabilities), int(np.ceil(within_s * SAMPLE_RATE / self.FRAME)))
        if count < 1:
            return 0.0
        quiet = self._probabilities[len(self._probabilities) - count :] < negative_threshold(self.vad)
        silent = count if quiet.all() else count - 1 - int(np.flatnonzero(~quiet)[-1])
        return silent * self.FRAME / SAMPLE_RATE

    def _before(self, audio: np.ndarray, frame: int) -> np.ndarray:
        """The samples Silero is given before ``frame``: the end of the frame before, or zeros."""
        if not frame:
            return np.zeros(self.CONTEXT, np.float32)
        return audio[frame * self.FRAME - self.CONTEXT : frame * self.FRAME]

    def _run(self, samples: np.ndarray, before: np.ndarray, state) -> tuple[np.ndarray, tuple]:
        """Probabilities of the frames of ``samples``, which follow ``before`` and the LSTM ``state``."""
        from faster_whisper.vad import get_vad_model

        frames = samples.reshape(-1, self.FRAME)
        context = np.concatenate([before[np.newaxis], frames[:-1, -self.CONTEXT :]])
        probabilities, h, c = get_vad_model().session.run(
            None, {"input": np.concatenate([context, frames], axis=1), "h": state[0], "c": state[1]}
        )
        return probabilities.reshape(-1), (h, c)


def negative_threshold(vad) -> float:
    """The speech probability below which Silero's frame is silence (``get_speech_timestamps``'s rule)."""
    return vad.neg_threshold if vad.neg_threshold is not None else max(vad.threshold - 0.15, 0.01)


def speech_from_probabilities(probabilities: np.ndarray, samples: int, vad) -> list[dict]:
    """The speech spans (sample offsets) Silero's per-frame speech ``probabilities``
    mean for ``samples`` of audio: ``faster_whisper.vad.get_speech_timestamps``'s
    rules for speech of any length (``VadOptions.max_speech_duration_s`` inf), which
    that function only applies to probabilities it computes itself."""
    frame = GrowingSpeech.FRAME
    negative = negative_threshold(vad)
    min_silence = SAMPLE_RATE * vad.min_silence_duration_ms / 1000
    min_speech = SAMPLE_RATE * vad.min_speech_duration_ms / 1000
    pad = SAMPLE_RATE * vad.speech_pad_ms / 1000
    speeches, start, silent_from = [], None, 0
    for index, probability in enumerate(probabilities.tolist()):
        if probability >= vad.threshold:
            silent_from = 0
            if start is None:
                start = frame * index
        elif probability < negative and start is not None:
            silent_from = silent_from or frame * index
            if frame * index - silent_from >= min_silence:
                if silent_from - start > min_speech:
                    speeches.append({"start": start, "end": silent_from})
                start, silent_from = None, 0
    if start is not None and samples - start > min_speech:
        speeches.append({"start": start, "end": samples})
    for i, speech in enumerate(speeches):  # padding, split halfway where two spans are closer than twice the pad
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i + 1 < len(speeches):
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(samples, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(samples, speech["end"] + pad))
    return speeches


class UtteranceStream:
    """One speaker's audio, endpointed into utterances and decoded incrementally."""

    def __init__(self, speaker: str, options: StreamingOptions | None = None):
        from faster_whisper.vad import VadOptions

        self.speaker = speaker
        self.options = options or StreamingOptions()
        self._speech = GrowingSpeech(VadOptions(  # VAD of the buffer, kept while it grows
            threshold=self.options.vad_threshold,
            min_silence_duration_ms=int(self.options.pause_s * 1000),
            speech_pad_ms=int(self.options.speech_pad_s * 1000),
        ))
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._audio = np.zeros(0, dtype=np.float32)
        self.buffer_start = 0.0
        """Call time (s) of the first sample still buffered."""
        self.fed_until = 0.0
        """Call time (s) up to which audio has been fed."""
        self.checked_until = 0.0
        """Call time (s) up to which VAD has looked at the audio."""
        self._decoded_until = 0.0
        self._heard_until = 0.0  # what the last decode heard whole (``Hypothesis.heard_until``)
        self._previous: list[Word] = []
        self._hypothesis: tuple[list[Word], float] = ([], 0.0)  # last look-ahead, and the call time it decoded to
        self._reheard = False  # the last look-ahead was reported again, as heard whole at a pause
        self._said: list[Word] = []  # the last words committed: the next window's prompt
        self.ended = False
        self.speech: list[tuple[float, float]] = []
        """Call-time spans of the speech VAD found and the stream has decoded or given up."""
        self.speaking = False
        """The buffer holds speech not committed yet (an utterance is going on)."""
        self._group_open = False  # finished speech is waiting for the pause that closes its group
        self._group: list[np.ndarray] = []  # audio since the open group began
        self._group_start = 0.0  # its call time
        self._group_end = 0.0  # call time of the end of its last committed utterance
        self._group_segments: list[Segment] = []
        self.refine_jobs: list[RefineJob] = []
        """Closed groups waiting for the second pass (``LiveCall.refine`` takes them)."""
        self.phrase_pending = False
        """The last look-ahead heard a forbidden phrase not reported yet (the phrase
        watch's caller sets it): the next comes ``recheck_every_s`` after it."""
        self.lookahead_scale = 1.0
        """Look-ahead decodes are ``partial_every_s`` times this apart (and wait for
        ``pause_lookahead_s`` times this of silence): the ``DecodeScheduler`` raises
        it while its decoders are nearly always busy."""

    def feed(self, samples: np.ndarray) -> None:
        """Append 16 kHz mono float32 samples. Cheap; safe from any thread."""
        with self._lock:
            self._chunks.append(np.asarray(samples, dtype=np.float32))
            self.fed_until += len(samples) / SAMPLE_RATE

    def end(self) -> None:
        """No more audio: the rest is one last utterance."""
        with self._lock:
            self.ended = True

    def pending_s(self) -> float:
        """Fed audio not yet looked at, in seconds."""
        return self.fed_until - self.checked_until

    def has_work(self, check_every_s: float) -> bool:
        pending = self.pending_s()
        return (pending > 0 and pending >= check_every_s) or (self.ended and not self.drained())

    def drained(self) -> bool:
        """Ended, and every sample fed has been decoded or dropped."""
        with self._lock:
            return self.ended and not self._chunks and not len(self._audio)

    def _take_fed(self) -> bool:
        with self._lock:
            if self._chunks:
                self._audio = np.concatenate([self._audio, *self._chunks])
                self._chunks = []
            return self.ended

    def _drop(self, samples: int) -> None:
        if self._group_open:  # the open group keeps its audio, silences included
            self._group.append(self._audio[:samples])
        self._audio = self._audio[samples:]
        self.buffer_start += samples / SAMPLE_RATE
        if samples:
            self._speech.restart()

    # --- refinement groups -------------------------------------------------------
    def _into_group(self, cut: int) -> None:
        """The buffer up to ``cut`` (a sample offset) holds a finished piece of
        speech about to be committed and dropped: it joins the open group."""
        if not self.options.refine:
            return
        end = self._time(cut)
        if self._group_open and end - self._group_start > self.options.refine.max_group_s:
            self._close_group()
        if not self._group_open:
            self._group_open, self._group, self._group_start = True, [], self.buffer_start
        self._group_end = end

    def _close_group_after_pause(self, speech_from: float | None) -> None:
        """Close the open group once the speaker has been silent ``group_pause_s``
        after it (``speech_from``: call time the next speech begins, if any)."""
        if not self._group_open:
            return
        silent_until = self.checked_until if speech_from is None else speech_from
        if self.ended and speech_from is None or silent_until - self._group_end >= self.options.refine.group_pause_s:
            self._close_group()

    def _close_group(self) -> None:
        # (speech the first pass heard nothing in is refined too: the second pass may hear it)
        audio = np.concatenate(self._group) if self._group else np.zeros(0, np.float32)
        samples = audio[: round((self._group_end - self._group_start) * SAMPLE_RATE)]
        if len(samples):
            self.refine_jobs.append(RefineJob(self.speaker, self._group_start, samples, self._group_segments))
        self._group_open, self._group, self._group_segments = False, [], []

    def step(self, transcriber: Transcriber) -> Iterator[Committed | Hypothesis]:
        """Look at the audio fed since the last step; decode when the policy says so."""
        behind_s = self.fed_until - self.checked_until
        ended = self._take_fed()
        opts = self.options
        window = int(opts.max_window_s * SAMPLE_RATE)
        while len(self._audio):
            region = self._audio[:window]
            region_end = self.buffer_start + len(region) / SAMPLE_RATE
            self.checked_until = max(self.checked_until, region_end)
            speech = self._speech.spans(region)
            speech = [s for s in speech if s["end"] - s["start"] >= opts.min_utterance_s * SAMPLE_RATE]
            if not speech:
                # Keep a little silence: a word may be starting at the very end.
                self._drop(max(0, len(region) - int(opts.pause_s * SAMPLE_RATE)) if not ended else len(region))
                self._previous = []
                if ended or len(region) < window:
                    self.speaking = False
                    self._close_group_after_pause(None)
                    return
                continue
            pad = int(opts.speech_pad_s * SAMPLE_RATE)
            onset_pad = int(opts.onset_pad_s * SAMPLE_RATE)
            if speech[0]["start"] > onset_pad:
                lead = speech[0]["start"] - onset_pad
                self._drop(lead)
                speech = [{"start": s["start"] - lead, "end": s["end"] - lead} for s in speech]
                region = self._audio[:window]
                region_end = self.buffer_start + len(region) / SAMPLE_RATE
            finished = [s for i, s in enumerate(speech) if i + 1 < len(speech) or ended
                        or len(region) - s["end"] >= opts.pause_s * SAMPLE_RATE]
            # --- the commit rule -------------------------------------------------
            if finished:  # a pause ended the utterance: commit it whole
                # Behind real time, every finished utterance in the window shares one decode.
                utterances = finished if behind_s > opts.lookahead_max_lag_s else finished[:1]
                cut = min(len(region), utterances[-1]["end"] + pad)  # trailing silence decodes as hallucination
                following = speech[len(utterances)]["start"] if len(speech) > len(utterances) else None
                words = self._lookahead_heard(utterances[-1]["end"], following) or self._decode(
                    transcriber, self._audio[:cut]
                )
                words = self._with_unheard(transcriber, words, utterances, cut)
                bounds = [self.buffer_start + u["start"] / SAMPLE_RATE for u in utterances[1:]]
                bounds.append(self.buffer_start + cut / SAMPLE_RATE)
                self._note_speech(speech[: len(utterances)], cut)
                self._into_group(cut)
                self._drop(cut)
                self._previous, self._hypothesis, self.phrase_pending = [], ([], 0.0), False
                for utterance_end in bounds:
                    said, words = [w for w in words if w.start < utterance_end], [w for w in words if w.start >= utterance_end]
                    if said:
                        yield self._commit(said, final=True)
                continue
            if len(region) >= window:  # long speech without a pause: cut where hypotheses agree
                words = self._decode(transcriber, region)
                agreed = agreed_prefix(self._previous, words)
                if not agreed:
                    agreed = [w for w in words if w.end <= region_end - opts.tail_keep_s]
                if not agreed:  # nothing recognisable in a whole window: give it up
                    self._note_speech(speech, len(region) - int(opts.tail_keep_s * SAMPLE_RATE))
                    self._drop(len(region) - int(opts.tail_keep_s * SAMPLE_RATE))
                    self._previous = []
                    continue
                self._previous, self._hypothesis = words[len(agreed) :], ([], 0.0)
                # (at least a second goes, so odd timestamps cannot make this loop forever)
                cut = max(int((agreed[-1].end - self.buffer_start) * SAMPLE_RATE), SAMPLE_RATE)
                self._note_speech(speech, cut)
                self._into_group(cut)
                self._drop(cut)
                yield self._commit(agreed, final=False)
                continue
            every_s = (opts.recheck_every_s if self.phrase_pending else opts.partial_every_s) * self.lookahead_scale
            due = behind_s <= opts.lookahead_max_lag_s and len(region) >= opts.min_lookahead_s * SAMPLE_RATE
            silence = self._pause(region) if due else 0.0
            at_pause = silence > 0.0
            if due and region_end - self._decoded_until < every_s - 1e-6:  # off the cadence: only at a pause,
                due = at_pause and self._missed_before(region_end - silence)  # if the last decode missed speech before it
                if at_pause and not due and self._hypothesis[0] and not self._reheard:
                    # The last decode heard all the speech before the pause: its words are all heard, without a decode.
                    self._reheard, self._heard_until = True, region_end
                    yield Hypothesis(self._hypothesis[0], self.speaker, region_end, region_end, at_pause=True)
            if due:  # still speaking: look ahead
                self.phrase_pending = False
                words = self._decode(transcriber, region)
                self._hypothesis = (words, region_end)
                if at_pause:  # (the speaker has stopped: no word is being cut off)
                    self._heard_until = region_end
                if words:
                    yield Hypothesis(words, self.speaker, region_end, self._heard_until, at_pause)
            # ----------------------------------------------------------------------
            self.speaking = True
            self._close_group_after_pause(self._time(speech[0]["start"]))
            return
        if ended:  # the last utterance was committed and dropped
            self.speaking = False
            self._close_group_after_pause(None)

    def _missed_before(self, speech_end: float) -> bool:
        """Whether the last decode may have missed speech that ended at ``speech_end`` (call time,
        by VAD): it ended before it, and the end of its audio was not heard whole (``stable_margin_s``).
        A decode that reached the end of the speech, within a VAD frame, missed nothing: Silero finds
        the end of speech late if anything, and a word that had ended is not cut off. Its words are
        then reported again as heard at the pause, without decoding the same speech again: in
        lockstep on 28 development calls (``bench/live_latency.py``), 1701 -> 1640 windows decoded,
        and the decoding between the audio and the first alert of a flagged turn p50/p95 0.26/0.76 ->
        0.20/0.52 s (a phrase held for its speaker's role until the pause alerts at its onset)."""
        return self._heard_until < speech_end and speech_end > self._decoded_until + GrowingSpeech.FRAME / SAMPLE_RATE

    def _pause(self, region: np.ndarray) -> float:
        """How long the speaker has been silent, if at least ``pause_lookahead_s``
        (times ``lookahead_scale``: under load it waits longer, and from
        ``pause_lookahead_shed_scale``, or a scale that puts it past ``pause_s``, not at all); else 0."""
        if self.options.pause_lookahead_s is None:
            return 0.0
        wait = self.options.pause_lookahead_s * self.lookahead_scale
        if wait >= self.options.pause_s or self.lookahead_scale >= self.options.pause_lookahead_shed_scale:
            return 0.0
        # (looked for as far back as a pause lasts before its commit: where it began tells
        # whether the last decode heard the speech before it)
        silence = self._speech.trailing_silence_s(self.options.pause_s + self.options.stable_margin_s)
        return silence if silence >= wait else 0.0

    def _with_unheard(self, transcriber: Transcriber, words: list[Word], utterances: list[dict], cut: int) -> list[Word]:
        """``words`` and what decoding the utterances' speech without words on its own hears.

        Whisper may end a window early and skip the rest of it, as in batch
        decoding; an utterance without words is decoded again before it is committed.
        """
        speech = [(self._time(u["start"]), self._time(min(u["end"], cut))) for u in utterances]
        heard = [segment_of(words, self.speaker)] if words else []
        found = transcriber.decode_unheard(
            self._audio[:cut], self._decoding(cut), self.speaker, self.buffer_start, speech, heard
        )
        if not found:
            return words
        return sorted(words + [w for segment in found for w in segment.words], key=lambda w: w.start)

    def _time(self, sample: int) -> float:
        return self.buffer_start + sample / SAMPLE_RATE

    def _note_speech(self, speech: list[dict], until: int) -> None:
        """Record the VAD speech (sample offsets in the buffer) before ``until``, about to be dropped."""
        self.speech += [
            (self.buffer_start + s["start"] / SAMPLE_RATE, self.buffer_start + min(s["end"], until) / SAMPLE_RATE)
            for s in speech
            if s["start"] < until
        ]

    def coverage(self, segments: list[Segment]) -> Coverage:
        """How much of this speaker's speech so far the committed ``segments`` cover."""
        options = self.options.transcription
        mine = [s for s in segments if s.speaker == self.speaker]
        return Coverage(
            sum(end - start for start, end in self.speech),
            unheard_speech(self.speech, mine, options.word_reach_s, options.coverage_gap_s),
        )

    def _lookahead_heard(self, said_until: int, following: int | None) -> list[Word]:
        """The last look-ahead's words, if it decoded the buffer up to ``said_until``
        (a sample offset) and not into the ``following`` utterance."""
        words, decoded_until = self._hypothesis
        decoded = round((decoded_until - self.buffer_start) * SAMPLE_RATE)
        return words if said_until <= decoded and (following is None or decoded <= following) else []

    def _commit(self, words: list[Word], final: bool) -> Committed:
        self._said = (self._said + words)[-self.options.prompt_chars :]  # words: at least as many characters
        segment = segment_of(words, self.speaker)
        if self.options.refine:
            self._group_segments.append(segment)
        return Committed(segment, final)

    def _decoding(self, samples: int) -> TranscriptionOptions:
        """Options for a window of ``samples``: the speaker's last words as its prompt."""
        # A few tokens more than the window can hold: room for fast speech, not for a loop.
        max_tokens = 8 + int(self.options.tokens_per_s * samples / SAMPLE_RATE)
        said = "".join(w.text for w in self._said)[-self.options.prompt_chars :] if self.options.prompt_chars else ""
        return replace(
            self.options.transcription,
            max_new_tokens=max_tokens,
            initial_prompt=said or self.options.transcription.initial_prompt,
        )

    def _decode(self, transcriber: Transcriber, samples: np.ndarray) -> list[Word]:
        self._decoded_until = self.buffer_start + len(samples) / SAMPLE_RATE
        self._heard_until = self._decoded_until - self.options.stable_margin_s  # (the last word may be cut off)
        self._reheard = False
        started = time.perf_counter()
        segments = transcriber.decode_window(samples, self._decoding(len(samples)), self.speaker, self.buffer_start)
        words = [w for segment in segments for w in segment.words if w.text.strip()]
        words = without_repeated_head(self._said, words)
        log.debug(
            "%s: decoded %.1f-%.1fs in %.2fs, %.1fs fed: %s", self.speaker, self.buffer_start,
            self._decoded_until, time.perf_counter() - started, self.fed_until, "".join(w.text for w in words),
        )
        return words


def refined_segments(transcriber: Transcriber, job: RefineJob, options: RefineOptions, context: str) -> list[Segment]:
    """The second pass over a closed group: decoded as batch decoding decodes a
    recording (``Transcriber.transcribe_covered``); ``context`` is the speaker's
    preceding text, the prompt when ``options.prompt_chars`` asks for it."""
    prompt = context[-options.prompt_chars :] if options.prompt_chars else ""
    decoding = replace(options.transcription, initial_prompt=prompt or options.transcription.initial_prompt)
    segments, _coverage = transcriber.transcribe_covered(job.samples, decoding, job.speaker, job.start)
    return segments


def without_repeated_head(said: list[Word], words: list[Word], within_s: float = 1.0) -> list[Word]:
    """``words`` less a head that repeats the end of what was just committed.

    A window starts where the previous utterance was cut, and Whisper may hear
    its last syllables again, the more so with that text as its prompt
    (whisper_streaming drops such n-grams the same way). Only a head of two or
    more characters, starting within ``within_s`` of the committed end, goes.
    """
    if not said or not words or words[0].start > said[-1].end + within_s:
        return words
    said_text = spoken("".join(w.text for w in said))
    for count in range(len(words), 0, -1):  # the longest repeated head first
        head = spoken("".join(w.text for w in words[:count]))
        if len(head) >= 2 and said_text.endswith(head):
            return words[count:]
    return words


class PhraseWatch:
    """Forbidden phrases in growing text, each reported once.

    Every check matches the new words together with the last ``context_words``
    committed words of the same speaker, so a phrase split between two
    committed pieces is found; a hit already reported for the same phrase at an
    overlapping time (±``overlap_slack_s``, as timestamps move between decodes)
    is not reported again.

    A word-group rule is cancelled by a politeness guard heard after it (我管不了…但我马上
    帮您转给同事): on provisional text its hit waits for ``guard_wait_chars`` characters
    after it (at most the rule's guard reach) or its sentence's commit. Reported (or
    committed) before its whole reach was heard, it is ``pending`` until that reach is
    heard or a pause of ``guard_pause_s`` follows it, and ``withdrawn`` should the words
    heard meanwhile (its sentence's, or the next one's) cancel it.
    """

    def __init__(self, matcher, context_words: int = 12, overlap_slack_s: float = 0.5, followed_chars: int = 1,
                 guard_wait_chars: int | None = None, guard_pause_s: float = 1.0):
        self.matcher = matcher
        self.followed_chars = followed_chars
        """Characters decoded after a provisional phrase that show it whole though it
        ends within ``heard_until``'s margin: the word the window may have cut off is a later one."""
        self.context_words = context_words
        self.overlap_slack_s = overlap_slack_s
        self.guard_wait_chars = guard_wait_chars
        """``StreamingOptions.guard_wait_chars``."""
        self.guard_pause_s = guard_pause_s
        """A pause after a pending hit at least this long ends the reach of its guard: the
        next words are another thought (a polite continuation comes within it, as in
        这事我们处理不了……我这边帮您转到维修部门). A live call gives the second pass's
        group pause (``RefineOptions.group_pause_s``): the stretch the refined text judges again."""
        self._guard_reach = {p.id: guard_reach(p.rule) for p in matcher.phrasebook.all_phrases() if p.rule}
        self._context: dict[str, list[Word]] = {}
        self.reported: list = []
        self.held: list = []
        """The hits the last check held back for a guard that may still come."""
        self.unheard: list = []
        """The hits the last check left for a later one: they end too close to the audio's end."""
        self.pending: list = []
        """Reported hits whose guard may still follow: fewer characters than the rule's
        reach were heard after them, and no pause of ``guard_pause_s``."""
        self.withdrawn: list = []
        """Pending hits the last check found cancelled by the words heard after them."""

    def check(self, words: list[Word], speaker: str, commit: bool, heard_until: float = float("inf")) -> list:
        """New forbidden hits in ``words`` ending before ``heard_until`` (or followed by
        ``followed_chars`` more characters).

        ``commit`` makes the words context for later checks (a hypothesis is not).
        """
        context = self._context.get(speaker, [])
        since = context[-1].end if context else float("-inf")
        joined = context + [w for w in words if w.start >= since - 0.05]
        if commit:
            self._context[speaker] = joined[-self.context_words :]
        self.held, self.unheard, self.withdrawn = [], [], []
        if not joined:
            return []
        hits = self.matcher.match_segments([segment_of(joined, speaker)])
        self._settle(joined, speaker, hits, joined[len(context)].start if len(joined) > len(context) else None)
        new = []
        for hit in hits:
            if hit.kind != "forbidden" or self._already(hit):
                continue
            if hit.end > heard_until and characters_after(joined, hit.end) < self.followed_chars:
                self.unheard.append(hit)
                continue
            reach = self._guard_reach.get(hit.phrase_id, 0) if hit.method == "rule" else 0
            heard_after = characters_after(joined, hit.end)
            wait = reach if self.guard_wait_chars is None else min(reach, self.guard_wait_chars)
            if not commit and heard_after < wait:
                self.held.append(hit)
                continue
            if heard_after < reach:  # (its guard may still come: in the next words, after a short pause)
                self.pending.append(hit)
            self.reported.append(hit)
            new.append(hit)
        return new

    def _settle(self, joined: list[Word], speaker: str, hits: list, fresh_from: float | None) -> None:
        """Withdraw the pending hits of ``speaker`` that the words after them now cancel (the
        hit is no longer found, though the words up to its end still show it: ``guarded``);
        settle those whose guard's whole reach was heard, or that new words (from
        ``fresh_from``) follow after a pause of ``guard_pause_s``. A hit its words no longer
        hold at all (heard otherwise) is left to the second pass, as any first-pass alert:
        withdrawing it on the first pass's own rehearing cost a true alert in real time
        (w01's 跟你说了多少遍了, heard otherwise by its sentence's commit)."""
        for hit in [h for h in self.pending if h.speaker == speaker]:
            if fresh_from is not None and fresh_from - hit.end >= self.guard_pause_s:
                self.pending.remove(hit)
                continue
            if joined[0].start > hit.start + 0.05 or joined[-1].end < hit.end - 0.05:
                continue  # (these words do not hold it: context has moved past it, or they end before it)
            if not self._found(hit, hits) and self._found(hit, self.matcher.match_segments(
                    [segment_of([w for w in joined if w.start < hit.end - 0.05], speaker)])):
                self.pending.remove(hit)
                self.reported.remove(hit)  # (should later words show it after all, it is new again)
                self.withdrawn.append(hit)
            elif characters_after(joined, hit.end) >= self._guard_reach[hit.phrase_id]:
                self.pending.remove(hit)

    def _found(self, hit, hits: list) -> bool:
        """Whether a forbidden hit of ``hits`` lies over ``hit``'s words."""
        return any(h.kind == "forbidden" and h.start < hit.end and hit.start < h.end for h in hits)

    def forget(self, hit) -> None:
        """``hit`` was not alerted on after all (held for its speaker's role): report it again later."""
        self.reported.remove(hit)
        if hit in self.pending:
            self.pending.remove(hit)

    def _already(self, hit) -> bool:
        """Whether ``hit`` was reported: the same phrase about the same time, any forbidden
        phrase over a sentence the meaning model reported (``monitor.meaning``: a rule that
        fires there once the next words are heard is the same act), or a word-group rule's
        hit over words another phrase was reported on (说明书上有，你自己看 then its 你自己看).
        The code's own wording over a rule's words is reported: it names what the report
        will (不知道，这事不归我管: 敷衍 heard first on 不知道…, then 这事不归我管)."""
        slack = self.overlap_slack_s
        return any(
            (old.phrase_id == hit.phrase_id or old.detected_by is not None)
            and old.start - slack < hit.end and hit.start < old.end + slack
            or hit.method == "rule" and old.start < hit.end and hit.start < old.end
            for old in self.reported
        )


def guard_reach(rule) -> int:
    """Characters after a match of ``rule`` (``phrasebook.Rule``) that can still cancel it:
    the politeness guard's reach, or the rest of a longer innocent word (我操 in 我操作一下)."""
    politeness = rule.guard_within if rule.unless else 0
    return max(politeness, max((len(spoken(word)) - 1 for word in rule.not_in), default=0))


def characters_after(words: list[Word], time: float) -> int:
    return sum(len(spoken(w.text)) for w in words if w.start >= time - 0.05)


NODE_MAX_CALLS = 7
"""Live calls one 2-core node serves at once by default, whatever they come in by (WebSocket, web app, SIP):
what ``bench/capacity.py --streams 7 --decode-workers 2`` held in real time on a quiet 2-core node (lag
bounded, alert latency p50/p95 1.02/1.21 s; six calls 0.97/1.18 s; with one decoder six were not held,
p95 2.42 s; docs/deploy.md)."""
NODE_DECODE_WORKERS = 2
"""Decoders a node runs for its live calls (each with its share of the cores, ``livecall.load_transcriber``):
with one decoder of two threads, much of the second core idles while Whisper generates token by token, and an
utterance that ends waits behind another call's decode; with two, six calls' alert latency p95 fell from
2.42 to 1.18 s on a quiet node. A single call (``monitor live --file/--mic``) keeps one decoder of all cores:
its decodes are about 1.5 times faster that way."""


@dataclass
class LoadOptions:
    """How a ``DecodeScheduler`` spaces look-ahead decodes out under load.

    A stream's look-ahead re-decodes its unfinished utterance every
    ``StreamingOptions.partial_every_s``: on one stream in lockstep, 0.26 of
    its 0.43 CPU seconds per second of audio went to the first pass's
    encoder and generation, most of it re-decoding; spaced 4x, the stream
    cost 0.24 (``bench/capacity.py --profile``, docs/deploy.md). Spacing these out costs a phrase inside a long utterance a
    little alert latency; falling behind costs every alert the whole lag.
    """

    every_s: float = 2.0
    """How often the workers' busy share is looked at."""
    busy_high: float = 0.85
    """Busy share of the workers' time above which look-aheads are spaced further apart."""
    busy_low: float = 0.6
    """Busy share below which they come closer again (down to ``partial_every_s``)."""
    step: float = 1.5
    """Factor the spacing changes by at each look."""
    max_scale: float = 4.0
    """Widest spacing, as a multiple of ``partial_every_s``."""


class DecodeScheduler:
    """Worker threads that share one model between the streams of several calls.

    Each worker takes the stream whose unchecked audio was fed longest ago
    (earliest deadline first), so every call stays near real time and no call
    starves; decoding never happens on a source's thread. The second pass
    (refinement) comes last: a worker refines a call's closed group only when
    no stream of any call has audio to decode and none is behind by more than
    ``refine_max_backlog_s``, so under load it waits, and a call leaves a group
    it could not refine in time as the first pass heard it. With more than one
    worker, one is always left to first passes: a second pass (a whole group,
    beam search) holds its worker for seconds, and an utterance that ends
    meanwhile would wait for it.

    ``workers`` passes of the model run at once (each on a share of the
    cores, ``livecall.load_transcriber``). With ``batch_size`` above 1, there
    are that many threads per worker, and windows several streams have ready
    at once share a pass of the model (``asr.WindowBatcher``); the second
    pass's windows then also wait for every waiting first-pass window. On 2
    cores that saved no CPU and made alerts slower (docs/deploy.md), hence 1.
    """

    def __init__(self, transcriber: Transcriber, workers: int = 1, check_every_s: float = 0.1, batch_size: int = 1,
                 refine_max_backlog_s: float = 1.0, load: LoadOptions | None = None):
        self.transcriber = transcriber.batched(batch_size, workers) if batch_size > 1 else transcriber
        self.check_every_s = check_every_s
        self.refine_max_backlog_s = refine_max_backlog_s
        self.load = load or LoadOptions()
        self.workers = workers
        self.lookahead_scale = 1.0
        """What every stream's look-ahead spacing is scaled by now (``LoadOptions``)."""
        self._busy_s = 0.0  # worker time spent decoding since the last look at the load
        self._load_checked = time.monotonic()
        self._streams: list = []
        self._busy: set[int] = set()
        self._refining = 0  # workers on a second pass now
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"decode-{i}", daemon=True)
                         for i in range(workers * max(1, batch_size))]
        for thread in self._threads:
            thread.start()

    def add(self, call) -> None:
        """Serve ``call`` (a ``live.LiveCall``) until it is finished."""
        with self._cond:
            for stream in call.streams:
                stream.lookahead_scale = self.lookahead_scale
            self._streams.append(call)
            self._cond.notify_all()

    def remove(self, call) -> None:
        with self._cond:
            if call in self._streams:
                self._streams.remove(call)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _pace_lookahead(self) -> None:
        """Space every stream's look-ahead decodes further apart while the
        workers were busy more than ``load.busy_high`` of the last
        ``load.every_s``, and closer again below ``load.busy_low``: a loaded node
        sheds the re-decoding of unfinished utterances (most of a stream's cost,
        ``bench/capacity.py --profile``) before its calls fall behind."""
        now = time.monotonic()
        if now - self._load_checked < self.load.every_s:
            return
        busy = self._busy_s / ((now - self._load_checked) * self.workers)
        self._busy_s, self._load_checked = 0.0, now
        if busy > self.load.busy_high:
            scale = min(self.load.max_scale, self.lookahead_scale * self.load.step)
        elif busy < self.load.busy_low:
            scale = max(1.0, self.lookahead_scale / self.load.step)
        else:
            return
        if scale != self.lookahead_scale:
            log.debug("decoders busy %.0f%%: look-ahead every %.1fx", 100 * busy, scale)
            self.lookahead_scale = scale
            for call in self._streams:
                for stream in call.streams:
                    stream.lookahead_scale = scale

    def _next(self):
        """(since, call, stream) to decode; stream None: the call's second pass."""
        self._pace_lookahead()
        ready = [
            (call.waiting_since(stream), call, stream)
            for call in self._streams
            for stream in call.streams
            if id(stream) not in self._busy and stream.has_work(self.check_every_s)
        ]
        refining_allowed = self._refining < max(1, self.workers - 1)  # (one worker kept for first passes)
        if not ready and refining_allowed and all(call.backlog_s() <= self.refine_max_backlog_s
                                                  for call in self._streams):
            # first passes before refinement, across all calls
            ready = [(call.refine_waiting_since(), call, None) for call in self._streams
                     if id(call) not in self._busy and call.refine_due()]
        return min(ready, key=lambda item: item[0], default=None)

    def _work(self) -> None:
        while True:
            with self._cond:
                item = self._next()
                while item is None and not self._stopping:
                    self._cond.wait(timeout=self.check_every_s)
                    item = self._next()
                if self._stopping:
                    return
                _, call, stream = item
                busy = id(stream if stream is not None else call)
                self._busy.add(busy)
                self._refining += stream is None
            started = time.monotonic()
            try:
                if stream is None:
                    call.refine(self.transcriber)
                else:
                    call.step(stream, self.transcriber)
            except Exception:  # one broken call must not stop the others
                log.exception("call %s: decoding failed; the call is dropped", call.call_id)
                call.fail("decoding failed")
            finally:
                with self._cond:
                    self._busy.discard(busy)
                    self._refining -= stream is None
                    self._busy_s += time.monotonic() - started
                    self._cond.notify_all()

