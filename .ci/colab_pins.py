"""Fail if installing the book's package moved any of Colab's pinned versions.

Used by `make colab-check` after `pip install "ddpm_helpers @ ..."`: in Colab that install must
keep the runtime's TensorFlow, Keras, NumPy, ... as they are, so here it must too.
"""

import sys
from importlib.metadata import version
from pathlib import Path

pins = {}
for line in Path(sys.argv[1]).read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, wanted = (part.strip() for part in line.split("=="))
        pins[name] = wanted
moved = {name: (wanted, version(name)) for name, wanted in pins.items() if version(name) != wanted}
for name, (wanted, found) in moved.items():
    print(f"colab-check: {name} is {found}, Colab has {wanted}", file=sys.stderr)
print(f"colab-check: Python {sys.version.split()[0]}, "
      + ", ".join(f"{name} {version(name)}" for name in pins))
sys.exit(1 if moved else 0)
