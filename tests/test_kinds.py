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


def forbidden_kinds(phrasebook: str, text: str) -> set:
    """The categories of the forbidden talk ``text`` raises in ``phrasebook``."""
    return {h.category for h in matcher_for(load_phrasebook(phrasebook)).match_text(text) if h.kind == "forbidden"}


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
    kinds = forbidden_kinds(phrasebook, text)
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
    kinds = forbidden_kinds(phrasebook, text)
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
    kinds = forbidden_kinds(phrasebook, text)
    assert (kind in kinds) if kind else not kinds, kinds


# ---- conduct8 (issue 14): accepting a gift or a treat, said the way agents say it. Written before the rules
# were changed. An acceptance is seldom 我收下了: it is where to put the gift or hide it, an idiom of not standing
# on ceremony, a joke or a small act (tasting it, keeping it "just this once"), a treat agreed with a day or a time,
# and often a favour promised in return. Refusals, thanks for nothing material, the agent's own invitations to a
# company event, small talk about meals and sales talk stay silent.
ACCEPTING_GIFTS = [
    # where to put it, or hide it
    ("hospital", "行吧，搁床头柜里，别让护士长瞅见"),
    ("office", "卡你塞我抽屉里就行，别让科长知道"),
    ("broadband", "酒就放我电动车后筐里吧，回头我自己拿"),
    ("customer_service", "那个信封你夹在资料里递给我就行"),
    ("investment", "茶叶您让司机直接送我家楼下，我下楼拿"),
    ("office", "东西别拿到单位来，晚上我去你那取"),
    ("hospital", "红包压在病历底下吧，我待会儿收"),
    ("office", "好好，放那边柜子顶上，我下班带走"),
    # not standing on ceremony, not refusing a kindness twice
    ("customer_service", "您都这么说了，我再推就见外了"),
    ("investment", "既然是您一片心意，我再推辞就是不给面子了"),
    ("hospital", "大姐您这么实在，那我就不矫情了"),
    ("office", "行行行，咱俩谁跟谁，我不跟你客套了"),
    ("broadband", "恭敬不如从命，那这箱水果我就带走了"),
    ("customer_service", "那我就厚着脸皮收了啊"),
    ("investment", "您一番好意，我再不收倒显得我不近人情了"),
    # a joke or a small act: tasting it, keeping it just this once
    ("broadband", "那我先尝一个，嗯，这橘子真甜，剩下的我带回去给孩子"),
    ("hospital", "就这一回啊，下次来可不许再带东西了"),
    ("office", "哈哈，那我就替领导把这瓶酒先保管着"),
    ("customer_service", "行，这卡我先替您保管着，哈哈"),
    ("investment", "茅台啊？那我得尝尝，开一瓶咱俩喝"),
    ("hospital", "这回就破个例，东西我留下"),
    ("broadband", "那我就沾沾你的光，这条烟我抽了"),
    ("hospital", "我这人不爱收东西，你这个我就破例留下吧"),
    ("broadband", "一点小东西还这么客气，那我装车上了啊"),
    # a treat agreed with a day or a time
    ("investment", "行啊，那就周五晚上，您定好包厢发我位置"),
    ("office", "那就明天中午吧，老地方，你请客我就不客气了"),
    ("customer_service", "好嘞，下礼拜三晚上七点，我带上小张一起去"),
    ("broadband", "晚上那顿我肯定去，七点前我忙完就过来"),
    ("hospital", "周末钓鱼啊，行，那我周六一早在医院门口等你"),
    ("investment", "洗脚就算了，吃个饭可以，周四晚上吧"),
    ("office", "那顿饭我去，地址你一会微信发我"),
    # a favour promised in return
    ("hospital", "心意我收着，你爸的床位我明天一早就给你调到单间"),
    ("broadband", "这烟我拿了，你家宽带我给你免费升到千兆"),
    ("customer_service", "卡我收了，您这投诉单我给您往上报，争取给您多赔点"),
    ("office", "东西你放下吧，你那个审批我催着点，这周给你批下来"),
    ("investment", "您这么够意思，那个铺位我给您留着，谁来也不给"),
    ("hospital", "行，水果我留下了，手术我亲自给他做"),
    ("office", "红包我先收了，你的材料明天我第一个给你审"),
    ("broadband", "那我就不客气了，回头你家网络有啥事直接打我手机，随叫随到"),
    ("customer_service", "礼品我就收下了，您下回来办业务直接找我，不用排队"),
    ("investment", "这份礼我收了，下个月的租金我跟老板说给您缓缓"),
    ("hospital", "大哥你这太客气了，那我就拿着了，回头手术的事我多上心"),
    ("office", "那就谢谢张总了，卡我揣着，合同的事您放心"),
    ("customer_service", "这么贵重的东西，那好吧，我先收起来，别跟别人说啊"),
    ("investment", "行，那两条中华我拎走了，下回您来我请您喝茶"),
]
NOT_ACCEPTING = [
    # refusals with the same surface words
    ("hospital", "心意我领了，东西您拿回去，我们有规定不能收"),
    ("office", "按规定不能收，您把卡收好"),
    ("investment", "饭就不吃了，您的事我们按流程办"),
    ("broadband", "这烟您自己留着抽吧，我们不收客户东西"),
    ("customer_service", "您太客气了，礼品真不能收，您的问题我们一定尽快处理"),
    ("hospital", "红包您收回去，手术我们一样认真做"),
    ("office", "东西别往我抽屉里塞，被看见了我得挨处分"),
    ("investment", "您的好意我心领了，吃饭真不用，周五我还得加班"),
    ("broadband", "水果我不能要，您留着给孩子吃"),
    ("customer_service", "谢谢您的好意，我们有纪律，一分钱都不能收"),
    # the agent's thanks for nothing material
    ("customer_service", "谢谢您的理解和支持，祝您生活愉快"),
    ("hospital", "谢谢您夸奖，这是我们应该做的"),
    ("office", "您太客气了，这都是我分内的事"),
    ("broadband", "不客气，有问题随时打这个电话"),
    ("investment", "感谢您对我们的信任，合同我们按流程走"),
    ("hospital", "您别客气，我们应该做的，回去好好休息"),
    # the agent inviting the customer to a company event
    ("investment", "周六下午我们有个招商说明会，诚邀您来参加，现场有茶歇"),
    ("customer_service", "下周三晚上七点营业厅有客户答谢会，欢迎您带家人来"),
    ("office", "明天上午九点在三楼会议室开座谈会，您准时到就行"),
    ("hospital", "周六上午我们科有义诊活动，您可以带老人来量血压"),
    ("broadband", "周日我们在小区门口搞活动，办宽带送路由器，您可以过来看看"),
    ("investment", "周五晚上我们公司年会，您要是有空一起来吃个饭"),
    # small talk about meals
    ("customer_service", "您吃饭了吗？我这边帮您查一下账单"),
    ("hospital", "大爷早饭吃了吗，今天要空腹抽血，先别吃东西"),
    ("office", "中午吃饭了吗，材料我帮您看一下"),
    ("broadband", "您先吃饭，我七点过来装机"),
    # sales talk
    ("customer_service", "您尝尝我们的新套餐，每月多送十个G流量"),
    ("broadband", "您可以试试我们的千兆套餐，第一个月免费"),
    ("investment", "这个铺位您先看看，喜欢的话我给您留到周五"),
    # things put down or hidden that are no gift; a one-off that is no gift
    ("hospital", "东西先放这儿吧，检查完我们通知您来取"),
    ("broadband", "光猫放桌上吧，别让孩子碰"),
    ("office", "文件放我抽屉里吧，别让别人看见，涉密的"),
    ("customer_service", "这个优惠就这一次啊，下个月恢复原价"),
    ("hospital", "药您拿回去按时吃，下次复查别忘了带病历"),
    ("office", "下不为例啊，下次材料要带齐"),
    ("customer_service", "卡您收好，密码别告诉别人"),
]

# A second round, written after the rules were changed and measured once as written (9/20 acceptances, 15/15 silent),
# then generalised: a place said by its ending (挂门后头, 搁我桌子底下), out of sight said otherwise (看不见, 这儿人多),
# 推来推去 and 看不起您 as refusing twice, a count with no noun (这两瓶), an outing (打球), leave taken to come (请假出来).
ACCEPTING_GIFTS += [
    ("hospital", "你把袋子挂门后头吧，护士查房看不见"),
    ("office", "搁我桌子底下就行，下午没人的时候我再拿"),
    ("broadband", "那我就不跟你推来推去了，谢了啊兄弟"),
    ("customer_service", "阿姨您太实在了，那我就收着了，下回您来我给您优先办"),
    ("investment", "老板都这么说了，我再客气就是看不起您了"),
    ("hospital", "那我就拿一个，剩下的你给护士站送去吧"),
    ("office", "这月饼是自家做的啊，那我尝一块"),
    ("broadband", "行，这两瓶我替你处理了，哈哈"),
    ("customer_service", "明晚六点是吧，我下了班直接过去"),
    ("investment", "周六打球可以啊，你订好场地叫我"),
    ("hospital", "那就后天中午，医院对面那家，我请假出来"),
    ("office", "卡我先收着，你那个报销我今天就给你签了"),
    ("broadband", "烟我留下了，以后你家网有毛病我第一时间过来"),
    ("customer_service", "那我就不客气了，您这单我让他们给您加急处理"),
    ("hospital", "东西我就先收下了，你妈那个检查我给安排明天一早"),
    ("office", "那我就却之不恭了，这事我肯定给你办得妥妥的"),
    ("broadband", "这茶叶看着不错啊，那我就留着慢慢喝了"),
    ("hospital", "放包里吧，出了门再说，这儿人多"),
    # a third round, measured once as written (5/16 found, 10/10 silent), then generalised
    ("hospital", "哎呀这怎么好意思，那我先替孩子谢谢你了，床位的事我盯着"),
    ("office", "行，那箱苹果你让门卫转我一下，别登记"),
    ("broadband", "嘿，你这么讲究，那这盒茶我带回去尝尝"),
    ("customer_service", "那好，这张卡我先用着，你那个退费我下午就给你走完"),
    ("investment", "成，周日上午高尔夫，你车来接我就行"),
    ("hospital", "信封你塞我白大褂兜里吧，快点"),
    ("office", "行了别推了，东西我拿着，你那事儿我放心上了"),
    ("broadband", "你都拿来了我还能让你拎回去啊，放这吧"),
    ("customer_service", "好好好，我不跟您争了，这份心意我领了也收了"),
    ("investment", "晚上那个局我去，你把地址发我"),
    ("hospital", "那我就借花献佛，拿去给科里的小姑娘们分分"),
    ("office", "这酒我先存你那儿，改天咱俩一块喝"),
    ("broadband", "放后备箱吧，我一会儿开走"),
    ("customer_service", "您这太见外了，那我就不客气地收下了"),
    ("investment", "兄弟你这么仗义，那下个月的物业费我给你先免了"),
]
KNOWN_MISSES = [
    # thanks with a turn jumped (谢谢 also answers words), and 下不为例 alone (also a rule waived once)
    pytest.param("investment", "谢谢老哥了，那个铺面下礼拜我先带您看，别人都排后面",
                 marks=pytest.mark.xfail(strict=True, reason="谢谢老哥了 is thanks for words too")),
    pytest.param("customer_service", "好吧好吧，就这一次，下不为例啊",
                 marks=pytest.mark.xfail(strict=True, reason="这次破例，下不为例 also waives a rule for the customer")),
    pytest.param("hospital", "行吧，那明天早上六点你在停车场等我，给我就行",
                 marks=pytest.mark.xfail(strict=True, reason="a hand-over arranged, nothing named: no shape says it yet")),
]
NOT_ACCEPTING += [
    ("hospital", "阿姨您的心意我们领了，这袋水果请您带回去给叔叔吃"),
    ("office", "您别往我桌上放了，单位有规定，我真不能收"),
    ("broadband", "谢谢您的茶水，我喝口水就行，设备已经调好了"),
    ("customer_service", "感谢您的认可，有问题随时联系我们"),
    ("investment", "周六上午十点在售楼处有开盘活动，您可以过来看看"),
    ("hospital", "您先去吃个午饭，下午两点来拿报告"),
    ("office", "吃饭就不去了，谢谢您的好意，材料齐了我们马上办"),
    ("broadband", "您家路由器先放这儿，我带回去检测，明天给您送回来"),
    ("customer_service", "您尝试重启一下机顶盒，不行我再派师傅"),
    ("investment", "这个位置很多人在问，您喜欢的话尽快交定金"),
    ("hospital", "这药饭后吃，一天三次，别空腹"),
    ("office", "您把申请表放前台吧，我下午统一收"),
    ("broadband", "钱不用给我，您在手机上交就行"),
    ("customer_service", "您太客气了，都是我们应该做的，祝您生活愉快"),
    ("investment", "晚上七点我们有个线上直播讲解，您有空可以看看"),
    # probes of the wider shapes: medicine disposed of, the customer's card and PIN, a form, evening work
    ("hospital", "这两瓶药我帮您处理了"),
    ("customer_service", "您把卡放包里收好，别让人看见密码"),
    ("office", "那我先拿一张表"),
    ("investment", "周六晚上的发布会我一定到"),
    ("broadband", "钥匙放门口地垫底下，我下班自己拿"),
    # the customer pressing a gift: the giver's words stay silent even if a mono stream gives them to the agent
    ("hospital", "大夫您就收下吧，放抽屉里，别让人看见"),
    ("office", "一点心意，您别推了，再推就见外了"),
    ("broadband", "东西我放您车上了，别让人看见"),
    ("hospital", "卡您收着，我儿子的手术就拜托您了"),
    ("investment", "周六晚上我请您吃饭，您可一定要来"),
    # the third round's near misses, and probes of its shapes
    ("hospital", "您这锦旗我们挂在护士站了，谢谢您的鼓励"),
    ("office", "东西您拎回去吧，我们这儿真不兴这个"),
    ("broadband", "您别忙活了，茶我就不喝了，我赶下一家"),
    ("customer_service", "您这张卡我先帮您注销，新卡三天内寄到"),
    ("investment", "周日上午看房的客户多，您最好早点来"),
    ("hospital", "您这东西先放护士站，家属来了再拿"),
    ("office", "资料您放后备箱吧，我们到了单位再搬"),
    ("broadband", "晚上七点后师傅不上门，明天一早给您修"),
    ("customer_service", "您说的那个局，我们这边没有权限查"),
    ("investment", "物业费下个月开始按新标准收，您可以在公众号查"),
    ("customer_service", "您这卡我先拿着，办完还您"),
    ("customer_service", "您的银行卡我先拿着"),
    ("office", "这两箱资料放后备箱吧，我一会儿开走"),
]


@pytest.mark.parametrize("phrasebook, text", ACCEPTING_GIFTS + KNOWN_MISSES)
def test_an_agent_accepting_a_gift_or_a_treat_is_bribery_however_it_is_said(phrasebook, text):
    assert "bribery" in forbidden_kinds(phrasebook, text)


@pytest.mark.parametrize("phrasebook, text", NOT_ACCEPTING)
def test_refusals_thanks_invitations_and_small_talk_raise_no_bribery(phrasebook, text):
    assert "bribery" not in forbidden_kinds(phrasebook, text)
