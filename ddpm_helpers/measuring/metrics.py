"""An offline quality metric (chapter "Evaluation", ``sec-evaluation``).

The usual score for image generators, FID (Heusel et al. 2017), compares Inception-v3 features of
generated and real images. Its weights cannot be downloaded in an offline build, and Inception
was made for 299x299 photographs, not 8x8 digits. This module builds the same kind of measure
from parts the book trains itself:

1. a small classifier trained on the real training digits (:func:`.load_or_train_classifier`,
   cached in ``$DDPM_RUNS_DIR/classifier-...``);
2. the Frechet distance between Gaussians fitted to its penultimate-layer features of two image
   sets (:func:`.frechet_distance`, Eq. (10.1) (``eq-frechet``));
3. the share of samples it labels with confidence > 0.9, and its class histogram.

The numbers are NOT comparable with published FIDs (different network, features, image size
and sample size). They are only meaningful next to two references measured the same way, at
the same sample size: the *floor* (real training images vs real held-out images: the score of a
perfect generator) and the *ceiling* (noise vs real). :func:`evaluate_samples` reports all
three and the ratio FD / floor.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np

from ddpm_helpers.measuring.classifier import (  # noqa: F401 (re-exported)
    CLASSIFIER_BATCH_SIZE,
    CLASSIFIER_EPOCHS,
    CLASSIFIER_FORMAT,
    CLASSIFIER_LEARNING_RATE,
    CONFIDENCE_THRESHOLD,
    FEATURE_DIM,
    RUNS_DIR_ENV_VAR,
    Classifier,
    _feature_model,
    _runs_dir,
    as_model_range,
    build_classifier,
    classifier_key,
    load_or_train_classifier,
    load_reference_data,
    quantize,
    train_classifier,
)
DIGITS_SHAPE = (8, 8, 1)  # what a sample file without meta is taken to hold

from ddpm_helpers.measuring.frechet import (  # noqa: F401 (re-exported)
    IMAGINARY_TOLERANCE,
    feature_statistics,
    frechet_distance,
    frechet_distance_of_features,
)


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
        """Every field, as plain Python values (for JSON)."""
        values = dataclasses.asdict(self)
        values["class_histogram"] = [int(v) for v in self.class_histogram]
        return values

    def summary(self) -> str:
        """One line: the distance, its floor and ceiling, their ratio, the confident share, n."""
        return (f"FD {self.fd:.2f} | floor {self.floor:.2f} +- {self.floor_std:.2f} (real vs real) | "
                f"ceiling {self.ceiling:.1f} (noise) | ratio FD / floor {self.ratio:.2f} | "
                f"confident (p > {CONFIDENCE_THRESHOLD}) {100 * self.confident_share:.1f}% "
                f"(real: {100 * self.real_confident_share:.1f}%) | n = {self.n}")


class Evaluator:
    """Scores image sets against the real held-out images with a :class:`.Classifier`.

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
        self.held_out_features = classifier.features(self.held_out_images)
        self.held_out_stats = feature_statistics(self.held_out_features)
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
        images = quantize(check_count(images))
        if images.shape[1:] != self.image_shape:
            raise ValueError(f"Images have shape {images.shape[1:]}, the real data {self.image_shape}: "
                             "score samples of a model trained on this data set.")
        n = len(images)
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


def check_count(images, *, warn: bool = True) -> np.ndarray:
    """``images`` as an array, after checking there are enough of them to fit a covariance.

    Fewer than 2 raise ``ValueError``; fewer than the classifier's ``FEATURE_DIM`` features warn:
    the covariance is then singular, and the distance is dominated by noise and regularisation.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}.")
    n = len(images)
    if n < 2:
        raise ValueError(f"Need at least 2 images to fit a covariance, got {n}: score more samples "
                         f"(at least {FEATURE_DIM}, the number of features, better several hundred).")
    if n < FEATURE_DIM and warn:
        warnings.warn(f"Only {n} images for {FEATURE_DIM} features: their covariance is singular and the "
                      "Frechet distance is unreliable (and compared with a floor measured at the same n). "
                      f"Score at least {FEATURE_DIM} samples, better several hundred.", stacklevel=3)
    return images


def evaluate_samples(images, *, data: str = "digits", runs_dir=None, seed: int = 0, verbose: bool = True) -> Evaluation:
    """One-call scoring: load or train the classifier for ``data`` at the images' size and evaluate them.

    The images are checked (at least 2, all finite) before any classifier is trained.
    """
    images = check_count(images, warn=False)  # Evaluator.evaluate warns
    as_model_range(images)  # NaN or infinite values raise here
    classifier = load_or_train_classifier(data, images.shape[1], images.shape[3], runs_dir=runs_dir, seed=seed,
                                          verbose=verbose)
    return Evaluator(classifier, data, images.shape[1], images.shape[3], seed=seed).evaluate(images)


def data_of_sample_file(path, images, meta) -> str:
    """The data set the images of a sample file come from: its ``meta`` says so, else the digits.

    A file without ``meta`` whose images do not have the digits' shape, and a ``meta`` whose
    image size or channels disagree with the images, raise ``ValueError``.
    """
    shape = tuple(images.shape[1:])
    if meta is None:
        if shape != DIGITS_SHAPE:
            raise ValueError(
                f"{path} has no 'meta' naming its data set, and its images are {'x'.join(map(str, shape))}, "
                f"not {'x'.join(map(str, DIGITS_SHAPE))} like the digits: they cannot be scored as digits. "
                f"Write the file with `python -m ddpm_helpers sample --run RUN --out {path}`."
            )
        return "digits"
    stated = (meta.get("image_size"), meta.get("image_size"), meta.get("channels"))
    if meta.get("image_size") is not None and shape != stated:
        raise ValueError(f"{path}: its meta says {stated} images, but the images are {shape}.")
    return meta.get("dataset") or "digits"


def evaluate_from_cli(args) -> int:
    """``python -m ddpm_helpers evaluate --samples samples.npz``: print the metric, the floor and the ratio."""
    from ddpm_helpers.engine.sample_files import load_samples
    from ddpm_helpers.measuring.image_sets import evaluate_images_from_cli, is_folder_spec

    if getattr(args, "reference", None) or is_folder_spec(args.samples):
        return evaluate_images_from_cli(args)  # FID, KID, nearest neighbours on Inception-v3
    path = Path(args.samples)
    try:
        images, _, meta = load_samples(path)
        if str((meta or {}).get("dataset", "")).startswith("folder:"):
            return evaluate_images_from_cli(args)  # a run trained on a folder (faces): no labels to classify
        data = data_of_sample_file(path, images, meta)
        result = evaluate_samples(images, data=data, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"samples:  {path} ({result.n} images, data {data!r})")
    print("metric:   Frechet distance in the book's digit-classifier features (NOT Inception FID)")
    print(f"FD:       {result.fd:.3f}")
    print(f"floor:    {result.floor:.3f} +- {result.floor_std:.3f} (real training vs real held-out, n = {result.n})")
    print(f"ceiling:  {result.ceiling:.3f} (clipped Gaussian noise vs real held-out)")
    print(f"ratio:    {result.ratio:.2f} (FD / floor; 1 is as good as real data)")
    print(f"confident:{100 * result.confident_share:6.1f}% of samples with p > {CONFIDENCE_THRESHOLD} "
          f"(real held-out: {100 * result.real_confident_share:.1f}%)")
    print("classes:  " + " ".join(f"{c}:{n}" for c, n in enumerate(result.class_histogram)))
    return 0
