"""Samples on disk: cached samples of a trained run, and the ``.npz`` files of the command line.

Chapters "Sampling" (``sec-sampling``) and "Evaluation" (``sec-evaluation``) share the samples of a
trained run through :func:`cached_samples`; ``python -m ddpm_helpers sample`` writes
:func:`save_samples` files that ``python -m ddpm_helpers evaluate`` reads with
:func:`load_samples`, which says clearly what is wrong with a broken file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from ddpm_helpers.notebook.pages import on_page

SAMPLES_FOLDER = "samples"


def weights_fingerprint(model) -> str:
    """A short hash of a model's weights (changes whenever the model is retrained)."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:12]


def machine_description() -> dict:
    """CPU, core count, OS, Python and TensorFlow versions: stored beside every timing."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "devices": [d.device_type for d in tf.config.list_physical_devices()]}


def default_labels(num_images: int, num_classes: int | None):
    """Balanced labels 0, 1, ..., num_classes - 1, 0, 1, ... for a conditional run (None otherwise)."""
    return None if not num_classes else (np.arange(num_images) % int(num_classes)).astype(np.int32)


def _read_cached(path: Path, snapshots: int):
    """The stored result at ``path``, or None when it cannot serve this request (or is unreadable)."""
    from ddpm_helpers.engine.sampling import SampleResult, check_finite

    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            arrays = {name: stored[name] for name in stored.files if name != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        print(f"warning: cannot read the cached samples {path} ({type(error).__name__}: {error}); "
              "drawing them again.", file=sys.stderr)
        return None
    stored_snapshots = arrays.get("snapshots")
    if snapshots and (stored_snapshots is None or len(stored_snapshots) != snapshots):
        return None
    images = check_finite(arrays["images"], f"cached samples in {path}")
    return SampleResult(
        images=images, labels=arrays.get("labels"), snapshots=stored_snapshots if snapshots else None,
        snapshot_times=meta.get("snapshot_times") if snapshots else None, seconds=meta["seconds"],
        trace_seconds=meta["trace_seconds"], model_calls=meta["model_calls"], settings=meta["settings"],
        info=dict(drawn_at=meta["drawn_at"], machine=meta["machine"], path=str(path), cached=True))


def cached_samples(run, num_images: int, *, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                   seed: int = 0, batch_size: int | None = None, snapshots: int = 0, progress: bool = True,
                   labels=None, refresh: bool = False, verbose: bool = True):
    """Samples from the EMA model of a trained run
    (:class:`ddpm_helpers.engine.trained_run.TrainedRun`), cached.

    They are stored in ``run.run_dir/samples/`` under a name made of the sampler settings and a
    hash of the EMA weights, so the chapters "Sampling" and "Evaluation" draw them once per
    trained model (``refresh=True`` draws them again; a request for ``snapshots`` that the stored
    file lacks does too), saying which unless ``verbose=False`` (never on a page of the book
    build: :func:`ddpm_helpers.notebook.pages.on_page`). ``seconds`` is the wall time measured
    when they were drawn;
    ``info`` says when, on which machine, and where the file is. Samples holding NaN raise
    ``ValueError``. Returns a :class:`~ddpm_helpers.engine.sampling.SampleResult`. Chapter "Sampling".
    """
    from ddpm_helpers.engine.sampling import SAMPLERS, sample

    T = run.schedule.timesteps
    steps = T if sampler == "ddpm" or steps is None else int(steps)
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}. Valid: {', '.join(SAMPLERS)}.")
    if labels is None:
        labels = default_labels(num_images, getattr(run, "num_classes", None))
    label_hash = (None if labels is None
                  else hashlib.sha256(np.asarray(labels, np.int32).tobytes()).hexdigest()[:8])
    settings = dict(sampler=sampler, steps=steps, eta=float(eta) if sampler == "ddim" else None,
                    seed=int(seed), n=int(num_images), batch_size=batch_size,
                    weights=weights_fingerprint(run.ema_model), labels=label_hash)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    eta_part = f"-eta{eta:g}" if sampler == "ddim" else ""
    path = Path(run.run_dir) / SAMPLES_FOLDER / f"{sampler}-{steps}{eta_part}-n{num_images}-seed{seed}-{key}.npz"
    what = (f"{num_images} {sampler.upper()}-{steps}" + (f" (eta = {eta:g})" if sampler == "ddim" else "")
            + " samples")
    if path.exists() and not refresh:
        result = _read_cached(path, snapshots)
        if result is not None:
            if verbose and not on_page():
                print(f"Loaded {what} from {path} (drawn {result.info['drawn_at']} in {result.seconds:.1f} s).")
            return result
    image_shape = (run.profile.image_size, run.profile.image_size, run.profile.channels)
    result = sample(run.ema_model, run.schedule, num_images, image_shape,
                    sampler=sampler, steps=steps if sampler == "ddim" else None, eta=eta, seed=seed, labels=labels,
                    batch_size=batch_size, snapshots=snapshots, progress=progress)
    result.info = dict(drawn_at=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine_description(), path=str(path),
                       cached=False)
    meta = dict(seconds=result.seconds, trace_seconds=result.trace_seconds, model_calls=result.model_calls,
                settings=result.settings, snapshot_times=result.snapshot_times, drawn_at=result.info["drawn_at"],
                machine=result.info["machine"])
    arrays = {"images": result.images, "meta": np.array(json.dumps(meta))}
    if result.labels is not None:
        arrays["labels"] = result.labels
    if result.snapshots is not None:
        arrays["snapshots"] = result.snapshots
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, path)
    if verbose and not on_page():
        print(f"Drew {what} in {result.seconds:.1f} s (+{result.trace_seconds:.1f} s tracing); saved to {path}.")
    return result


# --------------------------------------------------------------------------------------------
# Sample files of the command line
# --------------------------------------------------------------------------------------------

def save_samples(path, images, *, labels=None, meta: dict | None = None):
    """Write ``images`` (float in [-1, 1]) as uint8 N x H x W x C to an ``.npz`` (with ``labels`` and a JSON ``meta``)."""
    from ddpm_helpers.notebook.plotting import to_uint8

    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--out must be an .npz file, got {str(path)!r}; e.g. --out samples.npz.")
    arrays = {"images": to_uint8(images)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int32)
    arrays["meta"] = np.array(json.dumps(meta or {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_samples(path) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """``(images, labels, meta)`` of a file written by :func:`save_samples` (``meta`` None if absent).

    Raises ``ValueError`` naming the file for a missing, truncated or foreign file, images that
    are not uint8 N x H x W x C, and a ``meta`` that is not a JSON object.
    """
    path = Path(os.path.expanduser(str(path)))
    redo = f"write it with: python -m ddpm_helpers sample --run RUN --out {shlex.quote(str(path))}"
    if path.is_dir():
        raise ValueError(f"{path} is a folder; --samples takes one .npz file written by 'sample', e.g. "
                         f"{shlex.quote(str(path / 'samples.npz'))}. To make one: python -m ddpm_helpers sample "
                         "--run RUN --out samples.npz")
    if not path.is_file():
        raise ValueError(f"{path} does not exist: {redo}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            if not hasattr(stored, "files"):  # a bare .npy array
                raise ValueError("it holds one bare array, not named arrays")
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz file of samples ({type(error).__name__}: "
                         f"{error}); it may be truncated or another kind of file: {redo}") from None
    if "images" not in arrays:
        raise ValueError(f"{path} has no 'images' array (found {', '.join(arrays) or 'nothing'}): {redo}")
    images = arrays["images"]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"{path}: images must be uint8 N x H x W x C, got {images.dtype} {images.shape}: {redo}")
    meta = None
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: its 'meta' is not valid JSON ({error}): {redo}") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: its 'meta' must be a JSON object, got {type(meta).__name__}: {redo}")
    labels = arrays.get("labels")
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"{path}: 'labels' has shape {labels.shape}, expected ({len(images)},): {redo}")
    return images, labels, meta


def sample_from_cli(args) -> int:
    """``python -m ddpm_helpers sample --run RUN --n N --sampler ddpm|ddim [--steps S] [--eta E] [--seed K] --out F``
    ``[--png GRID.png]`` (the first ``--png-count`` images as one picture)."""
    from ddpm_helpers.engine.runs import run_folder
    from ddpm_helpers.engine.sampling import sample
    from ddpm_helpers.engine.training import load_run

    try:
        if args.n < 1:
            raise ValueError(f"--n must be a positive number of images, got {args.n}.")
        if args.sampler == "ddpm" and args.steps is not None:
            raise ValueError("DDPM always runs all T steps: drop --steps, or use --sampler ddim --steps S.")
        if not str(args.out).endswith(".npz"):
            raise ValueError(f"--out must be an .npz file, got {args.out!r}; e.g. --out samples.npz.")
        if args.batch_size is not None and args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
        if getattr(args, "png", None) and not str(args.png).lower().endswith(".png"):
            raise ValueError(f"--png must name a .png file, got {args.png!r}; e.g. --png grid.png.")
        run = load_run(run_folder(args.run))
        profile = run.profile
        labels = default_labels(args.n, run.num_classes)
        batch_size = args.batch_size or min(args.n, 500)
        result = sample(run.ema_model, run.schedule, args.n, (profile.image_size, profile.image_size, profile.channels),
                        sampler=args.sampler, steps=args.steps, eta=args.eta, seed=args.seed, labels=labels,
                        batch_size=batch_size, progress=True)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    meta = dict(run=str(args.run), dataset=run.config.get("data", profile.dataset), profile=profile.name,
                image_size=profile.image_size, channels=profile.channels, step=run.step,
                seconds=result.seconds, trace_seconds=result.trace_seconds, settings=result.settings,
                command=" ".join(["python -m ddpm_helpers"] + sys.argv[1:]) if sys.argv else "",
                machine=machine_description())
    path = save_samples(args.out, result.images, labels=result.labels, meta=meta)
    print(f"Wrote {args.n} images ({args.sampler}, {result.model_calls} steps, {result.seconds:.1f} s) to {path}.")
    if getattr(args, "png", None):
        from ddpm_helpers.notebook.plotting import save_image_grid

        shown = result.images[:max(1, getattr(args, "png_count", 64))]
        grid = save_image_grid(shown, args.png, scale=max(1, 64 // profile.image_size))
        print(f"Wrote a grid of {len(shown)} of them to {grid}.")
    return 0
