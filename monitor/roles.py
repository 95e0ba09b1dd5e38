"""Who said each sentence of a mono call: the agent or the customer.

Most call archives are mono mixes, and a customer who says 你有没有搞错 must
not cost the agent points. Two kinds of evidence are combined:

- acoustic: the call's sentences fall into two voices (``voices.py`` describes
  each sentence; ``TwoVoices`` separates them), giving each sentence log-odds
  for one voice against the other;
- text: the agent is the side that speaks the code's phrases (greetings,
  mandated wording), greets and takes leave however worded (为你好…,
  感谢您的来电，再见), says 您 and 请问, opens the call, and does the service
  side's work even when it says none of the code's phrases (asks for the
  地址 and 电话号码, 登记s a 工单); the customer says the phrasebook's cue
  phrases (complaints), speaks of 你们 and 我家, and asks for help (派人).

The agent is the voice whose sentences carry more agent text evidence. The
voices themselves are believed as far as the words and the turn-taking bear
them out (``name_voices``: any call's sentences can be split in two, and a
voice the encoder cannot hear apart from the other is split by something
else). Each sentence then gets a role and a confidence: its acoustic log-odds
plus its own text log-odds, averaged over the chance that the voices were
named the wrong way round and over the chance that they are no speakers at
all, when its own words decide alone. A sentence whose confidence is below ``REVIEW_BELOW``
costs the agent no points and is listed for review (``rules.py``).

Decisions a reader would otherwise have to guess:

- A call of fewer than three sentences is not split into voices: each
  sentence is the agent's unless its own words say otherwise.
- Every mono call is taken to hold two voices: with a handful of sentences a
  split can always be found, so one voice cannot be told from two reliably.
  Recordings of the agent's side only should be scored with roles off
  (``ScoreOptions.separate_roles``).
- Stereo calls never come here: their channels are their roles.
- Pure functions over vectors and text; the audio side is in ``voices.py``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from monitor.asr import Segment
from monitor.text import courtesy_acts, spoken, to_simplified

if TYPE_CHECKING:
    from monitor.match import Hit
    from monitor.phrasebook import Phrasebook

# Text cues, as log-odds for the agent. Each counts once per sentence.
AGENT_WORDS = {
    # polite address
    "您": 0.8, "请问": 1.0, "请您": 1.0, "先生": 0.6, "女士": 0.6, "为您": 0.8, "帮您": 0.8, "给您": 0.6,
    # the service side's work, which a rude agent who never says the code's
    # phrases still does: asking for the customer's details, looking things
    # up, booking, speaking of the company as 我们这边
    "你家": 0.6, "地址": 0.4, "电话号码": 0.4, "报一下": 0.8, "哪个小区": 0.8, "工单": 0.8, "登记": 0.8,
    "核实": 0.8, "稍等": 0.8, "给你查": 0.8, "帮你查": 0.8, "我们这边": 0.8,
}  # fmt: skip
CUSTOMER_WORDS = {
    "你们": 1.0, "我家": 0.8, "我们家": 0.8, "我的": 0.4, "我想": 0.5, "怎么回事": 0.6, "到底": 0.5,
    # asking the service for help
    "帮我": 0.6, "派人": 0.8, "投诉": 0.8,
}  # fmt: skip
MANDATED_HIT = 2.0
"""A phrase the code prescribes (greeting, apology, farewell...) is the agent's."""
COURTESY_HIT = 1.5
"""A greeting or a farewell heard by its kind, however worded (``text.COURTESY_SHAPES``:
喂您好, 早上好, 感谢您的来电, 再见), each, in a sentence that holds no phrase of the code:
the codes' greeting and farewell are the agent's, and Whisper seldom hears them word for
word on a phone line (为你好宽带维修信价, 你好宽戴克福). A customer greets too, in the same
breath as the errand (喂，你好，我想报个修，我们家的光猫…), so it counts only in a sentence none
of whose other words are the customer's, and less than a phrase of the code. Measured with
bench/role_causes.py on the dev sets (see bench/data/roles_dev5/README.md): it names the
voices of calls whose only other cue was who opened the call. Counted in the customer's
sentence too, it named tests/data/roles n05's voices the wrong way round (the customer's
greeting opens that call, in one Whisper segment with the agent's 喂)."""
CUE_HIT = 1.5
"""A phrasebook cue (a complaint such as 又断了) is the customer's."""
OPENS_CALL = 1.0
"""The agent answers the call: its first sentence leans agent. Not on a call the agent
makes (an outbound call, a callback): there the customer picks up with a bare 喂，你好(，哪位)
and the agent's next sentence says who is calling (您好，我是宽带客服…), ``CALLER_INTRODUCES``.
A bare 喂 the agent answers with, followed by the customer's errand, keeps it (bench/data/
roles_heldout x01: dropping it for every bare first sentence held two of the agent's
violations there)."""
CALLER_INTRODUCES = re.compile(r"^[喂嗯啊哦]*([你您]好)?(我是|我们是|这里是|我这边是|我这里是)")
"""A sentence that opens by saying who is speaking (您好，我是…, 这里是…), read without
punctuation: the caller's."""
TEXT_CAP = 4.0
"""No sentence's own words outweigh a clear voice by more than this."""


REVIEW_BELOW = 0.7
"""A sentence whose role confidence is below this is uncertain: its forbidden
phrases deduct nothing and it is listed for review (待复核). Measured with
bench/roles.py: at 0.7 no customer's words on the TTS calls were blamed on
the agent; the agent violations held back were in calls whose voices were
told apart right but whose text barely said which voice was the agent (d06
and n02 at 0.60-0.65 before the service-work cues, n05 at 0.52 still), so a
person should decide there. With the cepstrum alone r02's real customer
is surely blamed (one real speaker's two recordings put in two voices);
with the speaker encoder and the voices' ``reliability``, no customer's
words on the samples, tests/data/roles, the held-out h01-h04 or bench/data/
roles_heldout x01-x04 and y01-y04 are (y02's were, 22 of 127 characters,
before the reliability)."""


def text_evidence(text: str, hits: list[Hit], first: bool = False) -> float:
    """Log-odds that ``text`` is the agent's, from its words alone.

    ``hits`` are the phrasebook hits in this text (``Matcher.match_text``):
    mandated phrases (else a greeting or farewell by its kind) speak for the
    agent, cues for the customer; forbidden phrases say nothing, since they
    are exactly what is in question: their words are taken out before the
    cue words are looked for (你们必须… is the agent's forbidden phrase,
    though 你们 is the customer's word).
    """
    for hit in hits:
        if hit.kind == "forbidden":
            text = text.replace(hit.heard, "")
    score = OPENS_CALL if first else 0.0
    score += sum(weight for word, weight in AGENT_WORDS.items() if word in text)
    customer = sum(weight for word, weight in CUSTOMER_WORDS.items() if word in text)
    score -= customer
    # A short phrase heard only by its sound (你好 for 您好, ``normalize.HEARD_ALIKE``) is
    # no sign of the agent: customers answer the phone with 你好.
    kinds = {h.kind for h in hits if h.kind != "mandated" or h.method != "fuzzy" or len(h.heard) > 3}
    if "mandated" in kinds:
        score += MANDATED_HIT
    elif not customer and "cue" not in kinds:
        score += COURTESY_HIT * len(_courtesy_with_more_said(text))
    if "cue" in kinds:
        score -= CUE_HIT
    return float(np.clip(score, -TEXT_CAP, TEXT_CAP))


BARE_COURTESY = re.compile(
    r"[你您]好|再见|拜拜|回见|(明天|改天|下次|下回|回头)见|慢走|好走|(早上|上午|中午|下午|晚上)好|早安"
    r"|哪位|是谁|谁啊|[喂嗯啊哦呃唉哎好的行那谢了吧呀就这样]"
)
"""A greeting or farewell either side says, and the words that stand beside it (喂，你好;
好的，谢谢，再见; 那就这样，拜拜; the callee's 喂，你好，哪位): with nothing else said, the
act is no sign of the agent."""
MORE_SAID_CHARS = 3
"""A greeting or farewell speaks for the agent when its sentence says at least this many
characters besides ``BARE_COURTESY`` (喂您好，宽带维修这边; 感谢您的来电，再见)."""


def _courtesy_with_more_said(text: str) -> dict[str, str]:
    """The acts of courtesy in ``text`` (``text.courtesy_acts``) when it says more than a bare one."""
    acts = courtesy_acts(text)
    return acts if _says_more(text) else {}


def _says_more(text: str) -> bool:
    """Whether ``text`` says ``MORE_SAID_CHARS`` or more besides ``BARE_COURTESY``."""
    return len(BARE_COURTESY.sub("", spoken(to_simplified(text)))) >= MORE_SAID_CHARS


def _introduces_caller(text: str) -> bool:
    """Whether ``text`` opens by saying who is calling (``CALLER_INTRODUCES``)."""
    return CALLER_INTRODUCES.match(spoken(to_simplified(text))) is not None


@dataclass
class TwoVoices:
    """Two voices found in a call, as a line through voice space."""

    center: np.ndarray
    """Per-dimension mean of the call's voice vectors."""
    scale: np.ndarray
    """Per-dimension standard deviation (vectors are compared standardized)."""
    direction: np.ndarray
    """Unit vector from voice 0 towards voice 1 (standardized space)."""
    means: tuple[float, float]
    """Where voices 0 and 1 sit along ``direction``."""
    spread: float
    """Pooled standard deviation of the sentences around their voice."""

    @property
    def separation(self) -> float:
        """How far apart the voices are, in ``spread``s."""
        return abs(self.means[1] - self.means[0]) / self.spread

    def log_odds(self, vector: np.ndarray) -> float:
        """Log-odds that ``vector`` is voice 1 rather than voice 0.

        Linear in the position between the voices: 0 halfway, ``AT_VOICE`` at
        either voice's mean. The voices are fit on the call's few sentences
        themselves, so their own spread is too small to be trusted; a
        Gaussian model on it calls a sentence halfway between them certain.
        """
        position = float(((vector - self.center) / self.scale) @ self.direction)
        m0, m1 = self.means
        return AT_VOICE * (position - (m0 + m1) / 2) / ((m1 - m0) / 2)

    def trusted_log_odds(self, vector: np.ndarray) -> float:
        """``log_odds`` weighed by how far the voices are to be believed (``trust``)."""
        return self.trust * self.log_odds(vector)

    @property
    def trust(self) -> float:
        """0-1: how far the voices are to be believed, from their ``separation``.

        Two clusters can always be found; when they lie barely apart they are
        as likely short against long sentences, or one speaker's words against
        other words, as two people (held-out h04, 8 kHz short turns: the
        agent's turns on both sides). Trust grows linearly between the two
        separations of ``trusted_separations``.
        """
        untrusted, trusted = trusted_separations()
        return float(np.clip((self.separation - untrusted) / (trusted - untrusted), 0, 1))


AT_VOICE = 4.0
"""Acoustic log-odds of a sentence that sounds exactly like one voice's average (0.98),
when the voices are well apart (``TwoVoices.trust``)."""
CEPSTRAL_SEPARATIONS = (2.5, 4.5)
"""Voices described by their cepstrum and this many spreads apart are not
trusted at all, and fully. Measured with bench/roles.py on Whisper's
sentences: every call clustered at least 0.9 right had its voices 4.7 or
more spreads apart; those at 3.4 and less were clustered 0.55-0.8 right."""
ENCODER_SEPARATIONS = (3.5, 6.0)
"""The same for the speaker encoder, whose sentences lie closer round their
voice, so that its separations run higher: on Whisper's sentences, calls
clustered right lay 4.8-52 spreads apart (0.88 right at 4.8, h04). Neither
this nor the cosine between the voices' mean embeddings told apart the one
call whose voices the encoder could not hear apart (bench/data/
roles_heldout y02, the TTS voice twice, 50 cents apart: 5.4 spreads, 0.51
right, its customer blamed at 0.75-0.91): that is ``name_voices``'s
reliability's work."""


def trusted_separations() -> tuple[float, float]:
    """The separations below which voices are not trusted and above which they are fully."""
    from monitor.voices import speaker_encoder

    return ENCODER_SEPARATIONS if speaker_encoder() is not None else CEPSTRAL_SEPARATIONS


def fit_two_voices(vectors: list[np.ndarray], weights: list[float]) -> TwoVoices | None:
    """Split voice vectors into two voices (weighted 2-means); None for fewer than 3."""
    if len(vectors) < 3:
        return None
    data = np.stack(vectors)
    w = np.asarray(weights, dtype=float) + 1e-9
    center = np.average(data, axis=0, weights=w)
    scale = np.sqrt(np.average((data - center) ** 2, axis=0, weights=w)) + 1e-6
    z = (data - center) / scale
    # Few sentences in many dimensions split any way one likes: cluster in the
    # strongest few principal directions only.
    keep = max(1, min(6, len(vectors) // 3))
    _, _, basis = np.linalg.svd(z * np.sqrt(w / w.sum())[:, None], full_matrices=False)
    reduced = z @ basis[:keep].T
    best = None
    for labels in _initial_splits(reduced):
        labels = _two_means(reduced, w, labels)
        if labels is None:
            continue
        inertia = sum(_spread(reduced[labels == k], w[labels == k]) for k in (0, 1))
        # A "voice" of one odd sentence (a cough, a hallucinated line) is no voice.
        lopsided = min(w[labels == 0].sum(), w[labels == 1].sum()) < MIN_VOICE_SHARE * w.sum()
        if best is None or (lopsided, inertia) < best[0]:
            best = ((lopsided, inertia), labels)
    if best is None:
        return None
    labels = best[1]
    centroids = np.stack([np.average(reduced[labels == k], axis=0, weights=w[labels == k]) for k in (0, 1)])
    direction = (centroids[1] - centroids[0]) @ basis[:keep]
    direction /= np.linalg.norm(direction)
    position = z @ direction
    means = tuple(float(np.average(position[labels == k], weights=w[labels == k])) for k in (0, 1))
    residual = position - np.where(labels == 1, means[1], means[0])
    spread = float(np.sqrt(np.average(residual**2, weights=w))) + 1e-6
    return TwoVoices(center, scale, direction, means, spread)


def _spread(points: np.ndarray, weights: np.ndarray) -> float:
    """Weighted sum of squared distances to the weighted mean."""
    return float((weights[:, None] * (points - np.average(points, axis=0, weights=weights)) ** 2).sum())


MIN_VOICE_SHARE = 0.08
"""A split that leaves one voice less than this share of the speech is taken
only when no other split is found."""


def _initial_splits(points: np.ndarray):
    """Starting splits for 2-means: the first principal direction's sign and
    median, and each of the points farthest apart against the rest."""
    yield (points[:, 0] > 0).astype(int)
    yield (points[:, 0] > np.median(points[:, 0])).astype(int)
    # The two points farthest apart, approximately: the point farthest from the
    # middle, and the point farthest from it (linear in the number of points,
    # where all pairwise distances would grow with the square of a long call).
    a = int(((points - points.mean(axis=0)) ** 2).sum(axis=1).argmax())
    to_a = ((points - points[a]) ** 2).sum(axis=1)
    b = int(to_a.argmax())
    yield (((points - points[b]) ** 2).sum(axis=1) < to_a).astype(int)


def _two_means(points: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    for _ in range(100):
        if labels.min() == labels.max():
            return None
        centroids = np.stack([np.average(points[labels == k], axis=0, weights=weights[labels == k]) for k in (0, 1)])
        updated = ((points[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
        if np.array_equal(updated, labels):
            break
        labels = updated
    return None if labels.min() == labels.max() else labels


def assign_roles(
    segments: list[Segment], vectors: list[np.ndarray | None], text_scores: list[float]
) -> list[Segment]:
    """Copies of ``segments`` with ``speaker`` and ``speaker_confidence`` set.

    ``vectors`` are the sentences' voice vectors (``voices.sentence_voices``;
    None for one too short to describe), ``text_scores`` their ``text_evidence``.
    """
    return label(segments, vectors, text_scores, voices_of(segments, vectors))


def voices_of(segments: list[Segment], vectors: list[np.ndarray | None]) -> TwoVoices | None:
    """The call's two voices, or None when there are too few sentences to tell."""
    usable = [i for i, v in enumerate(vectors) if v is not None]
    return fit_two_voices([vectors[i] for i in usable], [segments[i].end - segments[i].start for i in usable])


ONE_VOICE_PRIOR = 2.0
"""Too little speech to find two voices: a sentence is the agent's unless its own words say otherwise."""
ACOUSTIC_CAP = 6.0
"""No sentence's acoustic log-odds count beyond this, however far out it lies."""
FULL_VOICE_S = 2.0
"""A sentence shorter than this counts for less acoustically, in proportion:
the voice of 好吧 or 喂 (0.4-0.6 s) is described from a few syllables and
too often lands on the other side (held-out x01, h04: the customer's 喂 and
好吧 put on the agent's side at 0.85-0.9)."""


def label(
    segments: list[Segment], vectors: list[np.ndarray | None], text_scores: list[float], voices: TwoVoices | None
) -> list[Segment]:
    """Roles and confidences from the voices found (see ``assign_roles``)."""
    seconds = [segment.end - segment.start for segment in segments]
    roles = name_voices(voices, vectors, text_scores, seconds)
    return [
        with_role(segment, roles.agent_probability(vector, score, length))
        for segment, vector, score, length in zip(segments, vectors, text_scores, seconds)
    ]


@dataclass
class NamedVoices:
    """The call's two voices, which of them is the agent, and how far they are to be believed."""

    voices: TwoVoices | None
    """None: too little speech to find two voices."""
    voice1_is_agent: float
    """Probability that voice 1 of ``voices`` is the agent."""
    reliability: float = 1.0
    """Probability that the two voices are the call's two speakers at all
    (``reliability``); otherwise each sentence is named by its own words only."""

    def acoustic(self, vector: np.ndarray | None, seconds: float) -> float:
        """Capped log-odds that ``vector``, describing ``seconds`` of speech, is voice 1
        (0 when there is no vector)."""
        if self.voices is None or vector is None:
            return 0.0
        heard = min(1.0, seconds / FULL_VOICE_S)
        return float(np.clip(heard * self.voices.trusted_log_odds(vector), -ACOUSTIC_CAP, ACOUSTIC_CAP))

    def agent_probability(self, vector: np.ndarray | None, text_score: float, seconds: float) -> float:
        """Probability that a sentence with this voice and this text evidence is the agent's:
        averaged over the chance that the voices were named the wrong way round, and over
        the chance that they are no speakers at all (then its words alone decide)."""
        if self.voices is None:
            return float(_sigmoid(ONE_VOICE_PRIOR + text_score))
        acoustic, p = self.acoustic(vector, seconds), self.voice1_is_agent
        by_voice = p * _sigmoid(acoustic + text_score) + (1 - p) * _sigmoid(-acoustic + text_score)
        return float(self.reliability * by_voice + (1 - self.reliability) * _sigmoid(text_score))


def name_voices(
    voices: TwoVoices | None, vectors: list[np.ndarray | None], text_scores: list[float], seconds: list[float]
) -> NamedVoices:
    """Which voice is the agent (the one whose sentences carry more agent text
    evidence), and how far the voices are to be believed.

    The sentences' words are the judge of the voices. If the voices are the
    two speakers, a sentence's text evidence ``t`` (log-odds agent) fits its
    voice: its likelihood against a role drawn at even odds is ``2 sigmoid(t)``
    in the agent's voice and ``2 sigmoid(-t)`` in the customer's. If they are
    not (one voice split in two, short sentences against long ones), a
    sentence's voice says nothing of its words and that ratio is 1. Each
    sentence counts by how surely it is in each voice; not by its length: a
    sentence's words are one piece of evidence however long it is (weighting by
    length let one long, doubtfully placed greeting outvote two clear
    farewells).
    """
    if voices is None:
        return NamedVoices(None, 1.0)
    unnamed = NamedVoices(voices, 0.5)
    voice1 = _sigmoid(np.array([unnamed.acoustic(v, t) for v, t in zip(vectors, seconds)]))
    text = np.asarray(text_scores, dtype=float)
    # log-likelihood ratios of the words, voices against no voices, for either naming
    voice1_agent = float(np.sum(np.log(voice1 * 2 * _sigmoid(text) + (1 - voice1) * 2 * _sigmoid(-text))))
    voice0_agent = float(np.sum(np.log(voice1 * 2 * _sigmoid(-text) + (1 - voice1) * 2 * _sigmoid(text))))
    words = np.logaddexp(voice1_agent, voice0_agent) - np.log(2)
    return NamedVoices(
        voices,
        float(_sigmoid(voice1_agent - voice0_agent)),
        float(_sigmoid(VOICES_PRIOR + words + turn_taking(voice1))),
    )


TURN_CHANGE = 0.79
"""Share of a two-party call's sentences that follow one of the other
speaker's: the sentences of a call are mostly turns and replies (0.79 of
Whisper's sentences, cut at pauses, on the samples, tests/data/roles, h01-h04,
x01-x04 and y01-y04). It was set lower (0.7) for calls where one side talks
at length; with the greeting and farewell by kind naming more calls' voices
(``COURTESY_HIT``), 0.7 let y02's split (one sentence of seven, below) be
believed and its customer's 有没有搞错 be deducted (0.72), and 49 of the
customers' 1302 characters on the dev sets be surely blamed; at the measured
0.79 it is held (0.69) and 19 are (bench/role_causes.py, VOICES_PRIOR -0.5)."""


def turn_taking(voice1: np.ndarray) -> float:
    """Log-likelihood ratio of the voices' order in the call, voices against no voices.

    If the voices are the two speakers they take turns: a sentence follows
    the other voice's ``TURN_CHANGE`` of the time. If they are not (one voice
    split in two), a sentence's voice is independent of the one before, and
    with a voice of a share ``q`` a change comes ``2q(1-q)`` of the time: one
    odd sentence split off a call (y02's split, one sentence of seven) changes
    voice twice where turns would change six times.
    """
    if len(voice1) < 2:
        return 0.0
    q = float(np.mean(voice1))
    chance = 2 * q * (1 - q)
    change = voice1[1:] * (1 - voice1[:-1]) + (1 - voice1[1:]) * voice1[:-1]
    ratio = change * TURN_CHANGE / chance + (1 - change) * (1 - TURN_CHANGE) / (1 - chance)
    return float(np.sum(np.log(ratio)))


VOICES_PRIOR = -0.5
"""Log-odds, before the words and the turns are weighed, that the two voices
found are the call's two speakers: somewhat against. The voice vectors cannot
tell by themselves: split into two, one speaker's sentences alone (the stereo
calls' channels) lie 4.5-13.6 spreads apart with centroid cosines of
0.79-0.97, where the calls of two speakers lie 4.9-27 spreads and 0.73-0.88
apart, and the TTS voice twice, 50 cents apart (bench/data/roles_heldout y02),
is heard as one. So the words and the turn-taking must bear the voices out.
Measured with bench/roles.py on Whisper's sentences at 0 (even): two-speaker
calls came out at 0.47-1.00 (most 0.8-0.96), the agent-only channels of the
stereo calls at 0.08-0.34, y02 at 0.50 (its split: one sentence of seven
against the rest) and h04 (short against long sentences) at 0.54; at +inf
(no reliability) y02's customer was blamed 3 times. The greeting and
farewell by kind (``COURTESY_HIT``) name y02's voices more surely (0.89 ->
0.97), and at 0 its customer's 有没有搞错 would then be deducted (0.74); at
-0.5 it is held (0.69, as before) and the agent's forbidden sentences
deducted on the dev sets go from 33 to 36 of 55 (bench/role_causes.py); at
-0.25, 36 as well, with y02's customer deducted; at -0.75, 35."""


def with_role(segment: Segment, agent_probability: float) -> Segment:
    """A copy of ``segment`` labelled with the likelier role and how sure it is."""
    role = "agent" if agent_probability >= 0.5 else "customer"
    confidence = round(float(max(agent_probability, 1 - agent_probability)), 3)
    return replace(segment, speaker=role, speaker_confidence=confidence)


def uncertain(segment: Segment) -> bool:
    """True when the segment's role is too doubtful to cost the agent points."""
    return segment.speaker_confidence is not None and segment.speaker_confidence < REVIEW_BELOW


def match_by_role(matcher, segments: list[Segment]) -> list[Hit]:
    """The phrasebook hits of a role-separated mono call.

    The call is matched as one stream, as it was heard, so a phrase that a role
    boundary cuts in two (the live stream commits at pauses, and a short tail
    such as 你自己找人来处理吧 may be put on the other side) is still found.
    Each hit then takes the role of the sentence that holds most of it; an
    uncertain sentence's hits count as the agent's whichever side it leans to,
    so its forbidden phrases are held for review (待复核) rather than lost
    with the customer's words. A hit that takes part of a sentence surely the
    other speaker's (the customer's 我准备了个红包 and the agent's 锦旗我替师傅收下了)
    joins two people's words: it stands only if its own side's sentences hold it.
    (A cut tail lies wholly inside the phrase, as above, and stays part of it.)
    """
    hits = matcher.match_segments([replace(s, speaker="agent") for s in segments])
    out = []
    for hit in hits:
        sentence = most_overlapping(segments, hit.start, hit.end)
        sure = sentence is not None and not uncertain_or_unknown(sentence)
        if sure and not _held_by_own_side(matcher, segments, hit, sentence.speaker):
            continue
        out.append(replace(hit, speaker=sentence.speaker if sure else "agent"))
    return out


def _held_by_own_side(matcher, segments: list[Segment], hit: Hit, speaker: str, slack_s: float = 0.3) -> bool:
    """Whether ``hit`` is found in the sentences it spans less those it takes only part
    of that are surely not ``speaker``'s."""
    spanned = [s for s in segments if min(hit.end, s.end) - max(hit.start, s.start) > 0.1]
    own = [s for s in spanned if s.speaker == speaker or uncertain_or_unknown(s)
           or (s.start >= hit.start - slack_s and s.end <= hit.end + slack_s)]
    if len(own) == len(spanned):
        return True
    return any(h.phrase_id == hit.phrase_id for h in matcher.match_segments([replace(s, speaker="agent") for s in own]))


def separate_roles(
    samples: np.ndarray, segments: list[Segment], phrasebook: Phrasebook
) -> list[Segment]:
    """Label the sentences of a mono call (16 kHz ``samples``) agent or customer.

    Sentences that run over a silence, or whose voice changes at a gap between
    words, are first cut there (``voices.sentences_of``): one speaker's words and
    the other's reply after a pause are often one Whisper segment.
    """
    from monitor import voices as acoustic
    from monitor.match import matcher_for

    segments = [s for s in segments if s.text.strip()]
    if not segments:
        return segments
    recording = acoustic.Recording(samples)
    segments = acoustic.sentences_of(recording, segments)
    vectors = acoustic.sentence_voices(recording, segments)
    voices = voices_of(segments, vectors)
    return label(segments, vectors, text_scores(segments, matcher_for(phrasebook)), voices)


def text_scores(segments: list[Segment], matcher) -> list[float]:
    """Each sentence's ``text_evidence``; the earliest one opens the call, unless it is a bare
    answer of the phone and the next one introduces the caller (``OPENS_CALL``)."""
    order = sorted(range(len(segments)), key=lambda i: segments[i].start)
    first = order[0] if order else None
    if len(order) > 1 and not _says_more(segments[order[0]].text) and _introduces_caller(segments[order[1]].text):
        first = None
    return [text_evidence(s.text, matcher.match_text(s.text), first=i == first) for i, s in enumerate(segments)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))



LIVE_SENTENCES_PER_VOICE = 2
"""A live stream's two voices are told apart once each side of the split holds
this many described sentences; before that every sentence's speaker is
uncertain (confidence None). With fewer, a split is any two sentences that
happen to differ."""
LIVE_CUSTOMER_HEARD = 0.5
"""The voice named the customer must also have spoken like one (你们, 我家, a
complaint...: text evidence summing to at least this against the agent)
before a live stream's voices count as told apart. Two clusters can always
be found, and in a stream of the agent's side only (a headset microphone) the
agent's plainer sentences would otherwise be named the customer's and their
forbidden phrases raise no alert."""
LIVE_RELIABLE = 0.8
"""Or the voices are told apart live once ``name_voices`` believes them the call's two
speakers this surely, whatever the customer said: they take turns and each one's words
fit its role (``NamedVoices.reliability``). Real customers often say nothing only a
customer says (ld06-ld10's read speech), and every sentence then stayed uncertain for
the whole call. Committing labelled turns of 41 development calls (the samples,
heldout2/3, live_heldout, ld01-ld10, roles_dev7): told apart in 29 calls at 0.8 (13 by
the customer's words alone) with no sentence more surely wrong than those (2, r7_04);
the same calls' agent turns alone, as a headset stream, never reach 0.7 (one at 0.6)."""
OPEN_REUSE_SHARE = 0.75
"""``LiveRoles.judge`` describes speech not committed yet again only when the last
description of its sentence covered less than this share of it."""
OPEN_START_SLACK_S = 0.2
"""Word times move between decodes: starts this close are the same sentence's."""
LIVE_WINDOW_S = 60.0
"""Audio a live stream keeps for describing its sentences: the longest a
sentence can wait to be committed (the undecoded backlog, ``MAX_BACKLOG_S``
in livecall.py, plus one long utterance) with room to spare."""


class LiveRoles:
    """Role separation of a mono stream while it plays.

    Keeps each committed sentence's voice vector and text evidence, not its
    audio (only the last ``LIVE_WINDOW_S`` of audio, to describe the next
    sentences, and the call's loudness, a float per 10 ms), and fits the two
    voices again at every commit: earlier sentences are labelled again as the
    evidence grows. ``label`` gives the finished call the same separation a
    batch scoring gives the recording, its sentences cut at pauses as there
    (the pieces are described when their sentence is committed).
    """

    def __init__(self, matcher, window_s: float = LIVE_WINDOW_S):
        from monitor.voices import RecentAudio, RunningLoudness

        self.matcher = matcher
        self.audio = RecentAudio(window_s)
        self.loudness = RunningLoudness()
        self.pieces: list[tuple[Segment, np.ndarray | None]] = []
        """The committed sentences cut at their pauses (``voices.split_at_pauses``),
        each with its voice vector, for labelling the finished call."""
        self.sentences: list[Segment] = []
        """The committed sentences, as last labelled."""
        self.vectors: list[np.ndarray | None] = []
        self.scores: list[float] = []
        self.named: NamedVoices | None = None
        """The voices as last fitted; None until they can be told apart."""
        self._open: tuple[float, float, np.ndarray | None] | None = None
        """The last description of speech not committed yet (``judge``): start, end, voice vector."""
        self._lock = threading.Lock()

    def feed(self, samples: np.ndarray) -> None:
        self.audio.feed(samples)

    def commit(self, segment: Segment) -> tuple[Segment, list[Segment]]:
        """``segment`` labelled, and the earlier sentences whose role, or its
        certainty (``uncertain``), changed with it."""
        from monitor.voices import split_at_pauses

        self.loudness.extend(self.audio, segment.end)
        noise = self.loudness.noise
        vector = self.audio.describe(segment.start, segment.end, noise)
        pieces = split_at_pauses(self.loudness, [segment])
        described = [vector] if len(pieces) == 1 else [self.audio.describe(p.start, p.end, noise) for p in pieces]
        with self._lock:
            self.pieces += [(replace(p, words=[]), v) for p, v in zip(pieces, described)]
            score = text_evidence(segment.text, self.matcher.match_text(segment.text), first=not self.sentences)
            self.sentences.append(replace(segment, words=[]))  # times and text are all a role needs
            self.vectors.append(vector)
            self.scores.append(score)
            self.named = self._told_apart(self.sentences, self.vectors, self.scores)
            labelled = [self._labelled(s, v, t, self.named)
                        for s, v, t in zip(self.sentences, self.vectors, self.scores)]
            changed = [new for old, new in zip(self.sentences[:-1], labelled) if _shown_differently(old, new)]
            self.sentences = labelled
            return labelled[-1], changed

    def role_at(self, start: float, end: float) -> tuple[str, float | None]:
        """Role and confidence of the committed sentence that holds most of ``start``-``end``."""
        with self._lock:
            sentence = most_overlapping(self.sentences, start, end)
            return (sentence.speaker, sentence.speaker_confidence) if sentence else ("agent", None)

    def judge(self, start: float, end: float, text: str) -> tuple[str, float | None]:
        """Role and confidence of speech not committed yet (``text`` heard from ``start`` to ``end``).

        Before the voices are told apart, they are fitted as its commit will fit
        them: the speech that tells them apart (a customer's outburst, often)
        is judged as its commit will judge it, not left to the words alone.
        """
        vector = self._open_voice(start, end)
        segment = Segment(start, end, text)
        with self._lock:
            score = text_evidence(text, self.matcher.match_text(text), first=not self.sentences)
            named = self.named or self._told_apart(
                [*self.sentences, segment], [*self.vectors, vector], [*self.scores, score]
            )
            labelled = self._labelled(segment, vector, score, named)
        return labelled.speaker, labelled.speaker_confidence

    def _open_voice(self, start: float, end: float) -> np.ndarray | None:
        """The voice vector of uncommitted speech from ``start`` to ``end``: the last one
        described, when it was of the same sentence (its start within ``OPEN_START_SLACK_S``)
        and covered at least ``OPEN_REUSE_SHARE`` of it. A phrase held for its speaker's role
        is judged again at every look-ahead until its pause, and each judgement described the
        whole sentence so far with the speaker encoder on the decoding thread, ahead of the
        alert (0.02 s of CPU, 0.13 s of wall time on a loaded machine, bench/live_latency.py); the few hundred ms
        heard since barely move the sentence's vector, and its commit describes it whole.
        Never a longer stretch's vector: a phrase the second pass heard is judged on its own audio."""
        described = self._open
        if (described is not None and abs(described[0] - start) <= OPEN_START_SLACK_S
                and OPEN_REUSE_SHARE * (end - start) <= described[1] - described[0] <= end - start + OPEN_START_SLACK_S):
            return described[2]
        vector = self.audio.describe(start, end, self.loudness.noise)
        self._open = (start, end, vector)
        return vector

    def label(self, segments: list[Segment]) -> list[Segment]:
        """The finished call's sentences labelled as batch scoring labels them: cut
        at their pauses, each piece taking the voice vector of the committed
        sentences' piece it overlaps most."""
        from monitor.voices import split_at_pauses

        with self._lock:
            kept = list(self.pieces)
        segments = split_at_pauses(self.loudness, segments)
        vectors = []
        for segment in segments:
            index = _most_overlapping_index([s for s, _ in kept], segment.start, segment.end)
            vectors.append(kept[index][1] if index is not None else None)
        return label(segments, vectors, text_scores(segments, self.matcher), voices_of(segments, vectors))

    @staticmethod
    def _told_apart(sentences: list[Segment], vectors: list, scores: list[float]) -> NamedVoices | None:
        """The two voices of these sentences, named, once they count as told apart live; else None."""
        voices = voices_of(sentences, vectors)
        if voices is None:
            return None
        sides = [voices.log_odds(v) > 0 for v in vectors if v is not None]
        if min(sum(sides), len(sides) - sum(sides)) < LIVE_SENTENCES_PER_VOICE:
            return None
        named = name_voices(voices, vectors, scores, [s.end - s.start for s in sentences])
        if named.reliability >= LIVE_RELIABLE:
            return named
        voice1 = _sigmoid(np.array([named.acoustic(v, s.end - s.start) for v, s in zip(vectors, sentences)]))
        customer_voice1 = voice1 * (1 - named.voice1_is_agent)
        customer_voice0 = (1 - voice1) * named.voice1_is_agent
        if float(np.sum(np.asarray(scores) * (customer_voice1 + customer_voice0))) > -LIVE_CUSTOMER_HEARD:
            return None
        return named

    @staticmethod
    def _labelled(segment: Segment, vector: np.ndarray | None, score: float, named: NamedVoices | None) -> Segment:
        if named is None:
            speaker = "agent" if ONE_VOICE_PRIOR + score >= 0 else "customer"
            return replace(segment, speaker=speaker, speaker_confidence=None)
        return with_role(segment, named.agent_probability(vector, score, segment.end - segment.start))


def _shown_differently(old: Segment, new: Segment) -> bool:
    return old.speaker != new.speaker or uncertain_or_unknown(old) != uncertain_or_unknown(new)


def uncertain_or_unknown(segment: Segment) -> bool:
    """True when a live sentence's role may not cost the agent points: too
    doubtful, or not yet separated (confidence None)."""
    return segment.speaker_confidence is None or segment.speaker_confidence < REVIEW_BELOW


def _most_overlapping_index(segments: list[Segment], start: float, end: float) -> int | None:
    overlaps = [min(end, s.end) - max(start, s.start) for s in segments]
    if not overlaps or max(overlaps) < -0.5:
        return None
    return int(np.argmax(overlaps))


def most_overlapping(segments: list[Segment], start: float, end: float) -> Segment | None:
    """The segment that holds most of [start, end) (None when none comes within 0.5 s of it)."""
    index = _most_overlapping_index(segments, start, end)
    return None if index is None else segments[index]
