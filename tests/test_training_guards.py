"""Tests of what keeps long runs trustworthy (ddpm_helpers.engine.train_step, runs, checkpoints, training):
the non-finite guard of the compiled step, resuming with changed training settings, XLA and the
step's random numbers, the progress line of a book build.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.engine import training
from ddpm_helpers.engine.data import load_digits  # noqa: E402
from ddpm_helpers.method.schedules import make_schedule  # noqa: E402

PROFILE = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                       attention_resolutions=(), attention_in_bottleneck=False, time_embedding_dim=16)


@pytest.fixture(scope="module")
def images():
    return load_digits("train")[0][:64]


def _loss_with_nan_gradient_at(bad_call: int):
    """The Huber loss, whose gradient (not its value) is NaN at call ``bad_call`` (counted from 1)."""
    calls = tf.Variable(0)
    huber = keras.losses.Huber()

    def loss_fn(noise, predicted):
        calls.assign_add(1)
        z = tf.reduce_sum(predicted * 0.0) + tf.cast(calls != bad_call, tf.float32)  # 0 at the bad call, else 1
        # adds sqrt(z) - sqrt(z) = 0 to the loss; at z = 0 its gradient is inf * 0 = NaN
        return huber(noise, predicted) + tf.sqrt(z) - tf.sqrt(tf.stop_gradient(z))

    return loss_fn


@pytest.mark.parametrize("jit_compile", [False, True])
def test_the_step_applies_no_update_with_a_nan_gradient(jit_compile):
    keras.utils.set_random_seed(0)
    model, ema_model = training.build_models(PROFILE)
    optimizer = keras.optimizers.Adam(1e-3)
    ema = training.ExponentialMovingAverage(model, ema_model, 0.9)
    step = training.make_train_step(model, optimizer, make_schedule("cosine", 20), _loss_with_nan_gradient_at(2),
                                    ema=ema, jit_compile=jit_compile)
    batch = tf.constant(np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32))
    labels = tf.zeros([4], tf.int32)
    initial = [w.copy() for w in model.get_weights() + ema_model.get_weights()]
    assert np.isfinite(float(step(batch, labels, tf.constant(0, tf.int64))))
    after_one = [w.copy() for w in model.get_weights() + ema_model.get_weights()]
    # the good step raised no alarm and did update the model and its EMA (so "no update" below means something)
    assert int(step.bad_step) == 0 and int(optimizer.iterations) == 1
    changed = [not np.array_equal(a, b) for a, b in zip(initial, after_one)]
    assert any(changed[:len(model.get_weights())]) and any(changed[len(model.get_weights()):])
    loss = float(step(batch, labels, tf.constant(1, tf.int64)))  # NaN gradient, finite loss
    assert np.isfinite(loss)  # the guard reports the loss as computed: only the gradient was NaN
    assert int(step.bad_step) == 2 and int(step.bad_what) == 2  # step 2 (from 1), a gradient
    step(batch, labels, tf.constant(2, tf.int64))  # finite again, but the run is stopped: still no update
    for before, now in zip(after_one, model.get_weights() + ema_model.get_weights()):
        np.testing.assert_array_equal(before, now)
    assert int(optimizer.iterations) == 1


def test_a_nan_gradient_with_a_finite_loss_writes_no_checkpoint(tmp_path, images):
    with pytest.raises(training.NonFiniteLossError, match="a gradient became NaN or infinite at step 9 of 12") as err:
        training.train(PROFILE, tmp_path / "run", steps=12, data=images, progress=False, jit_compile=False,
                       loss_fn=_loss_with_nan_gradient_at(9))
    assert "the last good checkpoint is" in str(err.value) and "ckpt-6 (step 6)" in str(err.value)
    assert [s for s, _ in training.list_checkpoints(tmp_path / "run")] == [6]  # nothing written at step 12
    run = training.load_run(tmp_path / "run")
    assert all(np.all(np.isfinite(w)) for w in run.model.get_weights() + run.ema_model.get_weights())


def test_resume_may_change_the_learning_rate_steps_and_seed_with_a_note(tmp_path, images, capsys):
    run_dir = tmp_path / "run"
    training.train(PROFILE, run_dir, steps=6, data=images, progress=False, jit_compile=False)
    run = training.train(PROFILE, run_dir, steps=12, data=images, progress=False, resume=True,
                         learning_rate=5e-4, seed=3)
    out = capsys.readouterr().out
    assert ("Resuming" in out and "profile.learning_rate 0.001 -> 0.0005" in out and "steps 6 -> 12" in out
            and "seed 0 -> 3" in out)
    assert run.step == 12 and run.config["xla"] is False
    np.testing.assert_allclose(run.history["lr"][6:], [5e-4 * 1e5 / (s - 1 + 1e5) for s in range(7, 13)],
                               rtol=1e-6)
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["changes"] == [{"step": 6, "profile.learning_rate": [1e-3, 5e-4], "seed": [0, 3],
                                  "steps": [6, 12]}]
    with pytest.raises(ValueError, match=r"different model, data or schedule \(profile.widths\)"):
        training.train(PROFILE.replace(widths=(16,)), run_dir, steps=18, data=images, progress=False, resume=True)


def test_resuming_with_another_xla_setting_says_so(tmp_path, images, capsys):
    run_dir = tmp_path / "run"
    training.train(PROFILE, run_dir, steps=6, data=images, progress=False, jit_compile=False)
    run = training.train(PROFILE, run_dir, steps=7, data=images, progress=False, resume=True, jit_compile=True)
    out = capsys.readouterr().out
    assert "xla False -> True" in out and "XLA rounds differently" in out
    assert run.config["xla"] is True and run.config["changes"][-1] == {"step": 6, "steps": [6, 7], "xla": [False, True]}


def test_the_step_draws_the_same_numbers_with_and_without_xla():
    def draw():
        return training.draw_step_randomness(7, tf.constant(12, tf.int64), 4, (8, 8, 1), 1000)[:2]

    plain = tf.function(draw, jit_compile=False)()
    xla = tf.function(draw, jit_compile=True)()
    for a, b in zip(plain, xla):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_book_build_prints_one_progress_line(tmp_path, images, capsys, monkeypatch):
    monkeypatch.setenv("DDPM_BOOK_BUILD", "1")
    training.train(PROFILE, tmp_path / "run", steps=4, data=images, progress=True, jit_compile=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("training run: compiled the step in") and "4 steps in" in lines[0]


def test_the_2d_loop_stops_with_an_error_at_a_nan_gradient():
    from ddpm_helpers.playground import toy2d, toy_training

    data = toy2d.make_toy_data("two_moons", 300, seed=0)
    schedule = make_schedule("linear", 20)
    with pytest.raises(FloatingPointError, match="a gradient became NaN or infinite at step 3 of 6"):
        toy_training.train_toy(data, schedule, steps=6, batch_size=16, progress=False,
                        loss_fn=_loss_with_nan_gradient_at(3))
