"""CPU settings for the compiled train step: XLA (jit_compile) on and off, thread count, batch size.

    python benchmarks/bench_cpu_options.py [--profile default] [--batches 32,64,128] [--threads 1,2]
                                           [--rounds 3] [--min-seconds 3]

For each thread count (TensorFlow fixes it when it starts, so each runs in a child process of
this script), the package's train step (:func:`ddpm_helpers.engine.training.make_train_step`) runs with
``jit_compile=False`` and ``True`` at every batch size, alternating rounds as in
``bench_training.py`` (whose ``bench_profile`` it reuses). Images per second are what compare
across batch sizes; the first step (tracing, and XLA's compilation) is reported apart.

Writes ``benchmarks/results/cpu_options-<date>.json`` (see ``benchcommon.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import benchcommon


def child(args) -> int:
    import tensorflow as tf

    if args.child_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.child_threads)
    import bench_training
    from ddpm_helpers import get_profile

    profile = get_profile(args.profile)
    out = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        out[str(batch)] = bench_training.bench_profile(
            profile, variants=["package", "package_xla"], steps=2, rounds=args.rounds, batch_size=batch,
            min_seconds=args.min_seconds, flops=False)
    print("RESULT " + json.dumps(out))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--batches", default="32,64,128", help="comma-separated batch sizes")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (0: TF's default)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--child-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/cpu_options-<date>.json)")
    args = parser.parse_args(argv)
    if args.child_threads is not None:
        return child(args)

    record = benchcommon.Record("cpu_options", "training step on CPU: XLA on/off, threads, batch size")
    by_threads = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        print(f"--- intra-op threads: {threads or 'default'}", flush=True)
        command = [sys.executable, __file__, "--child-threads", str(threads), "--profile", args.profile,
                   "--batches", args.batches, "--rounds", str(args.rounds), "--min-seconds", str(args.min_seconds)]
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
        lines = completed.stdout.splitlines()
        print("\n".join(line for line in lines if not line.startswith("RESULT ")), flush=True)
        found = [line for line in lines if line.startswith("RESULT ")]
        if completed.returncode or not found:
            print(f"child with {threads} threads failed (exit {completed.returncode})", file=sys.stderr)
            return 1
        by_threads[str(threads)] = json.loads(found[-1][len("RESULT "):])

    table = []
    for threads, batches in by_threads.items():
        for batch, measured in batches.items():
            for variant, values in measured["variants"].items():
                table.append({"threads": int(threads), "batch": int(batch), "xla": variant == "package_xla",
                              "images_per_second": values["images_per_second"],
                              "seconds_per_step": values["seconds_per_step"],
                              "first_step_seconds": values["first_step_seconds"]})
    best = max(table, key=lambda row: row["images_per_second"])
    print(f"fastest: threads {best['threads'] or 'default'}, batch {best['batch']}, "
          f"XLA {'on' if best['xla'] else 'off'}: {best['images_per_second']:.0f} images/s")
    record.write(args.out, profile=args.profile, table=table, best=best, details=by_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
