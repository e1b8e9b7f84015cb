"""The DDPM of chapter "DDPM on one screen" computes what the package computes.

The chapter ``book/03b_ddpm_on_one_screen.md`` writes a whole DDPM in plain TensorFlow (schedule,
network, Algorithm 1's training step, Algorithm 2's sampler) and says that the rest of the book is
"that, made robust and fast". These tests hold it to that: they read the page's code cells with
jupytext and execute the page's own code (not a copy), up to the cell that trains, then compare
on the same inputs:

- the schedule arrays with ``schedules.make_schedule("linear", T)``;
- one training step (loss, and the weight update under SGD with learning rate 1, which is minus
  the gradient) with ``training.make_train_step`` driven by the same t and noise
  (``training.draw_step_randomness``), and with the loss written from ``diffusion.q_sample`` and
  ``diffusion.diffusion_loss("mse")``;
- one reverse step with ``sampling.p_sample`` (no clipping, variance beta_tilde);
- the loops: Algorithm 2 visits t = T, ..., 1 with no noise on the last step, Algorithm 1 draws
  t in {1, ..., T} (array positions 0..T-1) and noise of the batch's shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
jupytext = pytest.importorskip("jupytext")

from ddpm_helpers.engine import sampling, training  # noqa: E402
from ddpm_helpers.method import diffusion, schedules

PAGE = Path(__file__).resolve().parents[1] / "book" / "03b_ddpm_on_one_screen.md"
TRAINING_LOOP = "for step in range(STEPS)"
# The page promises the algorithm "in about sixty lines" of visible code.
MAX_CODE_LINES = 62


def code_cells():
    """(source, tags) of every code cell of the page, in order."""
    notebook = jupytext.read(PAGE)
    return [(cell.source, cell.metadata.get("tags", [])) for cell in notebook.cells
            if cell.cell_type == "code"]


def load_page():
    """Execute the page's code cells up to (not including) the training loop; return the namespace."""
    namespace = {"__name__": "one_screen_page"}
    for source, tags in code_cells():
        if TRAINING_LOOP in source:
            return namespace
        if "remove-cell" in tags:  # the Colab install cell and the timers
            continue
        exec(compile(source, str(PAGE), "exec"), namespace)
    raise AssertionError(f"No cell of {PAGE.name} contains {TRAINING_LOOP!r}: the test cannot find the training loop.")


@pytest.fixture()
def page():
    keras.utils.set_random_seed(0)
    return load_page()


def test_page_defines_the_pieces(page):
    for name in ("T", "betas", "alpha_bars", "sigmas", "eps_model", "mlp", "optimizer", "train_step",
                 "p_sample_step", "sample", "data"):
        assert name in page, f"the page no longer defines {name!r}"


def test_the_algorithm_fits_on_one_screen():
    lines = 0
    for source, tags in code_cells():
        if any(tag.startswith(("remove", "hide")) for tag in tags):
            continue
        lines += sum(1 for line in source.splitlines() if line.strip() and not line.strip().startswith("#"))
    assert lines <= MAX_CODE_LINES, f"the page shows {lines} lines of code, more than {MAX_CODE_LINES}"


def test_schedule_equals_package(page):
    table = schedules.make_schedule("linear", page["T"])
    np.testing.assert_allclose(page["betas"], table.betas, rtol=0, atol=1e-15)
    np.testing.assert_allclose(page["alpha_bars"], table.alpha_bars, rtol=1e-12, atol=0)
    np.testing.assert_allclose(page["sigmas"] ** 2, table.posterior_variance, rtol=1e-10, atol=1e-18)


class _PageNetwork:
    """The page's noise predictor with the interface ``make_train_step`` calls: ``model([x_t, t])``."""

    def __init__(self, page):
        self.page = page
        self.trainable_variables = page["mlp"].trainable_variables

    def __call__(self, inputs, training=False):
        x_t, t = inputs
        return self.page["eps_model"](x_t, t)


def _weights(page):
    return [w.numpy().copy() for w in page["mlp"].trainable_variables]


def _set_weights(page, values):
    for w, v in zip(page["mlp"].trainable_variables, values):
        w.assign(v)


def test_training_step_equals_package(page):
    T, seed, step, batch = page["T"], 3, 7, 32
    table = schedules.make_schedule("linear", T)
    x_0 = tf.constant(page["data"][:batch])
    # The t and noise the package's step draws for (seed, step).
    t, noise, _ = training.draw_step_randomness(seed, step, batch, (64,), T)
    assert int(tf.reduce_min(t)) < T // 2 < int(tf.reduce_max(t)), "the batch should mix small and large t"
    start = _weights(page)

    # The package's equations, written out: q_sample, then the MSE loss, then its gradient.
    variables = page["mlp"].trainable_variables
    with tf.GradientTape() as tape:
        predicted = page["eps_model"](diffusion.q_sample(table, x_0, t, noise), t)
        loss_eq = diffusion.diffusion_loss("mse")(noise, predicted)
    grads_eq = [g.numpy() for g in tape.gradient(loss_eq, variables)]

    # The package's compiled step, with SGD at learning rate 1: the update is minus the gradient.
    package_step = training.make_train_step(_PageNetwork(page), keras.optimizers.SGD(1.0), table,
                                            diffusion.diffusion_loss("mse"), seed=seed)
    loss_package = float(package_step(x_0, None, tf.constant(step, tf.int64)))
    update_package = [w - s for w, s in zip(_weights(page), start)]
    _set_weights(page, start)

    # The page's step, on the same batch, t and noise, with the same optimizer.
    page["optimizer"] = keras.optimizers.SGD(1.0)
    loss_page = float(page["train_step"](x_0, t, noise))
    update_page = [w - s for w, s in zip(_weights(page), start)]

    # float32 rounding moves these by about 1e-7 (relative); a wrong coefficient in x_t by more.
    assert loss_page == pytest.approx(float(loss_eq), rel=1e-6)
    assert loss_page == pytest.approx(loss_package, rel=1e-6)
    scale = max(float(np.max(np.abs(g))) for g in grads_eq)
    assert scale > 1e-4, "the gradient is too small to compare"
    for got, grad, package in zip(update_page, grads_eq, update_package):
        np.testing.assert_allclose(got, -grad, rtol=1e-4, atol=5e-6 * scale)
        np.testing.assert_allclose(got, package, rtol=1e-4, atol=5e-6 * scale)


@pytest.mark.parametrize("t_value", [0, 1, 2, 499, 998, 999])
def test_sampler_step_equals_package(page, t_value):
    T, n = page["T"], 16
    table = schedules.make_schedule("linear", T)
    rng = np.random.default_rng(t_value)
    x_t = tf.constant(rng.standard_normal((n, 64)).astype(np.float32))
    z = tf.constant(rng.standard_normal((n, 64)).astype(np.float32))
    t = tf.fill([n], t_value)

    def predict_noise(x, t, labels=None):
        return page["eps_model"](x, t)

    ours = page["p_sample_step"](x_t, t, z).numpy()
    theirs = sampling.p_sample(table, predict_noise, x_t, t, z, clip_x0=False, variance="beta_tilde").numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-6)
    if 0 < t_value < T // 2:  # where beta_tilde_t and beta_t differ, the comparison can tell them apart
        other = sampling.p_sample(table, predict_noise, x_t, t, z, clip_x0=False, variance="beta").numpy()
        assert np.max(np.abs(ours - other)) > 1e-4


def test_sampler_loop_is_algorithm_2(page):
    calls = []

    def record(x, t, z):
        calls.append((int(t[0]), np.asarray(z)))
        return tf.convert_to_tensor(x)

    page["p_sample_step"] = record  # `sample` looks the step up by name when it runs
    page["sample"](3)
    T = page["T"]
    assert [t for t, _ in calls] == list(range(T - 1, -1, -1)), "Algorithm 2 visits t = T, ..., 1 once each"
    assert not np.any(calls[-1][1]), "no noise on the last step (the paper's t = 1)"
    assert all(np.std(z) > 0.3 for _, z in calls[:-1]), "fresh noise on every other step"


def test_training_loop_is_algorithm_1(page):
    recorded = []

    def record(x_0, t, eps):
        recorded.append((np.asarray(x_0), np.asarray(t), np.asarray(eps)))
        return 0.0

    loop = next(source for source, _ in code_cells() if TRAINING_LOOP in source)
    page.update(train_step=record, STEPS=20)
    exec(compile(loop, str(PAGE), "exec"), page)
    assert len(recorded) == 20
    T, data = page["T"], page["data"]
    rows = {row.tobytes() for row in data}
    times = np.concatenate([t for _, t, _ in recorded])
    for x_0, t, eps in recorded:
        assert all(row.tobytes() in rows for row in x_0), "line 2: x_0 is drawn from the data"
        assert eps.shape == x_0.shape and eps.dtype == np.float32, "line 4: noise of the batch's shape"
    assert times.min() >= 0 and times.max() <= T - 1, "line 3: t is an array position in [0, T)"
    assert times.min() < T // 10 and times.max() > T - T // 10, "line 3: t covers the whole range"
