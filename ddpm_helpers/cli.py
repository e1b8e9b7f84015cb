"""The command line, ``python -m ddpm_helpers {prepare-celeba,train,sample,evaluate} --help`` (also ``ddpm-helpers``).

Each sub-command is a thin wrapper: the work is done by the module named in its help text.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m ddpm_helpers`` and its commands: prepare-celeba, train, sample, evaluate."""
    parser = argparse.ArgumentParser(
        prog="python -m ddpm_helpers",
        description="Train a DDPM, sample from it and evaluate the samples: python -m ddpm_helpers "
                    "{prepare-celeba,train,sample,evaluate} --help describes each command.")
    commands = parser.add_subparsers(dest="command", required=True)

    from ddpm_helpers.engine import celeba

    prepare = commands.add_parser(
        "prepare-celeba", help="crop and resize CelebA once into a folder of PNGs (ddpm_helpers.engine.celeba)",
        description="Crop CelebA's aligned faces to their central square and resize them to 32x32 PNGs, read from "
                    "Kaggle's archive.zip in place or from the folder kagglehub.dataset_download returns. Re-running "
                    "skips the faces already written. " + celeba._layout_help(),
        epilog="Example: python -m ddpm_helpers prepare-celeba archive.zip data/celeba32, then python -m "
               "ddpm_helpers train --profile celeba --out runs/celeba (the celeba profile reads data/celeba32).")
    celeba.add_arguments(prepare)

    train = commands.add_parser(
        "train", help="train a DDPM (ddpm_helpers.engine.training)",
        description="Train a DDPM and write checkpoints (tf.train.Checkpoint files ckpt-<step>.*) and config.json "
                    "to --out. Ctrl-C or SIGTERM saves a checkpoint of the current step and prints the command that "
                    "continues the run (a crash loses the steps since the last checkpoint). --resume continues "
                    "exactly where the newest checkpoint left off, with the run's own settings from its "
                    "config.json; it may change --learning-rate, --steps, --seed and --xla/--no-xla (it prints what "
                    "changed), not the model or data. One process at a time may write a run folder.",
        epilog="Examples: python -m ddpm_helpers train --profile default --data digits --out runs/digits ; "
               "CelebA (a GPU is advised): python -m ddpm_helpers prepare-celeba archive.zip data/celeba32 ; "
               "python -m ddpm_helpers train --profile celeba --out runs/celeba (the celeba profile reads "
               "folder:data/celeba32; archive.zip from https://www.kaggle.com/datasets/jessicali9530/celeba-dataset "
               "or kagglehub; chapter 'Scaling up').",
    )
    train.add_argument("--profile", default=None,
                       help="smoke, default or celeba (alias: seed) (default: $DDPM_PROFILE, else 'default'; with "
                            "--resume: the run's own)")
    train.add_argument("--data", default=None,
                       help="digits (offline), mnist, fashion_mnist, cifar10 (need internet) or folder:PATH, a "
                            "folder of images such as data/celeba32 written by prepare-celeba (default: the profile's, "
                            "folder:data/celeba32 for celeba; with --resume: the run's own)")
    train.add_argument("--out", required=True, help="run folder for checkpoints and config.json")
    train.add_argument("--steps", type=int, default=None, help="training steps (default: the profile's; with --resume: the run's own)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="start again even though --out already holds a run (it is moved aside to OUT.stale-N)")
    train.add_argument("--seed", type=int, default=None, help="seed of the weights, data order and noise "
                       "(default: the profile's; with --resume: of the data order and noise from there on)")
    train.add_argument("--learning-rate", type=float, default=None,
                       help="base learning rate of --lr-schedule (default: the profile's)")
    train.add_argument("--batch-size", type=int, default=None, help="images per step (default: the profile's)")
    train.add_argument("--lr-schedule", default=None, choices=["seed", "constant", "cosine", "warmup_cosine"],
                       help="learning rate over training, from --learning-rate (default: seed, "
                            "lr = base * 100000 / (step + 100000))")
    train.add_argument("--warmup-steps", type=int, default=None,
                       help="a linear warm-up of the learning rate over the first N steps, in front of "
                            "--lr-schedule (default: none; with --resume: the run's own)")
    train.add_argument("--lr-decay-steps", type=int, default=None, metavar="N",
                       help="the seed schedule's decay steps: lr = base * N / (step + N) (default: 100000; "
                            "with --resume: the run's own)")
    train.add_argument("--scale-batch", type=int, default=None, metavar="K",
                       help="a global batch K times the profile's, for K devices: K times fewer steps (the same "
                            "images), the learning rate times sqrt(K), the seed schedule's decay steps divided by K "
                            "and the EMA decay to the power K (learning_rates.scale_for_batch); --steps, "
                            "--learning-rate and --lr-decay-steps, if given, win; not with --batch-size or --resume")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="steps between checkpoints, at least 1 (default: the profile's)")
    train.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept, at least 1 (default: 2)")
    train.add_argument("--num-classes", type=int, default=None,
                       help="train a class-conditional model on the data's labels, at least 2 classes (e.g. 10 for "
                            "digits)")
    train.add_argument("--label-dropout", type=float, default=None,
                       help="with --num-classes: probability of replacing a label by the null label, for "
                            "classifier-free guidance (e.g. 0.1)")
    xla = train.add_mutually_exclusive_group()
    xla.add_argument("--no-xla", dest="xla", action="store_false", default=None,
                     help="compile the training step without XLA (compiles faster; whether it runs slower depends on "
                          "the machine and the threads, see benchmarks/bench_cpu_options.py; by default XLA is "
                          "used for runs of 1000 steps or more, except on a CPU with TF_NUM_INTRAOP_THREADS=1, "
                          "and a resumed run keeps its setting)")
    xla.add_argument("--xla", dest="xla", action="store_true", help="compile the training step with XLA")
    train.add_argument("--strategy", default="none", choices=["none", "mirrored", "multiworker", "tpu"],
                       help="tf.distribute strategy: mirrored (all GPUs of this machine), multiworker (several "
                            "machines, TF_CONFIG), tpu (a Colab or Cloud TPU); --batch-size is the global batch")
    train.add_argument("--mixed-precision", action="store_true", default=None,
                       help="compute in bfloat16 (CPU, TPU) or float16 with loss scaling (GPU); weights, loss "
                            "and EMA stay float32; a resumed run keeps its setting)")
    train.add_argument("--sample-every", type=int, default=None, metavar="N",
                       help="every N steps, write a grid of 16 EMA samples (DDIM, 50 steps, fixed seed) to "
                            "OUT/samples/step-NNNNNN.png (default: off)")
    train.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=True,
                       help="do not write TensorBoard scalars (loss, learning rate, steps/s) to OUT/logs "
                            "(default: written; view with tensorboard --logdir OUT/logs)")
    train.add_argument("--replicas", type=int, default=None,
                       help="with --strategy mirrored on a machine without GPUs: split the CPU into this many "
                            "logical devices (to try distribution on a laptop)")

    sample = commands.add_parser(
        "sample", help="draw samples from a trained run (ddpm_helpers.engine.sampling)",
        description="Sample images from a run folder written by 'train' and save them as .npz.",
    )
    sample.add_argument("--run", required=True, help="run folder written by 'train'")
    sample.add_argument("--n", type=int, default=1000, help="number of images")
    sample.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    sample.add_argument("--steps", type=int, default=None, help="DDIM steps (default: all T)")
    sample.add_argument("--eta", type=float, default=0.0, help="DDIM eta in [0, 1] (0: deterministic)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default: 0)")
    sample.add_argument("--batch-size", type=int, default=None,
                        help="images sampled at once (default: up to 500; lower it if memory runs out)")
    sample.add_argument("--out", required=True, help=".npz file: images uint8 NxHxWxC (+ labels)")
    sample.add_argument("--png", default=None, metavar="GRID.png",
                        help="also write the first --png-count images as one PNG grid (e.g. --png grid.png)")
    sample.add_argument("--png-count", type=int, default=64, help="images in the --png grid (default: 64)")

    evaluate = commands.add_parser(
        "evaluate", help="score samples with the book's offline metric (ddpm_helpers.measuring.metrics)",
        description="Print the Frechet distance of samples to real data, the real floor and the ratio.",
    )
    evaluate.add_argument("--samples", required=True,
                          help=".npz written by 'sample', or a folder of images (folder:PATH); digits are scored "
                               "with the book's metric, images of a folder-trained run with FID, KID and a "
                               "nearest-neighbour check on Inception-v3 (ddpm_helpers.measuring.image_sets)")
    evaluate.add_argument("--reference", default=None,
                          help="real images for FID/KID: folder:PATH or a .npz (default: the folder the run "
                               "trained on, from the sample file)")
    evaluate.add_argument("--inception-weights", default=None, metavar="PATH",
                          help="Inception-v3 weights file (default: Keras' cache ~/.keras/models/, downloaded "
                               "where there is a network)")
    evaluate.add_argument("--max-reference", type=int, default=10_000,
                          help="reference images read, a random subset of larger folders (default: 10000)")
    evaluate.add_argument("--nearest-png", default=None, metavar="PAIRS.png",
                          help="write the samples closest to a reference image, and those images, as a PNG")
    evaluate.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command with ``argv`` (default: the process's arguments); the exit status."""
    args = build_parser().parse_args(argv)
    if args.command == "prepare-celeba":
        from ddpm_helpers.engine.celeba import run

        return run(args)
    if args.command == "train":
        return train_from_cli(args)
    if args.command == "sample":
        from ddpm_helpers.engine.sample_files import sample_from_cli

        return sample_from_cli(args)
    from ddpm_helpers.measuring.metrics import evaluate_from_cli

    return evaluate_from_cli(args)


def _scaled_profile(profile, args, lr_decay_steps):
    """``--scale-batch K``: the profile with a K times larger batch, K times fewer steps, and the
    rate, decay steps and EMA decay of :func:`~ddpm_helpers.engine.learning_rates.scale_for_batch`."""
    from ddpm_helpers.engine.learning_rates import SEED_DECAY_STEPS, scale_for_batch

    k = args.scale_batch
    if k < 1:
        raise ValueError(f"--scale-batch must be at least 1, got {k}.")
    if args.batch_size is not None or args.resume:
        raise ValueError("--scale-batch sets the batch of a new run: leave out --batch-size (it would set it twice) "
                         "and --resume (a resumed run keeps its own, already scaled, settings).")
    scaled = scale_for_batch(k, base_lr=profile.learning_rate, decay_steps=SEED_DECAY_STEPS,
                             ema_decay=profile.ema_decay)
    profile = profile.replace(batch_size=profile.batch_size * k, train_steps=max(1, profile.train_steps // k),
                              learning_rate=scaled["learning_rate"], ema_decay=scaled["ema_decay"])
    if lr_decay_steps is None and (args.lr_schedule or "seed") == "seed":  # the others decay over the steps
        lr_decay_steps = scaled["decay_steps"]
    print(f"--scale-batch {k}: batch {profile.batch_size}, {profile.train_steps:,} steps, learning rate "
          f"{profile.learning_rate:.3g}, EMA decay {profile.ema_decay:.6g}"
          + (f", decay steps {lr_decay_steps:,}" if lr_decay_steps is not None else "") + ".")
    return profile, lr_decay_steps


def train_from_cli(args) -> int:
    """``python -m ddpm_helpers train``: see ``--help``. Returns the exit status (130 after Ctrl-C)."""
    from ddpm_helpers.engine.interrupts import TrainingInterrupted
    from ddpm_helpers.profiles import get_profile
    from ddpm_helpers.engine.runs import RunBusyError, is_run_folder, profile_from_dict, run_folder, stored_config
    from ddpm_helpers.engine.training import NonFiniteLossError, train

    try:
        from ddpm_helpers.engine.distribute import make_strategy

        strategy = make_strategy(args.strategy, args.replicas)  # before TensorFlow sets up its devices
        run_dir = run_folder(args.out)
        # a resumed run keeps its own profile unless one is named
        profile = None if args.resume and args.profile is None else get_profile(args.profile)
        if args.batch_size is not None:
            if args.batch_size < 1:
                raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
            if profile is None:  # --resume without --profile: the run's own, with this batch
                stored = stored_config(run_dir)
                profile = profile_from_dict(stored["profile"]) if stored else get_profile()
            profile = profile.replace(batch_size=args.batch_size)
        lr_decay_steps = args.lr_decay_steps
        if args.scale_batch is not None:
            profile, lr_decay_steps = _scaled_profile(profile, args, lr_decay_steps)
        if not args.resume and not args.overwrite and is_run_folder(run_dir):
            raise ValueError(f"{run_dir} already holds a run: pass --resume to continue it, --overwrite to start "
                             "again (the old run is moved aside, not deleted), or choose another --out.")
        run = train(profile, run_dir, steps=args.steps, resume=args.resume, data=args.data, seed=args.seed,
                    num_classes=args.num_classes, label_dropout=args.label_dropout,
                    lr_schedule=args.lr_schedule, learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                    lr_decay_steps=lr_decay_steps, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                    jit_compile=args.xla, strategy=strategy, replicas=args.replicas,
                    mixed_precision=args.mixed_precision, tensorboard=args.tensorboard,
                    sample_every=args.sample_every)
    except TrainingInterrupted as stop:
        print(f"\n{stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        print("\nInterrupted before training began (or by a second Ctrl-C): nothing new was saved.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NonFiniteLossError, RunBusyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Trained {run.step} steps in {run.train_seconds:.0f} s ({run.steps_per_second:.2f} steps/s) on "
          f"{run.config['replicas']} replica(s), precision policy {run.config.get('precision', 'float32')}; "
          f"checkpoints and config.json in {run.run_dir}.")
    return 0

