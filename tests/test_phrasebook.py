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
    forbidden = [p for p in phrasebook.phrases if p.kind == "forbidden" and not p.from_lexicon]
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
    own = {p.text for p in load_phrasebook(name).phrases if p.kind == "forbidden" and not p.from_lexicon}
    assert own == forbidden


def test_customer_service_has_every_civil_language_group():
    categories = {p.category for p in load_phrasebook("customer_service").phrases}
    assert {"address", "greeting", "congratulation", "farewell", "response", "apology", "first_ask"} <= categories


def test_investment_greeting_and_standalone_words():
    phrasebook = load_phrasebook("investment")
    assert phrasebook.by_id("inv.greeting.phone").text == "您好，我是上海领升实业有限公司，请问能帮到您什么？"
    assert all(p.standalone for p in phrasebook.phrases if p.kind == "forbidden" and not p.from_lexicon)


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
