"""Hand-built calls for the rules and report tests: segments, hits and a small
broadband phrasebook taken from 第一篇 of the codes of conduct."""

from __future__ import annotations

from monitor.asr import Segment
from monitor.match import Hit
from monitor.phrasebook import Check, Limits, Phrase, Phrasebook

GREETING = "您好，我是**家庭宽带维护的工程师**，负责您使用设备的维护，现在由我来处理故障，请问可以吗？"
FAREWELL = "很高兴为您服务，今后如有需要，请您拨66616567号联络，再见！"
APOLOGY = "对不起，由于我方原因，使您的业务无法正常使用，我们深表歉意。我们正在加紧抢修"


def phrasebook(**limits) -> Phrasebook:
    phrases = [
        Phrase("bb.greeting.fault", "mandated", "greeting", GREETING, "第4条"),
        Phrase("bb.farewell", "mandated", "farewell", FAREWELL, "第11条"),
        Phrase("bb.apology.our_fault", "mandated", "apology", APOLOGY, "第22条"),
        Phrase(
            "bb.forbidden.asked_again", "forbidden", "rude", "刚才不是跟你说了，怎么又问？", "第36条",
            severity="major", points=15, instead="我们正在排查，原因查明后将及时向您反馈", instead_article="第21条",
        ),
        Phrase(
            "bb.forbidden.not_my_job", "forbidden", "rude", "不知道，这事不归我管。", "第36条",
            severity="critical", points=20, instead="您好，这个问题我们还需要进一步确定，将很快给予您满意的答复。",
            instead_article="第30条",
        ),
        Phrase("bb.forbidden.no_way", "forbidden", "rude", "我也没办法啊。", "第36条", severity="minor"),
        Phrase("bb.cue.complaint", "cue", "complaint", "你有没有搞错", "第31条", speaker="customer"),
    ]  # fmt: skip
    checks = [
        Check("greeting", "greeting", "第4条", 10, "开场自我介绍", within_first_s=20),
        Check("farewell", "farewell", "第11条", 10, "结束道别", within_last_s=20),
        Check("apology_after_complaint", "apology", "第31条", 10, "抱怨后致歉", after="complaint", within_s=30),
    ]
    return Phrasebook("broadband", "2024.1", "家庭宽带维护人员行为规范", phrases, checks, Limits(**limits))


def seg(start: float, end: float, text: str, speaker: str = "agent") -> Segment:
    return Segment(start=start, end=end, text=text, speaker=speaker)


def hit(phrase_id: str, start: float, end: float, heard: str, speaker: str = "agent", confidence: float = 0.95) -> Hit:
    phrase = phrasebook().by_id(phrase_id)
    return Hit(
        phrase_id=phrase_id, kind=phrase.kind, category=phrase.category, canonical=phrase.text, heard=heard,
        confidence=confidence, article=phrase.article, start=start, end=end, speaker=speaker, method="exact",
    )  # fmt: skip


def d02_fault_rude() -> tuple[list[Segment], list[Hit]]:
    """The d02 sample call: a proper greeting, two forbidden phrases, no farewell."""
    segments = [
        seg(0.5, 10.2, "您好，我是家庭宽带维护的工程师小赵，负责您使用设备的维护，现在由我来处理故障，请问可以吗？"),
        seg(10.8, 14.0, "我家的网络又断了，到底是什么原因？", "customer"),
        seg(14.6, 17.2, "刚才不是跟你说了，怎么又问？"),
        seg(17.8, 19.6, "那你们什么时候能修好？", "customer"),
        seg(20.2, 22.2, "不知道，这事不归我管。"),
    ]
    hits = [
        hit("bb.greeting.fault", 0.5, 10.2, "您好我是家庭宽带维护的工程师小赵负责您使用设备的维护现在由我来处理故障请问可以吗"),
        hit("bb.forbidden.asked_again", 14.6, 17.0, "刚才不是跟你说了怎么又问", confidence=0.97),
        hit("bb.forbidden.not_my_job", 20.2, 22.0, "不知道这事不归我管", confidence=0.93),
    ]
    return segments, hits
