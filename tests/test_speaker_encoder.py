"""The speaker encoder (its ONNX graph) computes the LSTM it was trained as (torch's equations, gate order i, f, g, o)."""

import numpy as np
import pytest

from monitor.voices import HIDDEN, SpeakerEncoder


def _torch_lstm_embedding(state: dict, mels: np.ndarray) -> np.ndarray:
    """Resemblyzer's forward as torch defines it, step by step in float64: 3 LSTM layers,
    the last hidden state through the linear layer, ReLU, unit length."""

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    x = mels.astype(np.float64)
    for k in range(3):
        w_ih, w_hh = state[f"lstm.weight_ih_l{k}"], state[f"lstm.weight_hh_l{k}"]
        bias = state[f"lstm.bias_ih_l{k}"] + state[f"lstm.bias_hh_l{k}"]
        h = np.zeros((x.shape[0], HIDDEN))
        c = np.zeros_like(h)
        outputs = []
        for t in range(x.shape[1]):
            gates = x[:, t] @ w_ih.T + h @ w_hh.T + bias
            i, f, g, o = np.split(gates, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outputs.append(h)
        x = np.stack(outputs, axis=1)
    embedding = np.maximum(0.0, h @ state["linear.weight"].T + state["linear.bias"])
    return embedding / np.linalg.norm(embedding, axis=1, keepdims=True)


def test_forward_is_the_torch_lstm():
    rng = np.random.default_rng(7)
    # Random small weights (the real ones need Resemblyzer's wheel), 40 mel bands in, 256 out.
    state = {}
    for k in range(3):
        inputs = 40 if k == 0 else HIDDEN
        state[f"lstm.weight_ih_l{k}"] = rng.normal(0, 0.1, (4 * HIDDEN, inputs)).astype(np.float32)
        state[f"lstm.weight_hh_l{k}"] = rng.normal(0, 0.1, (4 * HIDDEN, HIDDEN)).astype(np.float32)
        state[f"lstm.bias_ih_l{k}"] = rng.normal(0, 0.1, 4 * HIDDEN).astype(np.float32)
        state[f"lstm.bias_hh_l{k}"] = rng.normal(0, 0.1, 4 * HIDDEN).astype(np.float32)
    state["linear.weight"] = rng.normal(0, 0.1, (256, HIDDEN)).astype(np.float32)
    state["linear.bias"] = rng.normal(0, 0.1, 256).astype(np.float32)
    mels = rng.random((5, 30, 40)).astype(np.float32)

    ours = SpeakerEncoder(state).forward(mels)

    assert ours.shape == (5, 256)
    assert ours == pytest.approx(_torch_lstm_embedding(state, mels), abs=1e-4)
