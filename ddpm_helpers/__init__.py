"""Helpers for the book *Diffusion models from scratch, in TensorFlow*.

One module per concept; each docstring names the chapter (and equation) it implements.
Import the modules you need, e.g. ``from ddpm_helpers import schedules``.
"""

from ddpm_helpers.profiles import PROFILES, Profile, get_profile

__version__ = "0.1.0"

__all__ = ["PROFILES", "Profile", "get_profile", "__version__"]
