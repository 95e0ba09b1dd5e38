from call_fixtures import d02_fault_rude, hit, phrasebook, seg

from monitor.asr import Segment
from monitor.rules import MAX_DEDUCTIONS_PER_PHRASE, judge, metrics


def checks_by_id(judgement):
    return {c.id: c for c in judgement.checks}


def test_d02_greeting_passes_farewell_fails_two_violations():
    segments, hits = d02_fault_rude()
    judgement = judge(segments, hits, phrasebook(), duration_s=23.3, stereo=True)

    checks = checks_by_id(judgement)
    assert checks["greeting"].passed is True
    assert checks["farewell"].passed is False
    assert checks["farewell"].points == 10
    assert checks["apology_after_complaint"].passed is True
    assert checks["apology_after_complaint"].applicable is False
    assert [(d.source, d.points) for d in judgement.deductions] == [
        ("farewell", 10),
        ("bb.forbidden.asked_again", 15),
        ("bb.forbidden.not_my_job", 20),
    ]
    assert judgement.score_total == 55
    assert [e.kind for e in judgement.events] == ["mandated", "forbidden", "forbidden"]


def test_violation_deduction_cites_article_evidence_and_coaching():
    segments, hits = d02_fault_rude()
    judgement = judge(segments, hits, phrasebook(), duration_s=23.3, stereo=True)

    violation = judgement.deductions[1]
    assert violation.article == "第36条"
    assert violation.evidence.start == 14.6
    assert violation.evidence.heard == "刚才不是跟你说了怎么又问"
    assert violation.coaching == "我们正在排查，原因查明后将及时向您反馈"
    assert violation.coaching_article == "第21条"
    farewell = judgement.deductions[0]
    assert farewell.evidence is None
    assert farewell.coaching.startswith("很高兴为您服务")
    assert farewell.coaching_article == "第11条"


def test_late_greeting_fails_with_evidence():
    segments = [seg(2.0, 5.0, "喂，什么事？"), seg(30.0, 38.0, "您好，我是工程师小赵"), seg(40.0, 44.0, "很高兴为您服务，再见！")]
    hits = [hit("bb.greeting.fault", 30.0, 38.0, "您好我是工程师小赵"), hit("bb.farewell", 40.0, 44.0, "很高兴为您服务再见")]
    judgement = judge(segments, hits, phrasebook(), duration_s=45.0, stereo=False)

    greeting = checks_by_id(judgement)["greeting"]
    assert greeting.passed is False
    assert greeting.evidence[0].start == 30.0
    assert "晚于开口后20秒" in greeting.detail
    assert checks_by_id(judgement)["farewell"].passed is True


def test_greeting_evidence_is_the_agents_sure_sentence_not_a_doubtful_hello():
    segments = [
        Segment(0.5, 1.5, "喂，你好。", "agent", speaker_confidence=0.55),
        Segment(2.0, 6.0, "您好，我是工程师小赵", "agent", speaker_confidence=0.9),
        Segment(8.0, 10.0, "好的，再见。", "agent", speaker_confidence=0.9),
        Segment(10.5, 11.5, "再见。", "customer", speaker_confidence=0.55),
    ]
    judgement = judge(segments, [], phrasebook(), duration_s=12.0, stereo=False)

    checks = checks_by_id(judgement)
    assert checks["greeting"].passed and checks["greeting"].evidence[0].start == 2.0
    assert checks["farewell"].passed and checks["farewell"].evidence[0].start == 8.0


def test_greeting_window_counts_from_first_agent_speech():
    segments = [seg(25.0, 30.0, "您好，我是工程师小赵"), seg(40.0, 44.0, "再见")]
    hits = [hit("bb.greeting.fault", 25.0, 30.0, "您好我是工程师小赵")]
    judgement = judge(segments, hits, phrasebook(), duration_s=45.0, stereo=False)

    assert checks_by_id(judgement)["greeting"].passed is True


def test_greeting_and_farewell_pass_however_they_are_worded():
    segments = [seg(0.5, 4.0, "为您好,欢待维修这边,我信留有什么问题你说。"), seg(10.0, 14.0, "好的，师傅明天上午过去。"),
                seg(20.0, 23.0, "那就不打扰您了，祝您周末愉快。")]  # fmt: skip
    judgement = judge(segments, [], phrasebook(), duration_s=25.0, stereo=False)

    checks = checks_by_id(judgement)
    assert checks["greeting"].passed is True
    assert checks["greeting"].evidence[0].start == 0.5
    assert checks["farewell"].passed is True
    assert checks["farewell"].evidence[0].start == 20.0


def test_ending_a_call_is_no_farewell_and_your_good_is_no_greeting():
    segments = [seg(0.5, 3.0, "喂？你好好想想，什么事？"), seg(10.0, 14.0, "您好像没插网线。"), seg(20.0, 22.0, "行了，就这样。")]
    judgement = judge(segments, [], phrasebook(), duration_s=25.0, stereo=False)

    checks = checks_by_id(judgement)
    assert checks["greeting"].passed is False
    assert checks["farewell"].passed is False


def test_farewell_too_early_fails():
    segments = [seg(0.5, 5.0, "您好"), seg(6.0, 9.0, "很高兴为您服务，再见！"), seg(40.0, 60.0, "还有一件事要说明一下")]
    hits = [hit("bb.farewell", 6.0, 9.0, "很高兴为您服务再见")]
    judgement = judge(segments, hits, phrasebook(), duration_s=61.0, stereo=False)

    farewell = checks_by_id(judgement)["farewell"]
    assert farewell.passed is False
    assert farewell.evidence[0].start == 6.0


def test_customer_forbidden_phrase_never_counts():
    segments = [seg(0.5, 4.0, "您好"), seg(5.0, 8.0, "我也没办法啊。", "customer")]
    hits = [hit("bb.forbidden.no_way", 5.0, 7.5, "我也没办法啊", speaker="customer")]
    judgement = judge(segments, hits, phrasebook(), duration_s=10.0, stereo=True)

    assert judgement.events == []
    assert not any(d.source == "bb.forbidden.no_way" for d in judgement.deductions)


def test_customer_greeting_does_not_satisfy_agent_check():
    segments = [seg(0.5, 2.0, "喂"), seg(2.5, 5.0, "您好，我是工程师", "customer")]
    hits = [hit("bb.greeting.fault", 2.5, 5.0, "您好我是工程师", speaker="customer")]
    judgement = judge(segments, hits, phrasebook(), duration_s=6.0, stereo=True)

    assert checks_by_id(judgement)["greeting"].passed is False


def test_mono_call_everything_is_agent():
    segments = [seg(0.5, 4.0, "您好，我是工程师小赵"), seg(5.0, 8.0, "我也没办法啊。")]
    hits = [hit("bb.greeting.fault", 0.5, 4.0, "您好我是工程师小赵"), hit("bb.forbidden.no_way", 5.0, 7.5, "我也没办法啊")]
    judgement = judge(segments, hits, phrasebook(), duration_s=9.0, stereo=False)

    assert [e.phrase_id for e in judgement.events] == ["bb.greeting.fault", "bb.forbidden.no_way"]
    no_way = next(d for d in judgement.deductions if d.source == "bb.forbidden.no_way")
    assert no_way.points == 5  # no points in the phrasebook: minor severity's default
    assert judgement.metrics["interruptions"] is None
    assert judgement.metrics["customer_talk_s"] is None


def test_a_held_phrase_names_the_side_its_uncertain_sentence_leans_to():
    # Mono call: the phrase is matched as the agent's whichever side its sentence leans to
    # (roles.match_by_role), held for review; the event then says what the transcript says.
    segments = [
        Segment(0.5, 4.0, "您好，我是工程师小赵", "agent", speaker_confidence=0.95),
        Segment(5.0, 8.0, "我也没办法啊。", "customer", speaker_confidence=0.55),
        Segment(9.0, 11.0, "我也没办法啊。", "agent", speaker_confidence=0.6),
    ]
    hits = [hit("bb.greeting.fault", 0.5, 4.0, "您好我是工程师小赵"), hit("bb.forbidden.no_way", 5.0, 7.5, "我也没办法啊"),
            hit("bb.forbidden.no_way", 9.0, 10.5, "我也没办法啊")]
    judgement = judge(segments, hits, phrasebook(), duration_s=12.0, stereo=False)

    held = [e for e in judgement.events if e.phrase_id == "bb.forbidden.no_way"]
    assert [(e.start, e.speaker) for e in held] == [(5.0, "customer"), (9.0, "agent")]
    assert held == judgement.held
    assert not any(d.source == "bb.forbidden.no_way" for d in judgement.deductions)


def test_complaint_answered_by_apology_passes():
    segments = [
        seg(0.5, 9.0, "您好，我是工程师小周"),
        seg(10.8, 14.6, "你有没有搞错？", "customer"),
        seg(15.2, 23.0, "对不起，由于我方原因，使您的业务无法正常使用，我们深表歉意。"),
    ]
    hits = [
        hit("bb.cue.complaint", 12.5, 14.0, "你有没有搞错", speaker="customer"),
        hit("bb.apology.our_fault", 15.2, 23.0, "对不起由于我方原因使您的业务无法正常使用我们深表歉意"),
    ]
    judgement = judge(segments, hits, phrasebook(), duration_s=24.0, stereo=True)

    apology = checks_by_id(judgement)["apology_after_complaint"]
    assert apology.passed is True and apology.applicable is True
    assert apology.evidence[0].start == 15.2
    assert all(e.kind != "cue" for e in judgement.events)


def test_complaint_without_apology_fails_and_cites_trigger():
    segments = [seg(0.5, 9.0, "您好"), seg(10.8, 14.6, "你有没有搞错？", "customer"), seg(50.0, 52.0, "嗯")]
    hits = [hit("bb.cue.complaint", 12.5, 14.0, "你有没有搞错", speaker="customer")]
    judgement = judge(segments, hits, phrasebook(), duration_s=53.0, stereo=True)

    apology = checks_by_id(judgement)["apology_after_complaint"]
    assert apology.passed is False
    assert apology.evidence[0].speaker == "customer"
    deduction = next(d for d in judgement.deductions if d.source == "apology_after_complaint")
    assert deduction.points == 10 and deduction.article == "第31条"


def _overpromise_call(confidence):
    """A mono call whose only complaint words are in the agent's own promise."""
    segments = [
        Segment(0.5, 4.0, "您好，我是工程师小周", "agent", speaker_confidence=0.9),
        Segment(5.0, 9.0, "您放心，保证以后再也不会上不了网。", "agent", speaker_confidence=confidence),
        Segment(10.0, 12.0, "好的，谢谢。", "customer", speaker_confidence=0.9),
    ]
    return segments, [hit("bb.cue.complaint", 7.0, 8.5, "上不了网")]


def test_complaint_words_in_the_agents_own_sentence_are_no_complaint():
    segments, hits = _overpromise_call(confidence=0.9)
    judgement = judge(segments, hits, phrasebook(), duration_s=13.0, stereo=False)

    apology = checks_by_id(judgement)["apology_after_complaint"]
    assert apology.applicable is False
    assert not any(d.source == "apology_after_complaint" for d in judgement.deductions)


def test_complaint_words_in_a_doubtful_sentence_still_ask_for_an_apology():
    segments, hits = _overpromise_call(confidence=0.5)
    judgement = judge(segments, hits, phrasebook(), duration_s=13.0, stereo=False)

    assert checks_by_id(judgement)["apology_after_complaint"].applicable is True


def test_complaint_words_on_the_agent_channel_of_a_stereo_call_are_no_complaint():
    segments = [seg(0.5, 4.0, "您好"), seg(5.0, 9.0, "保证以后再也不会上不了网"), seg(10.0, 12.0, "好的", "customer")]
    judgement = judge(segments, [hit("bb.cue.complaint", 7.0, 8.5, "上不了网")], phrasebook(), duration_s=13.0, stereo=True)

    assert checks_by_id(judgement)["apology_after_complaint"].applicable is False


def test_apology_too_late_after_complaint_fails():
    segments = [seg(0.5, 9.0, "您好"), seg(10.0, 12.0, "你有没有搞错", "customer"), seg(60.0, 64.0, "对不起")]
    hits = [
        hit("bb.cue.complaint", 10.0, 12.0, "你有没有搞错", speaker="customer"),
        hit("bb.apology.our_fault", 60.0, 64.0, "对不起由于我方原因"),
    ]
    judgement = judge(segments, hits, phrasebook(), duration_s=65.0, stereo=True)

    assert checks_by_id(judgement)["apology_after_complaint"].passed is False


def test_agent_silent_call_is_not_scored():
    segments = [seg(1.0, 5.0, "喂？有人吗？", "customer")]
    judgement = judge(segments, [], phrasebook(), duration_s=10.0, stereo=True)

    assert judgement.checks is None
    assert judgement.score_total is None
    assert judgement.deductions == []
    assert judgement.metrics["agent_talk_s"] == 0


def test_repeated_violation_deducts_each_time_up_to_cap():
    segments = [seg(0.5, 4.0, "喂？")] + [seg(10.0 * i, 10.0 * i + 2, "不知道，这事不归我管。") for i in range(1, 6)]
    hits = [hit("bb.forbidden.not_my_job", 10.0 * i, 10.0 * i + 2, "不知道这事不归我管") for i in range(1, 6)]
    judgement = judge(segments, hits, phrasebook(), duration_s=60.0, stereo=False)

    violations = [d for d in judgement.deductions if d.source == "bb.forbidden.not_my_job"]
    assert len(violations) == MAX_DEDUCTIONS_PER_PHRASE
    assert len(judgement.events) == 5
    assert judgement.score_total == 100 - 10 - 10 - MAX_DEDUCTIONS_PER_PHRASE * 20


def test_score_never_goes_below_zero():
    phrase_ids = ["bb.forbidden.asked_again", "bb.forbidden.not_my_job", "bb.forbidden.no_way"] * 3
    segments = [seg(5.0 * i, 5.0 * i + 2, "……") for i in range(len(phrase_ids))]
    hits = [hit(p, 5.0 * i, 5.0 * i + 2, "……") for i, p in enumerate(phrase_ids)]
    judgement = judge(segments, hits, phrasebook(), duration_s=50.0, stereo=False)

    assert sum(d.points for d in judgement.deductions) > 100
    assert judgement.score_total == 0


def test_interruption_when_agent_starts_over_customer():
    segments = [
        seg(0.0, 4.0, "您好"),
        seg(5.0, 12.0, "我家的网络又断了，到底是什么原因？", "customer"),
        seg(8.0, 10.0, "这个我知道"),  # starts while the customer is mid-sentence
        seg(12.1, 14.0, "好的"),  # a quick reply right at the end is not 抢话
    ]
    result = metrics(segments, 15.0, phrasebook().limits, stereo=True)

    assert result["interruptions"] == 1
    assert result["interruption_events"][0]["start"] == 8.0
    assert result["customer_talk_s"] == 7.0


def test_dead_air_and_longest_silence():
    segments = [seg(3.0, 5.0, "您好"), seg(6.0, 8.0, "请说", "customer"), seg(20.0, 22.0, "让您久等了")]
    result = metrics(segments, 40.0, phrasebook(max_silence_s=10.0).limits, stereo=True)

    assert result["longest_silence_s"] == 12.0
    assert result["longest_silence_at"] == 8.0
    assert result["dead_air"] == [{"start": 8.0, "end": 20.0, "duration_s": 12.0}]  # not the 18 s hang-up tail


def test_speech_rate_counts_characters_per_minute_and_flags():
    fast = [seg(0.0, 10.0, "一" * 50 + "，。")]  # 50 characters in 10 s: 300 per minute
    result = metrics(fast, 10.0, phrasebook().limits, stereo=False)
    assert result["speech_rate_cpm"] == 300
    assert result["speech_rate_too_fast"] is True

    relaxed = metrics(fast, 10.0, phrasebook(speech_rate_max_cpm=320).limits, stereo=False)
    assert relaxed["speech_rate_too_fast"] is False


def test_agent_talk_counts_overlapping_segments_once():
    segments = [seg(0.0, 10.0, "您好"), seg(5.0, 12.0, "请问")]
    assert metrics(segments, 20.0, phrasebook().limits, stereo=False)["agent_talk_s"] == 12.0
