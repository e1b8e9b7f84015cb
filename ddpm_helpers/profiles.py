"""Run profiles: one place that says how big every experiment in the book is.

Every chapter calls :func:`get_profile`, which reads the ``DDPM_PROFILE`` environment
variable (``smoke``, ``default`` or ``celeba``). ``make test`` uses ``smoke`` so the whole
suite stays fast, ``make book`` uses ``default`` (real results on a 2-core CPU), and
``celeba`` is the full configuration of the chapter this book grew from (CelebA at
32x32x3, T = 1000), meant for a GPU. Its old name ``seed`` still works as an alias
(``ALIASES``): ``get_profile("seed")`` and ``PROFILES["seed"]`` return the ``celeba``
profile, whose ``name`` (and so its run folder, ``runs/celeba``) is ``celeba``. See the
README's "Profiles" table.
"""

from __future__ import annotations

import dataclasses
import os

PROFILE_ENV_VAR = "DDPM_PROFILE"


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes of the data, model, diffusion and training used by a book build."""

    name: str
    description: str
    # Data
    dataset: str  # "digits", "mnist", "fashion_mnist", "cifar10" or "folder:PATH"
    image_size: int
    channels: int
    # Diffusion (chapters "Forward and reverse process", "Noise schedules")
    timesteps: int
    schedule: str
    # U-Net (chapter "The U-Net")
    widths: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    attention_in_bottleneck: bool
    num_heads: int
    key_dim: int
    groups: int
    time_embedding_dim: int
    # Training (chapter "Training")
    batch_size: int
    train_steps: int
    learning_rate: float
    loss: str  # "huber" or "mse"
    ema_decay: float
    checkpoint_every: int
    # Sampling and evaluation
    num_eval_samples: int
    seed: int = 0

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (e.g. ``profile.replace(loss="mse")``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field as a plain dict (what ``config.json`` stores)."""
        return dataclasses.asdict(self)


# Old names still accepted: the profile "seed" was renamed "celeba" (readers took "the seed
# profile" for a random seed). An alias returns the profile itself, name and run folder included.
ALIASES = {"seed": "celeba"}
# Where `python -m ddpm_helpers prepare-celeba ARCHIVE data/celeba32` writes the prepared faces.
CELEBA_FOLDER = "data/celeba32"


class _Profiles(dict):
    """The profiles by name; an old name (``ALIASES``) looks up its new one, but is not
    listed (iterating gives each profile once)."""

    def __missing__(self, name):
        if name in ALIASES:
            return self[ALIASES[name]]
        raise KeyError(name)


PROFILES: dict[str, Profile] = _Profiles({
    "smoke": Profile(
        name="smoke",
        description="Tiny: checks that every cell runs (make test). Results are not meaningful.",
        dataset="digits",
        image_size=8,
        channels=1,
        timesteps=100,
        schedule="cosine",
        widths=(8, 16),
        num_res_blocks=1,
        attention_resolutions=(4,),
        attention_in_bottleneck=True,
        num_heads=1,
        key_dim=8,
        groups=4,
        time_embedding_dim=32,
        batch_size=32,
        train_steps=40,
        learning_rate=1e-3,
        loss="mse",
        ema_decay=0.9,
        checkpoint_every=20,
        num_eval_samples=64,
    ),
    "default": Profile(
        name="default",
        description="CPU-sized: trains on 8x8 handwritten digits in about 3 minutes (make book).",
        dataset="digits",
        image_size=8,
        channels=1,
        timesteps=1000,
        # Cosine, not the seed's linear: at 8x8 the linear schedule leaves almost no signal over the
        # last third of the steps (chapter "Training", section "Training the book's model").
        schedule="cosine",
        widths=(16, 32),
        num_res_blocks=1,
        attention_resolutions=(4,),
        attention_in_bottleneck=True,
        num_heads=2,
        key_dim=16,
        groups=4,
        time_embedding_dim=64,
        batch_size=64,
        train_steps=4000,
        learning_rate=1e-3,
        loss="mse",  # the loss the ELBO leads to (chapter "Training")
        ema_decay=0.995,
        checkpoint_every=500,
        num_eval_samples=256,
    ),
    "celeba": Profile(
        name="celeba",
        description="The original CelebA tutorial's configuration: CelebA 32x32x3, T=1000, for a GPU "
                    "(alias: seed).",
        dataset="folder:" + CELEBA_FOLDER,
        image_size=32,
        channels=3,
        timesteps=1000,
        schedule="linear",
        widths=(32, 64, 128, 256),
        num_res_blocks=2,
        attention_resolutions=(16,),
        attention_in_bottleneck=True,
        num_heads=8,
        key_dim=256,
        groups=8,
        time_embedding_dim=16 * 32,
        batch_size=32,
        # 10 epochs of CelebA's 202,599 images at batch 32 (remainder dropped).
        train_steps=10 * (202_599 // 32),
        learning_rate=1e-4,
        loss="huber",
        ema_decay=0.999,
        checkpoint_every=2000,
        num_eval_samples=1000,
    ),
})


def get_profile(name: str | None = None) -> Profile:
    """Return the named profile, or the one named by ``$DDPM_PROFILE`` (default: ``default``).

    ``"seed"``, the old name of ``"celeba"``, returns the ``celeba`` profile. Raises ``ValueError`` naming the valid profiles when the name is unknown.
    """
    source = "argument"
    if name is None:
        name = os.environ.get(PROFILE_ENV_VAR, "default").strip() or "default"
        source = "$" + PROFILE_ENV_VAR
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(sorted(PROFILES)) + " (" + ", ".join(f"{a} = {n}" for a, n in ALIASES.items()) + ")"
        fix = (f"Set e.g. {PROFILE_ENV_VAR}=default." if source != "argument"
               else "Pass one of them, e.g. get_profile('default').")
        raise ValueError(f"Unknown profile {name!r} (from the {source}). Valid profiles: {valid}. {fix}") from None
