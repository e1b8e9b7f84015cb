"""Tests of ddpm_helpers.engine.training and the modules it re-exports (learning_rates, train_step,
checkpoints, runs): learning rate, EMA, the step's NaN guard, training, checkpoints, resume, stale
runs and the CLI.

The runs use the smoke profile on a tiny slice of the digits, so that each trains in seconds.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.engine import training
from ddpm_helpers.cli import build_parser, main  # noqa: E402
from ddpm_helpers.engine.data import load_digits  # noqa: E402

# The smoke profile with a one-level U-Net: compiling the training step dominates these tests' time.
PROFILE = get_profile("smoke").replace(batch_size=16, checkpoint_every=6, widths=(8,), num_res_blocks=1,
                                       attention_resolutions=(), attention_in_bottleneck=False, time_embedding_dim=16)


@pytest.fixture(scope="module")
def tiny_digits():
    images, labels = load_digits("train")
    return images[:64], labels[:64]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_digits):
    """36 uninterrupted steps, every checkpoint kept (6, 12, ..., 36): the reference for several tests."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    return training.train(PROFILE, run_dir, steps=36, data=tiny_digits[0], progress=False, keep_checkpoints=100,
                          jit_compile=True)  # XLA, as the book's long runs use


def _max_difference(weights_a, weights_b):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(weights_a, weights_b))


# ---------------------------------------------------------------- learning rate and EMA

def test_seed_learning_rate_matches_its_formula():
    schedule = training.seed_learning_rate(1e-4)
    assert isinstance(schedule, keras.optimizers.schedules.InverseTimeDecay)
    for step in (0, 1, 10, 999, 63_310, 100_000, 1_000_000):
        expected = 1e-4 * 100_000 / (step + 100_000)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)
    assert float(schedule(100_000)) == pytest.approx(0.5e-4, rel=1e-6)  # halves after 100,000 steps


def test_make_learning_rate_names():
    assert isinstance(training.make_learning_rate("seed", 1e-3, 100), keras.optimizers.schedules.InverseTimeDecay)
    assert float(training.make_learning_rate("constant", 1e-3, 100)(57)) == pytest.approx(1e-3)
    cosine = training.make_learning_rate("cosine", 1e-3, 100)
    assert float(cosine(0)) == pytest.approx(1e-3) and float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    warm = training.make_learning_rate("warmup_cosine", 1e-3, 100)
    assert float(warm(0)) < float(warm(5)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="Unknown learning-rate schedule 'step'"):
        training.make_learning_rate("step", 1e-3, 100)


@pytest.mark.parametrize("name", training.LR_SCHEDULES)
def test_learning_rates_match_the_schedule_step_by_step(name):
    # "warmup_cosine" branches on the step, so it takes learning_rates' one-by-one path
    schedule = training.make_learning_rate(name, 1e-3, 100)
    expected = [float(schedule(step)) for step in range(10, 60)]
    np.testing.assert_allclose(training.learning_rates(schedule, 10, 60), expected, rtol=1e-6)
    assert training.learning_rates(schedule, 60, 60).shape == (0,)


def _dense_model(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def test_ema_update_matches_hand_computation():
    model, ema_model = _dense_model(0), _dense_model(1)
    average = training.ExponentialMovingAverage(model, ema_model, decay=0.9)
    average.reset()
    start = [w.copy() for w in model.get_weights()]
    np.testing.assert_array_equal(ema_model.get_weights()[0], start[0])
    expected = start
    rng = np.random.default_rng(0)
    for _ in range(3):
        new = [w + rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()]
        model.set_weights(new)
        average.update()
        expected = [0.9 * e + 0.1 * w for e, w in zip(expected, new)]
    for got, want in zip(ema_model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        training.ExponentialMovingAverage(model, ema_model, decay=1.0)


# ---------------------------------------------------------------- training


def _restored(run_dir, step, num_classes=None):
    """Fresh models and optimizer with the checkpoint of ``step`` of ``run_dir`` loaded into them."""
    model, ema_model = training.build_models(PROFILE, num_classes)
    optimizer = keras.optimizers.Adam(training.make_learning_rate("seed", PROFILE.learning_rate, 36))
    optimizer.build(model.trainable_variables)
    training.RunCheckpoint(run_dir, model, ema_model, optimizer, keep=None).restore(step)
    return model, ema_model, optimizer


def test_a_few_dozen_steps_lower_the_loss(straight_run, tiny_digits):
    images, _ = tiny_digits
    run = straight_run
    assert run.step == 36 and len(run.history["loss"]) == 36
    keras.utils.set_random_seed(PROFILE.seed)  # the initial weights train() started from
    initial, _ = training.build_models(PROFILE)
    before = training.evaluation_loss(initial, run.schedule, images, repeats=2)
    after = training.evaluation_loss(run.model, run.schedule, images, repeats=2)
    assert after < 0.8 * before, (before, after)
    assert np.all(np.isfinite(run.history["running_loss"]))
    np.testing.assert_array_equal(run.history["step"], np.arange(1, 37))
    # step s (from 1) is Adam's iteration s - 1, which used the rate of the seed schedule at s - 1
    expected_lr = [PROFILE.learning_rate * 1e5 / (s - 1 + 1e5) for s in run.history["step"]]
    np.testing.assert_allclose(run.history["lr"], expected_lr, rtol=1e-6)
    assert run.config["xla"] is True and run.config["rng"] == "philox"


class _Interrupt(Exception):
    pass


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, tiny_digits, straight_run):
    images, _ = tiny_digits
    steps = 12  # 4 batches per epoch: the interruption and the resume fall inside epochs

    def interrupt(step, loss):
        if step == 8:  # two steps after the checkpoint at step 6: they are lost and redone
            raise _Interrupt

    with pytest.raises(_Interrupt):
        training.train(PROFILE, tmp_path / "resumed", steps=steps, data=images, progress=False, on_step=interrupt,
                       jit_compile=True)
    assert [s for s, _ in training.list_checkpoints(tmp_path / "resumed")] == [6]
    resumed = training.train(PROFILE, tmp_path / "resumed", steps=steps, data=images, progress=False, resume=True)
    assert resumed.config["xla"] is True  # kept from the interrupted run

    # the uninterrupted run's checkpoint at step 12 (the seed schedule does not depend on the total)
    model, ema_model, optimizer = _restored(straight_run.run_dir, steps)
    assert _max_difference(model.get_weights(), resumed.model.get_weights()) < 1e-5
    assert _max_difference(ema_model.get_weights(), resumed.ema_model.get_weights()) < 1e-5
    assert _max_difference([v.numpy() for v in optimizer.variables],
                           [v.numpy() for v in resumed.optimizer.variables]) < 1e-5
    assert int(resumed.optimizer.iterations) == int(optimizer.iterations) == steps
    np.testing.assert_allclose(resumed.history["loss"], straight_run.history["loss"][:steps], rtol=1e-5, atol=1e-6)
    loaded = training.load_run(tmp_path / "resumed")
    assert loaded.step == steps and loaded.loaded
    assert _max_difference(loaded.ema_model.get_weights(), resumed.ema_model.get_weights()) == 0.0


def test_nan_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path, tiny_digits):
    images, _ = tiny_digits
    import tensorflow as tf

    calls = tf.Variable(0)
    huber = keras.losses.Huber()

    def loss_that_breaks(noise, predicted):  # finite for 8 steps, then NaN
        calls.assign_add(1)
        return tf.where(calls > 8, tf.constant(float("nan")), huber(noise, predicted))

    with pytest.raises(training.NonFiniteLossError, match=r"loss became NaN or infinite at step 9 of 12") as error:
        training.train(PROFILE, tmp_path / "run", steps=12, data=images, progress=False, loss_fn=loss_that_breaks,
                       jit_compile=False)
    assert "ckpt-6 (step 6)" in str(error.value) and "--resume" in str(error.value)
    run = training.load_run(tmp_path / "run")
    assert run.step == 6 and not run.complete
    assert all(np.all(np.isfinite(w)) for w in run.model.get_weights() + run.ema_model.get_weights())


def test_a_crash_while_saving_keeps_the_last_checkpoint(tmp_path, straight_run):
    # A save interrupted before TensorFlow updates the index leaves files the index does not list.
    run_dir = tmp_path / "run"
    shutil.copytree(straight_run.run_dir, run_dir)
    (run_dir / "ckpt-42.index").write_bytes(b"half")
    (run_dir / "ckpt-42.data-00000-of-00001").write_bytes(b"")
    assert training.latest_checkpoint(run_dir)[0] == 36
    assert training.load_run(run_dir).step == 36


# ---------------------------------------------------------------- runs

def test_load_or_train_loads_a_matching_run_and_moves_a_stale_one_aside(tmp_path, tiny_digits, straight_run, capsys):
    images, _ = tiny_digits
    kwargs = dict(steps=36, data=images, progress=False)
    name = training.run_name(PROFILE, **kwargs)
    shutil.copytree(straight_run.run_dir, tmp_path / name)
    loaded = training.load_or_train(PROFILE, tmp_path, **kwargs)
    assert loaded.loaded and loaded.run_dir == tmp_path / name and "Loaded" in capsys.readouterr().out
    assert _max_difference(straight_run.ema_model.get_weights(), loaded.ema_model.get_weights()) == 0.0

    kwargs["steps"] = 6  # (a shorter run, to keep the test fast: a new name)
    stale = tmp_path / training.run_name(PROFILE, **kwargs)
    shutil.copytree(tmp_path / name, stale)
    config = json.loads((stale / "config.json").read_text())
    config["format"] = training.FORMAT_VERSION - 1  # as if written by an older version of the package
    (stale / "config.json").write_text(json.dumps(config))
    files = sorted(p.name for p in stale.iterdir())
    retrained = training.load_or_train(PROFILE, tmp_path, **kwargs)
    out = capsys.readouterr().out
    aside = stale.with_name(stale.name + ".stale-1")
    assert not retrained.loaded and f"aside to {aside}" in out and f"has format {config['format']}" in out
    assert sorted(p.name for p in aside.iterdir()) == files  # moved, not deleted
    assert training.load_or_train(PROFILE, tmp_path, **kwargs).loaded


def test_a_run_of_the_old_npz_format_is_moved_aside(tmp_path, tiny_digits, capsys):
    kwargs = dict(steps=2, data=tiny_digits[0], progress=False, jit_compile=False)
    old = tmp_path / training.run_name(PROFILE, **kwargs)
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"format": 1, "code": "0123456789abcdef"}))
    (old / "ckpt-00000002.npz").write_bytes(b"old weights")
    with pytest.raises(ValueError, match="older version of ddpm_helpers"):
        training.load_run(old)
    with pytest.raises(ValueError, match="Cannot resume .*older version.*moved aside"):
        training.train(PROFILE, old, resume=True, **kwargs)
    run = training.load_or_train(PROFILE, tmp_path, **kwargs)
    assert run.step == 2 and "older version of ddpm_helpers" in capsys.readouterr().out
    assert (old.with_name(old.name + ".stale-1") / "ckpt-00000002.npz").read_bytes() == b"old weights"


def test_load_or_train_resumes_an_incomplete_run(tmp_path, tiny_digits, straight_run, capsys):
    import tensorflow as tf

    kwargs = dict(steps=36, data=tiny_digits[0], progress=False)
    run_dir = tmp_path / training.run_name(PROFILE, **kwargs)
    shutil.copytree(straight_run.run_dir, run_dir)
    # as if the run had stopped after its checkpoint at step 24
    tf.compat.v1.train.update_checkpoint_state(str(run_dir), "ckpt-24", [f"ckpt-{s}" for s in (6, 12, 18, 24)])
    for path in run_dir.glob("ckpt-3[06].*"):
        path.unlink()
    run = training.load_or_train(PROFILE, tmp_path, **kwargs)
    out = capsys.readouterr().out
    assert "incomplete (24 of 36 steps)" in out and "Resuming" in out and "changed" not in out
    assert run.step == 36 and not run.loaded and run.config["xla"] is True
    assert _max_difference(run.ema_model.get_weights(), straight_run.ema_model.get_weights()) < 1e-5


def test_conditional_runs_are_stored_apart(tmp_path, tiny_digits):
    run = training.load_or_train(PROFILE, tmp_path, steps=2, data=tiny_digits, progress=False,
                                 num_classes=10, label_dropout=0.2, jit_compile=False)
    assert "cond10-drop0.2" in run.run_dir.name and run.num_classes == 10
    assert run.config["label_dropout"] == 0.2 and run.config["num_classes"] == 10
    loaded = training.load_run(run.run_dir)
    assert loaded.num_classes == 10 and len(loaded.model.inputs) == 3
    assert training.run_name(PROFILE, steps=2, data=tiny_digits) != run.run_dir.name


def test_a_conditional_run_started_from_an_unconditional_one(tmp_path, tiny_digits, straight_run, capsys):
    """init_from: the new model starts as the source's EMA model for every label (null included);
    retraining the source makes the run built on it stale; a resumed run keeps its source."""
    import tensorflow as tf

    source = tmp_path / "source"
    shutil.copytree(straight_run.run_dir, source)
    cond, _ = training.build_models(PROFILE, 10)
    assert training.start_from(cond, source) == ["label_embedding"]
    x = tf.random.stateless_normal((11, 8, 8, 1), seed=(1, 2))
    t = tf.constant([0, 3, 7, 9, 11, 13, 15, 17, 18, 19, 5], tf.int32)
    expected = straight_run.ema_model([x, t]).numpy()
    for label in (0, 7, 10):  # 10 is the null label
        assert np.max(np.abs(cond([x, t, tf.fill([11], label)]).numpy() - expected)) == 0.0

    kwargs = dict(steps=4, data=tiny_digits, progress=False, num_classes=10, label_dropout=0.2, jit_compile=False,
                  init_from=source)
    run = training.load_or_train(PROFILE, tmp_path, **kwargs)
    assert run.run_dir.name.endswith("-from-source") and run.config["init_from"]["run"] == "source"
    assert run.config["init_from"]["step"] == 36 and not run.loaded
    # 4 steps moved it away from the source, but only a little
    changes = [np.max(np.abs(a - b)) for a, b in zip(run.model.get_weights()[:-1], cond.get_weights()[:-1])]
    assert 0.0 < max(changes) < 0.05
    assert training.load_or_train(PROFILE, tmp_path, **kwargs).loaded
    capsys.readouterr()
    config = json.loads((source / "config.json").read_text())
    config["seed"] += 1  # as if the source had been trained again, differently
    (source / "config.json").write_text(json.dumps(config))
    again = training.load_or_train(PROFILE, tmp_path, **kwargs)
    assert not again.loaded and "different configuration (init_from)" in capsys.readouterr().out

    with pytest.raises(ValueError, match="Cannot start from .*holds no run"):
        training.train(PROFILE, tmp_path / "x", steps=2, data=tiny_digits, init_from=tmp_path / "nothing")
    unet, _ = training.build_models(PROFILE.replace(widths=(16,)), 10)
    with pytest.raises(ValueError, match="layer 'stem' has weights of shapes"):
        training.start_from(unet, source)


def test_run_names_keep_variants_apart():
    assert training.run_name(get_profile("default")) == "default"
    assert training.run_name(get_profile("default"), num_classes=10, label_dropout=0.1) == "default-cond10-drop0.1"
    assert training.run_name(get_profile("default").replace(loss="huber")) == "default-loss=huber"
    assert training.run_name(get_profile("default"), steps=200) == "default-steps200"


def test_load_run_without_a_run_explains(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        training.load_run(tmp_path)


def test_load_run_of_a_checkpoint_by_name_or_step(straight_run):
    assert training.load_run(straight_run.run_dir, checkpoint="ckpt-12").step == 12
    assert training.load_run(straight_run.run_dir, checkpoint=18).step == 18
    with pytest.raises(FileNotFoundError, match=r"no checkpoint 'ckpt-7'; it holds ckpt-6, ckpt-12, .*ckpt-36"):
        training.load_run(straight_run.run_dir, checkpoint="ckpt-7")
    with pytest.raises(FileNotFoundError, match="no checkpoint 'best'"):
        training.load_run(straight_run.run_dir, checkpoint="best")


# ---------------------------------------------------------------- command line

def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--profile", "--data", "--out", "--steps", "--resume", "folder:PATH", "--batch-size",
                   "--learning-rate", "--no-xla"):
        assert option in text


def test_cli_trains_a_tiny_run_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli-run"
    argv = ["train", "--profile", "smoke", "--data", "digits", "--out", str(out), "--steps", "3", "--batch-size", "8"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 3 and config["data"] == "digits" and config["profile"]["name"] == "smoke"
    assert config["profile"]["batch_size"] == 8 and config["xla"] is False
    assert [s for s, _ in training.list_checkpoints(out)] == [3]
    assert "Trained 3 steps" in capsys.readouterr().out
    assert main(["train", "--profile", "smoke", "--out", str(out), "--steps", "3"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--data", "folder:/no/such/folder", "--out", str(tmp_path / "x")]) == 1
    assert "kaggle.com" in capsys.readouterr().err
    assert main(["train", "--profile", "smoke", "--out", str(tmp_path / "y"), "--batch-size", "0"]) == 1
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def test_xla_by_default_for_long_runs_unless_tensorflow_has_one_cpu_thread(monkeypatch, tmp_path,
                                                                            tiny_digits):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    assert training.xla_by_default(training.XLA_MIN_STEPS)
    assert not training.xla_by_default(training.XLA_MIN_STEPS - 1)
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")  # as make book runs each chapter
    assert not training.xla_by_default(10 * training.XLA_MIN_STEPS)
    # train() asks it: a run long enough for XLA, on one thread, is compiled without it
    monkeypatch.setattr(training, "XLA_MIN_STEPS", 2)
    run = training.train(PROFILE, tmp_path / "run", steps=2, data=tiny_digits[0], progress=False)
    assert run.config["xla"] is False
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    assert training.xla_by_default(2)
