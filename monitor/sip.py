"""SIP ingest: calls from the phone system (a PBX or an SBC), monitored live.

``monitor sip --listen HOST:PORT`` is a SIP user agent server (RFC 3261). The
SIP side is the sippy stack: its transaction layer and its UA state machine
answer INVITEs, retransmit, take ACKs and BYEs. What is ours is the policy:

- who may call: source addresses in ``allowed`` (loopback only by default)
  and, when a password is set, digest authentication (RFC 2617 nonces from
  sippy's hash oracle, so no per-call state before the caller is known);
- what we take: G.711 μ-law or A-law audio (RFC 3551 types 0 and 8) over RTP,
  received on a UDP port of our own for each stream (``rtp.py``);
- who is speaking: a plain call's one stream is a mono call (roles separated
  as for any mono call); a SIPREC session (RFC 7866: a multipart body with two
  audio streams and the recording metadata) is a stereo call, one stream per
  speaker, the agent's picked by ``agent_aor`` in the metadata, else by
  ``agent_stream``;
- each call is a ``LiveCall`` on the process's ``DecodeScheduler``, exactly as
  a WebSocket call is: alerts as they happen, the report at the end.

Every call ends: on the caller's BYE, after ``rtp_timeout_s`` without audio,
at ``max_call_s``, or when the server stops; the last three send a BYE, and
the report of a call cut short says so (``status: interrupted``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeXml

from monitor.audio import SAMPLE_RATE
from monitor.callid import new_call_id, shown
from monitor.livecall import MAX_BACKLOG_S, LiveCall, finish_call
from monitor.rtp import G711, RtpStream, take_in_step
from monitor.stream import NODE_DECODE_WORKERS, NODE_MAX_CALLS

log = logging.getLogger(__name__)

SERVER_STOPPED = "the server stopped"
"""Why the calls in progress end when the server stops (their reports say it)."""
MAX_STREAMS = 2
"""Audio streams one call may bring: a plain call has one, a SIPREC session two."""
MAX_UNDECODED_S = 3 * MAX_BACKLOG_S
"""RTP cannot be told to wait: a call whose audio is this far ahead of its
decoding (an overloaded node) is ended as interrupted, so memory stays bounded."""
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass
class SipOptions:
    """How ``monitor sip`` takes calls."""

    allowed: tuple = LOOPBACK
    """Networks (``ipaddress`` networks) whose INVITEs are answered; others get 403."""
    username: str | None = None
    """With ``password``: the digest user a caller must authenticate as."""
    password: str | None = None
    """Digest authentication is required when set (RFC 2617, MD5, realm ``realm``)."""
    realm: str = "call-conduct-monitor"
    """The digest realm."""
    rtp_address: str = "127.0.0.1"
    """Where our RTP sockets listen, and the address the SDP answer gives callers."""
    max_calls: int = NODE_MAX_CALLS
    """Calls served at once; more get 486 Busy Here."""
    rtp_timeout_s: float = 30.0
    """A connected call that sends no audio this long is ended (BYE) as interrupted."""
    max_call_s: float = 7200.0
    """The longest call taken; at this length it is ended (BYE) as interrupted."""
    agent_stream: int = 1
    """SIPREC: which audio stream (1 or 2, in the order of the SDP's m= lines) is the agent's."""
    agent_aor: str | None = None
    """SIPREC: the agent is the participant whose address of record contains this
    (``sip:1001@``); it overrides ``agent_stream`` when the metadata names one."""


class RefusedCall(Exception):
    """An INVITE we answer with an error: ``code`` and ``reason`` go back to the caller."""

    def __init__(self, code: int, reason: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.reason = reason


@dataclass
class OfferedStream:
    """One audio m= line of the caller's SDP offer."""

    address: str
    """Where the caller sends from / expects us to reply (the c= address)."""
    port: int
    payload_type: int
    """The first G.711 type the offer lists."""
    label: str | None = None
    """SIPREC ``a=label``: ties the stream to the recording metadata."""


@dataclass
class Offer:
    streams: list[OfferedStream]
    agent_index: int = 0
    """Which of ``streams`` is the agent's (SIPREC); a single stream is a mono call."""
    siprec: bool = False


# --- the offer ----------------------------------------------------------------------
def parse_offer(body, options: SipOptions) -> Offer:
    """The audio streams of an INVITE's body (SDP, or SIPREC's multipart SDP + metadata)."""
    if body is None:
        raise RefusedCall(488, "Not Acceptable Here", "no SDP offer (late offers are not supported)")
    try:
        body.parse()
        content = body.content
        sdp, metadata = content, None
        if body.getType() == "multipart/mixed":
            parts = {part.getType(): part for part in content.parts}
            sdp_part = parts.get("application/sdp")
            if sdp_part is None:
                raise RefusedCall(488, "Not Acceptable Here", "a multipart body without SDP")
            sdp_part.parse()
            sdp = sdp_part.content
            metadata_part = parts.get("application/rs-metadata+xml")
            metadata = str(metadata_part.content) if metadata_part is not None else None
        elif body.getType() != "application/sdp":
            raise RefusedCall(415, "Unsupported Media Type", f"a body of type {shown(body.getType())}")
        streams = [_offered_stream(section) for section in sdp.sections]
    except RefusedCall:
        raise
    except Exception as exc:  # the stack's parsers assert on malformed input
        raise RefusedCall(400, "Bad Request", f"an SDP offer that cannot be read ({type(exc).__name__})") from None
    audio = [s for s in streams if s is not None]
    if not audio:
        raise RefusedCall(488, "Not Acceptable Here", "no G.711 (PCMU/PCMA) audio stream offered")
    if len(audio) > MAX_STREAMS or len(audio) != len(streams):
        raise RefusedCall(488, "Not Acceptable Here", f"{len(streams)} media streams offered; one or two G.711 audio streams are taken")
    offer = Offer(audio, siprec=metadata is not None or len(audio) == 2)
    if len(audio) == 2:
        offer.agent_index = _agent_index(audio, metadata, options)
    return offer


def _offered_stream(section) -> OfferedStream | None:
    media = section.m_header
    if media.stype.lower() != "audio" or not media.transport.upper().startswith("RTP/AVP"):
        return None
    types = [pt for pt in media.formats if pt in G711]
    if not types or not 0 < media.port < 65536:
        return None
    label = next((a.value for a in section.a_headers if a.name == "label"), None)
    address = str(section.c_header.addr) if section.c_header is not None else ""
    return OfferedStream(address=address, port=media.port, payload_type=types[0], label=label)


def _agent_index(streams: list[OfferedStream], metadata: str | None, options: SipOptions) -> int:
    """Which stream is the agent's: from the metadata when ``agent_aor`` names a participant, else by position."""
    if metadata and options.agent_aor:
        label = _label_sent_by(metadata, options.agent_aor)
        for index, stream in enumerate(streams):
            if label is not None and stream.label == label:
                return index
    return min(max(options.agent_stream, 1), len(streams)) - 1


def _label_sent_by(metadata: str, aor: str) -> str | None:
    """RFC 7865 metadata: the label of the stream the participant whose AOR contains ``aor`` sends."""
    try:
        root = SafeXml.fromstring(metadata)
    except Exception as exc:
        log.warning("sip: recording metadata not read (%s); streams taken in order", type(exc).__name__)
        return None
    local = lambda element: element.tag.rsplit("}", 1)[-1]  # noqa: E731 (namespaces vary by vendor)
    participants = {}
    for element in root.iter():
        if local(element) == "participant":
            aors = [child.get("aor", "") for child in element.iter() if local(child) == "nameID"]
            participants[element.get("participant_id")] = aors
    labels = {element.get("stream_id"): next((c.text for c in element if local(c) == "label"), None)
              for element in root.iter() if local(element) == "stream"}
    for element in root.iter():
        if local(element) != "participantstreamassoc":
            continue
        if any(aor in candidate for candidate in participants.get(element.get("participant_id"), [])):
            sent = next((c.text for c in element if local(c) == "send"), None)
            return labels.get(sent)
    return None


def answer_sdp(offer: Offer, ports: list[int], address: str) -> str:
    """Our SDP answer: the one codec we took per stream, received only (we never send audio)."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=monitor {int(time.time())} 1 IN {family} {address}", "s=call-conduct-monitor",
             f"c=IN {family} {address}", "t=0 0"]
    for stream, port in zip(offer.streams, ports):
        name = G711[stream.payload_type][0]
        lines += [f"m=audio {port} RTP/AVP {stream.payload_type}", f"a=rtpmap:{stream.payload_type} {name}/8000",
                  "a=recvonly"]
        if stream.label is not None:
            lines.append(f"a=label:{stream.label}")
    return "\r\n".join(lines) + "\r\n"


def _transaction_manager():
    """sippy's transaction manager, minus its traceback on stderr for every datagram that is not UTF-8."""
    from sippy.SipTransactionManager import SipTransactionManager

    class Transactions(SipTransactionManager):
        def handleIncoming(self, data_in, ra, server, rtime):
            if isinstance(data_in, bytes):
                try:
                    data_in.decode()
                except UnicodeDecodeError:
                    log.debug("sip %s: a datagram that is not SIP (not UTF-8) dropped", ra)
                    return
            super().handleIncoming(data_in, ra, server, rtime)

    return Transactions


class _SipTrace:
    """Where sippy writes every SIP message it sends and receives: our log, at
    DEBUG (``MONITOR_LOG=DEBUG``), not stderr (messages carry callers' credentials)."""

    def write(self, *parts, **_ignored) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", "".join(str(part) for part in parts).rstrip())


# --- one call -----------------------------------------------------------------------
@dataclass
class SipCall:
    """One answered INVITE: its RTP sockets, its ``LiveCall`` and the thread that feeds it."""

    live: LiveCall
    offer: Offer
    caller: str
    """The host the INVITE came from: RTP from elsewhere is dropped."""
    sockets: list[socket.socket]
    streams: list[RtpStream]
    ua: object = None
    ended_by: str | None = None
    """Why we end the call ourselves (None while it runs, or when the caller hung up)."""
    hung_up: threading.Event = field(default_factory=threading.Event)


class SipServer:
    """Answers INVITEs and monitors each call; runs sippy's event loop on the calling thread (``run``)."""

    def __init__(self, scheduler, phrasebook, matcher, options: SipOptions, sinks: list | None = None,
                 report_dir: str | None = None, on_finish=None):
        self.scheduler = scheduler
        self.phrasebook = phrasebook
        self.matcher = matcher
        self.options = options
        self.sinks = sinks or []
        self.report_dir = report_dir
        self.on_finish = on_finish
        """``on_finish(call)`` runs once a call is decoded and its report written (e.g. to store it)."""
        self.calls: dict[str, SipCall] = {}
        self.cut_by_shutdown = 0
        """Calls the server's stopping interrupted."""
        self.refused = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._config: dict | None = None

    # --- sippy's side (its event loop thread) --------------------------------------------
    def run(self, host: str, port: int, started=None) -> None:
        """Serve until ``stop()``; ``started(port)`` is called once the SIP socket is bound."""
        from sippy.Core.EventDispatcher import ED2
        from sippy.SipConf import SipConf
        from sippy.Time.Timeout import Timeout

        SipConf.my_uaname = "Call Conduct Monitor"
        SipConf.allow_formats = tuple(G711)
        self._config = {"_sip_address": host, "_sip_port": port, "_sip_logger": _SipTrace()}
        manager = _transaction_manager()(self._config, self._request)
        self._config["_sip_tm"] = manager
        bound = port or self._bound_port(manager)
        log.info("sip: listening on %s:%d (udp)", host, bound)
        if started is not None:
            started(bound)
        Timeout(self._check_stop, 0.2, -1)
        try:
            ED2.loop()  # until _check_stop finds no call left
        finally:
            manager.shutdown()
        for thread in self._threads:
            thread.join(timeout=60)

    @staticmethod
    def _bound_port(manager) -> int:
        servers = list(manager.l4r.cache_l2s.values())
        return servers[0].uopts.laddress[1] if servers else 0

    def stop(self) -> None:
        """Stop taking calls; calls in progress are ended (BYE) and their reports say so."""
        self._stopping.set()

    def _check_stop(self) -> None:
        from sippy.Core.EventDispatcher import ED2

        if self._stopping.is_set():
            for call in list(self.calls.values()):
                self._hang_up(call, SERVER_STOPPED)
            if not self.calls:
                ED2.breakLoop()

    def _request(self, req, sip_t):
        """sippy's callback for a request outside any dialog."""
        method = req.getMethod()
        if req.getHFBody("to").getTag() is not None:
            return req.genResponse(481, "Call Leg/Transaction Does Not Exist"), None, None
        if method == "OPTIONS":  # SBCs ping their recorders with OPTIONS
            return req.genResponse(200, "OK"), None, None
        if method != "INVITE":
            return req.genResponse(501, "Not Implemented"), None, None
        source = req.getSource()[0]
        try:
            self._admit(req, source)
        except RefusedCall as refused:
            self._note_refusal(source, refused)
            response = req.genResponse(refused.code, refused.reason)
            if refused.code == 401:
                from sippy.SipHeader import SipHeader
                from sippy.SipWWWAuthenticate import SipWWWAuthenticate

                response.appendHeader(SipHeader(body=SipWWWAuthenticate(realm=self.options.realm)))
            return response, None, None
        from sippy.UA import UA

        ua = UA(self._config, event_cb=lambda event, ua: self._event(event, ua, source))
        return ua.recvRequest(req, sip_t)

    def _note_refusal(self, source: str, refused: RefusedCall) -> None:
        self.refused += 1
        log.warning("sip %s: INVITE refused: %d %s (%s)", source, refused.code, refused.reason, refused)

    def _admit(self, req, source: str) -> None:
        """Refuse callers we don't serve, before any state is kept for them."""
        try:
            address = ipaddress.ip_address(source.strip("[]"))
        except ValueError:
            raise RefusedCall(403, "Forbidden", f"source {shown(source)} is not an address") from None
        if not any(address in network for network in self.options.allowed):
            raise RefusedCall(403, "Forbidden", f"source {address} is not in the allowed networks")
        if self.options.password is not None:
            if req.countHFs("authorization") == 0:
                raise RefusedCall(401, "Unauthorized", "no credentials yet (challenged)")
            credentials = req.getHFBody("authorization")
            try:
                valid = (credentials.username == self.options.username
                         and credentials.realm == self.options.realm
                         and credentials.verify(self.options.password, "INVITE"))
            except Exception:
                valid = False
            if not valid:
                raise RefusedCall(401, "Unauthorized", "wrong or stale credentials")
        if self._stopping.is_set():
            raise RefusedCall(503, "Service Unavailable", "the server is stopping")
        with self._lock:
            if len(self.calls) >= self.options.max_calls:
                raise RefusedCall(486, "Busy Here", f"{len(self.calls)} calls already running")

    def _event(self, event, ua, source: str) -> None:
        """UA events: the caller's INVITE (answer it), BYE or CANCEL (the call ended)."""
        from sippy.CCEvents import CCEventConnect, CCEventDisconnect, CCEventFail, CCEventTry
        from sippy.MsgBody import MsgBody

        if isinstance(event, CCEventTry):
            sip_call_id, _caller, _callee, body, _auth, _name = event.getData()
            try:
                call = self._start(ua, body, str(sip_call_id), source)
            except RefusedCall as refused:
                self._note_refusal(source, refused)
                ua.recvEvent(CCEventFail((refused.code, refused.reason)))
                return
            ua.recvEvent(CCEventConnect((200, "OK", MsgBody(answer_sdp(call.offer, [s.getsockname()[1] for s in call.sockets],
                                                                      self.options.rtp_address)))))
        elif isinstance(event, (CCEventDisconnect, CCEventFail)):
            call = next((c for c in list(self.calls.values()) if c.ua is ua), None)
            if call is not None:
                call.hung_up.set()

    def _hang_up(self, call: SipCall, why: str) -> None:
        """End a call from our side (sippy thread): BYE to the caller."""
        from sippy.CCEvents import CCEventDisconnect

        if call.ended_by is None:
            call.ended_by = why
        if call.ua is not None and not call.hung_up.is_set():
            call.ua.recvEvent(CCEventDisconnect())
        call.hung_up.set()

    # --- our side ---------------------------------------------------------------------
    def _start(self, ua, body, sip_call_id: str, caller: str) -> SipCall:
        offer = parse_offer(body, self.options)
        sockets = []
        try:
            for _ in offer.streams:
                family = socket.AF_INET6 if ":" in self.options.rtp_address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind((self.options.rtp_address, 0))
                sock.setblocking(False)
        except OSError as exc:
            for sock in sockets:
                sock.close()
            raise RefusedCall(500, "Server Internal Error", f"no RTP port on {self.options.rtp_address}: {exc}") from None
        stereo = len(offer.streams) == 2
        # The client's Call-ID is its own name for the call; ours is the report's.
        external_ref = re.sub(r"[^\w.@:+-]", "_", sip_call_id)[:120]
        live = LiveCall(new_call_id("sip"), self.phrasebook, self.matcher, list(self.sinks), stereo=stereo,
                        agent_channel="left" if stereo else "mono", audio_path=f"sip:{external_ref}",
                        external_ref=external_ref)
        streams = [RtpStream(s.payload_type) for s in offer.streams]
        call = SipCall(live=live, offer=offer, caller=caller, sockets=sockets, streams=streams, ua=ua)
        with self._lock:
            self.calls[live.call_id] = call
        live.scheduler = self.scheduler
        self.scheduler.add(live)
        thread = threading.Thread(target=self._serve_call, args=(call,), name=f"sip-{live.call_id}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        log.info("sip %s: call %s (%s) answered: %d stream(s)%s", call.caller, live.call_id, external_ref,
                 len(streams), " (SIPREC)" if offer.siprec else "")
        return call

    def _serve_call(self, call: SipCall) -> None:
        """Receive the call's RTP until it ends, then finish it: on every path."""
        from sippy.Core.EventDispatcher import ED2

        live = call.live
        interrupted: str | None = "the server failed while serving the call"
        try:
            interrupted = self._receive(call)
        except Exception:
            log.exception("sip: call %s: receiving failed", live.call_id)
        finally:
            if interrupted and not call.hung_up.is_set():
                ED2.callFromThread(self._hang_up, call, interrupted)
            for sock in call.sockets:
                sock.close()
            try:
                live.end(interrupted)
                live.wait()
                finish_call(live, None, self.report_dir)
                if self.on_finish is not None:
                    self.on_finish(live)
            except Exception:
                log.exception("sip: call %s: finishing failed", live.call_id)
            finally:
                live.close()
                with self._lock:
                    self.calls.pop(live.call_id, None)
                    self.cut_by_shutdown += live.interrupted == SERVER_STOPPED
            lost = sum(s.stats.lost for s in call.streams)
            log.info("sip: call %s done: %.1fs of audio, %d alert(s), %d packet(s) lost", live.call_id,
                     live.duration_s, len(live.alerts), lost)

    @staticmethod
    def _channels(call: SipCall, now: float | None = None):
        """The streams' audio in step, the agent's as the left channel (the answer keeps the offer's order)."""
        frames = take_in_step(call.streams, now)
        return frames[:, ::-1] if call.offer.agent_index == 1 else frames

    def _receive(self, call: SipCall) -> str | None:
        """Feed the call; None when the caller hung up, else why we ended it."""
        live = call.live
        started = time.monotonic()
        by_socket = dict(zip(call.sockets, call.streams))
        senders = {call.caller, *(s.address for s in call.offer.streams)}
        max_samples = int(self.options.max_call_s * SAMPLE_RATE)

        def room() -> int:
            return max(0, max_samples - round(live.duration_s * SAMPLE_RATE))

        while not call.hung_up.is_set():
            if call.ended_by:
                return call.ended_by
            readable, _, _ = select.select(call.sockets, [], [], 0.05)
            for sock in readable:
                stream = by_socket[sock]
                try:
                    datagram, (host, *_rest) = sock.recvfrom(2048)
                except OSError:
                    continue
                if host not in senders:
                    stream.stats.rejected += 1  # RTP injected from elsewhere
                    continue
                stream.receive(datagram)
            frames = self._channels(call)
            if len(frames):
                free = room()
                live.feed(frames[:free])
                if len(frames) >= free:
                    return f"the call reached the longest this server takes ({self.options.max_call_s:g} s)"
            if live.backlog_s() > MAX_UNDECODED_S:
                return f"decoding fell {live.backlog_s():.0f} s behind the call (this node is overloaded)"
            heard = [s.last_packet_at for s in call.streams if s.last_packet_at is not None]
            if time.monotonic() - max(heard, default=started) > self.options.rtp_timeout_s:
                return f"no audio for {self.options.rtp_timeout_s:g} s"
        # The caller hung up: what every stream sent before the BYE is the call's end
        # (every stream counts as silent now, so each is padded to the longest).
        live.feed(self._channels(call, now=math.inf)[:room()])
        return call.ended_by


class StoredAlerts:
    """A sink keeping each alert in the results database as it is raised, and marking it withdrawn when a
    `retracted` line says so, as the web app's live calls do."""

    def __init__(self, store, phrasebook):
        self.store = store
        self.phrasebook = phrasebook

    def send(self, event: dict) -> None:
        if event.get("type") == "alert":
            try:
                severity = self.phrasebook.by_id(event["phrase_id"]).severity
            except StopIteration:
                severity = None
            self.store.save_alert(event, agent_id=None, severity=severity, phrasebook=self.phrasebook.id)
        elif event.get("type") == "retracted":
            self.store.retract_alert(event)

    def close(self) -> None:
        pass


# --- the command --------------------------------------------------------------------
PASSWORD_ENV = "MONITOR_SIP_PASSWORD"


def add_sip_arguments(parser) -> None:
    from monitor.phrasebook import add_phrasebook_argument

    parser.add_argument("--listen", required=True, metavar="[HOST:]PORT", help="the SIP (UDP) address to answer on")
    add_phrasebook_argument(parser, default="broadband", help="the code calls are checked against (default broadband)")
    parser.add_argument("--allow", action="append", metavar="CIDR", default=None,
                        help="networks whose INVITEs are answered (repeatable; default: loopback only)")
    parser.add_argument("--digest-user", metavar="USER", help="require digest authentication as USER "
                        f"(password from {PASSWORD_ENV})")
    parser.add_argument("--rtp-address", metavar="HOST",
                        help="address of our RTP sockets and of the SDP answer (default: the --listen host)")
    parser.add_argument("--agent-stream", type=int, choices=(1, 2), default=1,
                        help="SIPREC: the agent's audio stream, in the order of the offer's m= lines (default 1)")
    parser.add_argument("--agent-aor", metavar="TEXT",
                        help="SIPREC: the agent is the participant whose address of record contains TEXT")
    parser.add_argument("--max-calls", type=int, default=NODE_MAX_CALLS, help=f"calls served at once (default {NODE_MAX_CALLS})")
    parser.add_argument("--rtp-timeout", type=float, default=30.0, metavar="S",
                        help="end a call that sends no audio for S seconds (default 30)")
    parser.add_argument("--max-call-s", type=float, default=7200.0, metavar="S", help="the longest call taken")
    parser.add_argument("--report", metavar="DIR", help="write each call's report (JSON + HTML) to DIR")
    parser.add_argument("--db", metavar="URL", help="save each call's report to the results database too")
    parser.add_argument("--webhook", metavar="URL", help="POST every alert as JSON to URL")
    parser.add_argument("--model", default=None, help="Whisper model (default: the embedded base model)")
    parser.add_argument("--decode-workers", type=int, default=NODE_DECODE_WORKERS,
                        help=f"decoders shared by all calls (default {NODE_DECODE_WORKERS})")


def run_sip(args) -> int:
    """``monitor sip``: answer calls until SIGTERM or Ctrl-C. Returns 1 when calls were cut short by stopping."""
    import os
    import signal
    import sys

    from monitor.alerts import StdoutSink, WebhookSink
    from monitor.errors import MonitorError, UsageError
    from monitor.ingest import parse_listen
    from monitor.livecall import PartialFilter, load_transcriber
    from monitor.match import matcher_for
    from monitor.phrasebook import load_phrasebook
    from monitor.stream import DecodeScheduler

    host, port = parse_listen(args.listen)
    try:
        allowed = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in args.allow) if args.allow else LOOPBACK
    except ValueError as exc:
        raise UsageError(f"--allow: {exc}") from None
    password = os.environ.get(PASSWORD_ENV) or None
    if args.digest_user and not password:
        raise UsageError(f"--digest-user {args.digest_user}: set the password in {PASSWORD_ENV}")
    if not args.digest_user and any(not (n.is_loopback or n.is_private) for n in allowed):
        raise UsageError("--allow: a public network may call only with digest authentication (--digest-user)")
    if args.max_calls < 1 or args.decode_workers < 1:
        raise UsageError("--max-calls and --decode-workers: at least 1")
    options = SipOptions(allowed=allowed, username=args.digest_user, password=password if args.digest_user else None,
                         rtp_address=args.rtp_address or host, max_calls=args.max_calls,
                         rtp_timeout_s=args.rtp_timeout, max_call_s=args.max_call_s,
                         agent_stream=args.agent_stream, agent_aor=args.agent_aor)
    if options.rtp_address in ("0.0.0.0", "::"):
        raise UsageError("--rtp-address: the SDP answer needs an address callers can reach, not a wildcard")
    phrasebook = load_phrasebook(args.phrasebook)
    matcher = matcher_for(phrasebook)
    store = None
    if args.db:
        from monitor.store import open_store

        store = open_store(args.db)
    webhook = WebhookSink(args.webhook) if args.webhook else None
    sinks = [PartialFilter(StdoutSink())] + ([webhook] if webhook else []) + ([StoredAlerts(store, phrasebook)] if store else [])
    transcriber = load_transcriber(args.model, args.decode_workers)
    scheduler = DecodeScheduler(transcriber, workers=args.decode_workers)
    server = SipServer(scheduler, phrasebook, matcher, options, sinks, args.report,
                       on_finish=(lambda call: store.save_report(call.report(), started_at=call.started_at)) if store else None)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())

    def started(bound: int) -> None:
        print(f"monitor sip: listening on sip:{host}:{bound} (udp)", file=sys.stderr, flush=True)

    try:
        server.run(host, port, started)
    except OSError as exc:
        raise MonitorError(f"--listen {args.listen}: {exc.strerror or exc}") from None
    finally:
        scheduler.close()
    status = 1 if server.cut_by_shutdown else 0
    if webhook is not None and webhook.close():
        status = 1
    return status
