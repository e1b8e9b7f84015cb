"""``python -m booktools {sync,format,check,run}`` (with ``PYTHONPATH=.ci``)."""

import sys

from booktools import main

sys.exit(main())
