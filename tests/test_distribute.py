"""Tests of ddpm_helpers.engine.distribute: training under tf.distribute.MirroredStrategy on 2 logical
CPU devices, and mixed precision. Each runs in a fresh process: the CPU can be split into logical
devices only before TensorFlow starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

ROOT = Path(__file__).resolve().parents[1]

PRELUDE = """
import sys
from ddpm_helpers.engine.distribute import make_strategy
strategy = make_strategy("mirrored", 2)  # before TensorFlow starts
import numpy as np, keras, tensorflow as tf
from ddpm_helpers import get_profile
from ddpm_helpers.engine import training
from ddpm_helpers.engine.data import load_digits
PROFILE = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                       attention_resolutions=(), attention_in_bottleneck=False,
                                       time_embedding_dim=16)
images = load_digits("train")[0][:64]
def biggest(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
def setup(where, loss_fn, *, precision="float32", optimizer=None, num_classes=None, dropout=0.0):
    # A fresh model (the weights of seed 0), its optimizer (build_training_state's Adam, or optimizer())
    # and its step, on one device (where=None) or under the strategy `where`; the initial weights.
    import contextlib
    from ddpm_helpers.engine.distribute import make_distributed_train_step
    from ddpm_helpers.method.schedules import make_schedule
    keras.utils.set_random_seed(0)
    model, _, adam, ema, _ = training.build_training_state(PROFILE, num_classes=num_classes, lr_schedule="constant",
                                                           steps=10, strategy=where, precision=precision)
    with where.scope() if where else contextlib.nullcontext():
        optimizer = optimizer() if optimizer else adam
        optimizer.build(model.trainable_variables)
    options = dict(ema=ema, num_classes=num_classes, label_dropout=dropout)
    schedule = make_schedule("cosine", 100)
    step = (training.make_train_step(model, optimizer, schedule, loss_fn, **options) if where is None else
            make_distributed_train_step(where, model, optimizer, schedule, loss_fn, **options))
    return step, model, optimizer, [w.copy() for w in model.get_weights()]
def train(step, steps, first=0):
    # the losses of steps first, ..., first + steps - 1, on batches of 16 images with labels 0-9
    labels = tf.constant(np.arange(64) % 10, tf.int32)
    return np.array([float(step(tf.constant(images[16 * (s % 4):][:16]), labels[16 * (s % 4):][:16],
                                tf.constant(s, tf.int64))) for s in range(first, first + steps)])
def relative_change(a, b, start):
    # |a - b| over |b - start|, the weights as one vector: how far update a differs from update b
    norm = lambda ws: float(np.sqrt(sum(np.sum(np.square(w)) for w in ws)))
    return norm([x - y for x, y in zip(a, b)]) / norm([y - s for y, s in zip(b, start)])
"""


def _run(code: str, tmp_path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_replicas_take_the_step_of_one_device_and_resume_on_one(tmp_path):
    out = _run("""
        from ddpm_helpers.method.diffusion import diffusion_loss
        from ddpm_helpers.engine.distribute import make_distributed_train_step
        from ddpm_helpers.method.schedules import make_schedule
        assert strategy.num_replicas_in_sync == 2
        schedule = make_schedule("cosine", 100)
        batch, labels = tf.constant(images[:16]), tf.zeros([16], tf.int32)
        def setup(scope):
            with scope:
                keras.utils.set_random_seed(0)
                model, ema_model = training.build_models(PROFILE)
                optimizer = keras.optimizers.Adam(1e-3)
                optimizer.build(model.trainable_variables)
                ema = training.ExponentialMovingAverage(model, ema_model, 0.9)
                ema.reset()
            return model, ema_model, optimizer, ema
        import contextlib
        m1, e1, o1, ema1 = setup(contextlib.nullcontext())
        m2, e2, o2, ema2 = setup(strategy.scope())
        one = training.make_train_step(m1, o1, schedule, diffusion_loss("huber"), ema=ema1)
        two = make_distributed_train_step(strategy, m2, o2, schedule, diffusion_loss("huber"), ema=ema2)
        l1, l2 = float(one(batch, labels, tf.constant(0, tf.int64))), float(two(batch, labels, tf.constant(0, tf.int64)))
        assert abs(l1 - l2) < 1e-6, (l1, l2)
        assert biggest(m1.get_weights(), m2.get_weights()) < 1e-6
        assert biggest(e1.get_weights(), e2.get_weights()) < 1e-6

        # 6 steps on 2 replicas (checkpoint at 6), resumed on one device to 12 = 12 steps on one device
        kwargs = dict(data=images, progress=False, jit_compile=False)
        training.train(PROFILE, "split", steps=6, strategy=strategy, **kwargs)
        resumed = training.train(PROFILE, "split", steps=12, resume=True, **kwargs)
        straight = training.train(PROFILE, "straight", steps=12, **kwargs)
        assert biggest(straight.model.get_weights(), resumed.model.get_weights()) < 1e-5
        assert biggest(straight.ema_model.get_weights(), resumed.ema_model.get_weights()) < 1e-5
        print("replicas", resumed.config["changes"], "ok")
    """, tmp_path)
    assert "ok" in out


def test_float16_on_two_replicas_takes_the_steps_of_one_device(tmp_path):
    # Forced float16 (the CPU would get bfloat16), so with Keras' LossScaleOptimizer: the loss must be
    # scaled on every replica before the gradients, which that optimizer unscales. Unscaled, the
    # replicas' gradients came out 2**15 times too small (losses 1.87 -> 1.99 at the second step).
    out = _run("""
        nan_on_replica_1 = tf.Variable(False)
        class SquaredError(keras.losses.Loss):  # a Keras loss (it divides by the replicas itself)
            def call(self, noise, predicted):
                # with the switch on, adds sqrt(0) - sqrt(0) on replica 1: its gradient (only) is NaN
                replica_1 = tf.distribute.get_replica_context().replica_id_in_sync_group == 1
                z = tf.reduce_sum(predicted * 0.0) + 1.0 - tf.cast(nan_on_replica_1 & replica_1, tf.float32)
                return tf.square(noise - predicted) + tf.sqrt(z) - tf.sqrt(tf.stop_gradient(z))
        step1, m1, o1, start = setup(None, SquaredError(), precision="mixed_float16")
        step2, m2, o2, _ = setup(strategy, SquaredError(), precision="mixed_float16")
        one, two = train(step1, 5), train(step2, 5)
        print("float16 losses, one device", one.round(4).tolist(), "two replicas", two.round(4).tolist())
        # the replicas sum in another order: the losses differed by up to 2e-4 and the weights'
        # updates by 0.05% on an Intel Xeon, 0.52% on an AMD EPYC (Adam's first steps magnify the
        # rounding of small gradients); without the replicas' loss scaling by 0.25 and 67%. The
        # bounds sit 5x above rounding and 20x below that bug.
        assert np.max(np.abs(one - two)) < 1e-3, (one, two)
        change = relative_change(m2.get_weights(), m1.get_weights(), start)
        assert change < 3e-2, change
        assert o1.dynamic_scale.numpy() == o2.dynamic_scale.numpy() == 2.0 ** 15

        # an overflow on one replica only: every replica skips the step and the loss scale halves
        nan_on_replica_1.assign(True)
        before = m2.get_weights()
        assert np.isfinite(train(step2, 1, first=5)[0]) and biggest(before, m2.get_weights()) == 0.0
        assert o2.dynamic_scale.numpy() == 2.0 ** 14 and o2.iterations.numpy() == 5 and int(step2.bad_step) == 0
        print("float16 ok")
    """, tmp_path)
    assert "float16 ok" in out


def test_a_plain_loss_on_two_replicas_takes_the_step_of_one_device(tmp_path):
    # A plain function, unlike a keras.losses.Loss, does not divide by the replicas: the step does.
    # SGD, because Adam's first steps hardly depend on the gradient's size (a doubled one went unseen).
    # Class-conditional with label dropout, so that each replica's labels are checked too.
    out = _run("""
        def mse(noise, predicted):
            return tf.reduce_mean(tf.square(noise - predicted))
        kwargs = dict(optimizer=lambda: keras.optimizers.SGD(0.1), num_classes=10, dropout=0.5)
        step1, m1, _, start = setup(None, mse, **kwargs)
        step2, m2, _, _ = setup(strategy, mse, **kwargs)
        one, two = train(step1, 2), train(step2, 2)
        assert np.max(np.abs(one - two)) < 1e-6, (one, two)
        assert biggest(m1.get_weights(), start) > 1e-3 and biggest(m1.get_weights(), m2.get_weights()) < 1e-6
        print("plain ok")
    """, tmp_path)
    assert "plain ok" in out


def test_mixed_precision_trains_like_float32(tmp_path):
    # Five steps on one device from the same weights. Rounding the activations to bfloat16 (8
    # significant bits, 2**-9 = 0.2% relative) moved the losses by at most 0.16% and the weights'
    # update by 2.5%; float16 (11 bits, 2**-12 = 0.024%) by 0.012% and 0.8%. A float16 step without
    # its loss scaling moved them by 19% and 67%. The bounds leave a margin of 4-8x over rounding.
    out = _run("""
        from ddpm_helpers.method.diffusion import diffusion_loss
        results = {}
        for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
            step, model, _, start = setup(None, diffusion_loss("mse"), precision=precision)
            results[precision] = train(step, 5), model.get_weights()
        exact, w32 = results["float32"]
        for precision, loss_bound, update_bound in (("mixed_bfloat16", 1e-2, 0.1), ("mixed_float16", 1e-3, 0.04)):
            losses, weights = results[precision]
            loss_change, update_change = np.max(np.abs(losses / exact - 1)), relative_change(weights, w32, start)
            print(precision, "loss", loss_change, "update", update_change)
            assert 0 < loss_change < loss_bound, (precision, losses, exact)  # 0: the policy was not applied
            assert update_change < update_bound, (precision, update_change)
        print("mixed ok")
    """, tmp_path)
    assert "mixed ok" in out


@pytest.mark.parametrize("extra", [[], ["--mixed-precision"]])
def test_cli_trains_on_two_replicas(tmp_path, extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "ddpm_helpers", "train", "--profile", "smoke", "--strategy",
                           "mirrored", "--replicas", "2", "--steps", "4", "--out", str(tmp_path / "run"), *extra],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    policy = "mixed_bfloat16" if extra else "float32"
    assert f"on 2 replica(s), precision policy {policy}" in done.stdout
    assert "Training on 2 replicas (MirroredStrategy), 16 images each" in done.stdout


def test_tpu_strategy_without_a_tpu_is_one_clear_error():
    import importlib.util

    from ddpm_helpers.engine.distribute import make_strategy

    if importlib.util.find_spec("libtpu") is not None:
        pytest.skip("this machine may have a TPU")
    with pytest.raises(ValueError, match="--strategy tpu found no TPU on this machine: in Colab choose"):
        make_strategy("tpu")


def test_setup_strategy_says_once_that_xla_is_off(capsys):
    from ddpm_helpers.engine.distribute import setup_strategy

    class Two:
        num_replicas_in_sync = 2

    config = {"xla": True}
    setup_strategy(Two(), None, 4, config)
    out = capsys.readouterr().out
    assert out.count("XLA is not used under a distribution strategy (--xla ignored)") == 1
    assert config["xla"] is False and config["replicas"] == 2


def test_a_mirrored_strategy_is_made_quietly_and_one_replica_is_singular(capsys):
    import logging

    import tensorflow as tf

    from ddpm_helpers.engine.distribute import make_strategy, setup_strategy

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger, keep = tf.get_logger(), Keep()
    level = logger.level
    logger.addHandler(keep)
    logger.setLevel("INFO")
    try:
        strategy = make_strategy("mirrored")
        assert logger.level == logging.INFO  # the caller's level is restored
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert not [r for r in records if "MirroredStrategy" in r]
    capsys.readouterr()
    setup_strategy(strategy, None, 32, {"xla": None})
    count = strategy.num_replicas_in_sync
    word = "replica" if count == 1 else "replicas"
    assert f"Training on {count} {word} (MirroredStrategy)" in capsys.readouterr().out
