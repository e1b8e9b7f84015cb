"""Sampling (chapter "Sampling", ``sec-sampling``): the DDPM and DDIM loops, compiled, in chunks.

The steps and loops themselves live in :mod:`ddpm_helpers.method.samplers` (they read as the papers'
algorithms, Eqs. (9.2) (``eq-p-sample``) and (9.5) (``eq-ddim-step``)); the noise predictors they
call in :mod:`ddpm_helpers.method.predictors`; their compiled versions, cached on the model, in
:mod:`ddpm_helpers.engine.compiled_loops` (:func:`.ddpm_loop`, :func:`.ddim_loop`).
This module runs them:

- :func:`ddpm_sample`, :func:`ddim_sample`: from noise x_T to images, run in chunks only to advance
  a progress bar and keep snapshots (memory grows with the number of snapshots, never with T);
- :func:`sample`: either of them by name, in batches.

Random numbers are stateless, keyed by ``(seed, stream, step)``: the same seed gives the same
samples whatever the chunking, and DDPM and DDIM draw the same noise at the same step. Samples
that hold NaN or infinite values raise ``ValueError``. Cached samples of a trained run and the
sample files of the command line are in :mod:`ddpm_helpers.engine.sample_files`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from ddpm_helpers.engine.compiled_loops import (  # noqa: F401 (re-exported)
    LOOP_CACHE_ATTRIBUTE,
    compiled_loops,
    ddim_loop,
    ddpm_loop,
)
from ddpm_helpers.method.predictors import (  # noqa: F401 (re-exported)
    NoisePredictor,
    as_noise_predictor,
    classifier_free_guidance,
)
from ddpm_helpers.method.samplers import (  # noqa: F401 (re-exported)
    VARIANCES,
    ddim_sigma,
    ddim_step,
    ddim_steps,
    ddim_timesteps,
    ddpm_steps,
    p_mean_variance,
    p_sample,
    step_noise,
)

SAMPLERS = ("ddpm", "ddim")
# The DDIM step counts the chapters compare with DDPM (those <= T are used).
DDIM_STEP_COUNTS = (10, 20, 50, 100)
# Steps per compiled call when a progress bar is shown: the bar advances about this many times.
PROGRESS_UPDATES = 20


# --------------------------------------------------------------------------------------------
# Results, and running a loop in chunks
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class SampleResult:
    """What a sampler returns.

    ``images`` float32 (N, H, W, C) in the model's range (about [-1, 1]; see
    :func:`ddpm_helpers.notebook.plotting.to_display_range`); ``labels`` int32 (N,) or None;
    ``snapshots`` float32 (K, N, H, W, C) or None, the states x_t at the paper's times
    ``snapshot_times`` (T first, 0 last = ``images``); ``seconds`` the wall time of the sampling
    itself and ``trace_seconds`` that of tracing the loop (paid once per loop and shape);
    ``model_calls`` the number of network evaluations per image; ``info`` where and when
    cached samples were drawn (:func:`ddpm_helpers.engine.sample_files.cached_samples`).
    """

    images: np.ndarray
    labels: np.ndarray | None
    snapshots: np.ndarray | None
    snapshot_times: list | None
    seconds: float
    trace_seconds: float
    model_calls: int
    settings: dict
    info: dict = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        snaps = "" if self.snapshots is None else f", {len(self.snapshots)} snapshots"
        return (f"SampleResult({self.images.shape[0]} images {self.images.shape[1:]}, "
                f"{self.settings.get('sampler')} {self.model_calls} steps, {self.seconds:.2f} s{snaps})")


def check_finite(images, what: str = "samples") -> np.ndarray:
    """``images`` as they are, or a ``ValueError`` when any holds NaN or infinite values."""
    images = np.asarray(images)
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        broken = int(np.sum(~np.all(np.isfinite(images.reshape(len(images), -1)), axis=1)))
        raise ValueError(
            f"{broken} of {len(images)} {what} hold NaN or infinite values. The model's weights "
            "(or its input) are not finite, e.g. after a diverged training run: retrain it, or "
            "load a checkpoint from before the divergence."
        )
    return images


def _frame_positions(total_steps: int, snapshots: int) -> list[int]:
    """Numbers of steps done at which to keep a snapshot: ``snapshots`` values from 0 to total_steps."""
    if isinstance(snapshots, bool) or not isinstance(snapshots, (int, np.integer)) or snapshots < 0:
        raise ValueError(f"snapshots must be a non-negative integer (number of frames), got {snapshots!r}.")
    if snapshots == 0:
        return []
    if snapshots == 1:
        return [total_steps]
    if snapshots > total_steps + 1:
        raise ValueError(
            f"snapshots={snapshots} is more than the {total_steps + 1} states of a {total_steps}-step run; "
            f"use at most {total_steps + 1}."
        )
    return sorted({int(v) for v in np.round(np.linspace(0, total_steps, snapshots))})


def _run_chunks(total: int, advance, x, *, snapshots: int, progress: bool, time_of, label: str):
    """Run ``advance(x, done, done_next)`` over [0, total] in chunks; keep snapshots; show progress.

    Only the snapshots are copied to host memory: one array per snapshot, never one per step.
    """
    from ddpm_helpers.notebook.pages import ProgressBar

    frames = _frame_positions(total, snapshots)
    bounds = set(frames) | {0, total}
    if progress:
        every = max(1, math.ceil(total / PROGRESS_UPDATES))
        bounds |= set(range(0, total, every))
    bounds = sorted(bounds)
    bar = ProgressBar(total, unit="step", label=label, enabled=progress)
    kept, times = [], []
    if 0 in frames:
        kept.append(np.asarray(x))
        times.append(time_of(0))
    for done, done_next in zip(bounds[:-1], bounds[1:]):
        x = advance(x, done, done_next)
        if done_next in frames:
            kept.append(x.numpy())
            times.append(time_of(done_next))
        bar.update(done_next, finalize=done_next == total)
    return x, (np.stack(kept) if kept else None), (times if kept else None)


def _prepare(model_or_fn, shape, labels, seed):
    import tensorflow as tf

    predict_noise = as_noise_predictor(model_or_fn)
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (N, H, W, C) (or (N, D)) with positive sizes, got {shape}.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers of shape ({shape[0]},) (one per image), got "
                             f"{labels.dtype} {labels.shape}.")
        labels = tf.constant(labels.astype(np.int32))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    return predict_noise, shape, labels


def _start_noise(seed, stream, shape, timesteps, x_T):
    import tensorflow as tf

    if x_T is not None:
        x_T = tf.convert_to_tensor(np.asarray(x_T, dtype=np.float32))
        if tuple(x_T.shape) != shape:
            raise ValueError(f"x_T must have the shape {shape}, got {tuple(x_T.shape)}.")
        return x_T
    return step_noise(seed, stream, timesteps, shape, timesteps)


def _result(x, labels, kept, times, seconds, trace_seconds, model_calls, settings) -> SampleResult:
    images = check_finite(x.numpy())
    return SampleResult(images=images, labels=None if labels is None else labels.numpy(),
                        snapshots=kept, snapshot_times=times, seconds=seconds,
                        trace_seconds=trace_seconds, model_calls=model_calls, settings=settings)


# --------------------------------------------------------------------------------------------
# The samplers
# --------------------------------------------------------------------------------------------

def ddpm_sample(model_or_fn, schedule, shape, *, seed: int = 0, labels=None, clip_x0: bool = True,
                variance: str = "beta_tilde", snapshots: int = 0, progress: bool = False, x_T=None,
                stream: int = 0, jit_compile: bool = False) -> SampleResult:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over all T steps.

    ``model_or_fn``: a Keras model or a noise predictor (see :func:`.as_noise_predictor`);
    ``shape``: (N, H, W, C); ``labels``: int (N,) for a conditional model; ``clip_x0``: clip the
    predicted x_0 to [-1, 1]; ``variance``: ``"beta_tilde"`` (posterior variance, default) or
    ``"beta"``; ``snapshots``: number of states x_t to keep, evenly spaced from x_T to x_0
    (0: none); ``progress``: show a progress bar; ``x_T``: a given start instead of noise from
    ``seed``. Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    import tensorflow as tf

    if variance not in VARIANCES:
        raise ValueError(f"Unknown variance {variance!r}. Valid: {', '.join(VARIANCES)}.")
    predict_noise, shape, labels = _prepare(model_or_fn, shape, labels, seed)
    T = schedule.timesteps
    run = ddpm_loop(schedule, predict_noise, clip_x0=bool(clip_x0), variance=variance,
                    jit_compile=jit_compile)
    x = _start_noise(seed, stream, shape, T, x_T)
    args = (tf.constant(seed, tf.int64), tf.constant(stream, tf.int64))
    began = time.perf_counter()
    run(x, tf.constant(T), tf.constant(T), *args, labels)  # trace and compile (zero steps)
    trace_seconds = time.perf_counter() - began

    def advance(x, done, done_next):  # positions T - done - 1 down to T - done_next
        return run(x, tf.constant(T - done), tf.constant(T - done_next), *args, labels)

    began = time.perf_counter()
    x, kept, times = _run_chunks(T, advance, x, snapshots=snapshots, progress=progress,
                                 time_of=lambda done: T - done,
                                 label=f"DDPM, {T} steps, {shape[0]} images")
    settings = dict(sampler="ddpm", steps=T, eta=None, variance=variance, clip_x0=bool(clip_x0),
                    seed=int(seed))
    return _result(x, labels, kept, times, time.perf_counter() - began, trace_seconds, T, settings)


def ddpm_sample_eager(model_or_fn, schedule, shape, *, seed: int = 0, steps: int | None = None, labels=None,
                      clip_x0: bool = True, variance: str = "beta_tilde", x_T=None, stream: int = 0) -> np.ndarray:
    """The same ancestral steps as :func:`ddpm_sample`, as a plain Python loop of eager calls (the seed's way).

    For comparisons only (the chapter and ``benchmarks/bench_sampling.py``): every step calls the
    model eagerly, op by op. ``steps`` runs only the first ``steps`` reverse steps (from t = T);
    with the same seed the result equals the compiled sampler's up to float round-off.
    Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    import tensorflow as tf

    predict_noise, shape, labels = _prepare(model_or_fn, shape, labels, seed)
    T = schedule.timesteps
    steps = T if steps is None else int(steps)
    x = _start_noise(seed, stream, shape, T, x_T)
    for i in range(T - 1, T - 1 - steps, -1):
        t = tf.fill([shape[0]], i)
        noise = step_noise(seed, stream, i, shape, T)
        x = p_sample(schedule, predict_noise, x, t, noise, labels, clip_x0=clip_x0, variance=variance)
    return x.numpy()


def ddim_sample(model_or_fn, schedule, shape, *, steps: int = 50, eta: float = 0.0, seed: int = 0, labels=None,
                clip_x0: bool = True, snapshots: int = 0, progress: bool = False, x_T=None, stream: int = 0,
                jit_compile: bool = False) -> SampleResult:
    """DDIM sampling (Song et al. 2021) on ``steps`` evenly spaced time steps with noise level ``eta``.

    ``eta = 0`` is deterministic (the same x_T always gives the same image), ``eta = 1`` with
    ``steps = T`` is ancestral DDPM with beta_tilde. Other arguments as :func:`ddpm_sample`.
    Chapter "Sampling", Eqs. (9.5) (``eq-ddim-step``) and (9.6) (``eq-ddim-sigma``).
    """
    import tensorflow as tf

    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like noise), got {eta}.")
    predict_noise, shape, labels = _prepare(model_or_fn, shape, labels, seed)
    T = schedule.timesteps
    taus_np = ddim_timesteps(T, steps)
    S = len(taus_np)
    run = ddim_loop(schedule, predict_noise, clip_x0=bool(clip_x0), jit_compile=jit_compile)
    x = _start_noise(seed, stream, shape, T, x_T)
    taus = tf.constant(taus_np)
    args = (tf.constant(eta, tf.float32), tf.constant(seed, tf.int64), tf.constant(stream, tf.int64))
    began = time.perf_counter()
    run(x, taus, tf.constant(S), tf.constant(S), *args, labels)  # trace and compile (zero steps)
    trace_seconds = time.perf_counter() - began

    def advance(x, done, done_next):
        return run(x, taus, tf.constant(S - done), tf.constant(S - done_next), *args, labels)

    def time_of(done):  # the paper's time of x after `done` steps
        k = S - done
        return T if done == 0 else int(taus_np[k - 1]) + 1 if k > 0 else 0

    began = time.perf_counter()
    x, kept, times = _run_chunks(S, advance, x, snapshots=snapshots, progress=progress, time_of=time_of,
                                 label=f"DDIM, {S} steps, eta={eta:g}, {shape[0]} images")
    settings = dict(sampler="ddim", steps=S, eta=eta, variance=None, clip_x0=bool(clip_x0), seed=int(seed))
    return _result(x, labels, kept, times, time.perf_counter() - began, trace_seconds, S, settings)


def sample(model_or_fn, schedule, num_images: int, image_shape, *, sampler: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, seed: int = 0, labels=None, batch_size: int | None = None, progress: bool = False,
           **kwargs) -> SampleResult:
    """``num_images`` samples with ``sampler`` ``"ddpm"`` or ``"ddim"``, drawn in batches of ``batch_size``.

    ``image_shape`` is (H, W, C); ``steps`` is DDIM's step count (default: T; DDPM always uses T);
    batch ``b`` uses random stream ``b`` and labels ``labels[b * batch_size:(b + 1) * batch_size]``,
    so results depend on ``seed`` and ``batch_size`` only. Other keyword arguments go to
    :func:`ddpm_sample` / :func:`ddim_sample`. Chapter "Sampling".
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}. Valid: {', '.join(SAMPLERS)}.")
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
    if sampler == "ddpm" and steps not in (None, schedule.timesteps):
        raise ValueError(f"DDPM always runs all T = {schedule.timesteps} steps; use sampler='ddim' "
                         f"for {steps} steps.")
    if labels is not None and np.shape(labels) != (num_images,):
        raise ValueError(f"labels must be integers of shape ({num_images},) (one per image), got "
                         f"shape {np.shape(labels)}.")
    batch_size = int(batch_size or num_images)
    parts = []
    for stream, start in enumerate(range(0, num_images, batch_size)):
        count = min(batch_size, num_images - start)
        shape = (count,) + tuple(image_shape)
        part_labels = None if labels is None else np.asarray(labels)[start:start + count]
        if sampler == "ddpm":
            parts.append(ddpm_sample(model_or_fn, schedule, shape, seed=seed, labels=part_labels, stream=stream,
                                     progress=progress, **kwargs))
        else:
            parts.append(ddim_sample(model_or_fn, schedule, shape, steps=schedule.timesteps if steps is None else steps,
                                     eta=eta,
                                     seed=seed, labels=part_labels, stream=stream, progress=progress, **kwargs))
    first = parts[0]
    snaps = None if first.snapshots is None else np.concatenate([p.snapshots for p in parts], axis=1)
    return SampleResult(
        images=np.concatenate([p.images for p in parts]),
        labels=None if labels is None else np.concatenate([p.labels for p in parts]),
        snapshots=snaps, snapshot_times=first.snapshot_times,
        seconds=sum(p.seconds for p in parts), trace_seconds=sum(p.trace_seconds for p in parts),
        model_calls=first.model_calls, settings={**first.settings, "batch_size": batch_size},
    )
