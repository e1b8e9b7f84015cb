"""What the U-Net's blocks cost: parameters and multiply-accumulates (chapter "The U-Net", ``sec-unet``).

Closed forms for one :class:`~ddpm_helpers.method.unet_layers.AttentionBlock` (Eqs. (7.8)
(``eq-attention-params``) and (7.9) (``eq-attention-macs``)) and one
:class:`~ddpm_helpers.method.unet_layers.ResidualBlock` (Eqs. (7.5) (``eq-res-params``) and (7.6)
(``eq-res-macs``)), :func:`macs_by_layer` for a whole network, and :func:`forward_flops`, the
one count of a forward pass that the chapters "Scaling up" and "Running it faster" and
``benchmarks/bench_training.py`` use for their estimates. :mod:`ddpm_helpers.method.unet`
re-exports them.
"""

from __future__ import annotations

import math

from keras import layers


def attention_cost(tokens: int, channels: int, num_heads: int, key_dim: int) -> dict:
    """Parameters and multiply-accumulates (MACs, per image) of one :class:`.AttentionBlock`.

    - parameters: ``4 C h d`` weights of the query, key, value and output projections, plus
      ``3 h d + C`` biases, plus ``2 C`` of the GroupNorm;
    - MACs: ``4 N C h d`` for the four projections and ``2 N^2 h d`` for the scores ``Q K^T`` and
      the weighted sum of the values (softmax and normalisation are not counted).

    ``N`` is the number of tokens (pixels), ``C`` the channels, ``h`` the heads, ``d`` the key dim.
    Chapter "The U-Net", Eqs. (7.8) (``eq-attention-params``) and (7.9) (``eq-attention-macs``).
    """
    n, c, h, d = int(tokens), int(channels), int(num_heads), int(key_dim)
    projections = 4 * n * c * h * d
    mixing = 2 * n * n * h * d
    return {
        "params": 4 * c * h * d + 3 * h * d + c + 2 * c,
        "projection_macs": projections,
        "mixing_macs": mixing,
        "macs": projections + mixing,
    }


def residual_block_cost(tokens: int, in_channels: int, width: int, embedding_dim: int) -> dict:
    """Parameters and multiply-accumulates (MACs, per image) of one :class:`.ResidualBlock`.

    With N = tokens (H*W), C_in input channels, C = width and E = embedding_dim:

    - parameters: ``2 C_in + (9 C_in C + C) + (E C + C) + 2 C + (9 C^2 + C)``, plus
      ``C_in C + C`` for the 1x1 shortcut when ``C_in != C``;
    - MACs: ``9 N C_in C + E C + 9 N C^2``, plus ``N C_in C`` for the shortcut.

    Chapter "The U-Net", Eqs. (7.5) (``eq-res-params``) and (7.6) (``eq-res-macs``).
    """
    n, c_in, c, e = int(tokens), int(in_channels), int(width), int(embedding_dim)
    projected = c_in != c
    return {
        "params": 2 * c_in + 9 * c_in * c + c + e * c + c + 2 * c + 9 * c * c + c + projected * (c_in * c + c),
        "macs": 9 * n * c_in * c + e * c + 9 * n * c * c + projected * n * c_in * c,
    }


def macs_by_layer(model) -> dict[str, int]:
    """Multiply-accumulates per image of every layer of a U-Net that does any (convolutions, dense
    layers, residual and attention blocks); normalisation, activations and additions are not counted.
    """
    from ddpm_helpers.method.unet import AttentionBlock, ResidualBlock

    counts = {}
    for layer in model.layers:
        if isinstance(layer, ResidualBlock):
            _, h, w, c_in = _input_shape(layer)
            counts[layer.name] = residual_block_cost(h * w, c_in, layer.width, layer.time_proj.kernel.shape[0])["macs"]
        elif isinstance(layer, AttentionBlock):
            _, h, w, c = layer.output.shape
            counts[layer.name] = attention_cost(h * w, c, layer.num_heads, layer.key_dim)["macs"]
        elif isinstance(layer, layers.Conv2D):
            _, h, w, _ = layer.output.shape
            counts[layer.name] = h * w * math.prod(layer.kernel.shape)
        elif isinstance(layer, layers.Dense):
            counts[layer.name] = math.prod(layer.kernel.shape)
    return counts


def forward_flops(model_or_profile) -> int:
    """Floating-point operations of one forward pass for one image: ``2 x`` the sum of
    :func:`macs_by_layer` (2 per multiply-accumulate), the total of the U-Net chapter's table.

    Takes a U-Net or a profile (whose U-Net is built, without training, to be counted). This is
    the count every estimate of the book uses: for the seed network 2 x 2,173.8 M. TensorFlow's
    graph profiler, which ``benchmarks/bench_training.py`` runs as a cross-check, counts the
    convolutions, dense layers and attention's four projections but not attention's two einsums
    (``mixing_macs`` of :func:`attention_cost`), so profiler + 2 x mixing MACs is the
    comparable sum (within 1%: the profiler also counts additions); adding the whole
    attention cost to the profiler's total counts the projections twice.
    """
    model = model_or_profile
    if not hasattr(model, "layers"):
        from ddpm_helpers.method.unet import build_unet_for_profile

        model = build_unet_for_profile(model_or_profile)
    return 2 * int(sum(macs_by_layer(model).values()))


def attention_mixing_macs(model) -> int:
    """MACs of attention's two einsums (scores and weighted sum) in all attention blocks of
    ``model``, per image: what TensorFlow's graph profiler leaves out (see :func:`forward_flops`)."""
    from ddpm_helpers.method.unet import AttentionBlock

    total = 0
    for layer in model.layers:
        if isinstance(layer, AttentionBlock):
            _, h, w, c = layer.output.shape
            total += attention_cost(h * w, c, layer.num_heads, layer.key_dim)["mixing_macs"]
    return int(total)


def _input_shape(layer) -> tuple:
    """Shape of the first input of a layer of a functional model (``x`` for a residual block)."""
    inputs = layer.input
    return tuple((inputs[0] if isinstance(inputs, (list, tuple)) else inputs).shape)
