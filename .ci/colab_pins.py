"""Fail if this Python or installing the book's package moved any of a Colab runtime's versions.

Used by `make colab-check` after `pip install "ddpm_helpers @ ..."`, with the runtime's
requirements file (.ci/colab-requirements-<runtime>.txt): in Colab that install must keep the
runtime's TensorFlow, Keras, NumPy, ... as they are, so here it must too. The file's
`# python: X.Y` line names the runtime's Python; the venv must run that version.
"""

import sys
from importlib.metadata import version
from pathlib import Path

pins, python = {}, None
for line in Path(sys.argv[1]).read_text().splitlines():
    if line.startswith("# python:"):
        python = line.split(":", 1)[1].strip()
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, wanted = (part.strip() for part in line.split("=="))
        pins[name] = wanted
problems = [f"{name} is {version(name)}, Colab has {wanted}"
            for name, wanted in pins.items() if version(name) != wanted]
running = "%d.%d" % sys.version_info[:2]
if python is None:
    problems.append(f"{sys.argv[1]} has no '# python: X.Y' line naming the runtime's Python")
elif running != python:
    problems.append(f"Python is {running}, Colab has {python}: set COLAB_PYTHON=/path/to/"
                    f"python{python} and rebuild the venv (rm -rf _build/colab-venv-*)")
for problem in problems:
    print(f"colab-check: {problem}", file=sys.stderr)
print(f"colab-check: Python {sys.version.split()[0]}, "
      + ", ".join(f"{name} {version(name)}" for name in pins))
sys.exit(1 if problems else 0)
