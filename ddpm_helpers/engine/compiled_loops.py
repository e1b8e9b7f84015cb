"""The sampling loops compiled with ``tf.function``, cached on the model (chapter "Sampling", ``sec-sampling``).

:func:`ddpm_loop` and :func:`ddim_loop` wrap the loops of :mod:`ddpm_helpers.method.samplers`
(Eqs. (9.2) (``eq-p-sample``) and (9.5) (``eq-ddim-step``)) in one ``tf.function`` each. The time
index, DDIM's step positions and eta, and the guidance scale are tensor inputs, so one trace serves
every chunk, step count, eta and scale. The compiled loops are cached in an attribute of the
predictor's owner (the Keras model): they are reused while the model lives and freed with it.
"""

from __future__ import annotations

from ddpm_helpers.method.predictors import as_noise_predictor
from ddpm_helpers.method.samplers import ddim_steps, ddpm_steps

# Compiled loops live in this attribute of the predictor's owner (the model): freed with it.
LOOP_CACHE_ATTRIBUTE = "_ddpm_helpers_compiled_loops"


def compiled_loops(owner) -> dict:
    """The compiled loops cached on ``owner`` (a model or function): ``{settings: tf.function}``."""
    cache = getattr(owner, LOOP_CACHE_ATTRIBUTE, None)
    if cache is None:
        cache = {}
        try:  # object.__setattr__: Keras must not track (or save) the cache
            object.__setattr__(owner, LOOP_CACHE_ATTRIBUTE, cache)
        except (AttributeError, TypeError):  # e.g. a builtin: nothing to hang a cache on
            pass
    return cache


def _compiled(predictor, key: tuple, make, jit_compile: bool):
    """``tf.function(make())``, made once per predictor owner and ``key``, cached on the owner."""
    import tensorflow as tf

    key = key + (jit_compile,) + predictor.key  # schedules in keys hash by identity
    cache = compiled_loops(predictor.owner)
    if key not in cache:
        cache[key] = tf.function(make(), reduce_retracing=True, jit_compile=jit_compile)
    return cache[key]


def ddpm_loop(schedule, predict_noise, *, clip_x0: bool = True, variance: str = "beta_tilde",
              jit_compile: bool = False):
    """The compiled DDPM loop ``run(x, start, stop, seed, stream, labels=None) -> x``.

    ``run`` applies :func:`~ddpm_helpers.method.samplers.ddpm_steps` at array positions
    ``start - 1, ..., stop`` (the paper's t = start, ..., stop + 1). ``jit_compile=True`` also
    compiles the loop with XLA: on the book's CPU models one long run samples about 1.7 times
    faster, but XLA compiles again for every new pair of loop bounds, so runs cut into chunks
    (snapshots, progress bars) become far slower; hence the default False.
    Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    predictor = as_noise_predictor(predict_noise)
    fn = predictor.fn

    def make():
        def ddpm_run(x, start, stop, seed, stream, labels=None, extra=()):
            def predict(x, t, labels):
                return fn(x, t, labels, *extra)

            return ddpm_steps(schedule, predict, x, start, stop, seed, stream, labels,
                              clip_x0=clip_x0, variance=variance)

        return ddpm_run

    compiled = _compiled(predictor, ("ddpm", schedule, bool(clip_x0), variance), make, jit_compile)

    def run(x, start, stop, seed, stream, labels=None):
        return compiled(x, start, stop, seed, stream, labels, predictor.args)

    run.compiled = compiled
    return run


def ddim_loop(schedule, predict_noise, *, clip_x0: bool = True, jit_compile: bool = False):
    """The compiled DDIM loop ``run(x, taus, start, stop, eta, seed, stream, labels=None) -> x``.

    ``run`` applies :func:`~ddpm_helpers.method.samplers.ddim_steps` for k = start - 1, ..., stop;
    ``taus`` and ``eta`` are tensors, so one trace serves every step count and eta.
    Chapter "Sampling", Eq. (9.5) (``eq-ddim-step``).
    """
    predictor = as_noise_predictor(predict_noise)
    fn = predictor.fn

    def make():
        def ddim_run(x, taus, start, stop, eta, seed, stream, labels=None, extra=()):
            def predict(x, t, labels):
                return fn(x, t, labels, *extra)

            return ddim_steps(schedule, predict, x, taus, start, stop, eta, seed, stream, labels,
                              clip_x0=clip_x0)

        return ddim_run

    compiled = _compiled(predictor, ("ddim", schedule, bool(clip_x0)), make, jit_compile)

    def run(x, taus, start, stop, eta, seed, stream, labels=None):
        return compiled(x, taus, start, stop, eta, seed, stream, labels, predictor.args)

    run.compiled = compiled
    return run
