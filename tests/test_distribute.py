"""Tests of ddpm_helpers.distribute: training under tf.distribute.MirroredStrategy on 2 logical
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
from ddpm_helpers.distribute import make_strategy
strategy = make_strategy("mirrored", 2)  # before TensorFlow starts
import numpy as np, keras, tensorflow as tf
from ddpm_helpers import get_profile, training
from ddpm_helpers.data import load_digits
PROFILE = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                       attention_resolutions=(), attention_in_bottleneck=False,
                                       time_embedding_dim=16)
images = load_digits("train")[0][:64]
def biggest(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))
"""


def _run(code: str, tmp_path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_replicas_take_the_step_of_one_device_and_resume_on_one(tmp_path):
    out = _run("""
        from ddpm_helpers.diffusion import diffusion_loss
        from ddpm_helpers.distribute import make_distributed_train_step
        from ddpm_helpers.schedules import make_schedule
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
