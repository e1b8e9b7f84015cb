"""The one FLOP count of a forward pass (measuring.unet_costs.forward_flops) used by the
chapters "Scaling up" and "Running it faster" and by benchmarks/bench_training.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from ddpm_helpers.measuring import unet_costs  # noqa: E402
from ddpm_helpers.method.unet import build_unet_for_profile  # noqa: E402
from ddpm_helpers.profiles import PROFILES  # noqa: E402

# The U-Net chapter's table: the seed network does 2,173.8 M multiply-accumulates per image.
SEED_MACS = 2_173_829_120


def test_seed_count_is_the_unet_chapters_table():
    model = build_unet_for_profile(PROFILES["seed"])
    assert sum(unet_costs.macs_by_layer(model).values()) == SEED_MACS
    assert unet_costs.forward_flops(model) == 2 * SEED_MACS
    assert unet_costs.forward_flops(PROFILES["seed"]) == 2 * SEED_MACS  # from the profile
    # attention's four projections are part of the count, the einsums too, each once
    assert unet_costs.attention_mixing_macs(model) == 1_074_790_400
    assert 2.1e9 < unet_costs.forward_flops(model) / 2 < 2.2e9  # not 2.76 GMACs


def test_benchmark_counts_what_the_chapters_count_and_the_profiler_agrees():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from bench_training import forward_flops_per_image
    finally:
        sys.path.pop(0)
    profile = PROFILES["default"]
    model = build_unet_for_profile(profile)
    counted = forward_flops_per_image(model, profile)
    assert counted["total_flops"] == unet_costs.forward_flops(model)
    # the profiler counts the projections; adding only the einsums' MACs gives the same total
    # (within 3% for this small network: the profiler also counts additions and biases)
    assert abs(counted["profiler_total_flops"] / counted["total_flops"] - 1) < 0.03
    twice = counted["profiled_flops"] + 2 * sum(
        unet_costs.attention_cost(h * w, c, layer.num_heads, layer.key_dim)["macs"]
        for layer in model.layers if type(layer).__name__ == "AttentionBlock"
        for _, h, w, c in [layer.output.shape])
    assert twice / counted["total_flops"] - 1 > 0.05  # the old sum, projections counted twice
