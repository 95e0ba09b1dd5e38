"""Sentence loudness (acoustics.py) on synthetic signals: tones, noise, phone band, mixes."""

import numpy as np
import pytest

from monitor.acoustics import SAMPLE_RATE, band_limited, baseline, frame_levels, sentence_levels, speech_level
from monitor.asr import Segment

RNG = np.random.default_rng(7)


def tone(seconds: float, hz: float = 1000.0, db: float = -20.0) -> np.ndarray:
    """A sine whose RMS is ``db`` dBFS."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (np.sqrt(2) * 10 ** (db / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def syllables(seconds: float, db: float) -> np.ndarray:
    """Speech-like bursts: 200 ms of band noise at ``db`` then 100 ms of near silence, repeated."""
    out = []
    while sum(len(x) for x in out) < seconds * SAMPLE_RATE:
        burst = band_limited(RNG.normal(0, 1, int(0.2 * SAMPLE_RATE)).astype(np.float32))
        burst *= 10 ** (db / 20) / np.sqrt(np.mean(burst**2))
        out += [burst, RNG.normal(0, 1e-4, int(0.1 * SAMPLE_RATE)).astype(np.float32)]
    return np.concatenate(out)[: int(seconds * SAMPLE_RATE)]


def test_frame_levels_of_a_tone_are_its_rms():
    levels = frame_levels(tone(1.0, db=-20.0))
    assert len(levels) == 50
    assert np.allclose(levels, -20.0, atol=0.1)


def test_band_limited_removes_hum_and_keeps_the_voice_band():
    hum = tone(1.0, hz=50, db=-10.0)
    voice = tone(1.0, hz=1000, db=-30.0)
    filtered = band_limited(hum + voice)
    assert speech_level(filtered) == pytest.approx(-30.0, abs=0.5)
    assert speech_level(hum) is None or speech_level(hum) < -55


def test_speech_level_ignores_pauses_between_words():
    # The same bursts with long pauses between them speak as loud as with short ones.
    burst = syllables(2.0, -25.0)
    spaced = np.concatenate([burst, np.zeros(SAMPLE_RATE * 2, dtype=np.float32)])
    assert speech_level(burst) == pytest.approx(-25.0, abs=1.5)
    assert speech_level(spaced) == pytest.approx(speech_level(burst), abs=0.5)


def test_one_shouted_word_does_not_make_a_sentence_loud():
    calm = syllables(3.0, -30.0)
    calm[SAMPLE_RATE : SAMPLE_RATE + 3200] *= 10 ** (15 / 20)  # a 0.2 s shout inside
    assert speech_level(calm) == pytest.approx(-30.0, abs=1.5)


def test_too_little_speech_has_no_level():
    assert speech_level(syllables(0.15, -20.0)) is None
    assert speech_level(np.zeros(SAMPLE_RATE, dtype=np.float32)) is None
    assert speech_level(np.zeros(0, dtype=np.float32)) is None


def test_phone_band_and_wideband_measure_the_same_difference():
    wide_calm, wide_loud = syllables(2.0, -30.0), syllables(2.0, -20.0)
    # An 8 kHz phone channel keeps only 300-3400 Hz and adds some noise.
    phone = [band_limited(x) + RNG.normal(0, 10 ** (-55 / 20), len(x)).astype(np.float32) for x in (wide_calm, wide_loud)]
    wide_delta = speech_level(wide_loud) - speech_level(wide_calm)
    phone_delta = speech_level(phone[1]) - speech_level(phone[0])
    assert wide_delta == pytest.approx(10.0, abs=1.5)
    assert phone_delta == pytest.approx(wide_delta, abs=1.0)


def test_baseline_is_a_duration_weighted_median():
    # Three long calm sentences outweigh four short loud ones.
    levels = [-30.0, -31.0, -29.0, -18.0, -17.0, -19.0, -18.0]
    durations = [5.0, 4.0, 5.0, 1.0, 1.0, 1.0, 1.0]
    assert baseline(levels, durations) == -30.0
    assert np.median(levels) == -19.0  # the plain median would call the quarrel the usual level
    assert baseline(levels, durations, share=0.25) == -30.0  # 4 of 18 s are at -31: a quarter reaches -30
    assert baseline([], []) is None


def test_sentence_levels_read_each_speaker_from_their_own_channel():
    agent = np.concatenate([syllables(2.0, -30.0), np.zeros(2 * SAMPLE_RATE, dtype=np.float32)])
    customer = np.concatenate([np.zeros(2 * SAMPLE_RATE, dtype=np.float32), syllables(2.0, -10.0)])
    segments = [Segment(0.0, 2.0, "甲", "agent"), Segment(2.0, 4.0, "乙", "customer")]
    agent_level, customer_level = sentence_levels(agent, customer, segments)
    assert agent_level == pytest.approx(-30.0, abs=1.5)
    assert customer_level == pytest.approx(-10.0, abs=1.5)


def test_on_a_mono_mix_the_other_voice_overlapping_is_left_out():
    mix = syllables(4.0, -30.0)
    mix[2 * SAMPLE_RATE :] += syllables(2.0, -12.0)  # the customer talks over the agent's second half
    segments = [Segment(0.0, 4.0, "坐席", "agent"), Segment(2.0, 4.0, "客户", "customer")]
    agent_level, customer_level = sentence_levels(mix, None, segments)
    assert agent_level == pytest.approx(-30.0, abs=1.5)
    # The customer's sentence is overlapped by the agent's for all of it: nothing is left to measure.
    assert customer_level is None
