"""The meaning model (monitor/meaning.py) beside the lexicon's rules: what it adds, what it leaves alone."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from monitor.asr import Segment
from monitor.match import matcher_for
from monitor.meaning import MODEL_PATH, MeaningModel, bundled_model, model_for
from monitor.phrasebook import PHRASEBOOK_DIR, load_phrasebook
from monitor.report import build_report, is_violation
from monitor.rules import judge

ROOT = Path(__file__).resolve().parent.parent

UNSEEN = [
    # (line, kind): wordings in none of the case files the model was trained on
    ("你话怎么这么多", {"scolding", "mocking", "rhetorical"}),
    ("说你两句你还不乐意了", {"scolding", "mocking"}),
    ("你脑袋里装的都是什么", {"mocking", "scolding", "swearing"}),
]
GIFT_KEPT = "行 卡我先替你存着 手术排最前面"
"""Keeping a gift no rule finds (存着 for the patient), never trained on: sealed batch 5's 这个卡我先替你保管着,
which this test used before, a rule finds since conduct8 (bribery.goods_taken)."""
POLITE = [
    "这个不归我们这边，但我马上帮您转给负责的同事",
    "您不用着急，我也理解您的心情",
    "好的，麻烦您报一下户号",
    "我帮您登记一下，师傅明天上午上门检查",
]


@pytest.fixture(scope="module")
def model() -> MeaningModel:
    return bundled_model()


def agent_call(*lines: tuple[str, str]) -> list[Segment]:
    """A stereo call: (speaker, text) two seconds each."""
    return [Segment(2.0 * i, 2.0 * i + 1.8, text, speaker) for i, (speaker, text) in enumerate(lines)]


def judged(phrasebook, segments):
    hits = matcher_for(phrasebook).match_segments(segments)
    return judge(segments, hits, phrasebook, 2.0 * len(segments), stereo=True, meaning=model_for(phrasebook))


def test_the_model_file_loads_without_pickle_and_was_trained_on_the_case_files_as_they_are(model):
    sys.path.insert(0, str(ROOT / "bench"))
    from train_meaning import labelled_lines, training_sha256

    assert MODEL_PATH.stat().st_size < 4_000_000
    assert set(model.classes) == {"none", "shirking", "scolding", "mocking", "swearing", "perfunctory", "rhetorical",
                                  "bribery", "private_deal", "over_promising", "refusing_contact", "refusing_outright",
                                  "disclosure"}
    assert 0 < model.review_threshold <= model.deduct_threshold < 1
    assert model.training_sha256 == training_sha256(labelled_lines()), (
        "the labelled case files changed since the model was trained: python bench/train_meaning.py")


@pytest.mark.parametrize("line, kinds", UNSEEN)
def test_the_model_finds_unseen_wordings_the_rules_miss(model, line, kinds):
    phrasebook = load_phrasebook("customer_service")
    assert not [h for h in matcher_for(phrasebook).match_text(line) if h.kind == "forbidden"], "a rule found it"
    [verdict] = model.judge([line])
    assert verdict.probability >= model.review_threshold and verdict.category in kinds, verdict


@pytest.mark.parametrize("line", POLITE)
def test_polite_near_misses_do_not_fire(model, line):
    [verdict] = model.judge([line])
    assert verdict.probability < model.review_threshold, verdict


def test_a_hit_is_an_event_of_its_kind_with_the_codes_article():
    phrasebook = load_phrasebook("customer_service")
    line = UNSEEN[0][0]
    judgement = judged(phrasebook, agent_call(("agent", "您好，请问有什么可以帮您"), ("agent", line)))
    [event] = [e for e in judgement.events if e.kind == "forbidden"]
    assert event.detected_by == "meaning_model" and event.method == "meaning" and event.heard == line
    assert event.article == phrasebook.forbidden_kinds[event.category].article
    assert event.model_probability >= bundled_model().review_threshold
    deducted = [d for d in judgement.deductions if d.source == event.phrase_id]
    listed = [r for r in judgement.review if r["kind"] == "meaning_model"]
    if bundled_model().deducts(event):
        assert deducted and deducted[0].article == event.article and not listed
    else:
        assert not deducted and listed[0]["forbidden"] == [event.phrase_id]


def test_customer_sentences_are_never_judged():
    phrasebook = load_phrasebook("customer_service")
    said = [line for line, _ in UNSEEN]
    judgement = judged(phrasebook, agent_call(("agent", "您好，请问有什么可以帮您"), *(("customer", s) for s in said)))
    assert not [e for e in judgement.events if e.kind == "forbidden"]
    assert not judgement.review


def test_a_sentence_a_rule_found_gets_no_second_event():
    phrasebook = load_phrasebook("customer_service")
    line = "这事儿我真管不了，你自己想办法吧"  # the lexicon's 推诿, and the model's too
    assert bundled_model().judge([line])[0].probability >= bundled_model().review_threshold
    judgement = judged(phrasebook, agent_call(("agent", line)))
    forbidden = [e for e in judgement.events if e.kind == "forbidden"]
    assert forbidden and all(e.detected_by is None for e in forbidden)


def test_the_report_names_the_model_and_its_probability():
    phrasebook = load_phrasebook("customer_service")
    segments = agent_call(("agent", "您好，请问有什么可以帮您"), ("agent", UNSEEN[1][0]))
    judgement = judged(phrasebook, segments)
    report = build_report("c1", "c1.wav", None, 4.0, phrasebook, segments, judgement, {}, redact=False)
    [event] = [e for e in report["events"] if e.get("detected_by") == "meaning_model"]
    assert event["model_probability"] == judgement.events[-1].model_probability
    assert is_violation(event) == (not event["held_for_review"])


def test_a_phrasebook_can_turn_the_model_off(tmp_path):
    for name in ("customer_service.yaml", "lexicon.yaml", "compliance.yaml"):
        shutil.copy(PHRASEBOOK_DIR / name, tmp_path / name)
    path = tmp_path / "customer_service.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\nmeaning_model: false\n", encoding="utf-8")
    off = load_phrasebook(str(path))
    assert not off.meaning_model and model_for(off) is None
    judgement = judged(off, agent_call(("agent", UNSEEN[0][0])))
    assert not [e for e in judgement.events if e.kind == "forbidden"]
    assert model_for(load_phrasebook("customer_service")) is not None


def test_one_stretch_of_forbidden_sentences_is_one_event():
    """Whisper cuts one outburst into sentences: the agent loses the points once."""
    phrasebook = load_phrasebook("customer_service")
    first, second = UNSEEN[0][0], UNSEEN[1][0]
    close = [Segment(0.0, 1.5, first, "agent"), Segment(1.8, 3.0, second, "agent")]
    [event] = [e for e in judged(phrasebook, close).events if e.kind == "forbidden"]
    assert event.heard == first + second and (event.start, event.end) == (0.0, 3.0)
    apart = [Segment(0.0, 1.5, first, "agent"), Segment(9.0, 10.5, second, "agent")]
    assert len([e for e in judged(phrasebook, apart).events if e.kind == "forbidden"]) == 2
    ruled = [Segment(0.0, 1.5, first, "agent"), Segment(1.8, 3.5, "这事儿我真管不了，你自己想办法吧", "agent")]
    forbidden = [e for e in judged(phrasebook, ruled).events if e.kind == "forbidden"]
    assert forbidden and all(e.detected_by is None for e in forbidden)


def test_monitor_match_judges_bare_text_by_meaning_too(capsys, model):
    """`monitor match` runs the model where no phrase or rule fired, as a call's report does:
    untimed, with whether the hit deducts or is held for review."""
    import json

    from monitor.cli import main

    def printed(text: str) -> list[dict]:
        assert main(["match", text, "--phrasebook", "customer_service"]) == 0
        return json.loads(capsys.readouterr().out)

    by_meaning = 0
    for line, kinds in UNSEEN:
        hits = printed(line)
        if any(h.get("detected_by") is None for h in hits):
            continue  # a rule found it: the model adds nothing
        [hit] = hits
        assert hit["detected_by"] == "meaning_model" and hit["category"] in kinds and hit["start"] is None
        assert hit["model_probability"] >= model.review_threshold
        from monitor.meaning import DEDUCT_MIN_CHARS, read_length

        short = read_length(hit["heard"]) < DEDUCT_MIN_CHARS
        assert hit["held_for_review"] == (hit["model_probability"] < model.deduct_threshold or short)
        by_meaning += 1
    assert by_meaning, "every unseen wording was found by a rule: pick wordings only the model finds"
    assert not [h for line in POLITE for h in printed(line) if h["kind"] == "forbidden"]


@pytest.mark.parametrize("line", ["嗯。", "嗯嗯", "好吧。", "那好吧。", "知道了。", "啊？", "哦。", "行。", "算了。"])
def test_an_agents_backchannel_is_not_judged(model, line):
    """Too short to carry meaning the model can tell from tone; the short insults are the lexicon's."""
    phrasebook = load_phrasebook("customer_service")
    assert not [e for e in judged(phrasebook, agent_call(("agent", line))).events if e.kind == "forbidden"]


def test_the_model_deducts_only_for_talk_long_enough_to_judge(model):
    """A few words' tone is not in the text: a short sentence the model flags is only listed for review."""
    from monitor.match import Hit
    from monitor.meaning import DEDUCT_MIN_CHARS

    def hit(heard: str) -> Hit:
        return Hit(phrase_id="meaning.perfunctory", kind="forbidden", category="perfunctory", canonical="敷衍",
                   heard=heard, confidence=0.99, article="x", start=0.0, end=2.0, speaker="agent", method="meaning",
                   detected_by="meaning_model", model_probability=0.99)

    assert not model.deducts(hit("那就周四吧。"))
    assert model.deducts(hit("这个事情你爱办不办，反正跟我没关系"))
    assert len("这个事情你爱办不办反正跟我没关系") >= DEDUCT_MIN_CHARS > len("那就周四吧")


@pytest.mark.parametrize("name, kind, article", [("hospital", "bribery", "二、(三)"), ("office", "bribery", "3.2.5"),
                                                 ("hospital", "disclosure", "二、(六)"), ("customer_service", "private_deal", "一、第9条")])
def test_an_included_parts_kinds_are_judged_and_cited_by_the_codes_article(name, kind, article):
    phrasebook = load_phrasebook(name)
    cited = {p.category: p.article for p in phrasebook.meaning_phrases}
    rules = {p.category: p.article for p in phrasebook.included_phrases}
    assert cited[kind] == rules[kind] == article
    assert set(rules) <= set(cited) and set(phrasebook.forbidden_kinds) <= set(cited)


def test_the_model_finds_a_kept_gift_the_rules_miss_as_bribery_with_the_hospitals_article():
    phrasebook = load_phrasebook("hospital")
    line = GIFT_KEPT
    assert not [h for h in matcher_for(phrasebook).match_text(line) if h.kind == "forbidden"], "a rule found it"
    judgement = judged(phrasebook, agent_call(("agent", "您好，请问您哪里不舒服"), ("customer", "大夫，这是一点心意"), ("agent", line)))
    [event] = [e for e in judgement.events if e.kind == "forbidden"]
    assert (event.category, event.article, event.detected_by) == ("bribery", "二、(三)", "meaning_model")


def test_fragments_and_short_replies_are_not_judged():
    """Whisper's one-character fragments and short replies read as forbidden to the model: too little to judge."""
    phrasebook = load_phrasebook("office")
    short = ["为", "了", "真的", "为什么", "好吧", "干嘛"]
    assert max(j.probability for j in bundled_model().judge(short)) >= bundled_model().review_threshold
    judgement = judged(phrasebook, agent_call(*(("agent", line) for line in short)))
    assert not [e for e in judgement.events if e.kind == "forbidden"] and not judgement.review


def test_a_sentence_is_read_with_the_agents_next_one():
    """Whisper cuts a thought in two: the help that makes a transfer polite, or what makes a warning or praise
    forbidden (an irony's blame), may come in the second sentence (issue 11, 3.)."""
    model, phrasebook = bundled_model(), load_phrasebook("broadband")
    excuse, help_ = "这事我们处理不了，", "我这边帮您转到维修部门，请稍等。"
    assert model.judge([excuse])[0].probability >= model.review_threshold  # alone it reads as 推诿
    transfer = [Segment(0.0, 1.5, excuse, "agent"), Segment(2.1, 4.0, help_, "agent")]
    assert not model.hits(phrasebook, transfer, [])
    apart = [Segment(0.0, 1.5, excuse, "agent"), Segment(6.0, 8.0, help_, "agent")]
    assert [h.heard for h in model.hits(phrasebook, apart, [])] == [excuse]

    # a warning cut in two: neither half is forbidden alone (a trained line, whose halves are not)
    first, second = "我再跟你说一次。", "最后一次啊。"
    assert all(j.probability < model.review_threshold for j in model.judge([first, second]))
    cut = [Segment(0.0, 1.5, first, "agent"), Segment(1.9, 3.5, second, "agent")]
    [hit] = model.hits(load_phrasebook("customer_service"), cut, [])
    assert hit.category == "scolding" and hit.heard == first + second and (hit.start, hit.end) == (0.0, 3.5)
    assert not model.hits(load_phrasebook("customer_service"), [cut[0], Segment(6.0, 7.5, second, "agent")], [])
