"""``python -m ddpm_helpers {train,sample,evaluate} --help``: the command line (:mod:`ddpm_helpers.cli`)."""

import sys

from ddpm_helpers.cli import main

sys.exit(main())
