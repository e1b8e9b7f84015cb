"""Classifier guidance (chapter "Guidance"): with the exact classifier of a Gaussian mixture,
scale 1 turns the unconditional noise prediction into the class's own, scale 0 leaves it."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_helpers.method.diffusion import gaussian_mixture_posterior
from ddpm_helpers.method.predictors import classifier_guidance
from ddpm_helpers.method.schedules import make_schedule

MEANS = np.array([[-1.0, 0.5], [1.5, -0.5]])
STD = 0.4
SCHEDULE = make_schedule("linear", 100)


def unconditional(x, t, labels=None):
    ab = SCHEDULE.alpha_bars[t.numpy()]
    return tf.constant(gaussian_mixture_posterior(x.numpy(), ab, MEANS, STD)["eps_mean"], tf.float32)


def log_classifier(x, t):
    ab = tf.reshape(tf.gather(tf.constant(SCHEDULE.alpha_bars, tf.float32), t), [-1, 1, 1])
    var = ab * STD**2 + 1 - ab
    diff = x[:, None, :] - tf.sqrt(ab) * tf.constant(MEANS, tf.float32)[None]
    log_component = -0.5 * tf.reduce_sum(diff**2 / var, axis=2)  # equal weights and variances
    return tf.nn.log_softmax(log_component, axis=1)


def class_noise(x, t, c):
    ab = SCHEDULE.alpha_bars[t][:, None]
    var = ab * STD**2 + 1 - ab
    return np.sqrt(1 - ab) * (x - np.sqrt(ab) * MEANS[c]) / var


@pytest.mark.parametrize("label", [0, 1])
def test_scale_one_gives_the_class_noise_and_scale_zero_the_unconditional(label):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(16, 2)), tf.float32)
    t = tf.constant(rng.integers(0, 100, 16), tf.int32)
    labels = tf.fill([16], label)
    guided = classifier_guidance(unconditional, log_classifier, SCHEDULE, 1.0)(x, t, labels)
    assert np.allclose(guided.numpy(), class_noise(x.numpy(), t.numpy(), label), atol=1e-4)
    plain = classifier_guidance(unconditional, log_classifier, SCHEDULE, 0.0)(x, t, labels)
    assert np.allclose(plain.numpy(), unconditional(x, t).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        classifier_guidance(unconditional, log_classifier, SCHEDULE, 1.0)(x, t)
    with pytest.raises(ValueError, match="finite"):
        classifier_guidance(unconditional, log_classifier, SCHEDULE, float("nan"))


def test_a_noisy_classifier_learns_the_classes_of_2d_points():
    from ddpm_helpers.playground import toy2d, toy_classifier

    points, labels = toy2d.make_toy_data("eight_gaussians", 2000, seed=0, labels=True)
    model, losses = toy_classifier.train_noisy_classifier(points, labels, SCHEDULE, num_classes=8,
                                                          steps=150, batch_size=256)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    logits = model([tf.constant(points[:500]), tf.zeros([500], tf.int32)]).numpy()
    assert np.mean(logits.argmax(1) == labels[:500]) > 0.9  # at t = 1 the classes are plain
    with pytest.raises(ValueError, match="labels must lie"):
        toy_classifier.train_noisy_classifier(points, labels, SCHEDULE, num_classes=4, steps=1)
