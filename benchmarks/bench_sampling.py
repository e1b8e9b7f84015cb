"""Compiled DDPM sampling vs an eager Python loop over the same model and steps, side by side.

    python benchmarks/bench_sampling.py [--profile default] [--batch 64] [--steps 50] [--rounds 3]
                                        [--run runs/default] [--ddim]

Both run the same ancestral steps (``ddpm_helpers.engine.sampling.p_sample``) from the same x_T with the
same noise: the eager loop calls the model op by op from Python (the seed chapter's way), the
compiled one is ``sampling.ddpm_loop`` (one ``tf.function``). They alternate for ``--rounds``
rounds (this machine is shared and noisy) and the ratio of the medians is printed. Tracing is
done once before timing and reported separately. The model is the profile's U-Net with fresh
weights (speed does not depend on the weights) unless ``--run`` names a trained run.
``--ddim`` also times full DDPM-T and DDIM at 10/20/50/100 steps with the compiled samplers.

Writes ``benchmarks/results/sampling-<date>.json`` with the machine description and the command.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import benchcommon


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="profile whose U-Net and schedule are used")
    parser.add_argument("--run", default=None, help="a trained run folder to load instead of fresh weights")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (the seed sampled 64)")
    parser.add_argument("--steps", type=int, default=50, help="reverse steps timed in each loop (from t = T)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating eager/compiled rounds")
    parser.add_argument("--ddim", action="store_true", help="also time DDPM-T and DDIM-10/20/50/100 (compiled)")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/sampling-<date>.json)")
    args = parser.parse_args(argv)
    record = benchcommon.Record("sampling", "sampling: compiled DDPM loop vs eager Python loop")

    import numpy as np
    import tensorflow as tf

    from ddpm_helpers.engine import sampling

    profile, model, schedule = benchcommon.model_to_time(args.run, args.profile)
    T = schedule.timesteps
    steps = min(args.steps, T)
    shape = (args.batch, profile.image_size, profile.image_size, profile.channels)
    seed = 0
    x_T = sampling.step_noise(seed, 0, T, shape, T)
    predict_noise = sampling.as_noise_predictor(model)
    loop = sampling.ddpm_loop(schedule, predict_noise)
    scalars = (tf.constant(seed, tf.int64), tf.constant(0, tf.int64))
    print(f"profile {profile.name}: {model.count_params():,} parameters, T = {T}; batch {args.batch}, "
          f"{steps} steps per loop, {args.rounds} rounds")

    began = time.perf_counter()
    loop(x_T, tf.constant(T), tf.constant(T), *scalars)  # trace and compile (zero steps)
    trace_seconds = time.perf_counter() - began
    sampling.ddpm_sample_eager(model, schedule, shape, x_T=x_T, steps=1, seed=seed)  # warm up the eager path

    eager_times, compiled_times, difference = [], [], 0.0
    for round_index in range(args.rounds):
        began = time.perf_counter()
        eager = sampling.ddpm_sample_eager(model, schedule, shape, x_T=x_T, steps=steps, seed=seed)
        eager_times.append((time.perf_counter() - began) / steps)
        began = time.perf_counter()
        compiled = loop(x_T, tf.constant(T), tf.constant(T - steps), *scalars).numpy()
        compiled_times.append((time.perf_counter() - began) / steps)
        difference = max(difference, float(np.max(np.abs(eager - compiled))))
        print(f"round {round_index + 1}: eager {1000 * eager_times[-1]:.1f} ms/step, "
              f"compiled {1000 * compiled_times[-1]:.1f} ms/step")
    eager_step, compiled_step = statistics.median(eager_times), statistics.median(compiled_times)
    ratio = eager_step / compiled_step
    print(f"median: eager {1000 * eager_step:.1f} ms/step, compiled {1000 * compiled_step:.1f} ms/step "
          f"(tracing {trace_seconds:.1f} s once): compiled is {ratio:.1f}x faster; "
          f"max |eager - compiled| = {difference:.1e}")

    samplers = {}
    if args.ddim:
        image_shape = shape[1:]
        for name, kwargs in [("ddpm", {})] + [(f"ddim-{s}", {"sampler": "ddim", "steps": s})
                                              for s in sampling.DDIM_STEP_COUNTS if s <= T]:
            result = sampling.sample(model, schedule, args.batch, image_shape, seed=seed, **kwargs)
            samplers[name] = {"seconds": result.seconds, "trace_seconds": result.trace_seconds,
                              "model_calls": result.model_calls}
            print(f"{name:>9}: {result.seconds:.2f} s for {args.batch} images ({result.model_calls} steps)")
        for name, values in samplers.items():
            values["speedup_vs_ddpm"] = samplers["ddpm"]["seconds"] / values["seconds"]

    record.write(
        args.out,
        profile=profile.name,
        weights="trained run " + str(args.run) if args.run else "fresh (untrained) weights",
        parameters=int(model.count_params()),
        timesteps=T,
        batch=args.batch,
        steps_timed=steps,
        rounds=args.rounds,
        eager_seconds_per_step=eager_times,
        compiled_seconds_per_step=compiled_times,
        trace_seconds=trace_seconds,
        ratio=ratio,
        max_abs_difference=difference,
        samplers=samplers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
