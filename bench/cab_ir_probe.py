"""A probe for issue 20's amps with a cabinet: does an LSTM followed by a learnt FIR (a cab IR) learn them better
per CPU-minute than the LSTM alone?

A cabinet is close to a long linear filter after the amp's nonlinear stages. An LSTM(16) has to hold that
filter's memory in its 16 states; a causal FIR of a few hundred taps holds it directly. Both plugins ampsim
exports to play a `.nam`/AIDA-X LSTM followed by an impulse response (their IR loaders), so an `LSTM -> FIR`
model deploys as the model plus a mono IR WAV.

This is a probe, not an architecture. Both variants train in this file's loop, which is ampsim's streaming
recipe at params.yaml's defaults: 50 rows that each play on through the capture (`StreamRows`), an update
every `lstm.tbptt_samples` with the LSTM's state (and the FIR's past inputs) carried, `fit`'s loss and cosine
schedule over the budget. They run one core each, the same budget, on the panel's capture (ampsim's reamp
signal through a teacher, prepared by ampsim's normalize + validate), and are scored as the panel scores: real
guitar DI neither trained on, at lag 0. Validation is the capture's marked validation passage, played whole as
one stream every 30 s of training; each budget ships its best so far. Not here: the trainer's latch check and
its going back to the best weights.

    .venv/bin/python bench/cab_ir_probe.py --devices bug333-crunch-cab --budgets 5 10 15 --taps 1024

Writes `cab_ir_probe` into bench/results.json. Compare the two variants with each other (same run); the
plain LSTM's figures also check the loop against ampsim's trainer (bench/RESULTS.md).

`--ls-taps` adds a FIR that cannot run away: at each budget, after training, the causal FIR of that many taps
that best maps the shipped model's output on the training audio to its target, in the least-squares sense
(the normal equations, solved once; no Adam). Each budget's row then also has the validation and test ESR
with it. `--sides` runs any two variants or seeds side by side, e.g. two seeds of the plain LSTM, to see one
run's spread:

    .venv/bin/python bench/cab_ir_probe.py --devices 5150 --budgets 5 10 --sides lstm:2018 lstm:7 --ls-taps 256 1024 4096
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from panel import DEVICES, lag_zero_scorer, prepare_device, reamp_di, test_di  # noqa: E402  (bench/ is not a package)
from quality import esr, machine_line, merge_results, run_sides, split_arrays  # noqa: E402

VARIANTS = ("lstm", "lstm_fir")


def fir_layers(taps: int, rows: int | None):
    """A causal FIR of `taps` taps (lfilter's order: tap 0 meets the current sample), applied by FFT (a direct
    1024-tap convolution cost the CPU 5x the updates a minute). With `rows`, the training twin: each row's last
    taps - 1 inputs are kept from call to call, as the LSTM's state is, so a 200-sample update still hears
    its past. Its taps are `delta + w / sqrt(taps)`: Adam moves every weight by about the learning rate, and
    1024 taps each moved by 0.01 would throw the filter's gain far off at once."""
    import keras
    import keras.ops as ops

    scale = float(1.0 / np.sqrt(taps))

    def convolve(signal, kernel):
        length = int(signal.shape[1])
        size = 1 << int(np.ceil(np.log2(length + taps)))  # linear, not circular, convolution
        (a, b), (c, d) = ops.rfft(ops.pad(signal, [[0, 0], [0, size - length]])), ops.rfft(ops.pad(kernel, [[0, size - taps]]))
        return ops.irfft((a * c - b * d, a * d + b * c), fft_length=size)[:, :length]

    class Fir(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(taps,), initializer="zeros", name="ir")
            if rows:
                self.past = self.add_weight(shape=(rows, taps - 1), initializer="zeros", trainable=False, name="past")

        def compute_output_shape(self, input_shape):
            return input_shape

        def kernel(self):
            return ops.concatenate([ops.ones((1,)), ops.zeros((taps - 1,))]) + scale * self.w

        def call(self, x):
            signal = x[..., 0]
            if rows:
                signal = ops.concatenate([self.past.value, signal], axis=1)
                self.past.assign(ops.stop_gradient(signal[:, -(taps - 1):]))
            y = convolve(signal, self.kernel())
            return (y[:, taps - 1:] if rows else y)[..., None]

    return Fir(name="cab_ir")


def build(variant: str, hidden: int, taps: int, rows: int | None = None):
    """LSTM(hidden) -> Dense(1), then for `lstm_fir` a causal FIR of `taps` taps that starts as a pass-through.
    With `rows`: the training twin of that batch size, which carries its state from call to call."""
    import keras

    from ampsim.modelling.carried_lstm import CarriedLSTM

    x = keras.Input(batch_shape=(rows, None if rows is None else 200, 1))
    lstm = CarriedLSTM(hidden, return_sequences=True, stateful=True) if rows else \
        keras.layers.LSTM(hidden, return_sequences=True)
    y = keras.layers.Dense(1)(lstm(x))
    if variant == "lstm_fir":
        y = fir_layers(taps, rows)(y)
    return keras.Model(x, y)


def played_once(render):
    """`render`, remembering what it played for each input it was given: one budget's model plays the test DI
    once, then through each FIR."""
    played: dict[int, np.ndarray] = {}

    def render_once(x):
        if id(x) not in played:
            played[id(x)] = np.asarray(render(x), np.float64).reshape(-1)
        return played[id(x)]

    return render_once


def least_squares_rows(render, data: dict, score, ls_taps: list[int]) -> dict:
    """For each FIR length: the FIR fitted on the training audio after `render`'s model, and the validation and
    test ESR of the model followed by it."""
    from ampsim.modelling import cab_ir  # the library's fit (ridge 1e-6, train.cab_ir_ridge's default) and filter

    played, val_played = render(data["train_x"]), render(data["val_x"])
    rows = {"train_esr": esr(data["train_y"].astype(np.float64), played)}
    for taps, kernel in cab_ir.fit([played], [data["train_y"]], ls_taps, 1e-6).items():
        rows[f"ls{taps}"] = {
            "train_esr": esr(data["train_y"].astype(np.float64), cab_ir.apply(kernel, played)),
            "val_esr": esr(data["val_y"].astype(np.float64), cab_ir.apply(kernel, val_played)),
            "test_esr": score(lambda x, kernel=kernel: cab_ir.apply(kernel, render(x)))["test_esr"]}
    return rows


def zero_rows(model, restarted: np.ndarray) -> None:
    """The rows that start a new stream: their LSTM state (as ampsim's trainer zeroes it) and their FIR's past."""
    import keras.ops as ops

    from ampsim.modelling.carried_lstm import zero_carried_rows

    zero_carried_rows(model, restarted)
    if any(layer.name == "cab_ir" for layer in model.layers):
        past = model.get_layer("cab_ir").past
        past.assign(ops.where(ops.convert_to_tensor(restarted)[:, None], 0.0, past.value))


def train_variant(variant: str, prepared: Path, test_npz: Path, budgets: list[float], hidden: int, taps: int,
                  seed: int, ls_taps: list[int]) -> list[dict]:
    """ampsim's streaming-LSTM recipe at params.yaml's defaults (rows that carry their state through the
    capture, an update every lstm.tbptt_samples, fit's loss and cosine schedule over the budget), for either
    variant."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    from ampsim.core.params import FitParams, LstmParams, section
    from ampsim.data.windows import Pool, StreamRows, load_split
    from ampsim.modelling.architectures import Recipe
    from ampsim.modelling.losses import fit_loss
    from ampsim.modelling.training import learning_rate
    from quality import candidate_params

    params = candidate_params([])
    fit, lstm = section(params, "fit", FitParams), section(params, "lstm", LstmParams)
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    data, score, pool = split_arrays(prepared), lag_zero_scorer(test_npz), Pool.of(load_split(prepared, "train"))
    tbptt, rows = lstm.tbptt_samples, StreamRows.fresh(lstm.batch_size)
    scored = (lstm.segment_samples - lstm.warmup_samples) // tbptt * tbptt
    model, trainer = build(variant, hidden, taps), build(variant, hidden, taps, lstm.batch_size)
    trainer.compile(optimizer=keras.optimizers.Adam(fit.learning_rate), loss=fit_loss(fit, 0, tbptt, "tbptt"))
    schedule = Recipe(0, 0, 0, 0, fit.learning_rate, fit.final_learning_rate, 0, 0, None, "")

    def render(x: np.ndarray) -> np.ndarray:
        for to, frm in zip(model.trainable_variables, trainer.trainable_variables):
            to.assign(keras.ops.convert_to_numpy(frm.value))  # a copy: JAX donates a model's arrays to its steps
        return np.asarray(model.predict_on_batch(np.asarray(x, np.float32).reshape(1, -1, 1))).reshape(-1)

    budget_s, trained_s, batches, pending, out = max(budgets) * 60, 0.0, 0, sorted(budgets), []
    best = {"val_esr": np.inf, "weights": [keras.ops.convert_to_numpy(v.value) for v in trainer.trainable_variables], "batch": 0}
    next_val = 0.0
    while pending:
        # --- validate (off the clock): the validation passage as one stream; the best weights kept
        if trained_s >= next_val:
            val = esr(data["val_y"].astype(np.float64), render(data["val_x"]).astype(np.float64))
            if val < best["val_esr"]:
                best = {"val_esr": val, "weights": [keras.ops.convert_to_numpy(v.value) for v in trainer.trainable_variables], "batch": batches}
            print(f"  {variant} {trained_s / 60:5.2f} min, batch {batches}: val {val:.4f}", flush=True)
            next_val = trained_s + 30.0
        # --- each budget reached: its best weights on the real guitar test (off the clock)
        while pending and trained_s >= pending[0] * 60:
            current = [keras.ops.convert_to_numpy(v.value) for v in trainer.trainable_variables]
            for variable, value in zip(trainer.trainable_variables, best["weights"]):
                variable.assign(value)
            render_once = played_once(render)
            tested = score(render_once)
            if ls_taps:
                tested["least_squares"] = least_squares_rows(render_once, data, score, ls_taps)
            for variable, value in zip(trainer.trainable_variables, current):
                variable.assign(value)
            out.append({"minutes": pending.pop(0), "batches": batches, "best_batch": best["batch"],
                        "parameters": int(model.count_params()), "val_esr": best["val_esr"], **tested})
            print(f"  {variant} {out[-1]}", flush=True)
        if not pending:
            break
        # --- one batch: each row's next segment, an update every tbptt samples, the state carried
        x, y, restarted = rows.next(pool, rng, scored)
        began = time.process_time()
        trainer.optimizer.learning_rate.assign(learning_rate(schedule, trained_s / budget_s))
        zero_rows(trainer, restarted)
        for start in range(0, scored, tbptt):
            trainer.train_on_batch(x[:, start : start + tbptt], y[:, start : start + tbptt])
        trained_s += time.process_time() - began
        batches += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["bug333-crunch-cab"], choices=sorted(DEVICES))
    parser.add_argument("--budgets", nargs="+", type=float, default=[5, 10, 15])
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--taps", type=int, default=1024, help="the FIR's length (1024 = 21 ms at 48 kHz)")
    parser.add_argument("--seed", type=int, default=2018)
    parser.add_argument("--sides", nargs=2, default=list(VARIANTS), metavar="VARIANT[:SEED]",
                        help="the two runs side by side (one core each): a variant, and a seed other than --seed")
    parser.add_argument("--ls-taps", nargs="*", type=int, default=[],
                        help="also score each budget's model followed by a least-squares FIR of these lengths")
    parser.add_argument("--out", type=Path, default=BENCH / "results.json")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test-npz", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = dict(hidden=args.hidden, taps=args.taps, seed=args.seed)
    sides = {side: (side.partition(":")[0], int(side.partition(":")[2] or args.seed)) for side in args.sides}
    if len(sides) != 2 or any(variant not in VARIANTS for variant, _ in sides.values()):
        raise SystemExit(f"bench/cab_ir_probe.py: --sides wants two different runs, each one of {VARIANTS}[:SEED]")
    if args.variant:  # worker: one variant on the core run_sides pinned it to; rows to --out
        rows = train_variant(args.variant, args.prepared, args.test_npz, args.budgets, **shape, ls_taps=args.ls_taps)
        args.out.write_text(json.dumps(rows))
        return
    results = {"command": "python bench/" + " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv)),
               "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_line(), **shape,
               "sides": args.sides, "ls_taps": args.ls_taps, "devices": {}}
    with tempfile.TemporaryDirectory(prefix="ampsim-cab-ir-") as scratch:
        di, test_x = reamp_di(None), test_di()
        for device in args.devices:
            work = Path(scratch) / device
            prepared, test_npz, facts = prepare_device(device, di, test_x, work)
            commands = {side: [sys.executable, __file__, "--variant", variant, "--prepared", str(prepared),
                               "--test-npz", str(test_npz), "--budgets", *map(str, args.budgets),
                               *(f"--{k}={v}" for k, v in {**shape, "seed": seed}.items()),
                               "--ls-taps", *map(str, args.ls_taps)] for side, (variant, seed) in sides.items()}
            rows = run_sides(commands, work, f"bench/cab_ir_probe.py: {device}")
            results["devices"][device] = {**facts, **rows}
            for side in sides:
                for row in rows[side]:
                    fitted = "".join(f"  +LS{n}: val {row['least_squares'][f'ls{n}']['val_esr']:.4f} test "
                                     f"{row['least_squares'][f'ls{n}']['test_esr']:.4f}" for n in args.ls_taps)
                    print(f"{device:18s} {side:12s} {row['minutes']:>5} min  val {row['val_esr']:.4f}  "
                          f"test {row['test_esr']:.4f}  batches {row['batches']}{fitted}", flush=True)
            merge_results(args.out, "cab_ir_probe", results)


if __name__ == "__main__":
    main()
