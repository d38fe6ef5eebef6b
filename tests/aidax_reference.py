"""An independent reader of AIDA-X model files, written from the format's description (RTNeural's Keras
JSON as AIDA-X loads it), not from ampsim's exporter: a plain numpy LSTM and dense layer.

- `in_shape` [null, null, I]; `in_skip` 0/1 adds the first input channel to the output.
- optional `in_gain` / `out_gain`, in dB: the plugin scales the audio channel by in_gain before the model and
  the output (input skip included) by out_gain after it; absent means 0 dB.
- `layers`: {"type": "lstm", "shape": [null, null, H], "weights": [W (I x 4H), U (H x 4H), b (4H)]} with the
  gates in the order input, forget, cell candidate, output; then {"type": "dense", "weights": [K (H x 1),
  b (1)], "activation": ""}. The plugin starts from a zero state.

It steps through time in Python, as a plugin does sample by sample: a reference for short test clips, not
a renderer.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def run(document: dict, x: np.ndarray) -> np.ndarray:
    """Output of the model in `document` for input `x` of shape (T,) or (T, I), from a zero state."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    x = x.copy()
    x[:, 0] *= 10 ** (float(document.get("in_gain", 0.0)) / 20)
    inputs = int(document["in_shape"][-1])
    assert x.shape[1] == inputs, f"model takes {inputs} input channel(s), got {x.shape[1]}"
    lstm, dense = document["layers"]
    assert lstm["type"] == "lstm" and dense["type"] == "dense" and dense.get("activation", "") == ""
    hidden = int(lstm["shape"][-1])
    w, u, b = (np.asarray(a, np.float64) for a in lstm["weights"])
    assert w.shape == (inputs, 4 * hidden) and u.shape == (hidden, 4 * hidden) and b.shape == (4 * hidden,)
    k, c0 = (np.asarray(a, np.float64) for a in dense["weights"])
    h, c = np.zeros(hidden), np.zeros(hidden)
    features = np.empty((len(x), hidden))
    drive = x @ w + b  # the input's share of every gate, all time steps at once
    for t in range(len(x)):
        z = drive[t] + h @ u
        i, f, g, o = z[:hidden], z[hidden : 2 * hidden], z[2 * hidden : 3 * hidden], z[3 * hidden :]
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        features[t] = h
    y = features @ k[:, 0] + c0[0]
    if int(document.get("in_skip", 0)):
        y = y + x[:, 0]
    return y * 10 ** (float(document.get("out_gain", 0.0)) / 20)
