"""The latency a device's captures are compensated by: measured on each capture, settled once per device.

One rig, one latency: the settings of one device are usually recorded in one session through one interface,
so their latency is one figure. Measured per capture, it wanders with the gear's sound (a high-gain setting
blurs the onset), and a model conditioned on a knob learns that wander as if it were the knob's sound. So the
device takes the smallest measured latency of its captures (never more than any of them needs), and warns
when they disagree. A capture.yaml `latency_samples` states a capture's own figure instead (`ampsim add
--latency N`): for a rig whose latency is known from a loop-back, or captures recorded through different rigs.

A wet side cannot answer before the DI is played. A measured onset well ahead of the DI is therefore an
error, with the likely cause: swapped files, or a DI recorded later than it reached the gear.
"""

from __future__ import annotations

import numpy as np

from ampsim.core.params import ValidateParams
from ampsim.data.alignment import blip_onset, estimate_delay, find_onset, prediction_esr, ringing_ms
from ampsim.data.checks import Failure
from ampsim.data.signal import locate_signal

MEASURE_COLUMNS = ("onset_samples", "correlation_peak_samples", "onset_clarity", "onset_method", "swap_likely",
                   "ringing_ms", "signal_offset_samples", "signal_gain", "signal_sections")
SWAP_SECONDS = 3.0  # the direction test's stretch of the opening (a least-squares fit: seconds are plenty)
SWAP_RATIO = 0.9  # one direction predicts this much better (ESR) before the test names a cause


def search_samples(sample_rate: int, params: ValidateParams) -> int:
    return int(params.max_delay_ms * sample_rate / 1000)


def measure(dry: np.ndarray, wet: np.ndarray, sample_rate: int, params: ValidateParams) -> dict:
    """The onset and the correlation peak on the capture's opening `align_seconds` (capture signals open
    with sweeps and noise, which excite every band), searched beyond the bound so that a pair too far apart
    is reported as such."""
    opening = int(params.align_seconds * sample_rate)
    search = min(opening // 2, max(sample_rate, 4 * search_samples(sample_rate, params)))
    located = locate_signal(dry, sample_rate)
    found = blip_onset(wet, located.blips, sample_rate, search_samples(sample_rate, params)) \
        if located is not None else None
    method = "markers"
    if found is None or found.clarity < params.latency_min_clarity:  # no blips, or the gear ate them (a gate)
        found, method = find_onset(dry[:opening], wet[:opening], search, params.latency_threshold), "impulse response"
    swap = None
    if found.onset - params.latency_margin_samples < -params.latency_max_lead_samples:
        stretch = int(SWAP_SECONDS * sample_rate)
        forward = prediction_esr(dry[:stretch], wet[:stretch], found.onset)
        backward = prediction_esr(wet[:stretch], dry[:stretch], -found.onset)
        swap = "swapped" if backward < SWAP_RATIO * forward else "late" if forward < SWAP_RATIO * backward else None
    return {"onset_samples": found.onset,
            "correlation_peak_samples": estimate_delay(dry[:opening], wet[:opening], search),
            "onset_clarity": found.clarity, "onset_method": method, "swap_likely": swap,
            "ringing_ms": ringing_ms(dry[:opening], wet[:opening], found.onset, sample_rate),
            "signal_offset_samples": None if located is None else located.offset,
            "signal_gain": None if located is None else located.gain,
            "signal_sections": None if located is None else located.sections}


def settle_latency(rows: list[dict], params: ValidateParams) -> tuple[list[Failure], list[str]]:
    """Set each row's `delay_samples` (the latency compensated) and `latency_source`; return the failures
    (no onset found, the wet side leads, an override out of range) and the warnings, in words."""
    failures, warnings = [], []
    measured = {}
    for row in rows:
        if row["latency_override"] is not None:
            failures += _override_failures(row, params)
        elif row["onset_samples"] is not None:
            problem = _measurement_failure(row, params)
            if problem:
                failures.append(problem)
            else:
                measured[row["capture"]] = max(0, row["onset_samples"] - params.latency_margin_samples)
    device = min(measured.values()) if measured else None
    for row in rows:
        if row["latency_override"] is not None:
            row["delay_samples"], row["latency_source"] = int(row["latency_override"]), "capture.yaml"
        elif row["capture"] in measured:
            row["delay_samples"] = device
            row["latency_source"] = "measured" if len(measured) == 1 else "device (smallest of its captures)"
        else:
            row["delay_samples"], row["latency_source"] = (0 if row["onset_samples"] is not None else None), None
        if row["latency_source"] and row["onset_samples"] is not None and \
                row["correlation_peak_samples"] - row["onset_samples"] > params.latency_disagree_samples:
            warnings.append(_dispersive_warning(row))
        if row["latency_source"] and row["ringing_ms"] is not None and row["ringing_ms"] >= params.cabinet_ringing_ms:
            warnings.append(_cabinet_warning(row))
    if measured and max(measured.values()) - device > params.latency_disagree_samples:
        spread = ", ".join(f"{name} {value}" for name, value in measured.items())
        warnings.append(
            f"the captures of this device measured different latencies ({spread} samples): one rig has one "
            f"latency, so all are compensated by the smallest, {device}, which no capture needs less of. The "
            "settings with the larger figures probably blur the onset (more gain or a darker tone). If they were "
            "recorded through different interfaces or sessions, state each one's figure as `latency_samples: N` "
            "in its capture.yaml")
    return failures, warnings


def _measurement_failure(row: dict, params: ValidateParams) -> Failure | None:
    where = f"{row['source']}/output.wav"
    fix_override = ("or state the latency yourself as `latency_samples: N` in capture.yaml (`ampsim add --latency "
                    "N`), measured with a loop-back cable through your interface")
    if row["onset_clarity"] < params.latency_min_clarity:
        return Failure(row["capture"], where, "latency: the onset of the response",
                       f"no clear onset (its peak stands {row['onset_clarity']:.1f}x above the estimate's noise)",
                       f"a response standing at least {params.latency_min_clarity:g}x above it",
                       "the capture's opening is too short, too quiet or too narrow-band to show where the gear's "
                       f"response starts: open the capture with `ampsim signal` (its blips and sweeps), "
                       f"or lengthen validate.align_seconds ({params.align_seconds:g} s now), {fix_override}")
    lead = params.latency_margin_samples - row["onset_samples"]
    if lead <= params.latency_max_lead_samples:
        return None
    swapped = ("input.wav and output.wav are most likely swapped: the DI is predicted better from the amp's "
               "recording than the other way round. Add the capture again with the DI first "
               "(`ampsim add DI_FILE WET_FILE`)")
    late = ("the DI was most likely recorded later than it reached the gear: through another path, or with a "
            "plug-in's latency on the DI track. Record both sides through the same interface with nothing on the "
            "tracks; or, if you are sure, state `latency_samples: "
            f"{row['onset_samples'] - params.latency_margin_samples}` in capture.yaml to shift the DI ahead")
    cause = {"swapped": swapped,
             "late": "the files are not swapped (the amp's recording follows from the DI, not the reverse), so " + late,
             None: "the gear is too linear to tell which file is which. Either " + swapped + "; or " + late
             }[row["swap_likely"]]
    return Failure(row["capture"], where, "latency: the wet side cannot lead the DI",
                   f"an onset {-row['onset_samples']} samples before the DI (correlation peak at "
                   f"{row['correlation_peak_samples']})",
                   f"an onset at most {params.latency_max_lead_samples - params.latency_margin_samples} samples "
                   "before the DI (the estimate's precision)", cause)


def _override_failures(row: dict, params: ValidateParams) -> list[Failure]:
    search = search_samples(row["input_sample_rate"], params)
    value = row["latency_override"]
    if -search <= value <= search:
        return []
    return [Failure(row["capture"], f"{row['source']}/capture.yaml", "latency_samples (stated)", f"{value} samples",
                    f"within ±{search} samples (validate.max_delay_ms = {params.max_delay_ms:g} ms)",
                    "state the rig's latency in samples at the capture's rate (a loop-back measures it), or remove "
                    "latency_samples to have it measured; raise validate.max_delay_ms only if the rig really has "
                    "that much")]


def _dispersive_warning(row: dict) -> str:
    return (f"{row['capture']}: the response starts at {row['onset_samples']} samples but peaks in correlation at "
            f"{row['correlation_peak_samples']}: the gear's response builds up over time (a cabinet, a mic'd "
            f"speaker or a strong tone stack). ampsim compensates the onset ({row['delay_samples']}), so the model "
            "never has to predict the future; tools that align on the peak would ask it to")


def _cabinet_warning(row: dict) -> str:
    return (f"{row['capture']}: its response rings for {row['ringing_ms']:.1f} ms, as a cabinet's or a mic'd "
            "speaker's does (a pedal's or an amp's own is over in 1-3 ms). A small LSTM cannot hold that ringing, "
            "so when the device's captures ring like this, train lays `train.cabinet_recipe` (params.yaml) over "
            "its defaults: the network learns the amp through the IR that follows it. On two amps with a cabinet "
            "that halved the test ESR at 15 minutes (bench/RESULTS.md, session 18). If this is not a cabinet, "
            "set `recipes.<device>: {fit: {through_ir_taps: 0}}`")


def latency_note(row: dict, sample_rate: int) -> str:
    """The latency one capture is compensated by, in words."""
    delay = row["delay_samples"]
    if delay is None:
        return "latency not measured (the pair failed the checks it needs)"
    if row["latency_source"] == "capture.yaml":
        return f"latency {delay} samples ({1000 * delay / sample_rate:.2f} ms), stated in capture.yaml"
    measured = (f"onset at {row['onset_samples']} by its {row['onset_method']}, correlation peak at "
                f"{row['correlation_peak_samples']}" if row["onset_samples"] is not None else "not measured")
    signal = ("" if row.get("signal_offset_samples") is None else
              f"; ampsim's reamp signal recognised ({row['signal_offset_samples']:+d} samples, level x"
              f"{row['signal_gain']:.2f}): latency from its markers, validation on its marked passage, the "
              "replicate check on its repeated passage")
    return (f"latency {delay} samples ({1000 * delay / sample_rate:.2f} ms), compensated ({row['latency_source']}; "
            f"{measured}){signal}")
