"""The noise-prediction network: a U-Net with time embeddings (chapter "The U-Net", ``sec-unet``).

The model takes a noisy batch ``x`` (float32, shape (B, H, W, C)) and the time index ``t`` (int32,
shape (B,), an array position 0..T-1 as everywhere in :mod:`ddpm_helpers.method.diffusion`) and returns
the predicted noise, with the shape of ``x``:

    >>> from ddpm_helpers import get_profile
    >>> from ddpm_helpers.method.unet import build_unet_for_profile
    >>> model = build_unet_for_profile(get_profile("smoke"))
    >>> model.input_shape, model.output_shape
    ([(None, 8, 8, 1), (None,)], (None, 8, 8, 1))

With ``num_classes=K`` the model takes a third input, ``label`` (int32, (B,)), whose learned
embedding is added to the time embedding; ``label == K`` is the "null" label that classifier-free
guidance uses for the unconditional prediction.

The building blocks (in :mod:`ddpm_helpers.method.unet_layers`, importable from here), each a
serialisable Keras layer built only from Keras layers and ``keras.ops``:

- :class:`.SinusoidalTimeEmbedding`: t -> sines and cosines of t at geometric frequencies
  (Eq. (7.1) (``eq-time-embedding``)), as in the Transformer and DDPM.
- :class:`.ResidualBlock`: GroupNorm, SiLU, 3x3 convolution, plus the time embedding, twice, and a
  shortcut (Eq. (7.4) (``eq-res-block``)).
- :class:`.AttentionBlock`: multi-head self-attention over all pixels, added to its input
  (Eq. (7.7) (``eq-attention-block``)).

The architecture follows the original CelebA tutorial's model (widths 32/64/128/256, two residual blocks per
level, attention at 16x16 and in the bottleneck for the ``seed`` profile); the chapter lists
every difference, with its reason.
"""

from __future__ import annotations


import keras
from keras import layers

from ddpm_helpers.method.unet_layers import (  # noqa: F401 (re-exported)
    PACKAGE,
    AttentionBlock,
    ResidualBlock,
    SinusoidalTimeEmbedding,
    _check_time_embedding_dim,
    _is_int,
    sinusoidal_frequencies,
)


# --------------------------------------------------------------------------------------------
# The U-Net
# --------------------------------------------------------------------------------------------

def _positive_int(name: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")
    return int(value)


def level_resolutions(image_size: int, levels: int) -> list[int]:
    """Side length of the feature maps at each level: ``image_size / 2**i`` for ``i < levels``."""
    return [image_size // 2**i for i in range(levels)]


def validate_unet_config(*, image_size, channels, widths, num_res_blocks, attention_resolutions,
                         attention_in_bottleneck, num_heads, key_dim, groups, time_embedding_dim,
                         num_classes=None) -> None:
    """Raise ``ValueError`` naming the offending setting when the U-Net cannot be built as asked."""
    _positive_int("image_size", image_size)
    _positive_int("channels", channels)
    widths = tuple(widths)
    if not widths:
        raise ValueError("widths=() is empty: give one channel count per level, e.g. widths=(32, 64).")
    for i, w in enumerate(widths):
        _positive_int(f"widths[{i}]", w)
    _positive_int("num_res_blocks", num_res_blocks)
    _positive_int("num_heads", num_heads)
    _positive_int("key_dim", key_dim)
    _positive_int("groups", groups)
    _check_time_embedding_dim(time_embedding_dim)
    if num_classes is not None:
        _positive_int("num_classes", num_classes)
    factor = 2 ** (len(widths) - 1)
    if image_size % factor:
        raise ValueError(
            f"image_size={image_size} is not divisible by 2**(len(widths)-1) = {factor}: the U-Net halves the "
            f"image {len(widths) - 1} times ({len(widths)} levels). Use an image size that is a multiple of "
            f"{factor}, or fewer widths."
        )
    for i, w in enumerate(widths):
        if w % groups:
            raise ValueError(
                f"widths[{i}]={w} is not divisible by groups={groups}: GroupNormalization splits the channels "
                f"into {groups} equal groups. Use widths that are multiples of {groups}, or fewer groups."
            )
    reached = level_resolutions(image_size, len(widths))
    for r in attention_resolutions:
        if r not in reached:
            raise ValueError(
                f"attention_resolutions contains {r!r}, a resolution this network never reaches: its levels are "
                f"{', '.join(f'{s}x{s}' for s in reached)}. Use some of {tuple(reached)} "
                "(the bottleneck has its own switch, attention_in_bottleneck)."
            )


def build_unet(
    *,
    image_size: int,
    channels: int,
    widths,
    num_res_blocks: int,
    attention_resolutions=(),
    attention_in_bottleneck: bool = True,
    num_heads: int = 1,
    key_dim: int = 32,
    groups: int = 8,
    time_embedding_dim: int = 128,
    num_classes: int | None = None,
    name: str = "unet",
) -> keras.Model:
    """Build the noise-prediction U-Net (Keras functional model). Chapter "The U-Net".

    - ``widths``: channels of each level; level ``i`` works at ``image_size / 2**i``. The image
      is halved between levels (a stride-2 convolution) and doubled on the way up (nearest
      up-sampling + 3x3 convolution); the bottleneck sits at ``image_size / 2**(len(widths)-1)``.
    - ``num_res_blocks`` :class:`.ResidualBlock` per level on each path; after each, an
      :class:`.AttentionBlock` when the level's side is in ``attention_resolutions``.
    - Bottleneck: residual block, attention (if ``attention_in_bottleneck``), residual block.
    - Skip connections: the output of each down level is concatenated to the input of the up
      level at the same resolution.
    - Time: :class:`.SinusoidalTimeEmbedding` of ``time_embedding_dim`` through a two-layer MLP
      (GELU between, as in the original CelebA tutorial), given to every residual block.
    - ``num_classes``: adds the input ``label`` and a learned embedding of ``num_classes + 1``
      entries (the last is the null label of classifier-free guidance) added to the time embedding.

    Inputs ``[x, t]`` (or ``[x, t, label]``): x float32 (B, image_size, image_size, channels),
    t and label int32 (B,). Output: the predicted noise, shaped like x. Bad settings raise
    ``ValueError`` naming the setting (see :func:`validate_unet_config`).
    """
    validate_unet_config(
        image_size=image_size,
        channels=channels,
        widths=widths,
        num_res_blocks=num_res_blocks,
        attention_resolutions=attention_resolutions,
        attention_in_bottleneck=attention_in_bottleneck,
        num_heads=num_heads,
        key_dim=key_dim,
        groups=groups,
        time_embedding_dim=time_embedding_dim,
        num_classes=num_classes,
    )
    widths = tuple(int(w) for w in widths)
    attention_resolutions = tuple(int(r) for r in attention_resolutions)
    levels = len(widths)

    x_in = keras.Input(
        shape=(image_size, image_size, channels), dtype="float32", name="x"
    )
    t_in = keras.Input(shape=(), dtype="int32", name="t")
    inputs = [x_in, t_in]

    # Time (and label) embedding, shared by every residual block.
    temb = SinusoidalTimeEmbedding(time_embedding_dim, name="time_embedding")(
        t_in
    )
    temb = layers.Dense(
        time_embedding_dim, activation="gelu", name="time_mlp_1"
    )(temb)
    temb = layers.Dense(time_embedding_dim, name="time_mlp_2")(temb)
    if num_classes is not None:
        label_in = keras.Input(shape=(), dtype="int32", name="label")
        inputs.append(label_in)
        label_emb = layers.Embedding(
            num_classes + 1, time_embedding_dim, name="label_embedding"
        )(label_in)
        temb = layers.Add(name="time_plus_label")([temb, label_emb])

    def attention(h, tag):
        return AttentionBlock(
            num_heads, key_dim, groups, name=f"{tag}_attention"
        )(h)

    h = layers.Conv2D(widths[0], 3, padding="same", name="stem")(x_in)

    # Down path: residual blocks (and attention) per level, a skip per
    # level, halve the resolution between levels.
    skips = []
    for i, w in enumerate(widths):
        size = image_size // 2**i
        for j in range(num_res_blocks):
            h = ResidualBlock(w, groups, name=f"down{i}_res{j}")(h, temb)
            if size in attention_resolutions:
                h = attention(h, f"down{i}_res{j}")
        skips.append(h)
        if i < levels - 1:
            h = layers.Conv2D(
                w, 3, strides=2, padding="same", name=f"down{i}_downsample"
            )(h)

    # Bottleneck, at the smallest resolution.
    h = ResidualBlock(widths[-1], groups, name="mid_res0")(h, temb)
    if attention_in_bottleneck:
        h = attention(h, "mid")
    h = ResidualBlock(widths[-1], groups, name="mid_res1")(h, temb)

    # Up path: concatenate the skip of the same level, residual blocks
    # (and attention), double the resolution.
    for i in reversed(range(levels)):
        size = image_size // 2**i
        h = layers.Concatenate(name=f"up{i}_concat")([h, skips[i]])
        for j in range(num_res_blocks):
            h = ResidualBlock(widths[i], groups, name=f"up{i}_res{j}")(h, temb)
            if size in attention_resolutions:
                h = attention(h, f"up{i}_res{j}")
        if i > 0:
            h = layers.UpSampling2D(
                2, interpolation="nearest", name=f"up{i}_upsample"
            )(h)
            h = layers.Conv2D(
                widths[i], 3, padding="same", name=f"up{i}_upsample_conv"
            )(h)

    # Output head: normalise, activate, project back to the image's channels.
    h = layers.GroupNormalization(groups, name="out_norm")(h)
    h = layers.Activation("silu", name="out_silu")(h)
    out = layers.Conv2D(channels, 3, padding="same", name="out_conv")(h)
    return keras.Model(inputs, out, name=name)


UNET_PROFILE_FIELDS = ("image_size", "channels", "widths", "num_res_blocks", "attention_resolutions",
                       "attention_in_bottleneck", "num_heads", "key_dim", "groups", "time_embedding_dim")


def unet_config(profile) -> dict:
    """The keyword arguments of :func:`build_unet` that ``profile`` sets."""
    return {field: getattr(profile, field) for field in UNET_PROFILE_FIELDS}


def build_unet_for_profile(profile, num_classes: int | None = None) -> keras.Model:
    """:func:`build_unet` with the sizes of ``profile`` (a :class:`ddpm_helpers.profiles.Profile`)."""
    return build_unet(**unet_config(profile), num_classes=num_classes, name="unet")
