"""Speech to text: faster-whisper, steered to Simplified Chinese and cleaned of
Whisper's known failure modes on Chinese audio.

The backend knows nothing about calls or phrases. It turns 16 kHz samples
into small ``Segment`` records with word timestamps. Streaming policy
(``stream.py``) and scoring (``pipeline.py``) sit on top of it.

A recording is not handed to faster-whisper whole: Whisper may end a 30 s window
early (a timestamp token that says nothing more follows, or a window it takes
for silence), and the rest of the window is then never transcribed. Instead,
Silero VAD finds the utterances, they are decoded in short windows of whole
utterances with the encoder on the window only (``decode_window``, which the
live path uses too), speech still without words is decoded again on its own,
and what stays unheard is measured (``Coverage``) so a report can say so.
"""

from __future__ import annotations

import copy
import functools
import threading
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator

import numpy as np

from monitor.audio import SAMPLE_RATE, CallAudio, release_freed_memory
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
    # Our own prompt (DEFAULT_PROMPT), which Whisper sometimes reads back instead
    # of a short utterance such as 喂，什么事？
    "以下是普通话的句子",
)
_HALLUCINATION_KEYS = tuple(spoken(phrase) for phrase in HALLUCINATIONS)


@dataclass
class TranscriptionOptions:
    """How audio is decoded. Defaults are tuned for Mandarin service calls."""

    language: str = "zh"
    """Whisper language code. Fixed rather than detected: short greetings are
    often misdetected as Japanese or Cantonese."""
    beam_size: int = 3
    """Beam width. Whisper's own default is 5; with short windows, decoding is
    most of the time, and 3 took 0.55x the time of bare faster-whisper on the
    sample calls against 0.62x for 5 (same run), with CER on ``corpus/real``
    unchanged (0.185) and 0.133 against 0.127 on the samples (bare: 0.154).
    Greedy (1) was barely faster and worse (CER 0.206). Beam 2: CER 0.199 for
    5% less CPU. Greedy drafts, decoded again with beam 3 only where the
    draft's log-probability was low (below -0.3, which kept CER at 0.185),
    saved 4% of CPU on the samples but cost 26% more on noisy held-out calls,
    where most windows were decoded twice; and a draft Whisper was sure of
    (log-probability -0.14) heard 深表歉意 as 深表切议."""
    initial_prompt: str | None = DEFAULT_PROMPT
    """Text fed as previous context. A simplified-Chinese sentence with
    punctuation steers Whisper towards simplified script and punctuation."""
    hotwords: str | None = None
    """Vocabulary to bias decoding towards (e.g. a phrasebook's key terms)."""
    vad_filter: bool = True
    """Find speech with Silero VAD and decode only that, utterance by utterance
    (``Transcriber.transcribe``); removes most hallucinations on silence. Off,
    the samples are decoded whole, as one window or with Whisper's own seeking."""
    vad_min_silence_ms: int = 500
    """Silence that ends an utterance for VAD. Short, so that windows are cut at
    pauses between sentences and silence between them is not counted as speech
    (faster-whisper's 2 s joins a whole call into one stretch of "speech")."""
    chunk_max_s: float = 14.0
    """Longest window decoded at once. Whole utterances are grouped into windows
    up to this long; an utterance longer than this is cut at a short pause.
    Shorter windows cost less per second (the encoder's attention grows with the
    square of its input, the decoder's with its length). On the sample calls,
    with 2 s of encoder padding and beam 5, 24 s windows took 0.70x the time of
    bare faster-whisper, 14 s 0.55x, 10 s 0.49x, with transcript CER 0.128,
    0.127 and 0.137 (bare 0.154); with beam 3, 14 s took 0.54x, 12 s 0.46x,
    10 s 0.49x, CER 0.133, 0.142, 0.141. But 12 s cuts a 13.4 s utterance of
    ``corpus/real`` in two, and its CER rose from 0.185 to 0.195."""
    join_silence_s: float = 3.0
    """Utterances this close are decoded in one window (up to ``chunk_max_s``):
    fewer, longer windows cost less than many short ones, but not when what joins
    them is a long silence the encoder would have to go through."""
    coverage_gap_s: float = 0.5
    """VAD speech this long with no word within ``word_reach_s`` is unheard: it
    is decoded again on its own, and what stays unheard lowers the coverage."""
    word_reach_s: float = 0.4
    """Speech this close to a word counts as heard: word times are approximate,
    and VAD pads speech by as much on each side."""
    word_timestamps: bool = True
    """Per-word times, so a matched phrase gets its own start and end, and the
    coverage of speech by words can be measured (without them, by segments)."""
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
    short streaming window (about 6 tokens per second of Mandarin speech).
    None: ``window_token_cap`` of the window, at ``max_tokens_per_s``."""
    max_tokens_per_s: float = 12.0
    """Without ``max_new_tokens``, a window of speech decodes at most 8 tokens and
    this many per second of it (``window_token_cap``). Speech takes 4-6 tokens a
    second, timestamps and punctuation included; a loop (亮了亮了…, on 1.7 s of
    noisy speech decoded again for coverage) ran to 224 tokens and 1.7 s of CPU,
    and was thrown away for its compression ratio all the same: cut short, it
    still compresses past ``compression_ratio_threshold`` and falls back."""
    max_repeats: int = 3
    """A run of the same word or words repeated more often than this is cut back to one."""
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    """Sampling temperatures tried in turn while a window decodes badly (see
    the two thresholds above); Whisper's own schedule."""
    encoder_padding_s: float | None = 2.0
    """Run the encoder on the window's audio plus this much padding, instead of
    on Whisper's fixed 30 s (``None``). Windows are whole utterances, often a
    few seconds long, and there the fixed pass is most of a decode. On
    ``corpus/real`` CER is the same with 2 s as with 30 s (0.185), at a quarter
    of the time; with 1 s, decoding was no faster."""


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
        and raw.temperature >= options.temperatures[-1]
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


def window_token_cap(samples: int, tokens_per_s: float) -> int:
    """Most tokens a window of ``samples`` (16 kHz) may decode: a few more than
    speech that long holds, room for fast speech but not for a loop. At least
    ``LOOP_ROOM_TOKENS``, at most 224, half of Whisper's context (its own cap on
    a decode; the other half is for the prompt)."""
    return min(224, max(LOOP_ROOM_TOKENS, 8 + int(tokens_per_s * samples / SAMPLE_RATE)))


LOOP_ROOM_TOKENS = 64
"""Tokens a loop needs to show itself by its compression ratio (and fall back to
a higher temperature). On 1.7 s of noisy speech, 28 tokens cut a loop to
辣辣辣辣辣辣辣 (compression ratio 1.5), which was kept; with 48 or more it
compressed past 2.4 and the fallback heard 亮了亮了."""


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
        length = encoder_length(batch[0], padding_frames)
        return encode_padded(np.ascontiguousarray(batch[..., :length]))

    view.encode = encode
    return view


def encoder_length(features: np.ndarray, padding_frames: int) -> int:
    """Frames of (80, 3000) ``features`` the short encoder input keeps: the audio,
    ``padding_frames`` after it, rounded up to a whole second."""
    # Padding is exact zeros; a log-Mel frame of audio, even of digital silence, never is.
    audio_frames = np.flatnonzero(np.any(features != 0, axis=0))
    length = (audio_frames[-1] + 1 if len(audio_frames) else 0) + padding_frames
    # Whole seconds: the CPU backend caches work buffers per input shape, and
    # 600 distinct lengths cost 330 MB against 70 MB for 12.
    return min(features.shape[-1], -(-length // ENCODER_LENGTH_STEP) * ENCODER_LENGTH_STEP)


SEEK_AGAIN_S = 1.0
"""Audio left after a window's last decoded word that is not worth a second decoding pass."""

VAD_BLOCK_S = 60.0
"""Silero VAD looks at a long recording this many seconds at a time: on the
whole of an hour it would hold two more copies of the audio, and its network's
activations for 300 s took 190 MB (60 s: 50 MB)."""


@dataclass
class Coverage:
    """How much of the speech VAD found the transcript's words account for."""

    speech_s: float
    """Seconds of speech VAD found."""
    unheard: list[tuple[float, float]] = field(default_factory=list)
    """Stretches of that speech (call seconds) with no word in reach."""

    @property
    def share(self) -> float | None:
        """Heard speech over all speech (0..1); None when there was no speech."""
        if self.speech_s <= 0:
            return None
        return max(0.0, 1.0 - sum(end - start for start, end in self.unheard) / self.speech_s)

    def __add__(self, other: Coverage) -> Coverage:
        return Coverage(self.speech_s + other.speech_s, sorted(self.unheard + other.unheard))


@dataclass
class CallTranscript:
    """Both sides of a call, transcribed, and how completely."""

    segments: list[Segment]
    """Agent and customer segments interleaved by start time."""
    coverage: Coverage
    """Coverage of both channels' speech by their own words."""


def segment_of(words: list[Word], speaker: str) -> Segment:
    """A segment made of ``words``."""
    return Segment(words[0].start, words[-1].end, "".join(w.text for w in words).strip(), speaker, list(words))


def unheard_speech(
    speech: list[tuple[float, float]], segments: list[Segment], reach_s: float, min_gap_s: float
) -> list[tuple[float, float]]:
    """Stretches of ``speech`` at least ``min_gap_s`` long with no word within ``reach_s``.

    Segments without word times count as heard over their whole span.
    """
    heard = sorted(
        (w.start - reach_s, w.end + reach_s)
        for s in segments
        for w in (s.words or [Word(s.start, s.end, s.text)])
    )
    unheard, h = [], 0
    for start, end in speech:
        position = start
        while h < len(heard) and heard[h][1] <= position:
            h += 1
        k = h
        while k < len(heard) and heard[k][0] < end:
            if heard[k][0] - position >= min_gap_s:
                unheard.append((position, heard[k][0]))
            position = max(position, heard[k][1])
            k += 1
        if end - position >= min_gap_s:
            unheard.append((position, end))
    merged: list[tuple[float, float]] = []
    for start, end in unheard:  # speech VAD cut in two is one stretch unheard
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class Transcriber:
    """A loaded Whisper model and the way we call it. Safe to share between threads."""

    def __init__(self, model: str | None = None, cpu_threads: int = 0, num_workers: int = 1):
        from monitor.models import load_whisper, resolve_model

        self.model_name = resolve_model(model).name
        self.model = load_whisper(model, cpu_threads=cpu_threads, num_workers=num_workers)
        release_freed_memory()
        self._short_input_views: dict[int, object] = {}
        self.batcher: WindowBatcher | None = None
        """Where ``decode_window`` sends windows to share passes of the model with
        other threads' (``batched``); None: each window is decoded on its own."""

    def batched(self, max_batch: int, slots: int = 1) -> Transcriber:
        """This transcriber (same model) with windows of concurrent threads decoded
        together, up to ``max_batch`` in one pass and ``slots`` passes at once (``WindowBatcher``)."""
        view = copy.copy(self)
        view.batcher = WindowBatcher(self, max_batch, slots)
        return view

    def transcribe(
        self,
        samples: np.ndarray,
        options: TranscriptionOptions | None = None,
        speaker: str = "agent",
        offset: float = 0.0,
    ) -> list[Segment]:
        """The segments of 16 kHz mono ``samples``, in time order.

        ``offset`` (seconds) is added to every time, for audio that starts
        later in a call.
        """
        return self.transcribe_covered(samples, options, speaker, offset)[0]

    def transcribe_covered(
        self,
        samples: np.ndarray,
        options: TranscriptionOptions | None = None,
        speaker: str = "agent",
        offset: float = 0.0,
    ) -> tuple[list[Segment], Coverage]:
        """Segments of one speaker's audio, and how much of its speech they cover.

        With VAD, speech is decoded in windows of whole utterances, then any
        speech still without words is decoded again on its own: Whisper may end
        a window early (a timestamp that says "nothing more", or a window it
        takes for silence), and bare faster-whisper then never hears the rest.
        """
        options = options or TranscriptionOptions()
        if not options.vad_filter:  # the samples are taken as speech, all of them
            segments = list(self._segments(samples, options, speaker, offset))
            whole = [(offset, offset + len(samples) / SAMPLE_RATE)]
            unheard = unheard_speech(whole, segments, options.word_reach_s, options.coverage_gap_s)
            return segments, Coverage(whole[0][1] - offset, unheard)
        speech = speech_spans(samples, options)
        segments = []
        windows = utterance_windows(
            speech, round(options.chunk_max_s * SAMPLE_RATE), round(options.join_silence_s * SAMPLE_RATE)
        )
        for start, end in windows:
            segments += self.decode_window(samples[start:end], options, speaker, offset + start / SAMPLE_RATE)
        speech_s = [(offset + start / SAMPLE_RATE, offset + end / SAMPLE_RATE) for start, end in speech]
        segments += self.decode_unheard(samples, options, speaker, offset, speech_s, segments)
        segments.sort(key=lambda s: (s.start, s.end))
        coverage = Coverage(
            sum(end - start for start, end in speech_s),
            unheard_speech(speech_s, segments, options.word_reach_s, options.coverage_gap_s),
        )
        return segments, coverage

    def decode_unheard(
        self,
        samples: np.ndarray,
        options: TranscriptionOptions,
        speaker: str,
        offset: float,
        speech: list[tuple[float, float]],
        segments: list[Segment],
    ) -> list[Segment]:
        """Segments for the stretches of ``speech`` (call seconds) that ``segments``
        leave unheard, each decoded on its own. ``samples`` start at ``offset``."""
        reach = options.word_reach_s
        # A second chance under other conditions: what the prompt steered into an
        # echo of itself (以下是普通话的句子, dropped as a hallucination) is decoded without it.
        options = replace(options, initial_prompt=None)
        kept = []
        for start, end in unheard_speech(speech, segments, reach, options.coverage_gap_s):
            first = max(0, round((start - offset - reach) * SAMPLE_RATE))
            last = min(len(samples), round((end - offset + reach) * SAMPLE_RATE))
            found = []
            for window in utterance_windows([(first, last)], round(options.chunk_max_s * SAMPLE_RATE)):
                found += self.decode_window(samples[window[0] : window[1]], options, speaker, offset + window[0] / SAMPLE_RATE)
            # Only what lies in the gap: the padding may hear the neighbouring words again.
            for segment in found:
                words = [w for w in segment.words if start - reach <= (w.start + w.end) / 2 <= end + reach]
                if words:
                    kept.append(segment_of(words, speaker))
                elif not segment.words and start <= segment.start < end:
                    kept.append(segment)
        return kept

    def decode_window(
        self, samples: np.ndarray, options: TranscriptionOptions, speaker: str = "agent", offset: float = 0.0
    ) -> list[Segment]:
        """The segments of one window of speech, without Whisper's second pass over its end.

        Once the window's words are aligned, Whisper seeks to the last word and runs
        the encoder again on the second or less left: twice the cost, for what the
        first pass heard as silence (or a word being cut off); on short clips these
        tail decodes cost 4.7x and invent text. Decoding stops at the first segment
        within ``SEEK_AGAIN_S`` of the end. An early end further back is decoded on.
        """
        if self.batcher is not None:
            return self.batcher.decode(samples, options, speaker, offset)
        return self.decode_window_alone(samples, options, speaker, offset)

    def decode_window_alone(
        self, samples: np.ndarray, options: TranscriptionOptions, speaker: str = "agent", offset: float = 0.0
    ) -> list[Segment]:
        """``decode_window`` in a pass of the model of its own."""
        if options.max_new_tokens is None:
            options = replace(options, max_new_tokens=window_token_cap(len(samples), options.max_tokens_per_s))
        until = offset + len(samples) / SAMPLE_RATE - SEEK_AGAIN_S
        heard = []
        segments = self._segments(samples, options, speaker, offset)
        for segment in segments:
            heard.append(segment)
            if segment.end >= until:
                segments.close()
                break
        return heard

    def decode_windows_together(self, windows: list[Window]) -> list[list[Segment]]:
        """``decode_window`` for several windows of the same ``batch_key`` in one
        pass of the model: one encoder pass over their log-Mel features padded
        with zeros to the longest, one greedy generation, one word alignment.

        Each window keeps its own prompt and token cap. The encoder sees a
        shorter window with more padding than alone (as it would with Whisper's
        own 30 s); the rest is what faster-whisper does with a window alone (its
        first pass: these options never fall back to a higher temperature). A
        window whose words end early is decoded on alone from its last word, as
        faster-whisper would seek on.
        """
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import Segment as WhisperSegment
        from faster_whisper.transcribe import Word as WhisperWord
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
        from faster_whisper.utils import get_end

        model, options = self.model, windows[0].options
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=options.language)
        features, sizes = [], []
        for window in windows:
            log_mel = model.feature_extractor(window.samples)
            sizes.append(min(model.feature_extractor.nb_max_frames, log_mel.shape[-1] - 1))
            features.append(pad_or_trim(log_mel[:, : sizes[-1]]))
        padding = round(options.encoder_padding_s * model.frames_per_second)
        length = max(encoder_length(f, padding) for f in features)
        encoder_output = model.encode(np.ascontiguousarray(np.stack(features)[..., :length]))

        # CTranslate2 wants the start of transcript at the same position in every
        # prompt: each window keeps as many of its prompt's last tokens as the shortest has.
        previous = [tokenizer.encode(" " + w.options.initial_prompt.strip()) if w.options.initial_prompt is not None
                    else [] for w in windows]
        kept = min(map(len, previous))
        prompts = [model.get_prompt(tokenizer, tokens[len(tokens) - kept :], hotwords=options.hotwords)
                   for tokens in previous]
        caps = [w.options.max_new_tokens or model.max_length for w in windows]
        defaults = _whisper_defaults()
        results = model.model.generate(
            encoder_output,
            prompts,
            beam_size=options.beam_size,
            patience=defaults["patience"],
            length_penalty=defaults["length_penalty"],
            repetition_penalty=defaults["repetition_penalty"],
            no_repeat_ngram_size=defaults["no_repeat_ngram_size"],
            max_length=min(model.max_length, max(len(p) + cap for p, cap in zip(prompts, caps))),
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=defaults["suppress_blank"],
            suppress_tokens=get_suppressed_tokens(tokenizer, defaults["suppress_tokens"]),
            max_initial_timestamp_index=round(defaults["max_initial_timestamp"] / model.time_precision),
            sampling_temperature=options.temperatures[0],
        )
        pieces, seeks, finished = [], [], []  # per window: subsegments, where to seek on, whether Whisper said "no more"
        for result, cap, size in zip(results, caps, sizes):
            tokens = result.sequences_ids[0][:cap]  # (the batch's cap is its largest window's)
            if options.no_speech_threshold is not None and result.no_speech_prob > options.no_speech_threshold:
                split = ([], size, True)  # silence: nothing, and nothing to seek on to
            else:
                split = model._split_segments_by_timestamps(
                    tokenizer=tokenizer, tokens=tokens, time_offset=0.0, segment_size=size,
                    segment_duration=size * model.feature_extractor.time_per_frame, seek=0,
                )
            for column, value in zip((pieces, seeks, finished), split):
                column.append(value)
        if options.word_timestamps:
            self._align_together(tokenizer, encoder_output, pieces, sizes)

        heard_by_window = []
        for window, subsegments, seek, finished_early, size, result in zip(windows, pieces, seeks, finished, sizes, results):
            raw = []
            for sub in subsegments:
                text = tokenizer.decode(sub["tokens"])
                if sub["start"] == sub["end"] or not text.strip():
                    continue
                raw.append(WhisperSegment(
                    id=len(raw) + 1, seek=0, start=sub["start"], end=sub["end"], text=text, tokens=sub["tokens"],
                    avg_logprob=0.0, compression_ratio=get_compression_ratio(text), no_speech_prob=result.no_speech_prob,
                    words=[WhisperWord(**word) for word in sub["words"]] if options.word_timestamps else None,
                    temperature=options.temperatures[0],
                ))
            segments = (piece for r in raw for piece in self._cleaned(r, window.options, window.speaker, window.offset))
            heard, reached = _heard_to_the_end(segments, window.offset + len(window.samples) / SAMPLE_RATE - SEEK_AGAIN_S)
            if not reached and not finished_early:  # Whisper ended early: seek on, as faster-whisper would
                last_word_end = get_end(subsegments) if options.word_timestamps else None
                resume = round(last_word_end * model.frames_per_second) if last_word_end else seek
                first = resume * model.feature_extractor.hop_length
                if 0 < resume < size and first < len(window.samples):
                    heard += self.decode_window_alone(window.samples[first:], replace(window.options, initial_prompt=None),
                                                      window.speaker, window.offset + first / SAMPLE_RATE)
            heard_by_window.append(heard)
        return heard_by_window

    def _align_together(self, tokenizer, encoder_output, pieces: list[list[dict]], sizes: list[int]) -> None:
        """Word timestamps for every window's subsegments (``pieces``), aligned in one pass;
        each window's words are then placed as faster-whisper places a window's alone."""
        import ctranslate2

        eot = tokenizer.eot
        text_tokens = [[t for sub in subsegments for t in sub["tokens"] if t < eot] for subsegments in pieces]
        spoken_windows = [i for i, tokens in enumerate(text_tokens) if tokens]
        if len(spoken_windows) < len(pieces) and spoken_windows:
            encoder_output = ctranslate2.StorageView.from_array(
                np.ascontiguousarray(np.asarray(encoder_output)[spoken_windows])
            )
        alignments = self.model.find_alignment(
            tokenizer, [text_tokens[i] for i in spoken_windows], encoder_output, [sizes[i] for i in spoken_windows]
        ) if spoken_windows else []
        aligned = dict(zip(spoken_windows, alignments))
        defaults = _whisper_defaults()
        for index, subsegments in enumerate(pieces):
            if not subsegments:
                continue
            view = copy.copy(self.model)  # shallow: its alignment is the one already found
            view.find_alignment = lambda *_args, alignment=aligned.get(index, []): [alignment]
            view.add_word_timestamps([subsegments], tokenizer, None, sizes[index], defaults["prepend_punctuations"],
                                     defaults["append_punctuations"], last_speech_timestamp=0.0)

    def _segments(self, samples: np.ndarray, options: TranscriptionOptions, speaker: str, offset: float) -> Iterator[Segment]:
        """Faster-whisper over ``samples`` as they are (no VAD), cleaned, lazily."""
        raw_segments, _info = self._model_for(options).transcribe(
            samples,
            language=options.language,
            beam_size=options.beam_size,
            temperature=list(options.temperatures),
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            vad_filter=False,
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
            yield from self._cleaned(raw, options, speaker, offset)

    def _cleaned(self, raw, options: TranscriptionOptions, speaker: str, offset: float) -> list[Segment]:
        segment = self._clean(raw, options, speaker, offset)
        return split_sentences(segment) if segment is not None else []

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

    def hear(self, call: CallAudio, options: TranscriptionOptions | None = None) -> CallTranscript:
        """Transcribe both sides of a call, interleaved by start time, with their coverage."""
        segments, coverage = self.transcribe_covered(call.agent, options, speaker="agent")
        if call.customer is not None:
            customer, customer_coverage = self.transcribe_covered(call.customer, options, speaker="customer")
            segments, coverage = segments + customer, coverage + customer_coverage
        return CallTranscript(sorted(segments, key=lambda s: (s.start, s.end)), coverage)

    def transcribe_call(self, call: CallAudio, options: TranscriptionOptions | None = None) -> list[Segment]:
        """Transcribe both sides of a call and interleave them by start time."""
        return self.hear(call, options).segments


def _heard_to_the_end(segments: Iterable[Segment], until: float) -> tuple[list[Segment], bool]:
    """The segments up to the first that reaches ``until``, and whether one did."""
    heard = []
    for segment in segments:
        heard.append(segment)
        if segment.end >= until:
            return heard, True
    return heard, False


@functools.lru_cache(maxsize=1)
def _whisper_defaults() -> dict:
    """faster-whisper's own ``transcribe`` defaults, for the options ``decode_windows_together`` passes itself."""
    from inspect import signature

    from faster_whisper.transcribe import WhisperModel

    return {name: p.default for name, p in signature(WhisperModel.transcribe).parameters.items()}


def batch_key(options: TranscriptionOptions) -> TranscriptionOptions | None:
    """Windows with equal keys can share a pass of the model; None: this one cannot.

    A window shares a pass when it is decoded once with no temperature fallback
    (no thresholds that would send it back hotter) and with the short encoder
    input: the streaming first pass. Token cap and prompt are the window's own,
    but a window with a prompt shares a pass only with others that have one.
    """
    if (options.compression_ratio_threshold is not None or options.log_prob_threshold is not None
            or options.hallucination_silence_threshold is not None or options.encoder_padding_s is None):
        return None
    return replace(options, initial_prompt="" if options.initial_prompt is not None else None, max_new_tokens=None)


@dataclass(eq=False)  # (a window is itself: its samples are an array)
class Window:
    """One window handed to ``WindowBatcher``, and what became of it."""

    samples: np.ndarray
    options: TranscriptionOptions
    speaker: str
    offset: float
    segments: list[Segment] | None = None
    """What the decode heard, once done."""
    error: BaseException | None = None
    """Why the decode failed, if it did."""


class WindowBatcher:
    """Windows that several threads have ready at once, decoded in one pass of the model.

    Decoding threads (``stream.DecodeScheduler``) hand their windows to
    ``decode``. The thread that finds the model free takes every waiting window
    of the same ``batch_key`` (up to ``max_batch``) and decodes them together
    (``Transcriber.decode_windows_together``). No window waits for a batch to
    fill: a batch is what queued while the model was busy, so a lightly loaded
    node decodes one window at a time as before, and a loaded one shares
    passes. At most ``slots`` passes run at once (the model's CTranslate2
    workers). Windows that cannot share a pass (the second pass, with its beam
    search and temperature fallback) are decoded alone, and only when no
    first-pass window is waiting: under load the second pass yields.
    """

    def __init__(self, transcriber: Transcriber, max_batch: int, slots: int = 1, max_padding: float = 0.25):
        self.transcriber = transcriber
        self.max_batch = max(1, max_batch)
        self.slots = max(1, slots)
        self.max_padding = max_padding
        self._cond = threading.Condition()
        self._waiting: list[Window] = []
        self._running = 0
        self.passes = 0
        """Passes of the model run so far."""
        self.windows = 0
        """Windows decoded so far (``windows / passes``: the mean batch)."""

    def decode(self, samples: np.ndarray, options: TranscriptionOptions, speaker: str, offset: float) -> list[Segment]:
        window = Window(samples, options, speaker, offset)
        with self._cond:
            self._waiting.append(window)
            while window.segments is None and window.error is None:
                if self._running >= self.slots or not self._waiting:
                    self._cond.wait()
                    continue
                batch = self._take()
                self._running += 1
                self._cond.release()
                try:
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._running -= 1
                    self._cond.notify_all()
        if window.error is not None:
            raise window.error
        return window.segments

    def _take(self) -> list[Window]:
        """The oldest first-pass window and those that can share its pass; else the oldest window.

        A window joins only while padding every window to the longest costs the
        encoder at most ``max_padding`` more than the windows' own lengths: on
        2 cores, a batch of windows of mixed lengths took more CPU than decoding
        them one by one (``bench/capacity.py --windows``).
        """
        keys = [batch_key(w.options) for w in self._waiting]
        first = next((i for i, key in enumerate(keys) if key is not None), 0)
        batch = [self._waiting[first]]
        if keys[first] is not None:
            lengths = [self._encoder_s(batch[0])]
            for window, key in zip(self._waiting, keys):
                if len(batch) >= self.max_batch:
                    break
                if window is batch[0] or key != keys[first]:
                    continue
                longest = max(lengths + [self._encoder_s(window)])
                if longest * (len(batch) + 1) <= (1 + self.max_padding) * (sum(lengths) + self._encoder_s(window)):
                    batch.append(window)
                    lengths.append(self._encoder_s(window))
        for window in batch:
            self._waiting.remove(window)
        return batch

    @staticmethod
    def _encoder_s(window: Window) -> float:
        """Seconds of encoder input the window takes alone (whole seconds, as ``encoder_length``)."""
        return float(np.ceil(len(window.samples) / SAMPLE_RATE + window.options.encoder_padding_s))

    def _run(self, batch: list[Window]) -> None:
        try:
            if len(batch) == 1:
                w = batch[0]
                heard = [self.transcriber.decode_window_alone(w.samples, w.options, w.speaker, w.offset)]
            else:
                heard = self.transcriber.decode_windows_together(batch)
            for window, segments in zip(batch, heard):
                window.segments = segments
        except Exception as exc:  # every thread whose window was in the pass hears of it
            for window in batch:
                window.error = exc
        self.passes += 1
        self.windows += len(batch)


def speech_spans(samples: np.ndarray, options: TranscriptionOptions) -> list[tuple[int, int]]:
    """Silero VAD's speech in ``samples`` as (start, end) sample offsets, none
    longer than ``options.chunk_max_s``. Long audio is looked at in blocks of
    ``VAD_BLOCK_S``; speech cut by a block boundary is joined again."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(min_silence_duration_ms=options.vad_min_silence_ms, max_speech_duration_s=options.chunk_max_s)
    block = int(VAD_BLOCK_S * SAMPLE_RATE)
    max_samples = options.chunk_max_s * SAMPLE_RATE
    spans: list[tuple[int, int]] = []
    for first in range(0, len(samples), block):
        for found in get_speech_timestamps(samples[first : first + block], vad):
            start, end = first + found["start"], first + found["end"]
            if spans and start <= spans[-1][1] and end - spans[-1][0] <= max_samples:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((max(start, spans[-1][1]) if spans else start, end))
    return spans


def utterance_windows(spans: list[tuple[int, int]], max_samples: int, max_gap: int = 0) -> list[tuple[int, int]]:
    """Speech spans grouped into windows of whole utterances at most ``max_samples``
    long, joined across silences up to ``max_gap``; a span longer than
    ``max_samples`` is cut into equal pieces."""
    windows: list[tuple[int, int]] = []
    for start, end in spans:
        if windows and end - windows[-1][0] <= max_samples and start - windows[-1][1] <= max_gap:
            windows[-1] = (windows[-1][0], end)
            continue
        pieces = -(-(end - start) // max_samples)
        step = -(-(end - start) // pieces)
        windows += [(s, min(s + step, end)) for s in range(start, end, step)]
    return windows
