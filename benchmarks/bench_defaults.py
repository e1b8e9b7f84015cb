"""Why the default profile uses the cosine schedule, and which loss: {linear, cosine} x {huber, mse}.

    python benchmarks/bench_defaults.py [--profile default] [--steps 1500] [--samples 512]
                                        [--sets 4] [--ddim-steps 100] [--seeds 0]
                                        [--runs-dir DIR]

For each schedule and loss, the profile's U-Net is trained for ``--steps`` steps (fewer than the
profile's own; the same data order, noise and initial weights for every variant, through the
same training seed) and its EMA weights draw ``--sets`` disjoint sets of ``--samples`` images
each (DDIM, ``--ddim-steps`` steps, eta = 0; set k is random stream k of sampling seed 0). Each
set is scored with the book's metric (:mod:`ddpm_helpers.measuring.metrics`, chapter "Evaluation"): the
Frechet distance (FD) in the features of the book's digit classifier to the real held-out
digits, divided by the floor (real training digits vs the same held-out digits, at the same n;
the mean of its draws). Reported per variant: the mean ratio over the sets and its 95%
t-interval (mean +- t * sd / sqrt(sets)). A bootstrap over the images of one set is not used:
FD is biased upward by repeated images, so the bootstrap distribution lies above the estimate.
With several ``--seeds`` every variant is trained once per seed.

The chapter "Training" reads the newest ``benchmarks/results/defaults-<date>.json`` (see
``benchcommon.py``) and calls a difference only where a paired t test over the sets (set k of
every variant starts from the same noise) finds it at the 5% level.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import benchcommon

SCHEDULES = ("linear", "cosine")
LOSSES = ("huber", "mse")


def t_interval(values):
    """Mean and 95% t-interval (mean +- t * sd / sqrt(k)) of k >= 2 values."""
    import numpy as np
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--sets", type=int, default=4, help="disjoint sample sets per model (>= 2)")
    parser.add_argument("--ddim-steps", type=int, default=100)
    parser.add_argument("--runs-dir", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from ddpm_helpers import get_profile
    from ddpm_helpers.measuring.metrics import Evaluator, load_or_train_classifier
    from ddpm_helpers.engine.sampling import sample
    from ddpm_helpers.engine.training import train

    record = benchcommon.Record("defaults", "default profile: {linear, cosine} x {huber, mse}")
    profile = get_profile(args.profile)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="bench-defaults-"))
    classifier = load_or_train_classifier(profile.dataset, profile.image_size, profile.channels,
                                          runs_dir=runs_dir, verbose=True)
    evaluator = Evaluator(classifier, profile.dataset, profile.image_size, profile.channels)
    floors, ceiling = evaluator.references(args.samples)
    floor = sum(floors) / len(floors)
    print(f"floor {floor:.3f} (draws {', '.join(f'{v:.3f}' for v in floors)}), ceiling {ceiling:.2f}")
    image_shape = (profile.image_size, profile.image_size, profile.channels)
    variants = []
    for schedule, loss, seed in itertools.product(SCHEDULES, LOSSES, seeds):
        variant = profile.replace(schedule=schedule, loss=loss)
        began = time.perf_counter()
        run = train(variant, runs_dir / f"{schedule}-{loss}-seed{seed}", steps=args.steps, seed=seed,
                    progress=False)
        trained = time.perf_counter() - began
        result = sample(run.ema_model, run.schedule, args.sets * args.samples, image_shape,
                        sampler="ddim", steps=args.ddim_steps, eta=0.0, seed=0,
                        batch_size=args.samples)
        scores = [evaluator.evaluate(result.images[k * args.samples:(k + 1) * args.samples])
                  for k in range(args.sets)]
        ratio, low, high = t_interval([s.fd / floor for s in scores])
        row = {
            "schedule": schedule, "loss": loss, "seed": seed, "steps": args.steps,
            "final_running_loss": float(run.history["running_loss"][-1]),
            "ratio": ratio, "ratio_low": low, "ratio_high": high,
            "set_ratios": [s.fd / floor for s in scores],
            "confident_share": float(sum(s.confident_share for s in scores) / len(scores)),
            "train_seconds": round(trained, 1), "sample_seconds": round(result.seconds, 1),
        }
        variants.append(row)
        print(f"{schedule:6s} {loss:5s} seed {seed}: FD/floor {ratio:.2f} [{low:.2f}, {high:.2f}] "
              f"(sets {', '.join(f'{v:.2f}' for v in row['set_ratios'])}), "
              f"confident {100 * row['confident_share']:.0f}%, train {trained:.0f} s", flush=True)
    record.write(args.out, profile=profile.name, steps=args.steps, samples=args.samples, seeds=seeds,
                 sampler=f"ddim-{args.ddim_steps}-eta0", sets=args.sets, floor=floor, floor_draws=floors,
                 ceiling=ceiling, real_confident_share=evaluator.real_confident_share,
                 variants=variants)
    return 0


if __name__ == "__main__":
    sys.exit(main())
