"""Mixed precision (chapter "Scaling up"): which Keras dtype policy a run computes in, and building
layers under it. Used by :func:`ddpm_helpers.engine.train_step.build_training_state`.
"""

from __future__ import annotations

import contextlib


def precision_policy(mixed: bool, strategy=None) -> str:
    """The Keras dtype policy: ``"float32"``, or with ``mixed`` ``"mixed_float16"`` on GPUs (with loss
    scaling) and ``"mixed_bfloat16"`` on TPUs and CPUs. Variables, the network's output, the loss
    and the EMA stay float32 either way."""
    import tensorflow as tf

    if not mixed:
        return "float32"
    if isinstance(strategy, tf.distribute.TPUStrategy) or not tf.config.list_physical_devices("GPU"):
        return "mixed_bfloat16"
    return "mixed_float16"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Build layers under the Keras dtype policy ``name`` (the global policy is restored after)."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
