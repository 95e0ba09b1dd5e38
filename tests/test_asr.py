"""Transcription with the real embedded model on real sample audio."""

from __future__ import annotations

import re

import pytest
from conftest import labels, sample

from monitor.asr import (
    LOOP_ROOM_TOKENS,
    Segment,
    TranscriptionOptions,
    Word,
    collapse_repeats,
    is_hallucination,
    split_sentences,
    window_token_cap,
)
from monitor.audio import load_call
from monitor.text import to_simplified

TRADITIONAL_ONLY = set("們這個為來說對沒問話時會務網寬帶維護請標準號聯絡謝見")


@pytest.mark.parametrize("call_id", ["d02_fault_rude", "d08_phone_blame", "d04_investment_vague"])
def test_sample_calls_come_out_simplified_with_word_timestamps(transcriber, call_id):
    call = load_call(sample(call_id))
    segments = transcriber.transcribe_call(call)
    text = "".join(s.text for s in segments)
    assert not TRADITIONAL_ONLY & set(text), "traditional characters in the output"
    assert re.search(r"[\u4e00-\u9fff]{20,}", re.sub(r"[^\u4e00-\u9fff]", "", text))
    for segment in segments:
        assert segment.words, "word timestamps"
        assert segment.text == "".join(w.text for w in segment.words).strip()
        assert 0 <= segment.start <= segment.end <= call.duration_s + 0.5
        assert all(a.start <= b.start for a, b in zip(segment.words, segment.words[1:]))
    # Each labelled agent turn lies within the speech the model heard.
    heard_from = min(s.start for s in segments)
    heard_to = max(s.end for s in segments)
    for turn in labels(call_id)["turns"]:
        assert heard_from - 1 <= turn["start"] and turn["end"] <= heard_to + 1.5


def test_short_encoder_input_encodes_the_window_not_30_seconds(transcriber):
    from faster_whisper.audio import pad_or_trim

    from monitor.asr import short_encoder_input

    greeting = load_call(sample("d08_phone_blame")).agent[8000:64000]  # 0.5-4.0 s: 您好，我是家庭宽带维护的工程师
    audio_frames = transcriber.model.feature_extractor(greeting).shape[-1]
    padded = pad_or_trim(transcriber.model.feature_extractor(greeting))  # what faster-whisper hands the encoder
    view = short_encoder_input(transcriber.model, padding_frames=300)
    whole_seconds = -(-(audio_frames + 300) // 100) * 100
    assert view.encode(padded).shape[1] == whole_seconds // 2  # two frames per encoder position
    assert transcriber.model.encode(padded).shape[1] == 1500, "the shared model still encodes 30 s"
    # And it hears the same greeting.
    options = TranscriptionOptions(beam_size=1, vad_filter=False, encoder_padding_s=3.0)
    heard = "".join(s.text for s in transcriber.transcribe(greeting, options))
    assert "家庭" in heard and "工程师" in heard


def test_stereo_call_separates_agent_and_customer(transcriber):
    segments = transcriber.transcribe_call(load_call(sample("d07_stereo_apology")))
    agent = "".join(s.text for s in segments if s.speaker == "agent")
    customer = "".join(s.text for s in segments if s.speaker == "customer")
    assert "歉意" in agent and "抢修" not in customer
    assert "昨天晚上" in customer and "昨天晚上" not in agent
    assert [s.start for s in segments] == sorted(s.start for s in segments)


def test_silence_gives_no_invented_text(transcriber):
    import numpy as np

    quiet_noise = (np.random.default_rng(0).standard_normal(16000 * 8) * 0.002).astype(np.float32)
    assert list(transcriber.transcribe(quiet_noise)) == []


def test_known_credit_lines_are_hallucinations():
    assert is_hallucination("字幕由Amara.org社区提供")
    assert is_hallucination(to_simplified("請不吝點贊 訂閱 轉發 打賞支持明鏡與點點欄目"))
    assert is_hallucination("谢谢观看!")
    assert is_hallucination("以下是普通话的句子。")  # the prompt read back
    assert not is_hallucination("谢谢您，再见")
    assert not is_hallucination("很高兴为您服务，谢谢观看我们的演示视频后再来电咨询具体的操作流程")


def test_repetition_loops_are_cut_back_with_their_times():
    words = [Word(i * 0.2, i * 0.2 + 0.2, t) for i, t in enumerate(["好的", "谢谢"] + ["谢谢"] * 9 + ["再见"])]
    kept = collapse_repeats(words, max_repeats=3)
    assert [w.text for w in kept] == ["好的", "谢谢", "再见"]
    assert kept[-1].start == pytest.approx(11 * 0.2)
    pair = [Word(i, i + 1, t) for i, t in enumerate(["你好", "请问"] * 5)]
    assert [w.text for w in collapse_repeats(pair, 3)] == ["你好", "请问"]
    assert len(collapse_repeats(pair[:6], 3)) == 6, "three repeats are speech, not a loop"


def test_a_window_decodes_room_for_fast_speech_and_for_a_loop_to_show_but_no_more():
    from faster_whisper.transcribe import get_compression_ratio

    options = TranscriptionOptions()
    caps = [window_token_cap(round(seconds * 16000), options.max_tokens_per_s) for seconds in (0.5, 2, 5, 10, 14, 30)]
    for seconds, cap in zip((0.5, 2, 5, 10, 14, 30), caps):
        assert cap >= 8 + 8 * seconds or cap == 224, "fast speech with punctuation and timestamps fits"
        assert LOOP_ROOM_TOKENS <= cap <= 224
    assert caps == sorted(caps) and caps[3] < 224
    # A loop cut at the cap (two tokens a character at worst) still falls back.
    assert get_compression_ratio("辣" * (LOOP_ROOM_TOKENS // 4)) > options.compression_ratio_threshold
    assert get_compression_ratio("辣" * 7) < options.compression_ratio_threshold, "what 28 tokens left of one"


def test_sentences_are_split_on_final_marks():
    words = [Word(0, 1, "您好，"), Word(1, 2, "请问。"), Word(3, 4, "好的"), Word(4, 5, "吗？"), Word(6, 7, "嗯")]
    parts = split_sentences(Segment(0, 7, "您好，请问。好的吗？嗯", words=words))
    assert [(p.start, p.end, p.text) for p in parts] == [(0, 2, "您好，请问。"), (3, 5, "好的吗？"), (6, 7, "嗯")]
