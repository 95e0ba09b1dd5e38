"""Which language a sentence was spoken in, from Whisper's language token (讲普通话).

Transcription fixes the language to Chinese (``TranscriptionOptions.language``),
so the decode says nothing about it; this asks the model separately, one
sentence at a time, and only for the phrasebooks that check 讲普通话.

Decisions a reader would otherwise have to guess:

- The sentence is encoded without Whisper's 30 s of padding
  (``asr.short_encoder_input``): on real Mandarin and on other languages the
  probabilities came out the same as with it, at about a fifteenth of the cost.
  Batching the sentences into one encoder call was slower on the CPU, not faster.
- Whisper base has no Cantonese token (``yue`` came with large-v3): it writes
  Cantonese as ``zh``. What this can tell is Mandarin/Chinese from other
  languages (English, Japanese, Korean, Thai...), not a dialect from Mandarin.
- Short Mandarin is sometimes taken for Japanese or Korean; the rules only ask
  about sentences long enough, and want a margin (``rules.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from monitor.asr import short_encoder_input

if TYPE_CHECKING:
    from monitor.asr import Transcriber

PADDING_FRAMES = 100
"""Frames of padding after the sentence for the encoder (1 s)."""
MAX_SAMPLES = 3 * 16000
"""A sentence is judged by its first 3 s: the encoder's cost grows with the audio, and on
corpus/real (16 Mandarin readers) and espeak-ng English the verdicts with 3 s were those
with the whole sentence, at about 0.6x the time."""


def sentence_languages(transcriber: Transcriber, samples: np.ndarray, spans: list[tuple[int, int]]) -> list[dict[str, float]]:
    """Whisper's language probabilities (code → probability) for each span of 16 kHz ``samples``."""
    model = short_encoder_input(transcriber.model, PADDING_FRAMES)
    found = []
    for first, last in spans:
        audio = np.ascontiguousarray(samples[first : min(last, first + MAX_SAMPLES)], dtype=np.float32)
        _language, _probability, probabilities = model.detect_language(audio=audio)
        found.append(dict(probabilities))
    return found
