"""Per-side statistics of a decoded recording: what the checks judge and what the user reads in the report."""

from __future__ import annotations

import numpy as np


def side_stats(samples: np.ndarray, sample_rate: int, clip_level: float) -> dict[str, float | int]:
    """Statistics of one side, `samples` shaped (frames, channels); levels ignore non-finite samples."""
    finite = np.isfinite(samples)
    clean = np.where(finite, samples, 0.0).astype(np.float64)
    frames = samples.shape[0]
    rms = float(np.sqrt(np.mean(clean**2))) if frames else 0.0
    peak = float(np.max(np.abs(clean))) if frames else 0.0
    return {
        "sample_rate": int(sample_rate),
        "channels": int(samples.shape[1]),
        "frames": int(frames),
        "seconds": frames / sample_rate,
        "peak": peak,
        "peak_dbfs": _dbfs(peak),
        "rms": rms,
        "rms_dbfs": _dbfs(rms),
        "dc": float(np.mean(clean)) if frames else 0.0,
        "clipped_fraction": float(np.mean(np.abs(clean) >= clip_level)) if frames else 0.0,
        "nan_count": int(np.count_nonzero(np.isnan(samples))),
        "inf_count": int(np.count_nonzero(np.isinf(samples))),
    }


def _dbfs(level: float) -> float:
    return float(20 * np.log10(level)) if level > 0 else -200.0
