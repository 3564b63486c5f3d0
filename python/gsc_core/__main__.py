"""``python -m gsc_core`` runs the ``gsc-core`` command (see :mod:`gsc_core.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
