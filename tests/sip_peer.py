"""A SIP caller for the tests: INVITE, ACK, BYE over UDP, and G.711 RTP from a recording.

It speaks the protocol as a phone system (or an intruder) would, written out
by hand so that a test can also send what no well-behaved stack sends. RTP
packets are made by rtpsynth (the same RTP library the server's stack uses)
and μ-law encoded by its ``linear2ulaw``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
import wave
from array import array

import numpy as np
from rtpsynth.RtpSynth import RtpSynth
from rtpsynth.RtpUtils import linear2ulaw

from monitor.audio import load_call

PACKET_SAMPLES = 160
"""20 ms of 8 kHz audio: the usual G.711 packet."""


def phone_band(path: str, seconds: float | None = None) -> list[np.ndarray]:
    """A recording's channels at 8 kHz (pairs of 16 kHz samples averaged), int16, optionally cut short."""
    call = load_call(path, agent_channel="left")
    channels = [call.agent] if call.customer is None else [call.agent, call.customer]
    out = []
    for samples in channels:
        if seconds is not None:
            samples = samples[: int(seconds * 16000)]
        pairs = samples[: len(samples) // 2 * 2].reshape(-1, 2).mean(axis=1)
        out.append(np.clip(pairs * 32767, -32768, 32767).astype(np.int16))
    return out


def write_wav_8k(path: str, samples: np.ndarray) -> None:
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())


def sdp_offer(rtp_ports: list[int], labels: list[str] | None = None, formats: str = "0 101",
              host: str = "127.0.0.1") -> str:
    lines = ["v=0", f"o=tester 1 1 IN IP4 {host}", "s=test", f"c=IN IP4 {host}", "t=0 0"]
    for index, port in enumerate(rtp_ports):
        lines += [f"m=audio {port} RTP/AVP {formats}", "a=rtpmap:0 PCMU/8000", "a=sendonly"]
        if labels:
            lines.append(f"a=label:{labels[index]}")
    return "\r\n".join(lines) + "\r\n"


def siprec_body(sdp: str, metadata: str, boundary: str = "recording-boundary") -> tuple[str, str]:
    body = (f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}"
            f"--{boundary}\r\nContent-Type: application/rs-metadata+xml\r\n\r\n{metadata}\r\n"
            f"--{boundary}--\r\n")
    return body, f"multipart/mixed;boundary={boundary}"


class SipPeer:
    """One caller: a UDP socket, one dialog at a time."""

    def __init__(self, server_port: int, host: str = "127.0.0.1", timeout_s: float = 15.0):
        self.server = (host, server_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(timeout_s)
        self.port = self.sock.getsockname()[1]
        self.call_id = uuid.uuid4().hex
        self.tag = uuid.uuid4().hex[:8]
        self.cseq = 0
        self.to_tag: str | None = None
        self.requests_from_server: list[str] = []
        """Requests the server sent us (its BYE), each answered 200."""

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, body: str = "", content_type: str = "application/sdp",
             extra: tuple[str, ...] = (), cseq: int | None = None) -> None:
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        to = f"<sip:monitor@{self.server[0]}>" + (f";tag={self.to_tag}" if self.to_tag else "")
        headers = [
            f"{method} sip:monitor@{self.server[0]}:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport",
            "Max-Forwards: 70", f"To: {to}", f"From: <sip:tester@127.0.0.1>;tag={self.tag}",
            f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}", f"Contact: <sip:tester@127.0.0.1:{self.port}>",
            *extra,
        ]
        if body:
            headers.append(f"Content-Type: {content_type}")
        headers.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(headers) + "\r\n\r\n" + body).encode(), self.server)

    def final_response(self) -> str:
        """The next final (>= 200) response; provisional ones and server requests are handled on the way."""
        while True:
            message = self.sock.recv(65535).decode()
            if not message.startswith("SIP/2.0 "):
                self._answer(message)
                continue
            code = int(message.split()[1])
            if code >= 200:
                tag = re.search(r"^To:.*;tag=([^;\r\n]+)", message, re.MULTILINE | re.IGNORECASE)
                if tag:
                    self.to_tag = tag.group(1)
                return message

    def invite(self, body: str, content_type: str = "application/sdp", extra: tuple[str, ...] = ()) -> str:
        self.send("INVITE", body, content_type, extra)
        response = self.final_response()
        self.send("ACK", cseq=self.cseq)  # every final answer to an INVITE is ACKed (RFC 3261 17.1.1.3)
        if status(response) >= 300:
            self.to_tag = None  # no dialog: the next INVITE starts afresh
        return response

    def bye(self) -> str:
        self.send("BYE")
        return self.final_response()

    def wait_for_request(self, method: str, timeout_s: float) -> str | None:
        """The server's next request of ``method`` (e.g. its BYE), answered 200; None if none came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                message = self.sock.recv(65535).decode()
            except socket.timeout:
                return None
            if not message.startswith("SIP/2.0 "):
                self._answer(message)
                if message.startswith(method + " "):
                    return message
        return None

    def _answer(self, request: str) -> None:
        self.requests_from_server.append(request)
        if request.startswith("ACK "):
            return
        head = request.split("\r\n\r\n", 1)[0].split("\r\n")
        keep = [h for h in head[1:] if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        self.sock.sendto(("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0"]) + "\r\n\r\n").encode(), self.server)


def status(response: str) -> int:
    return int(response.split()[1])


def answered_rtp_ports(response: str) -> list[int]:
    """Our RTP destinations: the m= ports of the server's SDP answer, in order."""
    return [int(port) for port in re.findall(r"^m=audio (\d+) ", response, re.MULTILINE)]


def digest_authorization(challenge: str, user: str, password: str, uri: str, method: str = "INVITE") -> str:
    """An ``Authorization`` header answering a ``WWW-Authenticate: Digest`` challenge (RFC 2617, no qop)."""
    realm = re.search(r'realm="([^"]*)"', challenge).group(1)
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
    return (f'Authorization: Digest username="{user}",realm="{realm}",nonce="{nonce}",uri="{uri}",'
            f'response="{response}",algorithm=MD5')


def send_rtp(channels: list[np.ndarray], ports: list[int], speed: float = 1.0, host: str = "127.0.0.1",
             source_host: str = "127.0.0.1") -> None:
    """Play int16 8 kHz channels to ``ports`` (one stream each) as μ-law RTP, paced at ``speed`` × real time."""
    senders = []
    for _ in channels:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((source_host, 0))
        senders.append(sock)
    synths = [RtpSynth(8000, 20) for _ in channels]
    started = time.monotonic()
    try:
        for index in range(0, min(len(c) for c in channels), PACKET_SAMPLES):
            for sock, synth, samples, port in zip(senders, synths, channels, ports):
                payload = linear2ulaw(array("h", samples[index:index + PACKET_SAMPLES].tobytes()))
                sock.sendto(synth.next_pkt(len(payload), 0, pload=payload), (host, port))
            ahead = started + (index + PACKET_SAMPLES) / 8000 / speed - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    finally:
        for sock in senders:
            sock.close()
