"""Four things a denoising network can predict, and what each one's squared error weighs.

Chapter "Four targets and the flow view" (``sec-targets``). A noisy point is
``x = alpha x_0 + sigma eps`` with ``alpha = sqrt(alpha_bar)`` and ``sigma = sqrt(1 - alpha_bar)``
(Eq. (2.5) (``eq-q-xt-x0``)). Given ``x``, any one of

- the noise ``eps``,
- the clean data ``x_0``,
- the velocity ``v = alpha eps - sigma x_0`` of Salimans & Ho (2022),
- the score ``grad log q(x) = -eps / sigma`` (Eq. (3.2) (``eq-eps-score``)),

determines the other three (Eq. (14.1) (``eq-four-targets``)). :func:`x0_from` turns a prediction
of any of them into a prediction of x_0, :func:`to_target` turns x_0 (with x) into any of them,
and :func:`x0_error_weight` says how much the squared error of each target weighs an error in
x_0 (Eq. (14.2) (``eq-target-weights``)). Everything is plain arithmetic, so NumPy arrays and
TensorFlow tensors both work; ``alpha`` and ``sigma`` broadcast against ``x``.
"""

from __future__ import annotations

TARGETS = ("eps", "x0", "v", "score")


def _check(target):
    if target not in TARGETS:
        raise ValueError(f"Unknown target {target!r}; choose one of {', '.join(TARGETS)}.")


def x0_from(target: str, prediction, x, alpha, sigma):
    """The x_0 that a prediction of ``target`` implies at ``x``: Eq. (14.1) (``eq-four-targets``)
    solved for x_0."""
    _check(target)
    if target == "eps":
        return (x - sigma * prediction) / alpha
    if target == "x0":
        return prediction
    if target == "v":
        return alpha * x - sigma * prediction
    return (x + sigma**2 * prediction) / alpha  # score = -eps / sigma


def to_target(target: str, x0, x, alpha, sigma):
    """The value of ``target`` at ``x`` for the clean data ``x0``: Eq. (14.1) (``eq-four-targets``)."""
    _check(target)
    eps = (x - alpha * x0) / sigma
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return alpha * eps - sigma * x0
    return -eps / sigma


def x0_error_weight(target: str, snr):
    """The weight w(SNR) with (squared error of the target) = w (squared error of x_0) at a
    fixed x: Eq. (14.2) (``eq-target-weights``). ``snr = alpha^2 / sigma^2``, with
    ``alpha^2 + sigma^2 = 1``."""
    _check(target)
    if target == "eps":
        return snr
    if target == "x0":
        return 1.0 + 0.0 * snr
    if target == "v":
        return 1.0 + snr
    return snr * (1.0 + snr)  # score: the eps weight divided by sigma^2 = 1 / (1 + snr)
