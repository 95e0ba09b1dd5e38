"""Voices in a mono call: which stretches of audio sound like the same person.

The acoustic half of role separation (``roles.py`` is the other half). Each
sentence becomes a small vector describing the voice: the mean and spread of
its mel-cepstrum (MFCC 1-19) over its louder frames. The log-mel frames are
the ones faster-whisper already computes for Whisper, so this adds no model
and no download; the cepstrum is a DCT of them.

Measured before choosing (``bench/roles.py --encoder``: the labelled turns of
each call mixed to mono, clustered into two voices, share of characters in the
right voice): cepstral statistics 1.00 on the sample calls and 0.89 on
tests/data/roles (real human customers, phone band), in about 0.01 s a call;
mean-pooled Whisper encoder states 0.78 and 0.77, at about 1.5 s a turn,
since the encoder is trained to hear words, not who says them (it did better
on one phone call, r02, where the cepstrum splits one real speaker's two
recordings). Both together (each standardized, equal weight), on Whisper's
sentences with the text cues: attribution 0.83 on the sample calls against
0.96 for the cepstrum alone, better on two real phone-band customers, worse
on the TTS calls; not worth 1-2 s of encoder a call. The PyPI
speaker-embedding packages that run without torch
(speakeronnx, redimnet2-onnx, speaker-diarize-lite) ship no weights.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from functools import lru_cache

import numpy as np
from scipy.fft import dct

from monitor.asr import Segment

FRAMES_PER_SECOND = 100
"""Whisper's log-mel hop is 10 ms."""
CEPSTRA = slice(1, 20)
"""MFCC 1-19: the spectral envelope (vocal tract, microphone, line). C0 is
loudness, which says more about the mix than about the speaker."""
PHONE_BAND_HZ = 3400
"""Only mel bands below the top of the telephone band are described. Phone
calls carry nothing above it but line noise, which would make every voice of
a phone call sound alike and the two legs of a call (one wideband, one phone)
sound different for the wrong reason. Measured on the real-voice montages:
clustering right 0.92 of the time with the band limit, 0.82 without."""
LOUD_SHARE = 0.7
"""The loudest share of a stretch's frames is described; pauses and breaths
between words would otherwise pull every voice towards silence."""


@lru_cache(maxsize=1)
def _feature_extractor():
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor()


@lru_cache(maxsize=1)
def _phone_bands() -> int:
    """How many of Whisper's mel bands peak below ``PHONE_BAND_HZ``."""
    extractor = _feature_extractor()
    frequencies = np.fft.rfftfreq(extractor.n_fft, 1 / extractor.sampling_rate)
    peaks = frequencies[np.argmax(extractor.mel_filters, axis=1)]
    return int(np.sum(peaks <= PHONE_BAND_HZ))


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's log-mel frames of a whole recording, telephone band only,
    shape (bands, frames)."""
    return _feature_extractor()(samples, padding=0)[: _phone_bands()]


def describe(mel: np.ndarray, start: float, end: float) -> np.ndarray | None:
    """The voice vector of the stretch ``start``-``end`` (seconds), or None when
    it holds less than 0.2 s of audio."""
    frames = mel[:, int(start * FRAMES_PER_SECOND) : int(np.ceil(end * FRAMES_PER_SECOND))]
    if frames.shape[1] < 20:
        return None
    energy = frames.mean(axis=0)
    loud = frames[:, energy >= np.quantile(energy, 1 - LOUD_SHARE)]
    cepstra = dct(loud, axis=0, norm="ortho")[CEPSTRA]
    return np.concatenate([cepstra.mean(axis=1), cepstra.std(axis=1)])


def sentence_voices(mel: np.ndarray, segments: list[Segment]) -> list[np.ndarray | None]:
    """One voice vector per segment (None for a segment too short to describe)."""
    return [describe(mel, s.start, s.end) for s in segments]


PAUSE_S = 0.8
"""A silence at least this long inside a Whisper segment cuts it in two. On a
mono call Whisper runs a sentence and the reply after a pause into one
segment (held-out h02: 怎么又问, 3.5 s of silence, 你这是什么态度), and one
segment can only have one speaker. Measured with bench/roles.py."""
QUIET_LEVEL = 0.3
"""A frame is silent when its loudness is below this share of the way from
the call's quiet frames (10th percentile) to its loud ones (90th): the
noise floor of a noisy line is far from digital silence."""


def split_at_pauses(mel: np.ndarray, segments: list[Segment]) -> list[Segment]:
    """Cut segments at silences of ``PAUSE_S`` or more between their words.

    The silence is found in the audio, not in the word times: Whisper
    stretches the first word after a pause back over it (你 from 17.3 s to
    20.7 s). A word goes to the side of the pause its end is on.
    """
    energy = mel.mean(axis=0)
    floor, peak = np.quantile(energy, 0.1), np.quantile(energy, 0.9)
    quiet = energy < floor + QUIET_LEVEL * (peak - floor)
    out: list[Segment] = []
    for segment in segments:
        pieces = [segment]
        for pause_start, pause_end in _pauses(quiet, segment.start, segment.end):
            last = pieces.pop()
            before = [w for w in last.words if w.end <= pause_start + 0.1]
            after = [w for w in last.words if w.end > pause_start + 0.1]
            if not before or not after:
                pieces.append(last)
                continue
            after[0] = replace(after[0], start=max(after[0].start, pause_end))
            pieces += [_piece(last, before), _piece(last, after)]
        out += pieces
    return out


def _pauses(quiet: np.ndarray, start: float, end: float) -> list[tuple[float, float]]:
    """Silent stretches of at least ``PAUSE_S`` strictly inside ``start``-``end``, in order."""
    first, last = int(start * FRAMES_PER_SECOND), min(len(quiet), int(end * FRAMES_PER_SECOND))
    found, run_start = [], None
    for frame in range(first, last):
        if quiet[frame] and run_start is None:
            run_start = frame
        elif not quiet[frame] and run_start is not None:
            if run_start > first and frame - run_start >= PAUSE_S * FRAMES_PER_SECOND:
                found.append((run_start / FRAMES_PER_SECOND, frame / FRAMES_PER_SECOND))
            run_start = None
    return found


MIN_SIDE_S = 1.5
"""Each side of a cut must hold a whole window of speech: shorter pieces of
one voice's sentence too easily sound like the other voice (the spread
of the cepstrum grows with the length of what is described)."""
CHANGE_LOG_ODDS = 4.0
"""Both sides of a cut must sound at least as much like their (different)
voices as those voices' own average sentence does (``roles.AT_VOICE``)."""


def split_at_voice_changes(mel: np.ndarray, segments: list[Segment], log_odds) -> list[Segment]:
    """Cut segments where the voice changes between two words.

    A mono Whisper segment often runs the agent's sentence and the customer's
    reply together. ``log_odds(vector)`` scores a voice vector for one voice
    against the other; a segment is cut at the word boundary where the words
    before and the words after are most surely different voices, and each
    piece is examined again.
    """
    out: list[Segment] = []
    pending = list(segments)
    while pending:
        segment = pending.pop(0)
        cut = _voice_change(mel, segment, log_odds)
        if cut is None:
            out.append(segment)
            continue
        pending[:0] = [_piece(segment, segment.words[:cut]), _piece(segment, segment.words[cut:])]
    return out


def _voice_change(mel: np.ndarray, segment: Segment, log_odds) -> int | None:
    words = segment.words
    if len(words) < 2 or segment.end - segment.start < 2 * MIN_SIDE_S:
        return None
    best, best_gap = None, 0.0
    for cut in range(1, len(words)):
        left_end, right_start = words[cut - 1].end, words[cut].start
        if left_end - words[0].start < MIN_SIDE_S or words[-1].end - right_start < MIN_SIDE_S:
            continue
        left, right = describe(mel, words[0].start, left_end), describe(mel, right_start, words[-1].end)
        if left is None or right is None:
            continue
        a, b = log_odds(left), log_odds(right)
        if a * b < 0 and min(abs(a), abs(b)) >= CHANGE_LOG_ODDS and abs(a - b) > best_gap:
            best, best_gap = cut, abs(a - b)
    return best


def _piece(segment: Segment, words: list) -> Segment:
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text="".join(w.text for w in words).strip(),
        speaker=segment.speaker,
        words=words,
    )


class RecentAudio:
    """The last ``window_s`` seconds of a live mono stream (16 kHz), so a
    sentence can be described once it is transcribed; memory stays that of the
    window however long the call runs."""

    def __init__(self, window_s: float, sample_rate: int = 16000):
        self.sample_rate = sample_rate
        self._ring = np.zeros(int(window_s * sample_rate), np.float32)
        self._written = 0  # samples fed since the start of the call
        self._lock = threading.Lock()

    def feed(self, samples: np.ndarray) -> None:
        fed = len(samples)
        samples = samples[-len(self._ring) :]
        with self._lock:
            at = (self._written + fed - len(samples)) % len(self._ring)
            head = min(len(samples), len(self._ring) - at)
            self._ring[at : at + head] = samples[:head]
            self._ring[: len(samples) - head] = samples[head:]
            self._written += fed

    def between(self, start: float, end: float) -> np.ndarray | None:
        """The audio from ``start`` to ``end`` (call seconds), None once it has left the window."""
        with self._lock:
            first, last = int(start * self.sample_rate), min(int(end * self.sample_rate), self._written)
            if first < self._written - len(self._ring) or last <= first:
                return None
            index = np.arange(first, last) % len(self._ring)
            return self._ring[index].copy()

    def describe(self, start: float, end: float) -> np.ndarray | None:
        """The voice vector of ``start``-``end``, None when too short or no longer kept."""
        samples = self.between(start, end)
        if samples is None:
            return None
        return describe(log_mel(samples), 0.0, len(samples) / self.sample_rate)
