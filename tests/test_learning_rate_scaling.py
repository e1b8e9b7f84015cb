"""scale_for_batch (rate, decay horizon and EMA horizon in images seen) and WarmUp."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from ddpm_helpers.engine.learning_rates import (  # noqa: E402
    WarmUp, learning_rates, scale_for_batch, seed_learning_rate)


def test_scale_for_batch_keeps_horizons_in_images_seen():
    k = 8
    scaled = scale_for_batch(k, base_lr=1e-4, decay_steps=100_000, ema_decay=0.999)
    assert scaled["learning_rate"] == pytest.approx(1e-4 * k**0.5)
    assert scaled["decay_steps"] == 12_500
    # the rate after the same number of images: step s at batch 32 = step s / k at batch 32 k
    small = learning_rates(seed_learning_rate(1e-4, 100_000), 80_000, 80_001)[0]
    big = learning_rates(seed_learning_rate(1e-4, scaled["decay_steps"]), 10_000, 10_001)[0]
    assert big == pytest.approx(small, rel=1e-5)  # the same fraction of the base rate
    # the EMA's weight on a step k times back equals the old weight k times as many steps back
    assert scaled["ema_decay"] == pytest.approx(0.999**8)
    assert scale_for_batch(k, rule="linear")["learning_rate"] == pytest.approx(8e-4)
    with pytest.raises(ValueError, match="factor must be positive"):
        scale_for_batch(0)


def test_warmup_in_front_of_any_schedule():
    after = seed_learning_rate(1e-3, 100)
    rates = learning_rates(WarmUp(after, 10), 0, 20)
    plain = learning_rates(after, 0, 20)
    np.testing.assert_allclose(rates[:10], plain[:10] * np.arange(1, 11) / 10, rtol=1e-6)
    np.testing.assert_allclose(rates[10:], plain[10:], rtol=1e-6)


def test_make_learning_rate_takes_the_seed_schedules_decay_steps():
    from ddpm_helpers.engine.learning_rates import make_learning_rate

    rates = learning_rates(make_learning_rate("seed", 1e-3, 100, decay_steps=10), 0, 21)
    np.testing.assert_allclose(rates[[0, 10, 20]], [1e-3, 5e-4, 1e-3 / 3], rtol=1e-6)
    with pytest.raises(ValueError, match="belongs to the 'seed' schedule"):
        make_learning_rate("cosine", 1e-3, 100, decay_steps=10)


def test_scale_batch_trains_with_the_scaled_rate_decay_and_ema(tmp_path, monkeypatch, capsys):
    import json
    from pathlib import Path

    from ddpm_helpers.cli import main
    from ddpm_helpers.engine import training
    from ddpm_helpers.profiles import get_profile

    monkeypatch.chdir(tmp_path)
    smoke = get_profile("smoke")
    assert main(["train", "--profile", "smoke", "--out", "b", "--scale-batch", "2", "--steps", "3",
                 "--warmup-steps", "2", "--no-xla", "--no-tensorboard"]) == 0
    assert "--scale-batch 2: batch 64" in capsys.readouterr().out
    config = json.loads(Path("b/config.json").read_text())
    scaled = scale_for_batch(2, base_lr=smoke.learning_rate, ema_decay=smoke.ema_decay)
    assert config["profile"]["batch_size"] == 2 * smoke.batch_size
    assert config["profile"]["train_steps"] == smoke.train_steps // 2
    assert config["profile"]["ema_decay"] == pytest.approx(smoke.ema_decay**2)
    assert config["lr_decay_steps"] == scaled["decay_steps"] == 50_000
    assert config["warmup_steps"] == 2
    # step s used Adam's iteration s - 1: the scaled seed rate, ramped over the first 2 iterations
    run = training.load_run("b")
    n = scaled["decay_steps"]
    seed_rate = scaled["learning_rate"] * n / (np.arange(3) + n)
    np.testing.assert_allclose(run.history["lr"], seed_rate * [0.5, 1, 1], rtol=1e-6)
    # a resumed run keeps the decay steps it was started with
    assert main(["train", "--out", "b", "--steps", "4", "--resume", "--no-tensorboard"]) == 0
    assert training.load_run("b").history["lr"][-1] == pytest.approx(scaled["learning_rate"] * n / (3 + n), rel=1e-6)
    # combinations that would scale twice, or a decay the schedule does not have, are refused
    capsys.readouterr()
    assert main(["train", "--profile", "smoke", "--out", "c", "--scale-batch", "2", "--batch-size", "64"]) == 1
    assert main(["train", "--out", "b", "--scale-batch", "2", "--resume"]) == 1
    assert main(["train", "--profile", "smoke", "--out", "c", "--scale-batch", "0"]) == 1
    assert main(["train", "--profile", "smoke", "--out", "c", "--lr-decay-steps", "10",
                 "--lr-schedule", "cosine"]) == 1
    errors = capsys.readouterr().err
    assert "leave out --batch-size" in errors and "must be at least 1" in errors
    assert "belongs to the 'seed' schedule" in errors
