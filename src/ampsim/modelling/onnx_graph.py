"""A stack of LSTMs as an ONNX graph on the standard `LSTM` operator, for rendering on ONNX Runtime: it starts
in a fraction of a second where Keras takes 9-15 s to import (bench/RESULTS.md). The weights are Keras'
(gates i, f, c, o; kernel [inputs, 4H]) moved into ONNX's layout (gates i, o, f, c; W [1, 4H, inputs]), as
the .nam and AIDA-X exports move them into theirs. The graph takes and returns audio batch-first,
[blocks, samples, channels] -> [blocks, samples, 1], as the Keras model does."""

from __future__ import annotations

import numpy as np

OPSET = 17


def _onnx_gates(matrix: np.ndarray) -> np.ndarray:
    """Keras' gate blocks i, f, c, o along the last axis, in ONNX's order i, o, f, c."""
    i, f, c, o = np.split(np.asarray(matrix, np.float32), 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1)


def lstm_stack(layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]], inputs: int,
               head: tuple[np.ndarray, np.ndarray] | None = None, input_skip: bool = False,
               knob_drive: np.ndarray | None = None,
               knob_bend: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> bytes:
    """The serialised graph of LSTM layers given as Keras weights (kernel, recurrent kernel, bias), then an
    optional dense head (kernel [H, 1], bias [1]) and an optional input skip (the audio channel added).
    `knob_drive` ([knobs, 1]): the audio scaled by exp(knobs @ knob_drive) before the first layer, the knobs
    first bent by `knob_bend` (select [knobs, knots], positions [knots], slopes [knots]) where given:
    knobs + (relu(knobs @ select - positions) * slopes) @ select^T."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, network_in = [], [numpy_helper.from_array(np.array([1], np.int64), "direction_axis")], "audio"
    if knob_drive is not None:
        weights += [numpy_helper.from_array(np.array([0], np.int64), "drive_audio_start"),
                    numpy_helper.from_array(np.array([1], np.int64), "drive_knobs_start"),
                    numpy_helper.from_array(np.array([inputs], np.int64), "drive_knobs_end"),
                    numpy_helper.from_array(np.array([2], np.int64), "drive_axis"),
                    numpy_helper.from_array(np.asarray(knob_drive, np.float32), "drive_weights")]
        nodes += [helper.make_node("Slice", ["audio", "drive_audio_start", "drive_knobs_start", "drive_axis"],
                                   ["drive_dry"]),
                  helper.make_node("Slice", ["audio", "drive_knobs_start", "drive_knobs_end", "drive_axis"],
                                   ["drive_raw_knobs" if knob_bend is not None else "drive_knobs"])]
        if knob_bend is not None:
            select, positions, slopes = (np.asarray(a, np.float32) for a in knob_bend)
            weights += [numpy_helper.from_array(select, "bend_select"), numpy_helper.from_array(select.T, "bend_back"),
                        numpy_helper.from_array(positions, "bend_knots"),
                        numpy_helper.from_array(slopes, "bend_slopes")]
            nodes += [helper.make_node("MatMul", ["drive_raw_knobs", "bend_select"], ["bend_at_knots"]),
                      helper.make_node("Sub", ["bend_at_knots", "bend_knots"], ["bend_past_knots"]),
                      helper.make_node("Relu", ["bend_past_knots"], ["bend_beyond"]),
                      helper.make_node("Mul", ["bend_beyond", "bend_slopes"], ["bend_sloped"]),
                      helper.make_node("MatMul", ["bend_sloped", "bend_back"], ["bend_added"]),
                      helper.make_node("Add", ["drive_raw_knobs", "bend_added"], ["drive_knobs"])]
        nodes += [helper.make_node("MatMul", ["drive_knobs", "drive_weights"], ["drive_log_gain"]),
                  helper.make_node("Exp", ["drive_log_gain"], ["drive_gain"]),
                  helper.make_node("Mul", ["drive_dry", "drive_gain"], ["drive_driven"]),
                  helper.make_node("Concat", ["drive_driven", "drive_knobs"], ["driven"], axis=2)]
        network_in = "driven"
    nodes.append(helper.make_node("Transpose", [network_in], ["x0"], perm=[1, 0, 2]))  # ONNX Runtime's LSTM: time-major
    for index, (kernel, recurrent, bias) in enumerate(layers):
        units = recurrent.shape[0]
        weights += [numpy_helper.from_array(_onnx_gates(kernel).T[None], f"W{index}"),
                    numpy_helper.from_array(_onnx_gates(recurrent).T[None], f"R{index}"),
                    numpy_helper.from_array(np.concatenate([_onnx_gates(bias), np.zeros(4 * units, np.float32)])[None],
                                            f"B{index}")]
        nodes += [helper.make_node("LSTM", [f"x{index}", f"W{index}", f"R{index}", f"B{index}"], [f"y{index}"],
                                   hidden_size=int(units)),
                  helper.make_node("Squeeze", [f"y{index}", "direction_axis"], [f"x{index + 1}"])]
    nodes.append(helper.make_node("Transpose", [f"x{len(layers)}"], ["features"], perm=[1, 0, 2]))
    out = "features"
    if head is not None:
        weights += [numpy_helper.from_array(np.asarray(head[0], np.float32), "head_kernel"),
                    numpy_helper.from_array(np.asarray(head[1], np.float32), "head_bias")]
        nodes += [helper.make_node("MatMul", [out, "head_kernel"], ["head_product"]),
                  helper.make_node("Add", ["head_product", "head_bias"], ["head_out"])]
        out = "head_out"
    if input_skip:
        weights += [numpy_helper.from_array(np.array([0], np.int64), "audio_start"),
                    numpy_helper.from_array(np.array([1], np.int64), "audio_end"),
                    numpy_helper.from_array(np.array([2], np.int64), "channel_axis")]
        nodes += [helper.make_node("Slice", ["audio", "audio_start", "audio_end", "channel_axis"], ["dry"]),
                  helper.make_node("Add", [out, "dry"], ["skipped"])]
        out = "skipped"
    nodes.append(helper.make_node("Identity", [out], ["output"]))
    graph = helper.make_graph(nodes, "ampsim_lstm", [
        helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["blocks", "samples", inputs])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["blocks", "samples", 1])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ampsim")
    onnx.checker.check_model(model)
    return model.SerializeToString()
