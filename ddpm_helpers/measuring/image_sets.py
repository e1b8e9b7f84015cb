"""``python -m ddpm_helpers evaluate`` for faces: FID, KID and the memorisation check on image sets
(chapter "Scaling up", ``sec-scaling-up``).

An image set is a sample file written by ``sample`` (``samples.npz``) or a folder of images
(``folder:PATH`` or just ``PATH``), read by :func:`read_image_set` as uint8 (N, H, W, C).
:func:`evaluate_image_sets` scores samples against a reference set (by default the folder the run
was trained on, which the sample file's ``meta`` names) with
:mod:`ddpm_helpers.measuring.inception` and :mod:`ddpm_helpers.measuring.nearest`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MAX_REFERENCE = 10_000  # reference images read (a random subset of larger folders)


def is_folder_spec(spec) -> bool:
    """Whether ``spec`` names a folder of images (``folder:PATH`` or an existing folder)."""
    spec = str(spec)
    return spec.startswith("folder:") or Path(spec).expanduser().is_dir()


def read_image_set(spec, *, image_size: int | None = None, channels: int | None = None, limit: int | None = None,
                   seed: int = 0) -> np.ndarray:
    """uint8 images (N, H, W, C) of a ``.npz`` sample file or an image folder (``folder:PATH`` or ``PATH``).

    Folder images are centre-cropped and resized to ``image_size`` with ``channels`` (default:
    those of the folder's first image), as training reads them; ``limit``: at most this many,
    a random subset (``seed``) of larger folders. A sample file's images must have that size.
    """
    spec = str(spec)
    if not is_folder_spec(spec):
        from ddpm_helpers.engine.sample_files import load_samples

        images = load_samples(spec)[0]
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            raise ValueError(f"{spec} holds {images.shape[1]}x{images.shape[2]} images, the reference "
                             f"{image_size}x{image_size}.")
        return images if limit is None or len(images) <= limit else images[:limit]
    import tensorflow as tf
    from PIL import Image

    from ddpm_helpers.engine.image_folders import decode_image_file, list_image_files

    files = list_image_files(spec[len("folder:"):] if spec.startswith("folder:") else spec)
    if limit is not None and len(files) > limit:
        files = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), limit, replace=False))]
    if image_size is None or channels is None:
        with Image.open(files[0]) as first:
            image_size = image_size or min(first.size)
            channels = channels or (1 if first.mode in ("L", "LA", "I", "1") else 3)
    names = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    batches = names.map(lambda name: decode_image_file(name, image_size, channels),
                        num_parallel_calls=tf.data.AUTOTUNE).batch(256)
    return np.concatenate([batch.numpy() for batch in batches])


def reference_of(samples_spec, reference) -> str:
    """The reference set: ``reference`` if given, else the folder a sample file's ``meta`` says it was trained on."""
    if reference:
        return reference
    if not is_folder_spec(samples_spec):
        from ddpm_helpers.engine.sample_files import load_samples

        meta = load_samples(samples_spec)[2] or {}
        if str(meta.get("dataset", "")).startswith("folder:"):
            return meta["dataset"]
    raise ValueError(f"Pass --reference folder:PATH (e.g. the training folder, folder:data/celeba32) to score "
                     f"{samples_spec} with FID and KID.")


def evaluate_image_sets(samples_spec, reference_spec=None, *, weights="imagenet", max_reference: int = MAX_REFERENCE,
                        pairs_png=None, seed: int = 0, image_size: int | None = None,
                        kid_subsets: int | None = None, print_fn=print) -> dict:
    """FID, KID and the memorisation check of the samples against the reference set; printed, and returned as a dict.

    ``weights`` goes to :class:`~ddpm_helpers.measuring.inception.InceptionFeatures` (``image_size``
    too: the tests use random weights at 75x75); ``pairs_png`` receives the closest
    sample/training pairs (default: none).
    """
    from ddpm_helpers.measuring.inception import KID_SUBSETS, INCEPTION_SIZE, InceptionFeatures, fid, kid
    from ddpm_helpers.measuring.nearest import memorisation_check, save_closest_pairs

    reference_spec = reference_of(samples_spec, reference_spec)
    samples = read_image_set(samples_spec)
    if len(samples) < 2:
        raise ValueError(f"{samples_spec}: need at least 2 images, got {len(samples)}.")
    reference = read_image_set(reference_spec, image_size=samples.shape[1], channels=samples.shape[3],
                               limit=max_reference, seed=seed)
    features = InceptionFeatures(weights, image_size=image_size or INCEPTION_SIZE)
    sample_features, reference_features = features(samples), features(reference)
    fid_value = fid(sample_features, reference_features)
    kid_value = kid(sample_features, reference_features, subsets=kid_subsets or KID_SUBSETS, seed=seed)
    check = memorisation_check(samples, reference, seed=seed)
    which = "ImageNet Inception-v3" if weights == "imagenet" or (weights and Path(str(weights)).is_file()) else (
        "RANDOM Inception-v3 weights: not FID")
    print_fn(f"samples:   {samples_spec} ({len(samples)} images {samples.shape[1]}x{samples.shape[2]}x{samples.shape[3]})")
    print_fn(f"reference: {reference_spec} ({len(reference)} images)")
    print_fn(f"features:  {which}, pool 2048, images resized to {features.image_size}x{features.image_size}")
    print_fn(f"FID:       {fid_value:.3f} (n = {len(samples)} vs {len(reference)}; published FIDs use 50,000)")
    print_fn(f"KID:       {kid_value.mean:.5f} +- {kid_value.stderr:.5f} (standard error; sd {kid_value.std:.5f} "
             f"over {kid_value.subsets} subsets of {kid_value.subset_size})")
    print_fn(f"nearest:   {check.summary()}")
    if pairs_png:
        print_fn(f"closest pairs (samples above, training images below): {save_closest_pairs(samples, reference, check, pairs_png)}")
    return {"fid": fid_value, "kid": kid_value, "memorisation": check, "n": len(samples), "reference_n": len(reference)}


def evaluate_images_from_cli(args) -> int:
    """``python -m ddpm_helpers evaluate --samples S --reference R [--inception-weights PATH]``: FID, KID, nearest."""
    from ddpm_helpers.measuring.inception import InceptionWeightsMissing

    try:
        evaluate_image_sets(args.samples, args.reference, weights=args.inception_weights or "imagenet",
                            max_reference=args.max_reference, pairs_png=args.nearest_png, seed=args.seed)
    except InceptionWeightsMissing as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
