"""Stage 1: decode every capture to float32 at full scale ±1.0 and record per-side statistics.

The level is kept as recorded by default, because how hard the input hits the amp is part of its sound.
`peak` mode (opt-in) applies one gain per side so its peak reaches `peak_target`, and records that gain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ampsim.core.audio import atomic_dir, read_audio, write_wav
from ampsim.core.errors import AmpsimError
from ampsim.core.params import NormalizeParams
from ampsim.core.stats import side_stats
from ampsim.data.captures import INPUT_FILE, OUTPUT_FILE, Capture, find_captures

STATS_FILE = "captures.json"
MODES = ("fullscale", "peak")


def pick_channel(samples: np.ndarray, capture: Capture, role: str) -> tuple[np.ndarray, int | None]:
    """Keep the declared channel of a multi-channel file; undeclared ones stay as they are for the checks."""
    channel = capture.channels.get(role)
    if channel is None:
        return samples, None
    if channel >= samples.shape[1]:
        raise AmpsimError(
            f"capture.yaml asks for {role} channel {channel} but the file has {samples.shape[1]}",
            path=capture.meta_path,
            fix=f"use a channel index from 0 to {samples.shape[1] - 1}",
        )
    return samples[:, channel : channel + 1], channel


def normalize_side(samples: np.ndarray, params: NormalizeParams) -> tuple[np.ndarray, float]:
    if params.mode == "fullscale":
        return samples, 1.0
    finite = samples[np.isfinite(samples)]
    peak = float(np.max(np.abs(finite))) if finite.size else 0.0
    gain = params.peak_target / peak if peak > 0 else 1.0
    return (samples * gain).astype(np.float32), gain


def normalize_captures(captures_dir: Path, out_dir: Path, params: NormalizeParams) -> dict:
    """Write `out_dir/<name>/{input,output}.wav` (float32) and `out_dir/captures.json`; all or nothing."""
    if params.mode not in MODES:
        raise AmpsimError(f"normalize.mode {params.mode!r} is not one of {list(MODES)}", path="params.yaml",
                          fix="set normalize.mode to fullscale (keep the recorded level) or peak")
    table: dict[str, dict] = {}
    with atomic_dir(Path(out_dir)) as scratch:
        for capture in find_captures(Path(captures_dir)):
            # The interface levels ride along, so editing them in capture.yaml reruns the stages that use them.
            entry: dict = {"device": capture.device, "split": capture.split, "knobs": capture.knobs,
                           "source": str(capture.folder), "input_level_dbu": capture.input_level_dbu,
                           "output_level_dbu": capture.output_level_dbu, "latency_samples": capture.latency_samples}
            sides = (("input", INPUT_FILE, capture.input_path), ("output", OUTPUT_FILE, capture.output_path))
            for role, filename, source in sides:  # any format in, float32 WAV out under the fixed name
                decoded = read_audio(source)
                samples, channel = pick_channel(decoded.samples, capture, role)
                stats = side_stats(samples, decoded.sample_rate, params.clip_level)
                samples, gain = normalize_side(samples, params)
                write_wav(scratch / capture.name / filename, samples, decoded.sample_rate)
                entry[role] = {**stats, "source_format": decoded.format, "source_subtype": decoded.subtype,
                               "source_channels": decoded.channels, "channel": channel, "gain": gain}
            table[capture.name] = entry
        (scratch / STATS_FILE).write_text(json.dumps({"mode": params.mode, "captures": table}, indent=2))
    return table
