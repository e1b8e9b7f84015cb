"""Per-step overhead of ``train()`` over the bare compiled step, side by side in one process.

    python benchmarks/bench_train_overhead.py [--profile smoke] [--steps 400] [--rounds 3] [--xla/--no-xla]

Variants, each on the same profile's U-Net, timed after their first (compiling) step:

- ``bare``: :func:`ddpm_helpers.engine.training.make_train_step` called in a plain Python loop on one
  fixed batch (no data pipeline, no host sync until the end);
- ``bare+data``: the same, with the batches taken from the data pipeline that ``train()`` uses
  (:func:`ddpm_helpers.engine.pipeline.iterate_batches`);
- ``train``: :func:`ddpm_helpers.engine.training.train` itself (progress off, one checkpoint at the end),
  whose wall-clock speed is the ``steps_per_second`` it reports (measured after its compiling
  first step); its CPU time per step is that of a run of ``steps + 1`` steps less that of a run
  of 1 step, over ``steps``.

Every variant's step function is wrapped to note the time of each call (a fraction of a
microsecond), so the measure is the same for all three: the interval between successive steps,
i.e. the step plus whatever the loop does around it. The median interval (after the compiling
first step) is robust to the bursts of other work on a shared machine, which a mean over the
whole run is not; the 10th percentile is the least-disturbed speed. Rounds alternate. Writes
``benchmarks/results/train-overhead-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import benchcommon


def _timed(step_fn, stamps: list):
    """``step_fn`` noting ``time.perf_counter()`` at every call in ``stamps``."""
    def timed(*args):
        stamps.append(time.perf_counter())
        return step_fn(*args)

    for name in ("bad_step", "bad_what"):
        if hasattr(step_fn, name):
            setattr(timed, name, getattr(step_fn, name))
    return timed


def _intervals(stamps) -> dict:
    import numpy as np

    gaps = np.diff(np.asarray(stamps[1:]))  # from the second call on: the first traced and compiled
    return {"median_ms": 1000 * float(np.median(gaps)), "p10_ms": 1000 * float(np.percentile(gaps, 10)),
            "steps": int(len(gaps))}


def bare_loop(profile, steps: int, jit_compile: bool, with_data: bool, seed: int = 0) -> dict:
    import keras
    import tensorflow as tf

    from ddpm_helpers.engine import training
    from ddpm_helpers.engine.data import load_data
    from ddpm_helpers.engine.pipeline import iterate_batches
    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.method.schedules import make_schedule

    keras.utils.set_random_seed(seed)
    model, ema_model = training.build_models(profile)
    optimizer = keras.optimizers.Adam(training.make_learning_rate("seed", profile.learning_rate, steps))
    optimizer.build(model.trainable_variables)
    ema = training.ExponentialMovingAverage(model, ema_model, profile.ema_decay)
    ema.reset()
    schedule = make_schedule(profile.schedule, profile.timesteps)
    stamps = []
    step_fn = _timed(training.make_train_step(model, optimizer, schedule, diffusion_loss(profile.loss), ema=ema,
                                              seed=seed, jit_compile=jit_compile), stamps)
    source = load_data(profile.dataset, profile.image_size, profile.channels, split="train")
    batches = iterate_batches(source, profile.batch_size, seed=seed)
    images, labels = next(batches)
    for step in range(steps + 2):
        if with_data:
            images, labels = next(batches)
        loss = step_fn(images, labels, tf.constant(step, tf.int64))
    float(loss)
    stamps.append(time.perf_counter())
    return _intervals(stamps)


def train_loop(profile, steps: int, jit_compile: bool) -> dict:
    from ddpm_helpers.engine import training

    stamps, original = [], training.make_train_step
    training.make_train_step = lambda *args, **kwargs: _timed(original(*args, **kwargs), stamps)
    try:
        with tempfile.TemporaryDirectory() as folder:
            training.train(profile, f"{folder}/run", steps=steps + 2, progress=False,
                           checkpoint_every=10 * steps, jit_compile=jit_compile)
    finally:
        training.make_train_step = original
    stamps.append(time.perf_counter())
    return _intervals(stamps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--steps", type=int, default=400, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--threads", type=int, default=None,
                        help="TensorFlow intra- and inter-op threads (1 makes CPU time per step far less noisy)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from ddpm_helpers import get_profile

    profile = get_profile(args.profile)
    record = benchcommon.Record("train-overhead", "per-step overhead of train() over the bare compiled step")
    variants = {"bare": lambda: bare_loop(profile, args.steps, args.xla, False),
                "bare+data": lambda: bare_loop(profile, args.steps, args.xla, True),
                "train": lambda: train_loop(profile, args.steps, args.xla)}
    results = {name: [] for name in variants}
    for round_index in range(args.rounds):
        names = list(variants)
        names = names[round_index % 3:] + names[:round_index % 3]
        for name in names:
            results[name].append(variants[name]())
        print(f"round {round_index + 1}: " + ", ".join(
            f"{n} {results[n][-1]['median_ms']:.2f} ms/step (p10 {results[n][-1]['p10_ms']:.2f})" for n in variants))
    median = {name: benchcommon.median([r["median_ms"] for r in rounds]) for name, rounds in results.items()}
    p10 = {name: min(r["p10_ms"] for r in rounds) for name, rounds in results.items()}
    overhead = {name: median[name] / median["bare"] - 1.0 for name in median}
    overhead_p10 = {name: p10[name] / p10["bare"] - 1.0 for name in p10}
    for name in variants:
        print(f"{name:>9}: median {median[name]:.2f} ms/step ({1000 / median[name]:.1f} steps/s, "
              f"+{100 * overhead[name]:.1f}% over bare); p10 {p10[name]:.2f} ms/step (+{100 * overhead_p10[name]:.1f}%)")
    record.write(args.out, profile=profile.name, steps=args.steps, rounds=args.rounds, xla=args.xla, threads=args.threads,
                 rounds_detail=results, median_ms_per_step=median, p10_ms_per_step=p10, overhead_vs_bare=overhead,
                 overhead_p10_vs_bare=overhead_p10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
