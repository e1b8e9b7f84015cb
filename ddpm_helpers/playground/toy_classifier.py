"""A classifier of noisy 2-D points, for classifier guidance (chapter "Guidance", ``sec-guidance``).

:func:`train_noisy_classifier` fits ``p(c | x_t)`` at every noise level: each step noises a batch
of labelled points to random steps t with :func:`ddpm_helpers.method.diffusion.q_sample` and
minimises the cross-entropy of their labels. The network is the 2-D chapter's MLP
(:func:`ddpm_helpers.playground.toy2d.build_mlp_denoiser`) with one output per class.
"""

from __future__ import annotations

import numpy as np

from ddpm_helpers.playground.toy2d import build_mlp_denoiser


def train_noisy_classifier(points, labels, schedule, *, num_classes: int, steps: int = 1000,
                           batch_size: int = 512, learning_rate: float = 3e-3, seed: int = 0):
    """A Keras model ``[x_t, t] -> logits`` (B, num_classes) trained on noised ``points`` (N, 2)
    with their ``labels`` (N,). Returns ``(model, losses)``."""
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import q_sample

    points = np.asarray(points, np.float32)
    labels = np.asarray(labels, np.int32)
    if points.ndim != 2 or labels.shape != (len(points),):
        raise ValueError(f"points must be (N, D) and labels (N,), got {points.shape} and {labels.shape}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}.")
    keras.utils.set_random_seed(seed)
    # The denoiser MLP with num_classes outputs instead of a noise vector.
    model = build_mlp_denoiser(data_dim=points.shape[1], name="noisy_classifier")
    body = keras.Model(model.inputs, model.layers[-2].output)
    logits = keras.layers.Dense(num_classes, name="logits")(body.output)
    classifier = keras.Model(model.inputs, logits, name="noisy_classifier")
    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    T = schedule.timesteps

    @tf.function
    def step(x0, c, t, noise):
        with tf.GradientTape() as tape:
            loss = loss_fn(c, classifier([q_sample(schedule, x0, t, noise), t], training=True))
        weights = classifier.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        index = rng.integers(0, len(points), batch_size)
        t = rng.integers(0, T, batch_size).astype(np.int32)
        noise = rng.standard_normal((batch_size, points.shape[1])).astype(np.float32)
        losses.append(float(step(points[index], labels[index], t, noise)))
    return classifier, losses
