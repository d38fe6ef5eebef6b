"""Typed access to params.yaml, the single source of every knob.

Each stage reads its own section into a dataclass without defaults, so a knob missing from params.yaml
is an error that names the key, never a silent fallback to a value hidden in code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ampsim.errors import AmpsimError

T = TypeVar("T")


@dataclass(frozen=True)
class AudioParams:
    sample_rate: int


@dataclass(frozen=True)
class NormalizeParams:
    mode: str  # "fullscale" keeps the recorded level; "peak" applies one gain per side
    peak_target: float
    clip_level: float  # a sample at or above this magnitude counts as clipped


@dataclass(frozen=True)
class ValidateParams:
    max_delay_ms: float
    max_length_mismatch_ms: float
    min_seconds: float
    min_rms_dbfs: float
    max_output_clipped_fraction: float
    val_fraction: float
    align_seconds: float  # the delay is measured on this opening stretch of each capture


@dataclass(frozen=True)
class DemoParams:
    seconds: float
    seed: int
    gain: float
    latency_ms: float


def load_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AmpsimError("params file not found", path=path, fix="run from the project root or pass --params")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise AmpsimError("params file is not a YAML mapping", path=path, fix="restore params.yaml from git")
    return params


def section(params: dict[str, Any], name: str, cls: type[T], source: Path | str = "params.yaml") -> T:
    """Build the dataclass `cls` from `params[name]`, naming any missing or unknown key."""
    values = params.get(name)
    if not isinstance(values, dict):
        raise AmpsimError(f"section `{name}` is missing", path=source, fix=f"add a `{name}:` section")
    expected = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(expected - values.keys())
    unknown = sorted(values.keys() - expected)
    if missing or unknown:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"`{name}.{k}`" for k in missing))
        if unknown:
            parts.append("unknown " + ", ".join(f"`{name}.{k}`" for k in unknown))
        raise AmpsimError("; ".join(parts), path=source, fix=f"make `{name}:` list exactly {sorted(expected)}")
    return cls(**values)
