"""Forbidden talk told by meaning: a small learned model beside the lexicon's rules.

The codes forbid whole classes of talk (凡脏话、粗话、讽刺、训斥客户的话; 不要责备或训斥
客户), and agents find wordings no rule lists: on batches written after the rules were
tuned, the rules found 0.23–0.46 of them. A character 1–3-gram logistic regression
(scikit-learn, trained by ``bench/train_meaning.py`` on the labelled case files) tells
the six kinds of the lexicon (shirking, scolding, mocking, swearing, perfunctory,
rhetorical) from ``none``, and generalises to unseen wordings; its figures, measured on
batches it was not trained on, are in ``bench/kind_classifier.py``.

The model judges one agent sentence at a time, and each also with the agent's next sentence
when it follows within ``STRETCH_GAP_S`` (a thought Whisper cut in two: a polite transfer whose help
comes in the second sentence, an irony whose blame does). It only adds what the rules missed: a
sentence where any forbidden phrase or rule already fired gets no second event. Its
probability that a sentence is forbidden (1 − P(none)) decides what becomes of it:

- at least ``deduct_threshold``: an ordinary forbidden event of the predicted kind,
  cited by the article the phrasebook gives that kind, deducting like a rule hit;
- at least ``review_threshold``: the event is listed for review (待复核), deducting nothing;
- below: nothing.

Both thresholds were chosen on held-out data and ship inside the model file. The
weights are a plain ``.npz`` (numbers and strings only, loaded with
``allow_pickle=False``: loading a pickle would run code).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.special import softmax
from sklearn.feature_extraction.text import HashingVectorizer

from monitor.errors import MonitorError
from monitor.match import Hit
from monitor.normalize import normalize
from monitor.phrasebook import Phrasebook

if TYPE_CHECKING:
    from monitor.asr import Segment

MODEL_PATH = Path(__file__).resolve().parent / "phrasebooks" / "meaning_model.npz"
"""The bundled model, written by ``bench/train_meaning.py``."""
NONE = "none"
"""The class of a sentence that is not forbidden talk."""
DEDUCT_MIN_CHARS = 8
"""The model deducts only for talk at least this long; a shorter hit is listed for review.
On 249 sealed ordinary agent lines (bench/data/ordinary_sealed_lines.txt, never trained on),
3 of the 4 the bundled model would deduct are short (嗯嗯记着呢, 喝口水吧, 先这么着吧回见):
whether a few words brush the customer off is in the tone, which text does not carry. Out of
fold, 3 of the 524 forbidden lines the model would deduct are this short and missed by every
phrasebook's rules (就这智商还投资呢, 我日 又掉线了, 赶紧滚 别来烦); they go to review instead."""
DETECTED_BY = "meaning_model"
"""``Hit.detected_by`` of the model's hits."""
MIN_CHARS = 4
"""Sentences shorter than this (normalised characters) are not judged: there is too little to read
a meaning in, and Whisper's fragments and one-word replies (了, 真的, 为什么, 没事) read as forbidden
at 0.8–1.0, since the short lines the model was trained on are mostly curses (滚蛋, 傻逼), which the
lexicon's rules find as written. An agent's backchannel (嗯, 好吧, 啊?) scored 0.87-0.98 too."""
STRETCH_GAP_S = 1.0
"""Agent sentences at most this far apart, each forbidden, are one stretch of such talk and
one event: Whisper cuts one outburst into sentences (跟你讲了你也听不懂。| 省省吧。), and
the agent who said it once should lose the points once."""

HANDED_ON = ("shirking", "perfunctory", "refusing_outright", "refusing_contact")
"""Kinds of pushing the customer off, which help offered in the agent's next sentence undoes (这事我们处理不了，|
我这边帮您转到维修部门), as the rules' politeness guard reaches forward. A taunt or a reproach stays one whatever
courtesy follows: 这么简单的表格都填不对，你小学毕业了吗？| 这个表格有两处填错了，我给您标出来了 (calls2 s2_04)."""


def model_text(text: str) -> str:
    """What the model reads: normalised text (``monitor.normalize``), 您 read as 你 (Whisper
    writes either), between start and end marks so a sentence's first and last characters
    make n-grams of their own."""
    return "^" + normalize(text).text.replace("您", "你") + "$"


def read_length(text: str) -> int:
    """How many characters the model reads in ``text`` (normalised: no punctuation or spaces),
    the measure of ``MIN_CHARS`` and ``DEDUCT_MIN_CHARS``."""
    return len(normalize(text).text)


def vectorizer(n_features: int, ngram_max: int) -> HashingVectorizer:
    """The feature hashing both training and inference use: binary character n-grams, l2-normed."""
    return HashingVectorizer(analyzer="char", ngram_range=(1, ngram_max), n_features=n_features,
                             alternate_sign=False, binary=True, norm="l2", lowercase=False,
                             preprocessor=model_text)


@dataclass
class Judged:
    """The model's verdict on one sentence."""

    category: str
    """The most likely forbidden kind (never ``none``)."""
    probability: float
    """That the sentence is forbidden talk of any kind: 1 − P(none)."""


class MeaningModel:
    """A trained model, loaded once; pure and thread-safe at judging time."""

    def __init__(self, classes: list[str], weights: sparse.csr_matrix, intercept: np.ndarray, settings: dict):
        self.classes = classes
        self.weights = weights
        self.intercept = intercept
        self.settings = settings
        self.deduct_threshold = float(settings["deduct_threshold"])
        """Probability from which a hit deducts points like a rule hit."""
        self.review_threshold = float(settings["review_threshold"])
        """Probability from which a hit is listed for review (待复核) without points."""
        self.training_sha256 = str(settings["training_sha256"])
        """sha256 of the labelled lines it was trained on (``bench/train_meaning.py``)."""
        self._vectorizer = vectorizer(int(settings["n_features"]), int(settings["ngram_max"]))
        self._none = classes.index(NONE)

    @classmethod
    def load(cls, path: str | Path = MODEL_PATH) -> MeaningModel:
        try:
            with np.load(path, allow_pickle=False) as data:
                settings = json.loads(str(data["settings"]))
                classes = [str(c) for c in data["classes"]]
                columns, values = data["columns"], data["values"]
                intercept = data["intercept"].astype(np.float64)
        except (OSError, ValueError, KeyError) as exc:
            raise MonitorError(f"{path}: cannot load the meaning model ({exc})") from exc
        n_features = int(settings["n_features"])
        # values: one row per used feature column, one column per class
        rows = np.repeat(columns.astype(np.int64), len(classes))
        cols = np.tile(np.arange(len(classes)), len(columns))
        weights = sparse.csr_matrix((values.astype(np.float64).ravel(), (rows, cols)),
                                    shape=(n_features, len(classes)))
        return cls(classes, weights, intercept, settings)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities, one row per text, columns as ``classes``."""
        scores = np.asarray((self._vectorizer.transform(texts) @ self.weights).todense()) + self.intercept
        return softmax(scores, axis=1)

    def judge(self, texts: list[str], kinds: set[str] | None = None) -> list[Judged]:
        """Each text's most likely forbidden kind and the probability that it is forbidden talk
        of any of ``kinds`` (all the model knows when None: 1 − P(none)); a code that forbids
        only some kinds as a class is judged on those."""
        if not texts:
            return []
        p = self.probabilities(texts)
        wanted = [i for i, c in enumerate(self.classes) if c != NONE and (kinds is None or c in kinds)]
        if not wanted:
            return []
        best = np.argmax(p[:, wanted], axis=1)
        total = p[:, wanted].sum(axis=1)
        return [Judged(self.classes[wanted[b]], float(t)) for b, t in zip(best, total)]

    def hits(self, phrasebook: Phrasebook, segments: list[Segment], found: list[Hit]) -> list[Hit]:
        """Forbidden events in the agent's sentences where nothing forbidden was ``found``
        (phrases and rules), at least ``review_threshold`` likely; customer sentences are
        never judged. Each sentence is read alone and with the agent's next (``_read_together``).
        Sentences of one stretch (``STRETCH_GAP_S``) are one event, and a stretch where a rule
        fired in any sentence adds none. A pure function of its inputs."""
        phrases = {p.category: p for p in phrasebook.meaning_phrases}
        taken = [h for h in found if h.kind == "forbidden" and h.speaker != "customer" and h.start is not None]
        agent = sorted((s for s in segments if s.speaker == "agent" and s.text.strip()), key=lambda s: (s.start, s.end))
        ruled = [any(h.start < s.end and s.start < h.end for h in taken) for s in agent]
        open_ = [s for s, r in zip(agent, ruled) if not r and read_length(s.text) >= MIN_CHARS]
        alone = dict(zip(map(id, open_), self.judge([s.text for s in open_], set(phrases))))
        verdicts = self._read_together(agent, open_, alone, set(phrases))
        out: list[Hit] = []
        stretch_end, stretch_hit = None, None  # the forbidden stretch the last sentence was part of
        for sentence, by_rule in zip(agent, ruled):
            verdict = verdicts.get(id(sentence))
            forbidden = by_rule or verdict is not None and verdict.probability >= self.review_threshold
            if not forbidden:
                stretch_end, stretch_hit = None, None
                continue
            if stretch_end is not None and sentence.start - stretch_end <= STRETCH_GAP_S:
                stretch_end = max(stretch_end, sentence.end)
                if stretch_hit is not None and by_rule:  # a rule's event counts this stretch
                    out.remove(stretch_hit)
                    stretch_hit = None
                elif stretch_hit is not None:  # the model's stretch goes on
                    stretch_hit.end = sentence.end
                    stretch_hit.heard += sentence.text
                    probability = max(stretch_hit.model_probability, round(verdict.probability, 3))
                    stretch_hit.model_probability = stretch_hit.confidence = probability
                continue
            stretch_end, stretch_hit = sentence.end, None
            if by_rule:
                continue
            phrase = phrases[verdict.category]
            stretch_hit = Hit(
                phrase_id=phrase.id, kind="forbidden", category=phrase.category, canonical=phrase.text,
                heard=sentence.text, confidence=round(verdict.probability, 3), article=phrase.article,
                start=sentence.start, end=sentence.end, speaker="agent", method="meaning",
                detected_by=DETECTED_BY, model_probability=round(verdict.probability, 3),
            )
            out.append(stretch_hit)
        return out

    def _read_together(self, agent: list[Segment], open_: list[Segment], alone: dict[int, Judged],
                       kinds: set[str]) -> dict[int, Judged]:
        """The verdicts on the ``open_`` sentences (by ``id``; ``agent`` is all the agent's, in order), each also
        read with the agent's next sentence when it follows within ``STRETCH_GAP_S``, as one stretch of talk:
        Whisper and the speaker cut one thought into two sentences, and its meaning may lie in the second. A
        sentence that pushes off (``HANDED_ON``) is cleared when the next one, not forbidden itself, turns the pair
        harmless (这事我们处理不了， | 我这边帮您转到维修部门); two sentences harmless alone are both forbidden when
        the pair is (我再跟你说一次。| 最后一次啊。; 您可真大方。| 合同都没看就签字了。). Clearing a doubtful sentence
        of any kind by a harmless next one was tried: it cleared Whisper's mishearing of a true reproach (calls4
        s4_02: 说明书上都有,愿不见自然,还问一。| 体温超过38度半…)."""
        following = {id(a): b for a, b in zip(agent, agent[1:])}
        pairs = [(a, b) for a in open_ if (b := following.get(id(a))) is not None
                 and id(b) in alone and b.start - a.end <= STRETCH_GAP_S]
        verdicts = dict(alone)
        for (a, b), pair in zip(pairs, self.judge([a.text + b.text for a, b in pairs], kinds)):
            first, second = alone[id(a)].probability, alone[id(b)].probability
            if second >= self.review_threshold:
                continue
            if (first >= self.review_threshold and pair.probability < self.review_threshold
                    and alone[id(a)].category in HANDED_ON):
                verdicts.pop(id(a), None)
            elif first < self.review_threshold and pair.probability >= self.review_threshold:
                verdicts[id(a)] = verdicts[id(b)] = pair
        return verdicts

    def text_hits(self, phrasebook: Phrasebook, text: str, found: list[Hit]) -> list[Hit]:
        """``hits`` in bare text (``monitor match``): the text is the agent's, its sentences
        (cut at 。！？；, newlines) said one after another; the hits are untimed, like the
        phrases' hits in bare text. Nothing when a phrase or rule already fired in the text."""
        from monitor.asr import Segment

        if any(h.kind == "forbidden" for h in found):
            return []
        sentences = [s for s in re.split(r"(?<=[。！？!?；;\n])", text) if normalize(s).text]
        # A sentence every half second: consecutive forbidden sentences form one stretch, as in a call.
        segments = [Segment(i * 0.5, i * 0.5 + 0.5, s, "agent") for i, s in enumerate(sentences)]
        hits = self.hits(phrasebook, segments, [])
        for hit in hits:
            hit.start = hit.end = None
        return hits

    def deducts(self, hit: Hit) -> bool:
        """Whether a hit of the model is sure enough to deduct (else it is listed for review)."""
        return (hit.model_probability is not None and hit.model_probability >= self.deduct_threshold
                and read_length(hit.heard) >= DEDUCT_MIN_CHARS)


_lock = threading.Lock()


@lru_cache(maxsize=1)
def _bundled() -> MeaningModel:
    return MeaningModel.load(MODEL_PATH)


def bundled_model() -> MeaningModel:
    """The bundled model, loaded on first use (once per process)."""
    with _lock:
        return _bundled()


def model_for(phrasebook: Phrasebook) -> MeaningModel | None:
    """The model that judges a phrasebook's calls: the bundled one, unless the phrasebook turns
    it off (``meaning_model: false``) or forbids no kind as a class."""
    return bundled_model() if phrasebook.meaning_phrases else None
