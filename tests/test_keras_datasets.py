"""--data mnist|fashion_mnist|cifar10 (keras.datasets) without a network.

keras.datasets downloads a data set once into ``$KERAS_HOME/datasets`` (default
``~/.keras/datasets``) and reads it from there afterwards. These tests point that cache at an
empty folder and make every download fail, as on a machine without internet: the loader must
then fail with a one-line error that names the fix, and read a cached file without touching
the network.
"""

import urllib.error

import numpy as np
import pytest

from ddpm_helpers.engine.data import KERAS_DATASETS, load_keras_dataset


@pytest.fixture
def offline_keras_home(tmp_path, monkeypatch):
    """An empty Keras cache in ``tmp_path`` and no network: every download raises."""
    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    downloads = []

    def no_network(url, *args, **kwargs):
        downloads.append(url)
        raise urllib.error.URLError("no network (simulated by the test)")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # Keras reads KERAS_HOME once, when it is imported.
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))
    monkeypatch.setattr(file_utils, "urlretrieve", no_network)
    return tmp_path, downloads


@pytest.mark.parametrize("name", KERAS_DATASETS)
def test_offline_without_cache_is_one_line_naming_the_fix(name, offline_keras_home):
    home, downloads = offline_keras_home
    with pytest.raises(ValueError) as raised:
        load_keras_dataset(name, image_size=8, channels=1)
    message = str(raised.value)
    assert downloads, "the loader should have tried to download"
    assert "\n" not in message.strip(), message
    assert repr(name) in message and "internet" in message, message
    assert "--data digits" in message, message  # what works offline


def test_offline_error_names_the_cache_file(offline_keras_home):
    home, _ = offline_keras_home
    with pytest.raises(ValueError) as raised:
        load_keras_dataset("mnist", image_size=8, channels=1)
    assert str(home / "datasets" / "mnist.npz") in str(raised.value)


def write_fake_mnist(home, count=64, seed=0):
    """A small ``mnist.npz`` with the keys keras.datasets.mnist reads."""
    rng = np.random.default_rng(seed)
    folder = home / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (count, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, count, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (16, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 16, dtype=np.uint8),
    }
    np.savez(folder / "mnist.npz", **arrays)
    return arrays


@pytest.fixture
def cached_mnist(offline_keras_home, monkeypatch):
    """A fake cached mnist.npz. Keras checks the real file's SHA-256 and would try to download
    again for any other file; a fake cannot match it, so the check is accepted here."""
    import keras.src.utils.file_utils as file_utils

    home, downloads = offline_keras_home
    arrays = write_fake_mnist(home)
    monkeypatch.setattr(file_utils, "validate_file", lambda *args, **kwargs: True)
    return arrays, downloads


def test_cached_mnist_loads_without_network(cached_mnist):
    arrays, downloads = cached_mnist
    source = load_keras_dataset("mnist", image_size=8, channels=1)
    assert downloads == []
    assert source.count == 64 and source.image_shape == (8, 8, 1)
    assert source.num_classes == 10 and not source.flip
    np.testing.assert_array_equal(source.labels, arrays["y_train"])
    assert -1.0 <= source.images.min() and source.images.max() <= 1.0
    held_out = load_keras_dataset("mnist", image_size=8, channels=1, split="held_out")
    assert held_out.count == 16


def test_smoke_training_on_cached_mnist(cached_mnist, tmp_path):
    from ddpm_helpers.profiles import get_profile
    from ddpm_helpers.engine.training import train

    _, downloads = cached_mnist
    run = train(get_profile("smoke"), tmp_path / "run", steps=2, data="mnist",
                progress=False, jit_compile=False)
    assert downloads == []
    assert run.config["data"] == "mnist"
    losses = np.asarray(run.history["loss"])
    assert len(losses) == 2 and np.all(np.isfinite(losses))
