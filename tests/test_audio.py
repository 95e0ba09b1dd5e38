"""Decoding paths: every recording a call centre has ends up as 16 kHz float32 per speaker."""

from __future__ import annotations

import wave

import numpy as np
import pytest
from conftest import SAMPLES, encode, sample

from monitor.audio import SAMPLE_RATE, load_call, pcm16_to_float, resample
from monitor.errors import MonitorError


def tone(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t)


def test_sample_call_is_16k_mono_agent():
    call = load_call(sample("d02_fault_rude"))
    assert call.source_rate == SAMPLE_RATE and call.source_channels == 1
    assert call.customer is None
    assert call.agent.dtype == np.float32
    assert call.duration_s == pytest.approx(23.265, abs=0.05)


def test_stereo_sample_keeps_agent_left_and_customer_right():
    call = load_call(sample("d07_stereo_apology"))
    assert call.source_channels == 2 and call.customer is not None
    swapped = load_call(sample("d07_stereo_apology"), agent_channel="right")
    assert np.array_equal(call.agent, swapped.customer)
    assert np.array_equal(call.customer, swapped.agent)
    mixed = load_call(sample("d07_stereo_apology"), agent_channel="mono")
    assert mixed.customer is None and len(mixed.agent) == len(call.agent)


def test_stereo_channels_are_not_mixed(tmp_path):
    left, right = tone(16000, 1.0, 440), np.zeros(16000)
    call = load_call(encode(tmp_path / "s.wav", np.stack([left, right]), 16000, "pcm_s16le"))
    assert np.abs(call.agent).max() > 0.4
    assert np.abs(call.customer).max() < 0.01


@pytest.mark.parametrize(
    "name,codec,rate",
    [
        ("telephone_mulaw.wav", "pcm_mulaw", 8000),
        ("telephone_alaw.wav", "pcm_alaw", 8000),
        ("call.flac", "flac", 44100),
        ("call.mp3", "libmp3lame", 22050),
        ("call.ogg", "libopus", 48000),
    ],
)
def test_compressed_and_telephone_formats_resample_to_16k(tmp_path, name, codec, rate):
    path = encode(tmp_path / name, tone(rate, 2.0, 300)[None, :], rate, codec)
    call = load_call(path)
    assert call.source_rate == rate
    assert call.agent.dtype == np.float32
    # Codecs pad a little (mp3 and opus frames); the length stays within 0.1 s.
    assert call.duration_s == pytest.approx(2.0, abs=0.1)
    # The 300 Hz tone survives: its spectral peak is where it should be at 16 kHz.
    spectrum = np.abs(np.fft.rfft(call.agent[: SAMPLE_RATE]))
    assert abs(np.argmax(spectrum) - 300) <= 2


def test_missing_empty_corrupt_and_zero_length_inputs_name_the_file(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio")
    zero = tmp_path / "zero.wav"
    with wave.open(str(zero), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(open(sample("d02_fault_rude"), "rb").read()[:30])
    cases = {
        tmp_path / "missing.wav": "no such file",
        empty: "empty file",
        text: "cannot be decoded",
        zero: "zero length",
        truncated: "",
        tmp_path: "is a directory",
    }
    for path, reason in cases.items():
        with pytest.raises(MonitorError) as error:
            load_call(str(path))
        assert str(path) in str(error.value) and reason in str(error.value)
        assert "\n" not in str(error.value)


def test_unknown_agent_channel_is_refused():
    with pytest.raises(MonitorError, match="--agent-channel"):
        load_call(sample("d02_fault_rude"), agent_channel="middle")


def test_pcm16_interleaved_and_resampling():
    frames = pcm16_to_float(np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes() + b"\x01", channels=2)
    assert frames.shape == (2, 2)
    assert frames[0, 1] == pytest.approx(0.5) and frames[1, 0] == -1.0
    up = resample(tone(8000, 1.0, 200).astype(np.float32), 8000)
    assert len(up) == 16000 and up.dtype == np.float32


def test_recordings_can_be_read_from_a_url(tmp_path):
    import functools
    import http.server
    import threading

    from conftest import SAMPLES

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(SAMPLES))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/d06_no_greeting_rude.wav"
        from_url = load_call(url)
        assert np.array_equal(from_url.agent, load_call(sample("d06_no_greeting_rude")).agent)
        with pytest.raises(MonitorError) as error:
            load_call(f"http://127.0.0.1:{server.server_port}/missing.wav")
        assert "missing.wav" in str(error.value)
    finally:
        server.shutdown()


def test_truncated_wav_is_detected_from_its_header(tmp_path):
    from monitor.audio import truncation_warning

    whole = (SAMPLES / "d02_fault_rude.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: len(whole) // 2])
    decoded = load_call(str(cut)).duration_s
    assert decoded == pytest.approx(23.27 / 2, abs=0.2), "FFmpeg decodes what is there, without complaint"
    warning = truncation_warning(str(cut), decoded)
    assert warning and "23.3 s" in warning
    assert truncation_warning(str(SAMPLES / "d02_fault_rude.wav"), load_call(sample("d02_fault_rude")).duration_s) is None
