"""The digit classifier whose features the book's metric compares (chapter "Evaluation", ``sec-evaluation``).

A small CNN trained on the real training digits (:func:`load_or_train_classifier`, cached in
``$DDPM_RUNS_DIR/classifier-...``); :mod:`ddpm_helpers.measuring.metrics` scores samples with its
penultimate-layer features (Eq. (10.1) (``eq-frechet``)) and its confidence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from ddpm_helpers.notebook.pages import on_page

CONFIDENCE_THRESHOLD = 0.9
FEATURE_DIM = 64
CLASSIFIER_EPOCHS = 20
CLASSIFIER_BATCH_SIZE = 128
CLASSIFIER_LEARNING_RATE = 2e-3
CLASSIFIER_FORMAT = 1  # bump when the classifier's architecture or training changes
RUNS_DIR_ENV_VAR = "DDPM_RUNS_DIR"



def build_classifier(image_shape, num_classes: int = 10, feature_dim: int = FEATURE_DIM, seed: int = 0):
    """A small CNN: two convolutions, a ``features`` layer (``feature_dim`` ReLU units), class logits."""
    import keras
    from keras import layers

    images = keras.Input(shape=tuple(image_shape), name="images")
    # Every layer is named, so that a model summary reads the same however many models the
    # process built before (Keras numbers unnamed layers: dropout_6, ...).
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv_8x8")(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv_4x4")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.25, seed=seed, name="dropout_pixels")(x)
    features = layers.Dense(feature_dim, activation="relu", name="features")(x)
    dropped = layers.Dropout(0.25, seed=seed + 1, name="dropout_features")(features)
    logits = layers.Dense(num_classes, name="logits")(dropped)
    return keras.Model(images, logits, name="digit_classifier")


def as_model_range(images) -> np.ndarray:
    """Images as float32 in [-1, 1]: uint8 0..255 are mapped, floats are clipped (as a sample file would be)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise ValueError(f"{int(np.sum(~np.isfinite(images)))} values of the images are NaN or infinite: "
                         "broken samples (e.g. from a diverged model) cannot be scored.")
    return np.clip(images.astype(np.float32), -1.0, 1.0)


def quantize(images) -> np.ndarray:
    """The uint8 round trip every image set goes through before scoring (samples are stored as uint8)."""
    from ddpm_helpers.notebook.plotting import to_uint8

    images = np.asarray(images)
    return as_model_range(images if images.dtype == np.uint8 else to_uint8(images))


@dataclasses.dataclass
class Classifier:
    """The trained feature network. ``accuracy`` and ``confident_share`` are measured on the held-out digits."""

    model: object
    feature_model: object
    num_classes: int
    accuracy: float
    confident_share: float
    path: Path | None
    info: dict

    @staticmethod
    def _apply(network, images, batch_size: int) -> np.ndarray:
        # Every image set is scored as 8-bit images (quantize), whether it comes from a file of
        # uint8 samples or from memory: the same samples give the same numbers either way.
        # Direct calls in batches: unlike Model.predict, no new trace for every input size.
        x = quantize(images)
        outputs = [np.asarray(network(x[start:start + batch_size], training=False), dtype=np.float64)
                   for start in range(0, len(x), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0,) + tuple(network.output.shape[1:]))

    def features(self, images, batch_size: int = 1024) -> np.ndarray:
        """Penultimate-layer features (N, feature_dim), float64, of images in [-1, 1] or uint8
        (rounded to 8 bits first)."""
        return self._apply(self.feature_model, images, batch_size)

    def probabilities(self, images, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (N, num_classes) (softmax of the logits), of images rounded to 8 bits."""
        from scipy.special import softmax

        return softmax(self._apply(self.model, images, batch_size), axis=1)

    def __repr__(self) -> str:
        return (f"Classifier({self.num_classes} classes, held-out accuracy {self.accuracy:.3f}, "
                f"{self.feature_model.output.shape[-1]} features)")


def _feature_model(model):
    import keras

    return keras.Model(model.input, model.get_layer("features").output)


def train_classifier(images, labels, *, num_classes: int = 10, epochs: int = CLASSIFIER_EPOCHS, seed: int = 0,
                     feature_dim: int = FEATURE_DIM, verbose: int = 0):
    """Train :func:`build_classifier` on images in [-1, 1] with integer labels (Adam, cross-entropy)."""
    import keras

    images = quantize(images)
    labels = np.asarray(labels, dtype=np.int32)
    keras.utils.set_random_seed(seed)  # weights, dropout and shuffling: the same classifier every time
    model = build_classifier(images.shape[1:], num_classes, feature_dim, seed)
    model.compile(optimizer=keras.optimizers.Adam(CLASSIFIER_LEARNING_RATE),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images, labels, batch_size=CLASSIFIER_BATCH_SIZE, epochs=epochs, shuffle=True, verbose=verbose)
    return model


def _runs_dir(runs_dir=None) -> Path:
    return Path(runs_dir) if runs_dir is not None else Path(os.environ.get(RUNS_DIR_ENV_VAR) or "runs")


def classifier_key(data_name: str, image_shape, data_fingerprint: str, seed: int) -> str:
    """Folder name of a cached classifier: data, image shape and a hash of everything that shapes it."""
    settings = dict(format=CLASSIFIER_FORMAT, data=data_name, shape=list(image_shape), fingerprint=data_fingerprint,
                    seed=int(seed), epochs=CLASSIFIER_EPOCHS, batch_size=CLASSIFIER_BATCH_SIZE,
                    learning_rate=CLASSIFIER_LEARNING_RATE, features=FEATURE_DIM)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return f"classifier-{data_name}-{'x'.join(str(s) for s in image_shape)}-{digest}"


def load_reference_data(data: str = "digits", image_size: int = 8, channels: int = 1, seed: int = 0):
    """``(train_images, train_labels, held_out_images, held_out_labels, fingerprint)`` of a labelled data set."""
    from ddpm_helpers.engine.data import load_data

    if data.startswith("folder:"):
        raise ValueError(
            f"The book's metric needs labelled images to train its classifier; {data!r} is an unlabelled folder. "
            "Evaluate models trained on digits (or mnist / fashion_mnist / cifar10)."
        )
    train = load_data(data, image_size, channels, split="train", seed=seed)
    held_out = load_data(data, image_size, channels, split="held_out", seed=seed)
    if train.images is None or train.labels is None:
        raise ValueError(f"The data set {data!r} has no labels in memory: the metric needs labelled images.")
    return train.images, train.labels, held_out.images, held_out.labels, train.fingerprint


def load_or_train_classifier(data: str = "digits", image_size: int = 8, channels: int = 1, *, runs_dir=None,
                             seed: int = 0, verbose: bool = True) -> Classifier:
    """The feature classifier for ``data`` at this image size: loaded from ``$DDPM_RUNS_DIR/classifier-...``
    or trained on the training split (seconds for the digits) and saved there.
    """
    train_x, train_y, held_x, held_y, fingerprint = load_reference_data(data, image_size, channels, seed)
    num_classes = int(max(train_y.max(), held_y.max())) + 1
    folder = _runs_dir(runs_dir) / classifier_key(data, train_x.shape[1:], fingerprint, seed)
    weights = folder / "classifier.weights.h5"
    info_file = folder / "info.json"
    if weights.exists() and info_file.exists():
        model = build_classifier(train_x.shape[1:], num_classes, FEATURE_DIM, seed)
        model.load_weights(weights)
        info = json.loads(info_file.read_text())
        if verbose and not on_page():
            print(f"Loaded the feature classifier from {folder} (held-out accuracy {info['accuracy']:.3f}).")
    else:
        began = time.perf_counter()
        model = train_classifier(train_x, train_y, num_classes=num_classes, seed=seed)
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / "partial.weights.h5"
        model.save_weights(partial)
        os.replace(partial, weights)
        info = {"data": data, "image_shape": list(train_x.shape[1:]), "train_images": int(len(train_x)),
                "epochs": CLASSIFIER_EPOCHS, "train_seconds": time.perf_counter() - began}
        probabilities = Classifier(model, _feature_model(model), num_classes, 0.0, 0.0, None, {}).probabilities(
            quantize(held_x))
        info["accuracy"] = float(np.mean(probabilities.argmax(1) == held_y))
        info["confident_share"] = float(np.mean(probabilities.max(1) > CONFIDENCE_THRESHOLD))
        info_file.write_text(json.dumps(info, indent=1))
        if verbose and not on_page():
            print(f"Trained the feature classifier on {len(train_x)} real training images in "
                  f"{info['train_seconds']:.1f} s: held-out accuracy {info['accuracy']:.3f}; saved to {folder}.")
    return Classifier(model=model, feature_model=_feature_model(model), num_classes=num_classes,
                      accuracy=float(info["accuracy"]), confident_share=float(info["confident_share"]),
                      path=folder, info=info)
