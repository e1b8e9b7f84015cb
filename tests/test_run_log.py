"""What a run leaves to look at: TensorBoard scalars and sample grids while training
(ddpm_helpers.engine.run_log), and ``sample --png`` (a PNG grid beside the .npz)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras")

from PIL import Image  # noqa: E402

from ddpm_helpers import get_profile  # noqa: E402
from ddpm_helpers.cli import main  # noqa: E402
from ddpm_helpers.engine import training  # noqa: E402
from ddpm_helpers.engine.data import load_digits  # noqa: E402
from ddpm_helpers.engine.run_log import sample_grid_path  # noqa: E402
from ddpm_helpers.notebook.plotting import image_grid  # noqa: E402

PROFILE = get_profile("smoke").replace(batch_size=8, checkpoint_every=3, widths=(8,), num_res_blocks=1, timesteps=20,
                                       attention_resolutions=(), attention_in_bottleneck=False, time_embedding_dim=16)


def read_events(folder):
    """``{tag: [(step, plugin), ...]}`` of the event files in ``folder``."""
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    tags = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, value.metadata.plugin_data.plugin_name))
    return tags


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("logged") / "run"
    images = load_digits("train")[0][:32]
    run = training.train(PROFILE, run_dir, steps=6, data=images, progress=False, jit_compile=False,
                         tensorboard=True, sample_every=3)
    return run


def test_training_writes_tensorboard_scalars_and_sample_grids(logged_run):
    tags = read_events(logged_run.run_dir / "logs")
    assert [step for step, _ in tags["loss"]] == list(range(1, 7))  # every step, once
    assert {plugin for _, plugin in tags["loss"] + tags["learning_rate"]} == {"scalars"}
    assert [step for step, _ in tags["samples"]] == [3, 6] and tags["samples"][0][1] == "images"
    for step in (3, 6):
        grid = np.asarray(Image.open(sample_grid_path(logged_run.run_dir, step)))
        assert grid.shape == image_grid(np.zeros((16, 64, 64, 1), np.uint8), columns=8).shape[:2]


def test_book_default_writes_neither(tmp_path):
    run = training.train(PROFILE, tmp_path / "plain", steps=2, data=load_digits("train")[0][:16], progress=False,
                         jit_compile=False)
    assert not (run.run_dir / "logs").exists() and not (run.run_dir / "samples").exists()


def test_resumed_run_logs_only_its_new_steps(logged_run):
    training.train(PROFILE, logged_run.run_dir, steps=9, resume=True, data=load_digits("train")[0][:32],
                   progress=False, jit_compile=False, tensorboard=True)
    steps = [step for step, _ in read_events(logged_run.run_dir / "logs")["loss"]]
    assert steps == list(range(1, 10))


def test_sample_writes_a_png_grid(logged_run, tmp_path, capsys):
    out, png = tmp_path / "s.npz", tmp_path / "grid.png"
    argv = ["sample", "--run", str(logged_run.run_dir), "--n", "6", "--sampler", "ddim", "--steps", "3",
            "--out", str(out), "--png", str(png), "--png-count", "4"]
    assert main(argv) == 0
    with np.load(out) as stored:
        first = stored["images"][:4]
    # 8x8 digits drawn 8 times larger, 2 x 2 with 2-pixel gaps
    assert np.array_equal(np.asarray(Image.open(png)), image_grid(first, scale=8)[..., 0])
    assert main(argv[:-4] + ["--png", str(tmp_path / "grid.jpg")]) == 1
    assert "--png must name a .png" in capsys.readouterr().err
