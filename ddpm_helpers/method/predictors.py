"""Noise predictors: what the samplers call (chapter "Sampling", ``sec-sampling``).

The samplers never see a Keras model directly: they call a *noise predictor*
``predict_noise(x, t, labels) -> eps`` (Eq. (9.1) (``eq-x0-hat``) turns its output into a guess of
x_0). :func:`as_noise_predictor` makes one from a Keras model or a plain function, and
:func:`classifier_free_guidance` and :func:`classifier_guidance` make the guided ones of chapter
"Guidance" (Eqs. (13.3) (``eq-cfg``) and (13.1) (``eq-classifier-guidance``)).

A :class:`NoisePredictor` also says what its compiled sampling loops may be shared with:
``owner`` (the model or function; the loops are cached on it, so they die with it), ``key``
(what else fixes the computation, e.g. the null label) and ``args`` (tensors the computation
takes as inputs, e.g. the guidance scale, so that a new scale needs no new trace).
"""

from __future__ import annotations

import inspect
import math


class NoisePredictor:
    """``predict_noise(x, t, labels=None) -> eps`` = ``fn(x, t, labels, *args)``.

    ``x`` float32 (B, H, W, C) or (B, D); ``t`` int32 (B,) array positions in [0, T);
    ``labels`` int32 (B,) or None. See the module docstring for ``owner``, ``key`` and ``args``.
    """

    def __init__(self, fn, *, owner, key=(), args=(), conditional: bool = False, **info):
        self.fn, self.owner, self.key, self.args = fn, owner, tuple(key), tuple(args)
        self.conditional = bool(conditional)
        self.__dict__.update(info)  # e.g. model, guidance_scale, limit: for the reader

    def __call__(self, x, t, labels=None):
        return self.fn(x, t, labels, *self.args)

    def __repr__(self) -> str:
        return f"NoisePredictor(owner={type(self.owner).__name__}, key={self.key})"


def _is_keras_model(obj) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, keras.Model)


def _model_takes_labels(model) -> bool:
    return len(getattr(model, "inputs", None) or []) >= 3


def _call_model(model, conditional: bool):
    def predict_noise(x, t, labels):
        if conditional:
            if labels is None:
                raise ValueError(
                    "This model is class-conditional (it takes [x, t, label]): pass labels=..., an int "
                    "array of shape (n,); use the null label num_classes for unconditional samples."
                )
            return model([x, t, labels], training=False)
        if labels is not None:
            raise ValueError("This model is unconditional (it takes [x, t]): do not pass labels.")
        return model([x, t], training=False)

    return predict_noise


def _takes_labels(fn) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    kinds = [p.kind for p in parameters
             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    return len(kinds) >= 3 or inspect.Parameter.VAR_POSITIONAL in kinds


def as_noise_predictor(model_or_fn) -> NoisePredictor:
    """A :class:`NoisePredictor` from a Keras model or a function.

    - A Keras model is called as ``model([x, t])``, or ``model([x, t, labels])`` when it takes
      three inputs (class-conditional; ``num_classes`` is the null label).
    - A function ``fn(x, t)`` is wrapped (it must not be given labels); a function that
      takes ``(x, t, labels)`` is called with them. A NoisePredictor is returned as it is.

    Chapter "Sampling", Eq. (9.1) (``eq-x0-hat``).
    """
    if isinstance(model_or_fn, NoisePredictor):
        return model_or_fn
    if _is_keras_model(model_or_fn):
        conditional = _model_takes_labels(model_or_fn)
        return NoisePredictor(_call_model(model_or_fn, conditional), owner=model_or_fn,
                              conditional=conditional, model=model_or_fn)
    if not callable(model_or_fn):
        raise ValueError(f"Expected a Keras model or a function predict_noise(x, t), got "
                         f"{type(model_or_fn).__name__}.")
    fn = model_or_fn
    if _takes_labels(fn):
        return NoisePredictor(lambda x, t, labels: fn(x, t, labels), owner=fn, conditional=True)

    def without_labels(x, t, labels):
        if labels is not None:
            raise ValueError("This noise predictor takes (x, t) only: do not pass labels, or give it a "
                             "third argument for them.")
        return fn(x, t)

    return NoisePredictor(without_labels, owner=fn)


def classifier_free_guidance(
    model, guidance_scale: float, null_label: int
) -> NoisePredictor:
    """A noise predictor with classifier-free guidance (Ho & Salimans 2022) for a conditional model.

    ``eps = eps(x, t, null) + w (eps(x, t, label) - eps(x, t, null))`` with ``w = guidance_scale``
    (one model call on a doubled batch): w = 0 is the unconditional model, w = 1 the conditional one, w > 1
    pushes samples towards their label. It plugs into both samplers (pass ``labels``). The scale
    is a tensor input of the compiled loops: sampling at a new scale traces nothing new.
    Chapter "Guidance", Eq. (13.3) (``eq-cfg``).
    """
    import tensorflow as tf

    if not _is_keras_model(model) or not _model_takes_labels(model):
        raise ValueError(
            "classifier_free_guidance needs a class-conditional Keras model "
            "(inputs [x, t, label])."
        )
    if not math.isfinite(float(guidance_scale)):
        raise ValueError(
            f"guidance_scale must be a finite number, got {guidance_scale!r}."
        )
    null_label = int(null_label)

    def predict_noise(x, t, labels, w):  # w: the guidance scale, a tensor
        if labels is None:
            raise ValueError(
                "Guided sampling needs labels=... (int array of shape (n,))."
            )
        labels = tf.cast(labels, tf.int32)
        null = tf.fill(tf.shape(labels), tf.constant(null_label, tf.int32))
        eps = model(
            [
                tf.concat([x, x], 0),
                tf.concat([t, t], 0),
                tf.concat([labels, null], 0),
            ],
            training=False,
        )
        eps_cond, eps_uncond = tf.split(eps, 2, axis=0)
        # Eq. (13.3) (``eq-cfg``)
        return eps_uncond + w * (eps_cond - eps_uncond)

    scale = tf.constant(float(guidance_scale), tf.float32)
    return NoisePredictor(
        predict_noise,
        owner=model,
        key=("guidance", null_label),
        args=(scale,),
        conditional=True,
        model=model,
        guidance_scale=float(guidance_scale),
    )


def classifier_guidance(predict_noise, log_classifier, schedule, guidance_scale: float) -> NoisePredictor:
    """A noise predictor guided by a classifier of noisy data (Dhariwal & Nichol 2021).

    ``log_classifier(x, t)`` returns log-probabilities of the classes (B, K) for noisy ``x`` at
    step ``t``; its gradient for the requested label is added to the score, scaled by ``w``:
    ``eps_w = eps(x, t) - w sqrt(1 - alpha_bar_t) grad_x log p(label | x_t)`` (chapter "Guidance",
    Eq. (13.1) (``eq-classifier-guidance``) with the score of Eq. (3.2) (``eq-eps-score``)).
    ``predict_noise`` is an unconditional noise predictor; pass ``labels`` when sampling.
    """
    import tensorflow as tf

    if not math.isfinite(float(guidance_scale)):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}.")
    predict_noise = as_noise_predictor(predict_noise)

    def guided(x, t, labels, w):
        if labels is None:
            raise ValueError("Classifier guidance needs labels=... "
                             "(int array of shape (n,)).")
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_p = tf.gather(log_classifier(x, t),
                              tf.cast(labels, tf.int32), batch_dims=1)
        # grad log p(label | x_t), one row per sample
        gradient = tape.gradient(log_p, x)
        sigma = schedule.gather("sqrt_one_minus_alpha_bars", t,
                                ndim=x.shape.rank)
        # Eq. (13.1) (``eq-classifier-guidance``), as a noise prediction
        return predict_noise(x, t, None) - w * sigma * gradient

    scale = tf.constant(float(guidance_scale), tf.float32)
    return NoisePredictor(guided, owner=log_classifier, key=("classifier guidance",), args=(scale,),
                          conditional=True, guidance_scale=float(guidance_scale))
