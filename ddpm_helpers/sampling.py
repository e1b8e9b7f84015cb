"""Sampling (chapter "Sampling", ``sec-sampling``): ancestral DDPM and DDIM, compiled with ``tf.function``.

Both samplers run the reverse process from pure noise x_T to an image x_0. They never see a
Keras model directly: they call a *noise predictor* ``predict_noise(x, t, labels) -> eps``
(:func:`as_noise_predictor` makes one from a model). Anything with that signature plugs in,
for instance classifier-free guidance (:func:`classifier_free_guidance`) or, in the tests, the
closed-form optimal predictor for Gaussian data.

- :func:`ddpm_sample`: ancestral sampling, Eq. (eq-p-sample), over all T steps, with the
  posterior variance beta_tilde_t (or beta_t) and no noise on the last step.
- :func:`ddim_sample`: DDIM (Song et al. 2021), Eq. (eq-ddim-step), on any sub-sequence of S
  steps with any eta in [0, 1]; eta = 0 is deterministic.
- :func:`sample`: either of them by name, in batches.
- :func:`cached_samples`: samples of a trained run, stored in the run folder so that the
  chapters "Sampling" and "Evaluation" share them.

The whole reverse loop is a ``tf.range`` loop inside one ``tf.function`` (the time index t is a
tensor, so one trace serves every chunk and every DDIM step count). The loop runs in chunks only
to advance a progress bar and to keep snapshots: memory grows with the number of snapshots, never
with T. Random numbers are stateless, keyed by ``(seed, step)``: the same seed gives the same
samples whatever the chunking, and DDPM and DDIM draw the same noise at the same step.

Time indices follow :mod:`ddpm_helpers.schedules`: array position ``i`` is the paper's step
``t = i + 1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import platform
import sys
import time
import weakref
from pathlib import Path

import numpy as np

SAMPLERS = ("ddpm", "ddim")
VARIANCES = ("beta_tilde", "beta")
SAMPLES_FOLDER = "samples"
# The DDIM step counts the chapters compare with DDPM (those <= T are used).
DDIM_STEP_COUNTS = (10, 20, 50, 100)
# Steps per compiled call when a progress bar is shown: the bar advances about this many times.
PROGRESS_UPDATES = 20


# --------------------------------------------------------------------------------------------
# Noise predictors
# --------------------------------------------------------------------------------------------

_PREDICTORS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, keras.Model)


def _model_takes_labels(model) -> bool:
    return len(getattr(model, "inputs", None) or []) >= 3


def as_noise_predictor(model_or_fn):
    """A noise predictor ``predict_noise(x, t, labels) -> eps`` from a Keras model or a function.

    - A Keras model is called as ``model([x, t])``, or ``model([x, t, labels])`` when it takes
      three inputs (class-conditional; ``labels`` int32 (B,), ``num_classes`` is the null label).
    - A function ``fn(x, t)`` is wrapped (it must not be given labels); a function that already
      takes ``(x, t, labels)`` is returned as it is.

    ``x`` is float32 (B, H, W, C), ``t`` int32 (B,) array positions in [0, T).
    Chapter "Sampling", Eq. (eq-p-sample).
    """
    if getattr(model_or_fn, "_is_noise_predictor", False):
        return model_or_fn
    try:  # one predictor per model, so that its compiled loops are reused (see ddpm_loop)
        return _PREDICTORS[model_or_fn]
    except (KeyError, TypeError):
        pass
    predictor = _make_noise_predictor(model_or_fn)
    try:
        _PREDICTORS[model_or_fn] = predictor
    except TypeError:  # not weak-referenceable
        pass
    return predictor


def _make_noise_predictor(model_or_fn):
    if _is_keras_model(model_or_fn):
        model = model_or_fn
        conditional = _model_takes_labels(model)

        def predict_noise(x, t, labels=None):
            if conditional:
                if labels is None:
                    raise ValueError(
                        "This model is class-conditional (it takes [x, t, label]): pass labels=..., an int array "
                        "of shape (n,); use the null label num_classes for unconditional samples."
                    )
                return model([x, t, labels], training=False)
            if labels is not None:
                raise ValueError("This model is unconditional (it takes [x, t]): do not pass labels.")
            return model([x, t], training=False)

        predict_noise._is_noise_predictor = True
        predict_noise.model = model
        predict_noise.conditional = conditional
        return predict_noise
    if not callable(model_or_fn):
        raise ValueError(f"Expected a Keras model or a function predict_noise(x, t), got {type(model_or_fn).__name__}.")
    fn = model_or_fn
    try:
        positional = [p for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        takes_labels = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in positional)
    except (TypeError, ValueError):  # builtins without a signature
        takes_labels = False
    if takes_labels:
        def predict_noise(x, t, labels=None):
            return fn(x, t, labels)
    else:
        def predict_noise(x, t, labels=None):
            if labels is not None:
                raise ValueError("This noise predictor takes (x, t) only: do not pass labels, or give it a "
                                 "third argument for them.")
            return fn(x, t)
    predict_noise._is_noise_predictor = True
    predict_noise.conditional = takes_labels
    return predict_noise


def classifier_free_guidance(model, guidance_scale: float, null_label: int):
    """A noise predictor with classifier-free guidance (Ho & Salimans 2022) for a conditional model.

    ``eps = eps(x, t, null) + w (eps(x, t, label) - eps(x, t, null))`` with ``w = guidance_scale``:
    w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes samples towards
    their label. Both predictions come from one model call on a doubled batch. The result plugs
    into :func:`ddpm_sample` and :func:`ddim_sample` like any predictor (pass ``labels``).
    """
    import tensorflow as tf

    if not _is_keras_model(model) or not _model_takes_labels(model):
        raise ValueError("classifier_free_guidance needs a class-conditional Keras model (inputs [x, t, label]).")
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}.")
    w = float(guidance_scale)

    def predict_noise(x, t, labels=None):
        if labels is None:
            raise ValueError("Guided sampling needs labels=... (int array of shape (n,)).")
        labels = tf.cast(labels, tf.int32)
        null = tf.fill(tf.shape(labels), tf.constant(int(null_label), tf.int32))
        eps = model([tf.concat([x, x], 0), tf.concat([t, t], 0), tf.concat([labels, null], 0)], training=False)
        eps_cond, eps_uncond = tf.split(eps, 2, axis=0)
        return eps_uncond + w * (eps_cond - eps_uncond)

    predict_noise._is_noise_predictor = True
    predict_noise.model = model
    predict_noise.conditional = True
    predict_noise.guidance_scale = w
    return predict_noise


# --------------------------------------------------------------------------------------------
# The steps (pure functions of tensors; the chapter checks them against the equations)
# --------------------------------------------------------------------------------------------

def step_noise(seed, stream, step, shape, timesteps: int):
    """Standard normal noise for reverse step ``step`` (array position), stateless in ``(seed, stream, step)``.

    ``stream`` separates batches of one request; position ``timesteps`` is x_T itself.
    """
    import tensorflow as tf

    counter = tf.cast(stream, tf.int64) * (timesteps + 1) + tf.cast(step, tf.int64)
    key = tf.stack([tf.cast(seed, tf.int64), counter])
    # Not tf.random.stateless_normal: under XLA it makes other numbers from the same key than the
    # plain kernel does, so samples would change with jit_compile. Random integers agree in both;
    # (k + 1/2) / 2^23 makes them uniform on (0, 1) (exact in float32, never 0 or 1), and the inverse
    # normal CDF makes those normal: the same noise with and without XLA, up to rounding.
    bits = tf.random.stateless_uniform(shape, seed=key, minval=0, maxval=2**23, dtype=tf.int32, alg="philox")
    return tf.math.ndtri((tf.cast(bits, tf.float32) + 0.5) / 2.0**23)


def p_mean_variance(schedule, predict_noise, x, t, labels=None, *, clip_x0: bool = True,
                    variance: str = "beta_tilde"):
    """Mean and variance of p_theta(x_{t-1} | x_t) (chapter "Sampling", Eq. (eq-p-sample)).

    The network predicts the noise; Eq. (eq-x0-from-eps) turns it into a guess of x_0, clipped to
    [-1, 1] when ``clip_x0``; the mean is the posterior mean of q(x_{t-1} | x_t, x_0) at that
    guess (Eq. (eq-posterior-mean)). ``variance`` is ``"beta_tilde"`` (the posterior variance)
    or ``"beta"``. Returns ``(mean, variance, x0_hat, eps)``.
    """
    import tensorflow as tf

    from ddpm_helpers.diffusion import predict_x0_from_noise, q_posterior

    eps = predict_noise(x, t, labels)
    x0_hat = predict_x0_from_noise(schedule, x, t, eps)
    if clip_x0:
        x0_hat = tf.clip_by_value(x0_hat, -1.0, 1.0)
    mean, beta_tilde, _ = q_posterior(schedule, x0_hat, x, t)
    var = beta_tilde if variance == "beta_tilde" else schedule.gather("betas", t, ndim=x.shape.rank)
    return mean, var, x0_hat, eps


def p_sample(schedule, predict_noise, x, t, noise, labels=None, *, clip_x0: bool = True,
             variance: str = "beta_tilde"):
    """One ancestral step x_t -> x_{t-1} = mean + sqrt(variance) z, with no noise at t = 0 (the paper's t = 1).

    ``t`` is int32 (B,), all equal; ``noise`` is z, standard normal like ``x``.
    Chapter "Sampling", Eq. (eq-p-sample).
    """
    import tensorflow as tf

    mean, var, _, _ = p_mean_variance(schedule, predict_noise, x, t, labels, clip_x0=clip_x0, variance=variance)
    nonzero = tf.reshape(tf.cast(t > 0, tf.float32), [-1] + [1] * (x.shape.rank - 1))
    return mean + nonzero * tf.sqrt(var) * noise


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """DDIM's noise scale: eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev).

    Chapter "Sampling", Eq. (eq-ddim-sigma). With eta = 1 and consecutive steps it is sqrt(beta_tilde_t).
    """
    import tensorflow as tf

    return eta * tf.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)) * tf.sqrt(1.0 - alpha_bar_t / alpha_bar_prev)


def ddim_step(schedule, predict_noise, x, t, alpha_bar_prev, eta, noise, labels=None, *, clip_x0: bool = True):
    """One DDIM step from x at array position ``t`` to the earlier time whose alpha_bar is ``alpha_bar_prev``.

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z
    (chapter "Sampling", Eq. (eq-ddim-step)); ``alpha_bar_prev`` = 1 on the last step gives x0_hat.
    When x0_hat is clipped, eps is recomputed from it so that both terms agree.
    """
    import tensorflow as tf

    from ddpm_helpers.diffusion import predict_noise_from_x0, predict_x0_from_noise

    eps = predict_noise(x, t, labels)
    x0_hat = predict_x0_from_noise(schedule, x, t, eps)
    if clip_x0:
        x0_hat = tf.clip_by_value(x0_hat, -1.0, 1.0)
        eps = predict_noise_from_x0(schedule, x, t, x0_hat)
    alpha_bar_t = schedule.gather("alpha_bars", t, ndim=x.shape.rank)
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = tf.sqrt(tf.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps
    return tf.sqrt(alpha_bar_prev) * x0_hat + direction + sigma * noise


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """The S array positions DDIM visits, increasing, evenly spaced from 0 to T - 1 (both included)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= timesteps:
        raise ValueError(
            f"DDIM steps must be an integer between 1 and T = {timesteps}, got {steps!r}; e.g. steps=50."
        )
    if steps == 1:
        return np.array([timesteps - 1], dtype=np.int32)
    return np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int32)


# --------------------------------------------------------------------------------------------
# The compiled loops
# --------------------------------------------------------------------------------------------

_COMPILED: dict = {}


def ddpm_loop(schedule, predict_noise, *, clip_x0: bool = True, variance: str = "beta_tilde",
              jit_compile: bool = False):
    """The compiled reverse loop of DDPM, ``run(x, start, stop, seed, stream, labels) -> x``.

    ``run`` applies :func:`p_sample` at array positions ``start - 1, start - 2, ..., stop`` (the
    paper's t = start, ..., stop + 1) inside one ``tf.function``: AutoGraph turns the ``tf.range``
    loop into a graph while-loop, and ``t`` is a tensor, so one trace serves the whole run (and
    every chunk of it). The noise of position i is keyed by ``(seed, stream, i)``
    (:func:`step_noise`). Loops are cached per schedule, predictor and settings.
    ``jit_compile=True`` also compiles the loop with XLA: on the book's CPU models one long run
    samples about 1.7 times faster, but XLA compiles again for every new pair of loop bounds, so
    runs cut into many chunks (snapshots, progress bars) become far slower; hence the default False.
    Chapter "Sampling", Eq. (eq-p-sample).
    """
    import tensorflow as tf

    key = ("ddpm", id(schedule), id(predict_noise), clip_x0, variance, jit_compile)
    if key in _COMPILED:
        return _COMPILED[key][0]
    T = schedule.timesteps

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def run(x, start, stop, seed, stream, labels=None):
        batch = tf.shape(x)[0]
        for i in tf.range(start - 1, stop - 1, -1):
            t = tf.fill([batch], i)  # every image of the batch is at the same step
            noise = step_noise(seed, stream, i, tf.shape(x), T)
            x_prev = p_sample(schedule, predict_noise, x, t, noise, labels, clip_x0=clip_x0, variance=variance)
            x = tf.ensure_shape(x_prev, x.shape)
        return x

    _COMPILED[key] = (run, schedule, predict_noise)  # keep both alive so that their ids stay unique
    return run


def ddim_loop(schedule, predict_noise, *, clip_x0: bool = True, jit_compile: bool = False):
    """The compiled loop of DDIM, ``run(x, taus, start, stop, eta, seed, stream, labels) -> x``.

    ``taus`` holds the S array positions visited (increasing, see :func:`ddim_timesteps`);
    ``run`` applies :func:`ddim_step` for k = start - 1, ..., stop, from position ``taus[k]`` to
    ``taus[k - 1]`` (to x_0 when k = 0). ``taus`` and ``eta`` are tensors: one trace serves every
    step count and eta. Chapter "Sampling", Eq. (eq-ddim-step).
    """
    import tensorflow as tf

    key = ("ddim", id(schedule), id(predict_noise), clip_x0, jit_compile)
    if key in _COMPILED:
        return _COMPILED[key][0]
    T = schedule.timesteps

    @tf.function(reduce_retracing=True, jit_compile=jit_compile)
    def run(x, taus, start, stop, eta, seed, stream, labels=None):
        batch, rank = tf.shape(x)[0], x.shape.rank
        for k in tf.range(start - 1, stop - 1, -1):
            t = tf.fill([batch], taus[k])
            t_prev = tf.fill([batch], taus[tf.maximum(k - 1, 0)])
            alpha_bar_prev = tf.where(k > 0, schedule.gather("alpha_bars", t_prev, ndim=rank), 1.0)
            noise = step_noise(seed, stream, taus[k], tf.shape(x), T)
            x_prev = ddim_step(schedule, predict_noise, x, t, alpha_bar_prev, eta, noise, labels, clip_x0=clip_x0)
            x = tf.ensure_shape(x_prev, x.shape)
        return x

    _COMPILED[key] = (run, schedule, predict_noise)
    return run


@dataclasses.dataclass
class SampleResult:
    """What a sampler returns.

    ``images`` float32 (N, H, W, C) in the model's range (about [-1, 1]; see
    :func:`ddpm_helpers.plotting.to_display_range`); ``labels`` int32 (N,) or None;
    ``snapshots`` float32 (K, N, H, W, C) or None, the states x_t at the paper's times
    ``snapshot_times`` (T first, 0 last = ``images``); ``seconds`` the wall time of the sampling
    itself and ``trace_seconds`` that of tracing the loop (paid once per loop and shape);
    ``model_calls`` the number of network evaluations per image; ``info`` where and when
    cached samples were drawn (:func:`cached_samples`).
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
        return (f"SampleResult({self.images.shape[0]} images {self.images.shape[1:]}, {self.settings.get('sampler')}"
                f" {self.model_calls} steps, {self.seconds:.2f} s{snaps})")


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (N, H, W, C) (or (N, D)) with positive sizes, got {shape}.")
    return shape


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
    """Run ``advance(x, done, done_next)`` over [0, total] in chunks; keep snapshots; show progress."""
    frames = _frame_positions(total, snapshots)
    bounds = set(frames) | {0, total}
    if progress:
        every = max(1, math.ceil(total / PROGRESS_UPDATES))
        bounds |= set(range(0, total, every))
    bounds = sorted(bounds)
    bar = None
    if progress:
        import keras

        interactive = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        bar = keras.utils.Progbar(total, unit_name="step", interval=0.5 if interactive else 5.0)
        print(label)
    kept, times = [], []
    if 0 in frames:
        kept.append(np.asarray(x))
        times.append(time_of(0))
    for done, done_next in zip(bounds[:-1], bounds[1:]):
        x = advance(x, done, done_next)
        if done_next in frames:
            kept.append(x.numpy())
            times.append(time_of(done_next))
        if bar is not None:
            bar.update(done_next, finalize=done_next == total)
    return x, (np.stack(kept) if kept else None), (times if kept else None)


def _prepare(model_or_fn, shape, labels, seed):
    import tensorflow as tf

    predict_noise = as_noise_predictor(model_or_fn)
    shape = _check_shape(shape)
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


def ddpm_sample(model_or_fn, schedule, shape, *, seed: int = 0, labels=None, clip_x0: bool = True,
                variance: str = "beta_tilde", snapshots: int = 0, progress: bool = False, x_T=None,
                stream: int = 0, jit_compile: bool = False) -> SampleResult:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2) over all T steps.

    ``model_or_fn``: a Keras model or a noise predictor (see :func:`as_noise_predictor`);
    ``shape``: (N, H, W, C); ``labels``: int (N,) for a conditional model; ``clip_x0``: clip the
    predicted x_0 to [-1, 1]; ``variance``: ``"beta_tilde"`` (posterior variance, default) or
    ``"beta"``; ``snapshots``: number of states x_t to keep, evenly spaced from x_T to x_0
    (0: none); ``progress``: show a progress bar; ``x_T``: a given start instead of noise from
    ``seed``. The loop is one ``tf.function`` (chapter "Sampling", Eq. (eq-p-sample)).
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
                                 time_of=lambda done: T - done, label=f"DDPM, {T} steps, {shape[0]} images")
    images = x.numpy()
    seconds = time.perf_counter() - began
    settings = dict(sampler="ddpm", steps=T, eta=None, variance=variance, clip_x0=bool(clip_x0), seed=int(seed))
    return SampleResult(images=images, labels=None if labels is None else labels.numpy(), snapshots=kept,
                        snapshot_times=times, seconds=seconds, trace_seconds=trace_seconds, model_calls=T,
                        settings=settings)


def ddpm_sample_eager(model_or_fn, schedule, shape, *, seed: int = 0, steps: int | None = None, labels=None,
                      clip_x0: bool = True, variance: str = "beta_tilde", x_T=None, stream: int = 0) -> np.ndarray:
    """The same ancestral steps as :func:`ddpm_sample`, as a plain Python loop of eager calls (the seed's way).

    For comparisons only (the chapter and ``benchmarks/bench_sampling.py``): every step calls the
    model eagerly, op by op. ``steps`` runs only the first ``steps`` reverse steps (from t = T);
    with the same seed the result equals the compiled sampler's up to float round-off.
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
    Chapter "Sampling", Eqs. (eq-ddim-step) and (eq-ddim-sigma).
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
    images = x.numpy()
    seconds = time.perf_counter() - began
    settings = dict(sampler="ddim", steps=S, eta=eta, variance=None, clip_x0=bool(clip_x0), seed=int(seed))
    return SampleResult(images=images, labels=None if labels is None else labels.numpy(), snapshots=kept,
                        snapshot_times=times, seconds=seconds, trace_seconds=trace_seconds, model_calls=S,
                        settings=settings)


def sample(model_or_fn, schedule, num_images: int, image_shape, *, sampler: str = "ddpm", steps: int | None = None,
           eta: float = 0.0, seed: int = 0, labels=None, batch_size: int | None = None, progress: bool = False,
           **kwargs) -> SampleResult:
    """``num_images`` samples with ``sampler`` ``"ddpm"`` or ``"ddim"``, drawn in batches of ``batch_size``.

    ``image_shape`` is (H, W, C); ``steps`` is DDIM's step count (default: T; DDPM always uses T);
    batch ``b`` uses random stream ``b``, so results depend on ``seed`` and ``batch_size`` only.
    Other keyword arguments go to :func:`ddpm_sample` / :func:`ddim_sample`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}. Valid: {', '.join(SAMPLERS)}.")
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) or num_images < 1:
        raise ValueError(f"num_images must be a positive integer, got {num_images!r}.")
    if sampler == "ddpm" and steps not in (None, schedule.timesteps):
        raise ValueError(f"DDPM always runs all T = {schedule.timesteps} steps; use sampler='ddim' for {steps} steps.")
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
            parts.append(ddim_sample(model_or_fn, schedule, shape, steps=schedule.timesteps if steps is None else steps, eta=eta,
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


# --------------------------------------------------------------------------------------------
# Samples of a trained run, cached in its folder
# --------------------------------------------------------------------------------------------

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


def cached_samples(run, num_images: int, *, sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                   seed: int = 0, batch_size: int | None = None, snapshots: int = 0, progress: bool = True,
                   labels=None, refresh: bool = False, verbose: bool = True) -> SampleResult:
    """Samples from the EMA model of a trained run (:class:`ddpm_helpers.training.TrainedRun`), cached.

    They are stored in ``run.run_dir/samples/`` under a name made of the sampler settings and a
    hash of the EMA weights, so the chapters "Sampling" and "Evaluation" draw them once per
    trained model (``refresh=True`` draws them again; a request for ``snapshots`` that the stored
    file lacks does too). ``seconds`` is the wall time measured when they were drawn;
    ``info`` says when, on which machine, and where the file is.
    """
    T = run.schedule.timesteps
    steps = T if sampler == "ddpm" or steps is None else int(steps)
    if sampler not in SAMPLERS:
        raise ValueError(f"Unknown sampler {sampler!r}. Valid: {', '.join(SAMPLERS)}.")
    if labels is None:
        labels = default_labels(num_images, getattr(run, "num_classes", None))
    settings = dict(sampler=sampler, steps=steps, eta=float(eta) if sampler == "ddim" else None,
                    seed=int(seed), n=int(num_images), batch_size=batch_size,
                    weights=weights_fingerprint(run.ema_model),
                    labels=None if labels is None else hashlib.sha256(np.asarray(labels, np.int32).tobytes()).hexdigest()[:8])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    name = f"{sampler}-{steps}" + (f"-eta{eta:g}" if sampler == "ddim" else "") + f"-n{num_images}-seed{seed}-{key}.npz"
    path = Path(run.run_dir) / SAMPLES_FOLDER / name
    what = f"{num_images} {sampler.upper()}-{steps}" + (f" (eta = {eta:g})" if sampler == "ddim" else "") + " samples"
    if path.exists() and not refresh:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(str(stored["meta"]))
            stored_snapshots = stored["snapshots"] if "snapshots" in stored else None
            if not snapshots or (stored_snapshots is not None and len(stored_snapshots) == snapshots):
                result = SampleResult(
                    images=stored["images"], labels=stored["labels"] if "labels" in stored else None,
                    snapshots=stored_snapshots if snapshots else None,
                    snapshot_times=meta.get("snapshot_times") if snapshots else None, seconds=meta["seconds"],
                    trace_seconds=meta["trace_seconds"], model_calls=meta["model_calls"], settings=meta["settings"],
                    info=dict(drawn_at=meta["drawn_at"], machine=meta["machine"], path=str(path), cached=True))
                if verbose:
                    print(f"Loaded {what} from {path} (drawn {meta['drawn_at']} in {meta['seconds']:.1f} s).")
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
    if verbose:
        print(f"Drew {what} in {result.seconds:.1f} s (+{result.trace_seconds:.1f} s tracing); saved to {path}.")
    return result


# --------------------------------------------------------------------------------------------
# Command line: python -m ddpm_helpers sample
# --------------------------------------------------------------------------------------------

def save_samples(path, images, *, labels=None, meta: dict | None = None):
    """Write ``images`` (float in [-1, 1]) as uint8 N x H x W x C to an ``.npz`` (with ``labels`` and a JSON ``meta``)."""
    from ddpm_helpers.plotting import to_uint8

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


def sample_from_cli(args) -> int:
    """``python -m ddpm_helpers sample --run RUN --n N --sampler ddpm|ddim [--steps S] [--eta E] [--seed K] --out F``."""
    from ddpm_helpers.training import load_run

    try:
        if args.n < 1:
            raise ValueError(f"--n must be a positive number of images, got {args.n}.")
        if args.sampler == "ddpm" and args.steps is not None:
            raise ValueError("DDPM always runs all T steps: drop --steps, or use --sampler ddim --steps S.")
        if not str(args.out).endswith(".npz"):
            raise ValueError(f"--out must be an .npz file, got {args.out!r}; e.g. --out samples.npz.")
        run = load_run(args.run)
        profile = run.profile
        labels = default_labels(args.n, run.num_classes)
        batch_size = getattr(args, "batch_size", None) or min(args.n, 500)
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
    return 0
