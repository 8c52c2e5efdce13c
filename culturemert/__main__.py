"""``python -m culturemert`` (and ``torchrun -m culturemert``): the command line."""

import sys

from culturemert.cli import main

sys.exit(main())
