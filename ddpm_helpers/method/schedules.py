"""Noise schedules: the betas of the forward process and every quantity derived from them.

Chapters "Forward and reverse process" (``sec-forward-reverse``) and "Noise schedules"
(``sec-noise-schedules``). The book writes steps as t = 1, ..., T like the papers; arrays here are
indexed from 0, so position ``i`` holds the paper's step ``t = i + 1``:

    schedule.betas[i]       is beta_{i+1}
    schedule.alpha_bars[i]  is alpha_bar_{i+1} = prod_{s <= i+1} (1 - beta_s)

and a time index ``t`` passed to the functions of :mod:`ddpm_helpers.method.diffusion` is such an array
position (``0 <= t < T``). All tables are computed once in float64 NumPy; :meth:`NoiseSchedule.gather`
hands them to TensorFlow as float32.

    >>> from ddpm_helpers.method.schedules import make_schedule
    >>> schedule = make_schedule("cosine", timesteps=1000)
    >>> schedule.alpha_bars[-1] < 1e-6
    True
"""

from __future__ import annotations

import math

import numpy as np

SCHEDULE_NAMES = ("linear", "cosine", "sigmoid", "quadratic")

# Default parameters of each schedule (the keyword arguments make_betas accepts).
SCHEDULE_DEFAULTS: dict[str, dict[str, float]] = {
    # DDPM (Ho et al. 2020) and the original CelebA tutorial: beta from 1e-4 to 0.02, tuned for T = 1000.
    "linear": {"beta_start": 1e-4, "beta_end": 0.02},
    # Improved DDPM (Nichol & Dhariwal 2021, arXiv 2102.09672), Eq. (17) and its clipping at 0.999.
    "cosine": {"s": 0.008, "max_beta": 0.999},
    # Sigmoid schedule of Jabri et al. (2022) / Chen (2023), with their defaults.
    "sigmoid": {"start": -3.0, "end": 3.0, "tau": 1.0, "max_beta": 0.999},
    # The "quad" schedule of the DDPM code: linear in sqrt(beta).
    "quadratic": {"beta_start": 1e-4, "beta_end": 0.02},
}

# The arrays gather() accepts by name.
ARRAY_NAMES = (
    "betas",
    "alphas",
    "alpha_bars",
    "alpha_bars_prev",
    "sqrt_alphas",
    "sqrt_betas",
    "sqrt_alpha_bars",
    "sqrt_one_minus_alpha_bars",
    "sqrt_recip_alpha_bars",
    "sqrt_recipm1_alpha_bars",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "snr",
    "log_snr",
)


def _check_timesteps(timesteps) -> int:
    if isinstance(timesteps, bool) or not isinstance(timesteps, (int, np.integer)):
        raise ValueError(
            f"timesteps must be an integer number of diffusion steps (T), got {timesteps!r}; "
            "pass e.g. timesteps=1000."
        )
    if timesteps < 2:
        raise ValueError(
            f"timesteps (T) must be at least 2, got {timesteps}: a diffusion needs several noising "
            "steps (DDPM uses T = 1000)."
        )
    return int(timesteps)


def _params_for(name: str, params: dict) -> dict[str, float]:
    defaults = SCHEDULE_DEFAULTS[name]
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"Unknown parameter(s) {', '.join(unknown)} for the {name!r} schedule; "
            f"it accepts: {', '.join(defaults)}."
        )
    merged = {**defaults, **params}
    for key, value in merged.items():
        if not np.isfinite(value):
            raise ValueError(f"Parameter {key} of the {name!r} schedule must be a finite number, got {value!r}.")
    return {key: float(value) for key, value in merged.items()}


def _check_beta_range(name: str, beta_start: float, beta_end: float) -> None:
    if not 0.0 < beta_start < 1.0 or not 0.0 < beta_end < 1.0:
        raise ValueError(
            f"The {name!r} schedule needs 0 < beta_start and beta_end < 1, got beta_start={beta_start}, "
            f"beta_end={beta_end}; DDPM uses beta_start=1e-4, beta_end=0.02."
        )
    if beta_end <= beta_start:
        raise ValueError(
            f"The {name!r} schedule needs beta_end > beta_start (noise must grow), got "
            f"beta_start={beta_start}, beta_end={beta_end}; swap them or use e.g. 1e-4 and 0.02."
        )


def _check_max_beta(name: str, max_beta: float) -> None:
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"max_beta of the {name!r} schedule must lie in (0, 1), got {max_beta}; the papers use 0.999.")


def betas_from_alpha_bar(
    alpha_bar_fn, timesteps: int, max_beta: float = 0.999
) -> np.ndarray:
    """Betas of a schedule defined by a continuous alpha_bar(u) on u in [0, 1].

    ``beta_t = min(1 - alpha_bar(t / T) / alpha_bar((t - 1) / T), max_beta)`` for t = 1..T
    (chapter "Noise schedules", Eq. (4.3) (``eq-beta-from-alpha-bar``)); the clipping keeps the last
    steps, where alpha_bar(1) is 0, away from beta = 1 (Nichol & Dhariwal 2021).
    """
    timesteps = _check_timesteps(timesteps)
    u = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    values = np.asarray(alpha_bar_fn(u), dtype=np.float64)
    betas = 1.0 - values[1:] / values[:-1]
    return np.minimum(betas, max_beta)


def cosine_alpha_bar(u, s: float = 0.008) -> np.ndarray:
    """Cosine schedule, continuous form: f(u) / f(0) with f(u) = cos^2((u + s) / (1 + s) * pi / 2).

    ``u = t / T`` in [0, 1]. Chapter "Noise schedules", Eq. (4.4) (``eq-cosine-alpha-bar``).
    """
    u = np.asarray(u, dtype=np.float64)
    f = np.cos((u + s) / (1.0 + s) * math.pi / 2.0) ** 2
    f0 = math.cos(s / (1.0 + s) * math.pi / 2.0) ** 2
    return f / f0


def sigmoid_alpha_bar(u, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    """Sigmoid schedule, continuous form (Jabri et al. 2022): 1 at u = 0, 0 at u = 1.

    ``(sigmoid(end / tau) - sigmoid((u (end - start) + start) / tau)) /
    (sigmoid(end / tau) - sigmoid(start / tau))``. Chapter "Noise schedules",
    Eq. (4.5) (``eq-sigmoid-alpha-bar``).
    """
    u = np.asarray(u, dtype=np.float64)

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    v_start, v_end = sigmoid(start / tau), sigmoid(end / tau)
    return (v_end - sigmoid((u * (end - start) + start) / tau)) / (v_end - v_start)


def make_betas(name: str, timesteps: int, **params) -> np.ndarray:
    """The T betas (float64, ``betas[i]`` is beta_{i+1}) of a named schedule.

    - ``"linear"``: evenly spaced from ``beta_start`` (1e-4) to ``beta_end`` (0.02), as DDPM
      (chapter "Noise schedules", Eq. (4.1) (``eq-linear-betas``)).
    - ``"quadratic"``: evenly spaced in sqrt(beta) between the same end points (Eq. (4.2)
      (``eq-quadratic-betas``)).
    - ``"cosine"``: Nichol & Dhariwal's alpha_bar with offset ``s`` (0.008), betas clipped at
      ``max_beta`` (0.999) (Eq. (4.4) (``eq-cosine-alpha-bar``)).
    - ``"sigmoid"``: alpha_bar from a sigmoid between ``start`` (-3) and ``end`` (3) with temperature
      ``tau`` (1), betas clipped at ``max_beta`` (Eq. (4.5) (``eq-sigmoid-alpha-bar``)).

    Raises ``ValueError`` for an unknown name (listing the valid ones), T < 2, unknown or
    out-of-range parameters, and beta_end <= beta_start.
    """
    if name not in SCHEDULE_NAMES:
        raise ValueError(f"Unknown schedule {name!r}. Valid schedules: {', '.join(SCHEDULE_NAMES)}.")
    timesteps = _check_timesteps(timesteps)
    p = _params_for(name, params)
    if name == "linear":
        _check_beta_range(name, p["beta_start"], p["beta_end"])
        return np.linspace(p["beta_start"], p["beta_end"], timesteps, dtype=np.float64)
    if name == "quadratic":
        _check_beta_range(name, p["beta_start"], p["beta_end"])
        return np.linspace(math.sqrt(p["beta_start"]), math.sqrt(p["beta_end"]), timesteps, dtype=np.float64) ** 2
    if name == "cosine":
        if p["s"] < 0.0:
            raise ValueError(f"The cosine schedule's offset s must be >= 0, got s={p['s']}; the paper uses s=0.008.")
        _check_max_beta(name, p["max_beta"])
        return betas_from_alpha_bar(lambda u: cosine_alpha_bar(u, p["s"]), timesteps, p["max_beta"])
    # sigmoid
    if p["end"] <= p["start"]:
        raise ValueError(
            f"The sigmoid schedule needs end > start, got start={p['start']}, end={p['end']}; "
            "the defaults are start=-3, end=3."
        )
    if p["tau"] <= 0.0:
        raise ValueError(f"The sigmoid schedule's temperature tau must be > 0, got tau={p['tau']}.")
    _check_max_beta(name, p["max_beta"])
    return betas_from_alpha_bar(
        lambda u: sigmoid_alpha_bar(u, p["start"], p["end"], p["tau"]), timesteps, p["max_beta"]
    )


class NoiseSchedule:
    """Every table of the forward process and its posterior, built from the betas (float64).

    Arrays (float64, length T; position ``i`` is the paper's step ``t = i + 1``):

    - ``betas``, ``alphas = 1 - betas`` (chapter "Forward and reverse process", Eq. (2.2)
      (``eq-forward-step``)),
    - ``alpha_bars`` (cumulative product of alphas) and ``alpha_bars_prev`` (the same shifted
      right, starting at alpha_bar_0 = 1), ``sqrt_alpha_bars``, ``sqrt_one_minus_alpha_bars``
      (Eq. (2.5) (``eq-q-xt-x0``)), ``sqrt_recip_alpha_bars``, ``sqrt_recipm1_alpha_bars``
      (Eq. (2.19) (``eq-x0-from-eps``)),
    - ``posterior_variance`` (beta_tilde, Eq. (2.8) (``eq-posterior-variance``)), its log with the
      first entry (which is 0) replaced by the second, ``posterior_log_variance_clipped``, and the
      posterior mean coefficients ``posterior_mean_coef1`` (of x_0) and ``posterior_mean_coef2``
      (of x_t) (Eq. (2.9) (``eq-posterior-mean``)),
    - ``snr = alpha_bar / (1 - alpha_bar)`` and ``log_snr`` (chapter "Noise schedules", Eq. (4.7)
      (``eq-snr``)).

    ``gather(name, t)`` returns float32 TensorFlow values for a batch of time indices.
    Raises ``ValueError`` when the betas are not a finite 1-D array of at least 2 values in
    (0, 1), or so large that alpha_bar underflows to 0 in float64.
    """

    def __init__(self, betas, name: str = "custom"):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1:
            raise ValueError(f"betas must be a 1-D array (one beta per step), got shape {betas.shape}.")
        _check_timesteps(int(betas.shape[0]))
        if not np.all(np.isfinite(betas)):
            raise ValueError(f"betas must be finite; found {int(np.sum(~np.isfinite(betas)))} NaN/inf value(s).")
        bad = np.flatnonzero((betas <= 0.0) | (betas >= 1.0))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"betas must lie strictly between 0 and 1 (each is the variance of the noise added in one "
                f"step); got betas[{i}] = {float(betas[i])!r} and {bad.size} value(s) outside (0, 1) in all. "
                "Clip them, e.g. np.clip(betas, 1e-8, 0.999)."
            )
        self.name = str(name)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = np.cumprod(self.alphas)
        if self.alpha_bars[-1] <= 0.0 or np.any(np.diff(self.alpha_bars) >= 0.0):
            raise ValueError(
                "These betas make alpha_bar underflow to 0 or stop decreasing in float64 "
                f"(alpha_bar_T = {float(self.alpha_bars[-1])!r}); use smaller betas or fewer steps."
            )
        self.alpha_bars_prev = np.concatenate([[1.0], self.alpha_bars[:-1]])
        self.sqrt_alphas = np.sqrt(self.alphas)
        self.sqrt_betas = np.sqrt(betas)
        self.sqrt_alpha_bars = np.sqrt(self.alpha_bars)
        one_minus = -np.expm1(np.log(self.alpha_bars))  # 1 - alpha_bar without cancellation
        self.sqrt_one_minus_alpha_bars = np.sqrt(one_minus)
        self.sqrt_recip_alpha_bars = np.sqrt(1.0 / self.alpha_bars)
        self.sqrt_recipm1_alpha_bars = np.sqrt(one_minus / self.alpha_bars)
        one_minus_prev = 1.0 - self.alpha_bars_prev
        self.posterior_variance = betas * one_minus_prev / one_minus
        # beta_tilde_1 = 0: use beta_tilde_2 in the log so it stays finite (as DDPM's code does).
        self.posterior_log_variance_clipped = np.log(
            np.concatenate([[self.posterior_variance[1]], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * np.sqrt(self.alpha_bars_prev) / one_minus
        self.posterior_mean_coef2 = one_minus_prev * self.sqrt_alphas / one_minus
        self.snr = self.alpha_bars / one_minus
        self.log_snr = np.log(self.alpha_bars) - np.log(one_minus)
        self._tensors: dict[str, object] = {}

    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.shape[0])

    def __len__(self) -> int:
        return self.timesteps

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule(name={self.name!r}, T={self.timesteps}, beta_1={self.betas[0]:.3g}, "
            f"beta_T={self.betas[-1]:.3g}, alpha_bar_T={self.alpha_bars[-1]:.3g})"
        )

    def check_t(self, t) -> np.ndarray:
        """Raise ``ValueError`` unless every entry of the concrete time index ``t`` is an integer in [0, T)."""
        values = np.asarray(t)
        if values.dtype.kind not in "iu":
            raise ValueError(
                f"t must hold integer time indices in [0, {self.timesteps}), got dtype {values.dtype}; "
                "cast it, e.g. tf.cast(t, tf.int32)."
            )
        if values.size and (values.min() < 0 or values.max() >= self.timesteps):
            raise ValueError(
                f"t must lie in [0, T) = [0, {self.timesteps}) (index i is the paper's step i + 1), "
                f"got values from {values.min()} to {values.max()}."
            )
        return values

    def _table(self, array_name_or_array):
        import tensorflow as tf

        if isinstance(array_name_or_array, str):
            name = array_name_or_array
            if name not in ARRAY_NAMES:
                raise ValueError(f"Unknown schedule array {name!r}. Valid names: {', '.join(ARRAY_NAMES)}.")
            if name not in self._tensors:
                # Create the constant eagerly, once, even when first called inside a tf.function.
                with tf.init_scope():
                    self._tensors[name] = tf.constant(getattr(self, name), dtype=tf.float32)
            return self._tensors[name]
        table = tf.cast(tf.convert_to_tensor(array_name_or_array), tf.float32)
        if table.shape.rank != 1 or (table.shape[0] is not None and table.shape[0] != self.timesteps):
            raise ValueError(
                f"An array passed to gather must have shape ({self.timesteps},), got {table.shape}."
            )
        return table

    def gather(self, array_name_or_array, t, ndim: int = 4):
        """Values of a table at time indices ``t``, as float32 of shape (B,) + (1,) * (ndim - 1).

        ``array_name_or_array`` is a name such as ``"alpha_bars"`` (see ``ARRAY_NAMES``) or any
        length-T array. ``t`` is an int tensor of shape (B,) (a scalar counts as B = 1);
        ``ndim`` is the rank of the tensors the result multiplies (4 for images (B, H, W, C),
        2 for vectors (B, D)). Works inside ``tf.function``; a concrete (eager) ``t`` outside
        [0, T) raises ``ValueError``.
        """
        import tensorflow as tf

        if ndim < 1:
            raise ValueError(f"ndim must be >= 1 (the rank of x), got {ndim}.")
        table = self._table(array_name_or_array)
        if tf.is_tensor(t):
            if t.dtype.is_floating or t.dtype.is_complex or t.dtype == tf.bool:
                raise ValueError(f"t must hold integer time indices, got dtype {t.dtype.name}; cast it with tf.cast.")
            if tf.executing_eagerly() and not tf.is_symbolic_tensor(t):
                self.check_t(t.numpy())
        else:
            self.check_t(t)
        t = tf.cast(tf.reshape(t, [-1]), tf.int32)
        return tf.reshape(tf.gather(table, t), [-1] + [1] * (ndim - 1))


def make_schedule(name: str = "linear", timesteps: int = 1000, **params) -> NoiseSchedule:
    """A :class:`NoiseSchedule` from a named beta schedule (see :func:`make_betas`)."""
    schedule = NoiseSchedule(make_betas(name, timesteps, **params), name=name)
    schedule.params = {**SCHEDULE_DEFAULTS[name], **params}
    return schedule


def schedule_from_profile(profile) -> NoiseSchedule:
    """The schedule a :class:`~ddpm_helpers.profiles.Profile` names (``profile.schedule``, ``profile.timesteps``)."""
    return make_schedule(profile.schedule, profile.timesteps)
