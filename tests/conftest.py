"""The book's build tooling (``.ci/booktools``) is not part of the installed package: the tests
that check it import it from there."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".ci"))
