"""Shared fixtures: the real embedded model and the sample calls shipped in samples/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="session")
def transcriber():
    """The embedded Whisper base model, loaded once for the whole run."""
    from monitor.asr import Transcriber

    return Transcriber()


def sample(call_id: str) -> str:
    return str(SAMPLES / f"{call_id}.wav")


def labels(call_id: str) -> dict:
    return json.loads((SAMPLES / f"{call_id}.labels.json").read_text(encoding="utf-8"))


def encode(path: str | os.PathLike, channels: np.ndarray, rate: int, codec: str, container: str | None = None) -> str:
    """Write float samples shaped (channels, n) with PyAV, in any codec FFmpeg has."""
    layout = "mono" if channels.shape[0] == 1 else "stereo"
    pcm = (np.clip(channels, -1, 1) * 32767).astype("<i2")
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), format="s16", layout=layout)
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return str(path)
