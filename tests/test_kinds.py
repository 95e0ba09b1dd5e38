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
    return rules.find(normalized.text, to_symbols(normalized.text), normalized.clause_starts,
                      normalized.sentence_starts)


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


@pytest.mark.parametrize("text, fires", [
    # Help offered in an earlier sentence does not excuse a later brush-off (a mono stream
    # holds the customer's question between them).
    ("不过我马上帮您转到账务组，他们今天会回复您。那要等多久？我哪知道要多久，等着吧。", True),
    ("我马上帮您转给负责的同事。我哪知道他们什么时候处理。", True),
    # Help offered in the same sentence, or after, still guards.
    ("这个不是我们部门负责的。不过我马上帮您转到账务组，他们今天会回复您。", False),
    ("这个不归我们管，但我马上帮您转给负责的同事。", False),
])
def test_a_politeness_guard_reaches_back_only_within_its_sentence(text, fires):
    matcher = matcher_for(load_phrasebook("customer_service"))
    forbidden = [h for h in matcher.match_text(text) if h.kind == "forbidden"]
    assert bool(forbidden) == fires, [h.canonical for h in forbidden]


def test_sentence_starts_follow_sentence_ends_not_commas():
    normalized = normalize("好的，我帮您查。稍等！行吗?")
    opened = [normalized.text[i] for i, s in enumerate(normalized.sentence_starts) if s]
    assert opened == ["好", "稍", "行"]
    assert sum(normalized.clause_starts) == 4


@pytest.mark.parametrize("phrasebook, text, kind", [
    # another bidder's or tenant's price, told to a bidder: a leak whoever the other party is
    ("office", "宏达报的单价是三十二块，你们做到三十以下就行", "disclosure"),
    ("office", "其他几家都报在五十万以上", "disclosure"),
    ("investment", "隔壁那家签的是每平米四块二", "disclosure"),
    ("office", "你们报个七十八万就稳了", "disclosure"),
    # one's own price, the customer's own bid, a count that is no price, a public price
    ("investment", "我们报的价是每平米四块，比市场价低", None),
    ("office", "您报的是七十八万，我这边登记了", None),
    ("customer_service", "您这个月报了两次修，我们再派师傅去看看", None),
    ("office", "招标控制价八十万，别家报的价开标后都在官网公示", None),
    # accepting a dinner gratefully; declining it, or keeping an appointment
    ("investment", "您太客气了，那行，晚上我准到", "bribery"),
    ("hospital", "那我就恭敬不如从命了", "bribery"),
    ("office", "您太客气了，吃饭就不必了，有事随时找我", None),
    ("customer_service", "您太客气了，明天上午师傅准到", None),
    # a visit or a job agreed: the date kept is the service's own, not a meal's
    ("broadband", "您太客气了，这是我们应该做的，今晚我一定把线路调好", None),
    ("broadband", "好的，那就这么说定了，周六上午我准时到您家安装", None),
    ("broadband", "那就去您家看看，今晚之前给您修好", None),
    ("broadband", "您太客气了，今晚我一定到您家调试", None),
    ("customer_service", "那我就不推辞了，周六中午不见不散", "bribery"),
    # a drug through a rep, or sent to the pharmacy
    ("hospital", "我给你个药代的电话，你直接找他买", "private_deal"),
    ("hospital", "医药代表不能直接卖药给病人，您到药房取", None),
    # a sign to read alone, the agent busy; or pointed to with help
    ("hospital", "门口有平面图，自己看，我这边忙着呢", "shirking"),
    ("office", "您看那边的指示牌，我也可以带您过去", None),
])
def test_the_kinds_conduct6_added_fire_and_their_near_misses_do_not(phrasebook, text, kind):
    matcher = matcher_for(load_phrasebook(phrasebook))
    kinds = {h.category for h in matcher.match_text(text) if h.kind == "forbidden"}
    assert (kind in kinds) if kind else not kinds, kinds


def test_a_group_word_may_be_a_shape_heard_in_either_order_within_one_clause():
    rules = KindRules([Rule(id="favour", groups=[["re:给我(拿|带)(两|几)(条|瓶)"], ["re:我.{0,3}给你(加急|提前)"]],
                            any_order=True, within=30)])
    assert find(rules, "回头给我拿两条烟，你这个我给你加急")
    assert find(rules, "你这个我马上给你提前，回头给我带几瓶酒")
    assert not find(rules, "你这个我给你加急"), "one side alone fired"
    assert not find(rules, "回头给我拿，两条烟，我给你加急"), "a shape matched across a clause"


def test_a_bad_shape_word_is_refused_naming_the_file(tmp_path):
    part = tmp_path / "part.yaml"
    part.write_text(textwrap.dedent("""\
        labels: {bribery: 收受礼金}
        kinds: {bribery: {article: 第1条, severity: major, points: 10, instead: 不收, instead_article: 第1条}}
        groups: {}
        rules:
          - {id: bribery.asking, category: bribery, text: 给我拿两条, all: [['re:给我(拿'], [加急]]}
        """), encoding="utf-8")
    with pytest.raises(MonitorError, match=r"part\.yaml.*bad pattern"):
        _load_part(str(part), part.stat().st_mtime_ns)


@pytest.mark.parametrize("phrasebook, text, kind", [
    # a favour asked in return, either side first; a gift declined with the favour done by the rules
    ("broadband", "回头给我整条好烟 你这个装机我给你加个急", "bribery"),
    ("hospital", "床位是紧，你回头给我拿两条好烟，我跟护士长通融一下", "bribery"),
    ("office", "水果您拿回去吧 材料我们按顺序给您办", None),
    # paid to the agent for a document; the fee paid at the counter, a receipt given
    ("hospital", "你塞我五百 我给你写个休一个月的假条", "private_deal"),
    ("customer_service", "您把费用交给我就行 我给您开收据", None),
    ("office", "资料给我两份 我给你盖章", None),
    # a stake for a result; a callback by a time
    ("customer_service", "今天之内一定给你通上气 通不上我给你赔", "over_promising"),
    ("office", "明天下午三点前我一定给您答复", None),
    # someone else's number or address read out; the caller's own checked, the technician's given
    ("hospital", "你问的那个产妇啊 她老公的电话是13812345678", "disclosure"),
    ("office", "你找李会计啊 她家住在阳光花园二期 你去那儿找吧", "disclosure"),
    # a number Whisper writes in groups is one number, not three clauses
    ("office", "王经理的私人号码是158 6033 4721，你就说是我给的", "disclosure"),
    ("hospital", "他住在三楼 您可以上去看他", None),
    ("broadband", "您的手机号是13812345678对吗 我给您登记", None),
    ("broadband", "师傅的电话是13698765432 他半小时后联系您", None),
    # the task handed back; self-help offered with help
    ("broadband", "网线松了吧 你自己拧紧试试 不行再打过来", "shirking"),
    ("office", "你先自己试一下 不行我马上过去", None),
    ("customer_service", "您来营业厅的时候记得带上身份证", None),
    # the agent's own name in a self-introduction, and why the agent calls, are no one else's details
    ("broadband", "我是老王，给你打电话是因为你欠费了", None),
    ("broadband", "小宋，约了今天两点移机，打电话是想跟您说个情况", None),
    ("office", "我是小李，听说老王被查了", "disclosure"),
])
def test_the_shapes_conduct7_added_fire_and_their_near_misses_do_not(phrasebook, text, kind):
    matcher = matcher_for(load_phrasebook(phrasebook))
    kinds = {h.category for h in matcher.match_text(text) if h.kind == "forbidden"}
    assert (kind in kinds) if kind else not kinds, kinds


# ---- precision7 (issues 11 and 14): polite near misses in office and hospital talk stay silent; their evil
# twins, the same surface words said as 推诿/敷衍, still fire (the customer_service, broadband and investment
# pairs are in tests/meaning_cases.yaml, types near_miss_* and evil_twin). Written before the rules were changed.
@pytest.mark.parametrize("phrasebook, text, kind", [
    ("hospital", "这病我们这儿看不了，你自己想办法", "shirking"),
    ("hospital", "这病我们这儿看不了 我给您开个转诊单 到市一院找王主任 他是这方面的专家", None),
    ("hospital", "我一个人说了不算 得科室开会定 定了我马上通知您家属", None),
    ("hospital", "我一个人说了不算 你找别人去", "shirking"),
    ("hospital", "今天的号挂满了 您明天早点来 或者我帮您问问下午有没有加号", None),
    ("hospital", "号满了 我也没办法 你自己看着办", "shirking"),
    ("hospital", "这个检查我们科做不了 得去放射科 我让护士带您过去", None),
    ("hospital", "这个检查我们科做不了 你去放射科问去", "shirking"),
    ("hospital", "您先别下床 刚做完手术 有事按铃叫我们", None),
    ("office", "这事我做不了主 我请示一下处长 下午给您回电话", None),
    ("office", "这事我做不了主 你找处长去", "shirking"),
    ("office", "报销这块不归我们科管 我把财务小王的分机号给您 您直接打过去就行", None),
    ("office", "报销不归我们管 爱找谁找谁去", "shirking"),
    ("office", "我就是个办事员 这个得领导签字 我帮您把材料递上去", None),
])
def test_precision7_near_misses_in_office_and_hospital_stay_silent_and_their_twins_fire(phrasebook, text, kind):
    matcher = matcher_for(load_phrasebook(phrasebook))
    kinds = {h.category for h in matcher.match_text(text) if h.kind == "forbidden"}
    assert (kind in kinds) if kind else not kinds, kinds
