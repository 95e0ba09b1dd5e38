import json
import os
import re

import pytest
from call_fixtures import d02_fault_rude, hit, phrasebook, seg

from monitor import report as report_module
from monitor.report import (
    REQUIRED_KEYS,
    SCHEMA,
    build_report,
    is_complete_report,
    phrasebook_numbers,
    redact_text,
    render_html,
    write_html,
    write_json,
)
from monitor.rules import judge

HOTLINE = {"66616567"}
TIMING = {"asr_s": 2.1, "total_s": 2.4, "rtf": 0.1}


def make_report(segments, hits, stereo=True, redact=True, duration_s=23.3):
    book = phrasebook()
    judgement = judge(segments, hits, book, duration_s=duration_s, stereo=stereo)
    return build_report(
        "d02_fault_rude", "calls/d02_fault_rude.wav", "A1002", duration_s, book, segments, judgement, TIMING, redact
    )


def test_report_has_contract_shape():
    report = make_report(*d02_fault_rude())

    assert set(REQUIRED_KEYS) <= set(report)
    assert report["schema"] == SCHEMA == "monitor.report/1"
    assert report["phrasebook"]["id"] == "broadband" and report["phrasebook"]["version"] == "2024.1"
    assert report["transcript"][0] == {
        "start": 0.5, "end": 10.2, "speaker": "agent",
        "text": "您好，我是家庭宽带维护的工程师小赵，负责您使用设备的维护，现在由我来处理故障，请问可以吗？",
        "speaker_confidence": None,
    }  # fmt: skip
    forbidden = [e for e in report["events"] if e["kind"] == "forbidden"]
    assert forbidden[0]["canonical"] == "刚才不是跟你说了，怎么又问？"
    assert forbidden[0]["start"] == 14.6 and forbidden[0]["end"] == 17.0
    assert forbidden[0]["article"] == "第36条"
    assert forbidden[0]["severity"] == "major"
    assert forbidden[0]["instead"] == "我们正在排查，原因查明后将及时向您反馈"
    for event in report["events"]:
        assert {"kind", "phrase_id", "canonical", "heard", "start", "end", "speaker", "confidence", "article"} <= set(event)
    checks = {c["id"]: c for c in report["checks"]}
    assert checks["greeting"]["passed"] is True and checks["farewell"]["passed"] is False
    assert report["score"] == {"total": 55, "max": 100, "deductions": report["score"]["deductions"]}
    assert all({"reason", "points"} <= set(d) for d in report["score"]["deductions"])
    assert [c["say"] for c in report["coaching"]][1] == "我们正在排查，原因查明后将及时向您反馈"
    assert report["timing"] == TIMING
    json.dumps(report)  # plain JSON types only


def test_agent_silent_report_has_null_checks_and_renders():
    report = make_report([seg(1.0, 5.0, "喂？有人吗？", "customer")], [])

    assert report["checks"] is None
    assert report["score"]["total"] is None
    assert "坐席全程未发言" in render_html(report, None)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("我的电话是13900123456。", "我的电话是***********。"),
        ("号码一三九零零一二三四五六", "号码***********"),
        ("号码1三九零零1234", "号码*********"),
        ("身份证11010519491231002X，谢谢", "身份证******************，谢谢"),
        ("请拨66616567号联络", "请拨66616567号联络"),
        ("请拨666616567号联络", "请拨666616567号联络"),
        ("请拨六六六一六五六七号联络", "请拨六六六一六五六七号联络"),
        ("请拨66616568号联络", "请拨********号联络"),
        ("3号楼2024年，工号123456", "3号楼2024年，工号123456"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text, HOTLINE) == expected


def test_phrasebook_numbers_are_the_hotline():
    assert phrasebook_numbers(phrasebook()) == HOTLINE


def test_report_redacts_transcript_and_heard_unless_asked_not_to():
    segments = [seg(0.5, 6.0, "我的号码一三九零零一二三四五六，热线是666616567"), seg(7.0, 9.0, "一三九零零一二三四五六", "customer")]
    hits = [hit("bb.farewell", 0.5, 6.0, "热线是666616567"), hit("bb.forbidden.no_way", 1.0, 3.0, "号码一三九零零一二三四五六")]

    redacted = make_report(segments, hits, stereo=True)
    assert redacted["transcript"][0]["text"] == "我的号码***********，热线是666616567"
    assert redacted["transcript"][1]["text"] == "***********"
    assert {e["heard"] for e in redacted["events"]} == {"热线是666616567", "号码***********"}
    violation = next(d for d in redacted["score"]["deductions"] if d["source"] == "bb.forbidden.no_way")
    assert violation["evidence"]["heard"] == "号码***********"
    assert redacted["redacted"] is True

    kept = make_report(segments, hits, stereo=True, redact=False)
    assert kept["transcript"][1]["text"] == "一三九零零一二三四五六"


def test_write_json_is_atomic_and_leaves_no_temp_file(tmp_path):
    report = make_report(*d02_fault_rude())
    path = tmp_path / "d02.json"
    write_json(report, path)
    write_json(report, path)  # overwriting works too

    assert os.listdir(tmp_path) == ["d02.json"]
    assert json.loads(path.read_text(encoding="utf-8")) == report
    assert "刚才不是跟你说了" in path.read_text(encoding="utf-8")  # readable Chinese, not \u escapes


def test_failed_write_keeps_old_report_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "d02.json"
    path.write_text("old", encoding="utf-8")

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(report_module.os, "replace", fail)
    with pytest.raises(OSError):
        write_json(make_report(*d02_fault_rude()), path)
    assert os.listdir(tmp_path) == ["d02.json"]
    assert path.read_text(encoding="utf-8") == "old"


def test_is_complete_report(tmp_path):
    good = tmp_path / "good.json"
    write_json(make_report(*d02_fault_rude()), good)
    truncated = tmp_path / "truncated.json"
    truncated.write_text(good.read_text(encoding="utf-8")[:200], encoding="utf-8")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"schema": "monitor.report/0"}), encoding="utf-8")

    assert is_complete_report(good)
    assert not is_complete_report(truncated)
    assert not is_complete_report(other)
    assert not is_complete_report(tmp_path / "missing.json")


def test_html_escapes_transcript_script():
    segments, hits = d02_fault_rude()
    segments[1].text = "<script>alert('x')</script>网络又断了"
    html = render_html(make_report(segments, hits), "d02_fault_rude.wav")

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;网络又断了" in html


def test_html_marks_events_and_seeks_the_player(tmp_path):
    report = make_report(*d02_fault_rude())
    path = tmp_path / "d02.html"
    write_html(report, path, "d02_fault_rude.wav")
    html = path.read_text(encoding="utf-8")

    assert '<audio id="player" controls preload="metadata" src="d02_fault_rude.wav">' in html
    assert re.search(r'<mark\s+class="major" data-t="14.6"[^>]*>刚才不是跟你说了，怎么又问</mark>', html)
    assert re.search(r'<mark\s+class="critical" data-t="20.2"[^>]*>不知道，这事不归我管</mark>', html)
    assert "我们正在排查，原因查明后将及时向您反馈" in html  # coaching
    assert not re.search(r'(src|href)="(https?:)?//', html)  # self-contained
    assert os.listdir(tmp_path) == ["d02.html"]


def test_html_without_audio_has_no_player():
    assert "<audio" not in render_html(make_report(*d02_fault_rude()), None)
