"""FID, KID and the memorisation check for faces (ddpm_helpers.measuring.inception, nearest, image_sets),
offline: Inception-v3 with random weights (weights=None) on small images upsampled to 75x75."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from PIL import Image  # noqa: E402

from ddpm_helpers.cli import main  # noqa: E402
from ddpm_helpers.measuring import inception  # noqa: E402
from ddpm_helpers.measuring.nearest import memorisation_check, nearest_neighbours  # noqa: E402


def faces(count, seed, shift=0):
    """Smooth random 16x16 RGB pictures (a gradient and a disc), ``shift`` added to every pixel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:16, 0:16]
    out = []
    for _ in range(count):
        base = rng.uniform(40, 160, 3) + 40 * (y / 16)[..., None] * rng.uniform(0.5, 1, 3)
        base[(x - 8) ** 2 + (y - 8) ** 2 < rng.uniform(9, 36)] = 230
        out.append(np.clip(base + shift, 0, 255))
    return np.asarray(out, np.uint8)


@pytest.fixture(scope="module")
def features():
    import keras

    keras.utils.set_random_seed(0)
    return inception.InceptionFeatures(None, image_size=75)


def test_fid_is_zero_for_a_set_with_itself_and_grows_with_a_shift(features):
    real = features(faces(24, 0))
    assert inception.fid(real, real) < 1e-6 * max(1.0, np.trace(np.cov(real, rowvar=False)))
    same_kind = inception.fid(real, features(faces(24, 1)))
    shifted = inception.fid(real, features(faces(24, 1, shift=60)))
    assert shifted > 2 * same_kind > 0


def test_kid_is_unbiased_near_zero_for_two_halves_and_positive_for_shifted_data():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((400, 16))
    halves = inception.kid(pool[:200], pool[200:], subsets=50, subset_size=100)
    assert abs(halves.mean) < 3 * halves.std / np.sqrt(halves.subsets) + 1e-3
    shifted = inception.kid(pool[:200], pool[200:] + 0.5, subsets=50, subset_size=100)
    assert shifted.mean > 10 * max(halves.std, 1e-6) and shifted.stderr > 0
    # the biased estimate (diagonals kept) of one set against itself is not 0; the unbiased one is 0 on average
    assert abs(inception.mmd2_unbiased(pool[:100], pool[:100])) < 0.05 * inception.mmd2_unbiased(pool[:100], pool[100:200] + 1)


def test_offline_without_weights_one_line_says_what_to_download_and_where(tmp_path, monkeypatch):
    import keras

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(inception.InceptionWeightsMissing) as error:
        inception.InceptionFeatures("imagenet")
    message = str(error.value)
    assert "\n" not in message and inception.WEIGHTS_URL in message
    assert str(tmp_path / "keras" / "models" / inception.WEIGHTS_FILE) in message and "--inception-weights" in message
    with pytest.raises(inception.InceptionWeightsMissing, match="no such file"):
        inception.InceptionFeatures(str(tmp_path / "missing.h5"))


def test_nearest_neighbour_check_finds_a_copied_training_image():
    train = faces(30, 2)
    samples = np.concatenate([faces(5, 3), train[17:18]])
    distances, indices = nearest_neighbours(samples, train)
    assert distances[-1] == pytest.approx(0.0, abs=1e-3) and indices[-1] == 17
    assert distances[:-1].min() > 0.01
    check = memorisation_check(samples, train)
    assert check.train_distances.min() > 0.01  # a training image is not compared with itself
    assert check.sample_distances.argmin() == 5 and "samples closer than any two training images" in check.summary()


def test_fast_fid_of_few_images_is_the_frechet_formula():
    from ddpm_helpers.measuring.frechet import frechet_distance_of_features

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((12, 40)), rng.standard_normal((15, 40)) + 0.3
    assert inception.fid(a, b) == pytest.approx(frechet_distance_of_features(a, b), rel=1e-4)
    big_a, big_b = rng.standard_normal((60, 8)), rng.standard_normal((70, 8))
    assert inception.fid(big_a, big_b) == frechet_distance_of_features(big_a, big_b)


def test_evaluate_cli_scores_folders_with_fid_kid_and_nearest(tmp_path, monkeypatch, capsys):
    from ddpm_helpers.measuring import image_sets

    real, fake = tmp_path / "real", tmp_path / "fake"
    for folder, images in ((real, faces(24, 4)), (fake, faces(12, 5))):
        folder.mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    original = image_sets.evaluate_image_sets

    def small(*args, **kwargs):  # random weights at 75x75: fast and offline
        return original(*args, **{**kwargs, "weights": None, "image_size": 75, "kid_subsets": 10})

    monkeypatch.setattr(image_sets, "evaluate_image_sets", small)
    pairs = tmp_path / "pairs.png"
    assert main(["evaluate", "--samples", str(fake), "--reference", f"folder:{real}", "--nearest-png", str(pairs)]) == 0
    out = capsys.readouterr().out
    for word in ("FID:", "KID:", "nearest:", "RANDOM Inception-v3", "24 images"):
        assert word in out
    assert Image.open(pairs).size[1] > 2 * 16  # two rows of pairs
