"""Phrasebook loading: the bundled files cover the codes, and mistakes name file and line."""

from __future__ import annotations

import os
import textwrap

import pytest

from monitor.errors import MonitorError
from monitor.phrasebook import bundled_phrasebooks, load_phrasebook

VALID = """\
id: demo
version: "1"
title: Demo
checks:
  - {id: greeting, expect: greeting, within_first_s: 20, points: 15, article: 第1条}
  - {id: farewell, expect: farewell, within_last_s: 20, points: 10, article: 第11条}
phrases:
  - {id: demo.hello, kind: mandated, category: greeting, article: 第1条, text: 您好}
  - {id: demo.bye, kind: mandated, category: farewell, article: 第11条, text: 再见}
"""


def write(tmp_path, text: str):
    path = tmp_path / "pb.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_bundled_phrasebooks_load():
    assert {"broadband", "customer_service", "investment"} <= set(bundled_phrasebooks())
    for name in bundled_phrasebooks():
        phrasebook = load_phrasebook(name)
        assert phrasebook.id == name
        assert {"greeting", "farewell"} <= {c.id for c in phrasebook.checks}


def test_broadband_covers_every_article_of_the_language_code():
    phrasebook = load_phrasebook("broadband")
    mandated = {p.article for p in phrasebook.phrases if p.kind == "mandated"}
    assert mandated == {f"第{n}条" for n in range(1, 36)}
    forbidden = [p for p in phrasebook.phrases if p.kind == "forbidden"]
    assert len(forbidden) == 11 and {p.article for p in forbidden} == {"第36条"}  # 禁语 5 is two phrases
    assert all(p.instead and p.instead_article for p in forbidden)
    assert phrasebook.by_id("bb.forbidden.no_way").instead_article == "第20条"
    assert len(phrasebook.in_category("greeting")) == 4


@pytest.mark.parametrize(
    "name, forbidden",
    [
        ("customer_service", {"这个问题我不会处理", "这个问题我们公司不能给你解决", "这个问题我们可能要过一段时间才能给你解决",
                              "这个问题这么简单，您自己不会解决吗？", "你是不是干××的？", "我现在很忙，您下次再打电话（再来公司）好吗？"}),
        ("investment", {"不清楚", "不知道", "可能是", "大概是"}),
    ],
)
def test_forbidden_phrases_are_the_codes_own(name, forbidden):
    assert {p.text for p in load_phrasebook(name).phrases if p.kind == "forbidden"} == forbidden


def test_customer_service_has_every_civil_language_group():
    categories = {p.category for p in load_phrasebook("customer_service").phrases}
    assert {"address", "greeting", "congratulation", "farewell", "response", "apology", "first_ask"} <= categories


def test_investment_greeting_and_standalone_words():
    phrasebook = load_phrasebook("investment")
    assert phrasebook.by_id("inv.greeting.phone").text == "您好，我是上海领升实业有限公司，请问能帮到您什么？"
    assert all(p.standalone for p in phrasebook.phrases if p.kind == "forbidden")


def test_loading_is_cached_until_the_file_changes(tmp_path):
    path = write(tmp_path, VALID)
    first = load_phrasebook(str(path))
    assert load_phrasebook(str(path)) is first
    path.write_text(VALID.replace('"1"', '"2"'), encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert load_phrasebook(str(path)).version == "2"


@pytest.mark.parametrize(
    "edit, line, reason",
    [
        (lambda t: t.replace("kind: mandated, category: farewell", "kind: polite, category: farewell"), 9, "polite"),
        (lambda t: t.replace("id: demo.bye", "id: demo.hello"), 9, "duplicate phrase id"),
        (lambda t: t.replace("expect: farewell", "expect: goodbye"), 6, "no phrase has category 'goodbye'"),
        (lambda t: t.replace("  - {id: farewell", "  - {id: closing"), 4, "missing required check 'farewell'"),
        (lambda t: t.replace("text: 再见}", "text: 再见"), 10, "YAML syntax error"),
        (lambda t: t.replace("title: Demo\n", ""), 1, "'title' is a required property"),
        (lambda t: t.replace("points: 10", "points: -1"), 6, "points"),
    ],
)
def test_mistakes_name_file_line_and_reason(tmp_path, edit, line, reason):
    path = write(tmp_path, edit(VALID))
    with pytest.raises(MonitorError) as raised:
        load_phrasebook(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert reason in message


def test_missing_files_and_names_are_monitor_errors(tmp_path):
    with pytest.raises(MonitorError, match="no such phrasebook"):
        load_phrasebook("no_such_book")
    with pytest.raises(MonitorError, match="cannot read"):
        load_phrasebook(str(tmp_path / "absent.yaml"))


# -- forbidden kinds and the shared lexicon -------------------------------------

KINDS = """\
forbidden_kinds:
  shirking: {article: 第9条, points: 10, instead: 我帮您联系同事, instead_article: 第10条}
"""
LEXICON = """\
labels: {shirking: 推诿, scolding: 训斥}
groups:
  me: [我, 我们]
  helping: [帮您, 转给]
expressions:
  - {id: shirking.not_mine, category: shirking, text: 这事不归我管}
rules:
  - id: shirking.cannot
    category: shirking
    text: 我 + 管不了
    all: [me, [管不了, 不负责]]
    within: 6
    unless: [helping]
  - {id: scolding.noisy, category: scolding, text: 吵什么, all: [[吵什么]]}
"""


def test_bundled_phrasebooks_take_their_kinds_from_the_shared_lexicon():
    assert "lexicon" not in bundled_phrasebooks()
    with pytest.raises(MonitorError, match="no such phrasebook"):
        load_phrasebook("lexicon")
    articles = {"broadband": {"第36条"}, "customer_service": {"二、第1条", "二、第4条", "二、第5条", "二、第6条", "一、第3条"},
                "investment": {"客户接待第2条", "客户接待第3条", "客户接待第4条"}}
    for name, expected in articles.items():
        phrasebook = load_phrasebook(name)
        kinds = phrasebook.kind_phrases
        assert {p.category for p in kinds} == {"shirking", "scolding", "mocking", "swearing", "perfunctory", "rhetorical"}
        assert {p.article for p in kinds} == expected
        assert all(p.kind == "forbidden" and p.id.startswith("lexicon.") and p.instead for p in kinds)
        assert phrasebook.by_id("lexicon.shirking.cannot_handle").rule.groups[0][0] == "我"


def test_a_phrasebook_opts_into_the_kinds_it_names_with_its_own_article(tmp_path):
    (tmp_path / "lexicon.yaml").write_text(LEXICON, encoding="utf-8")
    path = write(tmp_path, VALID + KINDS)
    phrasebook = load_phrasebook(str(path))
    assert phrasebook.lexicon == str(tmp_path / "lexicon.yaml")
    assert [p.id for p in phrasebook.kind_phrases] == ["lexicon.shirking.not_mine", "lexicon.shirking.cannot"]
    cannot = phrasebook.by_id("lexicon.shirking.cannot")
    assert (cannot.article, cannot.points, cannot.instead_article, cannot.text) == ("第9条", 10, "第10条", "推诿：我 + 管不了")
    assert cannot.rule.groups == [["我", "我们"], ["管不了", "不负责"]] and cannot.rule.unless == ["帮您", "转给"]
    assert phrasebook.by_id("lexicon.shirking.not_mine").rule is None
    assert load_phrasebook(str(path)) is phrasebook
    assert load_phrasebook(str(write(tmp_path, VALID))).kind_phrases == []  # no forbidden_kinds, no lexicon


def test_an_edited_lexicon_is_loaded_afresh(tmp_path):
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text(LEXICON, encoding="utf-8")
    path = write(tmp_path, VALID + KINDS)
    first = load_phrasebook(str(path))
    lexicon.write_text(LEXICON.replace("[管不了, 不负责]", "[管不了, 不负责, 找别人]"), encoding="utf-8")
    os.utime(lexicon, ns=(1, 1))
    assert load_phrasebook(str(path)).by_id("lexicon.shirking.cannot").rule.groups[1][-1] == "找别人"
    assert first.by_id("lexicon.shirking.cannot").rule.groups[1][-1] == "不负责"


@pytest.mark.parametrize(
    "edit, line, reason",
    [
        (lambda t: t.replace("all: [me,", "all: [us,"), 11, "no word group named 'us'"),
        (lambda t: t.replace("within: 6", "within: 2"), 12, "shorter than its shortest words"),
        (lambda t: t.replace("all: [[吵什么]]", "any: [[吵什么]]"), 14, "'any' was unexpected"),
        (lambda t: t.replace("all: [[吵什么]]", "shapes: ['吵(什么']"), 14, "bad pattern '吵(什么'"),
        (lambda t: t.replace("labels: {shirking: 推诿, scolding: 训斥}", "labels: {shirking: 推诿}"), 14, "'scolding' has no entry in labels"),
        (lambda t: t.replace("id: scolding.noisy", "id: shirking.cannot"), 14, "duplicate lexicon id 'shirking.cannot'"),
        (lambda t: t.replace("  helping: [帮您, 转给]", "  helping: [帮您, 转给"), 5, "YAML syntax error"),
    ],
)
def test_lexicon_mistakes_name_the_lexicon_file_line_and_reason(tmp_path, edit, line, reason):
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text(edit(LEXICON), encoding="utf-8")
    with pytest.raises(MonitorError) as raised:
        load_phrasebook(str(write(tmp_path, VALID + KINDS)))
    assert str(raised.value).startswith(f"{lexicon}:{line}: "), str(raised.value)
    assert reason in str(raised.value)


def test_a_kind_without_lexicon_entries_or_a_missing_lexicon_is_an_error(tmp_path):
    (tmp_path / "lexicon.yaml").write_text(LEXICON, encoding="utf-8")
    with pytest.raises(MonitorError, match="forbidden_kinds.swearing: .* has no expression or rule of this kind"):
        load_phrasebook(str(write(tmp_path, VALID + KINDS + "  swearing: {article: 第9条}\n")))
    with pytest.raises(MonitorError, match="absent.yaml: cannot read lexicon"):
        load_phrasebook(str(write(tmp_path, VALID + KINDS + "lexicon: absent.yaml\n")))
