"""Speech to text: faster-whisper, steered to Simplified Chinese and cleaned of
Whisper's known failure modes on Chinese audio.

The backend knows nothing about calls or phrases. It turns 16 kHz samples
into small ``Segment`` records with word timestamps, lazily. Streaming policy
(``stream.py``) and scoring (``pipeline.py``) sit on top of it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from monitor.audio import CallAudio
from monitor.text import simplified_pieces, spoken, to_simplified

DEFAULT_PROMPT = "以下是普通话的句子。"

# Text Whisper invents on silence or music, learnt from subtitled video. Matched
# after t2s with punctuation and spaces removed.
HALLUCINATIONS = (
    "字幕由amara.org社区提供",
    "amara.org",
    "请不吝点赞订阅转发打赏支持明镜与点点栏目",
    "点赞订阅转发打赏",
    "明镜与点点栏目",
    "谢谢观看",
    "感谢观看",
    "谢谢收看",
    "感谢收看",
    "字幕志愿者",
    "中文字幕",
    "优优独播剧场",
    "yoyotelevisionseries",
    "请订阅我的频道",
    "欢迎订阅",
    "字幕by",
    "字幕提供",
)
_HALLUCINATION_KEYS = tuple(spoken(phrase) for phrase in HALLUCINATIONS)


@dataclass
class TranscriptionOptions:
    """How audio is decoded. Defaults are tuned for Mandarin service calls."""

    language: str = "zh"
    """Whisper language code. Fixed rather than detected: short greetings are
    often misdetected as Japanese or Cantonese."""
    beam_size: int = 5
    """Beam width; 5 is Whisper's own default and the measured baseline."""
    initial_prompt: str | None = DEFAULT_PROMPT
    """Text fed as previous context. A simplified-Chinese sentence with
    punctuation steers Whisper towards simplified script and punctuation."""
    hotwords: str | None = None
    """Vocabulary to bias decoding towards (e.g. a phrasebook's key terms)."""
    vad_filter: bool = True
    """Skip non-speech with Silero VAD; removes most hallucinations on silence."""
    vad_min_silence_ms: int = 2000
    """Silence that splits speech into separate chunks for VAD (faster-whisper's
    default). Shorter values cut calls into more pieces, and each piece's last
    half second is re-decoded after word alignment, which costs time and invents text."""
    word_timestamps: bool = True
    """Per-word times, so a matched phrase gets its own start and end."""
    condition_on_previous_text: bool = False
    """Off: feeding earlier output back in is the main cause of repetition loops."""
    compression_ratio_threshold: float | None = 2.4
    """A window whose text compresses better than this is a loop; re-decoded hotter."""
    log_prob_threshold: float | None = -1.0
    """A window with lower average log-probability is re-decoded at a higher temperature."""
    no_speech_threshold: float | None = 0.6
    """A window Whisper thinks is silence (and that decoded badly) is dropped."""
    hallucination_silence_threshold: float | None = None
    """Skip silent stretches longer than this (s) around a suspected hallucination.
    Off by default: VAD already removes silence, and on short clips it costs time."""
    max_chars_per_second: float = 12.0
    """A segment spoken faster than this is not speech. Whisper produces such
    segments when, after word alignment, it re-decodes the last half second of a
    clip and invents a phrase (让我们一起挑战) or repeats the previous one; fast
    Mandarin is about 7 characters per second."""
    max_new_tokens: int | None = None
    """Cap on tokens decoded per window. Bounds what a repetition loop costs on a
    short streaming window (about 6 tokens per second of Mandarin speech)."""
    max_repeats: int = 3
    """A run of the same word or words repeated more often than this is cut back to one."""
    encoder_padding_s: float | None = None
    """Run the encoder on the window's audio plus this much padding, instead of
    on Whisper's fixed 30 s. ``None`` keeps the 30 s: it is what the model was
    trained on, and batch windows are 30 s of speech anyway. Streaming windows
    are a few seconds long, and there the fixed pass is most of a decode."""


@dataclass
class Word:
    """One recognised word (for Chinese, usually one to three characters)."""

    start: float
    """Seconds from the start of the recording."""
    end: float
    """Seconds from the start of the recording."""
    text: str
    """Simplified Chinese, punctuation attached as Whisper placed it."""
    probability: float = 1.0
    """Whisper's confidence in this word."""


@dataclass
class Segment:
    """A stretch of speech by one speaker."""

    start: float
    """Seconds from the start of the recording."""
    end: float
    """Seconds from the start of the recording."""
    text: str
    """Simplified Chinese; when ``words`` is set, their texts joined."""
    speaker: str = "agent"
    """``agent`` or ``customer``."""
    words: list[Word] = field(default_factory=list)
    """Word timings, empty when word timestamps were off."""
    speaker_confidence: float | None = None
    """0.5-1: how sure ``speaker`` is. 1.0 on a channel of its own (stereo);
    on a mono call, from voice clustering and text cues (``roles.py``); None
    when roles were not separated."""

    def to_json(self) -> dict:
        return {
            "start": round(self.start, 2),
            "end": round(self.end, 2),
            "speaker": self.speaker,
            "text": self.text,
            "speaker_confidence": self.speaker_confidence,
        }


def is_hallucination(text: str) -> bool:
    """True when the text is mostly one of Whisper's invented credit lines."""
    bare = spoken(text.lower())
    if not bare:
        return True
    covered = sum(len(phrase) for phrase in _HALLUCINATION_KEYS if phrase in bare)
    return covered * 2 >= len(bare)


_SENTENCE_END = ("。", "？", "！", "?", "!")


def split_sentences(segment: Segment) -> list[Segment]:
    """Cut a segment after each sentence-final mark, using the word times.

    Whisper often returns 20 s of a mono call, agent and customer alike, as one
    segment; sentences give reports a readable transcript and metrics real pauses.
    """
    if not segment.words:
        return [segment]
    pieces, current = [], []
    for word in segment.words:
        current.append(word)
        if word.text.rstrip().endswith(_SENTENCE_END):
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    return [
        Segment(start=ws[0].start, end=ws[-1].end, text="".join(w.text for w in ws).strip(), speaker=segment.speaker, words=ws)
        for ws in pieces
    ]


def _failed_every_temperature(raw, options: TranscriptionOptions) -> bool:
    """Whisper keeps a window even when decoding failed at its hottest temperature.

    Such windows are typically the half second after the last aligned word,
    decoded again on its own: the output is invented (请请看, 我认识了你).
    """
    return (
        options.log_prob_threshold is not None
        and raw.temperature >= 1.0
        and raw.avg_logprob < options.log_prob_threshold
    )


def _too_fast(text: str, duration_s: float, max_chars_per_second: float) -> bool:
    characters = len(spoken(text))
    # A clause of one or two characters can legitimately be clipped short.
    return characters > 2 and characters > max_chars_per_second * max(duration_s, 0.0)


def collapse_repeats(words: list[Word], max_repeats: int) -> list[Word]:
    """Cut a run of the same 1-4 word unit repeated more than ``max_repeats`` times.

    Whisper sometimes loops ("谢谢谢谢谢谢…") when the compression-ratio check
    misses a short loop. Operating on words keeps the timestamps of what stays.
    """
    keys = [spoken(w.text) for w in words]
    out: list[Word] = []
    i = 0
    while i < len(words):
        cut = False
        for period in range(1, 5):
            unit = keys[i : i + period]
            if len(unit) < period or not "".join(unit):
                continue
            repeats = 1
            while keys[i + repeats * period : i + (repeats + 1) * period] == unit:
                repeats += 1
            if repeats > max_repeats:
                out.extend(words[i : i + period])
                i += repeats * period
                cut = True
                break
        if not cut:
            out.append(words[i])
            i += 1
    return out


def _simplified_words(words: Iterable) -> list[Word]:
    """faster-whisper words to our records, converted to simplified script."""
    pieces = simplified_pieces([w.word for w in words])
    # float(): faster-whisper gives numpy scalars, which leak into reports as np.bool_ comparisons.
    return [
        Word(start=float(w.start), end=float(w.end), text=p, probability=float(w.probability))
        for w, p in zip(words, pieces)
    ]


ENCODER_LENGTH_STEP = 100
"""Short encoder input is rounded up to a multiple of this many frames (1 s)."""


def short_encoder_input(model, padding_frames: int):
    """A view of ``model``, sharing its weights, whose encoder sees only the audio.

    faster-whisper pads every window to 3000 frames (30 s) before encoding. On a
    4 s window that pass takes 0.69 s of a 0.75 s decode (base, int8, 2 cores),
    against 0.08 s for 1000 frames. CTranslate2 accepts shorter input, and the
    CER of streaming decodes on ``corpus/real`` is no worse (0.192 against
    0.206 with 3 s of padding, ``bench/short_encoder.py``). The view keeps ``padding_frames`` of the
    padding after the last frame of audio, and a little more up to a whole second.
    """
    view = copy.copy(model)  # shallow: same CTranslate2 model, tokenizer and feature extractor
    encode_padded = model.encode

    def encode(features: np.ndarray):
        batch = features if features.ndim == 3 else features[np.newaxis]
        # Padding is exact zeros; a log-Mel frame of audio, even of digital silence, never is.
        audio_frames = np.flatnonzero(np.any(batch[0] != 0, axis=0))
        length = (audio_frames[-1] + 1 if len(audio_frames) else 0) + padding_frames
        # Whole seconds: the CPU backend caches work buffers per input shape, and
        # 600 distinct lengths cost 330 MB against 70 MB for 12.
        length = min(batch.shape[-1], -(-length // ENCODER_LENGTH_STEP) * ENCODER_LENGTH_STEP)
        return encode_padded(np.ascontiguousarray(batch[..., :length]))

    view.encode = encode
    return view


class Transcriber:
    """A loaded Whisper model and the way we call it. Safe to share between threads."""

    def __init__(self, model: str | None = None, cpu_threads: int = 0, num_workers: int = 1):
        from monitor.models import load_whisper, resolve_model

        self.model_name = resolve_model(model).name
        self.model = load_whisper(model, cpu_threads=cpu_threads, num_workers=num_workers)
        self._short_input_views: dict[int, object] = {}

    def transcribe(
        self,
        samples: np.ndarray,
        options: TranscriptionOptions | None = None,
        speaker: str = "agent",
        offset: float = 0.0,
    ) -> Iterator[Segment]:
        """Yield segments of 16 kHz mono ``samples`` as they are decoded.

        ``offset`` (seconds) is added to every time, for audio that starts
        later in a call.
        """
        options = options or TranscriptionOptions()
        raw_segments, _info = self._model_for(options).transcribe(
            samples,
            language=options.language,
            beam_size=options.beam_size,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            vad_filter=options.vad_filter,
            vad_parameters={"min_silence_duration_ms": options.vad_min_silence_ms},
            word_timestamps=options.word_timestamps,
            condition_on_previous_text=options.condition_on_previous_text,
            compression_ratio_threshold=options.compression_ratio_threshold,
            log_prob_threshold=options.log_prob_threshold,
            no_speech_threshold=options.no_speech_threshold,
            max_new_tokens=options.max_new_tokens,
            hallucination_silence_threshold=(
                options.hallucination_silence_threshold if options.word_timestamps else None
            ),
        )
        for raw in raw_segments:
            segment = self._clean(raw, options, speaker, offset)
            if segment is not None:
                yield from split_sentences(segment)

    def _model_for(self, options: TranscriptionOptions):
        if options.encoder_padding_s is None:
            return self.model
        frames = round(options.encoder_padding_s * self.model.frames_per_second)
        if frames not in self._short_input_views:
            self._short_input_views[frames] = short_encoder_input(self.model, frames)
        return self._short_input_views[frames]

    @staticmethod
    def _clean(raw, options: TranscriptionOptions, speaker: str, offset: float) -> Segment | None:
        if _failed_every_temperature(raw, options):
            return None
        if raw.words:
            words = collapse_repeats(_simplified_words(raw.words), options.max_repeats)
            words = [Word(w.start + offset, w.end + offset, w.text, w.probability) for w in words]
            text = "".join(w.text for w in words).strip()
            start, end = (words[0].start, words[-1].end) if words else (float(raw.start) + offset, float(raw.end) + offset)
        else:
            words, text = [], to_simplified(raw.text).strip()
            start, end = float(raw.start) + offset, float(raw.end) + offset
        if is_hallucination(text) or _too_fast(text, end - start, options.max_chars_per_second):
            return None
        return Segment(start=start, end=end, text=text, speaker=speaker, words=words)

    def transcribe_call(self, call: CallAudio, options: TranscriptionOptions | None = None) -> list[Segment]:
        """Transcribe both sides of a call and interleave them by start time."""
        segments = list(self.transcribe(call.agent, options, speaker="agent"))
        if call.customer is not None:
            segments += self.transcribe(call.customer, options, speaker="customer")
        return sorted(segments, key=lambda s: (s.start, s.end))
