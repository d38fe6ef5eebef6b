"""Pair checks: a Great Expectations suite over the per-capture statistics table.

Each expectation carries, in its `meta`, what it checks in words, which file of the capture it concerns and
the fix, so a failure tells the user which capture, which check, the measured value and what to do.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ampsim.core.params import ValidateParams

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Failure:
    capture: str
    file: str
    check: str
    measured: object
    expected: str
    fix: str

    def sentence(self) -> str:
        return (f"capture '{self.capture}' ({self.file}): {self.check} failed: measured {self.measured}, "
                f"expected {self.expected}. Fix: {self.fix}")


def _suite_spec(sample_rate: int, p: ValidateParams, rate_source: str = "") -> list[tuple[str, dict, dict]]:
    """(expectation class name, kwargs, meta) for each check. A device trains at its captures' own rate,
    `sample_rate`, that of capture `rate_source`'s DI: every side of every capture must share it."""
    rate_expected = f"{sample_rate} Hz, the rate of capture '{rate_source}' (input.wav)"
    rate_fix = (f"the captures of one device share one rate: export both files at {sample_rate} Hz, "
                "or add this capture as a device of its own (`ampsim add ... --device NAME`)")
    mono_fix = ("export it as mono, or say which channel holds the signal in capture.yaml, "
                "e.g. `channels: {input: 0, output: 1}`")
    return [
        ("ExpectColumnValuesToBeInSet", {"column": "input_sample_rate", "value_set": [sample_rate]},
         {"check": "input sample rate", "file": "input.wav", "expected": rate_expected, "fix": rate_fix}),
        ("ExpectColumnValuesToBeInSet", {"column": "output_sample_rate", "value_set": [sample_rate]},
         {"check": "output sample rate", "file": "output.wav", "expected": rate_expected, "fix": rate_fix}),
        ("ExpectColumnValuesToBeInSet", {"column": "input_channels", "value_set": [1]},
         {"check": "input is mono", "file": "input.wav", "expected": "1 channel", "fix": mono_fix}),
        ("ExpectColumnValuesToBeInSet", {"column": "output_channels", "value_set": [1]},
         {"check": "output is mono", "file": "output.wav", "expected": "1 channel", "fix": mono_fix}),
        ("ExpectColumnValuesToBeBetween", {"column": "input_nonfinite", "min_value": 0, "max_value": 0},
         {"check": "input has no NaN/Inf samples", "file": "input.wav", "expected": "0 non-finite samples",
          "fix": "the file is corrupt or was written by a buggy plug-in: export it again as PCM 24-bit"}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_nonfinite", "min_value": 0, "max_value": 0},
         {"check": "output has no NaN/Inf samples", "file": "output.wav", "expected": "0 non-finite samples",
          "fix": "the file is corrupt or was written by a buggy plug-in: export it again as PCM 24-bit"}),
        ("ExpectColumnValuesToBeBetween", {"column": "input_rms_dbfs", "min_value": p.min_rms_dbfs},
         {"check": "input is not silent", "file": "input.wav", "expected": f">= {p.min_rms_dbfs} dBFS RMS",
          "fix": "the DI track is silent or nearly: check the DI cable/channel and record the dry signal again"}),
        ("ExpectColumnValuesToBeBetween", {"column": "output_rms_dbfs", "min_value": p.min_rms_dbfs},
         {"check": "output is not silent", "file": "output.wav", "expected": f">= {p.min_rms_dbfs} dBFS RMS",
          "fix": "the amp track is silent or nearly: check the amp/mic/re-amp routing and record it again"}),
        ("ExpectColumnValuesToBeBetween",
         {"column": "output_clipped_fraction", "max_value": p.max_output_clipped_fraction},
         {"check": "output is not clipped", "file": "output.wav",
          "expected": f"<= {p.max_output_clipped_fraction:.2%} of samples at full scale",
          "fix": "lower the interface's input gain (or the amp's output) so the wet signal peaks below -1 dBFS, "
                 "and record again"}),
        ("ExpectColumnValuesToBeBetween",
         {"column": "delay_ms", "min_value": -p.max_delay_ms, "max_value": p.max_delay_ms},
         {"check": "delay between input and output", "file": "output.wav", "expected": f"within ±{p.max_delay_ms} ms",
          "fix": "the two files do not start together: trim them to a common start in your DAW, "
                 "or raise validate.max_delay_ms if your rig really has that much latency"}),
        ("ExpectColumnValuesToBeBetween",
         {"column": "length_mismatch_ms", "min_value": 0, "max_value": p.max_length_mismatch_ms},
         {"check": "lengths equal after alignment", "file": "input.wav and output.wav",
          "expected": f"at most {p.max_length_mismatch_ms} ms apart",
          "fix": "the two files are not the same take: export both from the same start to the same end"}),
        ("ExpectColumnValuesToBeBetween", {"column": "aligned_seconds", "min_value": p.min_seconds},
         {"check": "capture long enough", "file": "input.wav and output.wav", "expected": f">= {p.min_seconds} s",
          "fix": "record a longer performance (minutes of playing make better models)"}),
        # None (no passage played twice) is not judged: the check applies only where the DI repeats itself
        ("ExpectColumnValuesToBeBetween", {"column": "replicate_self_esr", "max_value": p.replicate_max_esr},
         {"check": "replicate (the same passage played twice sounds the same)", "file": "output.wav",
          "expected": f"a self-ESR <= {p.replicate_max_esr} between the two wet takes",
          "fix": "the gear did not answer the same DI the same way twice. Likely causes: noise (hum, a ground "
                 "loop, a noisy pedal or gate), drift (an amp still warming up, a knob moved while re-amping), "
                 "or time-varying gear (modulation such as chorus, flanger, phaser, tremolo, or delay/reverb "
                 "tails): switch modulation and time effects off, let the amp warm up, and record again"}),
    ]


def check_names(sample_rate: int, params: ValidateParams) -> list[str]:
    """The name of every check the suite runs, in order."""
    return [meta["check"] for _, _, meta in _suite_spec(sample_rate, params)]


def run_suite(table: pd.DataFrame, sample_rate: int, rate_source: str, params: ValidateParams,
              docs_dir: Path) -> tuple[list[Failure], dict]:
    """Validate `table` (one row per capture) of a device at `sample_rate` (see `_suite_spec`); build Data Docs
    HTML into `docs_dir`. Returns failures and the JSON-able GX result."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="ampsim-gx-") as root:
        context = gx.get_context(mode="file", project_root_dir=root)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("captures")
        asset = source.add_dataframe_asset("capture_stats")
        batch = asset.add_batch_definition_whole_dataframe("all_captures")
        suite = context.suites.add(gx.ExpectationSuite(name="capture_pairs"))
        for class_name, kwargs, meta in _suite_spec(sample_rate, params, rate_source):
            suite.add_expectation(getattr(gx.expectations, class_name)(**kwargs, meta=meta))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name="capture_pairs", data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name="capture_pairs", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE"}))
        result = checkpoint.run(batch_parameters={"dataframe": table})
        validation = next(iter(result.run_results.values()))
        site = Path(root) / "gx" / "uncommitted" / "data_docs" / "local_site"
        if site.exists():
            shutil.copytree(site, docs_dir, dirs_exist_ok=True)

    failures = []
    for outcome in validation.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        meta = config.meta
        column = config.kwargs["column"]
        for index in outcome.result.get("unexpected_index_list") or []:
            row = table.loc[index]
            failures.append(Failure(capture=row["capture"], file=f"{row['source']}/{meta['file']}",
                                    check=meta["check"], measured=_show(column, row[column]),
                                    expected=meta["expected"], fix=meta["fix"]))
    return failures, validation.to_json_dict()


def _show(column: str, value: object) -> str:
    units = {"sample_rate": " Hz", "_channels": " channels", "_ms": " ms", "dbfs": " dBFS", "seconds": " s"}
    if column.endswith("fraction"):
        return f"{float(value):.2%} of samples"
    if column.endswith("_esr"):
        return f"self-ESR {float(value):.4f}"
    for suffix, unit in units.items():
        if column.endswith(suffix):
            return f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    return str(value)
