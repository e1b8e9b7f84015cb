"""Memory of sampling: keeping a few snapshots vs keeping every intermediate batch, as the seed did.

    python benchmarks/bench_sampling_memory.py [--profile default] [--batch 16] [--snapshots 11]
                                               [--run runs/default]

The compiled DDPM sampler (:func:`ddpm_helpers.engine.sampling.ddpm_sample`) runs all T steps three
times from the same x_T: keeping only the final images, keeping ``--snapshots`` states evenly
spaced from x_T to x_0 (what the book's animations use), and keeping every one of the T + 1
states (the seed chapter appended each step's batch to a list). For each, Python's
``tracemalloc`` gives the peak of the memory allocated by Python and NumPy during the call (the
kept states are NumPy arrays; TensorFlow's own tensors are not traced, and they are the same in
all three cases), ``snapshots.nbytes`` the size of what is kept, and the wall time (keeping
every state needs one call of the compiled loop per step, instead of one per snapshot).

Also computed, not measured: the bytes of every state for the seed profile's 64 images.
Writes ``benchmarks/results/snapshot_memory-<date>.json`` (see ``benchcommon.py``).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc

import benchcommon


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default", help="profile whose U-Net and schedule are used")
    parser.add_argument("--run", default=None, help="a trained run folder to load instead of fresh weights")
    parser.add_argument("--batch", type=int, default=16, help="images per batch (small: memory is what counts)")
    parser.add_argument("--snapshots", type=int, default=11, help="states kept in the 'snapshots' case")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/snapshot_memory-<date>.json)")
    args = parser.parse_args(argv)
    record = benchcommon.Record("snapshot_memory", "sampling memory: snapshots vs every intermediate batch")

    from ddpm_helpers import get_profile
    from ddpm_helpers.engine import sampling

    profile, model, schedule = benchcommon.model_to_time(args.run, args.profile)
    T = schedule.timesteps
    shape = (args.batch, profile.image_size, profile.image_size, profile.channels)
    batch_bytes = 4 * args.batch * profile.image_size**2 * profile.channels
    print(f"profile {profile.name}: T = {T}, batch {shape} = {batch_bytes / 1e3:.1f} kB per state")

    sampling.ddpm_sample(model, schedule, shape, seed=0, snapshots=0)  # trace and warm up, not measured

    cases = {"final_only": 0, "snapshots": args.snapshots, "every_step": T + 1}
    results, final = {}, {}
    for name, count in cases.items():
        gc.collect()
        tracemalloc.start()
        tracemalloc.reset_peak()
        began = time.perf_counter()
        result = sampling.ddpm_sample(model, schedule, shape, seed=0, snapshots=count)
        seconds = time.perf_counter() - began
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        kept = 0 if result.snapshots is None else int(result.snapshots.nbytes)
        final[name] = result.images
        results[name] = {"snapshots": count, "states_kept": 0 if result.snapshots is None else len(result.snapshots),
                         "kept_bytes": kept, "traced_peak_bytes": int(peak), "traced_after_bytes": int(current),
                         "seconds": seconds, "sampling_seconds": result.seconds}
        print(f"{name:>11}: {results[name]['states_kept']:>5} states kept, {kept / 1e6:8.2f} MB kept, "
              f"peak traced {peak / 1e6:8.2f} MB, {seconds:.1f} s")
        del result
    import numpy as np

    same = max(float(np.max(np.abs(final[n] - final["final_only"]))) for n in final)
    seed = get_profile("seed")
    seed_batch_bytes = 4 * 64 * seed.image_size**2 * seed.channels
    record.write(
        args.out,
        profile=profile.name,
        weights="trained run " + str(args.run) if args.run else "fresh (untrained) weights",
        timesteps=T,
        batch=args.batch,
        image_shape=list(shape[1:]),
        bytes_per_state=batch_bytes,
        cases=results,
        max_abs_difference_of_final_images=same,
        peak_ratio_every_step_vs_snapshots=results["every_step"]["traced_peak_bytes"]
        / max(1, results["snapshots"]["traced_peak_bytes"]),
        seed_profile_every_step_bytes=(seed.timesteps + 1) * seed_batch_bytes,
        seed_profile_snapshot_bytes=args.snapshots * seed_batch_bytes,
        seed_profile_batch=64,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
