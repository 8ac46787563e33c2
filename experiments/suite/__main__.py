"""``python -m experiments.suite``: see :mod:`experiments.suite.cli`."""

import sys

from experiments.runner.interrupt import sigterm_as_exit
from experiments.suite.cli import main

if __name__ == "__main__":
    sigterm_as_exit()  # kill <pid> stops it as Ctrl-C does
    sys.exit(main())
