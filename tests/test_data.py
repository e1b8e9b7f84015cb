"""Tests of ddpm_helpers.data: the digits, image folders (good and bad) and the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from ddpm_helpers import data, pipeline

tf = pytest.importorskip("tensorflow")


def _write_pngs(folder, count, size=(20, 16), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    for index in range(count):
        pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
        Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode=mode).save(folder / f"{index:06d}.png")
    return folder


def _all(dataset):
    return [tuple(np.asarray(part) for part in element) for element in dataset]


def test_digits_source_has_labels_range_and_split():
    source = data.load_data("digits", image_size=8, channels=1)
    images, labels = data.load_digits("train")
    held_images, _ = data.load_digits("held_out")
    assert source.count == len(images) == 1437 and len(held_images) == 360
    assert source.image_shape == (8, 8, 1) and source.num_classes == 10
    assert source.flip is False  # never mirror digits
    assert images.min() >= -1.0 and images.max() <= 1.0
    first_image, first_label = next(iter(source.dataset))
    np.testing.assert_array_equal(first_image.numpy(), images[0])
    assert int(first_label) == labels[0]


def test_digits_resized_to_another_profile_size():
    source = data.load_data("digits", image_size=16, channels=3)
    image, _ = next(iter(source.dataset))
    assert image.shape == (16, 16, 3)
    assert -1.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0


def test_generated_png_folder_loads_with_right_shape_and_range(tmp_path):
    folder = _write_pngs(tmp_path / "faces", 7)
    source = data.load_data(f"folder:{folder}", image_size=8, channels=3)
    assert source.count == 7 and source.flip is True and source.num_classes is None
    elements = _all(source.dataset)
    assert len(elements) == 7
    for image, label in elements:
        assert image.shape == (8, 8, 3) and image.dtype == np.float32
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert label == -1
    # the values use the whole range (random pixels): scaling is 0..255 -> -1..1, not 0..1
    stacked = np.stack([image for image, _ in elements])
    assert stacked.min() < -0.5 and stacked.max() > 0.5
    grey = data.load_image_folder(folder, image_size=4, channels=1)
    assert next(iter(grey.dataset))[0].shape == (4, 4, 1)


def test_folder_in_subfolder_is_found(tmp_path):
    _write_pngs(tmp_path / "img_align_celeba" / "img_align_celeba", 3)  # the Kaggle archive's layout
    assert data.load_image_folder(tmp_path / "img_align_celeba", 8, 3).count == 3


def test_missing_folder_says_where_to_get_celeba(tmp_path):
    with pytest.raises(ValueError, match="does not exist") as error:
        data.load_data(f"folder:{tmp_path / 'nowhere'}", 8, 3)
    assert data.CELEBA_URL in str(error.value) and "img_align_celeba" in str(error.value)


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "faces.zip"
    path.write_bytes(b"PK")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        data.load_image_folder(path, 8, 3)


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is empty") as error:
        data.load_image_folder(tmp_path / "empty", 8, 3)
    assert data.CELEBA_URL in str(error.value)


def test_folder_without_images_names_what_it_found(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "list_attr_celeba.csv").write_text("a,b\n")
    (folder / "README.txt").write_text("hello")
    with pytest.raises(ValueError, match="no images") as error:
        data.load_image_folder(folder, 8, 3)
    assert "list_attr_celeba.csv" in str(error.value) and ".csv" in str(error.value)


def test_unreadable_image_is_named(tmp_path):
    folder = _write_pngs(tmp_path / "faces", 3)
    (folder / "000099.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(ValueError, match="cannot be read") as error:
        data.load_image_folder(folder, 8, 3)
    assert "000099.jpg" in str(error.value)


def _decoded_reference(path, size):
    """A file as the pipeline should store it: centre square, bilinear resize (TensorFlow), uint8."""
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    h, w = pixels.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = pixels[top:top + side, left:left + side]
    resized = tf.image.resize(square, (size, size), method="bilinear").numpy()
    return np.round(np.clip(resized, 0, 255)).astype(np.uint8)


def test_hidden_files_are_neither_checked_nor_read(tmp_path):
    """What tf.data actually yields for a folder with macOS resource forks and hidden folders."""
    folder = _write_pngs(tmp_path / "faces", 3, size=(20, 16))
    (folder / "._000000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (folder / ".thumbnails").mkdir()
    (folder / ".thumbnails" / "x.png").write_bytes(b"not an image either")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._000001.png").write_bytes(b"\x00\x05\x16\x07")
    source = data.load_image_folder(folder, 8, 3)
    assert [p.name for p in source.files] == ["000000.png", "000001.png", "000002.png"]
    yielded = [image for image, _ in _all(source.dataset)]
    assert len(yielded) == source.count == 3
    for image, file in zip(yielded, source.files):
        np.testing.assert_allclose(image, _decoded_reference(file, 8) / 127.5 - 1.0, atol=1e-6)
    batches = _all(pipeline.make_pipeline(source, 3, seed=0))  # the training batches: no decode error
    assert len(batches) == 1 and batches[0][0].shape == (3, 8, 8, 3)


def test_broken_image_is_named_before_training(tmp_path):
    folder = _write_pngs(tmp_path / "faces", 3)
    good = (folder / "000000.png").read_bytes()
    (folder / "000001.png").write_bytes(good[: len(good) // 3])  # truncated
    with pytest.raises(ValueError, match="cannot be read") as error:
        data.load_image_folder(folder, 8, 3)
    assert "000001.png" in str(error.value) and "000000.png" not in str(error.value)
    assert [p.name for p, _ in data.find_unreadable_images(data.list_image_files(folder))] == ["000001.png"]


def test_folder_cache_holds_uint8_and_the_shuffle_is_global(tmp_path, monkeypatch):
    from ddpm_helpers import image_folders

    folder = _write_pngs(tmp_path / "faces", 40, size=(9, 9))
    source = data.load_image_folder(folder, 4, 3)
    assert source.in_memory
    stored = next(iter(source.cached()))[0]
    assert stored.dtype == tf.uint8  # the in-memory cache holds uint8, scaled to [-1, 1] after it
    batch = next(iter(pipeline.make_pipeline(source, 10, seed=1)))[0]
    assert batch.dtype == tf.float32 and float(tf.reduce_min(batch)) >= -1.0

    def order(source, epoch):
        first = {tuple(np.asarray(image).ravel()): i for i, (image, _) in enumerate(_all(source.dataset))}
        return [first[tuple(image.ravel())] for x, _ in _all(pipeline.make_pipeline(source, 10, seed=1, epoch=epoch, augment=False))
                for image in x]

    orders = [order(source, epoch) for epoch in range(4)]
    # Global: the first batch of an epoch draws from the whole folder, not from its first files.
    assert max(max(o[:10]) for o in orders) >= 30
    # A folder too large for memory is decoded every epoch after shuffling its file names: same batches.
    monkeypatch.setattr(image_folders, "CACHE_LIMIT_BYTES", 10)
    streamed = data.load_image_folder(folder, 4, 3)
    assert not streamed.in_memory
    assert [order(streamed, epoch) for epoch in range(4)] == orders


def test_unknown_data_set_lists_the_valid_ones():
    with pytest.raises(ValueError, match="digits"):
        data.load_data("imagenet", 8, 1)


def test_arrays_outside_model_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        data.from_arrays(np.full((4, 8, 8, 1), 16.0, np.float32))


def _toy_source(count=10, flip=False):
    # image i is filled with the value i / count (so images can be identified), left half brighter
    images = np.zeros((count, 4, 4, 1), np.float32)
    for i in range(count):
        images[i] = i / count
        images[i, :, :2] += 0.05
    return data.from_arrays(images, np.arange(count) % 3, flip=flip), images


def test_pipeline_batches_are_full_shuffled_and_reproducible():
    source, images = _toy_source(10)
    batches = _all(pipeline.make_pipeline(source, 4, seed=1, epoch=0))
    assert [b[0].shape for b in batches] == [(4, 4, 4, 1)] * 2  # 10 // 4 batches, remainder dropped
    again = _all(pipeline.make_pipeline(source, 4, seed=1, epoch=0))
    for (x, y), (x2, y2) in zip(batches, again):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)

    def order(batches):  # which image (value i / 10 in its right half) sits where
        return tuple(int(round(v * 10)) for x, _ in batches for v in x[:, 0, 3, 0])

    assert len(set(order(batches))) == 8  # 8 distinct images: no repeats within an epoch
    epochs = {order(_all(pipeline.make_pipeline(source, 4, seed=1, epoch=e))) for e in range(5)}
    assert len(epochs) > 1  # a new order each epoch
    assert order(batches) != order(_all(pipeline.make_pipeline(source, 4, seed=2, epoch=0)))  # seed matters


def test_digits_are_never_flipped_but_faces_are():
    source, images = _toy_source(8, flip=False)
    for epoch in range(3):
        for x, _ in _all(pipeline.make_pipeline(source, 4, seed=0, epoch=epoch)):
            assert np.all(x[:, :, :2] > x[:, :, 2:])  # left half still brighter
    flipped_source, _ = _toy_source(8, flip=True)
    seen_flip = False
    patterns = set()
    for epoch in range(3):
        for x, _ in _all(pipeline.make_pipeline(flipped_source, 4, seed=0, epoch=epoch)):
            flipped = x[:, 0, 0, 0] < x[:, 0, 3, 0]
            seen_flip |= bool(flipped.any())
            patterns.add(tuple(flipped))
    assert seen_flip and len(patterns) > 1  # flips drawn afresh per batch and epoch, not cached


def test_iterate_batches_resumes_at_any_step_across_epochs():
    source, _ = _toy_source(10, flip=True)
    straight = pipeline.iterate_batches(source, 4, seed=3)
    reference = [next(straight) for _ in range(7)]  # 2 batches per epoch: crosses 3 epoch boundaries
    for start in (0, 1, 2, 5):
        resumed = pipeline.iterate_batches(source, 4, seed=3, start_step=start)
        for expected in reference[start:]:
            x, y = next(resumed)
            np.testing.assert_array_equal(x.numpy(), expected[0].numpy())
            np.testing.assert_array_equal(y.numpy(), expected[1].numpy())


def test_too_few_images_for_one_batch():
    source, _ = _toy_source(3)
    with pytest.raises(ValueError, match="fewer than one batch.*smaller batch_size"):
        source.steps_per_epoch(4)


def test_shuffle_is_global_beyond_ten_thousand_images():
    # With a local buffer of 10,000, image 11,000 could not appear before position 1,000.
    count = 12_000
    images = np.repeat((np.arange(count, dtype=np.float32) / count)[:, None, None, None], 2, axis=1)
    source = data.from_arrays(np.broadcast_to(images, (count, 2, 2, 1)).copy())
    first = np.concatenate([x[:, 0, 0, 0] for x, _ in _all(pipeline.make_pipeline(source, 1000, seed=0).take(1))])
    index = np.round(first * count).astype(int)
    assert len(set(index)) == 1000
    assert np.sum(index >= 11_000) > 40  # about 1000 / 12 expected
