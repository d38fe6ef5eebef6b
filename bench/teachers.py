"""The teachers: NAM models of real gear (../shared/teachers, GPL-3.0, read at test or benchmark time and never
shipped). Audio played through one stands in for re-amping that gear. Loaded and played by NAM's own code
(neural-amp-modeler, a test dependency)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TEACHERS = Path(__file__).resolve().parents[2] / "shared" / "teachers"
CHUNK = 1 << 18  # samples per pass (~5 s): the activations stay small whatever the length


def load_teacher(path: Path):
    """NAM's own loader; the 0.5.0 files' layer arrays get the `head` object NAM 0.13 wants (their README)."""
    from nam.models import init_from_nam

    document = json.loads(Path(path).read_text())
    for array in document["config"]["layers"]:
        array.setdefault("head", {"out_channels": array["head_size"], "kernel_size": 1, "bias": array["head_bias"]})
    net = init_from_nam(document)
    net.eval()
    return net


def play(net, x: np.ndarray) -> np.ndarray:
    """The teacher's output for x, as NAM renders it with pad_start=True (zeros before x), a chunk at a time:
    each chunk is given the receptive field - 1 samples before it, so the result is the one-pass render's."""
    import torch

    context = net.receptive_field - 1
    padded = np.concatenate([np.zeros(context, np.float32), np.asarray(x, np.float32)])
    with torch.no_grad():
        chunks = [net(torch.from_numpy(padded[start : start + CHUNK + context]), pad_start=False).numpy()
                  for start in range(0, len(x), CHUNK)]
    return np.concatenate(chunks).astype(np.float64)


def blip_onset(net) -> int:
    """Where the teacher's own answer to a small impulse starts (NAM's blip method, on the model itself): the
    latency its capture kept, which any capture made with it adds to."""
    silence = np.zeros(8192, np.float32)
    blip = silence.copy()
    blip[4096] = 0.01
    answer = np.abs(play(net, blip) - play(net, silence))[4096:]
    return int(np.argmax(answer >= 0.05 * answer.max()))
