"""Tests of ddpm_helpers.method.unet: shapes, time and label conditioning, serialisation, bad settings.

The block tests compare the Keras layers with NumPy references written here from the equations
of the chapter "The U-Net", so a mistake in a layer's call cannot hide behind itself.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from ddpm_helpers.profiles import PROFILES
from ddpm_helpers.measuring.unet_costs import attention_cost
from ddpm_helpers.method.unet import (
    AttentionBlock,
    ResidualBlock,
    SinusoidalTimeEmbedding,
    build_unet,
    build_unet_for_profile,
    sinusoidal_frequencies,
    unet_config,
)

SMALL = dict(image_size=8, channels=1, widths=(8, 16), num_res_blocks=1, attention_resolutions=(4,),
             attention_in_bottleneck=True, num_heads=2, key_dim=4, groups=4, time_embedding_dim=16)


def small(**changes):
    return {**SMALL, **changes}


def batch(model, n=3, seed=0):
    """A random input batch (x, t) for ``model``."""
    rng = np.random.default_rng(seed)
    _, h, w, c = model.input_shape[0]
    x = rng.standard_normal((n, h, w, c)).astype("float32")
    t = rng.integers(0, 1000, size=n).astype("int32")
    return x, t


# ---------------------------------------------------------------- NumPy references


def ref_group_norm(x, groups, gamma, beta, eps=1e-3):
    n, h, w, c = x.shape
    g = x.reshape(n, h, w, groups, c // groups).astype(np.float64)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * gamma + beta


def ref_silu(x):
    return x / (1 + np.exp(-x))


def ref_conv_same(x, kernel, bias):
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros(x.shape[:3] + (kernel.shape[-1],))
    for i in range(k):
        for j in range(k):
            out += padded[:, i:i + x.shape[1], j:j + x.shape[2], :] @ kernel[i, j]
    return out + bias


def ref_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------- time embedding


def test_time_embedding_matches_formula():
    dim = 10
    t = np.array([0, 1, 7, 999], dtype=np.int32)
    got = np.asarray(SinusoidalTimeEmbedding(dim)(t))
    half = dim // 2
    omega = np.array([10000.0 ** (-i / (half - 1)) for i in range(half)])
    want = np.concatenate([np.sin(t[:, None] * omega), np.cos(t[:, None] * omega)], axis=1)
    assert got.shape == (4, dim)
    np.testing.assert_allclose(got, want, atol=2e-4)  # float32 angles up to 999 rad
    np.testing.assert_allclose(sinusoidal_frequencies(dim), omega, rtol=1e-12)


def test_time_embedding_config_round_trip():
    layer = SinusoidalTimeEmbedding(12, max_period=500.0, name="temb")
    clone = SinusoidalTimeEmbedding.from_config(layer.get_config())
    assert (clone.dim, clone.max_period, clone.name) == (12, 500.0, "temb")
    t = np.arange(5, dtype=np.int32)
    np.testing.assert_array_equal(np.asarray(layer(t)), np.asarray(clone(t)))


@pytest.mark.parametrize("dim", [0, 1, 7, -4, 2.0])
def test_time_embedding_rejects_bad_dim(dim):
    with pytest.raises(ValueError, match="time_embedding_dim"):
        SinusoidalTimeEmbedding(dim)


# ---------------------------------------------------------------- blocks


def test_residual_block_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 4, 8)).astype("float32")
    temb = rng.standard_normal((2, 6)).astype("float32")
    block = ResidualBlock(12, groups=4)
    y = np.asarray(block(x, temb))
    # Give the norms non-trivial scales so that gamma/beta are tested too.
    for norm in (block.norm1, block.norm2):
        norm.gamma.assign(rng.uniform(0.5, 1.5, norm.gamma.shape))
        norm.beta.assign(rng.normal(0, 0.1, norm.beta.shape))
    y = np.asarray(block(x, temb))
    w = {v.path.split("/")[-2] + "/" + v.name: np.asarray(v) for v in block.weights}
    h = ref_conv_same(ref_silu(ref_group_norm(x, 4, w["norm1/gamma"], w["norm1/beta"])), w["conv1/kernel"], w["conv1/bias"])
    h = h + (ref_silu(temb) @ w["time_proj/kernel"] + w["time_proj/bias"])[:, None, None, :]
    h = ref_conv_same(ref_silu(ref_group_norm(h, 4, w["norm2/gamma"], w["norm2/beta"])), w["conv2/kernel"], w["conv2/bias"])
    want = h + ref_conv_same(x, w["shortcut/kernel"], w["shortcut/bias"])
    assert y.shape == (2, 4, 4, 12)
    np.testing.assert_allclose(y, want, atol=1e-4)


def test_residual_block_is_identity_when_last_conv_is_zero():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 4, 8)).astype("float32")
    temb = rng.standard_normal((2, 6)).astype("float32")
    block = ResidualBlock(8, groups=4)
    block(x, temb)
    assert block.shortcut is None  # same width: identity shortcut, no 1x1 convolution
    block.conv2.kernel.assign(np.zeros(block.conv2.kernel.shape))
    block.conv2.bias.assign(np.zeros(block.conv2.bias.shape))
    np.testing.assert_array_equal(np.asarray(block(x, temb)), x)


def test_residual_block_param_count():
    c_in, c, e = 8, 12, 6
    block = ResidualBlock(c, groups=4)
    block(np.zeros((1, 4, 4, c_in), "float32"), np.zeros((1, e), "float32"))
    want = (2 * c_in + 9 * c_in * c + c) + (e * c + c) + (2 * c + 9 * c * c + c) + (c_in * c + c)
    assert block.count_params() == want


def test_attention_block_matches_numpy_reference_and_cost():
    rng = np.random.default_rng(3)
    n, side, c, heads, d, groups = 2, 3, 8, 2, 5, 4
    x = rng.standard_normal((n, side, side, c)).astype("float32")
    block = AttentionBlock(heads, d, groups)
    y = np.asarray(block(x))
    w = {v.path.split("/")[-2] + "/" + v.name: np.asarray(v) for v in block.weights}
    tokens = ref_group_norm(x, groups, w["norm/gamma"], w["norm/beta"]).reshape(n, side * side, c)
    q = np.einsum("bnc,chd->bnhd", tokens, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("bnc,chd->bnhd", tokens, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("bnc,chd->bnhd", tokens, w["value/kernel"]) + w["value/bias"]
    a = ref_softmax(np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d))
    o = np.einsum("bhqk,bkhd->bqhd", a, v)
    out = np.einsum("bqhd,hdc->bqc", o, w["attention_output/kernel"]) + w["attention_output/bias"]
    np.testing.assert_allclose(y, x + out.reshape(x.shape), atol=1e-4)
    assert block.count_params() == attention_cost(side * side, c, heads, d)["params"]


def test_attention_cost_counts():
    cost = attention_cost(tokens=256, channels=64, num_heads=8, key_dim=256)
    assert cost["projection_macs"] == 4 * 256 * 64 * 8 * 256
    assert cost["mixing_macs"] == 2 * 256**2 * 8 * 256
    assert cost["macs"] == cost["projection_macs"] + cost["mixing_macs"]


# ---------------------------------------------------------------- whole network


@pytest.mark.parametrize(
    "config",
    [
        small(),
        small(image_size=16, channels=3, widths=(8, 16, 16), attention_resolutions=(8, 4)),
        small(image_size=12, channels=2, widths=(8, 8), attention_resolutions=()),
        small(image_size=4, channels=1, widths=(8,), attention_resolutions=(4,), attention_in_bottleneck=False),
        small(num_res_blocks=2, groups=8, widths=(8, 16), attention_resolutions=(8, 4)),
    ],
    ids=["8x8x1", "16x16x3-3-levels", "12x12x2", "one-level", "two-blocks"],
)
def test_output_shape_equals_input_shape(config):
    model = build_unet(**config)
    x, t = batch(model)
    y = model([x, t])
    assert y.shape == x.shape
    assert np.all(np.isfinite(np.asarray(y)))


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_builds_and_runs(name):
    profile = PROFILES[name]
    model = build_unet_for_profile(profile)
    x, t = batch(model, n=2)
    y = np.asarray(model([x, t]))
    assert y.shape == (2, profile.image_size, profile.image_size, profile.channels)
    assert np.all(np.isfinite(y))
    assert unet_config(profile)["widths"] == profile.widths


def test_seed_profile_architecture_is_pinned():
    """The original CelebA tutorial's network: attention at 16x16 and in the bottleneck only."""
    model = build_unet_for_profile(PROFILES["seed"])
    attention = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers
                 if isinstance(layer, AttentionBlock)}
    assert attention == {"down1_res0_attention": (16, 16, 64), "down1_res1_attention": (16, 16, 64),
                         "mid_attention": (4, 4, 256),
                         "up1_res0_attention": (16, 16, 64), "up1_res1_attention": (16, 16, 64)}
    blocks = [tuple(layer.output.shape[1:]) for layer in model.layers if isinstance(layer, ResidualBlock)]
    # two per level on the way down and up (4 levels), two in the bottleneck
    assert sorted(set(blocks)) == [(4, 4, 256), (8, 8, 128), (16, 16, 64), (32, 32, 32)]
    assert {size: blocks.count(size) for size in set(blocks)} == {
        (32, 32, 32): 4, (16, 16, 64): 4, (8, 8, 128): 4, (4, 4, 256): 6}
    for layer in model.layers:
        if isinstance(layer, AttentionBlock):
            assert (layer.num_heads, layer.key_dim) == (8, 256)
    assert model.count_params() == 16_440_739


def test_output_depends_on_t():
    keras.utils.set_random_seed(0)
    model = build_unet(**small())
    x, _ = batch(model, n=2)
    same_x = np.concatenate([x[:1], x[:1]])
    y = np.asarray(model([same_x, np.array([0, 500], "int32")]))
    assert np.max(np.abs(y[0] - y[1])) > 1e-3


def _encoder_feature(model, level):
    """The output of encoder level ``level``: its last layer (block or attention) before down-sampling."""
    down = [layer for layer in model.layers
            if layer.name.startswith(f"down{level}_") and not layer.name.endswith("_downsample")]
    return down[-1]


@pytest.mark.parametrize(
    "config",
    [small(), small(image_size=16, channels=3, widths=(8, 16, 16), attention_resolutions=(8,), num_res_blocks=2)],
    ids=["2-levels", "3-levels-two-blocks"],
)
def test_each_decoder_level_concatenates_its_encoder_feature(config):
    """Skip connections: the input of up level i holds, as a block of channels, the values of down level i."""
    keras.utils.set_random_seed(0)
    model = build_unet(**config)
    x, t = batch(model)
    for level in range(len(config["widths"])):
        concat = model.get_layer(f"up{level}_concat")  # missing if the skip was dropped
        encoder = _encoder_feature(model, level)
        joined, feature = (np.asarray(a) for a in keras.Model(model.inputs, [concat.output, encoder.output])([x, t]))
        width = feature.shape[-1]
        assert width == config["widths"][level] and joined.shape[:3] == feature.shape[:3]
        assert joined.shape[-1] > width  # the decoder's own features and the skip, side by side
        # one end of the channels is down level i itself (not another level, not a copy of the decoder's h)
        skip_last = np.array_equal(joined[..., -width:], feature)
        assert skip_last or np.array_equal(joined[..., :width], feature), f"no skip at level {level}"
        decoder_part = joined[..., :-width] if skip_last else joined[..., width:]
        n = min(width, decoder_part.shape[-1])
        assert np.max(np.abs(decoder_part[..., :n] - feature[..., :n])) > 1e-3  # h is not the skip again


def test_the_finest_skip_alone_carries_the_image_when_the_path_below_is_cut():
    """Zero the first down-sampling: then only the level-0 skip connection can carry x to the output."""
    keras.utils.set_random_seed(0)
    model = build_unet(**small())
    cut = model.get_layer("down0_downsample")
    for weight in (cut.kernel, cut.bias):
        weight.assign(np.zeros(weight.shape, "float32"))
    x, t = batch(model, n=1)
    other = np.random.default_rng(5).standard_normal(x.shape).astype("float32")
    y, y_other = (np.asarray(model([image, t])) for image in (x, other))
    assert np.max(np.abs(y - y_other)) > 1e-2


def test_same_seed_same_model():
    outputs = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        model = build_unet(**small())
        outputs.append(np.asarray(model(list(batch(model)))))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_conditional_model_label_changes_output():
    keras.utils.set_random_seed(0)
    model = build_unet(**small(), num_classes=10)
    assert [i.name for i in model.inputs] == ["x", "t", "label"]
    x, t = batch(model, n=1)
    x3, t3 = np.repeat(x, 3, 0), np.repeat(t, 3, 0)
    y = np.asarray(model([x3, t3, np.array([0, 3, 10], "int32")]))  # 10 is the null label
    assert y.shape == x3.shape
    assert np.max(np.abs(y[0] - y[1])) > 1e-3
    assert np.max(np.abs(y[0] - y[2])) > 1e-3
    assert model.get_layer("label_embedding").input_dim == 11


ROUND_TRIP = """
import sys
import keras
import numpy as np
import ddpm_helpers.method.unet  # importing the module registers its layers, nothing else does
folder = sys.argv[1]
model = keras.saving.load_model(folder + "/unet.keras", safe_mode=True)
inputs = list(np.load(folder + "/inputs.npz").values())
np.save(folder + "/outputs.npy", np.asarray(model(inputs)))
print(model.count_params())
"""


@pytest.mark.parametrize("num_classes", [None, 4])
def test_keras_file_round_trip_in_a_fresh_process(tmp_path, num_classes):
    import os
    import subprocess
    import sys
    from pathlib import Path

    keras.utils.set_random_seed(0)
    model = build_unet(**small(), num_classes=num_classes)
    x, t = batch(model)
    inputs = [x, t] if num_classes is None else [x, t, np.array([0, 4, 2], "int32")]
    model.save(tmp_path / "unet.keras")
    np.savez(tmp_path / "inputs.npz", *inputs)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) == model.count_params()
    np.testing.assert_array_equal(np.load(tmp_path / "outputs.npy"), np.asarray(model(inputs)))


def test_weights_h5_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_unet(**small())
    path = tmp_path / "unet.weights.h5"
    model.save_weights(path)
    keras.utils.set_random_seed(1)
    other = build_unet(**small())
    x, t = batch(model)
    assert np.max(np.abs(np.asarray(other([x, t])) - np.asarray(model([x, t])))) > 1e-3  # really different
    other.load_weights(path)
    np.testing.assert_array_equal(np.asarray(other([x, t])), np.asarray(model([x, t])))


# ---------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(image_size=10, widths=(8, 16, 16)), r"image_size=10 is not divisible by 2\*\*\(len\(widths\)-1\) = 4"),
        (dict(widths=(8, 10)), r"widths\[1\]=10 is not divisible by groups=4"),
        (dict(groups=3), r"widths\[0\]=8 is not divisible by groups=3"),
        (dict(attention_resolutions=(16,)), r"attention_resolutions contains 16, a resolution this network never"),
        (dict(attention_resolutions=(2,)), r"never reaches: its levels are 8x8, 4x4"),
        (dict(time_embedding_dim=15), r"time_embedding_dim=15 must be an even integer"),
        (dict(time_embedding_dim=0), r"time_embedding_dim=0 must be an even integer >= 2"),
        (dict(widths=()), r"widths=\(\) is empty"),
        (dict(num_res_blocks=0), r"num_res_blocks=0 must be a positive integer"),
        (dict(channels=0), r"channels=0 must be a positive integer"),
        (dict(num_classes=0), r"num_classes=0 must be a positive integer"),
    ],
)
def test_bad_settings_raise_named_value_error(changes, message):
    config = small(**{k: v for k, v in changes.items() if k != "num_classes"})
    with pytest.raises(ValueError, match=message):
        build_unet(**config, num_classes=changes.get("num_classes"))


def test_residual_block_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="input channels = 6 is not divisible by groups = 4"):
        ResidualBlock(8, groups=4)(np.zeros((1, 4, 4, 6), "float32"), np.zeros((1, 4), "float32"))
