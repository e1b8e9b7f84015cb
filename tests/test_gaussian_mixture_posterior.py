"""diffusion.gaussian_mixture_posterior: exact denoising quantities for Gaussian-mixture data.

Chapter "Forward and reverse process", Eqs. (eq-tweedie), (eq-eps-score), (eq-best-eps-error).
"""

import numpy as np
import pytest

from ddpm_helpers.method.diffusion import gaussian_mixture_posterior

MEANS = np.array([[-1.0, 0.5], [0.8, -0.2], [0.0, 1.2]])
STDS = np.array([0.2, 0.5, 0.3])
WEIGHTS = np.array([0.2, 0.5, 0.3])


DIAGONAL_STDS = np.array([[0.2, 0.6], [0.5, 0.1], [0.3, 0.3]])  # one per component and coordinate


@pytest.mark.parametrize("stds", [STDS, DIAGONAL_STDS], ids=["isotropic", "diagonal"])
def test_score_is_the_gradient_of_the_log_density(stds):
    x = np.random.default_rng(0).standard_normal((10, 2))
    h = 1e-6
    for alpha_bar in (0.999, 0.5, 0.01):
        post = gaussian_mixture_posterior(x, alpha_bar, MEANS, stds, WEIGHTS)
        for d, e in enumerate(np.eye(2)):
            up = gaussian_mixture_posterior(x + h * e, alpha_bar, MEANS, stds, WEIGHTS)
            down = gaussian_mixture_posterior(x - h * e, alpha_bar, MEANS, stds, WEIGHTS)
            numeric = (up["log_density"] - down["log_density"]) / (2 * h)
            assert np.allclose(post["score"][:, d], numeric, rtol=1e-5, atol=1e-5)
        # Eq. (eq-eps-score)
        assert np.allclose(post["eps_mean"], -np.sqrt(1 - alpha_bar) * post["score"])


def test_posterior_moments_match_monte_carlo():
    """E[x_0 | x_t] and Var[x_0 | x_t] from samples of x_0 weighted by q(x_t | x_0)."""
    rng = np.random.default_rng(1)
    n = 200_000
    k = rng.choice(3, n, p=WEIGHTS)
    x0 = MEANS[k] + STDS[k, None] * rng.standard_normal((n, 2))
    alpha_bar = 0.6
    points = np.array([[0.0, 0.0], [-0.7, 0.4], [0.5, 0.5]])
    post = gaussian_mixture_posterior(points, alpha_bar, MEANS, STDS, WEIGHTS)
    for i, x in enumerate(points):
        log_w = -np.sum((x - np.sqrt(alpha_bar) * x0) ** 2, axis=1) / (2 * (1 - alpha_bar))
        w = np.exp(log_w - log_w.max())
        w /= w.sum()
        mean = w @ x0
        var = w @ (x0 - mean) ** 2
        se = np.sqrt(w**2 @ (x0 - mean) ** 2)
        assert np.all(np.abs(mean - post["x0_mean"][i]) < 5 * se)
        assert np.allclose(var, post["x0_var"][i], rtol=0.05)


def test_one_component_is_the_gaussian_posterior():
    x = np.array([[0.3], [-1.0]])
    m, s, ab = 0.4, 0.7, 0.3
    post = gaussian_mixture_posterior(x, ab, [[m]], s)
    var_t = ab * s**2 + 1 - ab
    assert np.allclose(post["x0_mean"], m + np.sqrt(ab) * s**2 / var_t * (x - np.sqrt(ab) * m))
    assert np.allclose(post["x0_var"], s**2 * (1 - ab) / var_t)
    assert np.allclose(post["score"], -(x - np.sqrt(ab) * m) / var_t)


def test_unit_gaussian_best_errors():
    """Eq. (eq-best-eps-error): for N(0, 1) data, SNR Var[x_0 | x_t] = alpha_bar."""
    for ab in (0.9, 0.5, 0.1):
        post = gaussian_mixture_posterior([[0.0]], ab, [[0.0]], 1.0)
        assert np.isclose(post["x0_var"][0, 0], 1 - ab)
        assert np.isclose(ab / (1 - ab) * post["x0_var"][0, 0], ab)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="weights"):
        gaussian_mixture_posterior([[0.0, 0.0]], 0.5, MEANS, STDS, [0.5, 0.6, 0.1])
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="alpha_bar"):
            gaussian_mixture_posterior([[0.0, 0.0]], bad, MEANS, STDS, WEIGHTS)
    with pytest.raises(ValueError, match=r"stds must be a number, \(3,\) or \(3, 2\)"):
        gaussian_mixture_posterior([[0.0, 0.0]], 0.5, MEANS, np.ones(2), WEIGHTS)
    with pytest.raises(ValueError, match="dimension"):
        gaussian_mixture_posterior([[0.0]], 0.5, MEANS, STDS, WEIGHTS)


def test_diagonal_components_are_products_of_one_dimensional_ones():
    """One diagonal component: the density factorises over the coordinates."""
    x = np.random.default_rng(1).standard_normal((6, 2))
    mean, sd = np.array([[0.4, -1.0]]), np.array([[0.3, 0.8]])
    both = gaussian_mixture_posterior(x, 0.6, mean, sd)
    one_at_a_time = [gaussian_mixture_posterior(x[:, [d]], 0.6, mean[:, [d]], sd[0, d]) for d in range(2)]
    assert np.allclose(both["log_density"], sum(p["log_density"] for p in one_at_a_time))
    for key in ("score", "x0_mean", "x0_var", "eps_mean"):
        assert np.allclose(both[key], np.concatenate([p[key] for p in one_at_a_time], axis=1)), key


def test_at_alpha_bar_one_the_data_density_and_no_noise_to_predict():
    x = np.random.default_rng(2).standard_normal((4, 2))
    post = gaussian_mixture_posterior(x, 1.0, MEANS, DIAGONAL_STDS, WEIGHTS)
    direct = np.log(sum(w * np.prod(np.exp(-0.5 * ((x - m) / s) ** 2) / (np.sqrt(2 * np.pi) * s), axis=1)
                        for w, m, s in zip(WEIGHTS, MEANS, DIAGONAL_STDS)))
    assert np.allclose(post["log_density"], direct)
    assert np.all(post["eps_mean"] == 0.0)
    assert np.allclose(post["x0_mean"], x) and np.allclose(post["x0_var"], 0.0)


def test_many_rows_in_chunks_equal_one_row_at_a_time():
    # With many components the rows are processed a few at a time; each row, with its own
    # alpha_bar, must come out as if it were computed alone.
    rng = np.random.default_rng(5)
    means = rng.standard_normal((2000, 2))
    stds = rng.uniform(0.05, 0.3, (2000, 2))
    weights = rng.dirichlet(np.ones(2000))
    x = rng.standard_normal((70, 2))
    ab = rng.uniform(0.01, 1.0, 70)
    together = gaussian_mixture_posterior(x, ab, means, stds, weights)
    for i in (0, 15, 16, 17, 33, 69):
        alone = gaussian_mixture_posterior(x[i:i + 1], ab[i], means, stds, weights)
        for key, value in alone.items():
            np.testing.assert_allclose(together[key][i], value[0], rtol=1e-12, atol=1e-14)
