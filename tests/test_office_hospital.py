"""The office (第二篇) and hospital (第三篇) phrasebooks, the shared compliance part and the
``include:`` mechanism that brings it in; every bundled phrasebook cites real articles."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from monitor.asr import Segment
from monitor.errors import MonitorError
from monitor.match import matcher_for
from monitor.phrasebook import PHRASEBOOK_DIR, bundled_phrasebooks, load_phrasebook
from test_match import segments_from, with_known_misses
from test_kinds import ACCEPTING_GIFTS

HERE = Path(__file__).parent
SEALED = sorted((HERE.parent / "bench" / "data" / "office" / "sealed").glob("batch*.yaml"))
"""Batches written before the rules were changed for them (their first looks are in bench/conduct_rules.py)."""
TABLE = yaml.safe_load((HERE / "compliance_cases.yaml").read_text(encoding="utf-8"))
"""Lines of the agent (or, with ``speaker: customer``, the customer) that must raise their
``expect``ed kind, or nothing (``absent_kind: forbidden``); see the file's header."""
CASES = TABLE + [case for path in SEALED for case in yaml.safe_load(path.read_text(encoding="utf-8"))]
"""The table and the sealed batches: every line is run (a ``known_miss`` must stay missed)."""
CODES = (HERE / "data" / "codes_of_conduct.txt").read_text(encoding="utf-8")
"""The codes of conduct the phrasebooks are made from (a copy of the project's seed text)."""
COMPLIANCE_KINDS = {"bribery", "private_deal", "over_promising", "refusing_contact", "refusing_outright", "disclosure"}


def forbidden_hits(case: dict):
    phrasebook = load_phrasebook(case["phrasebook"])
    segments = segments_from(case["text"], case.get("speaker", "agent"))
    return [h for h in matcher_for(phrasebook).match_segments(segments) if h.kind == "forbidden"]


def case_id(case: dict) -> str:
    return f"{case.get('expect', 'polite')}-{case['phrasebook'][:3]}-{case['text'][:14]}"


@pytest.mark.parametrize("case", with_known_misses(CASES), ids=[case_id(c) for c in CASES])
def test_case(case):
    hits = forbidden_hits(case)
    if "expect" not in case:
        assert not hits, f"{case['text']!r} raised {[(h.phrase_id, h.heard) for h in hits]}"
        return
    found = [h for h in hits if case["expect"] in (h.category, h.phrase_id)]
    assert found, f"{case['expect']} not found in {case['text']!r}: {[(h.phrase_id, h.heard) for h in hits]}"
    phrase = load_phrasebook(case["phrasebook"]).by_id(found[0].phrase_id)
    assert found[0].article == phrase.article and phrase.instead and phrase.instead_article
    assert found[0].heard.replace(" ", "") in case["text"].replace(" ", "")


def test_cases_recall_and_precision_and_cover_every_rule():
    # the table's lines (the sealed batches' misses are the lexicon's kinds mostly: their first looks are the measure)
    positives = [c for c in TABLE if "expect" in c]
    negatives = [c for c in TABLE if "absent_kind" in c]
    found = sum(any(c["expect"] in (h.category, h.phrase_id) for h in forbidden_hits(c)) for c in positives)
    false_alarms = sum(bool(forbidden_hits(c)) for c in negatives)
    assert len(positives) >= 60 and len(negatives) >= 40
    assert {c.get("type") for c in negatives} >= {"refusal", "qualified", "customer_forbidden_like", "privacy"}
    assert found / len(positives) >= 0.9 and found / (found + false_alarms) >= 0.95
    # the table's positives, and conduct8's acceptances (tests/test_kinds.py: the table is the meaning model's training data)
    raised = {h.phrase_id for c in positives + [{"phrasebook": book, "text": text} for book, text in ACCEPTING_GIFTS]
              for h in forbidden_hits(c)}
    rules = {p.id for p in load_phrasebook("hospital").included_phrases}
    assert rules and rules <= raised, sorted(rules - raised)


# -- the phrasebooks ---------------------------------------------------------------


def test_office_and_hospital_are_bundled_and_the_compliance_part_is_not_a_phrasebook():
    assert {"office", "hospital"} <= set(bundled_phrasebooks())
    assert "compliance" not in bundled_phrasebooks()
    with pytest.raises(MonitorError, match="no such phrasebook"):
        load_phrasebook("compliance")
    office = load_phrasebook("office")
    assert {p.text for p in office.in_category("greeting")} == {"您好", "您早", "请问您找谁"}
    assert [p.text for p in office.in_category("farewell")] == ["再见"]
    assert {(c.id, c.article) for c in office.checks} == {("greeting", "3.1.5"), ("farewell", "3.1.5")}
    assert {k: v.article for k, v in office.forbidden_kinds.items()} == {"mocking": "3.1.3", "scolding": "3.1.3",
                                                                         "swearing": "3.1.4", "shirking": "3.1.6"}
    hospital = load_phrasebook("hospital")
    assert hospital.by_id("hos.forbidden.cannot_treat").text == "这病我们这儿看不了，你自己想办法"
    assert hospital.forbidden_kinds["shirking"].article == "二、(一)"


@pytest.mark.parametrize(
    "name, articles",
    [
        ("hospital", {"bribery": "二、(三)", "disclosure": "二、(六)", "refusing_outright": "二、(一)",
                      "over_promising": "第五篇 三、第6条 忌用行为(5)"}),
        ("office", {"bribery": "3.2.5", "private_deal": "3.2.5", "disclosure": "3.4.3",
                    "refusing_contact": "第五篇 三、第6条 忌用行为(1)"}),
        ("broadband", {"bribery": "第14条", "over_promising": "第13条", "private_deal": "第五篇 一、第9条"}),
        ("customer_service", {"bribery": "二、第6条", "refusing_contact": "三、第6条 忌用行为(1)"}),
        ("investment", {"bribery": "客户接待第5条", "private_deal": "工作纪律第5条", "disclosure": "岗位规范第10条"}),
    ],
)
def test_included_kinds_cite_the_including_codes_article_where_it_has_one(name, articles):
    phrasebook = load_phrasebook(name)
    assert {p.category for p in phrasebook.included_phrases} == COMPLIANCE_KINDS
    assert all(p.id.startswith("compliance.") and p.kind == "forbidden" and p.rule for p in phrasebook.included_phrases)
    cited = {p.category: p.article for p in phrasebook.included_phrases}
    assert {k: cited[k] for k in articles} == articles
    assert not {p.id for p in phrasebook.included_phrases} & {p.id for p in phrasebook.phrases}


def test_the_same_words_cite_each_codes_own_article():
    said = "红包我就收下了，谢谢您啊"
    expected = {"hospital": "二、(三)", "office": "3.2.5", "broadband": "第14条", "investment": "客户接待第5条",
                "customer_service": "二、第6条"}
    for name, article in expected.items():
        [hit] = [h for h in matcher_for(load_phrasebook(name)).match_text(said) if h.kind == "forbidden"]
        assert (hit.category, hit.article, hit.method) == ("bribery", article, "rule")
        assert hit.canonical.startswith("收受礼金、吃拿卡要：")


def test_a_customers_offer_is_not_the_agents_violation():
    matcher = matcher_for(load_phrasebook("hospital"))
    segments = [
        Segment(0.0, 3.0, "医生，这是一点心意，红包您收下吧", "customer"),
        Segment(3.5, 6.0, "心意我领了，红包您拿回去，我们拒收红包", "agent"),
        Segment(7.0, 9.0, "那我就不客气了，红包我收下了", "agent"),
    ]
    forbidden = [h for h in matcher.match_segments(segments) if h.kind == "forbidden"]
    assert [(h.speaker, h.category) for h in forbidden] == [("agent", "bribery")]
    assert 7.0 <= forbidden[0].start < 9.0


def test_match_command_finds_the_new_phrasebooks_by_id():
    for name, said, category in (("hospital", "今天不看了，明天再来吧", "refusing_outright"),
                                 ("office", "咱们私下签，不走公司", "private_deal")):
        done = subprocess.run([sys.executable, "-m", "monitor", "match", said, "--phrasebook", name],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert category in {h["category"] for h in json.loads(done.stdout)}


# -- every article cited is one of the codes' -------------------------------------

PARTS = {m.group(1): m.start() for m in re.finditer(r"^(第[一二三四五]篇)", CODES, re.MULTILINE)}
HEADINGS = {"投诉处理": "如何处理客户投诉"}
"""Article labels that the text heads otherwise."""
TOKEN = re.compile(r"第[一二三四五]篇|[一二三四五六七八九十]+、|第\d+条|\([一二三四五六七八九十\d]+\)|\d+(?:\.\d+)+|(?:(?!第)[\u4e00-\u9fff])+")


def part_text(name: str) -> str:
    starts = sorted(PARTS.values())
    start = PARTS[name]
    return CODES[start: next((s for s in starts if s > start), len(CODES))]


def cites_the_codes(article: str, own_part: str) -> bool:
    """Whether ``article`` (第36条, 二、第5条, 三、第6条 忌用行为(5), 客户接待第5条, 3.1.5, 二、(一),
    第五篇 一、第9条) names a place in the codes: each of its markers is found, in order, in its part."""
    tokens = TOKEN.findall(article)
    if "".join(tokens).replace(" ", "") != article.replace(" ", ""):
        return False
    part = tokens.pop(0) if tokens and tokens[0] in PARTS else own_part
    text, at, headed = part_text(part), 0, False
    for token in tokens:
        number = re.fullmatch(r"第(\d+)条", token)
        if number and headed:  # an item under a heading: 5、 or 5. or (5)
            pattern = rf"(?<![\d.]){number.group(1)}[、.](?!\d)|\({number.group(1)}\)"
        else:
            pattern = re.escape(HEADINGS.get(token, token))
        found = re.compile(pattern).search(text, at)
        if found is None:
            return False
        at, headed = found.end(), True
    return bool(tokens)


def test_the_article_check_refuses_what_the_codes_do_not_have():
    assert cites_the_codes("3.1.5", "第二篇") and cites_the_codes("二、(六)", "第三篇")
    assert cites_the_codes("三、第6条 忌用行为(5)", "第五篇") and cites_the_codes("客户接待第5条", "第四篇")
    assert cites_the_codes("第五篇 一、第9条", "第一篇") and cites_the_codes("第36条", "第一篇")
    for made_up, part in (("第37条", "第一篇"), ("3.1.9", "第二篇"), ("二、(九)", "第三篇"), ("客户接待第6条", "第四篇"),
                          ("三、第6条 忌用行为(12)", "第五篇"), ("第五篇 七、第1条", "第一篇"), ("第36条 or so", "第一篇")):
        assert not cites_the_codes(made_up, part), made_up


@pytest.mark.parametrize("name", bundled_phrasebooks())
def test_every_article_a_phrasebook_cites_is_in_the_codes(name):
    phrasebook = load_phrasebook(name)
    own_part = phrasebook.source.split()[0]
    assert own_part in PARTS, phrasebook.source
    cited = {c.article for c in phrasebook.checks}
    for phrase in phrasebook.all_phrases():
        cited |= {phrase.article} | ({phrase.instead_article} if phrase.instead_article else set())
    wrong = sorted(a for a in cited if not cites_the_codes(a, own_part))
    assert not wrong, f"{name} cites what {own_part} does not have: {wrong}"


# -- include: ---------------------------------------------------------------------

BOOK = """\
id: demo
version: "1"
title: Demo
checks:
  - {id: greeting, expect: greeting, within_first_s: 20, points: 15, article: 第1条}
  - {id: farewell, expect: farewell, within_last_s: 20, points: 10, article: 第2条}
phrases:
  - {id: demo.hello, kind: mandated, category: greeting, article: 第1条, text: 您好}
  - {id: demo.bye, kind: mandated, category: farewell, article: 第2条, text: 再见}
"""
PART = """\
labels: {gifts: 收礼, promises: 承诺}
kinds:
  gifts: {article: 第9条, points: 20, severity: critical, instead: 心意领了, instead_article: 第9条}
  promises: {article: 第8条, points: 5}
groups:
  gift: [红包, 礼品]
expressions:
  - {id: promises.sure, category: promises, text: 包在我身上}
rules:
  - {id: gifts.keep, category: gifts, text: 红包收下, all: [gift, [收下]], within: 8, unless: [[不能]]}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_an_included_part_brings_its_kinds_with_the_codes_own_articles(tmp_path):
    write(tmp_path, "shared.yaml", PART)
    book = write(tmp_path, "book.yaml", BOOK + "include:\n  shared:\n    gifts: {article: 第3条}\n")
    phrasebook = load_phrasebook(str(book))
    assert phrasebook.included == [str(tmp_path / "shared.yaml")]
    keep, sure = phrasebook.by_id("shared.gifts.keep"), phrasebook.by_id("shared.promises.sure")
    assert (keep.article, keep.points, keep.instead_article, keep.text) == ("第3条", 20, "第9条", "收礼：红包收下")
    assert (sure.article, sure.points, sure.rule) == ("第8条", 5, None)  # no article of its own: the part's
    matcher = matcher_for(phrasebook)
    assert [h.article for h in matcher.match_text("红包我收下了") if h.kind == "forbidden"] == ["第3条"]
    assert not [h for h in matcher.match_text("红包不能收下") if h.kind == "forbidden"]
    plain = load_phrasebook(str(write(tmp_path, "plain.yaml", BOOK + "include: [shared]\n")))
    assert plain.by_id("shared.gifts.keep").article == "第9条"


def test_nested_includes_are_read_once_and_an_edited_part_afresh(tmp_path):
    write(tmp_path, "inner.yaml", PART)
    outer = write(tmp_path, "outer.yaml", PART.replace("gifts", "bribes").replace("promises", "vows")
                  .replace("labels:", "include: [inner]\nlabels:"))
    book = write(tmp_path, "book.yaml", BOOK + "include: [outer, inner]\n")
    phrasebook = load_phrasebook(str(book))
    assert phrasebook.included == [str(outer), str(tmp_path / "inner.yaml")]
    assert len({p.id for p in phrasebook.included_phrases}) == len(phrasebook.included_phrases) == 4
    assert load_phrasebook(str(book)) is phrasebook
    (tmp_path / "inner.yaml").write_text(PART.replace("[收下]", "[收下, 拿着]"), encoding="utf-8")
    os.utime(tmp_path / "inner.yaml", ns=(1, 1))
    assert load_phrasebook(str(book)).by_id("inner.gifts.keep").rule.groups[1] == ["收下", "拿着"]


@pytest.mark.parametrize(
    "files, include, reason",
    [
        ({"a.yaml": PART.replace("labels:", "include: [b]\nlabels:"), "b.yaml": PART.replace("labels:", "include: [a]\nlabels:")},
         "[a]", r"b.yaml: include 'a': an include cycle \(book.yaml -> a.yaml -> b.yaml -> a.yaml\)"),
        ({}, "[../outside]", r"book.yaml: include '../outside': outside the phrasebook directory"),
        ({}, "[/etc/passwd]", r"book.yaml: include '/etc/passwd': outside the phrasebook directory"),
        ({}, "[absent]", r"book.yaml: include 'absent': no such file"),
        ({"shared.yaml": PART}, "{shared: {tips: {article: 第1条}}}", r"book.yaml: include.shared.tips: the part has no such kind"),
        ({"shared.yaml": PART.replace("  promises: {article: 第8条, points: 5}\n", "")}, "[shared]",
         r"shared.yaml:2: no entry for kind 'promises'"),
        ({"shared.yaml": PART.replace("kinds:", "kinds_:")}, "[shared]", r"shared.yaml:1: .*'kinds' is a required property"),
        ({"shared.yaml": PART.replace("id: promises.sure", "id: gifts.keep")}, "[shared]", "duplicate lexicon id"),
    ],
)
def test_include_mistakes_are_one_line_errors_naming_the_file(tmp_path, files, include, reason):
    for name, text in files.items():
        write(tmp_path, name, text)
    book = write(tmp_path, "book.yaml", BOOK + f"include: {include}\n")
    with pytest.raises(MonitorError) as raised:
        load_phrasebook(str(book))
    message = str(raised.value)
    assert "\n" not in message and re.search(reason, message), message
    assert str(tmp_path) in message


def test_an_include_may_not_leave_the_directory_by_a_symlink(tmp_path):
    outside = tmp_path / "outside"
    inside = tmp_path / "books"
    outside.mkdir()
    inside.mkdir()
    write(outside, "shared.yaml", PART)
    (inside / "shared.yaml").symlink_to(outside / "shared.yaml")
    with pytest.raises(MonitorError, match="outside the phrasebook directory"):
        load_phrasebook(str(write(inside, "book.yaml", BOOK + "include: [shared]\n")))


def test_a_phrasebook_elsewhere_includes_the_bundled_compliance_part(tmp_path):
    phrasebook = load_phrasebook(str(write(tmp_path, "book.yaml", BOOK + "include: [compliance]\n")))
    assert phrasebook.included == [str((PHRASEBOOK_DIR / "compliance.yaml").resolve())]
    [hit] = [h for h in matcher_for(phrasebook).match_text("咱们私下签，不走公司") if h.kind == "forbidden"]
    assert (hit.category, hit.article) == ("private_deal", "第五篇 一、第9条")


def test_a_refusal_guard_reaches_back_only_so_far_and_a_negation_before_any_word_counts(tmp_path):
    part = PART.replace("within: 8, unless: [[不能]]}", "within: 8, unless: [[拿回去]], guard_within: 10, not_after: [[不能]]}")
    write(tmp_path, "shared.yaml", part)
    matcher = matcher_for(load_phrasebook(str(write(tmp_path, "book.yaml", BOOK + "include: [shared]\n"))))
    changed_mind = "红包您拿回去，那好吧那好吧，红包我收下了"
    assert not [h for h in matcher.match_text(changed_mind) if h.kind == "forbidden"]  # guard_within reaches back
    assert [h for h in matcher.match_text("红包我不能收下") if h.kind == "forbidden"]  # only the first word is guarded
    write(tmp_path, "shared.yaml", part.replace("guard_within: 10,", "guard_within: 10, guard_before: 4, negate_each: true,"))
    os.utime(tmp_path / "shared.yaml", ns=(1, 1))
    matcher = matcher_for(load_phrasebook(str(tmp_path / "book.yaml")))
    assert [h.heard for h in matcher.match_text(changed_mind) if h.kind == "forbidden"] == ["红包我收下"]
    assert not [h for h in matcher.match_text("红包我不能收下") if h.kind == "forbidden"]
    assert not [h for h in matcher.match_text("红包拿回去收下") if h.kind == "forbidden"]  # a refusal just before


def test_a_hospital_call_blames_the_agents_red_envelope_not_the_patients_offer(transcriber):
    """End to end on a synthesized call (tests/data/hospital_red_envelope.json, made with the shared
    synth_call.py): the patient offers twice, the agent first refuses, then keeps it."""
    from monitor.pipeline import ScoreOptions, score_call

    audio = HERE / "data" / "hospital_red_envelope.wav"
    labels = json.loads(audio.with_suffix("").with_suffix(".labels.json").read_text(encoding="utf-8"))
    report = score_call(str(audio), transcriber, load_phrasebook("hospital"), ScoreOptions())
    forbidden = [e for e in report["events"] if e["kind"] == "forbidden"]
    [kept] = [t for t in labels["turns"] if "forbidden" in t["tags"]]
    assert [(e["category"], e["article"], e["speaker"]) for e in forbidden] == [("bribery", "二、(三)", "agent")]
    assert kept["start"] - 1 <= forbidden[0]["start"] <= kept["end"]
    assert {c["id"]: c["passed"] for c in report["checks"]} == {"greeting": True, "farewell": True}
    deduction = next(d for d in report["score"]["deductions"] if d["article"] == "二、(三)")
    assert deduction["coaching_article"] == "二、(三)" and "拒收红包" in deduction["coaching"]
