"""Audio in: recordings decoded to 16 kHz float32, one array per speaker.

Decoding is PyAV's (through faster-whisper's ``decode_audio``), so every format
FFmpeg reads works: wav (PCM, 8 kHz μ-law/A-law telephone audio), flac, mp3,
ogg/opus, m4a. Stereo recordings keep their channels apart because call
recorders put the agent on one side and the customer on the other.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from monitor.errors import MonitorError

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".webm", ".amr")
AGENT_CHANNELS = ("left", "right", "mono")


@dataclass
class CallAudio:
    """A decoded call, split by speaker."""

    path: str
    """The file it was read from."""
    agent: np.ndarray
    """Agent speech, 16 kHz mono float32."""
    customer: np.ndarray | None
    """Customer speech on its own channel, or None when the recording is mono
    (or mixed with ``--agent-channel mono``), in which case all speech is the agent's."""
    source_rate: int
    """The sample rate of the file before resampling."""
    source_channels: int
    """The number of channels in the file."""

    @property
    def duration_s(self) -> float:
        return len(self.agent) / SAMPLE_RATE


def is_url(path: str) -> bool:
    """True for inputs FFmpeg fetches itself (http://, https://, s3 gateways...)."""
    return re.match(r"^[a-z][a-z0-9+.-]*://", path, re.IGNORECASE) is not None


def is_audio_file(path: str) -> bool:
    return path.lower().endswith(AUDIO_EXTENSIONS)


def _probe(path: str) -> tuple[int, int]:
    """Return (sample rate, channels) of the first audio stream."""
    import av

    try:
        with av.open(path, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MonitorError(f"{path}: no audio stream (not an audio file?)")
            context = container.streams.audio[0].codec_context
            return context.sample_rate, context.channels
    except av.FFmpegError as exc:
        raise MonitorError(f"{path}: cannot be decoded as audio ({_ffmpeg_reason(exc)})") from None


def _ffmpeg_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc).split(":")[0] or type(exc).__name__


def load_call(path: str, agent_channel: str = "left") -> CallAudio:
    """Decode a recording into agent and customer speech.

    ``agent_channel`` says which side of a stereo file is the agent (``left`` or
    ``right``); ``mono`` mixes both and treats all speech as the agent's.
    """
    import av

    if agent_channel not in AGENT_CHANNELS:
        raise MonitorError(f"--agent-channel {agent_channel}: must be one of {', '.join(AGENT_CHANNELS)}")
    if not is_url(path):
        if not os.path.exists(path):
            raise MonitorError(f"{path}: no such file")
        if os.path.isdir(path):
            raise MonitorError(f"{path}: is a directory, not an audio file")
        if os.path.getsize(path) == 0:
            raise MonitorError(f"{path}: empty file")
    rate, channels = _probe(path)
    split = channels >= 2 and agent_channel != "mono"
    try:
        decoded = decode_channels(path, 2 if split else 1)
    except (av.FFmpegError, ValueError) as exc:
        raise MonitorError(f"{path}: cannot be decoded as audio ({_ffmpeg_reason(exc)})") from None
    if split:
        left, right = decoded
        agent, customer = (left, right) if agent_channel == "left" else (right, left)
    else:
        (agent,), customer = decoded, None
    if len(agent) == 0:
        raise MonitorError(f"{path}: contains no audio samples (zero length)")
    return CallAudio(path=path, agent=agent, customer=customer, source_rate=rate, source_channels=channels)


TRUNCATION_TOLERANCE_S = 1.0
"""Decoded audio may fall this much (or 5 %) short of what the file declares before
it counts as truncated: containers round, and bitrate-based estimates drift."""


def declared_duration_s(path: str) -> float | None:
    """The duration the file says it has, or None when it does not say.

    FFmpeg clamps a WAV file's length to the bytes really there, so for RIFF/WAVE
    the ``data`` chunk's size is read from the header itself; other containers
    report what their header (or index) declares through PyAV.
    """
    import av

    if is_url(path):
        return None
    wav = _wav_declared_duration_s(path)
    if wav is not None:
        return wav
    try:
        with av.open(path, mode="r", metadata_errors="ignore") as container:
            return container.duration / av.time_base if container.duration else None
    except av.FFmpegError:
        return None


def _wav_declared_duration_s(path: str) -> float | None:
    try:
        with open(path, "rb") as handle:
            header = handle.read(1 << 16)
    except OSError:
        return None
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    byte_rate, position = None, 12
    while position + 8 <= len(header):
        chunk, size = header[position : position + 4], int.from_bytes(header[position + 4 : position + 8], "little")
        if chunk == b"fmt " and size >= 12:
            byte_rate = int.from_bytes(header[position + 16 : position + 20], "little")
        elif chunk == b"data":
            # 0 and 0xFFFFFFFF are what recorders write while still streaming: no claim.
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        position += 8 + size + (size & 1)
    return None


def truncation_warning(path: str, decoded_s: float) -> str | None:
    """A one-line warning when the file holds less audio than its header declares."""
    declared = declared_duration_s(path)
    if declared is None or declared - decoded_s <= max(TRUNCATION_TOLERANCE_S, 0.05 * declared):
        return None
    return f"truncated: the file declares {declared:.1f} s of audio but holds {decoded_s:.1f} s"


def decode_channels(path: str, channels: int) -> list[np.ndarray]:
    """16 kHz float32 samples of a recording: ``channels`` 1 mixes it to mono,
    2 gives left and right.

    Like faster-whisper's ``decode_audio``, but FFmpeg's 16-bit blocks are
    converted into one preallocated array per channel, so a long recording
    needs its 16-bit samples and the result at once, not the result three
    times over (an hour of mono: 345 MB, not 575 MB). Frames FFmpeg reports
    as invalid are skipped.
    """
    import av

    resampler = av.audio.resampler.AudioResampler(
        format="s16", layout="mono" if channels == 1 else "stereo", rate=SAMPLE_RATE
    )
    blocks: list[np.ndarray | None] = []
    with av.open(path, mode="r", metadata_errors="ignore") as container:
        frames = container.decode(audio=0)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                frame = None
            except av.error.InvalidDataError:
                continue
            if frame is not None:
                frame.pts = None  # resample whatever the timestamps say
            blocks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
            if frame is None:
                break
    result = [np.empty(sum(len(b) for b in blocks) // channels, dtype=np.float32) for _ in range(channels)]
    position = 0
    for index, block in enumerate(blocks):
        count = len(block) // channels
        for channel, out in enumerate(result):
            np.multiply(block[channel::channels], 1 / 32768.0, out=out[position : position + count], casting="unsafe")
        position += count
        blocks[index] = None  # freed as it goes
    release_freed_memory()
    return result


def release_freed_memory() -> None:
    """Hand memory freed on the C heap back to the system (glibc ``malloc_trim``).

    FFmpeg's blocks of a long recording, and the weights a model is converted
    from while it loads, are many small allocations: freed, they stay in the
    process (80 MB after loading Whisper base) unless trimmed. Elsewhere a no-op.
    """
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def pcm16_to_float(data: bytes, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian 16-bit PCM to float32, shape (frames, channels)."""
    usable = len(data) - len(data) % (2 * channels)
    samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample a mono float32 signal to 16 kHz (linear interpolation).

    Used for live PCM from sources that do not run at 16 kHz; recorded files go
    through FFmpeg's resampler instead.
    """
    if rate == SAMPLE_RATE or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    duration = len(samples) / rate
    target = np.arange(int(round(duration * SAMPLE_RATE))) / SAMPLE_RATE
    source = np.arange(len(samples)) / rate
    return np.interp(target, source, samples).astype(np.float32)
