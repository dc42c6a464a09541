"""`python -m blt ...`: the `blt` command, for environments where the package is importable but not installed
(e.g. with ``PYTHONPATH`` pointing at a checkout)."""

import sys

from blt.cli import main

sys.exit(main())
