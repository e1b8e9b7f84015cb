"""The functions the chapters show read like the papers' algorithms; the engineered versions the
package runs (compiled, chunked, seeded by stream, guarded) take exactly the same steps.

- Algorithm 1 (training): ``train_step.simple_train_step`` vs ``make_train_step``;
- Algorithm 2 (sampling): ``samplers.ddpm_sample_loop`` vs ``engine.sampling.ddpm_sample``.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
import tensorflow as tf  # noqa: E402

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.engine import sampling, train_step  # noqa: E402
from ddpm_helpers.engine.data import load_digits  # noqa: E402
from ddpm_helpers.method import diffusion, samplers  # noqa: E402
from ddpm_helpers.method.predictors import as_noise_predictor  # noqa: E402
from ddpm_helpers.method.schedules import make_schedule  # noqa: E402

TINY = get_profile("smoke").replace(batch_size=16, widths=(8,), num_res_blocks=1, attention_resolutions=(),
                                    attention_in_bottleneck=False, time_embedding_dim=16)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return train_step.build_models(TINY)[0]


def test_the_compiled_step_takes_the_step_of_algorithm_1():
    schedule = make_schedule("cosine", 100)
    images = tf.constant(load_digits("train")[0][:16])
    loss_fn = diffusion.diffusion_loss("mse")
    compiled_model, simple_model = _model(), _model()
    compiled = train_step.make_train_step(compiled_model, keras.optimizers.Adam(1e-3), schedule, loss_fn, seed=7)
    simple_optimizer = keras.optimizers.Adam(1e-3)
    for step in range(3):
        # the draws of step `step`, as make_train_step makes them
        t, noise, _ = train_step.draw_step_randomness(7, step, 16, images.shape[1:], schedule.timesteps)
        expected = train_step.simple_train_step(simple_model, simple_optimizer, schedule, loss_fn, images, t, noise)
        loss = compiled(images, tf.zeros([16], tf.int32), tf.constant(step, tf.int64))
        assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    for a, b in zip(compiled_model.get_weights(), simple_model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert any(np.max(np.abs(a - b)) > 1e-4 for a, b in zip(simple_model.get_weights(), _model().get_weights()))


@pytest.mark.parametrize("labels", [None, np.array([0, 1, 2], np.int32)])
def test_the_compiled_sampler_takes_the_steps_of_algorithm_2(labels):
    schedule = make_schedule("linear", 30)

    def predict_noise(x, t, labels=None):  # any smooth function of x and t will do
        scale = tf.reshape(tf.cast(t, tf.float32) / 30.0, [-1, 1, 1, 1])
        extra = 0.0 if labels is None else tf.reshape(tf.cast(labels, tf.float32), [-1, 1, 1, 1]) / 10.0
        return 0.5 * tf.tanh(x) * scale + extra

    predictor = as_noise_predictor(predict_noise)
    shape = (3, 4, 4, 1)
    expected = samplers.ddpm_sample_loop(schedule, predictor, shape, seed=5, labels=labels)
    result = sampling.ddpm_sample(predict_noise, schedule, shape, seed=5, labels=labels)
    np.testing.assert_allclose(result.images, expected.numpy(), atol=1e-5)
    other = samplers.ddpm_sample_loop(schedule, predictor, shape, seed=6, labels=labels)
    assert np.max(np.abs(other.numpy() - expected.numpy())) > 1e-2  # the seed matters
