"""Two-dimensional point clouds: the whole algorithm in seconds (chapter "Diffusion in two dimensions", ``sec-diffusion-2d``).

The 2-D chapter runs exactly the code of the image chapters (the schedule of
:mod:`ddpm_helpers.method.schedules`, the training step and EMA of :mod:`ddpm_helpers.engine.training`, the
samplers of :mod:`ddpm_helpers.engine.sampling`) on points ``x`` of shape (B, 2) instead of images
(B, H, W, C). This module adds only what is specific to 2-D data:

- :func:`.make_toy_data`: three data sets generated in code (no download), with class labels
  on request (:func:`.nearest_gaussian` classifies the eight Gaussians), from
  :mod:`ddpm_helpers.playground.toy_data`;
- :func:`build_mlp_denoiser`: a small MLP noise predictor ``model([x_t, t]) -> eps`` (or
  ``model([x_t, t, label])``) with the U-Net's sinusoidal time embedding;
- the sizes of the 2-D experiments and their training loop are in
  :mod:`ddpm_helpers.playground.toy_training` (:func:`.toy_settings`, :func:`.train_toy`);
- :func:`.sliced_wasserstein`, :func:`.evaluate_toy`: the quality metric and its data-vs-data floor
  (Eq. (6.3) (``eq-sliced-wasserstein``)), from :mod:`ddpm_helpers.playground.toy_data`;
- :func:`clipped_noise_predictor` and :func:`cloud_animation`: sampling points, and watching them.
"""

from __future__ import annotations


import numpy as np

from ddpm_helpers.playground.toy_data import (  # noqa: F401 (re-exported)
    _MOONS_CENTRE,
    _MOONS_SCALE,
    _ROLL_CENTRE,
    EIGHT_GAUSSIAN_CENTRES,
    TOY_DATASETS,
    TOY_NUM_CLASSES,
    ToyEvaluation,
    evaluate_toy,
    make_toy_data,
    nearest_gaussian,
    projection_directions,
    sliced_wasserstein,
)


# --------------------------------------------------------------------------------------------
# The denoiser
# --------------------------------------------------------------------------------------------

def build_mlp_denoiser(
    hidden: int = 64,
    depth: int = 3,
    time_embedding_dim: int = 64,
    *,
    data_dim: int = 2,
    num_classes: int | None = None,
    name: str = "mlp_denoiser",
):
    """A small MLP that predicts the noise of a point: ``model([x_t, t]) -> eps`` of shape (B, data_dim).

    The time index ``t`` (int32, (B,)) goes through the U-Net's sinusoidal time embedding
    (:class:`ddpm_helpers.method.unet_layers.SinusoidalTimeEmbedding`) and a two-layer MLP; ``x_t``
    through a dense layer. ``depth`` residual blocks follow, each adding a projection of the time
    embedding before two SiLU dense layers. With ``num_classes``, the model takes
    ``[x_t, t, label]`` and adds a learned embedding of the label, whose row ``num_classes`` is the
    null label (no condition, for classifier-free guidance). Chapter "Diffusion in two dimensions".
    """
    import keras
    from keras import layers

    from ddpm_helpers.method.unet import SinusoidalTimeEmbedding

    for field, value in (
        ("hidden", hidden),
        ("depth", depth),
        ("time_embedding_dim", time_embedding_dim),
        ("data_dim", data_dim),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < 1
        ):
            raise ValueError(
                f"{field} must be a positive integer, got {value!r}."
            )
    if time_embedding_dim % 2:
        raise ValueError(
            f"time_embedding_dim must be even (sines and cosines), got {time_embedding_dim}."
        )
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            f"num_classes must be a positive integer or None, got {num_classes!r}."
        )

    x_in = keras.Input(shape=(data_dim,), name="x_t")
    t_in = keras.Input(shape=(), dtype="int32", name="t")
    inputs = [x_in, t_in]
    embedding = SinusoidalTimeEmbedding(time_embedding_dim)(t_in)
    embedding = layers.Dense(hidden, activation="silu")(embedding)
    embedding = layers.Dense(hidden)(embedding)
    if num_classes:
        label_in = keras.Input(shape=(), dtype="int32", name="label")
        inputs.append(label_in)
        label_embedding = layers.Embedding(
            int(num_classes) + 1, hidden, name="label_embedding"
        )(label_in)
        embedding = layers.Add()([embedding, label_embedding])
    h = layers.Dense(hidden)(x_in)
    for _ in range(depth):
        r = layers.Add()([h, layers.Dense(hidden)(embedding)])
        r = layers.Dense(hidden, activation="silu")(
            layers.Activation("silu")(r)
        )
        r = layers.Dense(hidden)(r)
        h = layers.Add()([h, r])
    h = layers.Activation("silu")(layers.LayerNormalization()(h))
    return keras.Model(
        inputs, layers.Dense(data_dim, name="eps")(h), name=name
    )


# --------------------------------------------------------------------------------------------
# Sampling points: the sampler's x_0 clipping, for a box instead of the pixel range
# --------------------------------------------------------------------------------------------

X0_LIMIT = 3.0  # every toy data set lies well inside [-3, 3]^2


def clipped_noise_predictor(model_or_fn, schedule, limit: float = X0_LIMIT):
    """A noise predictor whose guess of x_0 is clipped to [-limit, limit] (for points, not pixels).

    The samplers of :mod:`ddpm_helpers.engine.sampling` clip their guess of x_0 to the pixel range
    [-1, 1] (``clip_x0=True``); 2-D points are not confined to it. This wrapper clips the guess
    x0 = predict_x0_from_noise(x_t, t, eps) to a wider box and returns the noise that matches the
    clipped guess (``predict_noise_from_x0``), which is exactly what the sampler does with its own
    clipping. Use it with ``clip_x0=False``. Chapter "Diffusion in two dimensions".
    """
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import (
        predict_noise_from_x0,
        predict_x0_from_noise,
    )
    from ddpm_helpers.method.predictors import NoisePredictor, as_noise_predictor

    if not limit > 0:
        raise ValueError(
            f"limit must be positive (the half-width of the box for x_0), got {limit!r}."
        )
    predict = as_noise_predictor(model_or_fn)
    limit = float(limit)

    def predict_noise(
        x, t, labels, *args
    ):  # args: tensor inputs of `predict` (NoisePredictor)
        eps = predict.fn(x, t, labels, *args)
        x0 = tf.clip_by_value(
            predict_x0_from_noise(schedule, x, t, eps), -limit, limit
        )
        return predict_noise_from_x0(schedule, x, t, x0)

    # Compiled loops are shared with every clipped predictor of the same model, schedule and box.
    return NoisePredictor(
        predict_noise,
        owner=predict.owner,
        args=predict.args,
        key=predict.key + ("clip", schedule, limit),
        conditional=predict.conditional,
        limit=limit,
    )


# --------------------------------------------------------------------------------------------
# Animation of the reverse process
# --------------------------------------------------------------------------------------------

def cloud_animation(snapshots, times=None, *, data=None, count: int = 500, size: float = 3.2, limit: float = 3.0,
                    interval: int = 100, hold: int = 10, title: str = "t = {t}"):
    """A ``matplotlib.animation.FuncAnimation`` of a point cloud through the reverse process.

    ``snapshots``: (K, N, 2), e.g. ``SampleResult.snapshots`` of a 2-D sampler called with
    ``snapshots=K``; ``times``: the K time labels (``SampleResult.snapshot_times``); ``data``:
    points drawn in light grey behind the cloud; the first ``count`` points are animated;
    ``hold``: extra frames showing the final cloud. Returns ``(animation, figure)``: render it
    with ``animation.to_jshtml()`` (or save it as a GIF), then close the figure so it is not
    drawn a second time. Chapter "Diffusion in two dimensions".
    """
    import matplotlib.pyplot as plt
    from matplotlib import animation

    snapshots = np.asarray(snapshots)
    if snapshots.ndim != 3 or snapshots.shape[-1] != 2:
        raise ValueError(f"snapshots must have shape (K, N, 2), got {snapshots.shape}; sample with snapshots=K.")
    frames_total = snapshots.shape[0]
    if times is not None and len(times) != frames_total:
        raise ValueError(f"Got {len(times)} times for {frames_total} snapshots.")
    cloud = snapshots[:, :count]
    fig, ax = plt.subplots(figsize=(size, size))
    if data is not None:
        ax.scatter(*np.asarray(data)[:2000].T, s=2, color="0.85", zorder=0)
    points = ax.scatter(*cloud[0].T, s=3, color="C0", zorder=1)
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    heading = ax.set_title(title.format(t=times[0]) if times is not None else "", fontsize="small")
    fig.tight_layout()  # after the title is set, so that the layout leaves room for it

    def draw(frame):
        k = min(frame, frames_total - 1)
        points.set_offsets(cloud[k])
        if times is not None:
            heading.set_text(title.format(t=times[k]))
        return points, heading

    anim = animation.FuncAnimation(fig, draw, frames=frames_total + hold, interval=interval, blit=False)
    return anim, fig
