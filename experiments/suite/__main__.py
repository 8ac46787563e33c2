"""``python -m experiments.suite``: see :mod:`experiments.suite.cli`."""

import sys

from experiments.suite.cli import main

if __name__ == "__main__":
    sys.exit(main())
