"""Training throughput: the package's compiled train step vs the seed chapter's loop run eagerly, side by side.

    python benchmarks/bench_training.py [--profiles seed,default] [--steps seed=1,default=2]
                                        [--min-seconds 4] [--rounds 3] [--xla]
                                        [--variants seed_eager,seed_graph,package]

For each profile, one U-Net (the profile's, fresh weights: speed does not depend on them) and one
fixed batch of random images of the profile's shape in [-1, 1] (throughput does not depend on
the pixels either) are trained by these variants, which all update the same model:

- ``seed_eager``: a straightforward re-implementation of the seed chapter's step (Keras 3 so that
  it runs), run eagerly op by op: t ~ U{0..T-1} and noise from TensorFlow's global generator,
  x_t by gathering sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t), the model, the Huber loss, a
  ``GradientTape`` and Adam with the seed's learning rate lr0 * 1e5 / (step + 1e5);
- ``seed_graph``: the same Python function wrapped in ``tf.function``, as the seed chapter itself
  did (its ``training_block``);
- ``package``: :func:`ddpm_helpers.engine.training.make_train_step` (one ``tf.function``; stateless
  random numbers keyed by the step, and the EMA update of the averaged weights, which the seed
  does not have);
- ``package_xla`` (with ``--xla``): the same with ``jit_compile=True``.

The variants run in turn, for ``--rounds`` rounds (the order rotates each round: this machine is
shared and noisy); in a round a variant runs at least ``--steps`` steps and at least
``--min-seconds`` seconds (so the slow eager loop runs fewer steps than the compiled ones); the
per-step time of a variant is the median over rounds. Tracing / the first step is timed separately. Reported: seconds per step, images per
second and the ratios to ``seed_eager``; also the forward FLOPs of the model per image, so that
achieved FLOP/s can be compared across machines.

Writes ``benchmarks/results/training-<date>.json`` (see ``benchcommon.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import benchcommon

VARIANTS = ("seed_eager", "seed_graph", "package", "package_xla")
DEFAULT_STEPS = {"smoke": 2, "default": 2, "seed": 1}


# --------------------------------------------------------------------------------------------
# The original CelebA tutorial's training step, re-implemented with Keras 3 (the baseline)
# --------------------------------------------------------------------------------------------

def make_seed_step(model, betas, batch_size: int, base_lr: float):
    """The original CelebA tutorial's training step, written plainly:
    ``step(x_batch) -> loss``.

    Runs eagerly as it is; wrap it in ``tf.function`` for the tutorial's own
    (graph) version. The chapter "Performance" shows this function: its lines
    stay within 79 columns, the width of the book's code column.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    class SeedLearningRate(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self, init_lr):
            self.init_lr = init_lr

        def __call__(self, step):
            step = keras.ops.cast(step, "float32")
            return self.init_lr * (100000.0 / (step + 100000.0))

    timesteps = len(betas)
    alpha_bar = np.cumprod(1.0 - np.asarray(betas, np.float64))
    sqrt_alpha_bar = tf.constant(np.sqrt(alpha_bar), tf.float32)
    sqrt_one_minus_alpha_bar = tf.constant(
        np.sqrt(1.0 - alpha_bar), tf.float32
    )
    optimizer = keras.optimizers.Adam(learning_rate=SeedLearningRate(base_lr))
    huber = keras.losses.Huber()

    def extract(values, t):
        return tf.reshape(tf.gather(values, t), (-1, 1, 1, 1))

    def step(x_batch):
        with tf.GradientTape() as tape:
            t = tf.random.uniform(
                (batch_size,), minval=0, maxval=timesteps, dtype=tf.int32
            )
            noise = tf.random.normal(tf.shape(x_batch))
            x_noisy = (
                extract(sqrt_alpha_bar, t) * x_batch
                + extract(sqrt_one_minus_alpha_bar, t) * noise
            )
            predicted = model([x_noisy, t], training=True)
            loss = huber(noise, predicted)
        gradients = tape.gradient(loss, model.trainable_weights)
        optimizer.apply_gradients(zip(gradients, model.trainable_weights))
        return loss

    return step


# --------------------------------------------------------------------------------------------
# FLOPs of the model
# --------------------------------------------------------------------------------------------

def forward_flops_per_image(model, profile) -> dict:
    """Floating-point operations of one forward pass for one image.

    ``total_flops`` is :func:`ddpm_helpers.measuring.unet_costs.forward_flops`, the count every
    chapter uses (2 x the U-Net chapter's MACs). As a cross-check, TensorFlow's graph profiler
    counts the convolutions, dense layers and attention's four projections (2 per
    multiply-add) but not the two einsums inside Keras' attention: ``profiler_total_flops`` is
    the profiler's count plus ``2 x`` those einsums' MACs (adding every attention MAC instead,
    as this benchmark once did, counts the projections twice: 2.76 instead of 2.19 GMACs for
    the seed network).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2_as_graph

    from ddpm_helpers.measuring.unet_costs import attention_mixing_macs, forward_flops

    spec_x = tf.TensorSpec([1, profile.image_size, profile.image_size, profile.channels], tf.float32)
    spec_t = tf.TensorSpec([1], tf.int32)
    concrete = tf.function(lambda x, t: model([x, t], training=False)).get_concrete_function(spec_x, spec_t)
    frozen, _ = convert_variables_to_constants_v2_as_graph(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops
    einsums = sum(1 for op in frozen.graph.get_operations() if op.type == "Einsum")
    mixing = 2 * attention_mixing_macs(model)
    return {"profiled_flops": int(profiled), "attention_mixing_flops": int(mixing),
            "profiler_total_flops": int(profiled + mixing), "total_flops": forward_flops(model),
            "einsum_ops_not_profiled": einsums}


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

def parse_steps(text: str) -> dict:
    steps = dict(DEFAULT_STEPS)
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if not value:
            raise ValueError(f"--steps takes profile=count pairs such as seed=2,default=20, got {part!r}.")
        steps[name.strip()] = int(value)
    return steps


def bench_profile(profile, *, variants, steps: int, rounds: int, batch_size: int | None, seed: int = 0,
                  min_seconds: float = 0.0, flops: bool = True) -> dict:
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.method.schedules import schedule_from_profile
    from ddpm_helpers.engine.training import ExponentialMovingAverage, make_learning_rate, make_train_step
    from ddpm_helpers.method.unet import build_unet_for_profile

    batch_size = int(batch_size or profile.batch_size)
    keras.utils.set_random_seed(seed)
    model = build_unet_for_profile(profile)
    schedule = schedule_from_profile(profile)
    shape = (batch_size, profile.image_size, profile.image_size, profile.channels)
    images = tf.random.stateless_uniform(shape, seed=[seed, 1], minval=-1.0, maxval=1.0)
    labels = tf.zeros([batch_size], tf.int32)
    print(f"\nprofile {profile.name}: {model.count_params():,} parameters, batch {batch_size} of "
          f"{shape[1:]}, T = {schedule.timesteps}; {rounds} rounds of at least {steps} steps and "
          f"{min_seconds:g} s per variant")

    runners = {}
    for name in variants:
        if name.startswith("seed_"):
            step_fn = make_seed_step(model, schedule.betas, batch_size, profile.learning_rate)
            if name == "seed_graph":
                step_fn = tf.function(step_fn)
            runners[name] = (lambda fn: (lambda step: fn(images)))(step_fn)
        else:
            optimizer = keras.optimizers.Adam(
                learning_rate=make_learning_rate("seed", profile.learning_rate, profile.train_steps))
            optimizer.build(model.trainable_variables)
            ema_model = build_unet_for_profile(profile)
            ema = ExponentialMovingAverage(model, ema_model, profile.ema_decay)
            ema.reset()
            train_step = make_train_step(model, optimizer, schedule, diffusion_loss(profile.loss), ema=ema,
                                         seed=seed, jit_compile=name == "package_xla")
            runners[name] = (lambda fn: (lambda step: fn(images, labels, tf.constant(step, tf.int64))))(train_step)

    first_step, counters = {}, {name: 0 for name in variants}
    for name, run in runners.items():  # trace / compile / build the optimizer: timed apart
        began = time.perf_counter()
        float(run(0))
        first_step[name] = time.perf_counter() - began
        counters[name] = 1
        print(f"  {name:>12}: first step (tracing, building) {first_step[name]:.2f} s")

    per_step = {name: [] for name in variants}
    steps_run = {name: [] for name in variants}
    for round_index in range(rounds):
        order = list(variants[round_index % len(variants):]) + list(variants[:round_index % len(variants)])
        for name in order:
            run = runners[name]
            began, done = time.perf_counter(), 0
            while done < steps or time.perf_counter() - began < min_seconds:
                loss = float(run(counters[name]))  # float() waits for the step to finish
                counters[name] += 1
                done += 1
            per_step[name].append((time.perf_counter() - began) / done)
            steps_run[name].append(done)
            if not math.isfinite(loss):
                raise FloatingPointError(f"{name}: loss {loss} in the benchmark (profile {profile.name}).")
        print(f"  round {round_index + 1}: " + ", ".join(f"{n} {1000 * per_step[n][-1]:.0f} ms/step" for n in variants))

    results = benchcommon.summarize_rounds(per_step, steps_run, first_step, batch_size,
                                           baseline="seed_eager", ratio_key="speedup_vs_seed_eager")
    baseline = results["seed_eager"]["seconds_per_step"] if "seed_eager" in results else None
    record = {
        "profile": profile.name,
        "parameters": int(model.count_params()),
        "batch_size": batch_size,
        "image_shape": list(shape[1:]),
        "timesteps": schedule.timesteps,
        "train_steps_of_profile": profile.train_steps,
        "min_steps_per_round": steps,
        "min_seconds_per_round": min_seconds,
        "rounds": rounds,
        "variants": results,
    }
    if "package" in results:
        record["estimated_full_training_hours_package"] = results["package"]["seconds_per_step"] * profile.train_steps / 3600
    if baseline:
        record["estimated_full_training_hours_seed_eager"] = baseline * profile.train_steps / 3600
    if flops:
        counted = forward_flops_per_image(model, profile)
        # A training step costs about 3 forward passes (forward + backward, which is about twice the forward).
        counted["training_flops_per_step_estimate"] = 3 * counted["total_flops"] * batch_size
        for name, values in results.items():
            values["achieved_gflops_per_second_estimate"] = (
                counted["training_flops_per_step_estimate"] / values["seconds_per_step"] / 1e9)
        record["flops"] = counted
    summary = ", ".join(f"{n} {v['images_per_second']:.1f} img/s" for n, v in results.items())
    print(f"  median: {summary}")
    if baseline:
        print("  speed-up vs seed_eager: " + ", ".join(
            f"{n} {v['speedup_vs_seed_eager']:.2f}x" for n, v in results.items() if n != "seed_eager"))
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default="seed,default", help="comma-separated profiles (default: seed,default)")
    parser.add_argument("--steps", default="", help="least steps per round, e.g. seed=1,default=2 "
                        f"(defaults: {', '.join(f'{k}={v}' for k, v in DEFAULT_STEPS.items())})")
    parser.add_argument("--min-seconds", type=float, default=4.0, help="least seconds per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (the median is reported)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's)")
    parser.add_argument("--variants", default="seed_eager,seed_graph,package",
                        help=f"comma-separated, from {', '.join(VARIANTS)}")
    parser.add_argument("--xla", action="store_true", help="also time the package's step with jit_compile=True")
    parser.add_argument("--threads", type=int, default=None, help="TensorFlow intra-op threads (default: TF's)")
    parser.add_argument("--no-flops", action="store_true", help="skip counting the model's FLOPs")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/training-<date>.json)")
    args = parser.parse_args(argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.xla and "package_xla" not in variants:
        variants.append("package_xla")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    steps = parse_steps(args.steps)
    record = benchcommon.Record("training", "training: package's compiled step vs the seed's step run eagerly")

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from ddpm_helpers import get_profile

    profiles = {}
    for name in [p.strip() for p in args.profiles.split(",") if p.strip()]:
        profile = get_profile(name)
        profiles[name] = bench_profile(profile, variants=variants, steps=steps.get(name, 10), rounds=args.rounds,
                                       batch_size=args.batch, min_seconds=args.min_seconds,
                                       flops=not args.no_flops)
    record.write(args.out, variants_timed=variants, profiles=profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
