"""An offline quality metric (chapter "Evaluation", ``sec-evaluation``).

The usual score for image generators, FID (Heusel et al. 2017), compares Inception-v3 features of
generated and real images. Its weights cannot be downloaded in an offline build, and Inception
was made for 299x299 photographs, not 8x8 digits. This module builds the same kind of measure
from parts the book trains itself:

1. a small classifier trained on the real training digits (:func:`load_or_train_classifier`,
   cached in ``$DDPM_RUNS_DIR/classifier-...``);
2. the Frechet distance between Gaussians fitted to its penultimate-layer features of two image
   sets (:func:`frechet_distance`, Eq. (eq-frechet));
3. the share of samples it labels with confidence > 0.9, and its class histogram.

The numbers are NOT comparable with published FIDs (different network, features, image size
and sample size). They are only meaningful next to two references measured the same way, at
the same sample size: the *floor* (real training images vs real held-out images: the score of a
perfect generator) and the *ceiling* (noise vs real). :func:`evaluate_samples` reports all
three and the ratio FD / floor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

CONFIDENCE_THRESHOLD = 0.9
FEATURE_DIM = 64
CLASSIFIER_EPOCHS = 20
CLASSIFIER_BATCH_SIZE = 128
CLASSIFIER_LEARNING_RATE = 2e-3
CLASSIFIER_FORMAT = 1  # bump when the classifier's architecture or training changes
RUNS_DIR_ENV_VAR = "DDPM_RUNS_DIR"


# --------------------------------------------------------------------------------------------
# The Frechet distance
# --------------------------------------------------------------------------------------------

def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance matrix (float64, unbiased) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` (chapter "Evaluation",
    Eq. (eq-frechet)), with ``scipy.linalg.sqrtm`` for the matrix square root. When the product
    is singular (fewer samples than features), ``eps`` is added to both diagonals, as FID code does.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"Shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}.")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (dead ReLU features) are handled here
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # tiny negative values are round-off


def frechet_distance_of_features(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


# --------------------------------------------------------------------------------------------
# The classifier that provides the features
# --------------------------------------------------------------------------------------------

def build_classifier(image_shape, num_classes: int = 10, feature_dim: int = FEATURE_DIM, seed: int = 0):
    """A small CNN: two convolutions, a ``features`` layer (``feature_dim`` ReLU units), class logits."""
    import keras
    from keras import layers

    images = keras.Input(shape=tuple(image_shape), name="images")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.25, seed=seed)(x)
    features = layers.Dense(feature_dim, activation="relu", name="features")(x)
    logits = layers.Dense(num_classes, name="logits")(layers.Dropout(0.25, seed=seed + 1)(features))
    return keras.Model(images, logits, name="digit_classifier")


def as_model_range(images) -> np.ndarray:
    """Images as float32 in [-1, 1]: uint8 0..255 are mapped, floats are clipped (as a sample file would be)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32)
    return np.clip(images.astype(np.float32), -1.0, 1.0)


def quantize(images) -> np.ndarray:
    """The uint8 round trip every image set goes through before scoring (samples are stored as uint8)."""
    from ddpm_helpers.plotting import to_uint8

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
        # Direct calls in batches: unlike Model.predict, no new trace for every input size.
        x = as_model_range(images)
        outputs = [np.asarray(network(x[start:start + batch_size], training=False), dtype=np.float64)
                   for start in range(0, len(x), batch_size)]
        return np.concatenate(outputs) if outputs else np.zeros((0,) + tuple(network.output.shape[1:]))

    def features(self, images, batch_size: int = 1024) -> np.ndarray:
        """Penultimate-layer features (N, feature_dim), float64, of images in [-1, 1] or uint8."""
        return self._apply(self.feature_model, images, batch_size)

    def probabilities(self, images, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities (N, num_classes) (softmax of the logits)."""
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
    from ddpm_helpers.data import load_data

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
        if verbose:
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
        if verbose:
            print(f"Trained the feature classifier on {len(train_x)} real training images in "
                  f"{info['train_seconds']:.1f} s: held-out accuracy {info['accuracy']:.3f}; saved to {folder}.")
    return Classifier(model=model, feature_model=_feature_model(model), num_classes=num_classes,
                      accuracy=float(info["accuracy"]), confident_share=float(info["confident_share"]),
                      path=folder, info=info)


# --------------------------------------------------------------------------------------------
# Scoring a set of samples
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Evaluation:
    """The scores of one image set, with the references measured the same way at the same size ``n``.

    ``fd``: Frechet distance to the real held-out images; ``floor`` (mean of ``floor_draws``) and
    ``floor_std``: real training images vs the same held-out images; ``ceiling``: noise vs them;
    ``ratio = fd / floor``; ``confident_share``: share of images classified with probability >
    0.9 (``real_confident_share``: the same for held-out digits); ``class_histogram``: counts
    of predicted classes.
    """

    n: int
    fd: float
    floor: float
    floor_std: float
    ceiling: float
    ratio: float
    confident_share: float
    real_confident_share: float
    class_histogram: np.ndarray
    floor_draws: list

    def as_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["class_histogram"] = [int(v) for v in self.class_histogram]
        return values

    def summary(self) -> str:
        return (f"FD {self.fd:.2f} | floor {self.floor:.2f} +- {self.floor_std:.2f} (real vs real) | "
                f"ceiling {self.ceiling:.1f} (noise) | ratio FD / floor {self.ratio:.2f} | "
                f"confident (p > {CONFIDENCE_THRESHOLD}) {100 * self.confident_share:.1f}% "
                f"(real: {100 * self.real_confident_share:.1f}%) | n = {self.n}")


class Evaluator:
    """Scores image sets against the real held-out images with a :class:`Classifier`.

    The held-out features and the floor and ceiling for each sample size are computed once and
    reused. ``floor_repeats`` random training subsets give the floor's mean and spread.
    """

    def __init__(self, classifier: Classifier, data: str = "digits", image_size: int = 8, channels: int = 1,
                 *, seed: int = 0, floor_repeats: int = 5):
        self.classifier = classifier
        self.seed = seed
        self.floor_repeats = floor_repeats
        train_x, _, held_x, _, _ = load_reference_data(data, image_size, channels, seed)
        self.train_images = quantize(train_x)
        self.held_out_images = quantize(held_x)
        self.image_shape = self.held_out_images.shape[1:]
        self.train_features = classifier.features(self.train_images)
        self.held_out_stats = feature_statistics(classifier.features(self.held_out_images))
        self.real_confident_share = float(np.mean(
            classifier.probabilities(self.held_out_images).max(1) > CONFIDENCE_THRESHOLD))
        self._references: dict[int, tuple] = {}

    def fd_to_real(self, images) -> float:
        """Frechet distance of an image set to the real held-out images."""
        return frechet_distance(*feature_statistics(self.classifier.features(quantize(images))), *self.held_out_stats)

    def references(self, n: int) -> tuple[list, float]:
        """Floor draws (n real training images vs held-out) and ceiling (n noise images vs held-out)."""
        if n not in self._references:
            if n > len(self.train_images):
                raise ValueError(f"At most {len(self.train_images)} images can be scored (the size of the real "
                                 f"training set that gives the floor); got {n}.")
            rng = np.random.default_rng(self.seed)
            floors = []
            for _ in range(self.floor_repeats):
                subset = rng.choice(len(self.train_images), size=n, replace=False)
                floors.append(frechet_distance(*feature_statistics(self.train_features[subset]), *self.held_out_stats))
            noise = np.clip(rng.standard_normal((n,) + self.image_shape), -1.0, 1.0)
            self._references[n] = (floors, self.fd_to_real(noise))
        return self._references[n]

    def evaluate(self, images) -> Evaluation:
        """Score ``images`` (N, H, W, C) in [-1, 1] or uint8 against the floor and ceiling at the same N."""
        images = quantize(images)
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"Images have shape {images.shape[1:]}, the real data {self.image_shape}: "
                             "score samples of a model trained on this data set.")
        n = len(images)
        if n < 2:
            raise ValueError(f"Need at least 2 images to fit a covariance, got {n}.")
        floors, ceiling = self.references(n)
        fd = self.fd_to_real(images)
        probabilities = self.classifier.probabilities(images)
        floor = float(np.mean(floors))
        return Evaluation(
            n=n, fd=fd, floor=floor, floor_std=float(np.std(floors)), ceiling=ceiling,
            ratio=fd / floor if floor > 0 else float("inf"),
            confident_share=float(np.mean(probabilities.max(1) > CONFIDENCE_THRESHOLD)),
            real_confident_share=self.real_confident_share,
            class_histogram=np.bincount(probabilities.argmax(1), minlength=self.classifier.num_classes),
            floor_draws=[float(v) for v in floors],
        )


def evaluate_samples(images, *, data: str = "digits", runs_dir=None, seed: int = 0, verbose: bool = True) -> Evaluation:
    """One-call scoring: load or train the classifier for ``data`` at the images' size and evaluate them."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}.")
    classifier = load_or_train_classifier(data, images.shape[1], images.shape[3], runs_dir=runs_dir, seed=seed,
                                          verbose=verbose)
    return Evaluator(classifier, data, images.shape[1], images.shape[3], seed=seed).evaluate(images)


def evaluate_from_cli(args) -> int:
    """``python -m ddpm_helpers evaluate --samples samples.npz``: print the metric, the floor and the ratio."""
    path = Path(args.samples)
    try:
        if not path.exists():
            raise ValueError(f"{path} does not exist: write it with `python -m ddpm_helpers sample ... --out {path}`.")
        with np.load(path, allow_pickle=False) as stored:
            if "images" not in stored:
                raise ValueError(f"{path} has no 'images' array (found {', '.join(stored.files)}).")
            images = stored["images"]
            meta = json.loads(str(stored["meta"])) if "meta" in stored else {}
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{path}: images must be uint8 N x H x W x C, got {images.dtype} {images.shape}.")
        data = meta.get("dataset") or "digits"
        result = evaluate_samples(images, data=data, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"samples:  {path} ({result.n} images, data {data!r})")
    print(f"metric:   Frechet distance in the book's digit-classifier features (NOT Inception FID)")
    print(f"FD:       {result.fd:.3f}")
    print(f"floor:    {result.floor:.3f} +- {result.floor_std:.3f} (real training vs real held-out, n = {result.n})")
    print(f"ceiling:  {result.ceiling:.3f} (clipped Gaussian noise vs real held-out)")
    print(f"ratio:    {result.ratio:.2f} (FD / floor; 1 is as good as real data)")
    print(f"confident:{100 * result.confident_share:6.1f}% of samples with p > {CONFIDENCE_THRESHOLD} "
          f"(real held-out: {100 * result.real_confident_share:.1f}%)")
    print("classes:  " + " ".join(f"{c}:{n}" for c, n in enumerate(result.class_histogram)))
    return 0
