"""The command line as users and scripts drive it: real processes, real model, real samples."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SAMPLES, sample
from processes import default_sigint

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
    rows = summary_rows(out)
    assert [rows[c]["status"] for c in ("d02_fault_rude", "d06_no_greeting_rude")] == ["ok", "ok"]
    assert sorted(rows) == ["broken", "d02_fault_rude", "d06_no_greeting_rude"], "the first run's rows stay"


def summary_rows(out) -> dict[str, dict]:
    return {r["call_id"]: r for r in csv.DictReader(open(out / "summary.csv", encoding="utf-8"))}


def test_usage_errors_exit_2_on_one_line(tmp_path):
    headerless = tmp_path / "calls.csv"
    headerless.write_text("d06_no_greeting_rude.wav,A1001,c1\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    call = sample("d06_no_greeting_rude")
    cases = {
        "--workers 0": ["score", call, "--out", str(tmp_path / "o"), "--workers", "0"],
        "unknown phrasebook": ["score", call, "--out", str(tmp_path / "o"), "-p", "no_such_book"],
        "unknown phrasebook for match": ["match", "你好", "-p", "no_such_book"],
        "manifest without header": ["score", call, "--out", str(tmp_path / "o"), "--manifest", str(headerless)],
        "missing --out": ["score", call],
        "--out is a file": ["score", call, "--out", str(a_file)],
        "--out cannot be created": ["score", call, "--out", str(a_file / "sub")],
    }
    for case, args in cases.items():
        result = monitor(*args)
        assert result.returncode == 2, (case, result.stderr)
        assert "Traceback" not in result.stderr, case
        assert result.stderr.strip().splitlines()[-1].startswith(("monitor: error:", "monitor score: error:", "monitor match: error:")), case
    assert not (tmp_path / "o").exists(), "nothing is written after a usage error"


def test_debug_and_phrasebook_are_accepted_after_the_command(tmp_path):
    result = monitor("match", "你问我我问谁", "--debug", "-p", "broadband", check=True)
    assert json.loads(result.stdout)[0]["kind"] == "forbidden"
    missing = monitor("score", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o"), "--debug")
    assert missing.returncode == 1 and "unrecognized" not in missing.stderr


def test_same_stem_inputs_each_scored_summary_merges_forged_report_redone(tmp_path):
    from conftest import encode
    from faster_whisper.audio import decode_audio

    calls, out = tmp_path / "calls", tmp_path / "out"
    calls.mkdir()
    audio = decode_audio(sample("d06_no_greeting_rude"))
    encode(calls / "x.flac", audio[None, :], 16000, "flac")
    whole = (SAMPLES / "d06_no_greeting_rude.wav").read_bytes()
    (calls / "x.wav").write_bytes(whole[: len(whole) * 2 // 3])  # cut short: the header still declares 14 s
    (calls / "x.labels.json").write_text("{not json")  # a bad sidecar affects its calls only

    first = monitor("score", str(calls), "--out", str(out), "--no-progress")
    assert first.returncode == 0, first.stderr
    rows = summary_rows(out)
    assert sorted(rows) == ["x", "x_wav"], "x.flac keeps the stem, x.wav gets its extension added"
    from monitor.batch import BatchOptions, plan_jobs

    alone, _ = plan_jobs([str(calls / "x.wav")], BatchOptions(out_dir=str(out)))
    assert alone[0].call_id == "x_wav", "the same id when x.wav is scored on its own"
    assert all(r["status"] == "ok" and "x.labels.json" in r["warning"] for r in rows.values())
    assert "truncated" in rows["x_wav"]["warning"] and "truncated" not in rows["x"]["warning"]
    assert float(rows["x_wav"]["duration_s"]) < float(rows["x"]["duration_s"]) - 3
    reports = {c: json.loads((out / f"{c}.json").read_text(encoding="utf-8")) for c in rows}
    assert reports["x"]["audio"].endswith("x.flac") and reports["x_wav"]["audio"].endswith("x.wav")
    assert reports["x"]["audio_sha256"] != reports["x_wav"]["audio_sha256"]
    assert reports["x_wav"]["warnings"] and not reports["x"]["warnings"]

    # A mistyped path: an error row, and the earlier rows stay.
    typo = monitor("score", str(calls / "y.wav"), "--out", str(out))
    assert typo.returncode == 1 and "y.wav" in typo.stderr
    rows = summary_rows(out)
    assert rows["y"]["status"] == "error" and rows["x"]["status"] == rows["x_wav"]["status"] == "ok"

    # A forged report (another recording's hash) is scored again; the genuine one is not.
    forged = {**reports["x_wav"], "audio_sha256": reports["x"]["audio_sha256"], "score": {**reports["x_wav"]["score"], "total": 100}}
    (out / "x_wav.json").write_text(json.dumps(forged), encoding="utf-8")
    mtime = os.stat(out / "x.json").st_mtime_ns
    again = monitor("score", str(calls), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert os.stat(out / "x.json").st_mtime_ns == mtime
    redone = json.loads((out / "x_wav.json").read_text(encoding="utf-8"))
    assert redone["audio_sha256"] == reports["x_wav"]["audio_sha256"] and redone["score"] == reports["x_wav"]["score"]
    assert sorted(summary_rows(out)) == ["x", "x_wav", "y"]


def _children(pid: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def _running(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead; only its parent (here: init) has yet to reap it


def _batch_under_way(tmp_path) -> tuple[subprocess.Popen, Path]:
    """A 4-call batch with 2 workers, returned once its first report is written; and its --out."""
    import time

    calls, out = tmp_path / "calls", tmp_path / "out"
    calls.mkdir()
    for i in range(4):
        shutil.copy(SAMPLES / "d06_no_greeting_rude.wav", calls / f"c{i}.wav")
    batch = subprocess.Popen(
        [sys.executable, "-m", "monitor", "score", str(calls), "--out", str(out), "--workers", "2"],
        start_new_session=True, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(out.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.1)  # the workers are busy scoring
    return batch, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_the_workers_and_keeps_what_finished(tmp_path):
    import signal
    import time

    batch, out = _batch_under_way(tmp_path)
    workers = [p for p in _children(batch.pid) if "resource_tracker" not in open(f"/proc/{p}/cmdline").read()]
    os.killpg(batch.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole process group
    sent = time.monotonic()
    stderr = batch.communicate(timeout=60)[1]
    # 26 s before: the workers went on with the queue. (A generous bound: the machine is shared.)
    assert time.monotonic() - sent < 10, stderr
    assert batch.returncode == 130 and "interrupted" in stderr, stderr
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr
    assert workers and not any(_running(p) for p in workers)
    finished = sorted(p.stem for p in out.glob("*.json"))
    rows = summary_rows(out)
    assert sorted(rows) == finished and all(r["status"] == "ok" for r in rows.values())
    assert len(finished) < 4


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc")
def test_workers_die_with_a_killed_parent(tmp_path):
    import time

    batch, _ = _batch_under_way(tmp_path)
    workers = _children(batch.pid)
    batch.kill()
    batch.wait()
    deadline = time.monotonic() + 30
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers and not any(_running(p) for p in workers)


def test_a_sidecar_naming_an_unknown_phrasebook_fails_that_call_only(tmp_path):
    calls, out = tmp_path / "calls", tmp_path / "out"
    calls.mkdir()
    shutil.copy(SAMPLES / "d06_no_greeting_rude.wav", calls / "a.wav")
    (calls / "a.labels.json").write_text(json.dumps({"phrasebook": "no_such_book", "agent_id": ["not", "text"]}))
    result = monitor("score", str(calls), str(tmp_path / "missing.wav"), "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = summary_rows(out)
    assert rows["a"]["status"] == "error" and "no_such_book" in rows["a"]["error"]
    assert "agent_id" in rows["a"]["warning"]
    assert rows["missing"]["status"] == "error"


def test_summary_write_error_is_one_line_naming_it(tmp_path):
    from monitor.batch import write_summary
    from monitor.errors import MonitorError

    with pytest.raises(MonitorError, match=r"gone/summary.csv: cannot write the summary \("):
        write_summary([], str(tmp_path / "gone"))
