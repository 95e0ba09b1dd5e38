"""Live audio sources: a microphone or line-in, a file played at speech speed, raw PCM on stdin.

Every source yields blocks of 16 kHz float32 audio shaped (frames, channels),
channels as captured (left first). Which channel is the agent is decided later,
by ``speaker_channels``. (The WebSocket ingest, ``ingest.py``, feeds calls directly.)
"""

from __future__ import annotations

import queue
import sys
import time
from typing import BinaryIO, Iterator

import numpy as np

from monitor.audio import SAMPLE_RATE, load_call, pcm16_to_float, resample
from monitor.errors import MonitorError

BLOCK_S = 0.1
"""Audio per yielded block: small enough that feeding adds no noticeable latency."""


def speaker_channels(frames: np.ndarray, agent_channel: str) -> dict[str, np.ndarray]:
    """Split captured channels into agent and customer speech (CONTRACT: left is the agent)."""
    if frames.shape[1] == 1:
        return {"agent": frames[:, 0]}
    if agent_channel == "mono":
        return {"agent": frames.mean(axis=1, dtype=np.float32)}
    left, right = frames[:, 0], frames[:, 1]
    return {"agent": left, "customer": right} if agent_channel == "left" else {"agent": right, "customer": left}


def to_16k(frames: np.ndarray, rate: int) -> np.ndarray:
    """Resample every channel of (frames, channels) audio to 16 kHz."""
    if rate == SAMPLE_RATE:
        return frames.astype(np.float32, copy=False)
    return np.stack([resample(frames[:, c], rate) for c in range(frames.shape[1])], axis=1)


class FileSource:
    """A recording fed block by block; with ``realtime`` at the speed of speech.

    ``time_scale`` > 1 plays faster than real time (tests, benchmarks).
    """

    def __init__(self, path: str, realtime: bool = False, time_scale: float = 1.0):
        if time_scale <= 0:
            raise MonitorError(f"--time-scale {time_scale}: must be positive")
        call = load_call(path, agent_channel="left")  # raw channel order: left, right
        columns = [call.agent] if call.customer is None else [call.agent, call.customer]
        self.frames = np.stack(columns, axis=1)
        self.channels = self.frames.shape[1]
        self.path = path
        self.realtime = realtime
        self.time_scale = time_scale
        self.duration_s = len(self.frames) / SAMPLE_RATE

    def __iter__(self) -> Iterator[np.ndarray]:
        block = int(BLOCK_S * SAMPLE_RATE)
        started = time.monotonic()
        for offset in range(0, len(self.frames), block):
            if self.realtime:
                due = started + offset / SAMPLE_RATE / self.time_scale
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.frames[offset : offset + block]
        if self.realtime:  # the last block's audio "plays" until its end
            delay = started + self.duration_s / self.time_scale - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class StdinPcmSource:
    """Little-endian 16-bit PCM, mono or interleaved stereo, at ``rate`` Hz."""

    def __init__(self, rate: int, channels: int = 1, stream: BinaryIO | None = None):
        if not 4000 <= rate <= 192000:
            raise MonitorError(f"--stdin-pcm {rate}: not a plausible sample rate (4000-192000 Hz)")
        if channels not in (1, 2):
            raise MonitorError(f"--channels {channels}: stdin PCM must be mono (1) or stereo (2)")
        self.rate = rate
        self.channels = channels
        self.stream = stream or sys.stdin.buffer
        self.path = "<stdin>"

    def __iter__(self) -> Iterator[np.ndarray]:
        block_bytes = int(BLOCK_S * self.rate) * 2 * self.channels
        leftover = b""
        while True:
            data = self.stream.read1(block_bytes) if hasattr(self.stream, "read1") else self.stream.read(block_bytes)
            if not data:
                return
            data = leftover + data
            usable = len(data) - len(data) % (2 * self.channels)
            leftover = data[usable:]
            if usable:
                yield to_16k(pcm16_to_float(data[:usable], self.channels), self.rate)


class MicSource:
    """A microphone or line-in through PortAudio (sounddevice).

    ``device`` is an index or (part of) a device name; None is the default input.
    """

    def __init__(self, device: str | int | None = None, channels: int = 1, rate: int = SAMPLE_RATE):
        try:
            import sounddevice
        except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
            raise MonitorError(f"--mic: PortAudio is not available ({exc}); install libportaudio2") from None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        try:
            info = sounddevice.query_devices(device, "input")
        except (ValueError, sounddevice.PortAudioError) as exc:
            raise MonitorError(f"--mic {device if device is not None else '(default)'}: no such input device ({exc})") from None
        self.sounddevice = sounddevice
        self.device = device
        self.channels = min(channels, int(info["max_input_channels"])) or 1
        self.rate = rate
        self.path = f"mic:{info['name']}"

    def __iter__(self) -> Iterator[np.ndarray]:
        blocks: queue.Queue = queue.Queue()

        def captured(indata, _frames, _time, status) -> None:
            blocks.put(indata.copy())

        with self.sounddevice.InputStream(
            device=self.device, channels=self.channels, samplerate=self.rate, dtype="float32",
            blocksize=int(BLOCK_S * self.rate), callback=captured,
        ):
            while True:
                yield to_16k(blocks.get(), self.rate)
