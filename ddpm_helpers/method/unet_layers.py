"""The U-Net's building blocks as Keras layers (chapter "The U-Net", ``sec-unet``).

:class:`SinusoidalTimeEmbedding` (Eq. (7.1) (``eq-time-embedding``)), :class:`ResidualBlock`
(Eq. (7.4) (``eq-res-block``)) and :class:`AttentionBlock` (Eq. (7.7) (``eq-attention-block``)),
registered for ``.keras`` files under the package's name;
:func:`ddpm_helpers.method.unet.build_unet` assembles them.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import layers, ops

PACKAGE = "ddpm_helpers"


# --------------------------------------------------------------------------------------------
# Time embedding
# --------------------------------------------------------------------------------------------

def sinusoidal_frequencies(dim: int, max_period: float = 10_000.0):
    """The ``dim // 2`` angular frequencies ``omega_i = max_period ** (-i / (dim/2 - 1))`` (NumPy, float64).

    They run geometrically from 1 (one radian per step) down to ``1 / max_period``.
    Chapter "The U-Net", Eq. (7.1) (``eq-time-embedding``).
    """
    import numpy as np

    _check_time_embedding_dim(dim)
    half = dim // 2
    return np.exp(-math.log(max_period) * np.arange(half) / max(half - 1, 1))


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_time_embedding_dim(dim) -> None:
    if not _is_int(dim) or dim < 2 or dim % 2:
        raise ValueError(
            f"time_embedding_dim={dim!r} must be an even integer >= 2 (half of the entries are sines, "
            "half cosines): use e.g. 16 * image_size, or 128."
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class SinusoidalTimeEmbedding(layers.Layer):
    """Embed integer time steps ``t`` (shape (B,)) as ``[sin(t * omega), cos(t * omega)]`` (shape (B, dim)).

    ``omega`` are :func:`sinusoidal_frequencies`. The layer has no weights; the U-Net passes its
    output through a two-layer MLP. Chapter "The U-Net", Eq. (7.1) (``eq-time-embedding``).
    """

    def __init__(self, dim: int, max_period: float = 10_000.0, **kwargs):
        super().__init__(**kwargs)
        _check_time_embedding_dim(dim)
        if not max_period > 1:
            raise ValueError(f"max_period={max_period!r} must be > 1 (the slowest period, in steps).")
        self.dim = int(dim)
        self.max_period = float(max_period)

    def call(self, t):
        half = self.dim // 2
        omega = ops.exp(
            ops.arange(half, dtype="float32")
            * (-math.log(self.max_period) / max(half - 1, 1))
        )
        angles = ops.reshape(
            ops.cast(t, "float32"), (-1, 1)
        ) * ops.expand_dims(omega, 0)
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


# --------------------------------------------------------------------------------------------
# Residual block
# --------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """``y = shortcut(x) + conv(SiLU(GN(conv(SiLU(GN(x))) + Dense(SiLU(temb)))))``.

    - ``x``: (B, H, W, C_in); ``temb``: (B, E), the time (and label) embedding.
    - Both convolutions are 3x3 with ``padding="same"``, so H and W are kept; the output has
      ``width`` channels.
    - The shortcut is the identity when ``C_in == width``, else a 1x1 convolution.
    - GroupNorm with ``groups`` groups needs ``C_in`` and ``width`` divisible by ``groups``.

    Chapter "The U-Net", Eq. (7.4) (``eq-res-block``).
    """

    def __init__(self, width: int, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.groups = int(groups)
        self.norm1 = layers.GroupNormalization(self.groups, name="norm1")
        self.conv1 = layers.Conv2D(self.width, 3, padding="same", name="conv1")
        self.time_proj = layers.Dense(self.width, name="time_proj")
        self.norm2 = layers.GroupNormalization(self.groups, name="norm2")
        self.conv2 = layers.Conv2D(self.width, 3, padding="same", name="conv2")
        self.shortcut = None

    def build(self, x_shape, temb_shape):
        channels = x_shape[-1]
        for what, count in (("input channels", channels), ("width", self.width)):
            if count % self.groups:
                raise ValueError(
                    f"ResidualBlock {self.name}: {what} = {count} is not divisible by groups = {self.groups}; "
                    "GroupNormalization splits the channels into equal groups."
                )
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        out_shape = (*x_shape[:-1], self.width)
        self.time_proj.build(temb_shape)
        self.norm2.build(out_shape)
        self.conv2.build(out_shape)
        if channels != self.width:
            self.shortcut = layers.Conv2D(self.width, 1, name="shortcut")
            self.shortcut.build(x_shape)

    def call(self, x, temb):
        h = self.conv1(ops.silu(self.norm1(x)))
        h = h + self.time_proj(ops.silu(temb))[:, None, None, :]
        h = self.conv2(ops.silu(self.norm2(h)))
        return h + (self.shortcut(x) if self.shortcut is not None else x)

    def compute_output_shape(self, x_shape, temb_shape):
        return (*x_shape[:-1], self.width)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "groups": self.groups}


# --------------------------------------------------------------------------------------------
# Attention block
# --------------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionBlock(layers.Layer):
    """``y = x + MHA(GN(x))``: multi-head self-attention in which every pixel attends to every pixel.

    The (H, W) grid is flattened to a sequence of N = H*W tokens of C channels; ``num_heads``
    heads of size ``key_dim`` each (Keras' ``MultiHeadAttention``), whose output is projected back
    to C channels and added to the input. Chapter "The U-Net", Eq. (7.7) (``eq-attention-block``).
    """

    def __init__(self, num_heads: int, key_dim: int, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.groups = int(groups)
        self.norm = layers.GroupNormalization(self.groups, name="norm")
        self.attention = layers.MultiHeadAttention(self.num_heads, self.key_dim, name="attention")

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        if channels % self.groups:
            raise ValueError(
                f"AttentionBlock {self.name}: channels = {channels} is not divisible by groups = {self.groups}."
            )
        self.norm.build(input_shape)
        tokens = (input_shape[0], height * width, channels)
        self.attention.build(tokens, tokens)

    def call(self, x):
        _, height, width, channels = x.shape
        tokens = ops.reshape(self.norm(x), (-1, height * width, channels))
        attended = self.attention(tokens, tokens)
        return x + ops.reshape(attended, (-1, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "groups": self.groups}
