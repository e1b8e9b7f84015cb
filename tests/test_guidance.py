"""Tests of classifier-free guidance: the conditional models, label dropout, the guided predictor and sampler."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy.spatial.distance import pdist

keras = pytest.importorskip("keras")

from ddpm_helpers.engine import training  # noqa: E402
from ddpm_helpers.measuring import guidance
from ddpm_helpers.playground import toy2d, toy_training
from ddpm_helpers.method.diffusion import diffusion_loss  # noqa: E402
from ddpm_helpers.method.schedules import make_schedule  # noqa: E402
from ddpm_helpers.method.unet import build_unet  # noqa: E402


def _mlp(num_classes=8, seed=0):
    keras.utils.set_random_seed(seed)
    return toy2d.build_mlp_denoiser(hidden=32, depth=2, time_embedding_dim=16, num_classes=num_classes)


def _unet(num_classes=10):
    keras.utils.set_random_seed(0)
    return build_unet(image_size=8, channels=1, widths=(8, 16), num_res_blocks=1, attention_resolutions=(),
                      attention_in_bottleneck=False, num_heads=1, key_dim=8, groups=4, time_embedding_dim=16,
                      num_classes=num_classes)


@pytest.fixture(scope="module")
def mlp():
    return _mlp()


# ---------------------------------------------------------------- the guided prediction


@pytest.mark.parametrize("which", ["mlp", "unet"])
def test_guided_prediction_shapes_and_limits(which):
    model = _mlp() if which == "mlp" else _unet()
    null = guidance.null_label_of(model)
    assert null == (8 if which == "mlp" else 10)
    rng = np.random.default_rng(0)
    shape = (6, 2) if which == "mlp" else (6, 8, 8, 1)
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    t = tf.constant([0, 3, 10, 40, 70, 99], tf.int32)
    labels = tf.constant([0, 1, 2, 3, 4, 5], tf.int32)
    eps_cond = model([x, t, labels]).numpy()
    eps_uncond = model([x, t, tf.fill([6], null)]).numpy()
    assert not np.allclose(eps_cond, eps_uncond)  # the label changes the prediction
    for w in (0.0, 1.0, 3.0):
        guided = guidance.classifier_free_guidance(model, w, null)(x, t, labels).numpy()
        assert guided.shape == shape
        np.testing.assert_allclose(guided, eps_uncond + w * (eps_cond - eps_uncond), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(guidance.classifier_free_guidance(model, 0.0, null)(x, t, labels).numpy(), eps_uncond,
                               rtol=1e-5, atol=1e-6)  # w = 0 is exactly the unconditional model
    np.testing.assert_allclose(guidance.classifier_free_guidance(model, 1.0, null)(x, t, labels).numpy(), eps_cond,
                               rtol=1e-5, atol=1e-6)  # w = 1 is the conditional model


def test_null_label_of_an_unconditional_model_is_an_error():
    with pytest.raises(ValueError, match="not class-conditional"):
        guidance.null_label_of(toy2d.build_mlp_denoiser(hidden=8, depth=1, time_embedding_dim=8))


# ---------------------------------------------------------------- label dropout


def test_drop_labels_uses_the_null_label():
    labels = tf.constant(np.arange(4000) % 10, tf.int32)
    key = tf.constant([3, 4], tf.int64)
    dropped = training.drop_labels(labels, key, 10, 0.3).numpy()
    is_null = dropped == 10
    assert abs(is_null.mean() - 0.3) < 0.03
    np.testing.assert_array_equal(dropped[~is_null], labels.numpy()[~is_null])  # the others are kept
    np.testing.assert_array_equal(training.drop_labels(labels, key, 10, 0.0).numpy(), labels.numpy())


class _LabelSpy(keras.Model):
    """Calls a conditional model and counts the labels it is given (null and total)."""

    def __init__(self, inner, null):
        super().__init__(name="label_spy")
        self.inner, self.null = inner, null
        self.nulls = tf.Variable(0, trainable=False, dtype=tf.int64)
        self.total = tf.Variable(0, trainable=False, dtype=tf.int64)

    def call(self, inputs, training=False):
        label = inputs[2]
        self.nulls.assign_add(tf.reduce_sum(tf.cast(tf.equal(label, self.null), tf.int64)))
        self.total.assign_add(tf.cast(tf.size(label), tf.int64))
        return self.inner(inputs, training=training)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_train_step_feeds_the_null_label_with_the_dropout_probability(dropout):
    spy = _LabelSpy(_mlp(num_classes=3), null=3)
    schedule = make_schedule("linear", 20)
    step = training.make_train_step(spy, keras.optimizers.Adam(1e-3), schedule, diffusion_loss("mse"),
                                    num_classes=3, label_dropout=dropout)
    points, labels = toy2d.make_toy_data("swiss_roll", 256, seed=0, labels=True)
    for s in range(8):
        step(tf.constant(points), tf.constant(labels), tf.constant(s, tf.int64))
    share = int(spy.nulls.numpy()) / int(spy.total.numpy())
    assert int(spy.total.numpy()) == 8 * 256
    assert share == pytest.approx(dropout, abs=0.03)


# ---------------------------------------------------------------- measures


def test_agreement_and_diversity_measures():
    assert guidance.class_agreement([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    with pytest.raises(ValueError, match="same length"):
        guidance.class_agreement([1, 2], [1, 2, 3])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 4, 1))
    assert guidance.mean_pairwise_distance(x) == pytest.approx(pdist(x.reshape(30, -1)).mean(), rel=1e-9)
    labels = np.repeat([0, 1], 15)
    expected = np.mean([pdist(x[:15].reshape(15, -1)).mean(), pdist(x[15:].reshape(15, -1)).mean()])
    assert guidance.within_class_diversity(x, labels) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="at least 2"):
        guidance.mean_pairwise_distance(x[:1])
    np.testing.assert_array_equal(guidance.balanced_labels(3, 2), [0, 0, 1, 1, 2, 2])


def test_guided_sample_validates_labels(mlp):
    schedule = make_schedule("linear", 10)
    with pytest.raises(ValueError, match=r"lie in \[0, 8\)"):
        guidance.guided_sample(mlp, schedule, np.array([0, 8]), 1.0)
    with pytest.raises(ValueError, match="1-D integer array"):
        guidance.guided_sample(mlp, schedule, np.array([0.5, 1.0]), 1.0)


# ---------------------------------------------------------------- guidance works


def test_guidance_improves_agreement_with_the_requested_class():
    """A tiny conditional model of the eight Gaussians: guided samples land in the requested Gaussian
    far more often than unconditional ones (1 in 8 by chance)."""
    schedule = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)
    points, labels = toy2d.make_toy_data("eight_gaussians", 4000, seed=0, labels=True)
    run = toy_training.train_toy(points, schedule, steps=500, batch_size=128, learning_rate=3e-3, ema_decay=0.9,
                          labels=labels, num_classes=8, label_dropout=0.2, progress=False,
                          build_model=lambda: toy2d.build_mlp_denoiser(hidden=32, depth=2, time_embedding_dim=16,
                                                                       num_classes=8))
    requested = guidance.balanced_labels(8, 40)
    sweep = guidance.guidance_sweep(run.ema_model, schedule, [0.0, 3.0], toy2d.nearest_gaussian, labels=requested,
                                    sampler="ddpm", clip_x0=False, seed=1)
    unconditional, guided = sweep
    assert unconditional.samples.shape == guided.samples.shape == (320, 2)
    assert unconditional.agreement < 0.3  # about 1/8: w = 0 ignores the label
    assert guided.agreement > 0.8
    assert guided.diversity < unconditional.diversity  # guided samples of a class stay in one Gaussian


# ---------------------------------------------------------------- labels and scales reach the right images


def _label_model(schedule, num_classes=10):
    """A conditional model whose guess of x_0 is label / 10 (the null label: 0), built from Keras layers.

    eps = (x - sqrt(alpha_bar_t) target) / sqrt(1 - alpha_bar_t), so deterministic DDIM ends at
    the target, and the guided target is w * label / 10.
    """
    x_in = keras.Input((2, 2, 1), name="x")
    t_in = keras.Input((), dtype="int32", name="t")
    label_in = keras.Input((), dtype="int32", name="label")
    ab = schedule.alpha_bars.astype(np.float32)
    targets = np.append(np.arange(num_classes) / 10.0, 0.0).astype(np.float32)[:, None]

    def table(name, values):
        return keras.layers.Embedding(len(values), 1, name=name, trainable=False,
                                      embeddings_initializer=keras.initializers.Constant(values))

    sqrt_ab = keras.layers.Reshape((1, 1, 1))(table("sqrt_ab", np.sqrt(ab)[:, None])(t_in))
    inv = keras.layers.Reshape((1, 1, 1))(table("inv", 1.0 / np.sqrt(1.0 - ab)[:, None])(t_in))
    target = keras.layers.Reshape((1, 1, 1))(table("label_embedding", targets)(label_in))
    eps = keras.layers.Multiply()([keras.layers.Subtract()([x_in, keras.layers.Multiply()([sqrt_ab, target])]), inv])
    return keras.Model([x_in, t_in, label_in], eps)


def test_guided_samples_follow_their_own_labels_and_scale_without_retracing():
    from ddpm_helpers.engine import sampling

    schedule = make_schedule("cosine", 20)
    model = _label_model(schedule)
    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.int32)
    for scale, batch_size in ((1.0, 3), (0.5, 2), (1.5, 3), (0.0, None)):
        result = guidance.guided_sample(model, schedule, labels, scale, steps=4, batch_size=batch_size, clip_x0=False)
        np.testing.assert_allclose(result.images[:, 1, 0, 0], scale * labels / 10.0, atol=1e-4)
        np.testing.assert_array_equal(result.labels, labels)
    loop = sampling.ddim_loop(schedule, guidance.classifier_free_guidance(model, 2.0, 10), clip_x0=False)
    traces = loop.compiled.experimental_get_tracing_count()
    guidance.guided_sample(model, schedule, labels[:3], 2.5, steps=4, clip_x0=False)
    guidance.guided_sample(model, schedule, labels[:3], -1.0, steps=4, clip_x0=False)
    assert loop.compiled.experimental_get_tracing_count() == traces  # a new scale is a new input, not a trace
