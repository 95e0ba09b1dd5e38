"""Kind rules (monitor/kinds.py): short words named ``by_sound`` are heard by their pinyin too."""

from __future__ import annotations

import textwrap

import pytest

from monitor.errors import MonitorError
from monitor.kinds import SOUND_CONFIDENCE, KindRules
from monitor.match import matcher_for
from monitor.normalize import normalize, to_symbols
from monitor.phrasebook import Rule, _load_part, load_phrasebook


def find(rules: KindRules, text: str):
    normalized = normalize(text)
    return rules.find(normalized.text, to_symbols(normalized.text), normalized.clause_starts)


GIFT = [["红包", "礼品"], ["收下", "收着"]]


def test_a_short_word_named_by_sound_matches_its_homophone_and_others_do_not():
    named = KindRules([Rule(id="keeping", groups=GIFT, by_sound=["红包"])])
    plain = KindRules([Rule(id="keeping", groups=GIFT)])
    [match] = find(named, "哄包我就收下了")
    assert match.confidence == SOUND_CONFIDENCE and (match.start, match.end) == (0, 6)
    assert not find(plain, "哄包我就收下了"), "an unnamed two-character word matched by sound"
    assert not find(named, "礼拼我就收下了"), "a word not named by_sound matched by sound"
    [exact] = find(named, "红包我就收下了")
    assert exact.confidence == 1.0


def test_the_bundled_compliance_part_hears_misheard_key_words_and_not_their_everyday_homophones():
    hospital, office = load_phrasebook("hospital"), load_phrasebook("office")

    def kinds(phrasebook, text):
        return {h.category for h in matcher_for(phrasebook).match_text(text) if h.kind == "forbidden"}

    assert "disclosure" in kinds(hospital, "你是他同事啊 他这个是干挨晚期")
    assert "bribery" in kinds(office, "签了合同 回口按两个点给你个人")
    assert not kinds(office, "这批货现在低价处理 您要的话我给您登记")


def test_a_by_sound_word_outside_the_rules_groups_is_refused(tmp_path):
    part = tmp_path / "part.yaml"
    part.write_text(textwrap.dedent("""\
        labels: {bribery: 收受礼金}
        kinds: {bribery: {article: 第1条, severity: major, points: 10, instead: 不收, instead_article: 第1条}}
        groups: {}
        rules:
          - {id: bribery.keeping, category: bribery, text: 红包我收下了, all: [[红包], [收下]], by_sound: [回扣]}
        """), encoding="utf-8")
    with pytest.raises(MonitorError, match=r"part\.yaml.*by_sound.*回扣"):
        _load_part(str(part), part.stat().st_mtime_ns)
