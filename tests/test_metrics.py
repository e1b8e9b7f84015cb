"""Tests of ddpm_helpers.measuring.metrics: the Frechet distance against NumPy, and the digit-classifier metric."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddpm_helpers.measuring import metrics


def numpy_frechet(a, b):
    """Independent reference: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), both roots by eigen-decomposition."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    m1, m2 = a.mean(0), b.mean(0)
    s1 = (a - m1).T @ (a - m1) / (len(a) - 1)
    s2 = (b - m2).T @ (b - m2) / (len(b) - 1)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((6, 6))
    a = rng.standard_normal((400, 6)) @ mixing
    b = rng.standard_normal((300, 6)) @ (mixing * 1.3) + 0.5
    return a, b


def test_identical_sets_give_zero(features):
    a, _ = features
    assert metrics.frechet_distance_of_features(a, a) == pytest.approx(0.0, abs=1e-6)


def test_matches_independent_numpy(features):
    a, b = features
    assert metrics.frechet_distance_of_features(a, b) == pytest.approx(numpy_frechet(a, b), rel=1e-6)


def test_shift_gives_squared_distance_of_means(features):
    a, _ = features
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.0, 0.0])
    assert metrics.frechet_distance_of_features(a, a + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)
    assert metrics.frechet_distance_of_features(a, a + 2 * shift) > metrics.frechet_distance_of_features(a, a + shift)


def test_one_dimensional_closed_form():
    # W2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    assert metrics.frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx((1 - 3) ** 2 + (2 - 3) ** 2)


def test_singular_covariances_are_handled():
    rng = np.random.default_rng(1)
    a = np.concatenate([rng.standard_normal((50, 3)), np.zeros((50, 2))], axis=1)  # two dead features
    b = np.concatenate([rng.standard_normal((50, 3)) + 1, np.zeros((50, 2))], axis=1)
    value = metrics.frechet_distance_of_features(a, b)
    assert np.isfinite(value) and value == pytest.approx(numpy_frechet(a, b), rel=1e-3)


def test_large_imaginary_part_of_the_root_raises():
    # Not covariances: sqrtm(I @ -I) = i I. Dropping the imaginary part would give a wrong number.
    with pytest.raises(ValueError, match="imaginary part of 1"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), -np.eye(3))
    rng = np.random.default_rng(4)
    a = rng.standard_normal((20, 6))
    assert np.isfinite(metrics.frechet_distance_of_features(a, a[::-1] + 0.1))  # round-off is tolerated


def test_bad_shapes():
    with pytest.raises(ValueError, match="Shapes do not match"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        metrics.feature_statistics(np.zeros(5))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def evaluator(runs_dir):
    classifier = metrics.load_or_train_classifier("digits", 8, 1, runs_dir=runs_dir, verbose=False)
    return metrics.Evaluator(classifier, "digits", 8, 1, floor_repeats=3)


def test_classifier_is_accurate_and_cached(evaluator, runs_dir, capsys):
    assert evaluator.classifier.accuracy > 0.9
    again = metrics.load_or_train_classifier("digits", 8, 1, runs_dir=runs_dir)
    assert "Loaded the feature classifier" in capsys.readouterr().out
    x = evaluator.held_out_images[:20]
    np.testing.assert_allclose(again.features(x), evaluator.classifier.features(x), atol=1e-5)


def test_metric_orders_real_shifted_and_noise(evaluator):
    n = 200
    real = evaluator.train_images[-n:]  # real digits that are not in the held-out reference
    same = evaluator.evaluate(evaluator.held_out_images)
    assert same.fd == pytest.approx(0.0, abs=1e-4)  # the held-out set against itself
    real_result = evaluator.evaluate(real)
    shifted = evaluator.evaluate(np.clip(real + 0.6, -1, 1))
    noise = evaluator.evaluate(np.random.default_rng(0).uniform(-1, 1, real.shape))
    assert real_result.fd < shifted.fd < noise.fd
    assert real_result.ratio < 2.0 < shifted.ratio
    assert shifted.ratio == pytest.approx(shifted.fd / shifted.floor)
    assert real_result.floor < real_result.ceiling
    assert real_result.class_histogram.sum() == n and len(real_result.class_histogram) == 10
    assert real_result.confident_share > 0.85 > noise.confident_share


def test_uint8_and_float_inputs_agree(evaluator):
    from ddpm_helpers.notebook.plotting import to_uint8

    x = evaluator.held_out_images[:50]
    assert evaluator.fd_to_real(x) == pytest.approx(evaluator.fd_to_real(to_uint8(x)), rel=1e-6)


def test_every_score_sees_the_8_bit_images(evaluator):
    # Samples in memory (float) and the same samples read back from a uint8 file score alike: the
    # classifier rounds to 8 bits first, so the confident share of the page's table and of the
    # command line agree to the sample.
    from ddpm_helpers.measuring import intervals
    from ddpm_helpers.notebook.plotting import to_uint8

    x = evaluator.held_out_images[:200]
    x = np.clip(x + np.random.default_rng(3).normal(0, 0.01, x.shape), -1, 1).astype(np.float32)
    classifier = evaluator.classifier
    np.testing.assert_allclose(classifier.probabilities(x), classifier.probabilities(to_uint8(x)), atol=1e-6)
    share = intervals.confident_interval(classifier, x).value
    assert share == evaluator.evaluate(x).confident_share == evaluator.evaluate(to_uint8(x)).confident_share


def test_evaluate_cli(evaluator, tmp_path, runs_dir, monkeypatch, capsys):
    from ddpm_helpers.cli import main
    from ddpm_helpers.engine.sample_files import save_samples

    monkeypatch.setenv("DDPM_RUNS_DIR", str(runs_dir))
    path = save_samples(tmp_path / "real.npz", evaluator.held_out_images[:100], meta={"dataset": "digits"})
    assert main(["evaluate", "--samples", str(path)]) == 0
    out = capsys.readouterr().out
    for word in ("FD:", "floor:", "ratio:", "ceiling:", "NOT Inception FID"):
        assert word in out
    assert main(["evaluate", "--samples", str(tmp_path / "missing.npz")]) == 1
    np.savez(tmp_path / "bad.npz", images=np.zeros((4, 8, 8, 1), np.float32))
    assert main(["evaluate", "--samples", str(tmp_path / "bad.npz")]) == 1
    assert "uint8" in capsys.readouterr().err


def _cli(path):
    import argparse

    return metrics.evaluate_from_cli(argparse.Namespace(samples=str(path), seed=0))


def test_evaluate_names_what_is_wrong_with_a_sample_file(evaluator, tmp_path, runs_dir, monkeypatch, capsys):
    from ddpm_helpers.engine.sample_files import save_samples

    monkeypatch.setenv("DDPM_RUNS_DIR", str(runs_dir))
    good = save_samples(tmp_path / "good.npz", evaluator.train_images[:80], meta={"dataset": "digits"})
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:300])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not an npz file at all" * 10)
    bad_meta = tmp_path / "bad_meta.npz"
    np.savez(bad_meta, images=np.zeros((80, 8, 8, 1), np.uint8), meta=np.array("{not json"))
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, images=np.random.default_rng(0).integers(0, 256, (80, 32, 32, 3), dtype=np.uint8))
    for path, message in [(truncated, "not a readable .npz file"), (garbage, "not a readable .npz file"),
                          (bad_meta, "'meta' is not valid JSON"), (rgb, "no 'meta' naming its data set"),
                          (tmp_path / "missing.npz", "does not exist")]:
        assert _cli(path) == 1
        err = capsys.readouterr().err
        assert message in err and str(path) in err, err
        assert "Traceback" not in err


def test_one_image_is_refused_before_any_classifier_is_trained(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the classifier was trained")

    monkeypatch.setattr(metrics, "load_or_train_classifier", no_training)
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.evaluate_samples(np.zeros((1, 8, 8, 1), np.uint8), runs_dir=tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate_samples(np.full((5, 8, 8, 1), np.nan, np.float32), runs_dir=tmp_path)


def test_fewer_images_than_features_warn(evaluator):
    with pytest.warns(UserWarning, match="Only 20 images for 64 features"):
        evaluator.evaluate(evaluator.train_images[:20])
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(np.full((100, 8, 8, 1), np.nan, np.float32))


def test_unlabelled_data_is_refused():
    with pytest.raises(ValueError, match="labelled"):
        metrics.load_reference_data("folder:/nonexistent")


def test_cli_sample_then_evaluate_on_a_tiny_run(tmp_path, runs_dir, monkeypatch, capsys):
    # A conditional run (2 training steps), so that the labels written by `sample` are checked too.
    num_classes = 10
    from ddpm_helpers import get_profile
    from ddpm_helpers.cli import main
    from ddpm_helpers.engine.training import train

    monkeypatch.setenv("DDPM_RUNS_DIR", str(runs_dir))  # reuse the classifier trained above
    run = train(get_profile("smoke"), tmp_path / "run", steps=2, progress=False, num_classes=num_classes)
    out = tmp_path / "samples.npz"
    argv = ["sample", "--run", str(run.run_dir), "--n", "12", "--sampler", "ddim", "--steps", "3", "--eta", "0.5",
            "--seed", "1", "--out", str(out)]
    assert main(argv) == 0
    with np.load(out) as stored:
        images = stored["images"]
        meta = json.loads(str(stored["meta"]))
        assert ("labels" in stored) == (num_classes is not None)
        if num_classes:
            np.testing.assert_array_equal(stored["labels"], np.arange(12) % 10)
    assert images.dtype == np.uint8 and images.shape == (12, 8, 8, 1)
    assert meta["dataset"] == "digits" and meta["settings"]["steps"] == 3
    again = tmp_path / "again.npz"
    assert main(argv[:-1] + [str(again)]) == 0
    with np.load(again) as stored:
        np.testing.assert_array_equal(stored["images"], images)  # same seed, same samples
    assert main(["evaluate", "--samples", str(out)]) == 0
    assert "ratio:" in capsys.readouterr().out
    assert main(["sample", "--run", str(run.run_dir), "--sampler", "ddpm", "--steps", "5", "--out", str(out)]) == 1
    assert main(["sample", "--run", str(tmp_path / "nothing"), "--out", str(out)]) == 1
    assert "error:" in capsys.readouterr().err
