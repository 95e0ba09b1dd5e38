"""How loud each sentence of a call was: the measurements behind 高声/吵闹 and 争吵.

Pure functions over 16 kHz samples and transcript segments; numpy only. The
judging (how much louder is too loud, what an argument looks like) is in
``rules.py``; this module only measures.

Decisions a reader would otherwise have to guess:

- A sentence's level is the median of its active 20 ms frames, in dBFS, after
  keeping only the telephone band (300-3400 Hz). The median holds a level that
  lasts: one shouted word or a click does not make a sentence loud, a sentence
  spoken loudly throughout does. The band makes a wideband recording and an
  8 kHz phone call measure the same thing, and keeps hum and rumble out.
- Active frames are those within ``ACTIVE_RANGE_DB`` of the sentence's loud
  frames (its 95th percentile) and above ``SILENCE_DBFS``: the pauses between
  words are not part of how loud someone speaks.
- Levels are only ever compared with other levels of the same speaker in the
  same call (``baseline``): recordings are gain-controlled (AGC) and channels
  are recorded at unrelated gains, so an absolute level says nothing.
- On a mono call, the stretches where the other party speaks at the same time
  are left out of a sentence's level: their voice would count as this one's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from monitor.asr import Segment

SAMPLE_RATE = 16000
FRAME_S = 0.02
"""Frame length for levels: a few pitch periods, shorter than a syllable."""
BAND_HZ = (300.0, 3400.0)
"""The telephone band: what every recording, wideband or 8 kHz, has in common."""
SILENCE_DBFS = -60.0
"""Frames quieter than this are never speech, whatever the sentence."""
ACTIVE_RANGE_DB = 20.0
"""Frames more than this below the sentence's loud frames are pauses and breath."""
MIN_ACTIVE_S = 0.3
"""A sentence with less active speech than this has no level (None)."""


@dataclass
class SentenceSound:
    """What a sentence sounded like, beside what was said."""

    level_db: float | None = None
    """Active speech level, dBFS in the telephone band; None when too little was heard alone."""
    language: str | None = None
    """Whisper's most likely language for the sentence audio, when it was asked (``language.py``)."""
    language_probability: float | None = None
    """Whisper's probability of ``language``."""
    mandarin_probability: float | None = None
    """Whisper's probability of ``zh`` (Chinese; the base model has no separate Cantonese)."""


def band_limited(samples: np.ndarray, rate: int = SAMPLE_RATE, band: tuple[float, float] = BAND_HZ) -> np.ndarray:
    """``samples`` with everything outside ``band`` (Hz) removed (FFT mask)."""
    if len(samples) == 0:
        return samples.astype(np.float32)
    spectrum = np.fft.rfft(samples.astype(np.float64))
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    spectrum[(freqs < band[0]) | (freqs > band[1])] = 0
    return np.fft.irfft(spectrum, n=len(samples)).astype(np.float32)


def frame_levels(samples: np.ndarray, rate: int = SAMPLE_RATE, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level of each whole frame, in dBFS (a full-scale sine is -3 dBFS)."""
    size = max(1, round(frame_s * rate))
    count = len(samples) // size
    if count == 0:
        return np.zeros(0)
    frames = samples[: count * size].astype(np.float64).reshape(count, size)
    power = np.mean(frames**2, axis=1)
    return 10 * np.log10(np.maximum(power, 1e-12))


def speech_level(samples: np.ndarray, rate: int = SAMPLE_RATE) -> float | None:
    """The active speech level of ``samples`` in dBFS, or None when there is too little speech."""
    levels = frame_levels(band_limited(samples, rate), rate)
    if len(levels) == 0:
        return None
    loud = np.percentile(levels, 95)
    active = levels[(levels >= loud - ACTIVE_RANGE_DB) & (levels >= SILENCE_DBFS)]
    if len(active) * FRAME_S < MIN_ACTIVE_S:
        return None
    return float(np.median(active))


def sentence_levels(
    agent: np.ndarray, customer: np.ndarray | None, segments: list[Segment], rate: int = SAMPLE_RATE
) -> list[float | None]:
    """The level of every segment (same order), each from its speaker's own audio.

    ``customer`` is the customer's channel of a stereo call, or None for a mono
    mix (``agent`` holds both voices). There, stretches overlapped by a segment
    of the other speaker are cut out first.
    """
    levels = []
    for segment in segments:
        samples = customer if customer is not None and segment.speaker == "customer" else agent
        first, last = _sample_span(segment.start, segment.end, len(samples), rate)
        keep = np.ones(last - first, dtype=bool)
        if customer is None:
            for other in segments:
                if other.speaker != segment.speaker and other.start < segment.end and segment.start < other.end:
                    a, b = _sample_span(other.start, other.end, len(samples), rate)
                    keep[max(a, first) - first : max(min(b, last) - first, 0)] = False
        levels.append(speech_level(samples[first:last][keep], rate))
    return levels


def baseline(levels: list[float], durations: list[float], share: float = 0.5) -> float | None:
    """A speaker's usual level: the median of their sentence levels, weighted by duration.

    Weighting by duration keeps a call's calm, long explanations as the
    reference even when a quarrel adds many short, loud turns. ``share`` other
    than 0.5 gives another quantile: the level that ``share`` of the speech time stays under.
    """
    if not levels:
        return None
    order = np.argsort(levels)
    values = np.asarray(levels, dtype=float)[order]
    weights = np.asarray(durations, dtype=float)[order]
    cumulative = np.cumsum(weights)
    return float(values[min(np.searchsorted(cumulative, cumulative[-1] * share), len(values) - 1)])


def _sample_span(start: float, end: float, length: int, rate: int) -> tuple[int, int]:
    first = min(max(0, round(start * rate)), length)
    return first, min(max(first, round(end * rate)), length)
