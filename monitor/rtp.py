"""RTP audio in: G.711 packets from a phone system to 16 kHz samples, one stream per speaker.

Packets are parsed, reordered and checked for loss by rtpsynth's jitter buffer
(``RtpJBuf``, the RTP layer of the sippy SIP stack) and decoded by FFmpeg's
G.711 decoders (PyAV). What is ours is the policy: which packets belong to a
stream, how a lost packet becomes silence, and how two streams of one call
(a SIPREC session's agent and customer) are kept in step so that their
samples can be fed to one ``LiveCall`` as the two channels of a stereo call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import av
import numpy as np
from rtpsynth.RtpJBuf import RtpJBuf, RTPFrameType, RTPParseError

from monitor.audio import resample

G711 = {0: ("PCMU", "pcm_mulaw"), 8: ("PCMA", "pcm_alaw")}
"""Static RTP payload types we take (RFC 3551): μ-law and A-law, 8 kHz, mono."""
CLOCK_RATE = 8000
"""G.711's RTP clock and sample rate."""
JITTER_PACKETS = 8
"""Packets the jitter buffer holds to put late ones back in order (160 ms at 20 ms packets)."""
MAX_GAP_S = 1.0
"""A loss longer than this is not filled with silence sample by sample: the
stream restarts there (a sender that paused, or changed its clock)."""
SILENT_AFTER_S = 0.3
"""A stream that has sent nothing for this long (wall time) while the other
sends is taken to be silent (muted, or a sender that suppresses silence): it is
padded with silence so the other speaker's audio is not held back."""


@dataclass
class RtpStats:
    """What arrived on one stream, for the log and the report."""

    packets: int = 0
    """Packets taken into the stream."""
    lost: int = 0
    """Packets the jitter buffer reported missing (their time is filled with silence)."""
    rejected: int = 0
    """Datagrams dropped: not RTP, another payload type, or from an address not the call's."""


@dataclass
class RtpStream:
    """One direction of audio: packets in, 8 kHz samples out, in the order and timing the sender meant."""

    payload_type: int
    """The G.711 payload type agreed in the SDP answer (0 or 8)."""
    stats: RtpStats = field(default_factory=RtpStats)
    last_packet_at: float | None = None
    """Monotonic time of the latest packet taken, None before the first."""

    def __post_init__(self):
        self._jitter = RtpJBuf(JITTER_PACKETS)
        self._decoder = av.CodecContext.create(G711[self.payload_type][1], "r")
        self._decoder.sample_rate = CLOCK_RATE
        self._decoder.layout = "mono"
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0

    def receive(self, datagram: bytes, now: float | None = None) -> None:
        """Take one UDP datagram; audio it completes becomes pending samples."""
        if len(datagram) < 12 or datagram[1] & 0x7F != self.payload_type:
            # Telephone events (DTMF), comfort noise and stray traffic are not speech.
            self.stats.rejected += 1
            return
        try:
            frames = self._jitter.udp_in(datagram, 0)
        except RTPParseError:
            self.stats.rejected += 1
            return
        self.last_packet_at = time.monotonic() if now is None else now
        for frame in frames:
            if frame.content.type == RTPFrameType.ERS:
                lost = frame.content.ts_diff
                self.stats.lost += max(1, frame.content.lseq_end - frame.content.lseq_start + 1)
                if lost <= MAX_GAP_S * CLOCK_RATE:
                    self._append(np.zeros(lost, np.float32))
                continue
            self.stats.packets += 1
            self._append(self._decode(frame.rtp_data))

    def _decode(self, payload: bytes) -> np.ndarray:
        decoded = [f.to_ndarray().reshape(-1) for f in self._decoder.decode(av.Packet(payload))]
        if not decoded:
            return np.zeros(0, np.float32)
        return np.concatenate(decoded).astype(np.float32) / 32768.0

    def _append(self, samples: np.ndarray) -> None:
        if len(samples):
            self._pending.append(samples)
            self._pending_samples += len(samples)

    @property
    def pending(self) -> int:
        """8 kHz samples received and not yet taken."""
        return self._pending_samples

    def pad_to(self, samples: int) -> None:
        """Silence up to ``samples`` pending (a stream that sends nothing while its speaker is silent)."""
        if samples > self._pending_samples:
            self._append(np.zeros(samples - self._pending_samples, np.float32))

    def take(self, samples: int) -> np.ndarray:
        """The oldest ``samples`` pending samples (8 kHz)."""
        joined = np.concatenate(self._pending) if self._pending else np.zeros(0, np.float32)
        taken, rest = joined[:samples], joined[samples:]
        self._pending = [rest] if len(rest) else []
        self._pending_samples = len(rest)
        return taken


def take_in_step(streams: list[RtpStream], now: float | None = None) -> np.ndarray:
    """Audio all streams have, as 16 kHz float32 frames shaped (frames, len(streams)).

    Each stream's samples go to its own column, aligned sample for sample: a
    stream is taken only as far as every stream has audio, except that a stream
    silent for ``SILENT_AFTER_S`` is padded with silence to the longest one.
    """
    now = time.monotonic() if now is None else now
    longest = max(stream.pending for stream in streams)
    for stream in streams:
        if stream.last_packet_at is None or now - stream.last_packet_at > SILENT_AFTER_S:
            stream.pad_to(longest)
    ready = min(stream.pending for stream in streams)
    if ready == 0:
        return np.zeros((0, len(streams)), np.float32)
    return np.stack([resample(stream.take(ready), CLOCK_RATE) for stream in streams], axis=1)
