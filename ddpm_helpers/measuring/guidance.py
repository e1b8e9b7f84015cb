"""Classifier-free guidance: class-conditional sampling and its trade-off (chapter "Guidance", ``sec-guidance``).

Classifier-free guidance (Ho & Salimans 2022) needs three pieces, each of which lives where the
rest of its kind lives:

1. a model that takes a class label, with one extra *null* label meaning "no condition":
   ``build_unet(..., num_classes=K)`` (or :func:`ddpm_helpers.playground.toy2d.build_mlp_denoiser` with
   ``num_classes``), whose label embedding has ``K + 1`` rows, row ``K`` being the null label;
2. training with *label dropout*: each label is replaced by the null label with probability
   ``label_dropout`` (:func:`ddpm_helpers.engine.train_step.drop_labels`, used by
   ``make_train_step`` and ``load_or_train(..., num_classes=K, label_dropout=p)``), so one network
   learns both the conditional and the unconditional noise prediction;
3. at sampling time the guided prediction
   ``eps_w = eps(x_t, t, null) + w (eps(x_t, t, c) - eps(x_t, t, null))``
   (chapter "Guidance", Eq. (13.3) (``eq-cfg``)), a noise predictor made by
   :func:`ddpm_helpers.method.predictors.classifier_free_guidance` that plugs into both samplers.

This module adds what the experiments with it need: :func:`guided_sample` (the samplers with the
guided predictor), :func:`class_agreement` and :func:`within_class_diversity` (the two sides of
the trade-off), and :func:`guidance_sweep`, which measures both over several guidance scales.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ddpm_helpers.method.predictors import classifier_free_guidance

__all__ = ["classifier_free_guidance", "null_label_of", "guided_sample", "class_agreement",
           "mean_pairwise_distance", "within_class_diversity", "GuidancePoint", "guidance_sweep",
           "balanced_labels"]


def null_label_of(model) -> int:
    """The null label of a class-conditional Keras model: the last row of its ``label_embedding`` (= num_classes)."""
    try:
        layer = model.get_layer("label_embedding")
    except ValueError:
        raise ValueError(
            "This model has no layer named 'label_embedding': it is not class-conditional. Build it with "
            "num_classes=K (build_unet or build_mlp_denoiser) and train it with labels."
        ) from None
    return int(layer.input_dim) - 1


def _data_shape(model) -> tuple:
    shape = tuple(model.inputs[0].shape[1:])
    if any(s is None for s in shape):
        raise ValueError(f"The model's first input has an unknown shape {shape}: cannot tell the data shape.")
    return shape


def balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
    """``per_class`` copies of each label 0..num_classes-1, grouped: [0, 0, ..., 1, 1, ...] (int32)."""
    if num_classes < 1 or per_class < 1:
        raise ValueError(f"num_classes and per_class must be positive, got {num_classes} and {per_class}.")
    return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def guided_sample(model, schedule, labels, guidance_scale: float, *, sampler: str = "ddim", steps: int | None = 50,
                  eta: float = 0.0, seed: int = 0, batch_size: int | None = None, null_label: int | None = None,
                  **kwargs):
    """Samples of the requested ``labels`` (int (N,)) with classifier-free guidance of scale ``guidance_scale``.

    Wraps the conditional ``model`` with
    :func:`ddpm_helpers.method.predictors.classifier_free_guidance` and calls
    :func:`ddpm_helpers.engine.sampling.sample` (``sampler`` ``"ddpm"`` or ``"ddim"``; ``steps`` is
    DDIM's step count and ignored for DDPM). The data shape is read from the model, so this works
    for images and for 2-D points alike; ``kwargs`` go to the sampler (e.g. ``clip_x0=False`` for
    2-D data). Returns a :class:`~ddpm_helpers.engine.sampling.SampleResult`. Scale 0 samples the
    unconditional model, 1 the conditional one.
    """
    from ddpm_helpers.engine import sampling

    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array (one requested class per sample), got "
                         f"{labels.dtype} {labels.shape}.")
    null = null_label_of(model) if null_label is None else int(null_label)
    if labels.size and (labels.min() < 0 or labels.max() >= null):
        raise ValueError(f"Requested labels must lie in [0, {null}) ({null} is the null label), got "
                         f"{labels.min()}..{labels.max()}.")
    predictor = classifier_free_guidance(model, guidance_scale, null)
    return sampling.sample(predictor, schedule, len(labels), _data_shape(model), sampler=sampler,
                           steps=steps if sampler == "ddim" else None, eta=eta, seed=seed,
                           labels=labels.astype(np.int32), batch_size=batch_size, **kwargs)


def class_agreement(predicted, requested) -> float:
    """Share of samples whose predicted class equals the requested one."""
    predicted, requested = np.asarray(predicted), np.asarray(requested)
    if predicted.shape != requested.shape or predicted.ndim != 1:
        raise ValueError(f"predicted and requested must be 1-D of the same length, got {predicted.shape} "
                         f"and {requested.shape}.")
    return float(np.mean(predicted == requested))


def mean_pairwise_distance(samples) -> float:
    """Mean Euclidean distance between two different samples of a set (samples flattened to vectors).

    ``scipy.spatial.distance.pdist``: every pair once, computed from the differences (stable).
    Chapter "Guidance".
    """
    from scipy.spatial.distance import pdist

    x = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if len(x) < 2:
        raise ValueError(f"Need at least 2 samples to measure their spread, got {len(x)}.")
    return float(pdist(x).mean())


def within_class_diversity(samples, labels) -> float:
    """:func:`mean_pairwise_distance` within each class (of ``labels``), averaged over the classes.

    Measures how different the samples of one requested class are from each other; compare it
    with the same number for real data of those classes.
    """
    labels = np.asarray(labels)
    classes = [c for c in np.unique(labels) if np.sum(labels == c) >= 2]
    if not classes:
        raise ValueError("Need at least one class with 2 or more samples.")
    samples = np.asarray(samples)
    return float(np.mean([mean_pairwise_distance(samples[labels == c]) for c in classes]))


@dataclasses.dataclass
class GuidancePoint:
    """One guidance scale of a sweep: ``agreement`` (share classified as requested), ``diversity``
    (:func:`within_class_diversity`), ``samples``, the requested ``labels`` and the sampling ``seconds``."""

    scale: float
    agreement: float
    diversity: float
    samples: np.ndarray
    labels: np.ndarray
    seconds: float


def guidance_sweep(model, schedule, scales, classify, *, labels, seed: int = 0, **sample_kwargs) -> list:
    """Sample the same requested ``labels`` (and the same starting noise, ``seed``) at every guidance scale.

    ``classify(samples) -> predicted classes`` (e.g. the digit classifier's arg-max, or
    :func:`ddpm_helpers.playground.toy_data.nearest_gaussian`) gives the agreement.
    ``sample_kwargs`` go to :func:`guided_sample`. Returns a list of :class:`GuidancePoint`, one per
    scale.
    """
    labels = np.asarray(labels, dtype=np.int32)
    points = []
    for scale in scales:
        result = guided_sample(model, schedule, labels, float(scale), seed=seed, **sample_kwargs)
        predicted = np.asarray(classify(result.images))
        points.append(GuidancePoint(scale=float(scale), agreement=class_agreement(predicted, labels),
                                    diversity=within_class_diversity(result.images, labels),
                                    samples=result.images, labels=labels, seconds=result.seconds))
    return points
