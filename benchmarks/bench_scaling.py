"""Scaling knobs on this CPU: mixed precision, XLA and MirroredStrategy against the plain compiled step.

    python benchmarks/bench_scaling.py [--profiles seed] [--batch N] [--steps 1] [--min-seconds 4]
                                       [--rounds 3] [--replicas 2] [--variants package,package_mixed,...]

For each profile, the package's training step (:func:`ddpm_helpers.engine.training.make_train_step`,
with the EMA update, on one fixed batch of random images of the profile's shape) is timed in
these variants, each with its own U-Net, optimizer and EMA (fresh weights: speed does not
depend on them):

- ``package``: float32, no XLA (the baseline);
- ``package_mixed``: the Keras policy ``mixed_bfloat16`` (what ``--mixed-precision`` uses on a
  CPU; weights, the network's output, the loss and the EMA stay float32);
- ``package_xla``: float32 with ``jit_compile=True``;
- ``package_mirrored2``: :func:`ddpm_helpers.engine.distribute.make_distributed_train_step` under
  ``tf.distribute.MirroredStrategy`` on ``--replicas`` logical CPU devices (the same cores, split:
  this measures the strategy's overhead, not a speed-up), on the same global batch.

The CPU is split into logical devices when the script starts, before TensorFlow sets up its
devices; the one-device variants run on the first of them. The variants run in turn for
``--rounds`` rounds (the order rotates each round), each at least ``--steps`` steps and
``--min-seconds`` seconds per round; a variant's seconds per step is the median over rounds. The
first step (tracing, XLA's compilation) is timed apart and a second one runs untimed. Reported
per variant: seconds per step, images per second and ``ratio_vs_package`` (images per second
over the baseline's: above 1 is faster); for the strategy also ``overhead_vs_package`` (its
seconds per step over the baseline's, minus 1).

Writes ``benchmarks/results/scaling-<date>.json`` (see ``benchcommon.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import benchcommon

VARIANTS = ("package", "package_mixed", "package_xla", "package_mirrored2")


def make_runner(name, profile, schedule, images, labels, strategy, seed: int = 0):
    """``run(step) -> loss`` of variant ``name``: a fresh model, optimizer and EMA, and its step."""
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.engine.distribute import make_distributed_train_step
    from ddpm_helpers.engine.training import build_training_state, make_train_step

    keras.utils.set_random_seed(seed)
    mirrored = name == "package_mirrored2"
    model, _, optimizer, ema, _ = build_training_state(
        profile, num_classes=None, lr_schedule="seed", steps=profile.train_steps,
        strategy=strategy if mirrored else None,
        precision="mixed_bfloat16" if name == "package_mixed" else "float32")
    loss_fn = diffusion_loss(profile.loss)
    if mirrored:
        step_fn = make_distributed_train_step(strategy, model, optimizer, schedule, loss_fn, ema=ema, seed=seed)
    else:
        step_fn = make_train_step(model, optimizer, schedule, loss_fn, ema=ema, seed=seed,
                                  jit_compile=name == "package_xla")
    return lambda step: step_fn(images, labels, tf.constant(step, tf.int64))


def bench_profile(profile, *, variants, strategy, steps: int, rounds: int, batch_size: int | None,
                  min_seconds: float = 0.0) -> dict:
    import tensorflow as tf

    from ddpm_helpers.method.schedules import schedule_from_profile

    batch_size = int(batch_size or profile.batch_size)
    replicas = strategy.num_replicas_in_sync
    if "package_mirrored2" in variants and batch_size % replicas:
        raise ValueError(f"batch {batch_size} does not split over {replicas} replicas")
    schedule = schedule_from_profile(profile)
    shape = (batch_size, profile.image_size, profile.image_size, profile.channels)
    images = tf.random.stateless_uniform(shape, seed=[0, 1], minval=-1.0, maxval=1.0)
    labels = tf.zeros([batch_size], tf.int32)
    print(f"\nprofile {profile.name}: batch {batch_size} of {shape[1:]}; {rounds} rounds of at least "
          f"{steps} steps and {min_seconds:g} s per variant; {replicas} replicas for the strategy", flush=True)

    runners, first_step, counters = {}, {}, {}
    for name in variants:  # build, trace, compile: timed apart
        began = time.perf_counter()
        runners[name] = make_runner(name, profile, schedule, images, labels, strategy)
        float(runners[name](0))
        first_step[name] = time.perf_counter() - began
        float(runners[name](1))  # one more untimed step: the second call was still slow on this CPU
        counters[name] = 2
        print(f"  {name:>17}: first step (building, tracing) {first_step[name]:.1f} s", flush=True)

    per_step = {name: [] for name in variants}
    steps_run = {name: [] for name in variants}
    for round_index in range(rounds):
        shift = round_index % len(variants)
        for name in list(variants[shift:]) + list(variants[:shift]):
            began, done = time.perf_counter(), 0
            while done < steps or time.perf_counter() - began < min_seconds:
                loss = float(runners[name](counters[name]))  # float() waits for the step
                counters[name] += 1
                done += 1
            per_step[name].append((time.perf_counter() - began) / done)
            steps_run[name].append(done)
            if not math.isfinite(loss):
                raise FloatingPointError(f"{name}: loss {loss} (profile {profile.name}).")
        print(f"  round {round_index + 1}: "
              + ", ".join(f"{n} {per_step[n][-1]:.2f} s/step" for n in variants), flush=True)

    results = benchcommon.summarize_rounds(per_step, steps_run, first_step, batch_size,
                                           baseline="package", ratio_key="ratio_vs_package")
    baseline = results["package"]["seconds_per_step"] if "package" in results else None
    if baseline and "package_mirrored2" in results:
        results["package_mirrored2"]["overhead_vs_package"] = (
            results["package_mirrored2"]["seconds_per_step"] / baseline - 1.0)
    print("  median: " + ", ".join(
        f"{n} {v['images_per_second']:.1f} img/s" + (f" ({v['ratio_vs_package']:.2f}x)" if baseline else "")
        for n, v in results.items()), flush=True)
    return {"profile": profile.name, "batch_size": batch_size, "image_shape": list(shape[1:]),
            "replicas": replicas, "min_steps_per_round": steps, "min_seconds_per_round": min_seconds,
            "rounds": rounds, "variants": results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="seed", help="comma-separated profiles (default: seed)")
    parser.add_argument("--batch", type=int, default=None, help="global batch size (default: the profile's)")
    parser.add_argument("--steps", type=int, default=1, help="least steps per variant and round")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="least seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--replicas", type=int, default=2, help="logical CPU devices for the strategy")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/scaling-<date>.json)")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.replicas < 1:
        parser.error("--rounds and --replicas must be at least 1")

    from ddpm_helpers.engine.distribute import make_strategy

    strategy = make_strategy("mirrored", args.replicas)  # before TensorFlow sets up its devices
    record = benchcommon.Record("scaling", "training step on CPU: mixed precision, XLA, MirroredStrategy")
    from ddpm_helpers import get_profile

    profiles = {}
    for name in [p.strip() for p in args.profiles.split(",") if p.strip()]:
        profiles[name] = bench_profile(get_profile(name), variants=variants, strategy=strategy, steps=args.steps,
                                       rounds=args.rounds, batch_size=args.batch, min_seconds=args.min_seconds)
    record.write(args.out, variants_timed=variants, profiles=profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
