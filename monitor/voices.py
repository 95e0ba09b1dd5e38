"""Voices in a mono call: which stretches of audio sound like the same person.

The acoustic half of role separation (``roles.py`` is the other half). Each
sentence becomes a vector describing the voice:

- with Resemblyzer's weights installed (``pip install --no-deps
  resemblyzer==0.1.4``; its wheel carries them, nothing is downloaded at run
  time), the embedding of a speaker encoder trained to tell voices apart
  (GE2E, run by ONNX Runtime, ``SpeakerEncoder``);
- otherwise the mean and spread of its mel-cepstrum (MFCC 1-19) over its
  louder frames, from the log-mel frames faster-whisper computes anyway.

Measured with ``bench/roles.py`` (the labelled turns of each call mixed to
mono, clustered into two voices, share of characters in the right voice;
then the whole mono path on Whisper's sentences):

- cepstrum: 1.00 on the samples, 0.94 on tests/data/roles, 0.81 on the
  held-out h01-h04 (h02, noisy phone band: 0.52), 0.94 on bench/data/
  roles_heldout x01-x04. It follows what is said as much as who says it:
  on 8 kHz calls of short turns it splits short sentences from long ones.
- speaker encoder: 1.00, 1.00, 0.87 (h02: 1.00) and 0.98, and 1.00 on the
  real-voice montages, like the cepstrum. Transcript characters attributed
  right: tests/data/roles 0.89 -> 0.96 (the real customer of r02, whose two
  recordings the cepstrum put in different voices, is no longer blamed),
  x01-x04 0.72 -> 0.97.
- mean-pooled Whisper encoder states (``--encoder``): 0.78 and 0.77; Whisper
  hears words, not who says them.

The PyPI speaker-embedding packages that run without torch (speakeronnx,
redimnet2-onnx, speaker-diarize-lite, diarize) ship no weights.

Cost: one spectrogram of the whole call serves the encoder's mel frames and
the pause finder's loudness (``Recording``). The LSTM's arithmetic (0.5 GFLOP
a 1.6 s piece) is most of it, and a call has only 20-60 pieces: run as numpy
steps, a matmul and a few ufuncs per step and layer, their overhead made it
4.7 ms a piece plus 100 ms a call (193 ms for 20 pieces); ONNX Runtime's LSTM
runs the same arithmetic in 3.2-3.4 ms a piece (65 ms for 20), with the same
embeddings (within 5e-7). On 11 short mono calls, scored in one process with
either encoder call by call, it took 8.5% of ``score_call``'s CPU in numpy
(2.63 of 31.1 s) and 4.3% in ONNX Runtime (1.30 of 30.1 s).
"""

from __future__ import annotations

import collections
import importlib.util
import pickle
import struct
import threading
from dataclasses import replace
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from scipy.fft import dct, rfft

from monitor.asr import Segment

FRAMES_PER_SECOND = 100
"""Whisper's log-mel hop is 10 ms."""
CEPSTRA = slice(1, 20)
"""MFCC 1-19: the spectral envelope (vocal tract, microphone, line). C0 is
loudness, which says more about the mix than about the speaker."""
PHONE_BAND_HZ = 3400
"""Only mel bands below the top of the telephone band are described. Phone
calls carry nothing above it but line noise, which would make every voice of
a phone call sound alike and the two legs of a call (one wideband, one phone)
sound different for the wrong reason. Measured on the real-voice montages:
clustering right 0.92 of the time with the band limit, 0.82 without."""
LOUD_SHARE = 0.7
"""The loudest share of a stretch's frames is described; pauses and breaths
between words would otherwise pull every voice towards silence."""


@lru_cache(maxsize=1)
def _feature_extractor():
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor()


@lru_cache(maxsize=1)
def _phone_bands() -> int:
    """How many of Whisper's mel bands peak below ``PHONE_BAND_HZ``."""
    extractor = _feature_extractor()
    frequencies = np.fft.rfftfreq(extractor.n_fft, 1 / extractor.sampling_rate)
    peaks = frequencies[np.argmax(extractor.mel_filters, axis=1)]
    return int(np.sum(peaks <= PHONE_BAND_HZ))


def log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's log-mel frames of a whole recording, telephone band only,
    shape (bands, frames)."""
    return _feature_extractor()(samples, padding=0)[: _phone_bands()]


def cepstral_vector(mel: np.ndarray, start: float, end: float) -> np.ndarray | None:
    """The cepstral voice vector of the stretch ``start``-``end`` (seconds) of
    ``log_mel`` frames, or None when it holds less than 0.2 s of audio."""
    frames = mel[:, int(start * FRAMES_PER_SECOND) : int(np.ceil(end * FRAMES_PER_SECOND))]
    if frames.shape[1] < 20:
        return None
    energy = frames.mean(axis=0)
    loud = frames[:, energy >= np.quantile(energy, 1 - LOUD_SHARE)]
    cepstra = dct(loud, axis=0, norm="ortho")[CEPSTRA]
    return np.concatenate([cepstra.mean(axis=1), cepstra.std(axis=1)])


class Recording:
    """A mono call's audio (16 kHz), ready to describe any stretch of it."""

    def __init__(self, samples: np.ndarray, noise: np.ndarray | None = None):
        self.samples = samples
        if noise is not None:
            self.noise = noise

    @cached_property
    def noise(self) -> np.ndarray | None:
        """The call's noise power in each of the encoder's mel bands (``NoiseFloor``), taken
        off every stretch before it is described; given when the samples are one stretch
        of a longer call (a live stream's sentence), else measured on the whole recording."""
        return NoiseFloor().add(self.power_mel).power()

    @cached_property
    def mel(self) -> np.ndarray:
        """Whisper's log-mel frames, telephone band (``log_mel``), for the cepstral vectors."""
        return log_mel(self.samples)

    @cached_property
    def _mel_and_logs(self) -> tuple[np.ndarray, np.ndarray]:
        return _frames(self.samples, loudness=True)

    @property
    def power_mel(self) -> np.ndarray:
        """The speaker encoder's mel frames of the whole call (``power_mel``), made
        once: the sentences' pieces are read from it."""
        return self._mel_and_logs[0]

    @cached_property
    def loudness(self) -> np.ndarray:
        """Each 10 ms frame's loudness: Whisper's log-mel frames, telephone band
        (``log_mel``), averaged over their bands; made with ``power_mel``."""
        logs = self._mel_and_logs[1]
        return frame_loudness(logs, float(logs.max(initial=-10.0)))

    def stretch_mel(self, first: int, last: int) -> np.ndarray:
        """The ``power_mel`` of samples ``first``-``last`` (``first`` a multiple of
        ``HOP``) on their own, silence around them, as the encoder describes a
        sentence: read from the whole call's frames, where only the few frames
        whose window reaches past either end are computed again."""
        count = 1 + (last - first) // HOP
        if count <= 2 * EDGE_FRAMES + 2:
            return power_mel(self.samples[first:last])
        frames = self.power_mel[first // HOP : first // HOP + count].copy()
        frames[:EDGE_FRAMES] = power_mel(self.samples[first : first + (EDGE_FRAMES + 2) * HOP])[:EDGE_FRAMES]
        tail_from = first + (count - EDGE_FRAMES - 2) * HOP
        frames[-EDGE_FRAMES:] = power_mel(self.samples[tail_from:last])[-EDGE_FRAMES:]
        return frames

    def describe(self, start: float, end: float) -> np.ndarray | None:
        """The voice vector of ``start``-``end`` (seconds), None when shorter than 0.2 s."""
        return self.describe_all([(start, end)])[0]

    def describe_all(self, spans: list[tuple[float, float]]) -> list[np.ndarray | None]:
        """The voice vector of each ``(start, end)``: the speaker encoder's embedding
        when it is installed, else the cepstral vector; None when shorter than 0.2 s."""
        encoder = speaker_encoder()
        if encoder is None:
            return [cepstral_vector(self.mel, start, end) for start, end in spans]
        described, mels, vectors = [], [], []
        for index, (start, end) in enumerate(spans):
            first, last = HOP * round(start * SAMPLE_RATE / HOP), min(len(self.samples), int(end * SAMPLE_RATE))
            vectors.append(self._described.get((first, last)))
            if vectors[-1] is not None or last - first < MIN_DESCRIBED_S * SAMPLE_RATE:
                continue
            described.append((index, (first, last)))
            mels.append(without_noise(self.stretch_mel(first, last), self.noise) * level_gain(self.samples[first:last]))
        for (index, span), vector in zip(described, encoder.embed(mels)):
            vectors[index] = self._described[span] = vector
        return vectors

    @cached_property
    def _described(self) -> dict[tuple[int, int], np.ndarray]:
        """Embeddings already made, by their first and last sample: a sentence whose voice
        was compared for cuts (``split_at_voice_changes``) is not described again."""
        return {}


def sentence_voices(recording: Recording, segments: list[Segment]) -> list[np.ndarray | None]:
    """One voice vector per segment (None for a segment too short to describe)."""
    return recording.describe_all([(s.start, s.end) for s in segments])


# -- the speaker encoder --------------------------------------------------------

SAMPLE_RATE = 16000
MIN_DESCRIBED_S = 0.2
ENCODER_PACKAGE = "resemblyzer"
"""Resemblyzer 0.1.4 (Apache-2.0) ships its trained GE2E speaker encoder
(3-layer LSTM over 40 mel bands, 1.4 M weights) inside its PyPI wheel as
``resemblyzer/pretrained.pt``. Only that file is used, read without torch and
run in numpy here, so the package is installed without its dependencies
(``pip install --no-deps resemblyzer==0.1.4``: torch would be gigabytes)."""
ENCODER_WINDOW = 160
"""Frames (10 ms) the encoder reads at a time: it was trained on 1.6 s pieces."""
ENCODER_HOP = 80
"""Frames between the starts of a sentence's pieces: half a window, as
Resemblyzer takes them. The cost is the LSTM's arithmetic (0.5 GFLOP a
piece): pieces back to back would halve it, but on Whisper's sentences
(bench/roles.py measures) attribution fell from 1.00 to 0.98 on the samples
and 0.97 to 0.80 on roles_heldout x01-x04, where the text barely names the
voices and a slightly different voice vector leaves the naming undecided."""
ENCODER_LOUDNESS_DBFS = -30
"""Quiet speech is raised to this level first (as the encoder's training data was)."""
ENCODER_LOUDEST_DBFS = -21
"""Loud speech is lowered to this level first: a raised voice (an argument, 高声) is
still its speaker's. Fed at its own level, the agent's shouted turns of a mono
argument (tests/data/voice v02, 11 dB over their other turns) were put in the
customer's voice at 0.83-0.99 and the agent's 我也不能变出一个师傅来 was lost.
Between the two, levels are kept: the two sides of a mono mix often differ by a
few dB, which helps tell them apart (at -24, bench/data/roles_heldout x04's
real customer could no longer be told from the agent)."""


def piece_starts(frames: int) -> range:
    """Where the encoder's pieces of a stretch of ``frames`` (at least one window)
    start: every ``ENCODER_HOP``, the last one running past the end (padded with zeros)."""
    return range(0, max(1, frames - ENCODER_WINDOW + ENCODER_HOP), ENCODER_HOP)


HOP = 160
"""Samples between the encoder's mel frames (10 ms)."""
ENCODER_BANDS = 40
"""The encoder's mel bands."""
EDGE_FRAMES = 2
"""Frames at either end of a stretch whose 25 ms window reaches past it (by up to
12.5 ms: the window is centred on its frame)."""
POWER_MEL_BLOCK = 6000
"""Frames computed at a time (a minute): the windows of a whole hour-long call at
once would take half a gigabyte."""


@lru_cache(maxsize=1)
def _encoder_filters() -> tuple[np.ndarray, np.ndarray]:
    from faster_whisper.feature_extractor import FeatureExtractor

    filters = FeatureExtractor.get_mel_filters(SAMPLE_RATE, 400, ENCODER_BANDS).astype(np.float32)
    return filters.T.copy(), np.hanning(401)[:-1].astype(np.float32)


def power_mel(samples: np.ndarray) -> np.ndarray:
    """Power mel frames as the speaker encoder was trained on (librosa's
    melspectrogram: 25 ms Hann windows every 10 ms, 40 Slaney bands), frame k
    centred on sample 160 k, shape (frames, 40)."""
    return _frames(samples, loudness=False)[0]


def _frames(samples: np.ndarray, loudness: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``power_mel`` and, when ``loudness``, Whisper's log10 mel bands of the
    telephone band (``log_mel`` before its floor), both from one spectrogram,
    made a block at a time."""
    filters, window = _encoder_filters()
    padded = np.pad(samples.astype(np.float32), 200)
    count = max(0, 1 + (len(padded) - 400) // HOP)
    mel = np.empty((count, filters.shape[1]), np.float32)
    whisper = _feature_extractor().mel_filters[: _phone_bands()].T.astype(np.float32) if loudness else None
    logs = np.empty((count, whisper.shape[1]), np.float32) if loudness else None
    for first in range(0, count, POWER_MEL_BLOCK):
        starts = HOP * np.arange(first, min(count, first + POWER_MEL_BLOCK))
        spectrum = rfft(padded[np.arange(400)[None, :] + starts[:, None]] * window, axis=1)
        power = spectrum.real**2 + spectrum.imag**2
        mel[first : first + len(starts)] = power @ filters
        if loudness:
            logs[first : first + len(starts)] = np.log10(np.maximum(power @ whisper, 1e-10))
    return mel, logs


def frame_loudness(logs: np.ndarray, loudest: float) -> np.ndarray:
    """Each frame's loudness from its ``_frames`` log bands: Whisper's floor, 80 dB
    under the ``loudest`` band, then the mean over the bands."""
    return np.maximum(logs, loudest - 8.0).mean(axis=1)


NOISE_QUANTILE = 0.1
"""A call's noise floor, band by band, is the power its quietest tenth of frames (the pauses
between turns) reach. The encoder was trained on clean speech; on a noisy line the hiss
under every sentence, the same for both speakers, draws their embeddings together, and a
speaker whose pieces carry more of it than of their voice (short real turns) lands in the
other voice. Measured with bench/role_causes.py on the 32 dev calls (see bench/data/
roles_dev6/README.md): attribution 0.946 -> 0.955, /tmp/speed/calls s01's real customers,
clustered with the agent at 0.84 right, told apart (1.00); at the 20th percentile a true
event was dropped."""
NOISE_KEPT = 0.2
"""A band keeps at least this share of its power when the noise floor is taken off
(spectral subtraction's floor): no band of a sentence is emptied, which the encoder would
hear as a voice of its own."""


class NoiseFloor:
    """A call's noise floor (``NOISE_QUANTILE``) in each of the encoder's mel bands, from a
    histogram of each band's log power over the frames heard: a live stream's is made as it
    is heard, in the same bounded memory however long the call, and equals a recording's."""

    LOWEST, STEP = -14.0, 0.02
    EDGES = np.arange(LOWEST, 6.0, STEP)
    """Histogram bin edges, log10 power (0.2 dB apart: finer than any voice's difference)."""

    def __init__(self):
        self.counts = np.zeros((ENCODER_BANDS, len(self.EDGES) + 1), np.int64)

    def add(self, mel: np.ndarray) -> NoiseFloor:
        """Count ``power_mel`` frames, shape (frames, bands)."""
        if len(mel):
            width = self.counts.shape[1]
            # bin k + 1 holds [EDGES[k], EDGES[k + 1]); 0 and the last, what lies beyond them.
            # In place and in float32 (exact for these bin numbers): a long call has millions.
            bins = np.log10(np.maximum(mel, np.float32(1e-30)))
            bins -= np.float32(self.LOWEST)
            bins /= np.float32(self.STEP)
            np.floor(bins, out=bins)
            np.clip(bins + 1, 0, width - 1, out=bins)
            bins += np.arange(mel.shape[1], dtype=np.float32) * width  # each band its own bins
            self.counts += np.bincount(bins.astype(np.int32).ravel(), minlength=self.counts.size).reshape(
                self.counts.shape
            )
        return self

    def power(self) -> np.ndarray | None:
        """Each band's noise power; None before any frame was heard."""
        total = int(self.counts[0].sum())
        if not total:
            return None
        reached = np.argmax(np.cumsum(self.counts, axis=1) >= NOISE_QUANTILE * total, axis=1)
        return (10.0 ** self.EDGES[np.clip(reached - 1, 0, len(self.EDGES) - 1)]).astype(np.float32)


def without_noise(mel: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """``power_mel`` frames with the call's ``noise`` power taken off (``NOISE_KEPT``)."""
    return mel if noise is None else np.maximum(mel - noise, NOISE_KEPT * mel)


def level_gain(samples: np.ndarray) -> float:
    """What a stretch's power is multiplied by to bring its loudness within
    ``ENCODER_LOUDNESS_DBFS``-``ENCODER_LOUDEST_DBFS``."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)) + 1e-12))
    level = np.clip(20 * np.log10(rms), ENCODER_LOUDNESS_DBFS, ENCODER_LOUDEST_DBFS)
    return float((10 ** (level / 20) / rms) ** 2)


class SpeakerEncoder:
    """The GE2E speaker encoder: audio to a unit 256-d voice embedding, its LSTM run by
    ONNX Runtime (installed with faster-whisper, whose Silero VAD it runs)."""

    def __init__(self, state: dict[str, np.ndarray]):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # The LSTM's products are small and many: threads would only wait for each other.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(encoder_graph(state), options, providers=["CPUExecutionProvider"])

    def embed(self, mels: list[np.ndarray]) -> list[np.ndarray]:
        """The voice embedding of each stretch of speech, given as its ``power_mel``
        frames at the encoder's level (``level_gain``): the mean of its pieces'
        embeddings (the pieces of all stretches go through the encoder ``ENCODER_BATCH`` at a time)."""
        pieces, owner = [], []
        for index, mel in enumerate(mels):
            if mel.shape[0] < ENCODER_WINDOW:
                # A short sentence is repeated to fill the window, not padded with
                # silence, which the encoder would describe as much as the voice.
                mel = np.tile(mel, (int(np.ceil(ENCODER_WINDOW / mel.shape[0])), 1))[:ENCODER_WINDOW]
            starts = piece_starts(mel.shape[0])
            mel = np.pad(mel, ((0, max(0, starts[-1] + ENCODER_WINDOW - mel.shape[0])), (0, 0)))
            pieces += [mel[s : s + ENCODER_WINDOW] for s in starts]
            owner += [index] * len(starts)
        if not pieces:
            return []
        embedded = np.concatenate(
            [self.forward(np.stack(pieces[first : first + ENCODER_BATCH])) for first in range(0, len(pieces), ENCODER_BATCH)]
        )
        owner = np.array(owner)
        means = [embedded[owner == index].mean(axis=0) for index in range(len(mels))]
        return [mean / (np.linalg.norm(mean) + 1e-9) for mean in means]

    def forward(self, mels: np.ndarray) -> np.ndarray:
        """Unit embeddings of a batch of 1.6 s mel pieces (pieces, frames, 40), shape (pieces, 256)."""
        time_major = np.ascontiguousarray(mels.transpose(1, 0, 2), dtype=np.float32)
        embedding = self._session.run(None, {"mels": time_major})[0]
        return embedding / (np.linalg.norm(embedding, axis=1, keepdims=True) + 1e-9)


def encoder_graph(state: dict[str, np.ndarray]) -> bytes:
    """The encoder as an ONNX graph: three LSTM layers, the last one's final state
    through the linear layer and a ReLU (made unit length by ``forward``).

    ONNX Runtime's LSTM took 0.31-0.7 of the time of the same arithmetic in numpy
    steps (a matmul and the gates' ufuncs per step and layer, whose overhead
    dominated on a call's 20-60 pieces), with embeddings equal to 5e-7."""
    from onnx import TensorProto, helper, numpy_helper

    # ONNX orders an LSTM's gates input, output, forget, cell; torch input, forget, cell, output.
    order = np.r_[0:HIDDEN, 3 * HIDDEN : 4 * HIDDEN, HIDDEN : 2 * HIDDEN, 2 * HIDDEN : 3 * HIDDEN]
    weights, nodes, layer_input = [], [], "mels"
    for k in range(3):
        w_in, w_hidden = state[f"lstm.weight_ih_l{k}"][order], state[f"lstm.weight_hh_l{k}"][order]
        bias = np.concatenate([state[f"lstm.bias_ih_l{k}"][order], state[f"lstm.bias_hh_l{k}"][order]])
        weights += [numpy_helper.from_array(v[np.newaxis].astype(np.float32), f"{name}{k}")
                    for name, v in (("W", w_in), ("R", w_hidden), ("B", bias))]  # fmt: skip
        # Outputs: every step's state (frames, 1, pieces, HIDDEN), for the next layer, and the last (1, pieces, HIDDEN).
        steps = f"Y{k}" if k < 2 else ""
        nodes.append(helper.make_node("LSTM", [layer_input, f"W{k}", f"R{k}", f"B{k}"], [steps, f"last{k}"],
                                      hidden_size=HIDDEN))  # fmt: skip
        if steps:
            layer_input = f"X{k + 1}"
            nodes.append(helper.make_node("Squeeze", [steps, "axis1"], [layer_input]))
    weights += [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.ascontiguousarray(state["linear.weight"].T, np.float32), "linear_w"),
        numpy_helper.from_array(state["linear.bias"].astype(np.float32), "linear_b"),
    ]
    nodes += [
        helper.make_node("Squeeze", ["last2", "axis0"], ["last"]),
        helper.make_node("Gemm", ["last", "linear_w", "linear_b"], ["projected"]),
        helper.make_node("Relu", ["projected"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "ge2e_speaker_encoder",
        [helper.make_tensor_value_info("mels", TensorProto.FLOAT, ["frames", "pieces", 40])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["pieces", 256])],
        weights,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


HIDDEN = 256
"""The encoder's LSTM width."""
ENCODER_BATCH = 64
"""Pieces run through the encoder at once. Each layer's gates for every step of
every piece are held at once: 1,000 pieces (a long call's) took 968 MB more at
their peak, against 75 MB in batches of 64, which were no slower (3.2 s against
3.7 s; from about 20 pieces on, a piece costs the same)."""


@lru_cache(maxsize=1)
def speaker_encoder() -> SpeakerEncoder | None:
    """The speaker encoder when Resemblyzer's weights are installed, else None
    (voices are then told apart by their cepstrum)."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)  # finds the package without importing it (and torch)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        return None
    return SpeakerEncoder(read_torch_state(path)["model_state"])


def read_torch_state(path: Path) -> dict:
    """A checkpoint saved by torch.save in its legacy (pre-1.6, not zip) format,
    with its tensors as numpy arrays, read without torch."""
    storages: dict[str, tuple[type, int]] = {}

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name.endswith("Storage"):
                return _TORCH_STORAGES[name]
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"{path}: unexpected {module}.{name} in a weights file")

        def persistent_load(self, pid):
            _, dtype, key, _, size = pid[:5]
            storages[key] = (dtype, size)
            return key

    with open(path, "rb") as f:
        for _ in range(3):  # magic number, protocol version, system info
            pickle.load(f)
        state = Reader(f).load()
        data = {}
        for key in pickle.load(f):
            dtype, size = storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            data[key] = np.frombuffer(f.read(count * np.dtype(dtype).itemsize), dtype=dtype)

    def tensors(value):
        if isinstance(value, dict):
            return {k: tensors(v) for k, v in value.items()}
        if isinstance(value, tuple) and len(value) == 4 and value[0] in data:
            key, offset, size, stride = value
            flat = data[key]
            return np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride]).copy()
        return value

    return tensors(state)


_TORCH_STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32}  # fmt: skip


PAUSE_S = 0.8
"""A silence at least this long inside a Whisper segment cuts it in two. On a
mono call Whisper runs a sentence and the reply after a pause into one
segment (held-out h02: 怎么又问, 3.5 s of silence, 你这是什么态度), and one
segment can only have one speaker. Measured with bench/roles.py."""
QUIET_LEVEL = 0.3
"""A frame is silent when its loudness is below this share of the way from
the call's quiet frames (10th percentile) to its loud ones (90th): the
noise floor of a noisy line is far from digital silence."""


def split_at_pauses(recording: Recording | RunningLoudness, segments: list[Segment]) -> list[Segment]:
    """Cut segments at silences of ``PAUSE_S`` or more between their words.

    The silence is found in the audio (``Recording.loudness``), not in the
    word times: Whisper stretches the first word after a pause back over it
    (你 from 17.3 s to 20.7 s). A word goes to the side of the pause its end is on.
    """
    energy = recording.loudness
    if not len(energy):  # nothing heard yet (a live stream's sentences committed without audio)
        return list(segments)
    floor, peak = np.quantile(energy, 0.1), np.quantile(energy, 0.9)
    quiet = energy < floor + QUIET_LEVEL * (peak - floor)
    out: list[Segment] = []
    for segment in segments:
        pieces = [segment]
        for pause_start, pause_end in _pauses(quiet, segment.start, segment.end):
            last = pieces.pop()
            before = [w for w in last.words if w.end <= pause_start + 0.1]
            after = [w for w in last.words if w.end > pause_start + 0.1]
            if not before or not after:
                pieces.append(last)
                continue
            after[0] = replace(after[0], start=max(after[0].start, pause_end))
            pieces += [_piece(last, before), _piece(last, after)]
        out += pieces
    return out


VOICE_CHANGE_GAP_S = 0.25
"""A gap between two words at least this long inside a Whisper segment may be a change of
speaker (``split_at_voice_changes``). On a mono call Whisper runs a reply given after a
short pause (0.3-0.6 s) into the sentence before it, the pause too short for ``PAUSE_S``
(which cannot be shorter: one speaker pauses as long between clauses). On the dev sets'
160 word gaps of 0.2 s and more with a second of speech either side, the 8 where the
speaker changed were 0.34-0.70 s long: the gap's length alone says nothing more."""
VOICE_SIDE_S = 1.0
"""Each side of a cut must hold at least this much speech: the voice of less is described
from a syllable or two and lands anywhere."""
FEWEST_OTHERS = 3
"""The call's other sentences with a voice vector needed to compare two sides against."""


def split_at_voice_changes(recording: Recording, segments: list[Segment]) -> list[Segment]:
    """Cut segments where the voice changes at a gap between words (``VOICE_CHANGE_GAP_S``).

    One segment, two voices: the customer's words and the agent's reply after a short
    pause are often one Whisper segment, which can have only one speaker, so one side's
    words go to the other (the agent's 这事不归我管 to the customer and lost; the customer's
    我哪知道 to the agent and deducted). A gap is a change when each side holds
    ``VOICE_SIDE_S`` of speech and the two sides sound like different sentences of the
    call: their similarities to the call's other sentences are negatively correlated
    (one side is like the sentences the other is unlike). The two sides' own cosine does
    not tell: the line and the noise they share draw them together, more the shorter they
    are, and a TTS voice against itself pitch-shifted is as alike as one speaker's halves.
    On the dev sets' 160 word gaps (/tmp/roles5 sets, roles_dev6, roles_dev7, tests/data/
    roles) the correlation was -1.00 to -0.27 at 6 of the 8 changes and at 2 gaps whose
    sides each held one speaker's words mostly, and +0.03 to +1.00 at every gap of one
    speaker; the own cosine overlapped (changes 0.58-0.88, one speaker 0.65 and up). The
    2 changes missed are in a sentence of three turns (agent, customer, agent), whose every
    cut leaves both voices on one side. The least correlated gap is cut first, then each
    side is looked at again. Only with the speaker encoder: the cepstrum follows what is
    said as much as who says it.

    Each side must also find a sentence elsewhere in the call that sounds more like it
    than its other side does. A voice heard nowhere else in the call (tests/data/roles n02:
    three real customers, one of them in one turn) is unlike every other sentence alike, and
    its halves' correlation is chance (-0.48 there); on the dev sets every change cut passed
    this (by 0.076-0.236)."""
    if speaker_encoder() is None:
        return list(segments)
    vectors = sentence_voices(recording, segments)
    out: list[Segment] = []
    for index, segment in enumerate(segments):
        others = [v for k, v in enumerate(vectors) if k != index and v is not None]
        out += _cut_at_voice_change(recording, segment, np.array(others))
    return out


def _cut_at_voice_change(recording: Recording, segment: Segment, others: np.ndarray) -> list[Segment]:
    words = segment.words
    if len(others) < FEWEST_OTHERS:
        return [segment]
    # The segment's clauses, between its gaps: each is described once, and a side of a gap
    # is the mean of its clauses' voices, weighted by their length (the encoder's own voice
    # of a stretch is the mean of its pieces'), not described again for every gap.
    gaps = [i for i in range(len(words) - 1) if words[i + 1].start - words[i].end >= VOICE_CHANGE_GAP_S]
    if not any(words[i].end - words[0].start >= VOICE_SIDE_S <= words[-1].end - words[i + 1].start for i in gaps):
        return [segment]
    bounds = list(zip([0] + [i + 1 for i in gaps], [i + 1 for i in gaps] + [len(words)]))
    clauses = recording.describe_all([(words[a].start, words[b - 1].end) for a, b in bounds])
    lengths = [words[b - 1].end - words[a].start for a, b in bounds]

    def voice(first: int, last: int) -> np.ndarray | None:
        heard = [(v, n) for v, n in zip(clauses[first:last], lengths[first:last]) if v is not None]
        if not heard:
            return None
        mean = sum(n * v for v, n in heard)
        return mean / np.linalg.norm(mean)

    best, lowest = None, 0.0
    for k, i in enumerate(gaps):
        if words[i].end - words[0].start < VOICE_SIDE_S or words[-1].end - words[i + 1].start < VOICE_SIDE_S:
            continue
        left, right = voice(0, k + 1), voice(k + 1, len(bounds))
        if left is None or right is None:
            continue
        to_left, to_right = others @ left, others @ right
        # A voice the call holds no other sentence of is unlike all of them alike: its two
        # sides' similarities are then flat and correlated by chance, and its other side
        # is still the nearest voice each has.
        nearer_elsewhere = min(to_left.max(), to_right.max()) > float(left @ right)
        correlation = float(np.corrcoef(to_left, to_right)[0, 1])
        if nearer_elsewhere and correlation < lowest:
            best, lowest = i, correlation
    if best is None:
        return [segment]
    before, after = _piece(segment, words[: best + 1]), _piece(segment, words[best + 1 :])
    return _cut_at_voice_change(recording, before, others) + _cut_at_voice_change(recording, after, others)


def sentences_of(recording: Recording, segments: list[Segment]) -> list[Segment]:
    """A mono call's segments as sentences of one speaker each: cut at silences
    (``split_at_pauses``), then where the voice changes (``split_at_voice_changes``)."""
    return split_at_voice_changes(recording, split_at_pauses(recording, segments))


def _pauses(quiet: np.ndarray, start: float, end: float) -> list[tuple[float, float]]:
    """Silent stretches of at least ``PAUSE_S`` strictly inside ``start``-``end``, in order."""
    first, last = int(start * FRAMES_PER_SECOND), min(len(quiet), int(end * FRAMES_PER_SECOND))
    found, run_start = [], None
    for frame in range(first, last):
        if quiet[frame] and run_start is None:
            run_start = frame
        elif not quiet[frame] and run_start is not None:
            if run_start > first and frame - run_start >= PAUSE_S * FRAMES_PER_SECOND:
                found.append((run_start / FRAMES_PER_SECOND, frame / FRAMES_PER_SECOND))
            run_start = None
    return found


def _piece(segment: Segment, words: list) -> Segment:
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text="".join(w.text for w in words).strip(),
        speaker=segment.speaker,
        words=words,
    )


class RunningLoudness:
    """``Recording.loudness`` of a live stream, made as far as it has been heard,
    so that its sentences can be cut at pauses as a recording's are
    (``split_at_pauses``), and its ``NoiseFloor`` from the same frames. A float per
    10 ms is kept, not the audio."""

    def __init__(self):
        self.loudness = np.empty(0, np.float32)
        self._loudest = -10.0
        self._noise = NoiseFloor()

    @property
    def noise(self) -> np.ndarray | None:
        """The stream's noise power per encoder band so far (``Recording.noise``)."""
        return self._noise.power()

    def extend(self, audio: RecentAudio, until_s: float) -> None:
        """Add the frames up to ``until_s`` (call seconds) from the stream's ``audio``.
        Frames whose audio has left it (a long stretch without a sentence) count as silent."""
        first, last = len(self.loudness), int(until_s * FRAMES_PER_SECOND)
        if last <= first:
            return
        kept_from = max(first, int(np.ceil(audio.kept_from_s() * FRAMES_PER_SECOND)))
        samples = audio.between(kept_from / FRAMES_PER_SECOND, last / FRAMES_PER_SECOND)
        if samples is not None:
            mel, logs = _frames(samples, loudness=True)
            self._noise.add(mel[: last - kept_from])
            logs = logs[: last - kept_from]
        else:
            logs = np.empty((0, 1))
        if len(logs):
            self._loudest = max(self._loudest, float(logs.max()))
        silent = np.full(kept_from - first, self._loudest - 8.0, np.float32)
        self.loudness = np.concatenate([self.loudness, silent, frame_loudness(logs, self._loudest)])


class RecentAudio:
    """The last ``window_s`` seconds of a live mono stream (16 kHz), so a
    sentence can be described once it is transcribed; memory stays that of the
    window however long the call runs."""

    def __init__(self, window_s: float, sample_rate: int = 16000):
        self.sample_rate = sample_rate
        self._ring = np.zeros(int(window_s * sample_rate), np.float32)
        self._written = 0  # samples fed since the start of the call
        self._lock = threading.Lock()

    def feed(self, samples: np.ndarray) -> None:
        fed = len(samples)
        samples = samples[-len(self._ring) :]
        with self._lock:
            at = (self._written + fed - len(samples)) % len(self._ring)
            head = min(len(samples), len(self._ring) - at)
            self._ring[at : at + head] = samples[:head]
            self._ring[: len(samples) - head] = samples[head:]
            self._written += fed

    def kept_from_s(self) -> float:
        """The earliest call second still kept."""
        with self._lock:
            return max(0, self._written - len(self._ring)) / self.sample_rate

    def between(self, start: float, end: float) -> np.ndarray | None:
        """The audio from ``start`` to ``end`` (call seconds), None once it has left the window."""
        with self._lock:
            first, last = int(start * self.sample_rate), min(int(end * self.sample_rate), self._written)
            if first < self._written - len(self._ring) or last <= first:
                return None
            index = np.arange(first, last) % len(self._ring)
            return self._ring[index].copy()

    def describe(self, start: float, end: float, noise: np.ndarray | None) -> np.ndarray | None:
        """The voice vector of ``start``-``end``, None when too short or no longer kept;
        ``noise`` is the stream's noise floor (``RunningLoudness.noise``; None, before
        any frame was heard: nothing is taken off)."""
        samples = self.between(start, end)
        if samples is None:
            return None
        noise = np.zeros(ENCODER_BANDS, np.float32) if noise is None else noise
        return Recording(samples, noise).describe(0.0, len(samples) / self.sample_rate)
