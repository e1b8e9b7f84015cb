"""The exact score of the 2-D data sets (ddpm_helpers.playground.toy_score), chapter "Diffusion in two dimensions"."""

import numpy as np
import pytest

from ddpm_helpers.playground import toy2d, toy_score


@pytest.mark.parametrize("name", toy2d.TOY_DATASETS)
def test_score_is_the_gradient_of_the_log_density(name):
    mixture = toy_score.toy_mixture(name, resolution=64)
    x = np.random.default_rng(0).standard_normal((20, 2))
    h = 1e-5
    for alpha_bar in (0.99, 0.5, 0.02):
        by_differences = np.stack(
            [(toy_score.mixture_log_density(x + h * e, alpha_bar, mixture)
              - toy_score.mixture_log_density(x - h * e, alpha_bar, mixture)) / (2 * h)
             for e in np.eye(2)], axis=1)
        score = toy_score.mixture_score(x, alpha_bar, mixture)
        assert np.allclose(score, by_differences, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", toy2d.TOY_DATASETS)
def test_mixture_is_the_data_set(name):
    """The data's average log-density under the mixture equals its average under a finer mixture,
    and samples of the mixture are as far from the data as two draws of the data are."""
    mixture = toy_score.toy_mixture(name)
    data = toy2d.make_toy_data(name, 2000, seed=3)
    rng = np.random.default_rng(4)
    k = rng.choice(len(mixture.weights), 2000, p=mixture.weights)
    drawn = mixture.means[k] + np.sqrt(mixture.variances) * rng.standard_normal((2000, 2))
    other = toy2d.make_toy_data(name, 2000, seed=5)
    assert toy2d.sliced_wasserstein(drawn, data) < 2.0 * toy2d.sliced_wasserstein(other, data)
    finer = toy_score.toy_mixture(name, resolution=2048)
    assert np.isclose(toy_score.mixture_log_density(data, 1.0, mixture).mean(),
                      toy_score.mixture_log_density(data, 1.0, finer).mean(), atol=1e-4)


def test_best_noise_is_the_conditional_mean():
    """eps* = E[eps | x_t]: the leftover eps - eps* is uncorrelated with any function of x_t."""
    mixture = toy_score.toy_mixture("two_moons")
    rng = np.random.default_rng(1)
    x0 = toy2d.make_toy_data("two_moons", 20_000, seed=2).astype(np.float64)
    eps = rng.standard_normal(x0.shape)
    alpha_bar = 0.6
    x_t = np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps
    best = toy_score.best_noise(x_t, alpha_bar, mixture)
    for feature in (best, x_t, np.tanh(3 * x_t)):
        products = np.sum(feature * (eps - best), axis=1)
        assert abs(products.mean()) < 5 * products.std() / np.sqrt(len(products))
    # and it predicts better than the best linear guess for unit-covariance data
    assert np.mean((eps - best) ** 2) < np.mean((eps - np.sqrt(1 - alpha_bar) * x_t) ** 2)


def test_gaussian_limits():
    mixture = toy_score.toy_mixture("eight_gaussians")
    x = np.random.default_rng(0).standard_normal((5, 2))
    # alpha_bar -> 0: q_t is a standard normal, whose score is -x
    assert np.allclose(toy_score.mixture_score(x, 1e-12, mixture), -x, atol=1e-5)
    # a single component: the score of N(sqrt(ab) mu, ab var + 1 - ab)
    one = toy_score.ToyMixture("one", np.array([[0.5, -1.0]]), np.array([0.04, 0.09]), np.array([1.0]))
    variances = 0.3 * one.variances + 0.7
    expected = -(x - np.sqrt(0.3) * one.means) / variances
    assert np.allclose(toy_score.mixture_score(x, 0.3, one), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="Unknown toy data set"):
        toy_score.toy_mixture("three_moons")
    with pytest.raises(ValueError, match="resolution"):
        toy_score.toy_mixture("two_moons", resolution=0)
    mixture = toy_score.toy_mixture("two_moons", resolution=8)
    with pytest.raises(ValueError, match="shape"):
        toy_score.mixture_score(np.zeros(2), 0.5, mixture)
    with pytest.raises(ValueError, match="alpha_bar"):
        toy_score.mixture_score(np.zeros((1, 2)), 0.0, mixture)
