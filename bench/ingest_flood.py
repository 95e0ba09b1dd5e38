"""A client floods the WebSocket ingest: audio sent as fast as the socket takes it.

Measures, in this process (the server runs in-process on 127.0.0.1 with the real
model), how the server's memory and the call's undecoded backlog grow while
``--seconds`` of speech (the sample calls back to back) are pushed, with
backpressure (the default bound) and, for comparison in the same run, without
(``max_backlog_s`` infinite, what the ingest did before).

    python bench/ingest_flood.py [--seconds 180]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import threading
import time
from pathlib import Path

import numpy as np
from websockets.sync.client import connect

from monitor.audio import SAMPLE_RATE, load_call
from monitor.ingest import IngestOptions, IngestServer, serve
from monitor.livecall import load_transcriber
from monitor.match import matcher_for
from monitor.phrasebook import load_phrasebook
from monitor.stream import DecodeScheduler

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
TOKEN = "bench-token-0123456789abcdef"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def flood(server: IngestServer, url: str, audio: np.ndarray) -> dict:
    peak = {"rss": rss_mb(), "backlog": 0.0}
    before = peak["rss"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak["rss"] = max(peak["rss"], rss_mb())
            peak["backlog"] = max([peak["backlog"]] + [c.backlog_s() for c in list(server.calls.values())])
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    with connect(f"{url}/?token={TOKEN}", max_size=2**24, ping_interval=None) as ws:  # see remote.py
        ws.send(json.dumps({"uid": "flood", "language": "zh"}))
        json.loads(ws.recv(timeout=10))
        for offset in range(0, len(audio), 4096):
            ws.send(audio[offset : offset + 4096].tobytes())
        pushed_s = time.monotonic() - started
        ws.send("END_OF_AUDIO")
        while server.calls:
            time.sleep(0.1)
    done.set()
    sampler.join()
    return {"push_s": round(pushed_s, 1), "total_s": round(time.monotonic() - started, 1),
            "rss_growth_mb": round(peak["rss"] - before, 1), "peak_backlog_s": round(peak["backlog"], 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0, help="seconds of speech pushed per run")
    args = parser.parse_args()
    calls = [load_call(str(p)).agent for p in sorted(SAMPLES.glob("d*.wav"))]
    audio = np.concatenate(calls * math.ceil(args.seconds * SAMPLE_RATE / sum(map(len, calls))))
    audio = audio[: int(args.seconds * SAMPLE_RATE)].astype("<f4")

    phrasebook = load_phrasebook("broadband")
    scheduler = DecodeScheduler(load_transcriber(None, 1))
    server = IngestServer(scheduler, phrasebook, matcher_for(phrasebook), "broadband", IngestOptions(token=TOKEN))
    loop = asyncio.new_event_loop()
    started = loop.create_future()
    stop = asyncio.Event()
    serving = loop.create_task(serve(server, "127.0.0.1", 0, started, stop))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    port = asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(started), 10), loop).result(15)
    url = f"ws://127.0.0.1:{port}"

    flood(server, url, audio[: 10 * SAMPLE_RATE])  # warm-up: the model's first buffers are not the flood's
    results = {}
    # Backpressure first: memory the unbounded run frees would otherwise be reused, hiding growth.
    for name, bound in (("backpressure", IngestOptions.max_backlog_s), ("unbounded", math.inf)):
        server.options.max_backlog_s = bound
        results[name] = flood(server, url, audio)
        print(name, results[name], flush=True)
    audio_mb = audio.nbytes / 2**20
    print(f"{args.seconds:.0f} s of float32 audio = {audio_mb:.1f} MB pushed per run")
    print(f"RSS growth, backpressure / unbounded: {results['backpressure']['rss_growth_mb']} / "
          f"{results['unbounded']['rss_growth_mb']} MB; peak undecoded backlog "
          f"{results['backpressure']['peak_backlog_s']} / {results['unbounded']['peak_backlog_s']} s")
    loop.call_soon_threadsafe(stop.set)
    asyncio.run_coroutine_threadsafe(asyncio.wait_for(asyncio.shield(serving), 20), loop).result(30)
    scheduler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
