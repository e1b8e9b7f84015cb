"""Per-step overhead of ``train()`` over the bare compiled step, side by side in one process.

    python benchmarks/bench_train_overhead.py [--profile smoke] [--steps 400] [--rounds 3] [--xla/--no-xla]

Variants, each on the same profile's U-Net, timed after their first (compiling) step:

- ``bare``: :func:`ddpm_helpers.training.make_train_step` called in a plain Python loop on one
  fixed batch (no data pipeline, no host sync until the end);
- ``bare+data``: the same, with the batches taken from the data pipeline that ``train()`` uses
  (:func:`ddpm_helpers.data.iterate_batches`);
- ``train``: :func:`ddpm_helpers.training.train` itself (progress off, one checkpoint at the end),
  whose wall-clock speed is the ``steps_per_second`` it reports (measured after its compiling
  first step); its CPU time per step is that of a run of ``steps + 1`` steps less that of a run
  of 1 step, over ``steps``.

Two measures per variant: wall-clock steps/s (what a reader waits for; noisy on a shared machine)
and CPU seconds per step of this process, all threads (``time.process_time``: what the work costs,
much less sensitive to other processes). Rounds alternate; the best round of each variant is
reported (the least disturbed), with the overhead of each variant over ``bare``. Writes
``benchmarks/results/train-overhead-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import benchcommon


def bare_steps_per_second(profile, steps: int, jit_compile: bool, with_data: bool, seed: int = 0):
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
    began, cpu = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        if with_data:
            images, labels = next(batches)
        loss = step_fn(images, labels, tf.constant(step, tf.int64))
    float(loss)
    return steps / (time.perf_counter() - began), (time.process_time() - cpu) / steps


def train_steps_per_second(profile, steps: int, jit_compile: bool):
    from ddpm_helpers import training

    cpu = []
    for count in (1, steps + 1):
        with tempfile.TemporaryDirectory() as folder:
            began = time.process_time()
            run = training.train(profile, f"{folder}/run", steps=count, progress=False,
                                 checkpoint_every=10 * steps, jit_compile=jit_compile)
            cpu.append(time.process_time() - began)
    return run.steps_per_second, (cpu[1] - cpu[0]) / steps


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
    cpu = {name: [] for name in variants}
    for round_index in range(args.rounds):
        names = list(variants)
        names = names[round_index % 3:] + names[:round_index % 3]
        for name in names:
            rate, seconds = variants[name]()
            rates[name].append(rate)
            cpu[name].append(seconds)
        print(f"round {round_index + 1}: " + ", ".join(
            f"{n} {rates[n][-1]:.1f} steps/s, {1000 * cpu[n][-1]:.2f} CPU ms/step" for n in variants))
    best = {name: max(values) for name, values in rates.items()}
    best_cpu = {name: min(values) for name, values in cpu.items()}
    overhead = {name: best["bare"] / best[name] - 1.0 for name in best}
    overhead_cpu = {name: best_cpu[name] / best_cpu["bare"] - 1.0 for name in best}
    for name in variants:
        print(f"best {name:>9}: {best[name]:6.1f} steps/s (+{100 * overhead[name]:.1f}% wall time per step), "
              f"{1000 * best_cpu[name]:.2f} CPU ms/step (+{100 * overhead_cpu[name]:.1f}%)")
    record.write(args.out, profile=profile.name, steps=args.steps, rounds=args.rounds, xla=args.xla,
                 steps_per_second=rates, cpu_seconds_per_step=cpu, best_steps_per_second=best,
                 best_cpu_seconds_per_step=best_cpu, overhead_vs_bare=overhead, cpu_overhead_vs_bare=overhead_cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
