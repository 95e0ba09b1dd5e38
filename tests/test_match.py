"""Matcher tests: the case table (tests/match_cases.yaml) and the behaviours around it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from monitor.asr import Segment, Word
from monitor.match import Hit, matcher_for
from monitor.normalize import normalize
from monitor.phrasebook import load_phrasebook

CASES = yaml.safe_load((Path(__file__).parent / "match_cases.yaml").read_text(encoding="utf-8"))
MEANING_CASES = yaml.safe_load((Path(__file__).parent / "meaning_cases.yaml").read_text(encoding="utf-8"))
"""Forbidden talk by kind and meaning (phrasebooks/lexicon.yaml): ``expect`` a category or
phrase id, or ``absent_kind: forbidden`` for polite talk that must raise nothing; a
``known_miss`` says why the lexicon cannot yet find it (the test then expects it missed)."""
BLIND_CASES = yaml.safe_load((Path(__file__).parent / "meaning_blind_cases.yaml").read_text(encoding="utf-8"))
"""The same format, written before reading the lexicon or the cases above: how the kinds
generalise to wordings nobody tuned them on. A forbidden line counts as found when any
forbidden hit is raised (the verdict), whatever its category."""
CHAR_S = 0.25
"""Seconds per character in the synthetic word timings below."""


def segments_from(text: str, speaker: str = "agent", start: float = 0.0) -> list[Segment]:
    """One segment per '|'-separated part, one word per character, 0.5 s between segments."""
    segments = []
    for part in text.split("|"):
        words = [Word(start + i * CHAR_S, start + (i + 1) * CHAR_S, ch) for i, ch in enumerate(part)]
        segments.append(Segment(start, start + len(part) * CHAR_S, part, speaker, words))
        start += len(part) * CHAR_S + 0.5
    return segments


def hits_for(case: dict) -> list[Hit]:
    return matcher_for(load_phrasebook(case["phrasebook"])).match_segments(segments_from(case["text"]))


def case_id(case: dict) -> str:
    return f"{case.get('hit') or case.get('absent') or case['absent_kind']}-{case['type']}-{case['text'][:12]}"


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_case(case):
    hits = hits_for(case)
    ids = [h.phrase_id for h in hits]
    if "hit" in case:
        assert case["hit"] in ids, f"{case['hit']} not found in {case['text']!r}: {ids}"
        hit = next(h for h in hits if h.phrase_id == case["hit"])
        assert 0 < hit.confidence <= 1
        assert hit.heard.replace(" ", "") in case["text"].replace("|", "")
    if "absent" in case:
        assert case["absent"] not in ids, f"{case['absent']} fired on near miss {case['text']!r}"
    if "absent_kind" in case:
        assert not [h for h in hits if h.kind == case["absent_kind"]], ids


def test_forbidden_cases_recall_and_precision():
    positives = [c for c in CASES if c.get("hit", "").split(".")[1:2] == ["forbidden"]]
    negatives = [c for c in CASES if "absent" in c or "absent_kind" in c]
    found = sum(c["hit"] in {h.phrase_id for h in hits_for(c)} for c in positives)
    false_alarms = sum(
        any(h.kind == "forbidden" and h.phrase_id == c.get("absent", h.phrase_id) for h in hits_for(c))
        for c in negatives
    )
    assert len(positives) >= 100 and len(negatives) >= 40
    assert found / len(positives) >= 0.95
    assert found / (found + false_alarms) >= 0.95


def forbidden_hits(case: dict) -> list[Hit]:
    return [h for h in hits_for(case) if h.kind == "forbidden"]


def meaning_id(case: dict) -> str:
    return f"{case.get('expect', 'polite')}-{case['phrasebook'][:3]}-{case['text'][:14]}"


def with_known_misses(cases: list[dict]) -> list:
    """The cases, those with a ``known_miss`` marked to fail (strictly: a fixed miss must lose its mark)."""
    return [pytest.param(c, marks=pytest.mark.xfail(reason=c["known_miss"], strict=True)) if "known_miss" in c else c
            for c in cases]


def expected_hits(case: dict, any_category: bool = False) -> list[Hit]:
    """The forbidden hits that find a case: of its category or phrase id, or any if ``any_category``."""
    return [h for h in forbidden_hits(case) if any_category or case["expect"] in (h.category, h.phrase_id)]


@pytest.mark.parametrize("case", with_known_misses(MEANING_CASES), ids=[meaning_id(c) for c in MEANING_CASES])
def test_meaning_case(case):
    check_meaning_case(case)


@pytest.mark.parametrize("case", with_known_misses(BLIND_CASES), ids=[meaning_id(c) for c in BLIND_CASES])
def test_blind_meaning_case(case):
    check_meaning_case(case, any_category=True)


def check_meaning_case(case: dict, any_category: bool = False) -> None:
    hits = forbidden_hits(case)
    if "expect" in case:
        found = expected_hits(case, any_category)
        assert found, f"{case['expect']} not found in {case['text']!r}: {[(h.phrase_id, h.heard) for h in hits]}"
        phrase = load_phrasebook(case["phrasebook"]).by_id(found[0].phrase_id)
        assert found[0].article == phrase.article and phrase.instead and phrase.instead_article
        assert found[0].heard.replace(" ", "") in case["text"].replace("|", "").replace(" ", "")
    else:
        assert not hits, f"polite {case['text']!r} raised {[(h.phrase_id, h.heard) for h in hits]}"


def test_meaning_cases_recall_and_precision():
    positives = [c for c in MEANING_CASES if "expect" in c]
    negatives = [c for c in MEANING_CASES if "absent_kind" in c]
    found = sum(any(c["expect"] in (h.category, h.phrase_id) for h in forbidden_hits(c)) for c in positives)
    false_alarms = sum(bool(forbidden_hits(c)) for c in negatives)
    assert len(positives) >= 90 and len(negatives) >= 60
    assert {c["phrasebook"] for c in positives} == {"broadband", "customer_service", "investment"}
    # 0.9, the issue's aim: the probe batches written to find the shapes' gaps keep their misses (known_miss)
    assert found / len(positives) >= 0.9
    assert found / (found + false_alarms) >= 0.95


def test_blind_cases_recall_and_precision():
    positives = [c for c in BLIND_CASES if "expect" in c]
    negatives = [c for c in BLIND_CASES if "absent_kind" in c]
    found = sum(bool(expected_hits(c, any_category=True)) for c in positives)
    false_alarms = sum(bool(forbidden_hits(c)) for c in negatives)
    assert len(positives) >= 100 and len(negatives) >= 100
    assert {c["phrasebook"] for c in positives} == {"broadband", "customer_service", "investment"}
    assert found / len(positives) >= 0.9
    assert found / (found + false_alarms) >= 0.9


def test_every_listed_wording_has_a_paraphrase_case():
    for name in ("broadband", "customer_service", "investment"):
        for phrase in load_phrasebook(name).phrases:
            if phrase.kind == "forbidden":
                assert any(c.get("expect") == phrase.id for c in MEANING_CASES), phrase.id


def test_every_lexicon_entry_is_found_by_a_case():
    found = {h.phrase_id for c in MEANING_CASES + BLIND_CASES if "expect" in c for h in forbidden_hits(c)}
    for name in ("broadband", "customer_service", "investment"):
        entries = {p.id for p in load_phrasebook(name).kind_phrases}
        assert entries and entries <= found, sorted(entries - found)


@pytest.mark.parametrize(
    "name, article",
    [("broadband", "第36条"), ("customer_service", "二、第5条"), ("investment", "客户接待第3条")],
)
def test_a_kind_hit_carries_its_category_and_the_article_of_its_phrasebook(name, article):
    phrasebook = load_phrasebook(name)
    [hit] = [h for h in matcher_for(phrasebook).match_text("这事儿我真管不了。") if h.kind == "forbidden"]
    assert (hit.category, hit.method, hit.article, hit.confidence) == ("shirking", "rule", article, 1.0)
    assert hit.heard == "我真管不了" and hit.canonical.startswith("推诿：")
    assert hit.to_json()["method"] == "rule" and hit.to_json()["category"] == "shirking"
    assert phrasebook.by_id(hit.phrase_id).instead_article
    assert hit.phrase_id not in {p.id for p in phrasebook.phrases}  # the code's own wordings stay apart


def test_one_stretch_of_a_kind_is_one_hit():
    matcher = matcher_for(load_phrasebook("customer_service"))
    [hit] = [h for h in matcher.match_text("这事儿我真管不了，你自己想办法吧。") if h.kind == "forbidden"]
    assert hit.category == "shirking" and hit.heard == "我真管不了，你自己想办法"
    later = matcher.match_text("这事儿我真管不了。您稍等，我看一下系统。你自己想办法吧。")
    assert [h.category for h in later if h.kind == "forbidden"] == ["shirking", "shirking"]


def test_long_kind_words_match_by_sound_short_ones_only_as_written():
    matcher = matcher_for(load_phrasebook("broadband"))
    [hit] = [h for h in matcher.match_text("我这边馆不了这个") if h.kind == "forbidden"]
    assert hit.category == "shirking" and 0.8 <= hit.confidence < 1.0
    assert [h.category for h in matcher.match_text("你个傻逼") if h.kind == "forbidden"] == ["swearing"]
    assert not [h for h in matcher.match_text("您看啥比较合适") if h.kind == "forbidden"]  # 傻逼 / 啥比 sound alike


@pytest.mark.parametrize(
    "bare, guarded",
    [
        ("这个不归我们部门管。", "这个不归我们部门管，我马上帮您转给负责的同事。"),
        ("你脑子有问题吧。", "我不是说你脑子有问题吧，是设置太绕了。"),
        ("我们这边处理不了。", "如果我们这边处理不了，也会联系技术同事。"),
        ("都跟你说了不要自己拆。", "都跟你说了不要担心，费用我们来承担。"),
        ("我操，这线谁接的。", "我操作一下您的账号。"),  # not_in: part of an innocent longer word
    ],
)
def test_politeness_and_negation_guards(bare, guarded):
    matcher = matcher_for(load_phrasebook("customer_service"))
    assert [h for h in matcher.match_text(bare) if h.kind == "forbidden"]
    assert not [h for h in matcher.match_text(guarded) if h.kind == "forbidden"]


def test_shapes_match_within_one_clause_and_keep_the_rules_guards():
    matcher = matcher_for(load_phrasebook("broadband"))

    def heard(text: str) -> list[tuple[str, str]]:
        return [(h.category, h.heard) for h in matcher.match_text(text) if h.kind == "forbidden"]

    assert heard("你到底修不修") == [("scolding", "你到底修不修")]  # 到底(.)不\1
    assert heard("我们查一下到底是不是线路的问题") == []  # 是不是 is a question, not impatience
    assert heard("随便，哪个都行") == [("perfunctory", "随便")]  # ^随便$: the clause is that word alone
    assert heard("您随便挑一个时间") == []
    told = "医生不是跟你说过饭后吃吗，你怎么饭前就吃了"  # 不是…吗 within its clause
    assert heard(told) == [("rhetorical", "不是跟你说过饭后吃吗")]
    assert heard("好好好，知道了") == [("perfunctory", "好好好")]
    assert heard("好好好，我马上帮您办") == []  # the politeness guard


def test_kind_rules_judge_only_the_agent():
    matcher = matcher_for(load_phrasebook("broadband"))
    segments = [
        Segment(0.0, 3.0, "你们脑子有问题吧，我都说了八百遍了，我的网又断了", "customer"),
        Segment(3.5, 6.0, "非常抱歉，我们正在全力处理，故障将很快解决", "agent"),
        Segment(7.0, 9.0, "你吵什么吵", "agent"),
    ]
    forbidden = [h for h in matcher.match_segments(segments) if h.kind == "forbidden"]
    assert [(h.speaker, h.category) for h in forbidden] == [("agent", "scolding")]
    assert forbidden[0].start == pytest.approx(7.0, abs=0.5)


def test_every_forbidden_phrase_has_canonical_two_corruptions_and_a_near_miss():
    for name in ("broadband", "customer_service", "investment"):
        for phrase in load_phrasebook(name).phrases:
            if phrase.kind != "forbidden":
                continue
            types = [c["type"] for c in CASES if c.get("hit") == phrase.id]
            assert "canonical" in types and "traditional" in types, phrase.id
            assert len([t for t in types if t != "canonical"]) >= 3, phrase.id
            assert any(c.get("absent") == phrase.id for c in CASES), phrase.id


# -- normalisation -------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("請撥六六六一六五六七號聯絡，再見！", "请拨66616567号联络再见"),
        ("ＡＢ１２，你好", "ab12你好"),
        ("我来给您讲解一下。", "我来给您讲解一下"),  # a lone 一 is a word, not a digit
        ("电话是一三九零零零零一二三四", "电话是13900001234"),
        ("这事儿不归我管啊！", "这事不归我管"),  # 儿化 and tone particles carry no words
        ("我女儿在家呢", "我女儿在家"),  # the 儿 of 女儿 is a word
    ],
)
def test_normalize(text, expected):
    assert normalize(text).text == expected


def test_normalize_maps_every_char_back_to_its_source():
    text = "你問我，我問誰？"
    n = normalize(text)
    assert [text[i] for i in n.offsets] == list("你問我我問誰")
    assert n.clause_starts == [True, False, False, True, False, False]
    assert text[slice(*n.original_span(3, 6))] == "我問誰"


# -- hits ------------------------------------------------------------------------


def test_heard_is_original_text_and_json_has_contract_fields():
    matcher = matcher_for(load_phrasebook("broadband"))
    [hit] = [h for h in matcher.match_text("喂，你問我，我問誰？") if h.kind == "forbidden"]
    assert hit.heard == "你問我，我問誰" and hit.method == "exact" and hit.confidence == 1.0
    assert hit.start is None and hit.speaker == "agent"
    record = hit.to_json()
    for key in ("kind", "phrase_id", "canonical", "heard", "confidence", "article", "start", "end", "speaker"):
        assert key in record
    assert record["canonical"] == "你问我，我问谁？" and record["article"] == "第36条"
    json.dumps(record, ensure_ascii=False)


def test_phrase_split_across_segments_gets_times_from_both():
    matcher = matcher_for(load_phrasebook("broadband"))
    segments = segments_from("好的。快下班了，|明天再说。")
    [hit] = [h for h in matcher.match_segments(segments) if h.kind == "forbidden"]
    assert hit.start == pytest.approx(3 * CHAR_S)  # after 好的。
    assert hit.end == pytest.approx(segments[1].start + 4 * CHAR_S)  # 明天再说


def test_segments_without_words_are_timed_by_interpolation():
    matcher = matcher_for(load_phrasebook("broadband"))
    segment = Segment(10.0, 20.0, "0123456789你问我我问谁", "agent")  # 16 characters over 10 s
    [hit] = matcher.match_segments([segment])
    assert hit.start == pytest.approx(10 + 10 * 10 / 16)
    assert hit.end == pytest.approx(20.0)


def test_forbidden_phrases_are_not_looked_for_in_customer_speech_but_any_cues_are():
    matcher = matcher_for(load_phrasebook("broadband"))
    segments = [
        Segment(0.0, 3.0, "我的网从昨天晚上就断了，你有没有搞错？", "customer"),
        Segment(3.5, 5.0, "对不起，我们正在全力处理，故障将很快解决", "agent"),
    ]
    kinds = {(h.speaker, h.kind) for h in matcher.match_segments(segments)}
    assert ("customer", "forbidden") not in kinds
    assert ("customer", "cue") in kinds and ("agent", "mandated") in kinds


def test_hits_are_sorted_by_start_and_deterministic():
    matcher = matcher_for(load_phrasebook("broadband"))
    segments = segments_from("快下班了，明天再说。你问我，我问谁？|不知道，这是不归我管。")
    first = [h.to_json() for h in matcher.match_segments(segments)]
    assert [h["phrase_id"] for h in first] == [
        "bb.forbidden.closing_time", "bb.forbidden.ask_me", "bb.forbidden.not_my_job"]
    assert first == [h.to_json() for h in matcher.match_segments(segments)]


def test_full_apology_wins_over_the_short_sorry_inside_it():
    matcher = matcher_for(load_phrasebook("broadband"))
    hits = matcher.match_text("对不起，由于我方原因，使您的业务无法正常使用，我们深表歉意。我们正在加紧抢修")
    assert [h.phrase_id for h in hits] == ["bb.apology.our_fault_repairing"]


def test_longest_wording_of_a_phrase_is_reported():
    matcher = matcher_for(load_phrasebook("broadband"))
    [hit] = matcher.match_text("故障见面在这里,我方没有问题,你自己找人来处理吧。")
    assert hit.heard == "故障见面在这里,我方没有问题,你自己找人来处理吧" and hit.method == "fuzzy"
    assert 0.9 < hit.confidence < 1


def test_partial_greeting_counts_with_lower_confidence():
    matcher = matcher_for(load_phrasebook("broadband"))
    [hit] = matcher.match_text("你好,我是家平宽代维护的工程师小吴。负责您使用设备的维护。现在由我来处理故障")
    assert hit.phrase_id == "bb.greeting.fault" and 0.7 <= hit.confidence < 0.95


@pytest.mark.parametrize(
    "text, expected",
    [
        ("大概是下个月吧，具体时间我也不清楚。", ["inv.forbidden.probably", "inv.forbidden.unclear"]),
        ("嗯，不知道。", ["inv.forbidden.dont_know"]),
        ("我们也可能是下个月才能定。", ["inv.forbidden.maybe"]),
        ("这个我真不清楚。", ["inv.forbidden.unclear"]),  # an adverb between subject and phrase
        ("我们确实不知道具体日期。", ["inv.forbidden.dont_know"]),
        ("您不知道的话我可以帮您查。", []),
        ("这个可能是最好的选择。", []),
        ("图片看不清楚的话我再发一次。", []),
    ],
)
def test_standalone_context_rule(text, expected):
    matcher = matcher_for(load_phrasebook("investment"))
    assert [h.phrase_id for h in matcher.match_text(text) if h.kind == "forbidden"] == expected


def test_negation_must_be_heard_for_a_fuzzy_hit():
    matcher = matcher_for(load_phrasebook("customer_service"))
    assert not [h for h in matcher.match_text("这个问题我们公司能给您解决。") if h.kind == "forbidden"]
    assert [h.phrase_id for h in matcher.match_text("这个问题我们公司不能给您解决。")] == ["cs.forbidden.company_cannot"]


def test_matcher_is_built_once_per_phrasebook():
    phrasebook = load_phrasebook("investment")
    assert matcher_for(phrasebook) is matcher_for(load_phrasebook("investment"))


def test_a_greeting_whisper_wrote_with_ni_is_the_greeting():
    """Whisper mostly writes 您好 as 你好 on phone audio: the agent greeted."""
    from monitor.match import matcher_for
    from monitor.phrasebook import load_phrasebook
    from monitor.roles import text_evidence

    matcher = matcher_for(load_phrasebook("customer_service"))
    [hit] = [h for h in matcher.match_text("你好，燃气公司客服，请问有什么可以帮您？") if h.category == "greeting"]
    assert hit.phrase_id == "cs.greeting.hello" and hit.heard == "你好"
    # ...but it is no sign of who spoke: customers answer the phone with 你好 too
    assert text_evidence("喂，你好", matcher.match_text("喂，你好")) == text_evidence("喂", [])
