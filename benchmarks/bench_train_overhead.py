"""Per-step overhead of ``train()`` over the bare compiled step, side by side in one process.

    python benchmarks/bench_train_overhead.py [--profile smoke] [--steps 400] [--rounds 3] [--xla/--no-xla]

Variants, each on the same profile's U-Net, timed after their first (compiling) step:

- ``bare``: :func:`ddpm_helpers.training.make_train_step` called in a plain Python loop on one
  fixed batch (no data pipeline, no host sync until the end);
- ``bare+data``: the same, with the batches taken from the data pipeline that ``train()`` uses
  (:func:`ddpm_helpers.data.iterate_batches`);
- ``train``: :func:`ddpm_helpers.training.train` itself (progress off, one checkpoint at the end),
  whose speed is the ``steps_per_second`` it reports (measured after its compiling first step).

Rounds alternate (this machine is shared and noisy); the median per-step time is reported with
the overhead of ``train`` over ``bare``. Writes ``benchmarks/results/train-overhead-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import benchcommon


def bare_steps_per_second(profile, steps: int, jit_compile: bool, with_data: bool, seed: int = 0) -> float:
    import keras
    import tensorflow as tf

    from ddpm_helpers import training
    from ddpm_helpers.data import iterate_batches, load_data
    from ddpm_helpers.diffusion import diffusion_loss
    from ddpm_helpers.schedules import make_schedule

    keras.utils.set_random_seed(seed)
    model, ema_model = training.build_models(profile)
    optimizer = keras.optimizers.Adam(training.make_learning_rate("seed", profile.learning_rate, steps))
    optimizer.build(model.trainable_variables)
    ema = training.ExponentialMovingAverage(model, ema_model, profile.ema_decay)
    ema.reset()
    schedule = make_schedule(profile.schedule, profile.timesteps)
    step_fn = training.make_train_step(model, optimizer, schedule, diffusion_loss(profile.loss), ema=ema,
                                       seed=seed, jit_compile=jit_compile)
    source = load_data(profile.dataset, profile.image_size, profile.channels, split="train")
    batches = iterate_batches(source, profile.batch_size, seed=seed)
    images, labels = next(batches)
    float(step_fn(images, labels, tf.constant(0, tf.int64)))  # trace and compile
    began = time.perf_counter()
    for step in range(1, steps + 1):
        if with_data:
            images, labels = next(batches)
        loss = step_fn(images, labels, tf.constant(step, tf.int64))
    float(loss)
    return steps / (time.perf_counter() - began)


def train_steps_per_second(profile, steps: int, jit_compile: bool) -> float:
    from ddpm_helpers import training

    with tempfile.TemporaryDirectory() as folder:
        run = training.train(profile, f"{folder}/run", steps=steps + 1, progress=False,
                             checkpoint_every=10 * steps, jit_compile=jit_compile)
    return run.steps_per_second


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--steps", type=int, default=400, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--xla", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from ddpm_helpers import get_profile

    profile = get_profile(args.profile)
    record = benchcommon.Record("train-overhead", "per-step overhead of train() over the bare compiled step")
    variants = {"bare": lambda: bare_steps_per_second(profile, args.steps, args.xla, False),
                "bare+data": lambda: bare_steps_per_second(profile, args.steps, args.xla, True),
                "train": lambda: train_steps_per_second(profile, args.steps, args.xla)}
    rates = {name: [] for name in variants}
    for round_index in range(args.rounds):
        names = list(variants)
        names = names[round_index % 3:] + names[:round_index % 3]
        for name in names:
            rates[name].append(variants[name]())
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {rates[n][-1]:.1f} steps/s" for n in variants))
    median = {name: benchcommon.median(values) for name, values in rates.items()}
    overhead = {name: median["bare"] / median[name] - 1.0 for name in median}
    print("median: " + ", ".join(f"{n} {median[n]:.1f} steps/s (+{100 * overhead[n]:.1f}% time/step)"
                                 for n in median))
    record.write(args.out, profile=profile.name, steps=args.steps, rounds=args.rounds, xla=args.xla,
                 steps_per_second=rates, median_steps_per_second=median, overhead_vs_bare=overhead)
    return 0


if __name__ == "__main__":
    sys.exit(main())
