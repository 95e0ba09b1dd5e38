"""Role separation on mono calls: who said what, and whose forbidden phrase it was.

    PYTHONPATH=. python bench/roles.py [--encoder] [--live] [--cache DIR] [CALL.wav ...]

Prints, per set of calls:

1. voice features: the labelled turns of each call clustered into two voices,
   share of characters in the right cluster (the better of the two namings),
   for the cepstral statistics, for the vectors ``voices.py`` uses ("used":
   the speaker encoder when installed, else the same cepstrum) and, with
   ``--encoder``, mean-pooled Whisper encoder states (slow);
2. attribution: the whole mono path (Whisper, then ``roles.separate_roles``),
   share of transcript characters whose speaker is right, against the old
   rule (all mono speech is the agent's), and the share of characters left
   for review;
3. forbidden events: precision and recall against the labels for mono without
   roles, mono with roles, and the stereo original where there is one; and
   how many of the agent's labelled violations were found or held for review
   (待复核) rather than lost;
4. customer blamed: share of the customer's transcript characters labelled
   agent with confidence at or above ``REVIEW_BELOW`` (what could cost the agent
   points), batch and, with ``--live``, live;
5. with ``--live``: each call fed to a ``LiveCall`` in lockstep (as
   ``monitor live --file``): attribution of the sentences as labelled at their
   commit (null confidence counts as not right) and in the final report, the
   alerts on an agent's forbidden turn, and the alerts that name the agent
   surely on a customer's words.

Sets: the shared sample calls (one TTS voice, pitch-shifted for the customer;
stereo ones mixed down), ``tests/data/roles`` (TTS agents with real human
customers from corpus/real, and held-out TTS calls whose customers say
forbidden-like words; stereo files there are also scored as mono mixes), and
real-voice montages built here from corpus/real: two real speakers taking
turns in one channel (acoustics only, their words are read news).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.labelled import forbidden_agent_turns, overlaps  # noqa: E402
from monitor.asr import Segment, Transcriber  # noqa: E402
from monitor.audio import SAMPLE_RATE, CallAudio, load_call  # noqa: E402
from monitor.phrasebook import load_phrasebook  # noqa: E402
from monitor.pipeline import report_for_segments, with_roles  # noqa: E402
from monitor.report import is_violation  # noqa: E402
from monitor.roles import REVIEW_BELOW, fit_two_voices  # noqa: E402
from monitor.text import spoken  # noqa: E402
from monitor import voices as acoustic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MONITOR_SHARED", "/work/shared"))
REAL = SHARED / "corpus" / "real" / "wav"


# -- sets ----------------------------------------------------------------------


def labelled_calls(paths: list[str]) -> list[tuple[str, dict]]:
    calls = []
    for path in paths:
        labels_path = os.path.splitext(path)[0] + ".labels.json"
        if os.path.exists(labels_path):
            calls.append((path, json.loads(Path(labels_path).read_text(encoding="utf-8"))))
    return calls


def _read(path: Path) -> np.ndarray:
    from faster_whisper.audio import decode_audio

    return decode_audio(str(path), sampling_rate=SAMPLE_RATE)


def _halves(samples: np.ndarray) -> list[np.ndarray]:
    """Cut a recording in two at its quietest 50 ms near the middle."""
    hop = SAMPLE_RATE // 20
    energy = np.array([np.square(samples[i : i + hop]).mean() for i in range(0, len(samples) - hop, hop)])
    third = len(energy) // 3
    cut = (third + int(np.argmin(energy[third : 2 * third]))) * hop
    return [samples[:cut], samples[cut:]]


def montages() -> list[tuple[str, np.ndarray, dict]]:
    """Two real speakers alternating in one channel: thchs30 D4 (five
    utterances) against each speaker of one long recording, cut in two."""
    first = [_read(REAL / f"thchs30_D4_{n}.wav") for n in range(750, 755)]
    out = []
    others = ["aishell1_BAC009S0764W0121", "aishell3_SSB17110468", "aishell3_SSB19560155", "aishell3_SSB16070259"]
    for index, other in enumerate(others):
        second = _halves(_read(REAL / f"{other}.wav"))
        order = [("agent", first[index % 5]), ("customer", second[0]), ("agent", first[(index + 1) % 5]),
                 ("customer", second[1]), ("agent", first[(index + 2) % 5])]  # fmt: skip
        pieces, turns, t = [], [], 0.3
        for speaker, audio in order:
            audio = audio / (np.abs(audio).max() + 1e-9) * 0.7
            pieces += [np.zeros(int(t * SAMPLE_RATE) - sum(len(p) for p in pieces), np.float32), audio]
            turns.append({"speaker": speaker, "text": "", "start": t, "end": t + len(audio) / SAMPLE_RATE, "tags": []})
            t += len(audio) / SAMPLE_RATE + 0.5
        out.append((f"montage_D4_{other.split('_')[1]}", np.concatenate(pieces).astype(np.float32), {"turns": turns}))
    return out


# -- measures ------------------------------------------------------------------


def turn_weight(turn: dict) -> float:
    """Characters of a labelled turn (its seconds when it has no text)."""
    return len(spoken(turn["text"])) or (turn["end"] - turn["start"])


def clustering_accuracy(vectors: list[np.ndarray], turns: list[dict]) -> float:
    """Share of turn weight in the right one of two voices (best naming)."""
    voices = fit_two_voices(vectors, [t["end"] - t["start"] for t in turns])
    if voices is None:
        return float("nan")
    weights = np.array([turn_weight(t) for t in turns])
    side = np.array([voices.log_odds(v) > 0 for v in vectors])
    truth = np.array([t["speaker"] == "customer" for t in turns])
    right = weights[side == truth].sum() / weights.sum()
    return max(right, 1 - right)


def encoder_vectors(model, samples: np.ndarray, turns: list[dict]) -> list[np.ndarray]:
    """Whisper encoder output over each turn, mean-pooled (30 s window per turn)."""
    vectors = []
    for turn in turns:
        piece = samples[int(turn["start"] * SAMPLE_RATE) : int(turn["end"] * SAMPLE_RATE)][: 30 * SAMPLE_RATE]
        features = model.feature_extractor(piece, padding=0)
        frames = features.shape[1]
        padded = np.zeros((features.shape[0], 3000), np.float32)
        padded[:, :frames] = features
        states = np.array(model.encode(padded))[0]
        vectors.append(states[: max(1, frames // 2)].mean(axis=0))
    return vectors


TURN_SLACK_S = 0.3
"""How far outside a labelled turn's times a moment still counts as in it."""


def turn_at(turns: list[dict], t: float) -> dict:
    """The labelled turn that holds ``t`` (within ``TURN_SLACK_S``; of several, the one
    centred nearest), or, when none does, the one centred nearest."""
    inside = [x for x in turns if x["start"] - TURN_SLACK_S <= t <= x["end"] + TURN_SLACK_S]
    pool = inside or turns
    return min(pool, key=lambda x: abs((x["start"] + x["end"]) / 2 - t))


def speaker_at(turns: list[dict], t: float) -> str:
    return turn_at(turns, t)["speaker"]


def attribution(segments: list[Segment], turns: list[dict], review_below: float) -> tuple[float, float, int]:
    """(share of characters with the right speaker, share under review, characters)."""
    right = doubtful = total = 0
    for segment in segments:
        pieces = segment.words or [segment]
        for piece in pieces:
            n = len(spoken(piece.text))
            total += n
            right += n * (speaker_at(turns, (piece.start + piece.end) / 2) == segment.speaker)
            doubtful += n * (segment.speaker_confidence is not None and segment.speaker_confidence < review_below)
    return (right / total if total else float("nan")), (doubtful / total if total else 0.0), total


def customer_blamed(segments: list[Segment], turns: list[dict]) -> tuple[int, int]:
    """(customer characters surely labelled agent, customer characters)."""
    blamed = total = 0
    for segment in segments:
        for piece in segment.words or [segment]:
            if speaker_at(turns, (piece.start + piece.end) / 2) != "customer":
                continue
            n = len(spoken(piece.text))
            total += n
            sure = segment.speaker_confidence is not None and segment.speaker_confidence >= REVIEW_BELOW
            blamed += n * (segment.speaker == "agent" and sure)
    return blamed, total


def live_run(path: str, phrasebook, transcriber, samples: np.ndarray | None = None):
    """A mono call (``samples``, else read from ``path``) fed to a LiveCall in lockstep:
    (sentences as labelled at their commit, alerts, final report)."""
    from monitor.livecall import LiveCall
    from monitor.match import matcher_for

    class Collect(list):
        def send(self, event):
            self.append(event)

    events = Collect()
    call = LiveCall("bench", phrasebook, matcher_for(phrasebook), [events], stereo=False, audio_path=path)
    samples = load_call(path, "mono").agent if samples is None else samples
    block = SAMPLE_RATE // 10
    for at in range(0, len(samples), block):
        call.feed(samples[at : at + block, None])
        call.catch_up(transcriber)
    call.end()
    call.catch_up(transcriber)
    at_commit = [Segment(e["start"], e["end"], e["text"], e["speaker"], speaker_confidence=e["speaker_confidence"])
                 for e in events if e["type"] == "segment"]  # fmt: skip
    return at_commit, [e for e in events if e["type"] == "alert"], call.report()


def transcript_segments(report: dict) -> list[Segment]:
    """A report's transcript sentences, with their speakers and confidences."""
    return [Segment(t["start"], t["end"], t["text"], t["speaker"], speaker_confidence=t["speaker_confidence"])
            for t in report["transcript"]]  # fmt: skip


def forbidden_counts(report: dict, labels: dict) -> tuple[int, int, int, int, int]:
    """(true events, reported events, labelled turns found, labelled turns,
    labelled turns found or held for review with a forbidden phrase in them)."""
    wanted = forbidden_agent_turns(labels)
    events = [e for e in report["events"] if is_violation(e)]  # deducted; held ones are in review
    held = [r for r in report.get("review", []) if r.get("forbidden")]
    true = sum(any(overlaps(e["start"], e["end"], t) for t in wanted) for e in events)
    found = [any(overlaps(e["start"], e["end"], t) for e in events) for t in wanted]
    flagged = [f or any(overlaps(r["start"], r["end"], t) for r in held) for f, t in zip(found, wanted)]
    return true, len(events), sum(found), len(wanted), sum(flagged)


def cached_transcript(transcriber: Transcriber, call: CallAudio, path: str, cache: Path | None) -> list[Segment]:
    """Whisper's sentences of ``call`` (read from ``path``), kept in ``cache`` between runs when
    given (keyed by the file's path, size and time): role separation can then be measured again
    in seconds."""
    if cache is None:
        return transcriber.transcribe_call(call)
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{call.customer is None}"
    kept = cache / (hashlib.sha1(key.encode()).hexdigest() + ".pickle")
    if kept.is_file():
        return pickle.loads(kept.read_bytes())
    segments = transcriber.transcribe_call(call)
    cache.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(pickle.dumps(segments))
    return segments


def ratio(a: int, b: int) -> str:
    return f"{a / b:.2f} ({a}/{b})" if b else "n/a (0/0)"


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calls", nargs="*", help="labelled calls (default: shared samples and tests/data/roles)")
    parser.add_argument("--encoder", action="store_true", help="also measure Whisper encoder states (slow)")
    parser.add_argument("--no-montage", action="store_true")
    parser.add_argument("--live", action="store_true", help="also feed each call to a live call in lockstep")
    parser.add_argument("--cache", type=Path, help="keep Whisper's transcripts here between runs")
    args = parser.parse_args()
    sets = {}
    if args.calls:
        sets["given"] = labelled_calls(args.calls)
    else:
        sets["samples"] = labelled_calls(sorted(glob.glob(str(SHARED / "samples" / "calls" / "*.wav"))))
        sets["tests/data/roles"] = labelled_calls(sorted(glob.glob(str(ROOT / "tests" / "data" / "roles" / "*.flac"))))
    transcriber = Transcriber()
    print(f"review below confidence {REVIEW_BELOW}")

    for name, calls in sets.items():
        print(f"\n== {name}: {len(calls)} calls")
        voice_rows, attribution_rows = [], []
        counts = {"mono, no roles": [0] * 5, "mono, roles": [0] * 5, "stereo": [0] * 5, "live mono": [0] * 5}
        blamed = {"batch": [0, 0], "live report": [0, 0]}
        # alerted agent forbidden turns, agent forbidden turns, alerts surely the agent's on a customer turn, alerts
        live_rows, live_alerts = [], [0, 0, 0, 0]
        for path, labels in calls:
            call = load_call(path, "mono")
            turns = labels["turns"]
            recording = acoustic.Recording(call.agent)
            started = time.perf_counter()
            cepstral = [acoustic.cepstral_vector(recording.mel, t["start"], t["end"]) for t in turns]
            cepstral_s = time.perf_counter() - started
            row = [clustering_accuracy(cepstral, turns)]
            started = time.perf_counter()
            row.append(clustering_accuracy([recording.describe(t["start"], t["end"]) for t in turns], turns))
            row.append(time.perf_counter() - started)
            if args.encoder:
                started = time.perf_counter()
                row.append(clustering_accuracy(encoder_vectors(transcriber.model, call.agent, turns), turns))
                row.append(time.perf_counter() - started)
            voice_rows.append((labels["call_id"], row, cepstral_s))

            raw = cached_transcript(transcriber, call, path, args.cache)
            phrasebook = load_phrasebook(labels.get("phrasebook", "broadband"))
            started = time.perf_counter()
            separated = with_roles(call, raw, phrasebook, separate=True)
            roles_s = time.perf_counter() - started
            before = attribution(raw, turns, REVIEW_BELOW)
            after = attribution(separated, turns, REVIEW_BELOW)
            attribution_rows.append((labels["call_id"], before, after, roles_s / call.duration_s))
            blamed["batch"] = [a + b for a, b in zip(blamed["batch"], customer_blamed(separated, turns))]
            if args.live:
                at_commit, alerts, live_report = live_run(path, phrasebook, transcriber)
                final = transcript_segments(live_report)
                known = [s for s in at_commit if s.speaker_confidence is not None]
                live_rows.append((labels["call_id"], attribution(at_commit, turns, REVIEW_BELOW),
                                  attribution(known, turns, REVIEW_BELOW), attribution(final, turns, REVIEW_BELOW)))
                blamed["live report"] = [a + b for a, b in zip(blamed["live report"], customer_blamed(final, turns))]
                wanted = forbidden_agent_turns(labels)
                live_alerts[0] += sum(any(overlaps(a["start"], a["end"], t) for a in alerts) for t in wanted)
                live_alerts[1] += len(wanted)
                live_alerts[2] += sum(not a["uncertain_speaker"] and speaker_at(turns, (a["start"] + a["end"]) / 2)
                                      == "customer" for a in alerts)  # fmt: skip
                live_alerts[3] += len(alerts)
                for k, v in enumerate(forbidden_counts(live_report, labels)):
                    counts["live mono"][k] += v

            for variant, segments in (("mono, no roles", raw), ("mono, roles", separated)):
                report = report_for_segments(
                    labels["call_id"], path, None, call.duration_s, phrasebook, segments, False, {}
                )
                for k, v in enumerate(forbidden_counts(report, labels)):
                    counts[variant][k] += v
            if labels.get("stereo"):
                stereo_call = load_call(path, "left")
                stereo_segments = with_roles(stereo_call, cached_transcript(transcriber, stereo_call, path, args.cache),
                                             phrasebook, True)
                report = report_for_segments(
                    labels["call_id"], path, None, stereo_call.duration_s, phrasebook, stereo_segments, True, {}
                )
                for k, v in enumerate(forbidden_counts(report, labels)):
                    counts["stereo"][k] += v

        print("voice features on labelled turns (share of characters in the right voice):")
        for call_id, row, seconds in voice_rows:
            extra = f"  whisper-encoder={row[3]:.2f} ({row[4]:.2f}s)" if args.encoder else ""
            print(f"  {call_id:28s} cepstral={row[0]:.2f} ({seconds:.3f}s)  used={row[1]:.2f} ({row[2]:.2f}s){extra}")
        print(f"  mean cepstral={np.nanmean([r[1][0] for r in voice_rows]):.3f}"
              f"  used={np.nanmean([r[1][1] for r in voice_rows]):.3f}"
              + (f"  whisper-encoder={np.nanmean([r[1][3] for r in voice_rows]):.3f}" if args.encoder else ""))  # fmt: skip
        print("attribution of transcript characters")
        print("  (all-agent rule -> roles; share under review; roles time / call time):")
        total = [0.0, 0.0, 0.0, 0]
        for call_id, before, after, rtf in attribution_rows:
            print(f"  {call_id:28s} {before[0]:.2f} -> {after[0]:.2f}  review={after[1]:.2f}  rtf={rtf:.4f}")
            total = [total[0] + before[0] * before[2], total[1] + after[0] * after[2],
                     total[2] + after[1] * after[2], total[3] + after[2]]  # fmt: skip
        if total[3]:
            print(f"  all: {total[0] / total[3]:.3f} -> {total[1] / total[3]:.3f}  review={total[2] / total[3]:.3f}")
        print("customer characters surely labelled agent (customer blamed):")
        for variant, (a, b) in blamed.items():
            if b:
                print(f"  {variant:16s} {ratio(a, b)}")
        if live_rows:
            print("live (lockstep): attribution of sentences as labelled at their commit (all; those with a")
            print("  confidence), and in the final report:")
            for call_id, at_commit, known, final in live_rows:
                print(f"  {call_id:28s} at commit {at_commit[0]:.2f}  known {known[0]:.2f}  report {final[0]:.2f}"
                      f"  report review={final[1]:.2f}")
            for index, name in enumerate(("at commit", "known", "report")):
                chars = sum(row[index + 1][2] for row in live_rows)
                right = sum(row[index + 1][0] * row[index + 1][2] for row in live_rows if row[index + 1][2])
                print(f"  all {name}: {right / chars:.3f}" if chars else f"  all {name}: n/a")
            print(f"  alerts: agent forbidden turns alerted {ratio(live_alerts[0], live_alerts[1])}, "
                  f"alerts surely naming the agent on a customer's words {ratio(live_alerts[2], live_alerts[3])}")
        print("forbidden events (precision = events on an agent's labelled forbidden turn; recall = such turns found;")
        print("  found or 待复核 = such turns found, or held for review with the phrase in them):")
        for variant, (true, reported, found, wanted, flagged) in counts.items():
            if reported or wanted:
                print(f"  {variant:16s} precision={ratio(true, reported)}  recall={ratio(found, wanted)}"
                      f"  found or 待复核={ratio(flagged, wanted)}")

    if not args.no_montage and not args.calls:
        print("\n== real-voice montages (two real speakers, one channel; their words are read news, so the")
        print("   voices are named by who opens the call; attribution = share of transcript characters right)")
        for call_id, samples, labels in montages():
            turns = labels["turns"]
            recording = acoustic.Recording(samples)
            vectors = [recording.describe(t["start"], t["end"]) for t in turns]
            clustered = clustering_accuracy(vectors, turns)
            described = [(v, t["end"] - t["start"]) for v, t in zip(vectors, turns) if v is not None]
            voices = fit_two_voices([v for v, _ in described], [w for _, w in described])
            separation = voices.separation if voices else float("nan")
            mono = CallAudio(call_id, samples, None, SAMPLE_RATE, 1)
            separated = with_roles(mono, transcriber.transcribe_call(mono), load_phrasebook("broadband"), separate=True)
            batch = attribution(separated, turns, REVIEW_BELOW)
            live = ""
            if args.live:
                at_commit, _, report = live_run(call_id, load_phrasebook("broadband"), transcriber, samples)
                final = transcript_segments(report)
                known = [s for s in at_commit if s.speaker_confidence is not None]
                live = (f"  live: known at commit {attribution(known, turns, REVIEW_BELOW)[0]:.2f}"
                        f" report {attribution(final, turns, REVIEW_BELOW)[0]:.2f}")
            print(f"  {call_id:28s} clustering={clustered:.2f} separation={separation:.1f}"
                  f"  batch attribution={batch[0]:.2f} review={batch[1]:.2f}{live}")


if __name__ == "__main__":
    main()
