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
