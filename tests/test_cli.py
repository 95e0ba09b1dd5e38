"""The command line as users and scripts drive it: real processes, real model, real samples."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import SAMPLES, sample

from monitor.report import is_complete_report


def monitor(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_transcribe_json_gives_segments_words_and_timing():
    result = monitor("transcribe", sample("d06_no_greeting_rude"), "--json", check=True)
    data = json.loads(result.stdout)
    assert data["duration_s"] == pytest.approx(14.1, abs=0.1)
    assert {"start", "end", "speaker", "text", "words"} <= set(data["segments"][0])
    assert "下班" in "".join(s["text"] for s in data["segments"])
    assert data["timing"]["rtf"] > 0 and data["timing"]["model"] == "base"


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda d: d / "missing.wav", "no such file"),
        (lambda d: (d / "empty.wav").write_bytes(b"") and d / "empty.wav" or d / "empty.wav", "empty file"),
        (lambda d: (d / "notes.mp3").write_text("not audio") and d / "notes.mp3", "cannot be decoded"),
    ],
)
def test_bad_audio_is_one_line_naming_the_file(tmp_path, make, reason):
    path = make(tmp_path)
    result = monitor("transcribe", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and str(path) in result.stderr and reason in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_is_one_line_and_debug_shows_traceback():
    result = monitor("transcribe", sample("d06_no_greeting_rude"), "--model", "no-such-model-xyz")
    assert result.returncode == 1 and "no-such-model-xyz" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    debug = monitor("--debug", "transcribe", sample("d06_no_greeting_rude"), "--model", "no-such-model-xyz")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_usage_error_exits_2():
    assert monitor("score").returncode == 2
    assert monitor("nonsense").returncode == 2


def test_match_prints_hits_as_json():
    result = monitor("match", "你問我我問誰，這事不歸我館", "--phrasebook", "broadband", check=True)
    hits = json.loads(result.stdout)
    assert {"kind", "phrase_id", "canonical", "heard", "confidence"} <= set(hits[0])
    assert {h["canonical"] for h in hits} >= {"你问我，我问谁？"}
    assert all(h["kind"] == "forbidden" for h in hits) and len(hits) == 2


def test_malformed_phrasebook_fails_before_any_audio(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\nphrases:\n  - id: x\n    kind: forbidden\n    text: [unclosed\n")
    out = tmp_path / "out"
    result = monitor("score", sample("d06_no_greeting_rude"), "--out", str(out), "--phrasebook", str(bad))
    assert result.returncode == 1 and str(bad) in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_batch_with_corrupt_file_scores_the_rest_then_resumes(tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    for call_id in ("d02_fault_rude", "d06_no_greeting_rude"):
        shutil.copy(SAMPLES / f"{call_id}.wav", calls)
        shutil.copy(SAMPLES / f"{call_id}.labels.json", calls)
    (calls / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    out = tmp_path / "out"

    first = monitor("score", str(calls), "--out", str(out))
    assert first.returncode == 1, first.stderr
    assert "broken.wav" in first.stderr
    rows = {r["call_id"]: r for r in csv.DictReader(open(out / "summary.csv", encoding="utf-8"))}
    assert rows["broken"]["status"] == "error" and "broken.wav" in rows["broken"]["error"]
    assert rows["d02_fault_rude"]["status"] == "ok" and int(rows["d02_fault_rude"]["violations"]) >= 2
    assert rows["d06_no_greeting_rude"]["greeting"] == "False"
    for call_id in ("d02_fault_rude", "d06_no_greeting_rude"):
        assert is_complete_report(out / f"{call_id}.json")
        assert (out / f"{call_id}.html").stat().st_size > 1000
    report = json.loads((out / "d02_fault_rude.json").read_text(encoding="utf-8"))
    assert report["schema"] == "monitor.report/1" and report["agent_id"] == "A1002"
    assert report["phrasebook"]["id"] == "broadband"

    # An interrupted batch: one report half-written, the other complete.
    (out / "d06_no_greeting_rude.json").write_text('{"schema": "monitor.report/1", "call_')
    mtime = os.stat(out / "d02_fault_rude.json").st_mtime_ns
    (calls / "broken.wav").unlink()
    second = monitor("score", str(calls), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert os.stat(out / "d02_fault_rude.json").st_mtime_ns == mtime, "a complete report is not redone"
    assert is_complete_report(out / "d06_no_greeting_rude.json")
    rows = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    assert sorted(r["call_id"] for r in rows) == ["d02_fault_rude", "d06_no_greeting_rude"]
