"""Tests of ddpm_helpers.engine.data: the digits, image folders (good and bad) and the tf.data pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from ddpm_helpers.engine import data, image_folders, pipeline

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
    assert data.CELEBA_URL in str(error.value) and "prepare-celeba" in str(error.value)
    assert "--profile celeba --data folder:data/celeba32" in str(error.value)


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


# ---- every kind of image file, decoded the way training decodes it (issue 22, item 5)

SIDE = 8  # the fixtures are SIDE x SIDE and loaded at SIDE: no crop or resize, only the decoding is compared


def _luma(rgb):
    return rgb @ np.array([0.2989, 0.5870, 0.1140])


def _on_white(colour, alpha):
    """``colour`` (0..255) with ``alpha`` (0..255) composited on a white background, as floats."""
    a = alpha[..., None].astype(np.float64) / 255.0
    return colour.astype(np.float64) * a + 255.0 * (1.0 - a)


def _write_image(kind, folder):
    """A SIDE x SIDE file of ``kind`` in ``folder``: (path, its expected RGB pixels as floats, tolerance)."""
    from PIL import Image

    rng = np.random.default_rng(sum(kind.encode()))
    folder.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    smooth = np.stack([*np.meshgrid(np.arange(SIDE) * 30, np.arange(SIDE) * 20), np.full((SIDE, SIDE), 90)], -1)
    smooth = smooth.astype(np.uint8)  # ramps of distinct slopes in R and G, constant B
    jpeg_atol = 8.0  # TensorFlow decodes JPEGs with libjpeg's fast integer DCT: up to 7 off on these ramps
    if kind == "animated.gif":  # frame 1: red and blue stripes, frame 2: all green (exact in a palette)
        first = np.zeros((SIDE, SIDE, 3), np.uint8)
        first[::2, :, 0], first[1::2, :, 2] = 255, 255
        second = np.zeros_like(first)
        second[..., 1] = 255
        frames = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE, colors=4) for f in (first, second)]
        frames[0].save(folder / kind, save_all=True, append_images=frames[1:], duration=100, loop=0)
        return folder / kind, first.astype(np.float64), 0.5
    if kind == "rgb.bmp":
        Image.fromarray(rgb).save(folder / kind)
        return folder / kind, rgb.astype(np.float64), 0.5
    if kind == "padded32.bmp":  # 32 bits a pixel, the fourth byte 0: padding, not transparency
        Image.fromarray(np.dstack([rgb, np.zeros((SIDE, SIDE), np.uint8)]), "RGBA").save(folder / kind)
        return folder / kind, rgb.astype(np.float64), 0.5
    if kind == "cmyk.jpg":
        Image.fromarray(smooth).convert("CMYK").save(folder / kind, quality=95)
        return folder / kind, np.asarray(Image.open(folder / kind).convert("RGB"), np.float64), jpeg_atol
    if kind == "grey.jpg":
        Image.fromarray(smooth[..., 0], "L").save(folder / kind, quality=95)
        grey = np.asarray(Image.open(folder / kind), np.float64)
        return folder / kind, np.repeat(grey[..., None], 3, axis=-1), jpeg_atol
    if kind == "rgba.png":
        rgb[0, 0], alpha[0, 0] = 0, 128  # half-transparent black: 255 - 128 = 127 on white
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(folder / kind)
        return folder / kind, _on_white(rgb, alpha), 0.5
    if kind == "grey-alpha.png":
        grey = rgb[..., 0]
        Image.fromarray(np.dstack([grey, alpha]), "LA").save(folder / kind)
        return folder / kind, np.repeat(_on_white(grey[..., None], alpha), 3, axis=-1), 0.5
    if kind == "palette.png":  # four colours, the first transparent
        palette = np.array([[10, 20, 30], [200, 0, 0], [0, 180, 0], [40, 40, 250]], np.uint8)
        index = rng.integers(0, 4, (SIDE, SIDE), dtype=np.uint8)
        image = Image.fromarray(index, "P")
        image.putpalette(palette.ravel().tolist())
        image.save(folder / kind, transparency=0)
        return folder / kind, np.where(index[..., None] == 0, 255.0, palette[index].astype(np.float64)), 0.5
    raise ValueError(kind)


IMAGE_KINDS = ("animated.gif", "rgb.bmp", "padded32.bmp", "cmyk.jpg", "grey.jpg", "rgba.png", "grey-alpha.png",
               "palette.png")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_every_kind_of_image_file_is_stored_in_the_profiles_channels(tmp_path, kind, channels):
    """GIF (first frame), BMP, CMYK JPEG, grey into RGB, colour into grey, alpha composited on white."""
    path, rgb, atol = _write_image(kind, tmp_path / "faces")
    source = data.load_image_folder(tmp_path / "faces", SIDE, channels)
    stored = next(iter(source.cached()))[0].numpy()  # the uint8 image the training batches are cut from
    assert stored.shape == (SIDE, SIDE, channels) and stored.dtype == np.uint8
    want = rgb if channels == 3 else _luma(rgb)[..., None]
    np.testing.assert_allclose(stored, want, atol=atol + 0.5, err_msg=f"{kind} into {channels} channel(s)")
    np.testing.assert_array_equal(image_folders.decode_image_file(str(path), SIDE, channels), stored)
    if kind == "rgba.png":
        assert stored[0, 0].tolist() == [127] * channels  # alpha 128 black on white, not black


def test_files_of_every_kind_train(tmp_path):
    from ddpm_helpers import get_profile
    from ddpm_helpers.engine.training import train

    for kind in IMAGE_KINDS:
        _write_image(kind, tmp_path / "faces")
    profile = get_profile("smoke").replace(batch_size=len(IMAGE_KINDS))  # one channel: GIF, BMP, CMYK into grey
    run = train(profile, tmp_path / "run", data=f"folder:{tmp_path / 'faces'}", steps=2, progress=False,
                jit_compile=False)
    assert run.step == 2 and np.isfinite(run.history["loss"]).all()


def test_a_bad_folder_is_named_before_a_run_folder_is_written(tmp_path):
    from ddpm_helpers import get_profile
    from ddpm_helpers.engine.training import train

    folder = _write_pngs(tmp_path / "faces", 3)
    _write_image("cmyk.jpg", folder)
    good = (folder / "cmyk.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (folder / "notes.gif").write_bytes(b"GIF89a, or so it says")
    with pytest.raises(ValueError, match="2 of its 6 image file") as error:
        train(get_profile("smoke"), tmp_path / "run", data=f"folder:{folder}", steps=2, progress=False)
    message = str(error.value)
    assert "cut.jpg" in message and "notes.gif" in message and "cmyk.jpg" not in message
    assert "{{function_node" not in message  # TensorFlow's reason, without its internals
    assert not (tmp_path / "run").exists()


def test_a_bad_file_met_while_training_a_large_folder_is_named(tmp_path, monkeypatch):
    from ddpm_helpers import get_profile
    from ddpm_helpers.engine.training import train

    monkeypatch.setattr(image_folders, "VERIFY_ALL_UP_TO", 2)  # too many files to check them all first
    folder = _write_pngs(tmp_path / "faces", 3)
    _write_image("animated.gif", folder)
    good = (folder / "000000.png").read_bytes()
    (folder / "000001.png").write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match="cannot be read") as error:
        train(get_profile("smoke").replace(batch_size=2), tmp_path / "run", data=f"folder:{folder}", steps=2,
              progress=False, jit_compile=False)
    assert "000001.png" in str(error.value) and "animated.gif" not in str(error.value)


def test_the_check_decodes_each_file_with_the_training_decoder(tmp_path, monkeypatch):
    """One decoder: a file that decode_image_file rejects (here, by a test's rule) is named by the check."""
    folder = _write_pngs(tmp_path / "faces", 3)
    decode = image_folders.decode_image_file
    seen = set()

    def picky(path, image_size, channels):
        seen.add((image_size, channels))
        rejected = tf.strings.regex_full_match(path, ".*000001.png")
        with tf.control_dependencies([tf.debugging.Assert(tf.logical_not(rejected), ["rejected"])]):
            return decode(tf.identity(path), image_size, channels)

    monkeypatch.setattr(image_folders, "decode_image_file", picky)
    with pytest.raises(ValueError, match="cannot be read") as error:
        data.load_image_folder(folder, 6, 1)
    assert "000001.png" in str(error.value) and "000000.png" not in str(error.value)
    assert seen == {(6, 1)}  # the profile's size and channels


def test_folder_cache_holds_uint8_and_the_shuffle_is_global(tmp_path, monkeypatch):
    folder = _write_pngs(tmp_path / "faces", 40, size=(9, 9))
    source = data.load_image_folder(folder, 4, 3)
    assert source.in_memory
    stored = next(iter(source.cached()))[0]
    assert stored.dtype == tf.uint8  # the in-memory cache holds uint8, scaled to [-1, 1] after it
    batch = next(iter(pipeline.make_pipeline(source, 10, seed=1)))[0]
    assert batch.dtype == tf.float32 and -1.0 <= float(tf.reduce_min(batch)) <= float(tf.reduce_max(batch)) <= 1.0

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


def test_black_and_white_reach_exactly_minus_one_and_one(tmp_path):
    """Both ends of the model range: 0 -> -1 and 255 -> +1 (not 255/127 - 1 > 1, not 0..1)."""
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    for index, value in enumerate([0, 255, 0, 255]):
        Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(folder / f"{index}.png")
    source = data.load_image_folder(folder, 4, 3)
    images = np.concatenate([x for x, _ in _all(pipeline.make_pipeline(source, 2, seed=0))])
    assert images.shape == (4, 4, 4, 3)
    assert sorted(float(v) for v in np.unique(images)) == [-1.0, 1.0]
    assert sorted(float(image.mean()) for image in images) == [-1.0, -1.0, 1.0, 1.0]


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
    for start, stop in ((0, 7), (1, 4), (5, 6)):  # a run that stops: its batches, then no more epochs
        batches = list(pipeline.iterate_batches(source, 4, seed=3, start_step=start, stop_step=stop))
        assert len(batches) == stop + stop % 2 - start  # to the end of the epoch of the last step
        for (x, y), expected in zip(batches, reference[start:stop]):
            np.testing.assert_array_equal(x.numpy(), expected[0].numpy())


def test_training_batches_come_without_the_autotuning_thread():
    # Deleting an iterator waits for tf.data's autotuning thread to wake, which at the end of each
    # chunk of iterate_batches stalled training for 20 to 36 s (see epochs_dataset).
    source, _ = _toy_source(10, flip=True)
    dataset = pipeline.epochs_dataset(source, 4, epoch=0, count=3, seed=3, skip=1)
    assert dataset.options().autotune.enabled is False
    batches = list(_all(dataset))
    assert len(batches) == 3 * 2 - 1  # 2 batches per epoch, the first skipped
    chained = [b for e in range(3) for b in _all(pipeline.make_pipeline(source, 4, seed=3, epoch=e))][1:]
    for (x, y), (x_ref, y_ref) in zip(batches, chained):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)


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
